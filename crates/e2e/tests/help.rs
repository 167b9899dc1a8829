//! Every binary of ours answers `--help` cleanly: the usage on stdout, nothing on stderr, exit
//! 0, and nothing run (a benchmark asked for help must not start a stack; `cargo xtask test
//! --help` must not start the suite). The sidecar's own is in crates/sidecar/tests/cli.rs.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `program args`, failing if it takes more than a few seconds (it would be doing the work
/// instead of explaining it).
fn help_of(program: &std::path::Path, args: &[&str]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} {args:?} is still running: it did not just print its usage",
                program.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    stdout
}

#[test]
fn the_benchmarks_explain_themselves_without_running() {
    for bin in [
        env!("CARGO_BIN_EXE_edge-bench"),
        env!("CARGO_BIN_EXE_broker-bench"),
        env!("CARGO_BIN_EXE_backfill-bench"),
        env!("CARGO_BIN_EXE_budget-bench"),
    ] {
        let out = help_of(bin.as_ref(), &["--help"]);
        assert!(
            out.contains("Takes no arguments") && out.contains("cargo xtask bench"),
            "{out}"
        );
    }
}

#[test]
fn cargo_xtask_help_after_a_command_does_not_run_it() {
    // The binary `cargo xtask` (an alias of `cargo run -p xtask`) built to run this suite.
    let xtask = xtask::paths::root().join("target/debug/xtask");
    assert!(
        xtask.exists(),
        "{} is missing: run the suite with `cargo xtask test`",
        xtask.display()
    );
    for args in [
        &["--help"][..],
        &["test", "--help"],
        &["deploy-all", "-h"],
        &["dev", "--help"],
    ] {
        let out = help_of(&xtask, args);
        for command in ["dev", "test", "deploy-all", "bench"] {
            assert!(out.contains(&format!("  {command} ")), "{args:?}: {out}");
        }
    }
}

/// The justfile's recipes: `just --list` (the bootstrap's `just`, from npm) shows each with its
/// comment, and each runs a `cargo xtask` command that xtask's usage lists.
#[test]
fn just_lists_every_recipe_and_each_is_an_xtask_command() {
    let root = xtask::paths::root();
    let just = root.join("node_modules/rust-just-linux-x64/bin/just");
    assert!(
        just.exists(),
        "{} is missing: `cargo xtask bootstrap` installs it",
        just.display()
    );
    let listed = Command::new(&just)
        .arg("--list")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let usage = help_of(&root.join("target/debug/xtask"), &["--help"]);
    let justfile = std::fs::read_to_string(root.join("justfile")).unwrap();
    let mut recipes = 0;
    let mut lines = justfile.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((head, _)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '#', '\t']) || head.contains('=') {
            continue;
        }
        let name = head.split_whitespace().next().unwrap();
        recipes += 1;
        let listed_line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("`just --list` does not show {name}:\n{listed}"));
        assert!(
            listed_line.contains('#'),
            "{name} has no comment in `just --list`: {listed_line}"
        );
        let body = lines.peek().copied().unwrap_or_default().trim();
        if name == "default" {
            continue;
        }
        let command = body
            .strip_prefix("cargo xtask ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("recipe {name} is not one cargo xtask command: {body}"));
        assert!(
            usage.contains(&format!("  {command} ")),
            "xtask has no command {command} (recipe {name})"
        );
    }
    assert!(recipes >= 9, "{recipes} recipes read from the justfile");
}
