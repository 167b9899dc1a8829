//! Building the three workers to wasm with worker-build.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::toolchain::Tools;
use crate::{paths, process};

/// The D1 database name shared by every wrangler config.
pub const D1_DATABASE: &str = "statusphere";

/// The folder of the committed wrangler configs, one per worker.
pub fn config_dir() -> PathBuf {
    paths::root().join("wrangler")
}

/// One of the three workers: its crate is `workers/<name>/`, its config `wrangler/<name>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Worker {
    Broker,
    Listener,
    Edge,
}

impl Worker {
    /// In dependency order: edge binds listener and broker, listener binds broker. Deploys go in
    /// this order, so that a binding always names a worker that exists.
    pub const ALL: [Worker; 3] = [Worker::Broker, Worker::Listener, Worker::Edge];

    /// The name of its crate folder, its wrangler config and its Cloudflare script.
    pub fn name(self) -> &'static str {
        match self {
            Worker::Broker => "broker",
            Worker::Listener => "listener",
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
    process::run(&mut tools.worker_build(&worker.crate_dir()))
}

/// Builds all three workers at once. Cargo still compiles them one at a time (they share the
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
                Some(status) if status.success() => eprintln!(
                    "built {worker} ({:.1} s from the start)",
                    started.elapsed().as_secs_f64()
                ),
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
