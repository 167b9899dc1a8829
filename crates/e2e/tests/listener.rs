//! The listener end to end: `wrangler dev` running the three workers, the sidecar serving a
//! replay as Jetstream, and the local D1 database compared row for row with an oracle
//! (`domain::ingest` over the frames the sidecar served, natively: `e2e::tables`).
//!
//! The replay is the sidecar's generator (status writes and deletes, handle changes,
//! deactivations, takedowns, deletions, reactivations, other collections, its own broken frames)
//! with every hostile fixture of `crates/domain/tests/data/jetstream/hostile` mixed in. The
//! scenarios share the replay, written and read by the oracle once per run ([`replay`]), and
//! nothing else: each starts its own sidecars and stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use domain::ingest::Batch;
use domain::wire::ServerMessage;
use e2e::tables::{self, Tables};
use e2e::{listening, Page};
use serde_json::Value;
use xtask::stack::{Stack, NO_JETSTREAM};
use xtask::workers::Worker;

/// The replay every scenario reads, made by the first one that asks.
static REPLAY: tokio::sync::OnceCell<Replay> = tokio::sync::OnceCell::const_new();

/// Of which 30% broken by the generator (1,000 and more hostile frames with the fixtures).
const EVENTS: usize = 4_000;

struct Replay {
    dir: PathBuf,
    file: PathBuf,
    /// What a sidecar serves from it, read by a plain client.
    frames: Vec<String>,
    oracle: Tables,
    /// The cursor the listener must reach: the greatest `time_us` of the valid events.
    last_us: i64,
    /// Why the oracle dropped frames.
    dropped: Vec<&'static str>,
}

/// The replay, made once per test run: the file written, what a sidecar serves from it read, and
/// the oracle's tables built from that.
async fn replay() -> Result<&'static Replay> {
    REPLAY.get_or_try_init(make_replay).await
}

async fn make_replay() -> Result<Replay> {
    let dir = listening::run_dir("listener-replay")?;
    let file = tokio::task::block_in_place(|| listening::hostile_replay(&dir, 11, EVENTS))?;

    let sidecar = listening::start_sidecar(&dir, &file, "plain", &[])?;
    let frames = tables::served_frames(&sidecar.url, Duration::from_secs(2)).await?;
    // Less than the file: posts to other collections are filtered out, as Jetstream does.
    ensure!(
        frames.len() >= EVENTS * 3 / 4,
        "the sidecar served {} frames",
        frames.len()
    );
    let plan = Batch::plan(frames.iter().map(String::as_str), e2e::now_ms() * 1000);
    let oracle = Tables::oracle(&frames).await?;
    ensure!(
        oracle.status.len() > 100 && oracle.account.len() > 5,
        "a thin replay: {} statuses, {} accounts",
        oracle.status.len(),
        oracle.account.len()
    );
    Ok(Replay {
        dir,
        file,
        frames,
        oracle,
        last_us: plan.cursor_us.context("no valid event")?,
        dropped: plan.dropped.iter().map(|d| d.reason).collect(),
    })
}

/// The stack's D1 tables equal the oracle's.
async fn same_tables(stack: &Stack, replay: &Replay) -> Result<Tables> {
    let tables = Tables::of_stack(&stack.config().persist_dir).await?;
    ensure!(
        tables == replay.oracle,
        "D1 differs from the oracle:\n{}",
        tables.diff(&replay.oracle)
    );
    Ok(tables)
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

fn report(result: Result<()>, stack: Option<&Stack>) {
    if let Err(error) = result {
        let tail = stack.map(|s| s.log_tail(60)).unwrap_or_default();
        panic!("{error:#}\n--- wrangler log ---\n{tail}");
    }
}

/// Poll mode: every valid event of the replay lands, with the handles and account states it
/// implies; every hostile frame is dropped and counted by reason (binary frames too: the sidecar
/// sends a binary copy before every 500th frame); the listener ends caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_records_the_replay_exactly() {
    let replay = replay().await.expect("replay");
    let sidecar = listening::start_sidecar(
        &replay.dir,
        &replay.file,
        "poll",
        &["--binary-every", "500"],
    )
    .expect("sidecar");
    let config = listening::test_config("listener-poll", "poll", &[&sidecar.url]).expect("config");
    let stack = listening::start(config).await.expect("stack");
    let result = async {
        let status =
            listening::wait_for_cursor(&stack, replay.last_us, Duration::from_secs(90)).await?;
        same_tables(&stack, replay).await?;
        // Identity events are claims: they drop handles, never set them.
        ensure!(
            replay.oracle.account.iter().all(|a| a["handle"].is_null()),
            "a handle from an identity event was recorded"
        );
        ensure!(
            counter(&status, "seen") >= replay.frames.len() as u64,
            "{status}"
        );
        ensure!(
            replay.dropped.len() >= 1_000,
            "only {} hostile frames",
            replay.dropped.len()
        );
        let dropped: u64 = status["counters"]["dropped"]
            .as_object()
            .map(|reasons| reasons.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        ensure!(
            dropped >= replay.dropped.len() as u64,
            "{dropped} drops counted, {} expected",
            replay.dropped.len()
        );
        // Each reason the oracle dropped for is counted (a rewound read may count some twice).
        for reason in &replay.dropped {
            ensure!(
                status["counters"]["dropped"][reason].as_u64() >= Some(1),
                "{reason} not counted: {status}"
            );
        }
        // Each connection counts its own 500 frames: at least one binary copy came.
        ensure!(
            status["counters"]["dropped"]["binary"].as_u64() >= Some(1),
            "binary frames not counted: {status}"
        );
        // A frame from the future (a hostile fixture dated 2100) neither moved the cursor nor
        // sorted a status above the present.
        let now_us = e2e::now_ms() * 1000;
        ensure!(
            status["counters"]["dropped"]["future"].as_u64() >= Some(1),
            "the future frame was not dropped: {status}"
        );
        let cursor = status["cursor_us"].as_i64().context("no cursor")?;
        ensure!(cursor <= now_us, "the cursor is in the future: {cursor}");
        let tables = Tables::of_stack(&stack.config().persist_dir).await?;
        ensure!(
            tables
                .status
                .iter()
                .all(|row| row["indexed_at"].as_i64() <= Some(now_us / 1000)),
            "a status sorts after now"
        );
        let batches = counter(&status, "batches");
        ensure!(
            batches as usize >= replay.frames.len() / 200,
            "{batches} batches"
        );
        ensure!(status["mode"] == "poll", "{status}");
        // No connection failed while the replay was read. Its end, though, is an archive that
        // stops far behind now on a busy stream, which a live network never does: the
        // listener may already have called that silent (domain::batch::Pace). Every failure
        // is then one of that trailing run.
        let failures = counter(&status, "failures");
        ensure!(
            failures == status["consecutive_failures"].as_u64().unwrap_or(0)
                && (failures == 0 || status["last_end"] == "silent"),
            "{status}"
        );
        // The broker got what changed.
        ensure!(counter(&status, "published") > 0, "{status}");
        ensure!(counter(&status, "publish_failures") == 0, "{status}");
        // One instance, many connections: each one after the first resumed at the stored seq
        // (`cursor` on the legacy wire), exactly, and the seq stored is this instance's.
        let stats = listening::sidecar_stats(&sidecar.url).await?;
        ensure!(
            stats["cursor_seq"].as_u64() >= Some(counter(&status, "connects") - 1)
                && stats["cursor_seq"].as_u64() >= Some(3),
            "reconnects did not resume by seq: {stats}"
        );
        ensure!(status["seq"]["url"] == sidecar.url.as_str(), "{status}");
        ensure!(
            status["seq"]["seq"].as_u64()
                >= stats["newest_seq"].as_u64().map(|s| s.saturating_sub(200)),
            "the stored seq is not near the end: {status} {stats}"
        );
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// Live mode through faults: the first URL stalls mid-replay, the second is dead, the third drops
/// its TCP connection and the fourth closes with 1011; the table still equals the oracle, and
/// poll mode's (the same oracle). The three instances number the same events differently (as
/// public instances do) and two speak the v2 stream: a listener that carried one instance's seq
/// to another would jump to that one's live tail or replay from elsewhere, and differ from the
/// oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_survives_stalls_closes_and_a_dead_url() {
    let replay = replay().await.expect("replay");
    let once = ["--faults-for", "1"];
    // The stall comes once the stream has shown its pace (a thousand events and more, in one
    // connection): only on a stream known to be busy does a silence mean a stuck instance.
    let stall = listening::start_sidecar(
        &replay.dir,
        &replay.file,
        "stall",
        &[
            &once[..],
            &["--stall-after", STALL_AFTER, "--first-seq", "5000000"],
        ]
        .concat(),
    )
    .expect("sidecar");
    let drop = listening::start_sidecar(
        &replay.dir,
        &replay.file,
        "drop",
        &[&once[..], &["--close-after", "500"]].concat(),
    )
    .expect("sidecar");
    let close = listening::start_sidecar(
        &replay.dir,
        &replay.file,
        "close",
        &[
            &once[..],
            &[
                "--close-after",
                "600",
                "--close-code",
                "1011",
                "--first-seq",
                "90000000",
            ],
        ]
        .concat(),
    )
    .expect("sidecar");
    let (stall_v2, close_v2) = (
        listening::events_url(&stall.url),
        listening::events_url(&close.url),
    );
    let urls = [&*stall_v2, NO_JETSTREAM, &*drop.url, &*close_v2];
    let config = listening::test_config("listener-live", "live", &urls)
        .expect("config")
        .with_var(Worker::Listener, "MAX_BATCHES", "20");
    let stack = listening::start(config).await.expect("stack");
    let result = async {
        let status =
            listening::wait_for_cursor(&stack, replay.last_us, Duration::from_secs(120)).await?;
        same_tables(&stack, replay).await?;
        ensure!(status["mode"] == "live", "{status}");
        ensure!(
            counter(&status, "failures") >= 3,
            "stall, dead URL and close should each count: {status}"
        );
        ensure!(counter(&status, "connects") >= 4, "{status}");
        // After a failure a connection goes by time (each instance here was reached so): a seq
        // carried to another instance would have left a gap the oracle shows.
        for url in [&stall.url, &drop.url, &close.url] {
            let stats = listening::sidecar_stats(url).await?;
            ensure!(stats["cursor_time"].as_u64() >= Some(1), "{url}: {stats}");
        }
        let v2 = listening::sidecar_stats(&stall.url).await?["v2_connections"].as_u64();
        ensure!(v2 >= Some(1), "the v2 stream was not read");
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// Where the stalling sidecars stop sending: past the thousand valid events that make the
/// stream's pace known, within one connection of 20 batches of 200.
const STALL_AFTER: &str = "2200";

/// Poll mode fails over too: the first URL stalls mid-replay with its socket open (on every
/// connection), which a poll tells from having caught up (the stream stopped far behind now on a busy network), so it
/// moves to the second URL and reads the rest there; the table equals the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_leaves_a_stalled_instance() {
    let replay = replay().await.expect("replay");
    let stall = listening::start_sidecar(
        &replay.dir,
        &replay.file,
        "poll-stall",
        &["--stall-after", STALL_AFTER, "--first-seq", "3000000"],
    )
    .expect("sidecar");
    let good =
        listening::start_sidecar(&replay.dir, &replay.file, "poll-good", &[]).expect("sidecar");
    let stall_v2 = listening::events_url(&stall.url);
    let config = listening::test_config("listener-poll-stall", "poll", &[&stall_v2, &good.url])
        .expect("config")
        .with_var(Worker::Listener, "MAX_BATCHES", "20");
    let stack = listening::start(config).await.expect("stack");
    let result = async {
        let status =
            listening::wait_for_cursor(&stack, replay.last_us, Duration::from_secs(120)).await?;
        same_tables(&stack, replay).await?;
        ensure!(
            counter(&status, "failures") >= 1,
            "the stall was not left: {status}"
        );
        // The first URL stalls on every connection, after the same number of frames: the rest
        // of the replay came from the second, which it reached only by leaving the stall (a
        // listener that took the stall for caught up would have read on from the first).
        let stats = listening::sidecar_stats(&good.url).await?;
        let from_good = stats["delivered"].as_u64().unwrap_or(0);
        ensure!(
            from_good >= 500,
            "the second URL served only {from_good} frames"
        );
        ensure!(counter(&status, "connects") >= 2, "{status}");
        ensure!(
            status["pace"]["events"].as_u64() >= Some(1_000),
            "the pace was not learned: {status}"
        );
        // The lag is now minus the cursor, as of the question: the archive is from 2025.
        let lag = status["lag_ms"].as_i64().context("no lag")?;
        let expected = e2e::now_ms() - replay.last_us / 1_000;
        ensure!(
            (expected - lag).abs() < 60_000,
            "lag {lag} ms, expected about {expected}"
        );
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// On a quiet network (the local one, no event for a long while) live mode keeps its connection:
/// silence with a live socket is not a failure, so nothing is logged as an error and nothing
/// reconnects every `SILENT_SECONDS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mode_on_a_quiet_network_keeps_its_connection() {
    let replay = replay().await.expect("replay");
    let log = replay.dir.join("sidecar-quiet.log");
    let quiet = xtask::sidecar::Sidecar::start(&["--listen".into(), "127.0.0.1:0".into()], &log)
        .expect("sidecar");
    // SILENT_SECONDS is 2 in the test settings: four times that without a frame.
    let config = listening::test_config("listener-quiet", "live", &[&quiet.url]).expect("config");
    let stack = listening::start(config).await.expect("stack");
    let result = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let status = listening::status(&stack).await?;
        ensure!(counter(&status, "failures") == 0, "{status}");
        // Each connection is one alarm (its counters are saved with its first batch): still
        // the first.
        ensure!(status["alarms_fired"] == 1, "it reconnected: {status}");
        ensure!(
            status["last_end"].is_null(),
            "the connection ended: {status}"
        );
        ensure!(
            !stack.log_tail(2_000).contains("\"level\":\"ERROR\""),
            "an error was logged:\n{}",
            stack.log_tail(40)
        );
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// The stack stopped mid-replay and started again on the same state: nothing lost, nothing
/// recorded twice (the cursor was stored only after its batch committed); what it records after
/// the restart reaches a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_replay_loses_and_duplicates_nothing() {
    let replay = replay().await.expect("replay");
    // Slow enough (2 ms a frame) to stop it in the middle.
    let sidecar = listening::start_sidecar(&replay.dir, &replay.file, "slow", &["--delay-ms", "2"])
        .expect("sidecar");
    // The v2 stream: after the restart the listener resumes at the stored seq.
    let url = listening::events_url(&sidecar.url);
    let config = listening::test_config("listener-restart", "live", &[&url]).expect("config");
    let stack = listening::start(config.clone()).await.expect("stack");
    let first_us: i64 = serde_json::from_str::<Value>(&replay.frames[0]).expect("json")["time_us"]
        .as_i64()
        .expect("time_us");
    let middle = first_us + (replay.last_us - first_us) / 3;
    let before = listening::wait_for_cursor(&stack, middle, Duration::from_secs(60)).await;
    let before = match before {
        Ok(status) => status,
        Err(error) => return report(Err(error), Some(&stack)),
    };
    let stopped_at = before["cursor_us"].as_i64().unwrap_or_default();
    drop(stack);
    if stopped_at >= replay.last_us {
        panic!("the replay finished before the stack was stopped: {before}");
    }

    let stack = listening::start(config).await.expect("stack again");
    let result = async {
        // What the listener records from here on reaches an open page through the broker.
        let mut page = Page::connect(stack.port(), None).await?;
        let uri = loop {
            if let ServerMessage::StatusUpserted { status } = page.next_frame().await?.message {
                break status.uri;
            }
        };
        ensure!(
            replay
                .oracle
                .status
                .iter()
                .any(|row| row["uri"] == uri.as_str()),
            "the page got a status the replay does not have: {uri}"
        );
        let status =
            listening::wait_for_cursor(&stack, replay.last_us, Duration::from_secs(90)).await?;
        same_tables(&stack, replay).await?;
        let after = status["cursor_us"].as_i64().unwrap_or_default();
        ensure!(
            after >= stopped_at,
            "the cursor went back: {stopped_at} -> {after}"
        );
        let stats = listening::sidecar_stats(&sidecar.url).await?;
        ensure!(
            stats["cursor_seq"].as_u64() >= Some(1),
            "the restart did not resume by seq: {stats}"
        );
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// The broker refuses every publish for a while (its test hook) as the listener records the whole
/// replay: what changed waits in the listener's outbox and reaches the pages once the broker
/// takes publishes again. A page open throughout and one that left during the outage and came
/// back (`since`) end with every message once, in order, and what they show is what D1 holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_pages_and_loses_them_nothing() {
    let replay = replay().await.expect("replay");
    let sidecar =
        listening::start_sidecar(&replay.dir, &replay.file, "outage", &[]).expect("sidecar");
    let config = listening::test_config("listener-outage", "poll", &[&sidecar.url])
        .expect("config")
        // Room for every message, so the page that comes back is sent what it missed.
        .with_var(Worker::Broker, "LOG_CAPACITY", "100000");
    let tools = xtask::toolchain::Tools::locate().expect("tools");
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config)).expect("stack");
    let result = async {
        let broker = e2e::Broker::new(stack.port());
        broker.refuse(600_000).await?;
        let head = broker.head().await?;
        let mut open = Page::connect(stack.port(), Some(head)).await?;
        let leaving = Page::connect(stack.port(), Some(head)).await?;
        e2e::backfilling::wake(&stack).await?;
        // The whole replay is in D1 while the broker takes nothing.
        let status =
            listening::wait_for_cursor(&stack, replay.last_us, Duration::from_secs(90)).await?;
        same_tables(&stack, replay).await?;
        let waiting = status["outbox"]["messages"].as_u64().unwrap_or(0);
        ensure!(
            waiting > 0 && counter(&status, "publish_failures") > 0,
            "nothing waits in the outbox: {status}"
        );
        leaving.close().await?;
        open.silent_for(Duration::from_millis(500)).await?;

        broker.refuse(0).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let status = loop {
            // The counters are stored at the end of the alarm that emptied the outbox.
            let status = listening::status(&stack).await?;
            if status["outbox"]["publishes"].as_u64() == Some(0)
                && counter(&status, "published") >= waiting
            {
                break status;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the outbox never emptied: {status}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let published = counter(&status, "published");
        ensure!(
            published == waiting,
            "{published} messages published, {waiting} waited: {status}"
        );
        let mut back = Page::connect(stack.port(), Some(head)).await?;
        let open = shown(&mut open, head, published).await?;
        let back = shown(&mut back, head, published).await?;
        let tables = Tables::of_stack(&stack.config().persist_dir).await?;
        for (page, shown) in [("the open page", &open), ("the page back", &back)] {
            let expected = shown_by_d1(&tables, &shown.reactivated);
            let missing: Vec<_> = expected
                .iter()
                .filter(|(u, s)| shown.statuses.get(*u) != Some(s))
                .collect();
            let extra: Vec<_> = shown
                .statuses
                .iter()
                .filter(|(u, s)| !shown.reactivated.contains(&s.0) && !expected.contains_key(*u))
                .collect();
            ensure!(
                missing.is_empty() && extra.is_empty(),
                "{page} differs from D1 ({} shown): missing or other {} {:?}, extra {} {:?}",
                expected.len(),
                missing.len(),
                missing.iter().take(3).collect::<Vec<_>>(),
                extra.len(),
                extra.iter().take(3).collect::<Vec<_>>()
            );
        }
        Ok(())
    }
    .await;
    report(result, Some(&stack));
}

/// What a page shows after applying its messages as the page's script does: statuses by uri
/// (author, emoji); an account's deactivation hides its statuses; a reactivation is shown on the
/// next load (those authors are left out of the comparison).
#[derive(Default)]
struct Shown {
    statuses: BTreeMap<String, (String, String)>,
    reactivated: BTreeSet<String>,
}

/// What D1 has a page show: statuses not deleted, of active accounts, but for `left_out`'s.
fn shown_by_d1(tables: &Tables, left_out: &BTreeSet<String>) -> BTreeMap<String, (String, String)> {
    let inactive: BTreeSet<&str> = tables
        .account
        .iter()
        .filter(|row| row["active"] == 0)
        .filter_map(|row| row["did"].as_str())
        .collect();
    tables
        .status
        .iter()
        .filter(|row| row["deleted"] == 0)
        .filter_map(|row| {
            let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
            let did = text("author_did");
            (!inactive.contains(did.as_str()) && !left_out.contains(&did))
                .then(|| (text("uri"), (did, text("status"))))
        })
        .collect()
}

/// Reads `count` frames from `page`, which must be numbered `after + 1` onwards without a gap or
/// a repeat, then nothing more; returns what they leave shown.
async fn shown(page: &mut Page, after: u64, count: u64) -> Result<Shown> {
    let mut shown = Shown::default();
    for k in 1..=count {
        let frame = page.next_frame().await?;
        ensure!(
            frame.seq == after + k,
            "frame {k} of {count} is numbered {}, not {}",
            frame.seq,
            after + k
        );
        match frame.message {
            ServerMessage::StatusUpserted { status } => {
                shown
                    .statuses
                    .insert(status.uri, (status.author_did, status.status));
            }
            ServerMessage::StatusDeleted { uri, .. } => {
                shown.statuses.remove(&uri);
            }
            ServerMessage::AccountChanged { did, active } => {
                if active {
                    shown.reactivated.insert(did);
                } else {
                    shown.statuses.retain(|_, (author, _)| *author != did);
                }
            }
            _ => {}
        }
    }
    page.silent_for(Duration::from_millis(500)).await?;
    Ok(shown)
}
