//! The broker end to end: pages connect to edge's `/ws` on a `wrangler dev` stack, publishes go
//! through edge's test hook and the service binding, exactly as the listener's and edge's own will.
//!
//! Two stacks, one after the other: one with a small log and a short idle timeout (so gaps and
//! pruning can be shown in seconds), one with the shipped settings, left idle until the broker
//! hibernates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use domain::wire::{self, ServerFrame, ServerMessage};
use e2e::{upsert, Broker, Page};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

const LOG_CAPACITY: u64 = 50;
const IDLE_TIMEOUT_SECONDS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_end_to_end() {
    let tools = Tools::locate().expect("toolchain");

    // Four shards (one ships): the checks below are of pages on several.
    let config = StackConfig::for_test("broker")
        .expect("test config")
        .with_var(Worker::Broker, "SHARDS", "4")
        .with_var(Worker::Broker, "LOG_CAPACITY", &LOG_CAPACITY.to_string())
        .with_var(
            Worker::Broker,
            "IDLE_TIMEOUT_SECONDS",
            &IDLE_TIMEOUT_SECONDS.to_string(),
        );
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config)).expect("stack starts");
    let port = stack.port();
    let broker = Broker::new(port);
    let checks: Vec<(&str, Result<()>)> = vec![
        (
            "many pages, every message, in order",
            in_order(port, &broker).await,
        ),
        (
            "a rendered page's since fills the gap",
            since_fills_gap(port, &broker).await,
        ),
        (
            "too far behind or reset: reload",
            reload(port, &broker).await,
        ),
        (
            "optimistic then confirmed",
            optimistic_then_confirmed(port, &broker).await,
        ),
        (
            "hostile pages are closed, others unaffected",
            hostile_pages(port, &broker).await,
        ),
        ("pings are answered", pings(port, &broker).await),
        ("wrong Origin refused", wrong_origin(port).await),
        ("bad publishes refused", bad_publishes(&broker).await),
        (
            "a publish sent again is shown once",
            sent_again(port, &broker).await,
        ),
        (
            "silent and vanished sockets pruned",
            idle_pruned(port, &broker).await,
        ),
        (
            "every shard, every message, one order",
            across_shards(port, &broker).await,
        ),
        (
            "a page stays on its shard",
            pages_keep_their_shard(port, &broker).await,
        ),
        ("pages spread evenly", spread_evenly(port).await),
    ];
    e2e::assert_checks(checks, &stack);
    drop(stack);

    // The shipped settings but for the shards (four): a shard hibernates between events and
    // still delivers, while others are kept awake; a failing one is caught up.
    let config = StackConfig::for_test("broker-hibernation")
        .expect("test config")
        .with_var(Worker::Broker, "SHARDS", "4");
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config)).expect("stack starts");
    let port = stack.port();
    let checks = vec![
        (
            "a failing shard is kept for and caught up",
            failing_shard(port, &Broker::new(port)).await,
        ),
        (
            "a hibernated shard is woken while others are awake",
            hibernation(port, &Broker::new(port)).await,
        ),
    ];
    e2e::assert_checks(checks, &stack);
}

/// Waits until the broker reports `want` open sockets.
async fn connections_become(broker: &Broker, want: usize) -> Result<()> {
    broker.wait_connections(want, Duration::from_secs(20)).await
}

async fn close_all(pages: Vec<Page>) -> Result<()> {
    for page in pages {
        page.close().await?;
    }
    Ok(())
}

fn confirmed(n: usize) -> ServerMessage {
    ServerMessage::StatusConfirmed {
        uri: format!("at://did:plc:e2eaaaaaaaaaaaaaaaaaaaaa/xyz.statusphere.status/3l{n:011}"),
    }
}

/// 25 pages; 4 publishers at once send 10 publishes of 3 messages each. Every page gets all 120
/// messages, with consecutive sequence numbers, in the same order as every other page.
async fn in_order(port: u16, broker: &Broker) -> Result<()> {
    let mut pages = Vec::new();
    for _ in 0..25 {
        pages.push(Page::connect(port, None).await?);
    }
    connections_become(broker, 25).await?;
    let start = broker.head().await?;
    let publishers = (0..4).map(|p| {
        let broker = Broker::new(port);
        tokio::spawn(async move {
            for i in 0..10 {
                let messages = (0..3).map(|m| confirmed(p * 1000 + i * 10 + m)).collect();
                let ack = broker.publish(messages).await?;
                ensure!(ack.delivered == 25, "delivered to {}", ack.delivered);
                let (Some(first), Some(last)) = (ack.first_seq, ack.last_seq) else {
                    bail!("no sequence numbers in {ack:?}");
                };
                ensure!(last == first + 2, "a publish of 3 got {first}..={last}");
            }
            Ok(())
        })
    });
    for publisher in publishers.collect::<Vec<_>>() {
        publisher.await??;
    }
    let mut reference: Option<Vec<ServerFrame>> = None;
    for (n, page) in pages.iter_mut().enumerate() {
        let mut frames = Vec::new();
        for k in 0..120u64 {
            let frame = page
                .next_frame()
                .await
                .with_context(|| format!("page {n}"))?;
            ensure!(frame.v == wire::WIRE_VERSION, "version {}", frame.v);
            ensure!(
                frame.seq == start + 1 + k,
                "page {n}: frame {k} has seq {}, expected {}",
                frame.seq,
                start + 1 + k
            );
            frames.push(frame);
        }
        match &reference {
            None => reference = Some(frames),
            Some(reference) => ensure!(*reference == frames, "page {n} saw another order"),
        }
        page.silent_for(Duration::from_millis(50)).await?;
    }
    ensure!(
        broker.head().await? == start + 120,
        "head moved by other than 120"
    );
    let stats = broker.stats().await?;
    ensure!(stats.fanout.samples > 0, "no fan-out timings: {stats:?}");
    ensure!(stats.fanout.last_sockets == 25, "last fan-out {stats:?}");
    close_all(pages).await?;
    connections_become(broker, 0).await
}

/// A publish sent again with the same id (its answer was lost, the outbox tried again) gets its
/// first sequence numbers back and reaches no page twice; another id is a new publish.
async fn sent_again(port: u16, broker: &Broker) -> Result<()> {
    let mut page = Page::connect(port, None).await?;
    let first = broker
        .publish_as(Some("p-1"), vec![confirmed(1), confirmed(2)])
        .await?;
    let again = broker
        .publish_as(Some("p-1"), vec![confirmed(1), confirmed(2)])
        .await?;
    ensure!(
        (again.first_seq, again.last_seq) == (first.first_seq, first.last_seq),
        "{first:?} then {again:?}"
    );
    let other = broker.publish_as(Some("p-2"), vec![confirmed(3)]).await?;
    // A publish's messages travel packed, one text frame for the two; a lone one as itself.
    let packed = wire::unpack(&page.next_text().await?)?;
    let lone = page.next_text().await?;
    ensure!(!lone.starts_with('['), "a lone message wrapped: {lone}");
    let seqs: Vec<Option<u64>> = packed
        .iter()
        .chain(&wire::unpack(&lone)?)
        .map(|frame| Some(frame.seq))
        .collect();
    ensure!(
        seqs == [first.first_seq, first.last_seq, other.first_seq],
        "got {seqs:?} for {first:?} and {other:?}"
    );
    page.silent_for(Duration::from_millis(300)).await?;
    page.close().await?;
    let stats = broker.stats().await?;
    ensure!(stats.counters.repeats == 1, "{:?}", stats.counters);
    Ok(())
}

/// A page rendered at `head` that connects after more was published gets what it missed, then
/// live messages; one that reconnects from the middle gets the rest.
async fn since_fills_gap(port: u16, broker: &Broker) -> Result<()> {
    let rendered_at = broker.head().await?;
    broker.publish(vec![confirmed(1), confirmed(2)]).await?;
    let mut page = Page::connect(port, Some(rendered_at)).await?;
    for k in 1..=2 {
        let frame = page.next_frame().await?;
        ensure!(frame.seq == rendered_at + k, "gap frame {k}: {frame:?}");
        ensure!(
            frame.message == confirmed(k as usize),
            "gap frame {k}: {frame:?}"
        );
    }
    broker.publish(vec![confirmed(3)]).await?;
    ensure!(
        page.next_frame().await?.seq == rendered_at + 3,
        "live frame after the gap"
    );
    page.close().await?;

    // Reconnect having seen up to the first: the second and third, in order, in one text
    // frame, and nothing else.
    let mut page = Page::connect(port, Some(rendered_at + 1)).await?;
    let replayed: Vec<u64> = wire::unpack(&page.next_text().await?)?
        .iter()
        .map(|frame| frame.seq)
        .collect();
    ensure!(
        replayed == [rendered_at + 2, rendered_at + 3],
        "resumed with {replayed:?}"
    );
    page.silent_for(Duration::from_millis(300)).await?;
    page.close().await?;

    // Up to date: nothing replayed.
    let mut page = Page::connect(port, Some(rendered_at + 3)).await?;
    page.silent_for(Duration::from_millis(300)).await?;
    page.close().await?;
    let stats = broker.stats().await?;
    ensure!(
        stats.counters.replays >= 2,
        "replays not counted: {stats:?}"
    );
    Ok(())
}

/// A gap older than the log, or a `since` from before a reset, gets a reload message and a close;
/// a `since` that is not a number is refused before the upgrade.
async fn reload(port: u16, broker: &Broker) -> Result<()> {
    let before = broker.head().await?;
    let messages = (0..LOG_CAPACITY as usize + 10).map(confirmed).collect();
    broker.publish(messages).await?;
    let stats = broker.stats().await?;
    ensure!(
        stats.oldest_seq == Some(stats.head_seq - LOG_CAPACITY + 1),
        "the log is not bounded to {LOG_CAPACITY}: {stats:?}"
    );
    for (since, why) in [(before, "too far behind"), (stats.head_seq + 5, "reset")] {
        let mut page = Page::connect(port, Some(since)).await?;
        let frame = page.next_frame().await?;
        let ServerMessage::Reload { reason } = &frame.message else {
            bail!("since={since} ({why}): expected reload, got {frame:?}");
        };
        ensure!(!reason.is_empty(), "reload without a reason");
        let (code, text) = page.closed().await?;
        ensure!(
            code == wire::close::NORMAL && text == "reload",
            "closed with {code} {text}"
        );
    }
    // The oldest logged message can still be resumed from.
    let mut page = Page::connect(port, Some(stats.oldest_seq.unwrap_or(0) - 1)).await?;
    let frame = page.next_frame().await?;
    ensure!(
        Some(frame.seq) == stats.oldest_seq,
        "resume from the oldest: {frame:?}"
    );
    page.close().await?;

    for query in ["since=abc", "since=-1", "since=1&since=2"] {
        let url = format!("ws://127.0.0.1:{port}/ws?{query}");
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                ensure!(status == 400, "{query}: answered {status}");
                ensure!(body.contains("since"), "{query}: unclear refusal {body:?}");
            }
            Err(other) => bail!("{query}: {other}"),
            Ok(_) => bail!("{query}: upgrade accepted"),
        }
    }
    connections_become(broker, 0).await
}

/// Edge publishes the optimistic status, later the listener publishes the network's confirmation:
/// two consecutive messages about one uri, which a page folds into one confirmed status.
async fn optimistic_then_confirmed(port: u16, broker: &Broker) -> Result<()> {
    let mut a = Page::connect(port, None).await?;
    let mut b = Page::connect(port, None).await?;
    connections_become(broker, 2).await?;
    let optimistic = upsert("3lbroker00001", "🦋", domain::Origin::Edge);
    let ServerMessage::StatusUpserted { status } = &optimistic else {
        unreachable!()
    };
    let uri = status.uri.clone();
    let first = broker.publish(vec![optimistic.clone()]).await?;
    let second = broker
        .publish(vec![ServerMessage::StatusConfirmed { uri: uri.clone() }])
        .await?;
    ensure!(
        second.first_seq == first.last_seq.map(|s| s + 1),
        "not consecutive"
    );
    for page in [&mut a, &mut b] {
        let mut shown: HashMap<String, (String, bool)> = HashMap::new();
        for _ in 0..2 {
            let frame = page.next_frame().await?;
            match frame.message {
                ServerMessage::StatusUpserted { status } => {
                    ensure!(!status.confirmed, "the optimistic status came confirmed");
                    shown.insert(status.uri, (status.status, status.confirmed));
                }
                ServerMessage::StatusConfirmed { uri } => {
                    let entry = shown
                        .get_mut(&uri)
                        .context("confirmation before the status")?;
                    entry.1 = true;
                }
                other => bail!("unexpected {other:?}"),
            }
        }
        ensure!(shown.len() == 1, "the page shows {} statuses", shown.len());
        ensure!(shown[&uri] == ("🦋".to_owned(), true), "shown {shown:?}");
    }
    // A page that reconnects after the optimistic frame gets only the confirmation.
    let mut late = Page::connect(port, first.last_seq).await?;
    let frame = late.next_frame().await?;
    ensure!(
        frame.message == ServerMessage::StatusConfirmed { uri },
        "resumed with {frame:?}"
    );
    close_all(vec![a, b, late]).await?;
    connections_become(broker, 0).await
}

/// Pages that speak out of turn are closed with a code that says why; a well-behaved page on the
/// same broker still gets every message, in order.
async fn hostile_pages(port: u16, broker: &Broker) -> Result<()> {
    let mut good = Page::connect(port, None).await?;
    let before = broker.stats().await?.counters;
    let start = broker.head().await?;

    let mut text = Page::connect(port, None).await?;
    text.send_text(r#"{"type":"publish","messages":[]}"#)
        .await?;
    let mut binary = Page::connect(port, None).await?;
    binary.socket.send(Message::binary(vec![1u8, 2, 3])).await?;
    let mut big = Page::connect(port, None).await?;
    big.send_text(&"x".repeat(wire::MAX_CLIENT_MESSAGE_BYTES + 1))
        .await?;
    let mut huge = Page::connect(port, None).await?;
    let _ = huge.send_text(&"y".repeat(4 << 20)).await;
    // A flood: the first message already breaks the rules; the rest must not matter.
    let mut flood = Page::connect(port, None).await?;
    for n in 0..2_000 {
        if flood.send_text(&format!("spam {n}")).await.is_err() {
            break;
        }
    }
    // A ping flood is allowed: the runtime answers each without waking the object.
    let mut pinger = Page::connect(port, None).await?;
    for _ in 0..2_000 {
        pinger.send_text(wire::PING).await?;
    }
    broker.publish(vec![confirmed(7)]).await?;

    for (page, want, name) in [
        (&mut text, Some(wire::close::POLICY_VIOLATION), "text"),
        (&mut binary, Some(wire::close::UNSUPPORTED_DATA), "binary"),
        (&mut big, Some(wire::close::TOO_BIG), "oversized"),
        (&mut flood, Some(wire::close::POLICY_VIOLATION), "flood"),
        (&mut huge, None, "4 MiB"),
    ] {
        match page.closed().await {
            Ok((code, reason)) => {
                if let Some(want) = want {
                    ensure!(
                        code == want,
                        "{name}: closed with {code} {reason:?}, expected {want}"
                    );
                    ensure!(!reason.is_empty(), "{name}: closed without a reason");
                }
            }
            // The runtime may drop a socket outright for a frame over its own limit.
            Err(error) if want.is_none() => {
                eprintln!("4 MiB frame: the socket ended without a close frame ({error:#})")
            }
            Err(error) => return Err(error.context(name)),
        }
    }
    let mut pongs = 0;
    loop {
        let text = pinger.next_text().await?;
        if text == wire::PONG {
            pongs += 1;
            continue;
        }
        let frames = wire::unpack(&text)?;
        ensure!(
            frames.first().map(|f| f.seq) == Some(start + 1),
            "the pinger got {frames:?}"
        );
        break;
    }
    ensure!(
        good.next_frame().await?.seq == start + 1,
        "the good page missed the message"
    );
    broker.publish(vec![confirmed(8)]).await?;
    ensure!(
        good.next_frame().await?.seq == start + 2,
        "the good page missed the next one"
    );

    let after = broker.stats().await?.counters;
    ensure!(
        after.closed_policy >= before.closed_policy + 2,
        "policy closes not counted"
    );
    ensure!(
        after.closed_binary > before.closed_binary,
        "binary close not counted"
    );
    ensure!(
        after.closed_too_big > before.closed_too_big,
        "oversized close not counted"
    );
    eprintln!("ping flood: {pongs} pongs before the next message");
    close_all(vec![good, pinger]).await?;
    connections_become(broker, 0).await
}

/// The exact ping is answered by the runtime; another spelling of it by the object (and counted).
async fn pings(port: u16, broker: &Broker) -> Result<()> {
    let mut page = Page::connect(port, None).await?;
    let before = broker.stats().await?.counters.pings_answered;
    page.send_text(wire::PING).await?;
    ensure!(
        page.next_text().await? == wire::PONG,
        "no pong for the exact ping"
    );
    page.send_text(r#"{ "type": "ping" }"#).await?;
    ensure!(
        page.next_text().await? == wire::PONG,
        "no pong for a spaced ping"
    );
    let after = broker.stats().await?.counters.pings_answered;
    ensure!(
        after == before + 1,
        "pings answered by the object: {before} -> {after}"
    );
    page.close().await?;
    connections_become(broker, 0).await
}

/// A page from another origin cannot open the socket; a missing `Upgrade` is refused too.
async fn wrong_origin(port: u16) -> Result<()> {
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request()?;
        request.headers_mut().insert("Origin", origin.parse()?);
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                ensure!(
                    response.status() == 403,
                    "{origin}: answered {}",
                    response.status()
                );
            }
            Err(other) => bail!("{origin}: {other}"),
            Ok(_) => bail!("{origin}: a cross-origin upgrade was accepted"),
        }
    }
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/ws")).await?;
    ensure!(
        plain.status() == 426,
        "GET /ws without Upgrade: {}",
        plain.status()
    );
    Ok(())
}

/// What is not a publish, or too much of one, is refused with a reason and changes nothing.
async fn bad_publishes(broker: &Broker) -> Result<()> {
    let head = broker.head().await?;
    let too_many = serde_json::json!({
        "messages": vec![serde_json::json!({"type": "status_confirmed", "uri": "at://x"}); wire::MAX_PUBLISH_MESSAGES + 1]
    });
    for (body, want) in [
        (b"not json".to_vec(), 400),
        (
            br#"{"messages":[{"type":"launch_missiles"}]}"#.to_vec(),
            400,
        ),
        (br#"{"messages":"#.to_vec(), 400),
        (br#"{"messages":["status_confirmed"]}"#.to_vec(), 400),
        (serde_json::to_vec(&too_many)?, 413),
        (vec![b' '; 5 << 20], 413),
    ] {
        let (status, text) = broker.publish_raw(body).await?;
        ensure!(
            status == want,
            "answered {status} ({text}), expected {want}"
        );
        ensure!(
            !text.is_empty() && text.len() < 500,
            "unclear refusal {text:?}"
        );
    }
    ensure!(
        broker.head().await? == head,
        "a refused publish moved the head"
    );
    let empty = broker.publish(Vec::new()).await?;
    ensure!(
        empty.first_seq.is_none() && empty.last_seq.is_none(),
        "{empty:?}"
    );
    ensure!(
        broker.head().await? == head,
        "an empty publish moved the head"
    );
    Ok(())
}

/// A page that stops pinging is closed with 1001 after the idle timeout; one whose connection
/// vanished (no close frame) is pruned too; one that pings stays.
async fn idle_pruned(port: u16, broker: &Broker) -> Result<()> {
    let before = broker.stats().await?.counters.pruned_idle;
    let mut silent = Page::connect(port, None).await?;
    let vanished = Page::connect(port, None).await?;
    let mut alive = Page::connect(port, None).await?;
    connections_become(broker, 3).await?;
    // Dropping the stream ends the TCP connection without a close frame.
    drop(vanished);
    let deadline = Instant::now() + Duration::from_secs(IDLE_TIMEOUT_SECONDS * 3);
    let pinging = tokio::spawn(async move {
        while Instant::now() < deadline {
            alive.send_text(wire::PING).await?;
            ensure!(alive.next_text().await? == wire::PONG, "no pong");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(alive)
    });
    let (code, reason) = silent.closed().await.or_else(|_| {
        // `closed` gives up after its own timeout; the sweep may take up to a third longer.
        bail!("the silent page was not closed")
    })?;
    ensure!(
        code == wire::close::GOING_AWAY,
        "silent page closed with {code} {reason:?}"
    );
    connections_become(broker, 1).await?;
    let alive = pinging.await??;
    let after = broker.stats().await?.counters.pruned_idle;
    ensure!(after > before, "pruning not counted: {before} -> {after}");
    alive.close().await?;
    connections_become(broker, 0).await
}

/// Two pages on every shard; pages on shards 1.. keep their objects awake (a ping the runtime
/// does not answer by itself wakes the object), shard 0 is left alone until it hibernates (a new
/// instance answers the next event). The publish that wakes it still reaches every page, and the
/// other shards answered it with the instances they had.
async fn hibernation(port: u16, broker: &Broker) -> Result<()> {
    let shards = broker.all_stats().await?.relay.shards;
    ensure!(shards > 1, "the shipped broker has {shards} shard");
    let mut pages = Vec::new();
    for k in 0..shards {
        for _ in 0..2 {
            pages.push((k, Page::connect_to(port, k, None).await?));
        }
    }
    let mut keepers = Vec::new();
    for k in 1..shards {
        keepers.push(Page::connect_to(port, k, None).await?);
    }
    let keeping = tokio::spawn(async move {
        loop {
            for keeper in keepers.iter_mut() {
                keeper.send_text(r#"{ "type": "ping" }"#).await?;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(keepers)
    });
    let started = broker.all_stats().await?;
    ensure!(
        started.connections == (3 * shards - 1) as usize,
        "{} sockets",
        started.connections
    );
    let instances = |stats: &domain::internal::BrokerStats| -> Vec<String> {
        stats.shards.iter().map(|s| s.instance_id.clone()).collect()
    };
    let first = instances(&started);
    let mut expected: Vec<u64> = started.shards.iter().map(|s| s.head_seq).collect();
    for attempt in 1..=4 {
        // workerd evicts an idle object whose sockets all hibernate after about ten seconds.
        tokio::time::sleep(Duration::from_secs(13)).await;
        let relayed = broker.publish_all(None, vec![confirmed(attempt)]).await?;
        ensure!(
            relayed.shards.iter().all(|s| !s.kept),
            "a shard did not take it: {relayed:?}"
        );
        for seq in expected.iter_mut() {
            *seq += 1;
        }
        for (k, page) in pages.iter_mut() {
            let frame = page.next_frame().await?;
            ensure!(
                frame.seq == expected[*k as usize],
                "a page of shard {k} got {frame:?}, expected {}",
                expected[*k as usize]
            );
        }
        let now = broker.all_stats().await?;
        let instances = instances(&now);
        if instances[0] != first[0] {
            ensure!(
                instances[1..] == first[1..],
                "the awake shards were re-created too: {first:?} -> {instances:?}"
            );
            ensure!(
                now.shards[0].connections == 2,
                "{} sockets on shard 0 after hibernation",
                now.shards[0].connections
            );
            keeping.abort();
            return close_all(pages.into_iter().map(|(_, page)| page).collect()).await;
        }
    }
    keeping.abort();
    bail!(
        "shard 0 never hibernated (instance {} throughout)",
        first[0]
    )
}

/// Pages on every shard; four publishers at once. Each page gets every message with its shard's
/// consecutive numbers, and every page, whatever its shard, sees the messages in one order.
async fn across_shards(port: u16, broker: &Broker) -> Result<()> {
    let shards = broker.all_stats().await?.relay.shards;
    ensure!(shards > 1, "the test stack has {shards} shard");
    let mut pages = Vec::new();
    for k in 0..shards {
        let head = Broker::on_shard(port, k).head().await?;
        for _ in 0..3 {
            pages.push((k, head, Page::connect_to(port, k, None).await?));
        }
    }
    wait_all_connections(broker, (3 * shards) as usize).await?;
    let publishers = (0..4).map(|p| {
        let broker = Broker::new(port);
        tokio::spawn(async move {
            for i in 0..5 {
                let messages = (0..2).map(|m| confirmed(p * 1000 + i * 10 + m)).collect();
                let relayed = broker.publish_all(None, messages).await?;
                ensure!(
                    relayed.delivered == 12 && relayed.shards.iter().all(|s| !s.kept),
                    "{relayed:?}"
                );
            }
            Ok(())
        })
    });
    for publisher in publishers.collect::<Vec<_>>() {
        publisher.await??;
    }
    let mut reference: Option<Vec<ServerMessage>> = None;
    for (k, head, page) in pages.iter_mut() {
        let mut seen = Vec::new();
        for n in 1..=40u64 {
            let frame = page.next_frame().await?;
            ensure!(
                frame.seq == *head + n,
                "shard {k}: message {n} has seq {}, expected {}",
                frame.seq,
                *head + n
            );
            seen.push(frame.message);
        }
        match &reference {
            None => reference = Some(seen),
            Some(reference) => ensure!(*reference == seen, "shard {k} saw another order"),
        }
    }
    // A page of shard 2 that reconnects from the middle gets the rest, from its shard's log.
    let (_, head, _) = pages
        .iter()
        .find(|(k, ..)| *k == 2)
        .context("no page on shard 2")?;
    let mut again = Page::connect_to(port, 2, Some(head + 30)).await?;
    let mut rest = Vec::new();
    while rest.len() < 10 {
        rest.extend(
            wire::unpack(&again.next_text().await?)?
                .into_iter()
                .map(|f| f.seq),
        );
    }
    let want: Vec<u64> = (31..=40).map(|n| head + n).collect();
    ensure!(rest == want, "resumed on shard 2 with {rest:?}");
    again.close().await?;
    close_all(pages.into_iter().map(|(.., page)| page).collect()).await?;
    wait_all_connections(broker, 0).await
}

/// Waits until the broker reports `want` open sockets over all shards.
async fn wait_all_connections(broker: &Broker, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = broker.all_stats().await?.connections;
        if have == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{have} connections, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A page names its shard on every reconnect: one that names a shard the broker no longer has
/// (the count was lowered) is told to reload, since its numbers mean nothing on another; a shard
/// that is not a number is refused before the upgrade.
async fn pages_keep_their_shard(port: u16, broker: &Broker) -> Result<()> {
    let shards = broker.all_stats().await?.relay.shards;
    let head = Broker::on_shard(port, shards - 1).head().await?;
    let mut page = Page::connect_to(port, shards, Some(head)).await?;
    let frame = page.next_frame().await?;
    ensure!(
        matches!(frame.message, ServerMessage::Reload { .. }),
        "a page of a gone shard got {frame:?}"
    );
    page.closed().await?;
    for query in ["shard=x", "shard=99", "shard=1&shard=2"] {
        let url = format!("ws://127.0.0.1:{port}/ws?{query}");
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                ensure!(response.status() == 400, "{query}: {}", response.status());
            }
            other => bail!("{query}: {:?}", other.map(|_| "upgraded")),
        }
    }
    Ok(())
}

/// Home pages are bound to shards about evenly: 200 renders over the shards, each shard within
/// five standard deviations of its share.
async fn spread_evenly(port: u16) -> Result<()> {
    const RENDERS: usize = 200;
    let http = reqwest::Client::new();
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for _ in 0..RENDERS {
        let html = http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await?
            .text()
            .await?;
        let (shard, _) = e2e::live_from(&html).context("a home page without its shard")?;
        *seen.entry(shard).or_default() += 1;
    }
    let shards = Broker::new(port).all_stats().await?.relay.shards as usize;
    let share = RENDERS as f64 / shards as f64;
    let spread = 5.0 * (share * (1.0 - 1.0 / shards as f64)).sqrt();
    for k in 0..shards as u32 {
        let got = seen.get(&k).copied().unwrap_or(0) as f64;
        ensure!(
            (got - share).abs() <= spread,
            "shard {k} got {got} of {RENDERS} renders: {seen:?}"
        );
    }
    ensure!(seen.len() == shards, "renders named shards {seen:?}");
    Ok(())
}

/// One shard refuses the relay's publishes for a while: the pages of the others get two
/// publishes at once, the failing shard's page gets both later, in order and numbered without a
/// gap; the relay counted the failure and the catch-up, and keeps nothing after.
async fn failing_shard(port: u16, broker: &Broker) -> Result<()> {
    let shards = broker.all_stats().await?.relay.shards;
    let failing = Broker::on_shard(port, 1);
    let mut pages = Vec::new();
    for k in 0..shards {
        let head = Broker::on_shard(port, k).head().await?;
        pages.push((k, head, Page::connect_to(port, k, None).await?));
    }
    wait_all_connections(broker, shards as usize).await?;
    let before = broker.all_stats().await?.relay.counters;
    failing.refuse_on_shard(2_500).await?;
    let first = broker.publish_all(Some("f-1"), vec![confirmed(1)]).await?;
    let second = broker.publish_all(Some("f-2"), vec![confirmed(2)]).await?;
    for relayed in [&first, &second] {
        let kept: Vec<u32> = relayed
            .shards
            .iter()
            .filter(|s| s.kept)
            .map(|s| s.shard)
            .collect();
        ensure!(kept == [1], "kept for {kept:?}: {relayed:?}");
    }
    let started = Instant::now();
    for (k, head, page) in pages.iter_mut() {
        let mut seqs = Vec::new();
        let mut messages = Vec::new();
        while seqs.len() < 2 {
            for frame in wire::unpack(&page.next_text().await?)? {
                seqs.push(frame.seq);
                messages.push(frame.message);
            }
        }
        ensure!(
            seqs == [*head + 1, *head + 2] && messages == [confirmed(1), confirmed(2)],
            "shard {k}: {seqs:?} {messages:?}"
        );
        if *k == 1 {
            ensure!(
                started.elapsed() >= Duration::from_millis(1_500),
                "the failing shard's page had both after {:?}",
                started.elapsed()
            );
        }
    }
    let relay = broker.all_stats().await?.relay;
    let counted = &relay.counters;
    ensure!(
        counted.failures > before.failures
            && counted.retried >= before.retried + 2
            && counted.queued > before.queued,
        "counted {counted:?} after {before:?}"
    );
    ensure!(
        relay.kept.iter().all(|n| *n == 0) && relay.failing.iter().all(|n| *n == 0),
        "still kept: {relay:?}"
    );
    for (_, _, page) in pages.iter_mut() {
        page.silent_for(Duration::from_millis(300)).await?;
    }
    close_all(pages.into_iter().map(|(.., page)| page).collect()).await
}
