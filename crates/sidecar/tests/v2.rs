//! What a Jetstream v2 instance serves, against a running sidecar: each event's seq on the legacy
//! wire (`cursor`) and on the v2 stream (`seq`), seq cursors and their floor, the v2 framing and
//! query language, its refusals before the upgrade, its `#info` and `error` frames.

use std::time::Duration;

use crate::common::*;
use domain::jetstream::Frame;
use futures_util::SinkExt;
use serde_json::Value;
use sidecar::frame::TimeMode;
use sidecar::window::WindowConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
/// Event times at or above 1e15 µs: a cursor below that is a seq.
const T: i64 = 1_732_406_400_000_000;
const WAIT: Duration = Duration::from_secs(5);

async fn connect_v2(server: &sidecar::server::Server, query: &str) -> Client {
    let url = format!("{}?{query}", server.events_url());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn json(ws: &mut Client) -> Value {
    let text = next_text(ws, WAIT).await.expect("a frame");
    serde_json::from_str(&text).unwrap()
}

/// A seq-numbered instance: 1,000 is the first event's number.
async fn instance(
    events: i64,
    window: usize,
) -> (
    std::sync::Arc<sidecar::window::Hub>,
    sidecar::server::Server,
) {
    let config = WindowConfig {
        max_events: window,
        max_age_us: i64::MAX / 2,
        first_seq: 1_000,
    };
    let (hub, server) = server_with(|_| {}, config, TimeMode::Keep).await;
    hub.publish((0..events).map(|i| commit(A, T + i * 10, STATUS, &format!("k{i}"))));
    (hub, server)
}

#[tokio::test]
async fn legacy_frames_carry_the_seq_and_a_seq_cursor_resumes_exactly() {
    let (hub, server) = instance(10, 100).await;
    let mut ws = connect(&server, "cursor=0").await;
    let seqs: Vec<u64> = {
        let mut seqs = Vec::new();
        for _ in 0..10 {
            seqs.push(json(&mut ws).await["cursor"].as_u64().unwrap());
        }
        seqs
    };
    assert_eq!(seqs, (1_000..1_010).collect::<Vec<_>>());
    // The seq's own event first (inclusive), then the rest; a future seq is the live tail.
    let mut resumed = connect(&server, "cursor=1007").await;
    assert_eq!(json(&mut resumed).await["cursor"], 1_007);
    let mut live = connect(&server, "cursor=5000").await;
    silent(&mut live, Duration::from_millis(300)).await;
    hub.publish([commit(A, T + 500, STATUS, "new")]);
    assert_eq!(json(&mut live).await["cursor"], 1_010);
    let stats = hub.stats();
    assert_eq!(
        (stats.cursor_seq, stats.oldest_seq, stats.newest_seq),
        (3, Some(1_000), Some(1_010))
    );
}

#[tokio::test]
async fn the_v2_stream_frames_the_same_events_and_speaks_its_query() {
    let (hub, server) = instance(4, 100).await;
    hub.publish([identity(A, T + 100), commit(A, T + 110, POST, "p")]);
    let mut legacy = connect(&server, "cursor=0").await;
    let mut v2 = connect_v2(&server, &format!("collections={STATUS}&cursor=1000")).await;
    // Four statuses and the identity event: the post is filtered (collections), the identity
    // passes (collections constrain commits only).
    for _ in 0..5 {
        let old = next_text(&mut legacy, WAIT).await.unwrap();
        let new = next_text(&mut v2, WAIT).await.unwrap();
        let parsed: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(parsed["$type"], "message");
        assert!(parsed["payload"]["$type"]
            .as_str()
            .unwrap()
            .starts_with("network.bsky.jetstream.subscribeEvents#"));
        let (Frame::Event(old), Frame::Event(new)) = (
            Frame::parse(&old).expect(&old),
            Frame::parse(&new).expect(&new),
        ) else {
            panic!("not events")
        };
        assert_eq!((new.time_us, new.seq), (old.time_us, old.seq));
        assert_eq!(format!("{:?}", new.change()), format!("{:?}", old.change()));
    }
    // `kinds` narrows it: commits only.
    let mut commits = connect_v2(&server, "kinds=commit&cursor=1004").await;
    let frame = json(&mut commits).await;
    assert_eq!(
        frame["payload"]["seq"], 1_005,
        "the identity (1004) is left out"
    );
    assert_eq!(frame["payload"]["collection"], POST);
    assert_eq!(hub.stats().v2_connections, 2);
}

#[tokio::test]
async fn v2_refuses_before_the_upgrade_with_xrpc_errors() {
    let (hub, server) = instance(30, 10).await;
    // The window holds seqs 1020..=1029.
    for (query, error, message) in [
        ("cursor=1005", "CursorTooOld", "below lookback floor 1020"),
        (
            "wantedCollections=a.b.c",
            "InvalidRequest",
            "collections, dids and kinds",
        ),
        ("kinds=post", "InvalidRequest", "unknown kind"),
        (
            "kinds=account&collections=a.b.c",
            "InvalidRequest",
            "excludes commit",
        ),
        ("zstdDictionary=1", "InvalidRequest", "not supported"),
    ] {
        let url = format!("{}?{query}", server.events_url());
        match tokio_tungstenite::connect_async(url).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"], error, "{query}: {body}");
                assert!(
                    body["message"].as_str().unwrap().contains(message),
                    "{body}"
                );
            }
            other => panic!("{query}: expected 400, got {:?}", other.map(|_| ())),
        }
    }
    // The legacy wire clamps the same seq silently: from the oldest held.
    let mut legacy = connect(&server, "cursor=1005").await;
    assert_eq!(json(&mut legacy).await["cursor"], 1_020);
    assert_eq!(hub.stats().clamped, 1);
}

#[tokio::test]
async fn an_old_time_cursor_starts_at_the_oldest_with_an_info_frame() {
    let (hub, server) = instance(30, 10).await;
    let mut v2 = connect_v2(&server, &format!("cursor={T}")).await;
    let info = json(&mut v2).await;
    assert_eq!(
        info["payload"]["$type"],
        "network.bsky.jetstream.subscribeEvents#info"
    );
    assert_eq!(info["payload"]["name"], "OutdatedCursor");
    assert_eq!(json(&mut v2).await["payload"]["seq"], 1_020);
    // A time the window holds is no clamp.
    let mut held = connect_v2(&server, &format!("cursor={}", T + 250)).await;
    assert_eq!(json(&mut held).await["payload"]["seq"], 1_025);
    assert_eq!(hub.stats().clamped, 1);
}

#[tokio::test]
async fn the_v2_stream_takes_no_messages_and_echoes_its_subprotocol() {
    let (_hub, server) = instance(1, 10).await;
    let mut request = server.events_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "xrpc.v1.json".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "xrpc.v1.json"
    );
    ws.send(Message::text(r#"{"type":"options_update","payload":{}}"#))
        .await
        .unwrap();
    let close = close_frame(&mut ws).await;
    assert_eq!(close.code, CloseCode::Policy);
}

#[tokio::test]
async fn two_instances_number_the_same_events_differently() {
    let (_a, one) = instance(5, 100).await;
    let config = WindowConfig {
        first_seq: 7_000_000,
        ..WindowConfig::default()
    };
    let (b, two) = server_with(|_| {}, config, TimeMode::Keep).await;
    b.publish((0..5).map(|i| commit(A, T + i * 10, STATUS, &format!("k{i}"))));
    let mut x = connect(&one, "cursor=0").await;
    let mut y = connect(&two, &format!("cursor={T}")).await;
    let (x, y) = (json(&mut x).await, json(&mut y).await);
    assert_eq!(x["time_us"], y["time_us"], "the same event, by time");
    assert_eq!(
        (x["cursor"].as_u64(), y["cursor"].as_u64()),
        (Some(1_000), Some(7_000_000))
    );
}
