//! Building the three workers to wasm with worker-build.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::toolchain::Tools;
use crate::{paths, process};

/// The D1 database name shared by every wrangler config.
pub const D1_DATABASE: &str = "statusphere";

/// The workers in dependency order: edge binds listener and broker, listener binds broker.
pub const WORKERS: [&str; 3] = ["broker", "listener", "edge"];

/// The crate folder of a worker.
pub fn crate_dir(worker: &str) -> PathBuf {
    paths::root().join("workers").join(worker)
}

/// What worker-build writes and the wrangler config's `main` points at.
pub fn entry_point(worker: &str) -> PathBuf {
    crate_dir(worker).join("build/index.js")
}

/// Checks that `name` is one of the workers.
pub fn check_name(name: &str) -> Result<&'static str> {
    match WORKERS.iter().find(|w| **w == name) {
        Some(worker) => Ok(worker),
        None => bail!(
            "unknown worker {name:?}: expected one of {}",
            WORKERS.join(", ")
        ),
    }
}

/// Builds one worker (release, size-optimised) into `workers/<name>/build/`.
pub fn build(tools: &Tools, worker: &str) -> Result<()> {
    process::run(&mut tools.worker_build(&crate_dir(worker)))
}

/// Builds all three workers.
pub fn build_all(tools: &Tools) -> Result<()> {
    WORKERS.iter().try_for_each(|worker| build(tools, worker))
}

/// Fails with a clear message if a worker has not been built yet.
pub fn check_built() -> Result<()> {
    for worker in WORKERS {
        let entry = entry_point(worker);
        if !entry.exists() {
            bail!(
                "{} is missing: build the workers with `cargo xtask build` (or run `cargo xtask test`)",
                entry.display()
            );
        }
    }
    Ok(())
}
