//! `cargo xtask <command>`: the command line over the automation library. Every `just` recipe is a
//! thin wrapper around one of these; the README's two commands call them directly.

use std::process::Command;

use anyhow::{bail, Result};
use xtask::devnet::{Devnet, DevnetConfig};
use xtask::sidecar::{self, Sidecar};
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::{self, Tools, WASM_TARGET};
use xtask::workers::{self, Worker};
use xtask::{bench, deploy, paths, process};

const USAGE: &str = "\
usage: cargo xtask <command>

  dev [--port N]          run the whole app locally (default http://127.0.0.1:8787)
  test                    every check and test: lint, worker builds, unit, integration, end to end
  bootstrap               install the toolchain (skipped in seconds when present)
  build [WORKER...]       build workers to wasm (default: all four)
  lint                    rustfmt --check, clippy -D warnings (native and wasm32), wasm32 checks
  docs-check              every path, Rust item and link the docs cite exists
  fmt                     rustfmt the workspace
  deploy-all [--dry-run]  migrations + broker, listener, edge to Cloudflare; --dry-run bundles offline
  tail WORKER [--format F] wrangler tail for one worker (edge, listener, backfill, broker): pretty or json
  oauth-key               print a new private P-256 JWK for the OAUTH_PRIVATE_KEY secret
  session-key             print a new entry for the SESSION_KEYS secret (sessions sealed at rest)
  bench [NAME...]         benchmarks (foundation, sidecar, listener, broker, edge, backfill;
                          default all)
                          into docs/benchmarks.md
  chaos [--events N] [--rounds R] [--seed S]
                          a crash campaign: the stack and the sidecar killed at random points,
                          D1 compared with the oracle (docs/reliability.md)
  soak [--minutes M] [--pages P]
                          the local app live for M minutes (30) with P pages (1000), memory,
                          lag and delivery sampled (docs/reliability.md)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(error) = run(&args) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    // `cargo xtask test --help` asks what `test` does; it must not run the suite.
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    match command.as_str() {
        "dev" => dev(rest),
        "test" => test(),
        "bootstrap" => Tools::ensure().map(|_| ()),
        "build" => build(rest),
        "lint" => lint(),
        "docs-check" => docs_check(),
        "fmt" => process::run(cargo().args(["fmt", "--all"])),
        "deploy-all" => deploy_all(rest),
        "tail" => tail(rest),
        "oauth-key" => oauth_key(),
        "session-key" => session_key(),
        "bench" => bench::run(&Tools::ensure()?, rest),
        "chaos" => bench::chaos(&Tools::ensure()?, rest),
        "soak" => bench::soak(&Tools::ensure()?, rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::root());
    cmd
}

fn dev(args: &[String]) -> Result<()> {
    let port = match args {
        [] => 8787,
        [flag, port] if flag == "--port" => port.parse()?,
        _ => bail!("usage: cargo xtask dev [--port N]"),
    };
    let tools = Tools::ensure()?;
    workers::build_all(&tools)?;
    sidecar::build()?;
    let state = paths::root().join(".wrangler");
    // The PLC directory is in memory, so the PDS's accounts cannot outlive a run: start fresh.
    let devnet_data = state.join("devnet");
    if devnet_data.exists() {
        std::fs::remove_dir_all(&devnet_data)?;
    }
    std::fs::create_dir_all(&state)?;
    // The local atproto network (PLC + PDS), then the sidecar bridging its firehose to Jetstream.
    let devnet = Devnet::start(
        &tools,
        &DevnetConfig {
            plc_port: 2582,
            pds_port: 2583,
            data_dir: devnet_data,
            log_file: state.join("devnet.log"),
            accounts: vec!["alice".into(), "bob".into()],
            https_app: None,
        },
    )?;
    let jetstream = Sidecar::start(
        &[
            "--listen".into(),
            "127.0.0.1:6008".into(),
            "--firehose".into(),
            devnet.pds_ws(),
        ],
        &state.join("sidecar.log"),
    )?;
    let config = StackConfig {
        port,
        persist_dir: state.join("state"),
        log_file: None,
        test_scheduled: true,
        foreground: true,
        vars: Vec::new(),
        // The committed limits: a person trying the app locally meets what production would do.
        rate_limit: None,
        // The loopback client on plain http (tests run the confidential one over HTTPS).
        public: None,
        // wrangler's own, as `wrangler dev` has it.
        local_observability: true,
    }
    // Live mode locally: a status written on the PDS shows up within a second.
    .with_var(Worker::Listener, "JETSTREAM_URLS", &jetstream.url)
    .with_var(Worker::Listener, "MODE", "live")
    // The sidecar lists the local network's accounts by collection, as a relay does.
    .with_var(Worker::Backfill, "BACKFILL_RELAY", "http://127.0.0.1:6008")
    .with_local_sign_in(&devnet.plc_url, &devnet.pds_url)
    .with_session_keys()?
    .with_health_token()?;
    let health_token = config
        .var(Worker::Edge, "HEALTH_TOKEN")
        .unwrap_or_default()
        .to_owned();
    let mut stack = Stack::start(&tools, config)?;
    eprintln!(
        "\nlocal atproto network: PLC {}, PDS {}",
        devnet.plc_url, devnet.pds_url
    );
    for account in &devnet.accounts {
        eprintln!(
            "  sign in as {} (password {})",
            account.handle, account.password
        );
    }
    eprintln!("local Jetstream (firehose bridge): {}", jetstream.url);
    eprintln!(
        "detailed health: curl -H 'Authorization: Bearer {health_token}' {}/health",
        stack.base_url()
    );
    eprintln!(
        "\nStatusphere is running at {}/ (Ctrl-C to stop)\n",
        stack.base_url()
    );
    stack.wait()
}

fn test() -> Result<()> {
    let mut clock = Phases::default();
    let tools = clock.time("tools", Tools::ensure)?;
    clock.time("chromium", toolchain::ensure_chromium)?;
    lint_timed(&mut clock, Lints::InBuilds)?;
    clock.time(
        "worker builds (release wasm32, with clippy's lints)",
        || workers::build_all(&tools),
    )?;
    // Every native target, as `cargo clippy --all-targets` would lint them, compiled once with
    // clippy's lints (see `Lints`); the run below needs a subset of them and builds nothing.
    clock.time("test build (native, with clippy's lints)", || {
        process::run(native_tests().args(["--all-targets", "--no-run"]))
    })?;
    let totals = clock.time("tests", || {
        process::run_tests(
            native_tests()
                .arg("--no-fail-fast")
                .env(sidecar::BUILT_ENV, "1"),
        )
    })?;
    eprint!("{}", clock.report());
    eprint!("{}", totals.report());
    // One closing line for the whole run (cargo's own last line is often an empty doc-test run).
    println!("{} passed, {} failed", totals.passed, totals.failed);
    if totals.failed > 0 || totals.passed == 0 {
        bail!("tests failed");
    }
    Ok(())
}

/// How long each phase of `cargo xtask test` took, for the summary it ends with.
#[derive(Default)]
struct Phases(Vec<(&'static str, std::time::Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = std::time::Instant::now();
        let result = phase();
        self.0.push((name, started.elapsed()));
        result
    }

    fn report(&self) -> String {
        let total: std::time::Duration = self.0.iter().map(|(_, d)| *d).sum();
        let mut out = String::from("\nphases:\n");
        for (name, took) in &self.0 {
            out += &format!("  {:>7.1} s  {name}\n", took.as_secs_f64());
        }
        out += &format!("  {:>7.1} s  in all\n", total.as_secs_f64());
        out
    }
}

fn build(args: &[String]) -> Result<()> {
    let tools = Tools::ensure()?;
    if args.is_empty() {
        return workers::build_all(&tools);
    }
    args.iter()
        .try_for_each(|name| workers::build(&tools, name.parse()?))
}

/// `cargo test` for every member that runs natively, compiled with clippy's lints
/// ([`toolchain::with_clippy_lints`]): the test build is also the native clippy run.
fn native_tests() -> std::process::Command {
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    for worker in WASM_ONLY {
        test.args(["--exclude", worker]);
    }
    toolchain::with_clippy_lints(&mut test);
    test
}

/// The workspace members that only ever run as wasm in a worker.
const WASM_ONLY: [&str; 4] = ["edge", "listener", "broker", "workers-common"];

fn docs_check() -> Result<()> {
    let problems = xtask::citations::problems(&xtask::paths::root())?;
    if problems.is_empty() {
        eprintln!("every citation in README.md and docs/ names something that exists");
        return Ok(());
    }
    bail!(
        "the docs cite what does not exist:\n  {}",
        problems.join("\n  ")
    )
}

fn lint() -> Result<()> {
    lint_timed(&mut Phases::default(), Lints::Clippy)
}

/// Who runs clippy.
#[derive(Clone, Copy, PartialEq)]
enum Lints {
    /// `cargo clippy`, natively and for wasm32 (`cargo xtask lint`: checks, no code generated).
    Clippy,
    /// The builds that follow, with clippy's driver as the compiler of our crates: the workers'
    /// release builds (wasm32) and the native test build (`cargo xtask test`).
    InBuilds,
}

fn lint_timed(clock: &mut Phases, lints: Lints) -> Result<()> {
    clock.time("fmt", || {
        process::run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    // The workers run only as wasm (their logic is tested in the shared crates): lint them as
    // wasm, and everything else natively, so that nothing is compiled for a target it never runs on.
    if lints == Lints::Clippy {
        clock.time("clippy (native)", || {
            let mut clippy = cargo();
            clippy.args(["clippy", "--workspace", "--all-targets"]);
            for worker in WASM_ONLY {
                clippy.args(["--exclude", worker]);
            }
            process::run(clippy.args(["--", "-D", "warnings"]))
        })?;
        clock.time("clippy (wasm32 workers)", || {
            let mut clippy = cargo();
            clippy.args(["clippy", "--target", WASM_TARGET]);
            for worker in WASM_ONLY {
                clippy.args(["-p", worker]);
            }
            process::run(clippy.args(["--", "-D", "warnings"]))
        })?;
    }
    // The shared crates must build for wasm32 without the features the workers switch on for
    // them: one check of just those crates (features unify only among the packages named). A
    // check is enough: the release builds compile them for real.
    clock.time("check (wasm32 shared crates, without the workers)", || {
        let mut check = cargo();
        check.args(["check", "--target", WASM_TARGET]);
        for krate in ["lexicon", "domain", "oauth", "account"] {
            check.args(["-p", krate]);
        }
        process::run(&mut check)
    })
}

fn deploy_all(args: &[String]) -> Result<()> {
    let tools = Tools::ensure()?;
    let bundles = match args {
        [] => deploy::deploy(&tools, &deploy::Target::committed())?,
        [flag] if flag == "--dry-run" => deploy::dry_run(
            &tools,
            &paths::scratch().join("dry-run"),
            &deploy::Target::committed(),
        )?,
        _ => bail!("usage: cargo xtask deploy-all [--dry-run]"),
    };
    print!("{}", deploy::report(&bundles));
    Ok(())
}

/// A fresh client key for production's confidential client, named by the date it was made.
fn oauth_key() -> Result<()> {
    let kid = format!("statusphere-{}", unix_seconds());
    let key = oauth::Key::generate()?.with_kid(&kid);
    println!("{}", key.to_jwk());
    eprintln!("store it: cargo xtask oauth-key | npx wrangler secret put OAUTH_PRIVATE_KEY -c wrangler/edge.toml");
    Ok(())
}

/// A fresh entry for the `SESSION_KEYS` key ring (sessions sealed at rest), named by the date it
/// was made: put it first in the secret, keeping the old entries after it until their sessions
/// are gone (docs/operations.md).
fn session_key() -> Result<()> {
    let entry = oauth::sealed::Keyring::generate_entry(&format!("k{}", unix_seconds()))?;
    println!("{entry}");
    eprintln!("store it: cargo xtask session-key | npx wrangler secret put SESSION_KEYS -c wrangler/edge.toml");
    Ok(())
}

/// Seconds since the epoch, enough to tell keys apart.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn tail(args: &[String]) -> Result<()> {
    let (name, format) = match args {
        [name] => (name, "pretty"),
        [name, flag, format] if flag == "--format" && (format == "json" || format == "pretty") => {
            (name, format.as_str())
        }
        _ => bail!(
            "usage: cargo xtask tail WORKER [--format pretty|json] (edge, listener or broker)"
        ),
    };
    let worker: Worker = name.parse()?;
    let tools = Tools::ensure()?;
    let mut cmd = tools.wrangler();
    cmd.args(["tail", "--format", format, "-c"])
        .arg(worker.wrangler_config());
    process::run(&mut cmd)
}
