//! `broker-bench`: the broker under load on a local `wrangler dev` stack, printed as a section of
//! docs/benchmarks.md (`cargo xtask bench broker` runs it and writes the section).
//!
//! 1. 1,000 pages connected through edge's `/ws`; 100 publishes, one message each, 50 ms apart,
//!    through edge's test hook and the service binding: publish-to-delivery time for every
//!    (message, page) pair, and the time until the last page had each message.
//! 2. The same past `wrangler dev`'s proxy (`Stack::direct_port`).
//! 3. [`LARGE`] pages (past the proxy): the stack's resident memory before, with all open, and after
//!    the broker has hibernated; then 20 publishes to all of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use domain::wire::ServerMessage;
use e2e::{Broker, Page};
use futures_util::StreamExt;
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// The large run's pages. workerd holds two file descriptors per WebSocket (measured: 6,070 for
/// 3,000 sockets) and this machine's hard limit is 20,000 per process, not raisable here, so one
/// workerd cannot hold 10,000 sockets on it; 9,500 leaves room for its other descriptors.
const LARGE: usize = 9_500;

/// Long enough without events for workerd to evict the broker (about 10 s locally).
const HIBERNATE: Duration = Duration::from_secs(20);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if e2e::asked_for_help("broker-bench: the broker under load on a local stack (fan-out to 1,000 and 9,500 pages, memory, the first publish after hibernation).") {
        return Ok(());
    }
    let tools = Tools::locate()?;
    // No idle pruning during the run: the bench pages do not ping.
    let config = StackConfig::for_test("bench-broker")?.with_var(
        Worker::Broker,
        "IDLE_TIMEOUT_SECONDS",
        "86400",
    );
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let port = stack.port();
    let broker = Broker::new(port);
    // Wake the broker and open its log before measuring anything.
    broker.stats().await?;

    let pages = open_pages(port, 1_000).await?;
    let (pages, small) = measure(&broker, pages, 100, Duration::from_millis(50)).await?;
    let fanout_1k = broker.stats().await?.fanout;
    close_pages(pages).await;
    wait_connections(&broker, 0).await?;

    // From here on, past wrangler's dev proxy (see `Stack::direct_port`).
    let direct = stack.direct_port()?;
    let pages = open_pages(direct, 1_000).await?;
    let (pages, small_direct) = measure(&broker, pages, 100, Duration::from_millis(50)).await?;
    tokio::time::sleep(HIBERNATE).await;
    let (pages, small_wake) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
    close_pages(pages).await;
    wait_connections(&broker, 0).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = stack.rss();
    let opened = Instant::now();
    let pages = open_pages(direct, LARGE).await?;
    let open_secs = opened.elapsed().as_secs_f64();
    wait_connections(&broker, LARGE).await?;
    let open = stack.rss();
    // Untouched for a while, the object hibernates; its sockets stay with the runtime.
    let instance = broker.stats().await?.instance_id;
    tokio::time::sleep(HIBERNATE).await;
    let hibernated = stack.rss();
    // The first publish wakes the object, which takes its sockets back from the runtime.
    let (pages, wake) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
    let (pages, large) = measure(&broker, pages, 20, Duration::from_millis(250)).await?;
    let after = broker.stats().await?;
    let woke_new_instance = after.instance_id != instance;
    close_pages(pages).await;

    let total = |rss: &[(String, u64)]| rss.iter().map(|(_, b)| *b).sum::<u64>();
    let per_socket = |rss: &[(String, u64)]| {
        (total(rss).saturating_sub(total(&base))) as f64 / LARGE as f64 / 1024.0
    };
    let processes = |rss: &[(String, u64)]| {
        rss.iter()
            .filter(|(_, b)| *b > 20 << 20)
            .map(|(name, b)| format!("{name} {:.0} MB", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    };

    println!(
        "## Broker: publish to 1,000 and 9,500 open pages\n\n\
         Command: `cargo xtask bench broker` ({}), {}. One `wrangler dev` stack (edge, listener, \
         broker; local workerd). Pages connect to edge's `/ws`, which hands them to the broker; \
         publishes go to edge's test hook, through the service binding to the broker, as the \
         listener's and edge's own will. Time runs from just before the publish request is sent \
         to the page's socket yielding the frame, all on this machine (client and workerd share \
         the 2 cores; the client is built with the `bench-client` profile). `wrangler dev` puts a \
         proxy (a second workerd) in front of the workers that holds four descriptors per socket, \
         so this machine's 20,000-descriptor limit stops it near 5,000 sockets: the large run \
         connects to workerd's own port for edge (same edge worker, same `/ws`, same binding; \
         production has no such proxy), and 1,000 pages are measured both ways.\n",
        xtask::bench::machine(),
        xtask::bench::today()
    );
    println!("| pages | via | publishes | deliveries | p50 | p99 | max | last page p50 | last page p99 |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (pages, via, result) in [
        ("1,000", "wrangler's proxy", &small),
        ("1,000", "workerd", &small_direct),
        (
            "1,000, first publish after hibernation",
            "workerd",
            &small_wake,
        ),
        ("9,500, first publish after hibernation", "workerd", &wake),
        ("9,500, awake", "workerd", &large),
    ] {
        println!(
            "| {pages} | {via} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            result.publishes,
            result.deliveries.len(),
            pct(&result.deliveries, 50),
            pct(&result.deliveries, 99),
            pct(&result.deliveries, 100),
            pct(&result.last_page, 50),
            pct(&result.last_page, 99),
        );
    }
    println!(
        "\nThe broker's own view (`/health`'s `broker.fanout`, publisher's send to the start of the \
         fan-out) at 1,000 pages: p50 {} ms, p99 {} ms. Target: p99 < 100 ms at 1,000 pages.\n",
        fanout_1k.p50_ms.unwrap_or(-1),
        fanout_1k.p99_ms.unwrap_or(-1)
    );
    println!(
        "Memory with 9,500 pages (resident, all processes of the stack: {}):\n\n\
         | state | stack RSS | per socket |\n|---|---:|---:|\n\
         | before (no pages) | {:.0} MB | |\n\
         | 9,500 open, object awake | {:.0} MB | {:.1} KiB |\n\
         | 9,500 open, object hibernated | {:.0} MB | {:.1} KiB |\n\n\
         Opening the 9,500 sockets (64 at a time) took {:.1} s; the publish after the idle \
         period {} a new instance of the object (hibernation), and it delivered to all of them. \
         Why not 10,000: workerd holds two file descriptors per WebSocket (6,070 for 3,000 \
         sockets) and this machine's hard limit is 20,000 per process, which cannot be raised \
         here; one workerd process fails at about 9,950 sockets (`dup(): Too many open files`).\n",
        processes(&open),
        total(&base) as f64 / 1e6,
        total(&open) as f64 / 1e6,
        per_socket(&open),
        total(&hibernated) as f64 / 1e6,
        per_socket(&hibernated),
        open_secs,
        if woke_new_instance {
            "woke"
        } else {
            "did not wake"
        },
    );
    drop(stack);
    Ok(())
}

struct Measured {
    publishes: usize,
    /// Publish-to-frame time of every (message, page) pair, ms.
    deliveries: Vec<f64>,
    /// Per publish, the time until the last page had it, ms.
    last_page: Vec<f64>,
}

async fn open_pages(port: u16, n: usize) -> Result<Vec<Page>> {
    let pages: Vec<Result<Page>> = futures_util::stream::iter(0..n)
        .map(|_| Page::connect(port, None))
        .buffer_unordered(64)
        .collect()
        .await;
    pages.into_iter().collect()
}

async fn close_pages(pages: Vec<Page>) {
    futures_util::stream::iter(pages)
        .map(|page| async move {
            let _ = page.close().await;
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
}

async fn wait_connections(broker: &Broker, want: usize) -> Result<()> {
    broker
        .wait_connections(want, Duration::from_secs(120))
        .await
}

/// Publishes `n` messages `gap` apart while every page reads them; returns the pages and timings.
async fn measure(
    broker: &Broker,
    pages: Vec<Page>,
    n: usize,
    gap: Duration,
) -> Result<(Vec<Page>, Measured)> {
    let readers: Vec<_> = pages
        .into_iter()
        .map(|mut page| {
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(n);
                for _ in 0..n {
                    let frame = page.next_frame().await?;
                    seen.push((frame.seq, Instant::now()));
                }
                Ok::<_, anyhow::Error>((page, seen))
            })
        })
        .collect();
    let mut sent_at = HashMap::new();
    for i in 0..n {
        let started = Instant::now();
        let ack = broker
            .publish(vec![ServerMessage::StatusConfirmed {
                uri: format!("at://did:plc:bench/xyz.statusphere.status/{i}"),
            }])
            .await?;
        sent_at.insert(ack.first_seq.context("no seq in the ack")?, started);
        tokio::time::sleep(gap).await;
    }
    let mut pages = Vec::new();
    let mut deliveries = Vec::new();
    let mut last: HashMap<u64, f64> = HashMap::new();
    for reader in readers {
        let (page, seen) = reader.await??;
        for (seq, at) in seen {
            let sent = sent_at.get(&seq).context("a frame nobody published")?;
            let ms = at.duration_since(*sent).as_secs_f64() * 1000.0;
            deliveries.push(ms);
            let slot = last.entry(seq).or_insert(0.0);
            *slot = slot.max(ms);
        }
        pages.push(page);
    }
    Ok((
        pages,
        Measured {
            publishes: n,
            deliveries,
            last_page: last.into_values().collect(),
        },
    ))
}

/// Nearest-rank percentile (100 = the maximum).
fn pct(samples: &[f64], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    domain::internal::nearest_rank(&sorted, p).unwrap_or(f64::NAN)
}
