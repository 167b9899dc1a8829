//! `deploy-all`: the D1 migrations and the three workers onto Cloudflare, in dependency order, or
//! (`--dry-run`) the same bundles built and measured offline without deploying anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::toolchain::Tools;
use crate::workers::{self, Worker, D1_DATABASE};
use crate::{paths, process};

/// The `database_id` the committed edge config carries until an operator sets the real one.
pub const PLACEHOLDER_D1_ID: &str = "00000000-0000-0000-0000-000000000000";

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

/// Whether a dry run builds the workers' wasm first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wasm {
    Rebuild,
    /// The wasm `cargo xtask build` (or the test run's build) left.
    AsBuilt,
}

/// Builds and bundles all three workers into `outdir/<worker>/` with `wrangler deploy --dry-run`
/// (offline, no login) and measures what would be uploaded.
pub fn dry_run(tools: &Tools, outdir: &Path, wasm: Wasm) -> Result<Vec<Bundle>> {
    if !outdir.is_absolute() {
        bail!(
            "wrangler needs an absolute --outdir, got {}",
            outdir.display()
        );
    }
    preflight()?;
    if wasm == Wasm::Rebuild {
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
                .arg(worker.wrangler_config());
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
    preflight()?;
    let edge_config = std::fs::read_to_string(Worker::Edge.wrangler_config())?;
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
            .arg(Worker::Edge.wrangler_config()),
    )?;
    let outdir = paths::scratch().join("deploy");
    let mut bundles = Vec::new();
    for worker in Worker::ALL {
        let dir = outdir.join(worker.name());
        process::run(
            tools
                .wrangler()
                .args(["deploy", "--outdir"])
                .arg(&dir)
                .arg("-c")
                .arg(worker.wrangler_config()),
        )?;
        bundles.push(measure(worker, &dir)?);
    }
    Ok(bundles)
}

/// The var that turns on edge's `/__test/` routes: only test stacks may set it (`xtask::stack`), so
/// no config that can be deployed may carry it, in any environment.
pub const TEST_HOOKS_VAR: &str = "TEST_HOOKS";

/// Vars whose only safe production value is known: anything else is a local network's setting
/// (plain http and loopback fetches, the loopback OAuth client, handles resolved by one server).
const PRODUCTION_VALUES: [(&str, &str); 3] = [
    ("ALLOW_PRIVATE_NETWORK", "off"),
    ("OAUTH_CLIENT", "confidential"),
    ("HANDLE_RESOLVER", "dns"),
];

/// Fails, naming every problem and its fix, if any committed wrangler config carries a setting
/// that must never be deployed ([`deploy_problems`]).
pub fn preflight() -> Result<()> {
    let mut problems = Vec::new();
    for worker in Worker::ALL {
        let path = worker.wrangler_config();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let found = deploy_problems(worker, &text)
            .with_context(|| format!("parsing {}", path.display()))?;
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("{}: {p}", path.display())),
        );
    }
    if !problems.is_empty() {
        bail!(
            "refusing to deploy; fix these first:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// What in `config` (the wrangler config of `worker`) must not reach Cloudflare: test hooks
/// anywhere; in any `vars` table (top level or `[env.*]`), a dev-only value of
/// [`PRODUCTION_VALUES`] or a plain-text `http://` / `ws://` URL; a preview URL (it would serve
/// production data and bindings at a second address); a public URL for a private worker.
pub fn deploy_problems(worker: Worker, config: &str) -> Result<Vec<String>> {
    let config: toml::Table = config.parse()?;
    let mut problems = Vec::new();
    if mentions_test_hooks(&toml::Value::Table(config.clone())) {
        problems.push(format!(
            "sets {TEST_HOOKS_VAR}: test hooks are for local test stacks only; remove it"
        ));
    }
    let mut scopes = vec![("top level".to_owned(), &config)];
    if let Some(envs) = config.get("env").and_then(toml::Value::as_table) {
        for (name, env) in envs {
            if let Some(env) = env.as_table() {
                scopes.push((format!("[env.{name}]"), env));
            }
        }
    }
    for (scope, table) in &scopes {
        if let Some(vars) = table.get("vars").and_then(toml::Value::as_table) {
            for (name, value) in vars {
                let Some(value) = value.as_str() else {
                    continue;
                };
                if let Some((_, safe)) = PRODUCTION_VALUES.iter().find(|(var, _)| var == name) {
                    if value != *safe {
                        problems.push(format!(
                            "{scope}: {name} = {value:?} is a local network's setting; \
                             production needs {safe:?}"
                        ));
                    }
                }
                for url in value.split(',').map(str::trim) {
                    if url.starts_with("http://") || url.starts_with("ws://") {
                        problems.push(format!(
                            "{scope}: {name} has the plain-text URL {url}; use https:// or wss://"
                        ));
                    }
                }
            }
        }
        if table.get("preview_urls").and_then(toml::Value::as_bool) != Some(false)
            && (scope == "top level" || table.contains_key("preview_urls"))
        {
            problems.push(format!(
                "{scope}: set preview_urls = false (a preview would serve production data \
                 and bindings at another address)"
            ));
        }
        if !worker.is_public()
            && table.get("workers_dev").and_then(toml::Value::as_bool) != Some(false)
            && (scope == "top level" || table.contains_key("workers_dev"))
        {
            problems.push(format!(
                "{scope}: set workers_dev = false ({worker} has no public route: only service \
                 bindings reach it)"
            ));
        }
    }
    if worker == Worker::Edge {
        problems.extend(rate_limit_problems(&config));
    }
    Ok(problems)
}

/// Each of edge's rate limits (`domain::limit::Guarded`) must be declared as a `[[ratelimits]]`
/// binding with a positive limit and the period its refusals announce; without one, the route is
/// not limited at all.
fn rate_limit_problems(config: &toml::Table) -> Vec<String> {
    use domain::limit::{Guarded, PERIOD_S};
    let mut problems = Vec::new();
    for guarded in Guarded::ALL {
        let name = guarded.binding();
        let Some(binding) = rate_limit_binding(config, name) else {
            problems.push(format!(
                "no [[ratelimits]] binding {name}: add it (name, namespace_id, \
                 simple = {{ limit, period = {PERIOD_S} }})"
            ));
            continue;
        };
        let simple = binding.get("simple");
        let limit = simple
            .and_then(|s| s.get("limit"))
            .and_then(toml::Value::as_integer);
        let period = simple
            .and_then(|s| s.get("period"))
            .and_then(toml::Value::as_integer);
        if limit.is_none_or(|l| l <= 0) {
            problems.push(format!(
                "[[ratelimits]] {name}: set simple.limit to a positive number"
            ));
        }
        if period != Some(i64::from(PERIOD_S)) {
            problems.push(format!(
                "[[ratelimits]] {name}: simple.period must be {PERIOD_S} (refusals say to wait \
                 that long)"
            ));
        }
        if binding.get("namespace_id").is_none() {
            problems.push(format!("[[ratelimits]] {name}: set a namespace_id"));
        }
    }
    problems
}

/// The `[[ratelimits]]` binding called `name` in a wrangler config.
pub fn rate_limit_binding<'a>(config: &'a toml::Table, name: &str) -> Option<&'a toml::Value> {
    config
        .get("ratelimits")?
        .as_array()?
        .iter()
        .find(|b| b.get("name").and_then(toml::Value::as_str) == Some(name))
}

fn mentions_test_hooks(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .any(|(key, value)| key == TEST_HOOKS_VAR || mentions_test_hooks(value)),
        toml::Value::Array(items) => items.iter().any(mentions_test_hooks),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(worker: Worker) -> String {
        std::fs::read_to_string(worker.wrangler_config()).unwrap()
    }

    #[test]
    fn the_committed_configs_are_deployable() {
        for worker in Worker::ALL {
            let problems = deploy_problems(worker, &committed(worker)).unwrap();
            assert!(problems.is_empty(), "{worker}: {problems:?}");
        }
        preflight().expect("the committed configs pass");
    }

    #[test]
    fn every_dev_only_setting_is_refused() {
        let edge = committed(Worker::Edge);
        let refused = |worker: Worker, config: &str, says: &str| {
            let problems = deploy_problems(worker, config).unwrap();
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{says:?} not in {problems:?} for:\n{config}"
            );
        };
        let with = |from: &str, to: &str| {
            assert!(edge.contains(from), "{from}");
            edge.replacen(from, to, 1)
        };
        refused(
            Worker::Edge,
            &format!("{edge}\nTEST_HOOKS = \"on\""),
            "TEST_HOOKS",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.staging.vars]\nTEST_HOOKS = \"on\""),
            "TEST_HOOKS",
        );
        refused(
            Worker::Edge,
            &with(
                "ALLOW_PRIVATE_NETWORK = \"off\"",
                "ALLOW_PRIVATE_NETWORK = \"on\"",
            ),
            "ALLOW_PRIVATE_NETWORK",
        );
        refused(
            Worker::Edge,
            &with(
                "OAUTH_CLIENT = \"confidential\"",
                "OAUTH_CLIENT = \"loopback\"",
            ),
            "OAUTH_CLIENT",
        );
        refused(
            Worker::Edge,
            &with(
                "HANDLE_RESOLVER = \"dns\"",
                "HANDLE_RESOLVER = \"http://127.0.0.1:2583\"",
            ),
            "HANDLE_RESOLVER",
        );
        refused(
            Worker::Edge,
            &with("https://plc.directory", "http://plc.directory"),
            "plain-text URL http://plc.directory",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.staging]\npreview_urls = true\n"),
            "[env.staging]: set preview_urls = false",
        );
        refused(
            Worker::Edge,
            &with("preview_urls = false", ""),
            "preview_urls",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.local.vars]\nALLOW_PRIVATE_NETWORK = \"on\"\n"),
            "[env.local]: ALLOW_PRIVATE_NETWORK",
        );
        let listener = committed(Worker::Listener);
        refused(
            Worker::Listener,
            &listener.replacen(
                "[vars]",
                "[vars]\nJETSTREAM_URLS = \"wss://jetstream1.us-east.bsky.network/subscribe,ws://127.0.0.1:6008/subscribe\"",
                1,
            ),
            "ws://127.0.0.1:6008/subscribe",
        );
        refused(
            Worker::Listener,
            &listener.replacen("workers_dev = false", "workers_dev = true", 1),
            "workers_dev = false",
        );
        refused(
            Worker::Edge,
            &with("name = \"WRITE_LIMIT\"", "name = \"WRITES\""),
            "no [[ratelimits]] binding WRITE_LIMIT",
        );
        refused(
            Worker::Edge,
            &with(
                "simple = { limit = 10, period = 60 }",
                "simple = { limit = 10, period = 10 }",
            ),
            "SIGN_IN_LIMIT: simple.period must be 60",
        );
        assert!(deploy_problems(Worker::Edge, "not = [toml").is_err());
    }
}
