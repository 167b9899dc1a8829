//! Building the four workers to wasm with worker-build.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::toolchain::Tools;
use crate::{paths, process};

/// The D1 database name shared by every wrangler config.
pub const D1_DATABASE: &str = "statusphere";

/// The folder of the committed wrangler configs, one per worker.
pub fn config_dir() -> PathBuf {
    paths::root().join("wrangler")
}

/// One of the four workers: its crate is `workers/<name>/`, its config `wrangler/<name>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Worker {
    Broker,
    Listener,
    Backfill,
    Edge,
}

impl Worker {
    /// In dependency order: edge binds the other three, the backfill binds listener and broker,
    /// the listener binds the broker. Deploys go in this order, so that a binding always names a
    /// worker that exists.
    pub const ALL: [Worker; 4] = [
        Worker::Broker,
        Worker::Listener,
        Worker::Backfill,
        Worker::Edge,
    ];

    /// The name of its crate folder, its wrangler config and its Cloudflare script.
    pub fn name(self) -> &'static str {
        match self {
            Worker::Broker => "broker",
            Worker::Listener => "listener",
            Worker::Backfill => "backfill",
            Worker::Edge => "edge",
        }
    }

    /// Whether people reach it (edge); the others are reached only through service bindings.
    pub fn is_public(self) -> bool {
        self == Worker::Edge
    }

    /// The crate folder.
    pub fn crate_dir(self) -> PathBuf {
        paths::root().join("workers").join(self.name())
    }

    /// Its config's file name, in [`config_dir`] or a copy of it.
    pub fn config_file(self) -> String {
        format!("{}.toml", self.name())
    }

    /// Its committed wrangler config.
    pub fn wrangler_config(self) -> PathBuf {
        config_dir().join(self.config_file())
    }

    /// What worker-build writes and the wrangler config's `main` points at.
    pub fn entry_point(self) -> PathBuf {
        self.crate_dir().join("build/index.js")
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Worker {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Worker> {
        match Worker::ALL.into_iter().find(|w| w.name() == name) {
            Some(worker) => Ok(worker),
            None => bail!(
                "unknown worker {name:?}: expected one of {}",
                Worker::ALL.map(Worker::name).join(", ")
            ),
        }
    }
}

/// Builds one worker (release, size-optimised) into `workers/<name>/build/`.
pub fn build(tools: &Tools, worker: Worker) -> Result<()> {
    process::run(&mut tools.worker_build(&worker.crate_dir()))?;
    strip_names(worker)
}

/// Set (to anything), builds keep the wasm's `name` section: for a CPU profile that names Rust
/// functions, never for a deploy (the bundles grow past their budgets).
pub const KEEP_NAMES: &str = "STATUSPHERE_KEEP_NAMES";

/// Drops the `name` custom section (function names, only for readable wasm stack traces; a
/// panic's message is still logged) from a built worker's wasm: 75-105 KiB of each gzipped bundle
/// (docs/benchmarks.md). Done after wasm-bindgen, which needs the module's other custom sections.
pub fn strip_names(worker: Worker) -> Result<()> {
    if std::env::var_os(KEEP_NAMES).is_some() {
        // For a profile that names the wasm's functions (docs/benchmarks.md, "Listener": "To
        // profile").
        return Ok(());
    }
    let path = worker.crate_dir().join("build/index_bg.wasm");
    let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let stripped = without_name_section(&wasm)
        .with_context(|| format!("{} is not a wasm module this tool can read", path.display()))?;
    std::fs::write(&path, stripped).with_context(|| format!("writing {}", path.display()))
}

/// `wasm` without its `name` custom section; `None` if it is not a well-formed module.
fn without_name_section(wasm: &[u8]) -> Option<Vec<u8>> {
    fn leb(bytes: &[u8], at: &mut usize) -> Option<usize> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= usize::from(byte & 0x7f).checked_shl(shift)?;
            if byte < 0x80 {
                return Some(value);
            }
            shift += 7;
        }
    }
    if wasm.get(..4)? != b"\0asm" {
        return None;
    }
    let mut out = wasm.get(..8)?.to_vec();
    let mut at = 8;
    while at < wasm.len() {
        let start = at;
        let id = wasm[at];
        at += 1;
        let size = leb(wasm, &mut at)?;
        let end = at.checked_add(size).filter(|end| *end <= wasm.len())?;
        let is_names = id == 0 && {
            let mut name_at = at;
            let len = leb(wasm, &mut name_at)?;
            wasm.get(name_at..name_at.checked_add(len)?) == Some(b"name".as_slice())
        };
        if !is_names {
            out.extend_from_slice(&wasm[start..end]);
        }
        at = end;
    }
    Some(out)
}

/// Builds all four workers at once. Cargo still compiles them one at a time (they share the
/// target folder and its lock), but the slowest step after each compile, `wasm-opt` (npm's
/// binaryen: single-threaded, in Node), runs beside the next worker's compile instead of after
/// it. Each build writes a log of its own, shown when it fails; a failure ends the others.
pub fn build_all(tools: &Tools) -> Result<()> {
    let logs = paths::scratch().join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    // Whichever takes the lock first compiles the shared dependencies; the others then compile
    // only their own crate while its `wasm-opt` runs.
    let mut running = Vec::new();
    for worker in Worker::ALL {
        let log = logs.join(format!("build-{worker}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = tools.worker_build(&worker.crate_dir());
        cmd.stdout(file.try_clone()?).stderr(file);
        eprintln!(
            "+ {} (in workers/{worker}, log {})",
            process::describe(&cmd),
            log.display()
        );
        let group = process::Group::spawn(&format!("the {worker} build"), &mut cmd)?;
        running.push((worker, group, log));
    }
    while !running.is_empty() {
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (worker, mut group, log) in running {
            match group.exited() {
                None => still.push((worker, group, log)),
                Some(status) if status.success() => {
                    strip_names(worker)?;
                    eprintln!(
                        "built {worker} ({:.1} s from the start)",
                        started.elapsed().as_secs_f64()
                    )
                }
                Some(status) => bail!(
                    "building {worker} failed ({status}); the end of {}:\n{}",
                    log.display(),
                    process::file_tail(&log, 60)
                ),
            }
        }
        running = still;
    }
    Ok(())
}

/// Fails with a clear message if a worker has not been built yet.
pub fn check_built() -> Result<()> {
    for worker in Worker::ALL {
        let entry = worker.entry_point();
        if !entry.exists() {
            bail!(
                "{} is missing: build the workers with `cargo xtask build` (or run `cargo xtask test`)",
                entry.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_name_section;

    /// A module with a type section, a `name` section and another custom section.
    fn module() -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend([1, 1, 0x60]); // a type section of one byte (not a valid body; not read)
        wasm.extend([0, 6, 4, b'n', b'a', b'm', b'e', 9]); // the name section
        wasm.extend([0, 5, 3, b'x', b'y', b'z', 7]); // another custom section, kept
        wasm
    }

    #[test]
    fn only_the_name_section_goes() {
        let stripped = without_name_section(&module()).unwrap();
        let mut expected = b"\0asm\x01\0\0\0".to_vec();
        expected.extend([1, 1, 0x60, 0, 5, 3, b'x', b'y', b'z', 7]);
        assert_eq!(stripped, expected);
        assert_eq!(without_name_section(&stripped).unwrap(), stripped);
    }

    #[test]
    fn what_is_not_a_module_is_refused() {
        assert_eq!(without_name_section(b"not wasm at all"), None);
        let mut cut = module();
        cut.truncate(cut.len() - 2);
        assert_eq!(
            without_name_section(&cut),
            None,
            "a section running past the end"
        );
    }
}
