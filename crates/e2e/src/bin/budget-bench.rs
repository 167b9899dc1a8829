//! `budget-bench`: what each thing a person or the network does costs of Cloudflare's metered
//! resources, measured on local stacks, and how many of each fit the free and the paid plan's
//! limits; printed as a section of docs/benchmarks.md (`cargo xtask bench budget`), which
//! docs/budget.md reads.
//!
//! Every worker counts what its isolate used (`domain::internal::Usage`: D1 rows as D1 reports
//! them, rows of the Durable Objects' own SQLite, key-value reads and writes, Durable Object
//! requests and their wall time), and `/health` shows the counts. The bench reads them before and
//! after a run of one action and divides by the actions, less what the `/health` call itself
//! costs (measured the same way).
//!
//! 1. A stack on the local PLC + PDS: home page views signed out and signed in, status writes
//!    (each through the PDS, its firehose and the listener back into D1 and out to the broker),
//!    and page sockets opened; twice, with a broker of four shards and of one.
//! 2. A stack whose listener (poll mode, as shipped) reads a generated backlog of network events
//!    from the sidecar: the cost per event; then an idle hour in poll mode, from two minutes
//!    with edge's cron fired each minute, as Cloudflare fires it.
//! 3. The same in live mode: the idle hour of a listener that keeps its connection.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use domain::internal::Usage;
use e2e::web::{self, Browser};
use e2e::{listening, Page};
use serde_json::Value;
use xtask::figures::{self, Figure};
use xtask::stack::Stack;
use xtask::workers::Worker;

/// Network events in the generated backlog.
const EVENTS: usize = 3_000;
/// Accounts the sidecar's generator writes as.
const GENERATED_ACCOUNTS: usize = 40;
/// The broker's shards in the first stack (the second has one).
const SHARDS: usize = 4;
/// How long an idle listener is watched (whole minutes: a cron each).
const IDLE: Duration = Duration::from_secs(120);

/// What one worker's isolate used, from `/health`.
#[derive(Clone, Default)]
struct Sample {
    edge: Usage,
    listener: Usage,
    backfill: Usage,
    broker: Usage,
}

/// The difference of two samples, per action.
#[derive(Clone, Copy, Default)]
struct Cost {
    /// Invocations of the public worker (edge): what the plan counts as requests.
    requests: f64,
    d1_read: f64,
    d1_written: f64,
    /// Durable Objects' SQLite rows (SQL API rows and key-value values).
    object_read: f64,
    object_written: f64,
    object_requests: f64,
    object_busy_ms: f64,
}

impl Cost {
    fn between(before: &Sample, after: &Sample, n: f64) -> Cost {
        let d = |f: fn(&Usage) -> u64| {
            let sum =
                |s: &Sample| (f(&s.edge) + f(&s.listener) + f(&s.backfill) + f(&s.broker)) as f64;
            (sum(after) - sum(before)) / n
        };
        let edge = |s: &Sample| s.edge.worker_requests as f64;
        Cost {
            requests: (edge(after) - edge(before)) / n,
            d1_read: d(|u| u.d1_rows_read),
            d1_written: d(|u| u.d1_rows_written),
            object_read: d(|u| u.sql_rows_read + u.kv_reads),
            object_written: d(|u| u.sql_rows_written + u.kv_writes),
            // WebSocket messages are billed at 20 to 1.
            object_requests: d(|u| u.object_requests) + d(|u| u.object_socket_events) / 20.0,
            object_busy_ms: d(|u| u.object_busy_ms),
        }
    }

    fn minus(self, other: Cost) -> Cost {
        let at_least_zero = |x: f64| x.max(0.0);
        Cost {
            requests: at_least_zero(self.requests - other.requests),
            d1_read: at_least_zero(self.d1_read - other.d1_read),
            d1_written: at_least_zero(self.d1_written - other.d1_written),
            object_read: at_least_zero(self.object_read - other.object_read),
            object_written: at_least_zero(self.object_written - other.object_written),
            object_requests: at_least_zero(self.object_requests - other.object_requests),
            object_busy_ms: at_least_zero(self.object_busy_ms - other.object_busy_ms),
        }
    }

    fn scaled(self, by: f64) -> Cost {
        Cost {
            requests: self.requests * by,
            d1_read: self.d1_read * by,
            d1_written: self.d1_written * by,
            object_read: self.object_read * by,
            object_written: self.object_written * by,
            object_requests: self.object_requests * by,
            object_busy_ms: self.object_busy_ms * by,
        }
    }
}

async fn sample(stack: &Stack) -> Result<Sample> {
    let health = e2e::health(stack).await?;
    let usage = |value: &Value| -> Result<Usage> {
        serde_json::from_value(value.clone()).context("a usage in /health")
    };
    Ok(Sample {
        edge: usage(&health["usage"])?,
        listener: usage(&health["listener"]["usage"])?,
        backfill: usage(&health["backfill"]["usage"])?,
        broker: usage(&health["broker"]["relay"]["usage"])?,
    })
}

/// What a `/health` call itself costs (every sample is one).
async fn health_cost(stack: &Stack) -> Result<Cost> {
    let before = sample(stack).await?;
    let mut last = before.clone();
    for _ in 0..5 {
        last = sample(stack).await?;
    }
    Ok(Cost::between(&before, &last, 5.0))
}

/// Samples until the listener's D1 writes stop moving (it has read what the PDS's firehose
/// carried), at most `within`; returns the last sample and how many were taken (each a `/health`
/// call, whose cost is not the action's).
async fn settled(stack: &Stack, within: Duration) -> Result<(Sample, usize)> {
    let deadline = Instant::now() + within;
    let mut last = sample(stack).await?;
    let mut taken = 1;
    let mut still = 0;
    while still < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(750)).await;
        let now = sample(stack).await?;
        taken += 1;
        still = if now.listener.d1_rows_written == last.listener.d1_rows_written {
            still + 1
        } else {
            0
        };
        last = now;
    }
    Ok((last, taken))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if e2e::asked_for_help(
        "budget-bench: what each action costs of the platform's metered resources, and how many fit the free and paid plans.",
    ) {
        return Ok(());
    }
    let (views_out, views_in, writes, sockets) = person_actions(SHARDS).await?;
    let (_, _, writes_one, sockets_one) = person_actions(1).await?;
    let (event, poll_hour) = network_events("poll").await?;
    let (_, live_hour) = network_events("live").await?;
    println!(
        "{}",
        section(
            &[
                ("home page view, signed out", views_out),
                ("home page view, signed in", views_in),
                (
                    "status written (edge, the PDS's firehose back through the listener, every shard)",
                    writes
                ),
                ("status written, one shard", writes_one),
                ("network event read (a generated backlog)", event),
                ("page socket opened", sockets),
                ("page socket opened, one shard", sockets_one),
            ],
            &[
                ("listener idle, poll mode (as shipped)", poll_hour),
                ("listener idle, live mode", live_hour),
            ],
        )
    );
    Ok(())
}

/// Page views, status writes and sockets on a stack with the local PLC + PDS and a broker of
/// `shards` shards.
async fn person_actions(shards: usize) -> Result<(Cost, Cost, Cost, Cost)> {
    let name = format!("bench-budget-{shards}");
    let net = tokio::task::block_in_place(|| {
        web::start_with(&name, |config| {
            config
                .with_var(Worker::Edge, "WRITES_PER_MINUTE", "1000000")
                .with_var(Worker::Broker, "SHARDS", &shards.to_string())
                .with_var(Worker::Broker, "IDLE_TIMEOUT_SECONDS", "86400")
        })
    })?;
    let stack = &net.stack;
    let mut alice = Browser::new(stack);
    alice.sign_in_as("alice").await?;
    let mut visitor = Browser::new(stack);
    visitor.page().await?;
    alice.page().await?;
    let overhead = health_cost(stack).await?;

    let views = 50;
    let (before, _) = settled(stack, Duration::from_secs(20)).await?;
    for _ in 0..views {
        visitor.page().await?;
    }
    let views_out = Cost::between(&before, &sample(stack).await?, views as f64)
        .minus(overhead.scaled(1.0 / views as f64));

    let before = sample(stack).await?;
    for _ in 0..views {
        alice.page().await?;
    }
    let views_in = Cost::between(&before, &sample(stack).await?, views as f64)
        .minus(overhead.scaled(1.0 / views as f64));

    let writes = 20;
    let before = sample(stack).await?;
    for i in 0..writes {
        let emoji = ["🦋", "🚀", "🌿", "☕"][i % 4];
        let answer = alice.post("/status", &[("status", emoji)], None).await?;
        ensure!(
            answer.status().is_success() || answer.status().is_redirection(),
            "POST /status answered {}",
            answer.status()
        );
    }
    let (after, calls) = settled(stack, Duration::from_secs(60)).await?;
    let written = Cost::between(&before, &after, writes as f64)
        .minus(overhead.scaled(calls as f64 / writes as f64));

    let pages = 50;
    let before = sample(stack).await?;
    let mut open = Vec::new();
    for _ in 0..pages {
        open.push(Page::connect(stack.port(), None).await?);
    }
    e2e::Broker::new(stack.port())
        .wait_all_connections(pages, Duration::from_secs(20))
        .await?;
    let sockets = Cost::between(&before, &sample(stack).await?, pages as f64)
        .minus(overhead.scaled(1.0 / pages as f64));
    for page in open {
        page.close().await?;
    }
    drop(net);
    Ok((views_out, views_in, written, sockets))
}

/// A listener in `mode` reading a generated backlog: the cost per event, and an idle hour after.
async fn network_events(mode: &str) -> Result<(Cost, Cost)> {
    let dir = listening::run_dir(&format!("bench-budget-{mode}"))?;
    let file = dir.join("backlog.jsonl");
    tokio::task::block_in_place(|| listening::generate(&file, 11, EVENTS, 0.0))?;
    let text = quiet_tail(&file)?;
    let plan = domain::ingest::Batch::plan(text.lines(), e2e::now_ms() * 1000);
    let last_us = plan.cursor_us.context("no valid event in the backlog")?;
    let sidecar = listening::start_sidecar(&dir, &file, mode, &[])?;
    let config = listening::config(&format!("bench-budget-{mode}"), mode, &[&sidecar.url])?;
    let tools = xtask::toolchain::Tools::locate()?;
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let before = sample(&stack).await?;
    e2e::backfilling::wake(&stack).await?;
    listening::wait_for_cursor(&stack, last_us, Duration::from_secs(600)).await?;
    let after = sample(&stack).await?;
    // What `/health` costs grows with the tables: measured now they are full. Every edge request
    // while the backlog was read was one (the waiting's and the last sample), but the wake.
    let overhead = health_cost(&stack).await?;
    let calls = (after.edge.worker_requests - before.edge.worker_requests).saturating_sub(1);
    let read = Cost::between(&before, &after, EVENTS as f64)
        .minus(overhead.scaled(calls as f64 / EVENTS as f64));
    // The cron's background reads claim each author's handle (once an hour while unknown) and
    // profile (once a day) a few at a time: a new stack works through its authors in its first
    // minutes. Those claims are not an idle listener's cost, so they are spent first.
    for _ in 0..(GENERATED_ACCOUNTS / 5 + 2) {
        e2e::backfilling::wake(&stack).await?;
    }
    let before = sample(&stack).await?;
    // Cloudflare fires edge's cron every minute; `wrangler dev` does not, so the bench does.
    for _ in 0..IDLE.as_secs() / 60 {
        e2e::backfilling::wake(&stack).await?;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let hour = 3600.0 / IDLE.as_secs_f64();
    let after = sample(&stack).await?;
    let idle = Cost::between(&before, &after, 1.0)
        .minus(overhead)
        .scaled(hour);
    drop(stack);
    drop(sidecar);
    Ok((read, idle))
}

/// Appends to the generated backlog (events a millisecond apart) one more event a minute after
/// the last: the network then goes quiet, as the real one mostly is. Without it, every poll's
/// rewind (`REWIND_SECONDS`, 5 s) would read the whole dense backlog again, and the idle hour
/// would measure that. Returns the backlog's text.
fn quiet_tail(file: &std::path::Path) -> Result<String> {
    let mut text = std::fs::read_to_string(file)?;
    let mut last: Value = serde_json::from_str(text.lines().last().context("an empty backlog")?)?;
    let mut first: Value = serde_json::from_str(text.lines().next().context("an empty backlog")?)?;
    let at = last["time_us"].as_i64().context("no time_us")? + 60_000_000;
    first["time_us"] = at.into();
    last = first;
    text.push_str(&format!("{last}\n"));
    std::fs::write(file, &text)?;
    Ok(text)
}

/// One plan's limits over a day (the paid plan's month over 30 days).
struct Plan {
    name: &'static str,
    requests: f64,
    d1_read: f64,
    d1_written: f64,
    object_read: f64,
    object_written: f64,
    object_requests: f64,
    gb_seconds: f64,
}

const PLANS: [Plan; 2] = [
    Plan {
        name: "Free (a day)",
        requests: 100_000.0,
        d1_read: 5_000_000.0,
        d1_written: 100_000.0,
        object_read: 5_000_000.0,
        object_written: 100_000.0,
        object_requests: 100_000.0,
        gb_seconds: 13_000.0,
    },
    Plan {
        name: "Paid, included (a month / 30)",
        requests: 10e6 / 30.0,
        d1_read: 25e9 / 30.0,
        d1_written: 50e6 / 30.0,
        object_read: 25e9 / 30.0,
        object_written: 50e6 / 30.0,
        object_requests: 1e6 / 30.0,
        gb_seconds: 400_000.0 / 30.0,
    },
];

/// A Durable Object is billed for 128 MB while it runs.
const GB: f64 = 0.128;

/// How many `cost`s fit `plan`, and the limit that is hit first.
fn fits(cost: &Cost, plan: &Plan) -> (f64, &'static str) {
    [
        (plan.requests / cost.requests, "Worker requests"),
        (plan.d1_read / cost.d1_read, "D1 rows read"),
        (plan.d1_written / cost.d1_written, "D1 rows written"),
        (plan.object_read / cost.object_read, "DO rows read"),
        (plan.object_written / cost.object_written, "DO rows written"),
        (plan.object_requests / cost.object_requests, "DO requests"),
        (
            plan.gb_seconds / (cost.object_busy_ms / 1000.0 * GB),
            "DO duration",
        ),
    ]
    .into_iter()
    .filter(|(n, _)| n.is_finite())
    .min_by(|a, b| a.0.total_cmp(&b.0))
    .unwrap_or((f64::INFINITY, "none"))
}

fn section(actions: &[(&str, Cost)], hours: &[(&str, Cost)]) -> String {
    let mut out = format!(
        "## Budget: what each action costs, and how many fit a plan\n\n\
         Command: `cargo xtask bench budget` ({}), {}. Local stacks with the shipped settings \
         (the listener in poll mode), the broker in {SHARDS} shards unless a row says one. Every worker counts what its isolate used \
         (D1 rows as D1 reports them, rows of the Durable Objects' SQLite and key-value values, \
         Durable Object requests, WebSocket messages at 20 to 1, and their wall time); `/health` \
         shows the counts and the bench reads them around a run of each action, less the cost \
         of the `/health` call itself. The generated backlog holds {EVENTS} events of the \
         sidecar's generator ({GENERATED_ACCOUNTS} accounts: statuses created, changed and deleted, profiles, \
         identity and account events).\n\n\
         | per action | Worker requests | D1 rows read | D1 rows written | DO rows read | DO rows written | DO requests | DO wall time |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        xtask::bench::machine(),
        xtask::bench::today(),
    );
    let row = |name: &str, c: &Cost| {
        format!(
            "| {name} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} ms |\n",
            c.requests,
            c.d1_read,
            c.d1_written,
            c.object_read,
            c.object_written,
            c.object_requests,
            c.object_busy_ms
        )
    };
    for (name, cost) in actions {
        out.push_str(&row(name, cost));
    }
    out.push_str(
        "\n| an idle hour | Worker requests | D1 rows read | D1 rows written | DO rows read | DO rows written | DO requests | DO wall time |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, cost) in hours {
        out.push_str(&row(name, cost));
    }
    out.push_str(
        "\nHow many of each action fit a day, alone, and the limit it meets first:\n\n| action |",
    );
    for plan in &PLANS {
        out.push_str(&format!(" {} | first limit |", plan.name));
    }
    out.push_str("\n|---|");
    for _ in &PLANS {
        out.push_str("---:|---|");
    }
    out.push('\n');
    for (name, cost) in actions {
        out.push_str(&format!("| {name} |"));
        for plan in &PLANS {
            let (n, limit) = fits(cost, plan);
            out.push_str(&format!(" {n:.0} | {limit} |"));
        }
        out.push('\n');
    }
    out.push_str("\nWhat an idle listener leaves of a day's Durable Object limits:\n\n| mode | DO requests a day | DO GB-s a day | of the free plan's 13,000 GB-s |\n|---|---:|---:|---:|\n");
    let mut figures = Vec::new();
    for (name, hour) in hours {
        let gb_s = hour.object_busy_ms / 1000.0 * GB * 24.0;
        out.push_str(&format!(
            "| {name} | {:.0} | {gb_s:.0} | {:.0}% |\n",
            hour.object_requests * 24.0,
            gb_s / 13_000.0 * 100.0
        ));
        figures.push(Figure::new(&format!("{name}: DO GB-s a day"), gb_s, "GB-s"));
    }
    for (name, cost) in actions {
        let (n, limit) = fits(cost, &PLANS[0]);
        figures.push(
            Figure::new(&format!("{name}: a day on the free plan"), n, "")
                .limited_by(&format!("first limit: {limit}")),
        );
    }
    out.push('\n');
    out.push_str(&figures::table(&figures));
    out
}
