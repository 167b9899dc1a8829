//! `cargo xtask bench`: measurements, never assertions. Each benchmark writes its own section of
//! docs/benchmarks.md (between `<!-- bench:NAME -->` markers) with the command, machine, date and
//! figures, and its figures with targets ([`crate::figures`]) to docs/benchmarks.json.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::figures::{self, Figure, Goal};
use crate::stack::{Stack, StackConfig};
use crate::toolchain::Tools;
use crate::{deploy, net, paths, process, sidecar};

/// The benchmarks, by name; `cargo xtask bench` runs all, `cargo xtask bench NAME...` some.
pub const NAMES: [&str; 7] = [
    "foundation",
    "sidecar",
    "listener",
    "broker",
    "edge",
    "backfill",
    "budget",
];

pub fn run(tools: &Tools, names: &[String]) -> Result<()> {
    let chosen: Vec<&str> = if names.is_empty() {
        NAMES.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    for name in chosen {
        let section = match name {
            "foundation" => foundation(tools)?,
            "sidecar" => sidecar_throughput()?,
            "listener" => load_client(tools, "catchup-bench")?,
            "broker" => load_client(tools, "broker-bench")?,
            "edge" => load_client(tools, "edge-bench")?,
            "backfill" => load_client(tools, "backfill-bench")?,
            "budget" => load_client(tools, "budget-bench")?,
            other => anyhow::bail!("unknown benchmark {other:?} (known: {NAMES:?})"),
        };
        write_section(name, &section)?;
        let figures = crate::figures::read(&section);
        if !figures.is_empty() {
            crate::figures::record(name, figures)?;
        }
        println!("{section}");
    }
    Ok(())
}

/// The sidecar's own throughput: a 100,000-event replay served as fast as clients read, to one
/// client and to ten at once.
fn sidecar_throughput() -> Result<String> {
    const EVENTS: u64 = 100_000;
    sidecar::build()?;
    let dir = paths::scratch().join("bench-sidecar");
    std::fs::create_dir_all(&dir)?;
    let replay = dir.join("replay-100k.jsonl");
    process::run(
        std::process::Command::new(sidecar::binary())
            .args(["generate", "--seed", "1", "--accounts", "1000", "--events"])
            .arg(EVENTS.to_string())
            .arg("--malformed-share")
            .arg("0.01")
            .arg("--out")
            .arg(&replay),
    )?;
    let bytes = std::fs::metadata(&replay)?.len();
    let port = net::free_port()?;
    let server = sidecar::Sidecar::start(
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--replay".into(),
            replay.display().to_string(),
            "--pace".into(),
            "max".into(),
        ],
        &dir.join("sidecar.log"),
    )?;
    // Wait until the whole replay is in the window.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !net::http_get(port, "/stats")?
        .1
        .contains("\"source_done\":true")
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replay was not loaded within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("{}?cursor=0", server.url);
    let mut rows = String::new();
    for clients in [1usize, 10] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let report = process::output(
                std::process::Command::new(sidecar::binary())
                    .args(["bench-client", "--url", &url, "--clients"])
                    .arg(clients.to_string())
                    .arg("--events")
                    .arg(EVENTS.to_string()),
            )?;
            let value: serde_json::Value = serde_json::from_str(report.trim())
                .with_context(|| format!("unexpected bench-client output {report:?}"))?;
            rates.push((
                value["events_per_second_per_client"]
                    .as_f64()
                    .unwrap_or(0.0),
                value["events_per_second_total"].as_f64().unwrap_or(0.0),
            ));
        }
        rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (per_client, total) = rates[rates.len() / 2];
        rows.push_str(&format!(
            "| {clients} | {:.0} | {:.0} |\n",
            per_client, total
        ));
    }
    drop(server);
    Ok(format!(
        "## Sidecar: events served per second\n\n\
         Command: `cargo xtask bench sidecar` ({}), {}. A generated 100,000-event replay \
         ({:.1} MB, 1% malformed frames) loaded with `--pace max`; each client subscribes with \
         `cursor=0` and reads every event (`statusphere-sidecar bench-client`, on the same machine, \
         debug build as `dev` and the tests run it). Median of 3 runs.\n\n\
         | clients | events/s per client | events/s in all |\n|---:|---:|---:|\n{rows}\n\
         The listener's catch-up target is 10,000 events/s: the sidecar is not the bottleneck.\n",
        machine(),
        today(),
        bytes as f64 / 1e6
    ))
}

/// A benchmark that is a load client with its own stack, one of `e2e`'s binaries built with the
/// `bench-client` profile: `catchup-bench` (the listener's catch-up with a 100,000-event
/// backlog), `broker-bench` (publish-to-delivery at 1,000 and 9,500 pages, memory
/// per socket), `edge-bench` (CPU per request of pages and status writes), `backfill-bench` (the
/// backfill's subrequests, D1 rows, time and CPU per 1,000 accounts), `budget-bench` (what each
/// action costs of the plans' metered resources).
fn load_client(tools: &Tools, bin: &str) -> Result<String> {
    process::output(&mut client(tools, bin, &[])?)
}

/// `cargo xtask chaos ARGS`: the crash campaign (`e2e`'s `chaos` binary, built like the load
/// clients), its progress and its table row on this terminal.
pub fn chaos(tools: &Tools, args: &[String]) -> Result<()> {
    process::run(&mut client(tools, "chaos", args)?)
}

/// `cargo xtask soak ARGS`: the soak (`e2e`'s `soak` binary), its table on this terminal.
pub fn soak(tools: &Tools, args: &[String]) -> Result<()> {
    process::run(&mut client(tools, "soak", args)?)
}

/// The workers built, and the command that runs `e2e`'s binary `bin` with `args`.
fn client(tools: &Tools, bin: &str, args: &[String]) -> Result<std::process::Command> {
    crate::workers::build_all(tools)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(paths::root())
        .args(["run", "--quiet", "--profile", "bench-client", "-p", "e2e"])
        .args(["--bin", bin, "--"])
        .args(args);
    Ok(cmd)
}

/// Bundle sizes, stack start-up and request latency of the skeleton.
fn foundation(tools: &Tools) -> Result<String> {
    let bundles = deploy::dry_run(
        tools,
        &paths::scratch().join("bench-dry-run"),
        &deploy::Target::committed(),
    )?;

    let mut startups = Vec::new();
    let mut first_responses = Vec::new();
    for round in 0..3 {
        let config = StackConfig::for_test(&format!("bench-start-{round}"))?;
        let started = Instant::now();
        let stack = Stack::start(tools, config)?;
        startups.push(started.elapsed());
        first_responses.push(stack.first_response());
        drop(stack);
    }
    let compiles = bundles
        .iter()
        .map(|bundle| Ok((bundle.worker, wasm_compile(tools, bundle)?)))
        .collect::<Result<Vec<_>>>()?;

    let stack = Stack::start(tools, StackConfig::for_test("bench")?)?;
    let home = latencies(stack.port(), "/", 300)?;
    let health = latencies(stack.port(), "/health", 100)?;
    drop(stack);

    let mut out = String::new();
    out.push_str(&format!(
        "## Foundation: bundles, start-up, request latency\n\n\
         Command: `cargo xtask bench` ({}), {}.\n\n",
        machine(),
        today()
    ));
    out.push_str("Bundles (`wrangler deploy --dry-run`, gzip -9 of what would be uploaded):\n\n");
    out.push_str(&deploy::report(&bundles));
    out.push_str(&format!(
        "\nStack start-up (migrations applied + `wrangler dev` with four workers until GET / \
         answers), 3 runs: median {} ms.\n\n",
        median(&startups).as_millis()
    ));
    let first = median(&first_responses);
    out.push_str(&format!(
        "The first request a new stack answered (`GET /`, which instantiates edge's and the \
         broker's wasm, and in which `wrangler dev` itself warms up: its proxy, workerd loading \
         the four workers, the local D1 opened), 3 runs: median {:.1} ms, against a warm `GET /` \
         below. A deployed worker's start-up is its module's compile and instantiation and its \
         global scope (Cloudflare allows 1 s); V8 compiles wasm lazily, function by function, so \
         the compile below is the part paid before the first request, and what the first calls \
         add is in that request's time.\n\n\
         Compiling each worker's wasm (`WebAssembly.compile` in Node {}, the V8 that workerd \
         also embeds; median of {COMPILE_RUNS}):\n\n| worker | wasm | compile |\n|---|---:|---:|\n",
        ms(first),
        process::output(std::process::Command::new(&tools.node).arg("--version"))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
    ));
    // Context, not the target: wrangler dev's proxy, workerd loading four workers and opening
    // the local D1 are in it, none of which a deployed worker's start-up has.
    let mut figures = vec![Figure::new(
        "first request of a new stack (GET /)",
        ms(first),
        "ms",
    )];
    for (worker, compile) in &compiles {
        let bundle = bundles.iter().find(|b| b.worker == *worker);
        out.push_str(&format!(
            "| {} | {:.1} KiB | {:.1} ms |\n",
            worker.name(),
            bundle.map_or(0.0, |b| b.wasm_raw_bytes as f64 / 1024.0),
            ms(*compile)
        ));
        figures.push(
            Figure::new(
                &format!("{}: wasm compile", worker.name()),
                ms(*compile),
                "ms",
            )
            .against(Goal::Below(STARTUP_TARGET_MS)),
        );
    }
    out.push('\n');
    out.push_str(&figures::table(&figures));
    out.push_str("\nSequential requests to edge on one connection each (local workerd):\n\n");
    out.push_str("| request | n | median | p99 |\n|---|---:|---:|---:|\n");
    for (name, samples) in [("GET /", &home), ("GET /health", &health)] {
        out.push_str(&format!(
            "| {name} | {} | {:.2} ms | {:.2} ms |\n",
            samples.len(),
            ms(median(samples)),
            ms(percentile(samples, 99))
        ));
    }
    Ok(out)
}

/// Runs of `WebAssembly.compile` per worker.
const COMPILE_RUNS: usize = 7;
/// docs/design.md: start-up < 100 ms.
const STARTUP_TARGET_MS: f64 = 100.0;

/// The median time Node takes to compile `bundle`'s wasm module.
fn wasm_compile(tools: &Tools, bundle: &deploy::Bundle) -> Result<Duration> {
    let wasm = bundle
        .files
        .iter()
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("no wasm in {}'s bundle", bundle.worker.name()))?;
    let script = format!(
        "const bytes = require('fs').readFileSync(process.argv[1]);\n\
         (async () => {{ const ms = [];\n\
           for (let i = 0; i < {COMPILE_RUNS}; i++) {{\n\
             const t = process.hrtime.bigint(); await WebAssembly.compile(bytes);\n\
             ms.push(Number(process.hrtime.bigint() - t) / 1e6); }}\n\
           ms.sort((a, b) => a - b); console.log(ms[ms.length >> 1]); }})();"
    );
    let out = process::output(
        std::process::Command::new(&tools.node)
            .arg("-e")
            .arg(script)
            .arg(wasm),
    )?;
    let ms: f64 = out.trim().parse().context("node's compile time")?;
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

fn latencies(port: u16, path: &str, n: usize) -> Result<Vec<Duration>> {
    // Warm the isolate first: the first request pays for compiling the module.
    net::http_get(port, path)?;
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let (status, _) = net::http_get(port, path)?;
            anyhow::ensure!(status == 200, "{path} answered {status}");
            Ok(started.elapsed())
        })
        .collect()
}

fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50)
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {}", std::env::consts::ARCH)
}

pub fn today() -> String {
    process::output(std::process::Command::new("date").arg("+%Y-%m-%d"))
        .map(|d| d.trim().to_owned())
        .unwrap_or_else(|_| "date unknown".into())
}

/// Replaces (or appends) the `name` section of docs/benchmarks.md.
fn write_section(name: &str, body: &str) -> Result<()> {
    let path = paths::root().join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let block = format!("{begin}\n{body}{end}");
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &text[..b], block, &text[e + end.len()..]),
        _ => format!("{}\n{}\n", text.trim_end(), block),
    };
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))
}
