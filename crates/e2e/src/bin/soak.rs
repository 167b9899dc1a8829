//! `soak`: the whole local app in live mode for a long while (`cargo xtask soak [--minutes M]
//! [--pages P]`, by default 30 minutes and 1,000 pages; docs/reliability.md). Not in the test
//! suite.
//!
//! A network of its own (its PDS's firehose bridged to the listener by the sidecar), `P` pages
//! connected to the broker, and every [`CYCLE`] a burst: [`BURST`] statuses written straight to
//! the PDS by bob (as any atproto app would) and one through edge by alice (signed in through
//! OAuth); between bursts the network is quiet long enough for the broker to hibernate. Every
//! minute: the resident memory of every process of the stack and of the sidecar, the listener's
//! lag, the broker's connections, instance and counters. At the end every page must have had
//! every status written, and the memory of the first full minute is compared with the last.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use domain::wire::ServerMessage;
use e2e::backfilling::{status, STATUS};
use e2e::pds::Writer;
use e2e::tables::Tables;
use e2e::web::{self, Browser, SignIn};
use e2e::Page;
use xtask::workers::Worker;

/// One burst and the quiet after it.
const CYCLE: Duration = Duration::from_secs(30);
/// Statuses written to the PDS per burst (plus one through edge).
const BURST: usize = 20;

struct Options {
    minutes: u64,
    pages: usize,
}

/// What one page saw.
#[derive(Default)]
struct Seen {
    /// Each status and when it arrived.
    uris: HashMap<String, Instant>,
    /// Frames whose number was not the one after the last.
    gaps: u64,
    /// For each status from the network: from the sidecar's event time (its `indexed_at`) to
    /// this page (ms), the design's network-path measure.
    from_sidecar_ms: Vec<i64>,
    last_seq: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let Some(options) = options()? else {
        return Ok(());
    };
    let net = tokio::task::block_in_place(|| {
        web::start_live_with("soak", SignIn::Loopback, |config| {
            config
                .with_var(Worker::Edge, "WRITES_PER_MINUTE", "1000000")
                // The soak's pages do not ping; the idle sweep would close them.
                .with_var(Worker::Broker, "IDLE_TIMEOUT_SECONDS", "86400")
        })
    })?;
    let result = soak(&net, &options).await;
    net.with_log(result)
}

fn options() -> Result<Option<Options>> {
    let mut options = Options {
        minutes: 30,
        pages: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => options.minutes = e2e::number_after(&mut args, &arg)?,
            "--pages" => options.pages = e2e::number_after(&mut args, &arg)? as usize,
            "-h" | "--help" => {
                println!(
                    "soak: the local app in live mode for a long while (docs/reliability.md).\n\n\
                     Options: --minutes M (30), --pages P (1000). `cargo xtask soak` runs it."
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(Some(options))
}

async fn soak(net: &web::Net, options: &Options) -> Result<()> {
    let stack = &net.stack;
    let started = Instant::now();
    let started_ms = e2e::now_ms();
    let mut alice = Browser::new(stack);
    alice.sign_in_as("alice").await?;
    let bob = Writer::sign_in(&net.devnet.pds_url, "bob.test").await?;

    let head = e2e::Broker::new(stack.port()).head().await?;
    let mut seen = Vec::with_capacity(options.pages);
    let mut readers = Vec::with_capacity(options.pages);
    for _ in 0..options.pages {
        let mut page = Page::connect(stack.port(), Some(head)).await?;
        let page_seen = Arc::new(Mutex::new(Seen {
            last_seq: head,
            ..Seen::default()
        }));
        seen.push(Arc::clone(&page_seen));
        readers.push(tokio::spawn(async move {
            while let Ok(frame) = page.next_frame_within(Duration::from_secs(3_600)).await {
                let mut seen = page_seen.lock().unwrap_or_else(|e| e.into_inner());
                if frame.seq != seen.last_seq + 1 {
                    seen.gaps += 1;
                }
                seen.last_seq = frame.seq;
                if let ServerMessage::StatusUpserted { status } = frame.message {
                    if status.origin == domain::Origin::Network
                        && !seen.uris.contains_key(&status.uri)
                    {
                        seen.from_sidecar_ms.push(e2e::now_ms() - status.indexed_at);
                    }
                    seen.uris.entry(status.uri).or_insert_with(Instant::now);
                }
            }
        }));
    }
    eprintln!(
        "soak: {} pages open after {:.0} s",
        options.pages,
        started.elapsed().as_secs_f64()
    );

    println!(
        "| minute | stack RSS (MiB, by process) | sidecar RSS (MiB) | listener lag (ms) | \
         broker sockets | broker instance | publishes | frames sent |\n\
         |---|---|---|---|---|---|---|---|"
    );
    let end = started + Duration::from_secs(options.minutes * 60);
    let mut next_sample = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    let mut instances: BTreeSet<String> = BTreeSet::new();
    let mut written = 0usize;
    let mut sent: Vec<(String, Instant)> = Vec::new();
    let mut lags: Vec<i64> = Vec::new();
    while Instant::now() < end {
        let cycle = Instant::now();
        for i in 0..BURST {
            let uri = bob
                .put(STATUS, None, status(["🌊", "🔥", "🌱", "⭐"][i % 4]))
                .await?;
            sent.push((uri, Instant::now()));
            written += 1;
        }
        let response = alice.post("/status", &[("status", "☕")], None).await?;
        ensure!(
            response.status() == 303,
            "edge's write answered {}",
            response.status()
        );
        written += 1;
        while cycle.elapsed() < CYCLE {
            if Instant::now() >= next_sample {
                next_sample += Duration::from_secs(60);
                let health = e2e::health(stack).await?;
                let rss = net.stack.rss();
                let total: u64 = rss.iter().map(|(_, bytes)| bytes).sum();
                samples.push(total);
                let broker = &health["broker"]["shards"][0];
                let instance = broker["instance_id"].as_str().unwrap_or("?").to_owned();
                instances.insert(instance.clone());
                let lag = health["listener"]["lag_ms"].as_i64().unwrap_or(-1);
                lags.push(lag);
                println!(
                    "| {} | {} | {} | {lag} | {} | {instance} | {} | {} |",
                    samples.len() - 1,
                    rss.iter()
                        .map(|(name, bytes)| format!("{name} {}", bytes >> 20))
                        .collect::<Vec<_>>()
                        .join(", "),
                    net.jetstream.as_ref().map_or(0, |s| s.rss() >> 20),
                    broker["connections"],
                    broker["counters"]["publishes"],
                    broker["counters"]["frames_sent"],
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Every status written reached every page.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rows = Tables::query(
        stack,
        &format!("SELECT uri FROM status WHERE deleted = 0 AND indexed_at >= {started_ms}"),
    )
    .await?;
    let expected: HashSet<String> = rows
        .iter()
        .filter_map(|r| r["uri"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        expected.len() == written,
        "{written} statuses written, {} in D1",
        expected.len()
    );
    let mut missing_pages = 0;
    let mut gaps = 0;
    for page in &seen {
        let page = page.lock().unwrap_or_else(|e| e.into_inner());
        gaps += page.gaps;
        if !expected.iter().all(|uri| page.uris.contains_key(uri)) {
            missing_pages += 1;
        }
    }
    // From the PDS's answer to the first page's frame: firehose, sidecar, listener, D1, broker.
    let mut latencies: Vec<Duration> = {
        let first = seen[0].lock().unwrap_or_else(|e| e.into_inner());
        sent.iter()
            .filter_map(|(uri, at)| Some(first.uris.get(uri)?.saturating_duration_since(*at)))
            .collect()
    };
    latencies.sort();
    // Over every page: the sidecar's event to the page (the design's p99 < 500 ms).
    let mut network_ms: Vec<i64> = seen
        .iter()
        .flat_map(|page| {
            page.lock()
                .unwrap_or_else(|e| e.into_inner())
                .from_sidecar_ms
                .clone()
        })
        .collect();
    network_ms.sort_unstable();
    let network = |p: usize| domain::internal::nearest_rank(&network_ms, p).unwrap_or(-1);
    let latency = |p: usize| {
        domain::internal::nearest_rank(&latencies, p).map_or(-1.0, |d| d.as_secs_f64() * 1000.0)
    };
    for reader in readers {
        reader.abort();
    }
    let first = samples.get(1).or(samples.first()).copied().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let growth = (last as f64 - first as f64) / first.max(1) as f64 * 100.0;
    lags.sort_unstable();
    println!(
        "\n{} minutes, {} pages, {written} statuses ({} through edge): pages missing a status \
         {missing_pages}, sequence gaps {gaps}; the stack's memory {} MiB at minute 1, {} MiB at \
         the end ({growth:+.1}%); listener lag when sampled median {} ms, worst {} ms (it grows \
         while the network is quiet); a PDS write to the first page p50 {:.0} ms, p99 {:.0} ms, \
         max {:.0} ms over {} writes; the sidecar's event to a page p50 {} ms, p99 {} ms, max {} \
         ms over {} deliveries; {} broker instances (each new one is a wake after hibernation).",
        options.minutes,
        options.pages,
        written / (BURST + 1),
        first >> 20,
        last >> 20,
        lags.get(lags.len() / 2).copied().unwrap_or(-1),
        lags.last().copied().unwrap_or(-1),
        latency(50),
        latency(99),
        latency(100),
        latencies.len(),
        network(50),
        network(99),
        network(100),
        network_ms.len(),
        instances.len(),
    );
    ensure!(
        missing_pages == 0 && gaps == 0,
        "{missing_pages} pages missed a status; {gaps} gaps"
    );
    Ok(())
}
