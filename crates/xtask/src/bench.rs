//! `cargo xtask bench`: measurements, never assertions. Each benchmark writes its own section of
//! docs/benchmarks.md (between `<!-- bench:NAME -->` markers) with the command, machine, date and
//! figures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::stack::{self, Stack, StackConfig};
use crate::toolchain::Tools;
use crate::{deploy, paths, process};

pub fn run(tools: &Tools) -> Result<()> {
    let section = foundation(tools)?;
    write_section("foundation", &section)?;
    println!("{section}");
    Ok(())
}

/// Bundle sizes, stack start-up and request latency of the skeleton.
fn foundation(tools: &Tools) -> Result<String> {
    let bundles = deploy::dry_run(tools, &paths::scratch().join("bench-dry-run"), true)?;

    let mut startups = Vec::new();
    for round in 0..3 {
        let config = StackConfig::for_test(&format!("bench-start-{round}"))?;
        let started = Instant::now();
        let stack = Stack::start(tools, config)?;
        startups.push(started.elapsed());
        drop(stack);
    }

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
        "\nStack start-up (migrations applied + `wrangler dev` with three workers until GET / \
         answers), 3 runs: median {} ms.\n\n",
        median(&startups).as_millis()
    ));
    out.push_str("Sequential requests to edge on one connection each (local workerd):\n\n");
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

fn latencies(port: u16, path: &str, n: usize) -> Result<Vec<Duration>> {
    // Warm the isolate first: the first request pays for compiling the module.
    stack::http_get(port, path)?;
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let (status, _) = stack::http_get(port, path)?;
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

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {}", std::env::consts::ARCH)
}

fn today() -> String {
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
