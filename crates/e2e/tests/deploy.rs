//! `deploy-all`. The dry run: wrangler bundles all four workers offline, and each bundle is
//! within its budget gzipped ([`budget`]: docs/design.md's targets; the free plan allows 3 MiB).
//! The real deploy, against a stub `wrangler` that records each call and answers as Cloudflare's
//! would: nothing is deployed unless the preflight passes, the order is migrations, broker,
//! listener, backfill, edge, and a deploy whose `/health` does not answer healthy fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xtask::deploy::{self, Target, Wasm};
use xtask::preflight::{PLACEHOLDER_D1_ID, SECRETS};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// Each worker's bundle budget, gzipped: docs/design.md's targets (edge < 500 KiB, the Durable
/// Object workers < 250 KiB).
fn budget(worker: Worker) -> u64 {
    1024 * match worker {
        Worker::Edge => 500,
        Worker::Broker => 250,
        Worker::Listener => 250,
        Worker::Backfill => 250,
    }
}

#[test]
fn dry_run_bundles_four_workers() {
    let tools = Tools::locate().expect("toolchain");
    let outdir = xtask::paths::scratch().join("test-dry-run");
    // The workers were built by `cargo xtask test` before the tests ran.
    let target = Target {
        wasm: Wasm::AsBuilt,
        ..Target::committed()
    };
    let bundles = deploy::dry_run(&tools, &outdir, &target).expect("dry run");
    println!("{}", deploy::report(&bundles));
    let names: Vec<&str> = bundles.iter().map(|b| b.worker.name()).collect();
    assert_eq!(names, ["broker", "listener", "backfill", "edge"]);
    for bundle in &bundles {
        assert!(
            bundle
                .files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "js")),
            "{}: no JavaScript entry in {:?}",
            bundle.worker,
            bundle.files
        );
        assert!(
            bundle.wasm_raw_bytes > 10_000,
            "{}: wasm too small to be real",
            bundle.worker
        );
        let budget = budget(bundle.worker);
        assert!(
            bundle.gzip_bytes < budget,
            "{}: {:.1} KiB gzipped, over its budget of {} KiB",
            bundle.worker,
            bundle.gzip_bytes as f64 / 1024.0,
            budget / 1024
        );
    }
}

/// A stub of wrangler's command line (run by the pinned Node in place of wrangler's own script):
/// each call is appended to `calls.jsonl` as its arguments; `secret list` answers with the
/// names in `secrets.json` (or "not found" when that file is missing, as for a Worker that does
/// not exist yet); `deploy --outdir DIR` writes a bundle there as wrangler would.
const STUB: &str = r#"
const fs = require("fs"), path = require("path");
const here = __dirname, args = process.argv.slice(2);
fs.appendFileSync(path.join(here, "calls.jsonl"), JSON.stringify(args) + "\n");
if (args[0] === "secret" && args[1] === "list") {
  const file = path.join(here, "secrets.json");
  if (!fs.existsSync(file)) { console.error('Worker "x" not found.'); process.exit(1); }
  console.log(JSON.stringify(JSON.parse(fs.readFileSync(file, "utf8")).map((name) => ({ name, type: "secret_text" }))));
} else if (args[0] === "deploy") {
  const dir = args[args.indexOf("--outdir") + 1];
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "index.js"), "export default {};\n");
  fs.writeFileSync(path.join(dir, "index_bg.wasm"), Buffer.alloc(64));
  console.log("Uploaded");
}
"#;

/// A deploy's world: a folder with filled-in configs and the stub, and tools that run the stub.
struct Account {
    dir: PathBuf,
    tools: Tools,
}

impl Account {
    fn new(name: &str, secrets: Option<&[&str]>) -> Account {
        let dir = xtask::paths::scratch().join("test-deploy").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for worker in Worker::ALL {
            let text = std::fs::read_to_string(worker.wrangler_config())
                .unwrap()
                .replace(PLACEHOLDER_D1_ID, "0f8e5a2c-3b1d-4c6e-9a7f-12ab34cd56ef")
                .replace(
                    "PUBLIC_URL = \"\"",
                    "PUBLIC_URL = \"https://statusphere.example.com\"",
                );
            std::fs::write(dir.join(worker.config_file()), text).unwrap();
        }
        std::fs::write(dir.join("wrangler-stub.js"), STUB).unwrap();
        if let Some(secrets) = secrets {
            std::fs::write(
                dir.join("secrets.json"),
                serde_json::to_string(secrets).unwrap(),
            )
            .unwrap();
        }
        let mut tools = Tools::locate().expect("toolchain");
        tools.wrangler_js = dir.join("wrangler-stub.js");
        Account { dir, tools }
    }

    fn target(&self, health: &str) -> Target {
        Target {
            configs: self.dir.clone(),
            wasm: Wasm::AsBuilt,
            smoke_base: Some(health.to_owned()),
            smoke_wait: Duration::from_secs(3),
            outdir: self.dir.join("out"),
        }
    }

    /// Each recorded call, as its first words and the config it named.
    fn calls(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("calls.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .map(|line| {
                let args: Vec<String> = serde_json::from_str(line).unwrap();
                let config = args
                    .iter()
                    .position(|a| a == "-c")
                    .and_then(|i| args.get(i + 1))
                    .map(|c| {
                        Path::new(c)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                let words: Vec<&str> = args
                    .iter()
                    .take_while(|a| a.as_str() != "-c" && a.as_str() != "--outdir")
                    .map(String::as_str)
                    .collect();
                format!("{} {config}", words.join(" "))
            })
            .collect()
    }
}

/// A one-route server on 127.0.0.1 answering every request with `status` and `body`; returns
/// its base URL.
fn health_server(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                &stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[test]
fn a_deploy_goes_in_order_and_ends_with_a_healthy_smoke_check() {
    let names: Vec<&str> = SECRETS.iter().map(|s| s.name).collect();
    let account = Account::new("in-order", Some(&names));
    let base = health_server(200, r#"{"ok":true}"#);
    let bundles = deploy::deploy(&account.tools, &account.target(&base)).expect("deploys");
    assert_eq!(bundles.len(), 4);
    assert_eq!(
        account.calls(),
        [
            "secret list --format json edge.toml",
            "d1 migrations apply statusphere --remote edge.toml",
            "deploy broker.toml",
            "deploy listener.toml",
            "deploy backfill.toml",
            "deploy edge.toml",
        ]
    );
}

#[test]
fn nothing_is_deployed_while_a_secret_is_missing() {
    let account = Account::new("missing-secret", Some(&["OAUTH_PRIVATE_KEY"]));
    let base = health_server(200, r#"{"ok":true}"#);
    let error = deploy::deploy(&account.tools, &account.target(&base))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("secret SESSION_KEYS of edge is not set: cargo xtask session-key"),
        "{error}"
    );
    assert_eq!(account.calls(), ["secret list --format json edge.toml"]);
    // A worker that was never deployed has no secrets at all: every one is named.
    let account = Account::new("new-worker", None);
    let error = deploy::deploy(&account.tools, &account.target(&base))
        .unwrap_err()
        .to_string();
    for secret in SECRETS {
        assert!(error.contains(secret.name), "{error}");
    }
    assert_eq!(account.calls(), ["secret list --format json edge.toml"]);
}

#[test]
fn a_deploy_that_does_not_answer_healthy_fails() {
    let names: Vec<&str> = SECRETS.iter().map(|s| s.name).collect();
    let account = Account::new("unhealthy", Some(&names));
    let base = health_server(
        503,
        r#"{"ok":false,"error":"the database does not answer"}"#,
    );
    let error = deploy::deploy(&account.tools, &account.target(&base))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("smoke check failed")
            && error.contains("503")
            && error.contains("the database does not answer"),
        "{error}"
    );
    assert_eq!(account.calls().len(), 6, "everything was deployed first");
}
