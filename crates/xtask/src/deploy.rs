//! `deploy-all`: the D1 migrations and the three workers onto Cloudflare, in dependency order, or
//! (`--dry-run`) the same bundles built and measured offline without deploying anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::stack::D1_DATABASE;
use crate::toolchain::Tools;
use crate::workers::{self, WORKERS};
use crate::{paths, process};

/// The `database_id` the committed edge config carries until an operator sets the real one.
pub const PLACEHOLDER_D1_ID: &str = "00000000-0000-0000-0000-000000000000";

/// What was deployed (or would be), per worker.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub worker: &'static str,
    /// Every file wrangler would upload.
    pub files: Vec<PathBuf>,
    pub raw_bytes: u64,
    pub gzip_bytes: u64,
    /// The wasm module alone.
    pub wasm_raw_bytes: u64,
    pub wasm_gzip_bytes: u64,
}

/// Builds and bundles all three workers into `outdir/<worker>/` with `wrangler deploy --dry-run`
/// (offline, no login) and measures what would be uploaded. `build` rebuilds the wasm first.
pub fn dry_run(tools: &Tools, outdir: &Path, build: bool) -> Result<Vec<Bundle>> {
    if !outdir.is_absolute() {
        bail!(
            "wrangler needs an absolute --outdir, got {}",
            outdir.display()
        );
    }
    refuse_test_hooks()?;
    if build {
        workers::build_all(tools)?;
    }
    workers::check_built()?;
    WORKERS
        .iter()
        .map(|worker| {
            let dir = outdir.join(worker);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let mut cmd = tools.wrangler();
            cmd.args(["deploy", "--dry-run", "--outdir"])
                .arg(&dir)
                .arg("-c")
                .arg(paths::wrangler_config(worker));
            let out = process::output(&mut cmd)?;
            if !dir.exists() {
                bail!("wrangler deploy --dry-run wrote nothing for {worker}:\n{out}");
            }
            measure(worker, &dir)
        })
        .collect()
}

/// Deploys for real: migrations, then broker, listener, edge. Needs `wrangler login` (or
/// `CLOUDFLARE_API_TOKEN`) and the one-time set-up in docs/operations.md.
pub fn deploy(tools: &Tools) -> Result<Vec<Bundle>> {
    refuse_test_hooks()?;
    let edge_config = std::fs::read_to_string(paths::wrangler_config("edge"))?;
    if edge_config.contains(PLACEHOLDER_D1_ID) {
        bail!(
            "wrangler/edge.toml still has the placeholder D1 database_id: create the database \
             (`wrangler d1 create {D1_DATABASE}`) and put its id into wrangler/edge.toml and \
             wrangler/listener.toml (see docs/operations.md)"
        );
    }
    workers::build_all(tools)?;
    // The schema first: the new code may read a column the old code did not have, while the
    // migrations only ever add, so the old code keeps working against the new schema.
    process::run(
        tools
            .wrangler()
            .args(["d1", "migrations", "apply", D1_DATABASE, "--remote", "-c"])
            .arg(paths::wrangler_config("edge")),
    )?;
    let outdir = paths::scratch().join("deploy");
    let mut bundles = Vec::new();
    for worker in WORKERS {
        let dir = outdir.join(worker);
        process::run(
            tools
                .wrangler()
                .args(["deploy", "--outdir"])
                .arg(&dir)
                .arg("-c")
                .arg(paths::wrangler_config(worker)),
        )?;
        bundles.push(measure(worker, &dir)?);
    }
    Ok(bundles)
}

/// The var that turns on edge's `/__test/` routes: only test stacks may set it (`xtask::stack`), so
/// no config that can be deployed may carry it, in any environment.
pub const TEST_HOOKS_VAR: &str = "TEST_HOOKS";

/// Fails if any wrangler config sets [`TEST_HOOKS_VAR`].
pub fn refuse_test_hooks() -> Result<()> {
    for worker in WORKERS {
        let path = paths::wrangler_config(worker);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if sets_test_hooks(&text).with_context(|| format!("parsing {}", path.display()))? {
            bail!(
                "{} sets {TEST_HOOKS_VAR}: test hooks must never be deployed",
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether a wrangler config names [`TEST_HOOKS_VAR`] anywhere (`[vars]`, `[env.*.vars]`, ...).
pub fn sets_test_hooks(config: &str) -> Result<bool> {
    fn mentions(value: &toml::Value) -> bool {
        match value {
            toml::Value::Table(table) => table
                .iter()
                .any(|(key, value)| key == TEST_HOOKS_VAR || mentions(value)),
            toml::Value::Array(items) => items.iter().any(mentions),
            _ => false,
        }
    }
    Ok(mentions(&toml::Value::Table(config.parse()?)))
}

/// Sizes of the files in a bundle folder, raw and gzipped (level 9, as an upload would compress).
fn measure(worker: &'static str, dir: &Path) -> Result<Bundle> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hooks_are_found_wherever_they_are_set() {
        assert!(!sets_test_hooks("name = \"x\"\n[vars]\nLOG_CAPACITY = \"5\"").unwrap());
        assert!(sets_test_hooks("[vars]\nTEST_HOOKS = \"on\"").unwrap());
        assert!(sets_test_hooks("[env.staging.vars]\nTEST_HOOKS = \"on\"").unwrap());
        assert!(sets_test_hooks("not = [toml").is_err());
        refuse_test_hooks().expect("the committed configs carry no test hooks");
    }
}
