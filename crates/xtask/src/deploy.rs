//! `deploy-all`: the D1 migrations and the four workers onto Cloudflare, in dependency order, or
//! (`--dry-run`) the same bundles built and measured offline without deploying anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::preflight::{Configs, Preflight, SecretsSet, SECRETS};
use crate::toolchain::Tools;
use crate::workers::{self, Worker, D1_DATABASE};
use crate::{paths, process};

/// What was deployed (or would be), per worker.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub worker: Worker,
    /// Every file wrangler would upload.
    pub files: Vec<PathBuf>,
    pub raw_bytes: u64,
    pub gzip_bytes: u64,
    /// The wasm module alone.
    pub wasm_raw_bytes: u64,
    pub wasm_gzip_bytes: u64,
}

/// Whether a deploy or a dry run builds the workers' wasm first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wasm {
    Rebuild,
    /// The wasm `cargo xtask build` (or the test run's build) left.
    AsBuilt,
}

/// Where a deploy (or a dry run) reads its configs and how it checks what it deployed.
#[derive(Debug, Clone)]
pub struct Target {
    /// The folder with `edge.toml`, `listener.toml` and `broker.toml`.
    pub configs: PathBuf,
    /// Whether the workers' wasm is built first.
    pub wasm: Wasm,
    /// Where the smoke check after a deploy asks `/health`: the configs' `PUBLIC_URL` unless set.
    pub smoke_base: Option<String>,
    /// How long the smoke check waits for a healthy answer (a new version takes a few seconds to
    /// reach every location).
    pub smoke_wait: Duration,
    /// Where wrangler leaves what it uploaded, one folder per worker.
    pub outdir: PathBuf,
}

impl Target {
    /// The committed configs in `wrangler/`, the workers built afresh.
    pub fn committed() -> Target {
        Target {
            configs: workers::config_dir(),
            wasm: Wasm::Rebuild,
            smoke_base: None,
            smoke_wait: Duration::from_secs(60),
            outdir: paths::scratch().join("deploy"),
        }
    }
}

/// Builds and bundles all four workers into `outdir/<worker>/` with `wrangler deploy --dry-run`
/// (offline, no login) and measures what would be uploaded. Refuses what could never be deployed
/// ([`Preflight::refused`]) and prints what a real deploy still needs set.
pub fn dry_run(tools: &Tools, outdir: &Path, target: &Target) -> Result<Vec<Bundle>> {
    if !outdir.is_absolute() {
        bail!(
            "wrangler needs an absolute --outdir, got {}",
            outdir.display()
        );
    }
    let configs = Configs::read(&target.configs)?;
    let preflight = Preflight::check(&configs, &SecretsSet::Unknown);
    preflight.refuse_defects()?;
    if let Some(report) = preflight.unset_report() {
        eprintln!("{report}");
    }
    if target.wasm == Wasm::Rebuild {
        workers::build_all(tools)?;
    }
    workers::check_built()?;
    Worker::ALL
        .into_iter()
        .map(|worker| {
            let dir = outdir.join(worker.name());
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let mut cmd = tools.wrangler();
            cmd.args(["deploy", "--dry-run", "--outdir"])
                .arg(&dir)
                .arg("-c")
                .arg(configs.path(worker));
            let out = process::output(&mut cmd)?;
            if !dir.exists() {
                bail!("wrangler deploy --dry-run wrote nothing for {worker}:\n{out}");
            }
            measure(worker, &dir)
        })
        .collect()
}

/// Deploys for real: the preflight (with the secrets Cloudflare holds), the migrations, then
/// broker, listener, edge (each binds only what is already there), then a smoke check of
/// `/health`. Needs `wrangler login` (or `CLOUDFLARE_API_TOKEN`) and the one-time set-up in
/// docs/operations.md; nothing is deployed unless the preflight passes.
pub fn deploy(tools: &Tools, target: &Target) -> Result<Vec<Bundle>> {
    let configs = Configs::read(&target.configs)?;
    let secrets = list_secrets(tools, &configs)?;
    Preflight::check(&configs, &secrets).ready()?;
    let smoke_base = match (&target.smoke_base, configs.public_url()) {
        (Some(base), _) => base.clone(),
        (None, Some(url)) => url.to_owned(),
        (None, None) => bail!("PUBLIC_URL is not set"),
    };
    if target.wasm == Wasm::Rebuild {
        workers::build_all(tools)?;
    }
    workers::check_built()?;
    // The schema first: the new code may read a column the old code did not have, while the
    // migrations only ever add, so the old code keeps working against the new schema.
    process::run(
        tools
            .wrangler()
            .args(["d1", "migrations", "apply", D1_DATABASE, "--remote", "-c"])
            .arg(configs.path(Worker::Edge)),
    )?;
    let mut bundles = Vec::new();
    for worker in Worker::ALL {
        let dir = target.outdir.join(worker.name());
        process::run(
            tools
                .wrangler()
                .args(["deploy", "--outdir"])
                .arg(&dir)
                .arg("-c")
                .arg(configs.path(worker)),
        )?;
        bundles.push(measure(worker, &dir)?);
    }
    smoke_check(tools, &smoke_base, target.smoke_wait)?;
    Ok(bundles)
}

/// The secrets each worker that needs some has on Cloudflare (`wrangler secret list`). A worker
/// that does not exist yet has none (`wrangler secret put` creates it).
fn list_secrets(tools: &Tools, configs: &Configs) -> Result<SecretsSet> {
    let mut listed = Vec::new();
    for worker in Worker::ALL {
        if !SECRETS.iter().any(|s| s.worker == worker) {
            continue;
        }
        let out = tools
            .wrangler()
            .args(["secret", "list", "--format", "json", "-c"])
            .arg(configs.path(worker))
            .output()
            .context("could not start wrangler")?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let names = if out.status.success() {
            secret_names(&stdout).with_context(|| {
                format!("`wrangler secret list` for {worker} answered something else:\n{stdout}")
            })?
        } else if format!("{stdout}{stderr}").contains("not found") {
            Vec::new()
        } else {
            bail!(
                "could not list the secrets of {worker} (logged in? `npx wrangler login`, or set \
                 CLOUDFLARE_API_TOKEN):\n{stdout}{stderr}"
            );
        };
        listed.push((worker, names));
    }
    Ok(SecretsSet::Listed(listed))
}

/// The names in `wrangler secret list --format json`'s answer (`[{"name": …, "type": …}]`),
/// which may follow other lines wrangler prints.
fn secret_names(stdout: &str) -> Result<Vec<String>> {
    let start = stdout.find('[').context("no JSON list")?;
    let list: Vec<serde_json::Value> = serde_json::from_str(stdout[start..].trim())?;
    Ok(list
        .iter()
        .filter_map(|s| s.get("name")?.as_str().map(str::to_owned))
        .collect())
}

/// Asks `<base>/health` (Node's fetch: https with the system's roots) until it answers 200 with
/// `"ok": true`, for up to `wait`.
fn smoke_check(tools: &Tools, base: &str, wait: Duration) -> Result<()> {
    const ASK: &str = "fetch(process.argv[1]).then(async r => console.log(JSON.stringify({ status: r.status, body: await r.text() })), e => console.log(JSON.stringify({ status: 0, body: String(e) })))";
    let url = format!("{}/health", base.trim_end_matches('/'));
    let started = Instant::now();
    loop {
        let out = process::output(
            Command::new(&tools.node)
                .args(["-e", ASK])
                .arg(&url)
                .env("PATH", tools.path_with_node()),
        )?;
        let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
        let status = answer["status"].as_u64().unwrap_or(0);
        let body = answer["body"].as_str().unwrap_or_default();
        let healthy = status == 200
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|b| b["ok"] == serde_json::Value::Bool(true));
        if healthy {
            eprintln!("smoke check: {url} answers 200 {body}");
            return Ok(());
        }
        if started.elapsed() >= wait {
            bail!(
                "deployed, but the smoke check failed: {url} answered {status} {} after {} s \
                 (see `cargo xtask tail edge`)",
                domain::bounded(body),
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Sizes of the files in a bundle folder, raw and gzipped (level 9, as an upload would compress).
fn measure(worker: Worker, dir: &Path) -> Result<Bundle> {
    let mut bundle = Bundle {
        worker,
        files: Vec::new(),
        raw_bytes: 0,
        gzip_bytes: 0,
        wasm_raw_bytes: 0,
        wasm_gzip_bytes: 0,
    };
    for entry in walk(dir)? {
        let bytes =
            std::fs::read(&entry).with_context(|| format!("reading {}", entry.display()))?;
        if entry.extension().is_some_and(|e| e == "map") {
            continue; // source maps are not uploaded as code
        }
        let gz = gzip_len(&bytes)?;
        bundle.raw_bytes += bytes.len() as u64;
        bundle.gzip_bytes += gz;
        if entry.extension().is_some_and(|e| e == "wasm") {
            bundle.wasm_raw_bytes += bytes.len() as u64;
            bundle.wasm_gzip_bytes += gz;
        }
        bundle.files.push(entry);
    }
    if bundle.wasm_raw_bytes == 0 {
        bail!(
            "the {worker} bundle in {} has no wasm module",
            dir.display()
        );
    }
    Ok(bundle)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?.len() as u64)
}

/// A table of bundle sizes for the terminal and for docs/benchmarks.md.
pub fn report(bundles: &[Bundle]) -> String {
    let mut out = String::from(
        "| worker | bundle raw | bundle gzip | wasm raw | wasm gzip |\n|---|---:|---:|---:|---:|\n",
    );
    for b in bundles {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            b.worker,
            kib(b.raw_bytes),
            kib(b.gzip_bytes),
            kib(b.wasm_raw_bytes),
            kib(b.wasm_gzip_bytes)
        ));
    }
    out
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}
