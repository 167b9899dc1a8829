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
//! broker it publishes to run there too). Then the same backlog on fresh stacks whose listener
//! writes a statement a row (`STATEMENT_ROWS = "one"`): in the same batches, and with each
//! statement a D1 call of its own (`D1_CALLS = "each"`, a listener without batching: the baseline,
//! and the ratio to quote). Targets (docs/design.md): 10,000 events/s, 10x the baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use domain::ingest::Batch;
use e2e::listening;
use e2e::tables::Tables;
use serde_json::Value;
use xtask::figures::{self, Figure, Goal};
use xtask::stack::Stack;
use xtask::toolchain::Tools;
use xtask::workers::Worker;

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

    let shipped = catch_up(&tools, &dir, &file, last_us, Shape::Shipped).await?;
    let batched = catch_up(&tools, &dir, &file, last_us, Shape::RowsInBatches).await?;
    let naive = catch_up(&tools, &dir, &file, last_us, Shape::CallEach).await?;
    for (name, run) in [("in batches", &batched), ("a call each", &naive)] {
        ensure!(
            shipped.statuses == run.statuses,
            "the baseline {name} ended with {} statuses, the shipped statements with {}",
            run.statuses,
            shipped.statuses
        );
    }
    println!(
        "{}",
        section(frames.len(), &shipped, &batched, &naive, planned)
    );
    Ok(())
}

/// How the listener writes to D1 in a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// As shipped: many rows a statement, a batch's statements in one D1 call.
    Shipped,
    /// A statement a row, in the same batches (`STATEMENT_ROWS = "one"`).
    RowsInBatches,
    /// A statement a row, each its own D1 call (`D1_CALLS = "each"` as well): how a listener
    /// without batching writes, the baseline the target's ratio is read against.
    CallEach,
}

/// One catch-up.
struct Run {
    took: Duration,
    cpu: Duration,
    status: Value,
    /// Statuses in D1 at the end (both runs must agree).
    statuses: u64,
}

/// Serves `file` from a sidecar of its own to a stack whose listener reads it from the start
/// (writing in `shape`), woken once; returns when the cursor is at `last_us`.
async fn catch_up(
    tools: &Tools,
    dir: &Path,
    file: &Path,
    last_us: i64,
    shape: Shape,
) -> Result<Run> {
    let name = match shape {
        Shape::Shipped => "shipped",
        Shape::RowsInBatches => "baseline",
        Shape::CallEach => "naive",
    };
    let sidecar = listening::start_sidecar(dir, file, name, &[])?;
    let mut config = listening::config(&format!("bench-catchup-{name}"), "poll", &[&sidecar.url])?;
    if shape != Shape::Shipped {
        config = config.with_var(Worker::Listener, "STATEMENT_ROWS", "one");
    }
    if shape == Shape::CallEach {
        config = config.with_var(Worker::Listener, "D1_CALLS", "each");
    }
    let stack = tokio::task::block_in_place(|| Stack::start(tools, config))?;
    let cpu_before = stack.workerd_cpu();
    let started = Instant::now();
    e2e::backfilling::wake(&stack).await?;
    let status = listening::wait_for_cursor(&stack, last_us, Duration::from_secs(1_800)).await?;
    let took = started.elapsed();
    let cpu = stack.workerd_cpu().saturating_sub(cpu_before);
    let statuses = Tables::query(&stack, "SELECT COUNT(*) AS n FROM status")
        .await?
        .first()
        .and_then(|row| row["n"].as_u64())
        .unwrap_or(0);
    Ok(Run {
        took,
        cpu,
        status,
        statuses,
    })
}

fn section(events: usize, shipped: &Run, batched: &Run, naive: &Run, planned: Duration) -> String {
    let rate = |run: &Run| events as f64 / run.took.as_secs_f64();
    let fast = rate(shipped);
    let per_thousand = |run: &Run| run.cpu.as_secs_f64() * 1000.0 / (events as f64 / 1000.0);
    let per_row = "one local workerd thread runs the listener, D1 and the broker: SQLite's work \
                   a row (28%), the read loop a frame (21%), publishing a third; perf, \
                   docs/benchmarks.md";
    let figures = vec![
        Figure::new("catch-up, 100,000 events", fast, "events/s")
            .against(Goal::AtLeast(TARGET))
            .limited_by(per_row),
        Figure::new(
            "catch-up against a statement a row, a D1 call each",
            fast / rate(naive),
            "x",
        )
        .against(Goal::AtLeast(10.0)),
        Figure::new(
            "catch-up against a statement a row in the same batches",
            fast / rate(batched),
            "x",
        )
        .limited_by(
            "both share a transaction and a D1 call a batch: what differs is per statement",
        ),
        Figure::new("workerd CPU per 1,000 events", per_thousand(shipped), "ms"),
        Figure::new(
            "baseline, a statement a row, a D1 call each",
            rate(naive),
            "events/s",
        ),
        Figure::new(
            "baseline, a statement a row in batches",
            rate(batched),
            "events/s",
        ),
    ];
    let row = |label: &str, run: &Run| {
        let counters = &run.status["counters"];
        format!(
            "| {label} | {events} | {:.1} s | {:.0} | {:.1} ms | {} | {} |\n",
            run.took.as_secs_f64(),
            rate(run),
            per_thousand(run),
            counters["batches"].as_u64().unwrap_or(0),
            counters["connects"].as_u64().unwrap_or(0),
        )
    };
    format!(
        "## Listener: catching up with a backlog\n\n\
         Command: `cargo xtask bench listener` ({}), {}. A generated backlog of {events} valid \
         events (the sidecar's generator, 40 accounts) served by the sidecar as fast as it is read; \
         the listener in poll mode with the shipped batch settings, woken once, reads it from the \
         start into the local D1 (`crates/e2e/src/bin/catchup-bench.rs`). Then the same on a \
         fresh stack with a statement a row (`STATEMENT_ROWS = \"one\"`) in the same batches, \
         and on another with a statement a row and a D1 call a statement (`D1_CALLS = \"each\"` \
         too: a listener without batching, the baseline the target's ratio is read against); \
         all three end with the same statuses.\n\n\
         | statements | events | time | events/s | workerd CPU per 1,000 events | D1 batches | connections |\n\
         |---|---:|---:|---:|---:|---:|---:|\n\
         {}{}{}\n\
         {}\n\
         The CPU is what the kernel counted for the stack's workerd processes while the listener \
         read: the listener's, and the local D1's and the broker's it writes and publishes to. \
         For scale, `domain::ingest` planning the whole backlog natively (parse, validate, \
         statements; one batch, this binary's optimised build) takes {:.1} ms per 1,000 events.\n",
        xtask::bench::machine(),
        xtask::bench::today(),
        row("shipped (many rows each)", shipped),
        row("a statement a row, in batches", batched),
        row("a statement a row, a D1 call each", naive),
        figures::table(&figures),
        planned.as_secs_f64() * 1000.0 / (events as f64 / 1000.0),
    )
}
