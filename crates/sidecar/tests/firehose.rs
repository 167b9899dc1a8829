//! The firehose bridge against a real local PDS (`@atproto/dev-env`): records created, updated and
//! deleted on the PDS, a handle change and an account deactivation all come out of the sidecar
//! as Jetstream events, filtered, timed, and replayable from a cursor.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use sidecar::frame::TimeMode;
use sidecar::source::firehose::{self, FirehoseConfig};
use sidecar::window::WindowConfig;
use xtask::devnet::{Devnet, DevnetConfig};
use xtask::toolchain::Tools;

struct Pds {
    base: String,
    http: reqwest::Client,
}

impl Pds {
    async fn call(&self, method: &str, token: Option<&str>, body: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/xrpc/{method}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// Reads events until one matches; panics after `wait` (the stream may hold other events first,
/// e.g. those of account creation).
async fn expect(reader: &mut Reader, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = next_text(&mut reader.ws, left)
            .await
            .unwrap_or_else(|| panic!("no event: {what}"));
        let event: Value = serde_json::from_str(&text).unwrap();
        reader.seen.push(event.clone());
        if matches(&event) {
            return event;
        }
    }
}

/// A subscriber and every event it has received.
struct Reader {
    ws: Client,
    seen: Vec<Value>,
}

async fn reader(server: &sidecar::server::Server, query: &str) -> Reader {
    Reader {
        ws: connect(server, query).await,
        seen: Vec::new(),
    }
}

/// The record key at the end of a createRecord answer's `uri`.
fn rkey_of(created: &Value) -> String {
    created["uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

fn commit_of<'a>(event: &'a Value, did: &str, operation: &str, rkey: &str) -> Option<&'a Value> {
    let commit = &event["commit"];
    (event["kind"] == "commit"
        && event["did"] == did
        && commit["operation"] == operation
        && commit["rkey"] == rkey)
        .then_some(commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pds_writes_come_out_as_jetstream_events() {
    let tools = Tools::locate().unwrap();
    let devnet =
        Devnet::start(&tools, &DevnetConfig::for_test("sidecar-firehose").unwrap()).unwrap();
    let (alice, bob) = (devnet.accounts[0].clone(), devnet.accounts[1].clone());
    let (hub, server) = server_with(|_| {}, WindowConfig::default(), TimeMode::Now).await;
    tokio::spawn(firehose::run(
        hub.clone(),
        FirehoseConfig {
            url: devnet.pds_ws(),
            cursor: Some(0),
        },
    ));
    let mut statuses = reader(&server, &format!("wantedCollections={STATUS}&cursor=0")).await;
    let mut everything = reader(&server, "cursor=0").await;

    let pds = Pds {
        base: devnet.pds_http(),
        http: reqwest::Client::new(),
    };
    let session = pds
        .call(
            "com.atproto.server.createSession",
            None,
            json!({"identifier": alice.handle, "password": alice.password}),
        )
        .await;
    let token = session["accessJwt"].as_str().unwrap().to_owned();
    let created_at = "2026-11-24T12:00:00.000Z";

    // Create.
    let created = pds
        .call("com.atproto.repo.createRecord", Some(&token), json!({"repo": alice.did, "collection": STATUS, "record": {"$type": STATUS, "status": "🙂", "createdAt": created_at}}))
        .await;
    let rkey = rkey_of(&created);
    let create = expect(&mut statuses, "status create", |e| {
        commit_of(e, &alice.did, "create", &rkey).is_some()
    })
    .await;
    assert_eq!(
        create["commit"]["record"],
        json!({"$type": STATUS, "status": "🙂", "createdAt": created_at})
    );
    assert_eq!(create["commit"]["cid"], created["cid"]);
    assert_eq!(create["commit"]["collection"], STATUS);
    // As a relay would, the sidecar now lists alice among the repositories with statuses (a
    // backfill starts there); bob has written none.
    let repos: Value = pds
        .http
        .get(format!(
            "http://{}/xrpc/com.atproto.sync.listReposByCollection?collection={STATUS}",
            server.addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(repos["repos"], json!([{ "did": alice.did }]), "{repos}");
    assert!(create["commit"]["rev"]
        .as_str()
        .is_some_and(|r| r.len() == 13));
    // The listener's own parser accepts it as a status.
    let parsed = domain::jetstream::Event::parse(&create.to_string()).unwrap();
    assert!(matches!(
        parsed.change().unwrap(),
        Some(domain::jetstream::Change::Upsert(_))
    ));

    // Update (putRecord on the same key).
    let updated = pds
        .call("com.atproto.repo.putRecord", Some(&token), json!({"repo": alice.did, "collection": STATUS, "rkey": rkey, "record": {"$type": STATUS, "status": "😎", "createdAt": created_at}}))
        .await;
    let update = expect(&mut statuses, "status update", |e| {
        commit_of(e, &alice.did, "update", &rkey).is_some()
    })
    .await;
    assert_eq!(update["commit"]["record"]["status"], "😎");
    assert_eq!(update["commit"]["cid"], updated["cid"]);

    // Another collection: filtered out for `statuses`, seen by `everything`.
    let bob_session = pds
        .call(
            "com.atproto.server.createSession",
            None,
            json!({"identifier": bob.handle, "password": bob.password}),
        )
        .await;
    let post = pds
        .call(
            "com.atproto.repo.createRecord",
            Some(bob_session["accessJwt"].as_str().unwrap()),
            json!({"repo": bob.did, "collection": POST, "record": {"$type": POST, "text": "hello <b>world</b>", "createdAt": created_at}}),
        )
        .await;
    let post_rkey = rkey_of(&post);
    let seen = expect(&mut everything, "bob's post", |e| {
        commit_of(e, &bob.did, "create", &post_rkey).is_some()
    })
    .await;
    assert_eq!(seen["commit"]["record"]["text"], "hello <b>world</b>");

    // Delete.
    pds.call(
        "com.atproto.repo.deleteRecord",
        Some(&token),
        json!({"repo": alice.did, "collection": STATUS, "rkey": rkey}),
    )
    .await;
    let delete = expect(&mut statuses, "status delete", |e| {
        commit_of(e, &alice.did, "delete", &rkey).is_some()
    })
    .await;
    assert!(delete["commit"].get("record").is_none() && delete["commit"].get("cid").is_none());

    // Identity: a handle change, delivered despite wantedCollections.
    pds.call(
        "com.atproto.identity.updateHandle",
        Some(&token),
        json!({"handle": "alice-renamed.test"}),
    )
    .await;
    let identity = expect(&mut statuses, "identity", |e| {
        e["kind"] == "identity" && e["identity"]["handle"] == "alice-renamed.test"
    })
    .await;
    assert_eq!(identity["did"], alice.did.as_str());
    assert!(identity["identity"]["seq"].is_i64());

    // Account: deactivation, also delivered despite wantedCollections.
    pds.call(
        "com.atproto.server.deactivateAccount",
        Some(&token),
        json!({}),
    )
    .await;
    let account = expect(&mut statuses, "account", |e| {
        e["kind"] == "account" && e["account"]["active"] == false
    })
    .await;
    assert_eq!(account["did"], alice.did.as_str());
    assert_eq!(account["account"]["status"], "deactivated");

    // Bob's post never reached the filtered subscriber: everything it got was a status or an
    // identity/account event, with strictly increasing times. A cursor replay gives the same tail.
    for event in &statuses.seen {
        assert!(
            event["kind"] != "commit" || event["commit"]["collection"] == STATUS,
            "filter leaked {event}"
        );
    }
    let seen_times: Vec<i64> = statuses
        .seen
        .iter()
        .map(|e| e["time_us"].as_i64().unwrap())
        .collect();
    assert!(seen_times.windows(2).all(|w| w[0] < w[1]), "{seen_times:?}");
    let mut replay = reader(
        &server,
        &format!("wantedCollections={STATUS}&cursor={}", update["time_us"]),
    )
    .await;
    let first = expect(&mut replay, "replayed update", |_| true).await;
    assert_eq!(first, update);
    let replayed_delete = expect(&mut replay, "replayed delete", |e| {
        commit_of(e, &alice.did, "delete", &rkey).is_some()
    })
    .await;
    assert_eq!(replayed_delete, delete);
    let times = [
        create["time_us"].as_i64(),
        update["time_us"].as_i64(),
        delete["time_us"].as_i64(),
        identity["time_us"].as_i64(),
        account["time_us"].as_i64(),
    ];
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    drop(devnet);
}
