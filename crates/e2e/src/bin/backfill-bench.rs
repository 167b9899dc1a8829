//! `backfill-bench`: what the backfill (docs/backfill.md) costs per 1,000 accounts,
//! printed as a section of docs/benchmarks.md (`cargo xtask bench backfill` runs it and writes
//! the section).
//!
//! A local network of [`ACCOUNTS`] accounts, each with a status written before the stack
//! starts (every third with two, every tenth with a display name), listed by the sidecar as a
//! relay does; a `wrangler dev` stack whose listener reads the network live while the backfill
//! reads it with the shipped budgets (50 subrequests an invocation, 3 pages an account). The figures are the
//! backfill's own counters (invocations, subrequests, D1's `rows_written`), its wall time from
//! the first read to done, and the CPU time the kernel counted for the stack's workerd processes
//! meanwhile (an upper bound: it holds the local D1 and the listener's live reading too).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use domain::internal::Usage;
use e2e::backfilling::{relay, status, wait_for, wait_for_relay, wake, within_budget, writers};
use e2e::backfilling::{EMOJIS, STATUS};
use e2e::tables::Tables;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use xtask::devnet::{Devnet, DevnetConfig};
use xtask::figures::{self, Figure};
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// Accounts on the network, each with statuses.
const ACCOUNTS: usize = 1_000;
/// Subrequests per invocation: the free plan's limit, as shipped.
const BUDGET: u32 = 50;
/// The shipped daily cap of D1 rows the backfill writes (`BACKFILL_DAILY_ROWS`).
const DAILY_ROWS: f64 = 50_000.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if e2e::asked_for_help(
        "backfill-bench: what the backfill costs per 1,000 accounts on a local network.",
    ) {
        return Ok(());
    }
    let tools = Tools::ensure()?;
    xtask::sidecar::build()?;
    let mut devnet_config = DevnetConfig::for_test("bench-backfill")?;
    devnet_config.accounts = (0..ACCOUNTS).map(|i| format!("k{i:04}")).collect();
    let started = Instant::now();
    let devnet = tokio::task::block_in_place(|| Devnet::start(&tools, &devnet_config))?;
    eprintln!("{ACCOUNTS} accounts in {:?}", started.elapsed());
    let written = write(&devnet).await?;
    eprintln!("{written} statuses written in {:?}", started.elapsed());

    let dir = e2e::listening::run_dir("bench-backfill")?;
    let (sidecar, relay) = relay(&devnet, &dir)?;
    wait_for_relay(&relay, ACCOUNTS).await?;
    let config = StackConfig::for_test("bench-backfill")?
        .with_var(Worker::Listener, "JETSTREAM_URLS", &sidecar.url)
        .with_var(Worker::Listener, "MODE", "live")
        .with_local_sign_in(&devnet.plc_url, &devnet.pds_url)
        .with_backfill(&relay, BUDGET);
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let cpu_before = stack.workerd_cpu();
    let usage_before = backfill_usage(&stack).await?;
    wake(&stack).await?;
    let within = Duration::from_secs(900);
    let progress = wait_for(&stack, "the backfill done", within, |p| {
        p["phase"] == "done"
    })
    .await?;
    let cpu = stack.workerd_cpu().saturating_sub(cpu_before);
    let usage = backfill_usage(&stack).await?;
    let read = usage.d1_rows_read - usage_before.d1_rows_read;
    let stored = Tables::query(&stack, "SELECT COUNT(*) AS n FROM status WHERE deleted = 0")
        .await?
        .first()
        .and_then(|r| r["n"].as_u64())
        .unwrap_or(0);
    ensure!(
        progress["done"].as_u64() == Some(ACCOUNTS as u64) && stored == written as u64,
        "the backfill did not read the whole network ({stored} of {written} statuses): {progress}"
    );
    let records = written + ACCOUNTS.div_ceil(10);
    println!("{}", section(&progress, written, records, read, cpu)?);
    Ok(())
}

/// What the backfill's isolate used so far.
async fn backfill_usage(stack: &Stack) -> Result<Usage> {
    let health = e2e::health(stack).await?;
    Ok(serde_json::from_value(health["backfill"]["usage"].clone())?)
}

/// Writes each account's statuses (and every tenth's display name); returns the statuses.
async fn write(devnet: &Devnet) -> Result<usize> {
    let writers = writers(devnet).await?;
    let counts: Vec<usize> = stream::iter(writers.iter().enumerate())
        .map(|(i, w)| async move {
            let mut n = 0;
            for k in 0..(1 + usize::from(i % 3 == 0)) {
                w.put(STATUS, None, status(EMOJIS[(i + k) % EMOJIS.len()]))
                    .await?;
                n += 1;
            }
            if i % 10 == 0 {
                let profile = json!({ "displayName": format!("Person {i}") });
                w.put("app.bsky.actor.profile", Some("self"), profile)
                    .await?;
            }
            anyhow::Ok(n)
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(counts.iter().sum())
}

fn section(
    progress: &Value,
    written: usize,
    records: usize,
    d1_read: u64,
    cpu: Duration,
) -> Result<String> {
    let (invocations, subrequests) = within_budget(progress, u64::from(BUDGET))?;
    let rows = progress["rows_written"].as_u64().unwrap_or(0);
    let wall_ms = progress["finished_ms"].as_i64().unwrap_or(0)
        - progress["started_ms"].as_i64().unwrap_or(0);
    let per_thousand = |total: f64| total * 1_000.0 / ACCOUNTS as f64;
    let rows_per_account = rows as f64 / ACCOUNTS as f64;
    let per_record = |total: f64| total / records as f64;
    let figures = [
        Figure::new(
            "backfill: D1 rows written per record",
            per_record(rows as f64),
            "",
        ),
        Figure::new(
            "backfill: D1 rows read per record",
            per_record(d1_read as f64),
            "",
        ),
        Figure::new(
            "backfill: accounts a day under the shipped cap",
            DAILY_ROWS / rows_per_account,
            "",
        ),
    ];
    Ok(format!(
        "## Backfill: cost per 1,000 accounts\n\n\
         Command: `cargo xtask bench backfill` ({}), {}. A local network of {ACCOUNTS} accounts \
         with {written} statuses written before the stack started (one each, two for every third, \
         a display name for every tenth), listed by the sidecar as a relay does; the backfill \
         worker reads them under `wrangler dev` with the shipped budgets ({BUDGET} \
         subrequests an invocation, 3 pages an account) while the listener reads the same network \
         live. The counters are the backfill's own (`/health`, `backfill.progress`); CPU is what \
         the kernel counted for the stack's workerd processes from the wake to done: an upper \
         bound, since it holds the local D1 (SQLite in the same process; Cloudflare runs D1 \
         elsewhere) and the listener's live reading.\n\n\
         | | {ACCOUNTS} accounts | per account |\n\
         |---|---|---|\n\
         | invocations (alarms) | {invocations} | {:.3} |\n\
         | subrequests (identity, commit, records, profile, relay, D1, broker) | {subrequests} | {:.2} |\n\
         | D1 rows written (D1's `rows_written`) | {rows} | {rows_per_account:.2} |\n\
         | D1 rows read (the backfill's isolate) | {d1_read} | {:.2} |\n\
         | wall time, first read to done | {:.1} s | {:.1} ms |\n\
         | workerd CPU time | {:.2} s | {:.2} ms |\n\n\
         Per 1,000 accounts: {:.0} invocations, {:.0} subrequests, {:.0} D1 rows. With the shipped \
         cap of {DAILY_ROWS:.0} rows a day (`BACKFILL_DAILY_ROWS`, half the free plan's 100,000) \
         the backfill reads about {:.0} accounts a day; the rest waits for the next UTC day. The \
         wall time is the local network's: on the public network each account's reads go to its \
         own PDS, and an invocation holds about eight accounts whatever their speed. Per record \
         backfilled ({records}: statuses and profiles), {:.2} D1 rows written and {:.2} read \
         (docs/budget.md).\n\n{}",
        xtask::bench::machine(),
        xtask::bench::today(),
        invocations as f64 / ACCOUNTS as f64,
        subrequests as f64 / ACCOUNTS as f64,
        d1_read as f64 / ACCOUNTS as f64,
        wall_ms as f64 / 1_000.0,
        wall_ms as f64 / ACCOUNTS as f64,
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1_000.0 / ACCOUNTS as f64,
        per_thousand(invocations as f64),
        per_thousand(subrequests as f64),
        per_thousand(rows as f64),
        DAILY_ROWS / rows_per_account,
        per_record(rows as f64),
        per_record(d1_read as f64),
        figures::table(&figures),
    ))
}
