//! The local atproto network: an in-memory PLC directory and a PDS from npm's `@atproto/dev-env`,
//! run by the pinned Node 22 (`devnet/start.mjs`), on 127.0.0.1 only, with seeded demo accounts.
//! `dev` runs it for people; tests run their own (own ports, own data folder, ended on drop).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::net::free_port;
use crate::paths;
use crate::process::{file_tail, Group};
use crate::toolchain::{self, Tools};

/// The password every seeded account gets (a local, throwaway network).
pub const DEMO_PASSWORD: &str = "statusphere-dev";

#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub plc_port: u16,
    pub pds_port: u16,
    /// The PDS's data (accounts, repos); reusing it keeps accounts across runs.
    pub data_dir: PathBuf,
    /// Where the network's output goes.
    pub log_file: PathBuf,
    /// Names of the accounts to seed (`alice` becomes `alice.test`).
    pub accounts: Vec<String>,
    /// What lets the network reach an app served over HTTPS at a private name (the confidential
    /// OAuth client of the tests); `None` for `dev`, whose app is the loopback client.
    pub https_app: Option<HttpsApp>,
}

/// An app the network reaches over HTTPS by name, on this machine: the PDS resolves `hosts` to
/// 127.0.0.1 (in its own process only, `devnet/loopback.cjs`), trusts the CA in `ca_file` besides
/// the system's (`NODE_EXTRA_CA_CERTS`), and fetches client documents afresh on every use, so that
/// a stack restarted with another key ring is seen at once (`--fresh-client-documents`).
#[derive(Debug, Clone)]
pub struct HttpsApp {
    pub ca_file: PathBuf,
    pub hosts: Vec<String>,
}

impl DevnetConfig {
    /// Free ports and a fresh folder under `target/statusphere/runs/`.
    pub fn for_test(name: &str) -> Result<DevnetConfig> {
        let pds_port = free_port()?;
        let dir = paths::scratch()
            .join("runs")
            .join(format!("{name}-devnet-{pds_port}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(DevnetConfig {
            plc_port: free_port()?,
            pds_port,
            data_dir: dir.join("data"),
            log_file: dir.join("devnet.log"),
            accounts: vec!["alice".into(), "bob".into()],
            https_app: None,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub handle: String,
    pub did: String,
    pub password: String,
}

#[derive(Debug, Deserialize)]
struct Ready {
    plc: String,
    pds: String,
    accounts: Vec<Account>,
}

/// A running network; dropping it ends it.
pub struct Devnet {
    group: Group,
    pub plc_url: String,
    pub pds_url: String,
    pub pds_port: u16,
    pub accounts: Vec<Account>,
    log_file: PathBuf,
}

impl Devnet {
    pub fn start(tools: &Tools, config: &DevnetConfig) -> Result<Devnet> {
        toolchain::ensure_devnet_packages(tools)?;
        let dir = paths::root().join("devnet");
        let tmp = config.data_dir.join("tmp");
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .with_context(|| format!("opening {}", config.log_file.display()))?;
        let mut cmd = Command::new(&tools.node);
        cmd.current_dir(&dir)
            .args(["--require", "./loopback.cjs", "start.mjs"])
            .args(["--plc-port", &config.plc_port.to_string()])
            .args(["--pds-port", &config.pds_port.to_string()])
            .arg("--data")
            .arg(&config.data_dir)
            .args(["--accounts", &config.accounts.join(",")])
            .args(["--password", DEMO_PASSWORD])
            // dev-env makes temporary folders; keep them in ours.
            .env("TMPDIR", &tmp)
            .env("NODE_ENV", "development")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(app) = &config.https_app {
            cmd.arg("--fresh-client-documents")
                .env("NODE_EXTRA_CA_CERTS", &app.ca_file)
                .env("DEVNET_HOSTS", app.hosts.join(","));
        }
        let mut group = Group::spawn("the local atproto network", &mut cmd)?;
        let Some(line) = group.first_line(Duration::from_secs(120), &config.log_file) else {
            bail!(
                "the local atproto network did not start:\n{}",
                file_tail(&config.log_file, 30)
            );
        };
        let ready: Ready = serde_json::from_str(&line)
            .with_context(|| format!("unexpected devnet output: {line}"))?;
        Ok(Devnet {
            group,
            plc_url: ready.plc,
            pds_url: ready.pds,
            pds_port: config.pds_port,
            accounts: ready.accounts,
            log_file: config.log_file.clone(),
        })
    }

    /// Ends the network when this process ends, even if it is never dropped (a fixture a test
    /// binary shares, in a `static`).
    pub fn end_with_this_process(&mut self) -> Result<()> {
        self.group.end_with_this_process()
    }

    /// Ends the network now (a test of what happens when a PDS is down).
    pub fn stop(&mut self) {
        self.group.stop(Duration::from_secs(5));
    }

    /// `ws://127.0.0.1:<pds>`: where the firehose is.
    pub fn pds_ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.pds_port)
    }

    /// `http://127.0.0.1:<pds>`
    pub fn pds_http(&self) -> String {
        format!("http://127.0.0.1:{}", self.pds_port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_file, lines)
    }
}
