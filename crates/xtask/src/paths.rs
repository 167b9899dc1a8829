//! Where things are: the workspace, its folders, and the per-machine tool cache.

use std::path::{Path, PathBuf};

/// The workspace root (two levels above this crate).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// The npm side (wrangler, Node 22, binaryen), installed from `package-lock.json`.
pub fn node_modules() -> PathBuf {
    root().join("node_modules")
}

/// Cargo-installed tools live per machine, outside any clone, one folder per tool and version, so
/// a fresh clone on a machine that has them skips the minutes a `cargo install` takes.
/// `STATUSPHERE_TOOLS_DIR` overrides the place.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATUSPHERE_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("statusphere").join("tools")
}

/// Scratch space for builds and runs that must not be committed.
pub fn scratch() -> PathBuf {
    root().join("target").join("statusphere")
}
