//! Runs the sidecar binary (the local Jetstream) for `dev` and the end-to-end tests: built with
//! cargo, started with the given arguments, its URL read from its first line, ended on drop.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::paths;
use crate::process::{self, file_tail, Group};

/// The binary, as `cargo build -p sidecar` leaves it.
pub fn binary() -> PathBuf {
    paths::root().join("target/debug/statusphere-sidecar")
}

/// Set by `cargo xtask test` for the tests it runs: its test build has just built the binary
/// (the sidecar's own tests need it), so the end-to-end tests use it as it is. Building it again
/// with `-p sidecar` would compile a second copy of its dependencies (the features `-p sidecar`
/// alone asks for) and leave a binary the next test build replaces.
pub const BUILT_ENV: &str = "STATUSPHERE_SIDECAR_BUILT";

/// Builds the binary, unless [`BUILT_ENV`] says it is built.
pub fn build() -> Result<()> {
    if std::env::var_os(BUILT_ENV).is_some() {
        if !binary().exists() {
            bail!("{BUILT_ENV} is set but {} is missing", binary().display());
        }
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    process::run(
        Command::new(cargo)
            .args(["build", "--quiet", "-p", "sidecar"])
            .current_dir(paths::root()),
    )
}

/// A running sidecar.
pub struct Sidecar {
    group: Group,
    /// `ws://127.0.0.1:<port>/subscribe`
    pub url: String,
}

impl Sidecar {
    /// Starts `statusphere-sidecar serve ARGS` (which should include `--listen`), logging to
    /// `log_file`, and waits for it to listen.
    pub fn start(args: &[String], log_file: &std::path::Path) -> Result<Sidecar> {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(log_file)
            .with_context(|| format!("opening {}", log_file.display()))?;
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut group = Group::spawn("the sidecar", &mut cmd)?;
        let url = group
            .first_line(Duration::from_secs(30), log_file)
            .and_then(|line| line.strip_prefix("listening on ").map(str::to_owned));
        let Some(url) = url else {
            bail!("the sidecar did not start:\n{}", file_tail(log_file, 30));
        };
        Ok(Sidecar { group, url })
    }

    /// Its resident memory (bytes).
    pub fn rss(&self) -> u64 {
        self.group.rss().iter().map(|(_, bytes)| bytes).sum()
    }

    /// Kills it with SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.group.kill();
    }
}
