//! `jetstream-oxide`, a third-party Jetstream client, against the sidecar: it connects, filters,
//! resumes from a cursor and tails live, and receives exactly the events expected.
//!
//! It is used on `app.bsky.feed.post`, whose records its typed parser knows. On our own
//! `xyz.statusphere.status` it falls short (it has no type for the record, so a create arrives as
//! its `Delete` variant with the record dropped); the last test pins that down so that nobody
//! mistakes it for a sidecar bug.

use std::time::Duration;

use crate::common::*;
use chrono::{DateTime, Utc};
use jetstream_oxide::events::commit::CommitEvent;
use jetstream_oxide::events::JetstreamEvent;
use jetstream_oxide::exports::{Did, Nsid};
use jetstream_oxide::{JetstreamConfig, JetstreamConnector, JetstreamReceiver};
use sidecar::frame::TimeMode;
use sidecar::source::generate::{generate, GenerateConfig};
use sidecar::window::WindowConfig;

/// (time_us, did, kind) of a frame, as the sidecar served it.
type Key = (u64, String, &'static str);

fn key_of_line(line: &str) -> Key {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let kind = match v["kind"].as_str().unwrap() {
        "commit" => "commit",
        "identity" => "identity",
        "account" => "account",
        other => panic!("unexpected kind {other}"),
    };
    (
        v["time_us"].as_u64().unwrap(),
        v["did"].as_str().unwrap().to_owned(),
        kind,
    )
}

fn key_of_event(event: &JetstreamEvent) -> Key {
    match event {
        JetstreamEvent::Commit(
            CommitEvent::Create { info, .. }
            | CommitEvent::Update { info, .. }
            | CommitEvent::Delete { info, .. },
        ) => (info.time_us, info.did.to_string(), "commit"),
        JetstreamEvent::Identity(e) => (e.info.time_us, e.info.did.to_string(), "identity"),
        JetstreamEvent::Account(e) => (e.info.time_us, e.info.did.to_string(), "account"),
    }
}

fn stream() -> Vec<String> {
    generate(&GenerateConfig {
        seed: 11,
        accounts: 8,
        events: 400,
        malformed_share: 0.0,
    })
}

fn wants_post_or_account(line: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["kind"] != "commit" || v["commit"]["collection"] == POST
}

async fn oxide(
    url: String,
    collections: &[&str],
    dids: &[String],
    cursor_us: Option<u64>,
) -> JetstreamReceiver {
    let config = JetstreamConfig {
        endpoint: url,
        wanted_collections: collections
            .iter()
            .map(|c| Nsid::new((*c).to_owned()).unwrap())
            .collect(),
        wanted_dids: dids.iter().map(|d| Did::new(d.clone()).unwrap()).collect(),
        cursor: cursor_us.map(|us| DateTime::<Utc>::from_timestamp_micros(us as i64).unwrap()),
        max_retries: 1,
        ..JetstreamConfig::default()
    };
    JetstreamConnector::new(config)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn receive(rx: &JetstreamReceiver, n: usize) -> Vec<JetstreamEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv_async()).await {
            Ok(Ok(event)) => out.push(event),
            _ => panic!("oxide received {} of {n} events", out.len()),
        }
    }
    out
}

async fn nothing_more(rx: &JetstreamReceiver) {
    if let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(400), rx.recv_async()).await {
        panic!("unexpected extra event {:?}", key_of_event(&event));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oxide_filters_resumes_and_tails_live() {
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Keep).await;
    let lines = stream();
    let (first, second) = lines.split_at(300);
    hub.publish(first.iter().cloned());
    let expected: Vec<Key> = first
        .iter()
        .filter(|l| wants_post_or_account(l))
        .map(|l| key_of_line(l))
        .collect();
    assert!(
        expected.len() > 40,
        "the stream should hold posts, identity and account events"
    );

    // From the beginning, filtered to posts: every post and every identity/account event, in order.
    let rx = oxide(server.url(), &[POST], &[], Some(1)).await;
    let got: Vec<Key> = receive(&rx, expected.len())
        .await
        .iter()
        .map(key_of_event)
        .collect();
    assert_eq!(got, expected);
    // Then live: the rest of the stream arrives as it is published.
    hub.publish(second.iter().cloned());
    let live: Vec<Key> = second
        .iter()
        .filter(|l| wants_post_or_account(l))
        .map(|l| key_of_line(l))
        .collect();
    let got: Vec<Key> = receive(&rx, live.len())
        .await
        .iter()
        .map(key_of_event)
        .collect();
    assert_eq!(got, live);
    nothing_more(&rx).await;

    // Resuming from a cursor: exactly the events at or after it.
    let all: Vec<Key> = expected.iter().chain(live.iter()).cloned().collect();
    let cursor = all[all.len() / 2].0;
    let rx = oxide(server.url(), &[POST], &[], Some(cursor)).await;
    let resumed: Vec<Key> = receive(&rx, all.len() - all.len() / 2)
        .await
        .iter()
        .map(key_of_event)
        .collect();
    assert_eq!(resumed, all[all.len() / 2..].to_vec());
    nothing_more(&rx).await;

    // One DID only: its posts and its identity/account events, nobody else's.
    let did = all.iter().find(|k| k.2 == "commit").unwrap().1.clone();
    let rx = oxide(server.url(), &[POST], std::slice::from_ref(&did), Some(1)).await;
    let mine: Vec<Key> = all.iter().filter(|k| k.1 == did).cloned().collect();
    let got: Vec<Key> = receive(&rx, mine.len())
        .await
        .iter()
        .map(key_of_event)
        .collect();
    assert_eq!(got, mine);
    nothing_more(&rx).await;

    // Post records arrive typed, with their text.
    let rx = oxide(server.url(), &[POST], &[], Some(1)).await;
    let typed = receive(&rx, expected.len())
        .await
        .into_iter()
        .find_map(|e| match e {
            JetstreamEvent::Commit(CommitEvent::Create { commit, .. }) => Some(commit),
            _ => None,
        });
    let commit = typed.expect("a typed post create");
    assert_eq!(commit.info.collection.as_str(), POST);
    // KnownRecord is atrium-api 0.25's type (not ours, 0.26), so it is checked through Debug.
    let record = format!("{:?}", commit.record);
    assert!(
        record.starts_with("AppBskyFeedPost") && record.contains("text: \"post "),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oxide_cannot_type_custom_records_so_a_status_create_arrives_as_delete() {
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Keep).await;
    let create = stream()
        .into_iter()
        .find(|l| l.contains(r#""operation":"create","collection":"xyz.statusphere.status""#))
        .unwrap();
    hub.publish([create.clone()]);
    let rx = oxide(server.url(), &[STATUS], &[], Some(1)).await;
    let event = receive(&rx, 1).await.remove(0);
    assert_eq!(key_of_event(&event), key_of_line(&create));
    assert!(
        matches!(event, JetstreamEvent::Commit(CommitEvent::Delete { .. })),
        "oxide's shortfall changed: {event:?}"
    );
}
