//! `broker-bench`: the broker under load on a local `wrangler dev` stack, printed as a section of
//! docs/benchmarks.md (`cargo xtask bench broker` runs it and writes the section).
//!
//! 0. The shipped shape: one shard, 1,000 pages, 100 publishes.
//! 1. 1,000 pages connected through edge's `/ws`, spread over the shards; 100 publishes, one
//!    message each, 50 ms apart, through edge's test hook, the service binding and the relay:
//!    publish-to-delivery time for every (message, page) pair, and the time until the last page
//!    had each message.
//! 2. The same past `wrangler dev`'s proxy (`Stack::direct_port`), then the first publish after
//!    every shard hibernated.
//! 3. [`LARGE`] pages (past the proxy) spread over the shards: the stack's resident memory before,
//!    with all open, and after the shards hibernated; the first publish after that, then 20 more.
//! 4. Shard sizes: [`LARGE`] pages on one shard, and a quarter of that on one shard, each woken by
//!    a publish after hibernating: what one shard of each size costs.
//! 5. Past one process ([`SPREAD`]): several stacks, each a broker of one shard in a workerd of
//!    its own (as Cloudflare runs each shard apart), their pages held by child processes of this
//!    bench (`broker-bench pages`: this machine's descriptor limit holds each process, the
//!    client's too); every publish is sent to each stack at once, as the relay sends it on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use domain::wire::ServerMessage;
use e2e::{Broker, Page};
use futures_util::StreamExt;
use xtask::figures::{self, Figure, Goal};
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// The large run's pages. workerd holds two file descriptors per WebSocket (measured: 6,070 for
/// 3,000 sockets) and this machine's hard limit is 20,000 per process, not raisable here, so one
/// workerd cannot hold 10,000 sockets on it; 9,500 leaves room for its other descriptors.
const LARGE: usize = 9_500;

/// The broker's shards here.
const SHARDS: usize = 4;
/// Long enough without events for workerd to evict the broker (about 10 s locally).
const HIBERNATE: Duration = Duration::from_secs(20);
/// The runs past one process: (processes, pages in each).
const SPREAD: [(usize, usize); 2] = [(2, 5_000), (3, 8_500)];

fn main() -> Result<()> {
    // A page holder reads its pages on one thread: the fewer threads the clients spread over,
    // the more of this machine's two cores is left to the workerd processes being measured.
    if std::env::args().nth(1).as_deref() == Some("pages") {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(hold_pages());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<()> {
    if e2e::asked_for_help("broker-bench: the broker under load on a local stack (fan-out to 1,000 and 9,500 pages, memory, the first publish after hibernation).") {
        return Ok(());
    }
    let tools = Tools::locate()?;
    let shipped = shipped_shape(&tools).await?;
    // No idle pruning during the run: the bench pages do not ping. Four shards, not the shipped
    // one: what sharding buys is what this bench is for (docs/budget.md says what it costs).
    let config = StackConfig::for_test("bench-broker")?
        .with_var(Worker::Broker, "IDLE_TIMEOUT_SECONDS", "86400")
        .with_var(Worker::Broker, "SHARDS", &SHARDS.to_string());
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let port = stack.port();
    let broker = Broker::new(port);
    // Wake the relay and every shard, and open their logs, before measuring anything.
    let shards = broker.all_stats().await?.relay.shards;

    let pages = open_pages(port, 1_000, Spread::Over(shards)).await?;
    let (pages, small) = measure(&broker, pages, 100, Duration::from_millis(50)).await?;
    let fanout_1k = worst_fanout(&broker).await?;
    close_pages(pages).await;
    wait_connections(&broker, 0).await?;

    // From here on, past wrangler's dev proxy (see `Stack::direct_port`).
    let direct = stack.direct_port()?;
    let pages = open_pages(direct, 1_000, Spread::Over(shards)).await?;
    let (pages, small_direct) = measure(&broker, pages, 100, Duration::from_millis(50)).await?;
    tokio::time::sleep(HIBERNATE).await;
    let (pages, small_wake) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
    close_pages(pages).await;
    wait_connections(&broker, 0).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = stack.rss();
    let opened = Instant::now();
    let pages = open_pages(direct, LARGE, Spread::Over(shards)).await?;
    let open_secs = opened.elapsed().as_secs_f64();
    wait_connections(&broker, LARGE).await?;
    let open = stack.rss();
    // Untouched for a while, the shards hibernate; their sockets stay with the runtime.
    let instances = instance_ids(&broker).await?;
    tokio::time::sleep(HIBERNATE).await;
    let hibernated = stack.rss();
    // The first publish wakes every shard, which takes its sockets back from the runtime.
    let (pages, wake) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
    let (pages, large) = measure(&broker, pages, 20, Duration::from_millis(250)).await?;
    let woken = instance_ids(&broker)
        .await?
        .iter()
        .zip(&instances)
        .filter(|(now, before)| now != before)
        .count();
    close_pages(pages).await;
    wait_connections(&broker, 0).await?;

    // What one shard of each size costs to wake: all the pages on shard 0, then a quarter.
    let mut by_size = Vec::new();
    for size in [LARGE, LARGE / 4] {
        let pages = open_pages(direct, size, Spread::One(0)).await?;
        wait_connections(&broker, size).await?;
        let before = instance_ids(&broker).await?;
        tokio::time::sleep(HIBERNATE).await;
        let (pages, woke) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
        let hibernated = instance_ids(&broker).await?.first() != before.first();
        anyhow::ensure!(hibernated, "shard 0 did not hibernate with {size} pages");
        by_size.push((size, woke));
        close_pages(pages).await;
        wait_connections(&broker, 0).await?;
    }

    // Its memory and descriptors go before the stacks of the runs past one process start.
    drop(stack);
    let mut across = Vec::new();
    for (processes, each) in SPREAD {
        across.push(across_processes(&tools, processes, each).await?);
    }

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
    let large_label = thousands(LARGE);
    let quarter_label = thousands(LARGE / 4);

    println!(
        "## Broker: publish to 1,000 and {large_label} open pages over {shards} shards\n\n\
         Command: `cargo xtask bench broker` ({}), {}. One `wrangler dev` stack (edge, listener, backfill, \
         broker; local workerd) with `SHARDS` = {shards} (shipped: 1, docs/budget.md). Pages connect to edge's \
         `/ws`, which hands them to the broker, each page naming a shard in turn; publishes go to \
         edge's test hook, through the service binding to the relay and from it to every shard, \
         as the listener's and edge's own will. Time runs from just before the publish request \
         is sent to the page's socket yielding the frame, all on this machine (client and workerd \
         share the 2 cores; the client is built with the `bench-client` profile). Every shard \
         lives in the one workerd process, on one thread, so a figure over several shards is \
         their sum here; on Cloudflare each shard runs on its own. `wrangler dev` puts a proxy (a \
         second workerd) in front of the workers that holds four descriptors per socket, so this \
         machine's 20,000-descriptor limit stops it near 5,000 sockets: the large runs connect \
         to workerd's own port for edge (same edge worker, same `/ws`, same binding; production \
         has no such proxy), and 1,000 pages are measured both ways.\n",
        xtask::bench::machine(),
        xtask::bench::today()
    );
    println!("| pages | via | publishes | deliveries | p50 | p99 | max | last page p50 | last page p99 |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let spread = format!("over {shards} shards");
    let rows: Vec<(String, &str, &Measured)> = vec![
        (
            "1,000 on one shard (as shipped)".to_owned(),
            "workerd",
            &shipped,
        ),
        (format!("1,000 {spread}"), "wrangler's proxy", &small),
        (format!("1,000 {spread}"), "workerd", &small_direct),
        (
            format!("1,000 {spread}, first publish after hibernation"),
            "workerd",
            &small_wake,
        ),
        (
            format!("{large_label} {spread}, first publish after hibernation"),
            "workerd",
            &wake,
        ),
        (format!("{large_label} {spread}, awake"), "workerd", &large),
    ]
    .into_iter()
    .chain(by_size.iter().map(|(size, measured)| {
        (
            format!(
                "{} on one shard, first publish after hibernation",
                thousands(*size)
            ),
            "workerd",
            measured,
        )
    }))
    .collect();
    for (pages, via, result) in &rows {
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
    let quarter_wake = by_size
        .last()
        .map_or(f64::NAN, |(_, measured)| pct(&measured.last_page, 100));
    println!(
        "\nThe shards' own view (`/health`'s `broker.shards[].fanout`, the publisher's send to the \
         start of a shard's fan-out, through the relay), the slowest shard at 1,000 pages: p50 {} \
         ms, p99 {} ms.\n",
        fanout_1k.p50_ms.unwrap_or(-1),
        fanout_1k.p99_ms.unwrap_or(-1)
    );
    let late = shipped.last_page.iter().filter(|ms| **ms > 50.0).count();
    println!(
        "As shipped (one shard, 1,000 pages), the median publish reached its last page in {:.1} ms; \
         {late} of {} reached it after 50 ms (the slowest in {:.1} ms). With 1,000 deliveries a \
         publish, the p99 is the tail of the slowest one or two publishes.\n",
        pct(&shipped.last_page, 50),
        shipped.publishes,
        pct(&shipped.last_page, 100),
    );
    let one_thread = "every shard shares the one local workerd thread";
    let descriptors = format!(
        "{large_label}, not 10,000: one workerd process holds every shard here, and this machine \
         allows it 20,000 descriptors (2 a socket)"
    );
    let ten = across.iter().find(|a| a.pages() == 10_000);
    let most = across.iter().max_by_key(|a| a.pages());
    let across_figure = |run: Option<&Across>, what: &str, measured: fn(&Across) -> f64| {
        let name = run.map_or(String::new(), |a| {
            format!(
                "{} pages over {} processes, {what}",
                thousands(a.pages()),
                a.processes
            )
        });
        Figure::new(&name, run.map_or(f64::NAN, measured), "ms")
    };
    let figures = vec![
        across_figure(ten, "awake, publish to page, p99", |a| pct(&a.awake.deliveries, 99))
            .against(Goal::Below(250.0))
            .limited_by("client and workerd processes share this machine's 2 cores"),
        across_figure(ten, "first publish after hibernation, last page", |a| {
            pct(&a.wake.last_page, 100)
        })
        .against(Goal::Below(500.0)),
        across_figure(most, "awake, publish to page, p99", |a| pct(&a.awake.deliveries, 99)),
        across_figure(most, "first publish after hibernation, last page", |a| {
            pct(&a.wake.last_page, 100)
        }),
        Figure::new(
            "1,000 pages on one shard (as shipped), publish to page, p99",
            pct(&shipped.deliveries, 99),
            "ms",
        )
        .against(Goal::Below(50.0))
        .limited_by(
            "V8's full collections on workerd's one thread (one every 20 or so publishes, 20-35 \
             ms: the runtime's objects for each send, swept with no core to spare here)",
        ),
        Figure::new(
            &format!("1,000 pages over {shards} shards, publish to page, p99"),
            pct(&small_direct.deliveries, 99),
            "ms",
        )
        .limited_by(&format!("the relay's hop to each shard; {one_thread}")),
        Figure::new(
            "1,000 pages through wrangler's proxy, p99",
            pct(&small.deliveries, 99),
            "ms",
        ),
        Figure::new(
            &format!("{large_label} pages awake in one process, publish to page, p99"),
            pct(&large.deliveries, 99),
            "ms",
        )
        .limited_by(&format!("{descriptors}; {one_thread}")),
        Figure::new(
            &format!("first publish after hibernation, one shard of {quarter_label} pages (a shard of 10,000 over 4), last page"),
            quarter_wake,
            "ms",
        )
        .against(Goal::Below(500.0))
        .limited_by("what one shard costs; on Cloudflare the shards wake in parallel"),
        Figure::new(
            &format!("first publish after hibernation, {large_label} pages over {shards} shards here, last page"),
            pct(&wake.last_page, 100),
            "ms",
        )
        .limited_by(one_thread),
        Figure::new(
            &format!("first publish after hibernation, one shard of {large_label} pages, last page"),
            by_size.first().map_or(f64::NAN, |(_, m)| pct(&m.last_page, 100)),
            "ms",
        ),
        Figure::new("pages connected across shards", most.map_or(0, Across::pages) as f64, "")
            .against(Goal::AtLeast(25_000.0))
            .limited_by(
                "this machine: 20,000 descriptors a process (workerd holds 2 a socket, the client \
                 1) keep each process under 10,000; the design allows 30,000 a shard \
                 (MAX_SOCKETS) times SHARDS",
            ),
        Figure::new("memory per socket, shards hibernated", per_socket(&hibernated), "KiB"),
    ];
    println!("{}", figures::table(&figures));
    println!(
        "Memory with {large_label} pages over {shards} shards (resident, all processes of the \
         stack: {}):\n\n\
         | state | stack RSS | per socket |\n|---|---:|---:|\n\
         | before (no pages) | {:.0} MB | |\n\
         | {large_label} open, shards awake | {:.0} MB | {:.1} KiB |\n\
         | {large_label} open, shards hibernated | {:.0} MB | {:.1} KiB |\n\n\
         Of a socket's memory, the broker's own part is its attachment (when it connected and \
         last pinged: {} bytes of JSON) and its network tag (at most 64 bytes); the rest is the \
         runtime's (the socket, its buffers and its two descriptors). Opening the {large_label} \
         sockets (64 at a time) took {:.1} s; the publish after the idle period woke {woken} of \
         {shards} shards as new instances (hibernation), and every page got it. Why not 10,000 \
         here: workerd holds two file descriptors per WebSocket (6,070 for 3,000 sockets) and \
         this machine's hard limit is 20,000 per process, which cannot be raised here; one \
         workerd process fails at about 9,950 sockets (`dup(): Too many open files`), and \
         `wrangler dev` keeps every shard in one process. The design's own limit is 32,768 \
         sockets a shard (`MAX_SOCKETS` keeps 30,000), times `SHARDS`.\n",
        processes(&open),
        total(&base) as f64 / 1e6,
        total(&open) as f64 / 1e6,
        per_socket(&open),
        total(&hibernated) as f64 / 1e6,
        per_socket(&hibernated),
        r#"{"connected_ms":1764900000000,"pinged_ms":1764900000000}"#.len(),
        open_secs,
    );
    println!("{}", spread_section(&across));
    Ok(())
}

fn thousands(n: usize) -> String {
    match n {
        n if n >= 1_000 => format!("{},{:03}", n / 1_000, n % 1_000),
        n => n.to_string(),
    }
}

/// The shards' instance ids (a new one after a hibernation).
async fn instance_ids(broker: &Broker) -> Result<Vec<String>> {
    Ok(broker
        .all_stats()
        .await?
        .shards
        .into_iter()
        .map(|s| s.instance_id)
        .collect())
}

/// The slowest shard's publish-to-fan-out timings.
async fn worst_fanout(broker: &Broker) -> Result<domain::internal::FanoutTimings> {
    Ok(broker
        .all_stats()
        .await?
        .shards
        .into_iter()
        .map(|s| s.fanout)
        .max_by_key(|f| f.p99_ms)
        .unwrap_or_default())
}

struct Measured {
    publishes: usize,
    /// Publish-to-frame time of every (message, page) pair, ms.
    deliveries: Vec<f64>,
    /// Per publish, the time until the last page had it, ms.
    last_page: Vec<f64>,
}

/// A [`Measured`] being filled in, one delivery at a time.
struct Measuring {
    publishes: usize,
    deliveries: Vec<f64>,
    /// Per publish index, the slowest delivery so far.
    last: HashMap<usize, f64>,
}

impl Measuring {
    fn new(publishes: usize) -> Measuring {
        Measuring {
            publishes,
            deliveries: Vec::new(),
            last: HashMap::new(),
        }
    }

    /// Publish `index` reached a page `ms` after it was sent.
    fn add(&mut self, index: usize, ms: f64) {
        self.deliveries.push(ms);
        let slot = self.last.entry(index).or_insert(0.0);
        *slot = slot.max(ms);
    }

    fn done(self) -> Measured {
        Measured {
            publishes: self.publishes,
            deliveries: self.deliveries,
            last_page: self.last.into_values().collect(),
        }
    }
}

/// Which shards pages are bound to.
#[derive(Clone, Copy)]
enum Spread {
    /// Page `i` to shard `i % n`.
    Over(u32),
    One(u32),
}

async fn open_pages(port: u16, n: usize, spread: Spread) -> Result<Vec<Page>> {
    let pages: Vec<Result<Page>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let shard = match spread {
                Spread::Over(shards) => i as u32 % shards.max(1),
                Spread::One(k) => k,
            };
            Page::connect_to(port, shard, None)
        })
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

/// Waits until the shards hold `want` sockets in all.
async fn wait_connections(broker: &Broker, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = broker.all_stats().await?.connections;
        if have == want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{have} connections, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `n` messages `gap` apart while every page reads them; returns the pages and timings.
async fn measure(
    broker: &Broker,
    pages: Vec<Page>,
    n: usize,
    gap: Duration,
) -> Result<(Vec<Page>, Measured)> {
    let readers = read_frames(pages, n, Instant::now);
    let mut sent_at = HashMap::new();
    for i in 0..n {
        let started = Instant::now();
        let relayed = broker
            .publish_all(
                None,
                vec![ServerMessage::StatusConfirmed {
                    uri: format!("{URI_BASE}{i}"),
                }],
            )
            .await?;
        anyhow::ensure!(
            relayed.shards.iter().all(|s| !s.kept),
            "a shard did not take publish {i}: {relayed:?}"
        );
        sent_at.insert(i, started);
        tokio::time::sleep(gap).await;
    }
    let mut pages = Vec::new();
    let mut measured = Measuring::new(n);
    for reader in readers {
        let (page, seen) = reader.await??;
        for (index, at) in seen {
            let index = index.context("a frame nobody published")?;
            let sent = sent_at.get(&index).context("a frame nobody published")?;
            measured.add(index, at.duration_since(*sent).as_secs_f64() * 1000.0);
        }
        pages.push(page);
    }
    Ok((pages, measured.done()))
}

/// A page and what it read: each frame's publish index and when it came.
type Read<T> = (Page, Vec<(Option<usize>, T)>);

/// Every page reads `n` frames in a task of its own, noting each one's publish index and when
/// (`clock`) it came; each task hands its page back with what it saw.
fn read_frames<T: Send + 'static>(
    pages: Vec<Page>,
    n: usize,
    clock: fn() -> T,
) -> Vec<tokio::task::JoinHandle<Result<Read<T>>>> {
    pages
        .into_iter()
        .map(|mut page| {
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(n);
                for _ in 0..n {
                    let frame = page.next_frame().await?;
                    seen.push((publish_index(&frame.message), clock()));
                }
                Ok((page, seen))
            })
        })
        .collect()
}

/// What the bench's publishes are about: the status uri ends with the publish's index.
const URI_BASE: &str = "at://did:plc:bench/xyz.statusphere.status/";

/// The index of the bench publish a message came from.
fn publish_index(message: &ServerMessage) -> Option<usize> {
    match message {
        ServerMessage::StatusConfirmed { uri } => uri.strip_prefix(URI_BASE)?.parse().ok(),
        _ => None,
    }
}

/// Nearest-rank percentile (100 = the maximum).
fn pct(samples: &[f64], p: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    domain::internal::nearest_rank(&sorted, p).unwrap_or(f64::NAN)
}

/// The time now, in microseconds since the epoch: the one clock the bench and its child processes
/// share.
fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `broker-bench pages <port> <n> <shards>`: a child that opens `n` pages on the stack at `port`
/// (over `shards` shards) and holds them, so that no one process of the bench holds more
/// descriptors than this machine allows. It prints `ready`; then for each `read <count>` line on
/// its input every page reads `count` frames and it prints `got` with each frame's publish index
/// and arrival time (`index:unix_us`); `close` closes the pages and ends it.
async fn hold_pages() -> Result<()> {
    use std::io::{BufRead, Write};
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [port, n, shards] = args.as_slice() else {
        anyhow::bail!("usage: broker-bench pages <port> <pages> <shards>");
    };
    let mut pages = open_pages(port.parse()?, n.parse()?, Spread::Over(shards.parse()?)).await?;
    let say = |line: &str| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        Ok(out.flush()?)
    };
    let hear = || {
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
    };
    say("ready")?;
    loop {
        let line = hear().await??;
        let Some(count) = line.trim_end().strip_prefix("read ") else {
            break;
        };
        let count: usize = count.parse()?;
        let readers = read_frames(std::mem::take(&mut pages), count, unix_us);
        let mut report = String::from("got");
        for reader in readers {
            let (page, seen) = reader.await??;
            for (index, at) in seen {
                let index = index.context("a frame nobody published")?;
                report.push_str(&format!(" {index}:{at}"));
            }
            pages.push(page);
        }
        say(&report)?;
    }
    close_pages(pages).await;
    Ok(())
}

/// One child process holding pages ([`hold_pages`]).
struct Holder {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Holder {
    async fn start(port: u16, pages: usize, shards: u32) -> Result<Holder> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "pages",
                &port.to_string(),
                &pages.to_string(),
                &shards.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let input = child.stdin.take().context("no stdin")?;
        let output = child.stdout.take().context("no stdout")?;
        use tokio::io::AsyncBufReadExt;
        Ok(Holder {
            child,
            input,
            output: tokio::io::BufReader::new(output).lines(),
        })
    }

    async fn say(&mut self, line: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.input.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.input.flush().await?)
    }

    async fn hear(&mut self) -> Result<String> {
        self.output
            .next_line()
            .await?
            .context("a page holder ended early")
    }

    async fn close(mut self) -> Result<()> {
        self.say("close").await?;
        self.child.wait().await?;
        Ok(())
    }
}

/// The shape a deploy gets: a stack with the shipped `SHARDS` (one), 1,000 pages past the proxy,
/// 100 publishes 50 ms apart after one uncounted (a fresh process's first fan-out pays for its
/// cold code).
async fn shipped_shape(tools: &Tools) -> Result<Measured> {
    let config = StackConfig::for_test("bench-broker-shipped")?.with_var(
        Worker::Broker,
        "IDLE_TIMEOUT_SECONDS",
        "86400",
    );
    let stack = tokio::task::block_in_place(|| Stack::start(tools, config))?;
    let direct = stack.direct_port()?;
    let broker = Broker::new(direct);
    let shards = broker.all_stats().await?.relay.shards;
    anyhow::ensure!(shards == 1, "the shipped broker has {shards} shards");
    let pages = open_pages(direct, 1_000, Spread::One(0)).await?;
    wait_connections(&broker, 1_000).await?;
    let (pages, _) = measure(&broker, pages, 1, Duration::from_millis(250)).await?;
    let (pages, measured) = measure(&broker, pages, 100, Duration::from_millis(50)).await?;
    close_pages(pages).await;
    Ok(measured)
}

/// A run past one process: `processes` stacks of one shard each, `each` pages on each.
struct Across {
    processes: usize,
    each: usize,
    /// Resident memory of all the stacks, bytes: before the pages, with them open, and after the
    /// shards hibernated.
    rss: [u64; 3],
    open_secs: f64,
    wake: Measured,
    awake: Measured,
}

impl Across {
    fn pages(&self) -> usize {
        self.processes * self.each
    }
}

/// Starts `processes` stacks, opens `each` pages on each from a child process of its own, then
/// measures 20 publishes (after one uncounted) and the first publish after every shard
/// hibernated, each sent to every stack at once.
async fn across_processes(tools: &Tools, processes: usize, each: usize) -> Result<Across> {
    let mut stacks = Vec::new();
    for k in 0..processes {
        let config = StackConfig::for_test(&format!("bench-broker-{processes}x-{k}"))?
            .with_var(Worker::Broker, "IDLE_TIMEOUT_SECONDS", "86400")
            .with_var(Worker::Broker, "SHARDS", "1");
        stacks.push(tokio::task::block_in_place(|| Stack::start(tools, config))?);
    }
    // Publishes, like the pages, go to workerd's own port (past wrangler's proxy).
    let mut brokers = Vec::new();
    for stack in &stacks {
        brokers.push(Broker::new(stack.direct_port()?));
    }
    for broker in &brokers {
        broker.all_stats().await?;
    }
    let rss = |stacks: &[Stack]| -> u64 {
        stacks
            .iter()
            .flat_map(|s| s.rss())
            .map(|(_, bytes)| bytes)
            .sum()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss(&stacks);
    let opened = Instant::now();
    let mut holders = Vec::new();
    for stack in &stacks {
        holders.push(Holder::start(stack.direct_port()?, each, 1).await?);
    }
    for holder in &mut holders {
        let said = holder.hear().await?;
        anyhow::ensure!(said == "ready", "a page holder said {said:?}");
    }
    let open_secs = opened.elapsed().as_secs_f64();
    for broker in &brokers {
        wait_connections(broker, each).await?;
    }
    let open = rss(&stacks);
    // Live first, then quiet: the first publish after the quiet is what hibernation costs. The
    // first publish a fresh process ever fans out pays for its cold code (measured: 654 ms for
    // 5,000 pages on one shard, where later wakes took 200-210 ms), so one goes uncounted.
    measure_across(&brokers, &mut holders, 1, Duration::from_millis(250)).await?;
    let awake = measure_across(&brokers, &mut holders, 20, Duration::from_millis(250)).await?;
    tokio::time::sleep(HIBERNATE).await;
    let hibernated = rss(&stacks);
    let wake = measure_across(&brokers, &mut holders, 1, Duration::from_millis(250)).await?;
    for holder in holders {
        holder.close().await?;
    }
    drop(stacks);
    Ok(Across {
        processes,
        each,
        rss: [before, open, hibernated],
        open_secs,
        wake,
        awake,
    })
}

/// [`measure`] over several stacks: each publish goes to every stack's broker at the same moment
/// and every holder's pages read it.
async fn measure_across(
    brokers: &[Broker],
    holders: &mut [Holder],
    n: usize,
    gap: Duration,
) -> Result<Measured> {
    for holder in holders.iter_mut() {
        holder.say(&format!("read {n}")).await?;
    }
    let mut sent_us = Vec::with_capacity(n);
    for i in 0..n {
        let message = ServerMessage::StatusConfirmed {
            uri: format!("{URI_BASE}{i}"),
        };
        sent_us.push(unix_us());
        let answers = futures_util::future::join_all(
            brokers
                .iter()
                .map(|b| b.publish_all(None, vec![message.clone()])),
        )
        .await;
        for relayed in answers {
            let relayed = relayed?;
            anyhow::ensure!(
                relayed.shards.iter().all(|s| !s.kept),
                "a shard did not take publish {i}: {relayed:?}"
            );
        }
        tokio::time::sleep(gap).await;
    }
    let mut measured = Measuring::new(n);
    for holder in holders.iter_mut() {
        let report = holder.hear().await?;
        let seen = report
            .strip_prefix("got")
            .with_context(|| format!("a page holder said {report:?}"))?;
        for pair in seen.split_whitespace() {
            let (index, at) = pair.split_once(':').context("not index:time")?;
            let index: usize = index.parse()?;
            let sent = *sent_us.get(index).context("a frame nobody published")?;
            measured.add(index, (at.parse::<i64>()? - sent) as f64 / 1000.0);
        }
    }
    Ok(measured.done())
}

/// The runs past one process, as a section of their own.
fn spread_section(runs: &[Across]) -> String {
    let mut out = String::from(
        "### Past one process\n\n\
         Each stack below is a whole `wrangler dev` stack whose broker is one shard in a \
         workerd of its own (as Cloudflare runs each shard apart); its pages connect to that workerd's port from a child process of \
         the bench (each child holds one stack's pages: the client is held to the same \
         descriptor limit), and each publish is sent to every stack's broker at the same moment, \
         as the relay sends it on to shards that Cloudflare runs apart. Times are on the one \
         clock of this machine, from just before the publishes are sent to a page's frame.\n\n\
         | pages | processes | publishes | deliveries | p50 | p99 | max | last page p99 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in runs {
        for (label, measured) in [
            ("first publish after hibernation", &run.wake),
            ("awake", &run.awake),
        ] {
            out.push_str(&format!(
                "| {} ({} × {}), {label} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
                thousands(run.pages()),
                run.processes,
                thousands(run.each),
                run.processes,
                measured.publishes,
                measured.deliveries.len(),
                pct(&measured.deliveries, 50),
                pct(&measured.deliveries, 99),
                pct(&measured.deliveries, 100),
                pct(&measured.last_page, 99),
            ));
        }
    }
    out.push('\n');
    for run in runs {
        let per_socket =
            |bytes: u64| bytes.saturating_sub(run.rss[0]) as f64 / run.pages() as f64 / 1024.0;
        out.push_str(&format!(
            "{} pages over {} processes: opened in {:.1} s; all stacks resident {:.0} MB before, \
             {:.0} MB open ({:.1} KiB a socket), {:.0} MB with the shards hibernated ({:.1} KiB).\n",
            thousands(run.pages()),
            run.processes,
            run.open_secs,
            run.rss[0] as f64 / 1e6,
            run.rss[1] as f64 / 1e6,
            per_socket(run.rss[1]),
            run.rss[2] as f64 / 1e6,
            per_socket(run.rss[2]),
        ));
    }
    out
}
