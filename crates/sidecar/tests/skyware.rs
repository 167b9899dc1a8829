//! `@skyware/jetstream`, a third-party Jetstream client (npm), against the sidecar: it connects,
//! filters by collection and by DID, resumes from a cursor, tails live, changes its filter with an
//! `options_update` message, and receives exactly the events expected, records intact.
//!
//! The client runs in the pinned Node (`skyware/client.mjs`) and writes each event it emits as a
//! JSON line; the tests compare those with the frames the sidecar was given. An outside client
//! written against the real Jetstream is what tells a sidecar that speaks Jetstream from one that
//! only agrees with our own parser.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use sidecar::frame::TimeMode;
use sidecar::source::generate::{generate, GenerateConfig};
use sidecar::window::WindowConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use xtask::paths;
use xtask::toolchain::Tools;

/// (time_us, did, kind) of an event: what tells one frame from another.
type Key = (u64, String, String);

fn key(event: &Value) -> Key {
    (
        event["time_us"].as_u64().expect("time_us"),
        event["did"].as_str().expect("did").to_owned(),
        event["kind"].as_str().expect("kind").to_owned(),
    )
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// 400 generated frames over 8 accounts: statuses, posts and other collections, identity and
/// account events, none malformed (a Jetstream never serves those, so a client need not read them).
fn stream() -> Vec<String> {
    generate(&GenerateConfig {
        seed: 11,
        accounts: 8,
        events: 400,
        malformed_share: 0.0,
    })
}

/// What a subscriber to `collection` is sent: its commits, and every identity and account event.
fn wanted(lines: &[String], collection: &str) -> Vec<Value> {
    lines
        .iter()
        .map(|l| parse(l))
        .filter(|v| v["kind"] != "commit" || v["commit"]["collection"] == collection)
        .collect()
}

fn keys(events: &[Value]) -> Vec<Key> {
    events.iter().map(key).collect()
}

/// The client, running; dropped, it is killed.
struct Skyware {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Skyware {
    /// Starts the client and waits until its socket is open.
    async fn start(url: &str, collections: &[&str], dids: &[&str], cursor_us: Option<u64>) -> Self {
        let tools = Tools::locate().expect("the pinned Node (run `cargo xtask test`)");
        let mut child = Command::new(&tools.node)
            .current_dir(paths::root())
            .arg("crates/sidecar/tests/skyware/client.mjs")
            .env("ENDPOINT", url)
            .env("COLLECTIONS", collections.join(","))
            .env("DIDS", dids.join(","))
            .env(
                "CURSOR",
                cursor_us.map(|c| c.to_string()).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut client = Skyware {
            child,
            stdin,
            stdout,
        };
        assert_eq!(client.next().await, Some(serde_json::json!({"open": true})));
        client
    }

    /// The next line the client writes, or `None` if nothing comes within ten seconds.
    async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(10)).await
    }

    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Some(parse(&line)),
            Ok(Ok(None)) => {
                let status = self.child.wait().await;
                panic!("the client ended: {status:?}")
            }
            Ok(Err(e)) => panic!("reading the client: {e}"),
            Err(_) => None,
        }
    }

    /// The next `n` events.
    async fn receive(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next().await {
                Some(mut event) => {
                    // The seq the sidecar gives each event: compared apart from the frame.
                    let seq = event.as_object_mut().and_then(|o| o.remove("cursor"));
                    assert!(seq.is_some_and(|s| s.is_u64()), "no seq: {event}");
                    out.push(event)
                }
                None => panic!("the client received {} of {n} events", out.len()),
            }
        }
        out
    }

    /// Nothing more arrives.
    async fn nothing_more(&mut self) {
        if let Some(event) = self.next_within(Duration::from_millis(400)).await {
            panic!("unexpected extra event {event}");
        }
    }

    /// Sends an `options_update` through the client.
    async fn update(&mut self, payload: Value) {
        let line = format!("{payload}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        assert_eq!(
            self.next().await,
            Some(serde_json::json!({"updated": true}))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skyware_filters_resumes_and_tails_live() {
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Keep).await;
    let lines = stream();
    let (first, second) = lines.split_at(300);
    hub.publish(first.iter().cloned());
    let expected = wanted(first, STATUS);
    assert!(
        expected.len() > 40 && expected.iter().any(|v| v["kind"] == "identity"),
        "the stream should hold statuses, identity and account events"
    );

    // From the beginning, filtered to statuses: every status and every identity/account event, in
    // order, each exactly as served (records included: the client passes them through).
    let mut client = Skyware::start(&server.url(), &[STATUS], &[], Some(1)).await;
    assert_eq!(client.receive(expected.len()).await, expected);
    // Then live: the rest of the stream arrives as it is published.
    hub.publish(second.iter().cloned());
    let live = wanted(second, STATUS);
    assert_eq!(client.receive(live.len()).await, live);
    client.nothing_more().await;
    drop(client);

    // Resuming from a cursor: exactly the events at or after it.
    let all: Vec<Key> = keys(&expected).into_iter().chain(keys(&live)).collect();
    let half = all.len() / 2;
    let mut client = Skyware::start(&server.url(), &[STATUS], &[], Some(all[half].0)).await;
    assert_eq!(keys(&client.receive(all.len() - half).await), all[half..]);
    client.nothing_more().await;
    drop(client);

    // One DID only: its statuses and its identity/account events, nobody else's.
    let did = all.iter().find(|k| k.2 == "commit").unwrap().1.clone();
    let mut client = Skyware::start(&server.url(), &[STATUS], &[&did], Some(1)).await;
    let mine: Vec<Key> = all.iter().filter(|k| k.1 == did).cloned().collect();
    assert_eq!(keys(&client.receive(mine.len()).await), mine);
    client.nothing_more().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skyware_changes_its_filter_on_a_live_connection() {
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Keep).await;
    let lines = stream();
    let (first, second) = lines.split_at(200);
    hub.publish(first.iter().cloned());
    let mut client = Skyware::start(&server.url(), &[STATUS], &[], Some(1)).await;
    let expected = wanted(first, STATUS);
    assert_eq!(keys(&client.receive(expected.len()).await), keys(&expected));

    // Posts of one DID from now on, through the client's `options_update` message. The server
    // reads it beside what it sends, so give it a moment before the next frames are published.
    let posts = wanted(second, POST);
    let did = posts
        .iter()
        .find(|v| v["kind"] == "commit")
        .expect("a post in the second half")["did"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .update(serde_json::json!({"wantedCollections": [POST], "wantedDids": [did]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.publish(second.iter().cloned());
    let mine: Vec<Key> = keys(&posts).into_iter().filter(|k| k.1 == did).collect();
    assert!(mine.iter().any(|k| k.2 == "commit"));
    assert_eq!(keys(&client.receive(mine.len()).await), mine);
    client.nothing_more().await;
}
