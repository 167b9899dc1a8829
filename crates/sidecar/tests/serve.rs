//! Jetstream `/subscribe` semantics, each one against a running sidecar server.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use sidecar::fault::Faults;
use sidecar::frame::TimeMode;
use sidecar::window::{now_us, WindowConfig};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn cursor_replays_from_the_first_event_at_or_after_it_then_tails_live() {
    // Times at or above 1e15 µs: below, a cursor is a seq.
    const T: i64 = 1_732_406_400_000_000;
    let (hub, server) = server().await;
    hub.publish((1..=10).map(|i| commit(A, T + i * 100, STATUS, "k")));
    let mut ws = connect(&server, &format!("cursor={}", T + 450)).await;
    let from = |times: Vec<i64>| times.into_iter().map(|t| t - T).collect::<Vec<_>>();
    assert_eq!(
        from(times(&mut ws, 6).await),
        vec![500, 600, 700, 800, 900, 1000]
    );
    hub.publish([commit(A, T + 1100, STATUS, "k")]);
    assert_eq!(from(times(&mut ws, 1).await), vec![1100]);
    let mut exact = connect(&server, &format!("cursor={}", T + 1000)).await;
    assert_eq!(
        from(times(&mut exact, 2).await),
        vec![1000, 1100],
        "the cursor's own event is included"
    );
}

#[tokio::test]
async fn no_cursor_or_a_future_cursor_is_a_live_tail() {
    let (hub, server) = server().await;
    hub.publish([commit(A, 100, STATUS, "k")]);
    let mut live = connect(&server, "").await;
    let future = now_us() + 3_600_000_000;
    let mut from_future = connect(&server, &format!("cursor={future}")).await;
    silent(&mut live, SHORT).await;
    hub.publish([commit(A, 200, STATUS, "k")]);
    assert_eq!(times(&mut live, 1).await, vec![200]);
    assert_eq!(times(&mut from_future, 1).await, vec![200]);
}

#[tokio::test]
async fn a_cursor_older_than_the_window_starts_at_the_oldest_retained_event() {
    let window = WindowConfig {
        max_events: 5,
        max_age_us: i64::MAX / 2,
        first_seq: 1,
    };
    let (hub, server) = server_with(|_| {}, window, TimeMode::Keep).await;
    hub.publish((1..=20).map(|i| commit(A, i * 10, STATUS, "k")));
    let mut ws = connect(&server, "cursor=1").await;
    assert_eq!(times(&mut ws, 5).await, vec![160, 170, 180, 190, 200]);
}

#[tokio::test]
async fn wanted_collections_with_prefixes_and_account_identity_for_everyone() {
    let (hub, server) = server().await;
    let mut statuses = connect(&server, &format!("wantedCollections={STATUS}&cursor=0")).await;
    let mut bsky = connect(&server, "wantedCollections=app.bsky.*&cursor=0").await;
    let mut both = connect(
        &server,
        &format!("wantedCollections={STATUS}&wantedCollections=app.bsky.feed.*&cursor=0"),
    )
    .await;
    hub.publish([
        commit(A, 1, STATUS, "a"),
        commit(A, 2, POST, "b"),
        commit(A, 3, "com.example.other", "c"),
        identity(A, 4),
        account(A, 5),
        commit(A, 6, "app.bskyish.thing", "d"),
    ]);
    assert_eq!(times(&mut statuses, 3).await, vec![1, 4, 5]);
    assert_eq!(times(&mut bsky, 3).await, vec![2, 4, 5]);
    assert_eq!(times(&mut both, 4).await, vec![1, 2, 4, 5]);
    for ws in [&mut statuses, &mut bsky, &mut both] {
        silent(ws, SHORT).await;
    }
}

#[tokio::test]
async fn wanted_dids_filter_every_kind_of_event() {
    let (hub, server) = server().await;
    hub.publish([
        commit(A, 1, STATUS, "a"),
        commit(B, 2, STATUS, "b"),
        identity(B, 3),
        account(A, 4),
        identity(A, 5),
    ]);
    let mut ws = connect(&server, &format!("wantedDids={A}&cursor=0")).await;
    assert_eq!(times(&mut ws, 3).await, vec![1, 4, 5]);
    silent(&mut ws, SHORT).await;
}

#[tokio::test]
async fn max_message_size_skips_larger_frames() {
    let (hub, server) = server().await;
    let big = commit(A, 2, STATUS, &"k".repeat(600));
    hub.publish([commit(A, 1, STATUS, "a"), big, commit(A, 3, STATUS, "c")]);
    let mut ws = connect(&server, "maxMessageSizeBytes=500&cursor=0").await;
    assert_eq!(times(&mut ws, 2).await, vec![1, 3]);
}

#[tokio::test]
async fn require_hello_waits_for_options_update_and_uses_it() {
    let (hub, server) = server().await;
    hub.publish([commit(A, 1, STATUS, "a"), commit(A, 2, POST, "b")]);
    let mut ws = connect(&server, "requireHello=true&cursor=0").await;
    silent(&mut ws, SHORT).await;
    let hello = format!(
        r#"{{"type":"options_update","payload":{{"wantedCollections":["{POST}"],"wantedDids":[],"maxMessageSizeBytes":0}}}}"#
    );
    ws.send(Message::text(hello)).await.unwrap();
    assert_eq!(times(&mut ws, 1).await, vec![2]);
    silent(&mut ws, SHORT).await;
}

#[tokio::test]
async fn options_update_changes_filters_on_a_live_connection() {
    let (hub, server) = server().await;
    let mut ws = connect(&server, &format!("wantedCollections={STATUS}")).await;
    hub.publish([commit(A, 1, STATUS, "a"), commit(A, 2, POST, "b")]);
    assert_eq!(times(&mut ws, 1).await, vec![1]);
    let update = format!(
        r#"{{"type":"options_update","payload":{{"wantedCollections":["{POST}"],"wantedDids":["{B}"]}}}}"#
    );
    ws.send(Message::text(update)).await.unwrap();
    // An unknown message type is ignored, like Jetstream.
    ws.send(Message::text(r#"{"type":"something_new","payload":{}}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.publish([
        commit(A, 3, POST, "c"),
        commit(B, 4, STATUS, "d"),
        commit(B, 5, POST, "e"),
    ]);
    assert_eq!(times(&mut ws, 1).await, vec![5]);
}

#[tokio::test]
async fn an_invalid_options_update_closes_the_connection_with_a_reason() {
    let (_hub, server) = server().await;
    for bad in [
        "not json",
        r#"{"type":"options_update","payload":{"wantedDids":["alice"]}}"#,
    ] {
        let mut ws = connect(&server, "").await;
        ws.send(Message::text(bad)).await.unwrap();
        let close = close_frame(&mut ws).await;
        assert_eq!(close.code, CloseCode::Normal);
        assert!(close.reason.contains("failed to"), "{}", close.reason);
    }
}

#[tokio::test]
async fn invalid_subscriptions_get_400_with_a_message() {
    let (hub, server) = server().await;
    let many_collections: String = (0..101)
        .map(|i| format!("wantedCollections=a.b.c{i}&"))
        .collect();
    for (query, message) in [
        ("cursor=yesterday", "invalid cursor"),
        ("wantedCollections=no", "invalid collection"),
        ("wantedDids=alice", "invalid DID"),
        ("compress=true", "compression is not supported"),
        (many_collections.as_str(), "too many wanted collections"),
    ] {
        let url = format!("{}?{query}", server.url());
        match tokio_tungstenite::connect_async(url).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 400);
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains(message), "{message}: {body}");
            }
            other => panic!(
                "{}: expected HTTP 400, got {:?}",
                &query[..query.len().min(80)],
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(hub.stats().refused, 5);
}

#[tokio::test]
async fn many_wanted_dids_work_and_too_many_are_refused() {
    let (hub, server) = server().await;
    let dids: Vec<String> = (0..400).map(|i| format!("did:plc:{i:024}")).collect();
    let query: String = dids.iter().map(|d| format!("wantedDids={d}&")).collect();
    let mut ws = connect(&server, &format!("{query}cursor=0")).await;
    hub.publish([
        commit(&dids[399], 1, STATUS, "a"),
        commit(A, 2, STATUS, "b"),
    ]);
    assert_eq!(times(&mut ws, 1).await, vec![1]);
    silent(&mut ws, SHORT).await;
    // 10,001 DIDs do not fit a URL this client will send; the same rule applies to options_update.
    let too_many: Vec<String> = (0..10_001).map(|i| format!("did:plc:{i:024}")).collect();
    let update = serde_json::json!({"type": "options_update", "payload": {"wantedDids": too_many}});
    ws.send(Message::text(update.to_string())).await.unwrap();
    let close = close_frame(&mut ws).await;
    assert!(
        close.reason.contains("too many wanted DIDs"),
        "{}",
        close.reason
    );
}

#[tokio::test]
async fn plain_http_routes() {
    let (_hub, server) = server().await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let stats: serde_json::Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], 0);
    assert_eq!(
        client
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/subscribe"))
            .send()
            .await
            .unwrap()
            .status(),
        426
    );
    assert_eq!(
        client
            .get(format!("{base}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .post(format!("{base}/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_are_unaffected() {
    let window = WindowConfig {
        max_events: 2_000,
        max_age_us: i64::MAX / 2,
        first_seq: 1,
    };
    let (hub, server) = server_with(
        |c| c.write_timeout = Duration::from_millis(300),
        window,
        TimeMode::Keep,
    )
    .await;
    let stuck = connect(&server, "").await;
    let mut healthy = connect(&server, "").await;
    // ~40 MB in all: far more than socket buffers hold, so the stuck client's writes block.
    let padding = "x".repeat(20_000);
    let mut received = 0usize;
    for round in 0..20 {
        hub.publish((0..100).map(|i| commit(A, round * 100 + i + 1, STATUS, &padding)));
        while received < (round as usize + 1) * 100 {
            next_text(&mut healthy, Duration::from_secs(5))
                .await
                .expect("the healthy client keeps receiving");
            received += 1;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.stats().dropped_slow == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck client was never dropped: {:?}",
            hub.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hub.stats().connections, 1);
    drop(stuck);
}

#[tokio::test]
async fn idle_subscribers_are_pinged() {
    let (_hub, server) = server_with(
        |c| c.ping_interval = Duration::from_millis(100),
        WindowConfig::default(),
        TimeMode::Keep,
    )
    .await;
    let mut ws = connect(&server, "").await;
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(matches!(got, Some(Ok(Message::Ping(_)))), "{got:?}");
}

#[tokio::test]
async fn client_binary_frames_are_ignored_and_oversized_messages_end_the_socket() {
    let (hub, server) = server().await;
    let mut ws = connect(&server, "").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    hub.publish([commit(A, 1, STATUS, "a")]);
    assert_eq!(times(&mut ws, 1).await, vec![1]);
    let _ = ws.send(Message::text("x".repeat(2 * 1024 * 1024))).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket stayed open");
}

async fn faulty(
    faults: Faults,
) -> (
    std::sync::Arc<sidecar::window::Hub>,
    sidecar::server::Server,
) {
    let (hub, server) = server_with(
        move |c| c.faults = faults,
        WindowConfig::default(),
        TimeMode::Keep,
    )
    .await;
    hub.publish((1..=10).map(|i| commit(A, i, STATUS, "k")));
    (hub, server)
}

#[tokio::test]
async fn fault_stall_keeps_the_socket_open_but_sends_nothing() {
    let (_hub, server) = faulty(Faults {
        stall_after: Some(3),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    assert_eq!(times(&mut ws, 3).await, vec![1, 2, 3]);
    let waited = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(
        waited.is_err(),
        "expected a silent open socket, got {waited:?}"
    );
}

#[tokio::test]
async fn fault_abrupt_close_and_close_with_code() {
    let (_hub, server) = faulty(Faults {
        close_after: Some(2),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    assert_eq!(times(&mut ws, 2).await, vec![1, 2]);
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        None | Some(Err(_)) => {}
        other => panic!("expected the connection to vanish without a close frame, got {other:?}"),
    }

    let (_hub, server) = faulty(Faults {
        close_after: Some(2),
        close_code: Some(1011),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    assert_eq!(times(&mut ws, 2).await, vec![1, 2]);
    match tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1011),
        other => panic!("expected a 1011 close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn fault_only_the_first_connections_misbehave() {
    let (_hub, server) = faulty(Faults {
        close_after: Some(1),
        connections: Some(1),
        ..Faults::default()
    })
    .await;
    let mut first = connect(&server, "cursor=0").await;
    assert_eq!(times(&mut first, 1).await, vec![1]);
    let mut second = connect(&server, "cursor=0").await;
    assert_eq!(times(&mut second, 10).await, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn fault_duplicate_reorder_truncate_delay() {
    let (_hub, server) = faulty(Faults {
        duplicate_every: Some(5),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    assert_eq!(
        times(&mut ws, 12).await,
        vec![1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10]
    );

    let (_hub, server) = faulty(Faults {
        reorder_window: Some(3),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    assert_eq!(
        times(&mut ws, 10).await,
        vec![3, 2, 1, 6, 5, 4, 9, 8, 7, 10]
    );

    let (_hub, server) = faulty(Faults {
        truncate_every: Some(4),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    let mut frames = Vec::new();
    for _ in 0..10 {
        frames.push(next_text(&mut ws, Duration::from_secs(5)).await.unwrap());
    }
    let broken: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| serde_json::from_str::<serde_json::Value>(f).is_err())
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(broken, vec![4, 8]);

    let (_hub, server) = faulty(Faults {
        delay: Some(Duration::from_millis(100)),
        ..Faults::default()
    })
    .await;
    let mut ws = connect(&server, "cursor=0").await;
    let start = std::time::Instant::now();
    times(&mut ws, 5).await;
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn now_mode_gives_fresh_monotonic_times_and_cursors_work_on_them() {
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Now).await;
    let before = now_us();
    hub.publish((0..5).map(|i| commit(A, i, STATUS, "k")));
    let mut ws = connect(&server, "cursor=0").await;
    let served = times(&mut ws, 5).await;
    assert!(
        served[0] >= before && served.windows(2).all(|w| w[0] < w[1]),
        "{served:?}"
    );
    let mut resumed = connect(&server, &format!("cursor={}", served[3])).await;
    assert_eq!(times(&mut resumed, 2).await, served[3..].to_vec());
}

/// `com.atproto.sync.listReposByCollection`, as a relay answers it: every DID seen committing to
/// the collection, in order, paged by the last DID; nothing that is not a DID; XRPC errors for a
/// missing collection or a limit out of range.
#[tokio::test]
async fn repositories_are_listed_by_collection_as_a_relay_lists_them() {
    let (hub, server) = server().await;
    hub.publish([
        commit("did:plc:cccc", 1, STATUS, "3lbk222222222"),
        commit("did:plc:aaaa", 2, STATUS, "3lbk222222223"),
        commit("did:plc:aaaa", 3, STATUS, "3lbk222222224"),
        commit("did:plc:bbbb", 4, STATUS, "3lbk222222225"),
        commit("did:plc:dddd", 5, POST, "3lbk222222226"),
        commit("not a did", 6, STATUS, "3lbk222222227"),
        identity("did:plc:eeee", 7),
    ]);
    let http = reqwest::Client::new();
    let get = |query: String| {
        let http = http.clone();
        let url = format!(
            "http://{}/xrpc/com.atproto.sync.listReposByCollection?{query}",
            server.addr
        );
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, first) = get(format!("collection={STATUS}&limit=2")).await;
    assert_eq!(status, 200);
    assert_eq!(
        first["repos"],
        serde_json::json!([{ "did": "did:plc:aaaa" }, { "did": "did:plc:bbbb" }])
    );
    let cursor = first["cursor"].as_str().unwrap();
    let (_, second) = get(format!("collection={STATUS}&limit=2&cursor={cursor}")).await;
    assert_eq!(
        second["repos"],
        serde_json::json!([{ "did": "did:plc:cccc" }])
    );
    assert!(second.get("cursor").is_none(), "{second}");
    let (_, posts) = get(format!("collection={POST}")).await;
    assert_eq!(
        posts["repos"],
        serde_json::json!([{ "did": "did:plc:dddd" }])
    );
    let (_, none) = get("collection=xyz.nothing.here".into()).await;
    assert_eq!(none["repos"], serde_json::json!([]));
    for query in [
        "",
        "collection=",
        "collection=x&limit=0",
        "collection=x&limit=2001",
    ] {
        let (status, body) = get(query.to_owned()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("InvalidRequest")),
            "{query}"
        );
    }
}
