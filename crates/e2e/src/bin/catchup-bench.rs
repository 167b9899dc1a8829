//! `catchup-bench`: how fast the listener catches up with a backlog, printed as a section of
//! docs/benchmarks.md (`cargo xtask bench listener` runs it and writes the section).
//!
//! The sidecar serves a generated backlog of [`EVENTS`] valid events (40 accounts: status writes
//! and deletes, handle changes, account events; the generator's mix) as fast as it is read, with
//! their recorded times, so the whole file is behind "now". A `wrangler dev` stack's listener in
//! poll mode with the shipped batch settings (`wrangler/listener.toml`) is woken once and reads
//! from the start: invocations follow one another at once while there is more (docs/listener.md,
//! "How a connection ends"). The figures: events per second from the wake until the stored
//! cursor reaches the last event, and the CPU time the kernel counted for the stack's workerd
//! processes meanwhile per 1,000 events (an upper bound for the listener: the local D1 and the
//! broker it publishes to run there too). Target (docs/design.md): 10,000 events/s.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use domain::ingest::Batch;
use e2e::listening;
use serde_json::Value;
use xtask::stack::Stack;
use xtask::toolchain::Tools;

/// Events in the backlog.
const EVENTS: usize = 100_000;
/// The design's catch-up target, events per second.
const TARGET: f64 = 10_000.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if e2e::asked_for_help(
        "catchup-bench: how fast the listener catches up with a 100,000-event backlog.",
    ) {
        return Ok(());
    }
    let tools = Tools::ensure()?;
    let dir = listening::run_dir("bench-catchup")?;
    let file = dir.join("backlog.jsonl");
    tokio::task::block_in_place(|| listening::generate(&file, 7, EVENTS, 0.0))?;
    let text = std::fs::read_to_string(&file)?;
    let frames: Vec<&str> = text.lines().collect();
    let planning = Instant::now();
    let plan = Batch::plan(frames.iter().copied(), e2e::now_ms() * 1000);
    let planned = planning.elapsed();
    let last_us = plan.cursor_us.context("no valid event in the backlog")?;
    ensure!(
        plan.dropped.is_empty(),
        "{} generated frames were dropped",
        plan.dropped.len()
    );

    let sidecar = listening::start_sidecar(&dir, &file, "catchup", &[])?;
    let config = listening::config("bench-catchup", "poll", &[&sidecar.url])?;
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let cpu_before = stack.workerd_cpu();
    let started = Instant::now();
    e2e::backfilling::wake(&stack).await?;
    let status = listening::wait_for_cursor(&stack, last_us, Duration::from_secs(900)).await?;
    let took = started.elapsed();
    let cpu = stack.workerd_cpu().saturating_sub(cpu_before);
    println!("{}", section(frames.len(), took, cpu, planned, &status));
    Ok(())
}

fn section(
    events: usize,
    took: Duration,
    cpu: Duration,
    planned: Duration,
    status: &Value,
) -> String {
    let rate = events as f64 / took.as_secs_f64();
    let counters = &status["counters"];
    let batches = counters["batches"].as_u64().unwrap_or(0);
    let verdict = if rate >= TARGET {
        "met".to_owned()
    } else {
        format!("not yet ({:.0}% of it)", rate / TARGET * 100.0)
    };
    format!(
        "## Listener: catching up with a backlog\n\n\
         Command: `cargo xtask bench listener` ({}), {}. A generated backlog of {events} valid \
         events (the sidecar's generator, 40 accounts) served by the sidecar as fast as it is read; \
         the listener in poll mode with the shipped batch settings, woken once, reads it from the \
         start into the local D1 (`crates/e2e/src/bin/catchup-bench.rs`).\n\n\
         | events | time | events/s | target | workerd CPU per 1,000 events | D1 batches | connections |\n\
         |---:|---:|---:|---|---:|---:|---:|\n\
         | {events} | {:.1} s | {rate:.0} | 10,000: {verdict} | {:.1} ms | {batches} | {} |\n\n\
         The CPU is what the kernel counted for the stack's workerd processes while the listener \
         read: the listener's, and the local D1's and the broker's it writes and publishes to. \
         For scale, `domain::ingest` planning the whole backlog natively (parse, validate, \
         statements; one batch, this binary's optimised build) takes {:.1} ms per 1,000 events.\n",
        xtask::bench::machine(),
        xtask::bench::today(),
        took.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / (events as f64 / 1000.0),
        counters["connects"].as_u64().unwrap_or(0),
        planned.as_secs_f64() * 1000.0 / (events as f64 / 1000.0),
    )
}
