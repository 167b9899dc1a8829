//! The listener's plan (`domain::ingest`) run through sqlx against the real `migrations/`: frames in,
//! one transaction, rows back, broker messages out, as the listener does it with D1.

use std::path::PathBuf;

use domain::ingest::{Batch, Part};
use domain::sql::{self, StatusViewRow};
use domain::wire::ServerMessage;
use domain::{Origin, Status};
use sqlx::sqlite::SqlitePool;

use crate::common::{self, batch, batch_json, database};

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb";

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jetstream")
        .join(path)
}

fn valid_frames() -> Vec<String> {
    std::fs::read_to_string(fixture("valid.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The hostile fixtures that must not become a change (tests/jetstream.rs classifies each one; the
/// one that is valid after all, junk in a field the lexicon does not know, is left out here).
fn hostile_frames() -> Vec<String> {
    let mut frames: Vec<(String, String)> = std::fs::read_dir(fixture("hostile"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.ends_with("deeply-nested-unknown-field.json"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    frames.sort();
    frames.into_iter().map(|(_, text)| text).collect()
}

/// Plans, runs and reads back one batch.
async fn ingest(pool: &SqlitePool, frames: &[String]) -> (Batch, Vec<ServerMessage>) {
    let plan = Batch::plan(frames.iter().map(String::as_str), common::NOW_US);
    let results = batch_json(pool, &plan.statements).await;
    let messages = plan.messages(&results).expect("rows read back");
    (plan, messages)
}

async fn visible(pool: &SqlitePool) -> Vec<(String, String, Option<String>)> {
    let rows = batch_json(pool, &[sql::recent_statuses(100)]).await;
    rows[0]
        .iter()
        .map(|row| {
            let row: StatusViewRow = serde_json::from_value(row.clone()).unwrap();
            (row.uri, row.status, row.handle)
        })
        .collect()
}

fn a_status(did: &str, rkey: &str, emoji: &str, time_us: i64) -> String {
    a_write(did, rkey, rkey, "create", emoji, time_us)
}

#[tokio::test]
async fn the_fixture_stream_becomes_rows_and_messages_once() {
    let pool = database().await;
    let frames = valid_frames();
    let (plan, messages) = ingest(&pool, &frames).await;
    assert_eq!(plan.seen, 9);
    assert_eq!(plan.changes, 9);
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
    assert_eq!(plan.cursor_us, Some(1_732_406_408_000_000));

    // Alice's account was deleted at the end: her statuses are purged; the other author's stays.
    let shown = visible(&pool).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].1, "👨‍👩‍👧‍👦");

    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| match m {
            ServerMessage::HandleChanged { .. } => "handle",
            ServerMessage::AccountChanged { .. } => "account",
            ServerMessage::StatusUpserted { .. } => "upsert",
            ServerMessage::StatusDeleted { .. } => "delete",
            ServerMessage::CountsChanged { .. } => "counts",
            _ => "other",
        })
        .collect();
    // Alice's only status was deleted before her identity and account events: by then the app
    // has nothing of hers to show, so they are not recorded (strangers' events never are).
    assert!(
        !kinds.contains(&"handle") && !kinds.contains(&"account"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"delete"), "{kinds:?}");
    let upserts: Vec<&ServerMessage> = messages
        .iter()
        .filter(|m| matches!(m, ServerMessage::StatusUpserted { .. }))
        .collect();
    // Both authors' upserts are pushed (Alice's create and update, the other's create), in the
    // order they ran, with the delete of Alice's after hers: a page applying them in order ends
    // with what D1 has. (The other's create runs with Alice's delete, in one run of statuses:
    // upserts first.)
    assert_eq!(upserts.len(), 3, "{messages:#?}");
    // Last, the counts the batch changed, as D1 holds them after it.
    assert_eq!(kinds, ["upsert", "upsert", "upsert", "delete", "counts"]);
    let Some(ServerMessage::CountsChanged { counts }) = messages.last() else {
        panic!("{messages:#?}")
    };
    let in_d1: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count FROM status_count ORDER BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut published: Vec<(String, i64)> =
        counts.iter().map(|c| (c.status.clone(), c.count)).collect();
    published.sort();
    assert_eq!(
        published, in_d1,
        "every count the batch touched, as D1 holds it"
    );

    // The same frames again (a rewound cursor): nothing changes, nothing is forwarded.
    let (again, messages) = ingest(&pool, &frames).await;
    assert_eq!(again.changes, 9);
    assert!(messages.is_empty(), "a replay was forwarded: {messages:#?}");
    assert_eq!(visible(&pool).await, shown);
}

#[tokio::test]
async fn hostile_frames_are_dropped_with_reasons_and_valid_ones_kept() {
    let clean = database().await;
    ingest(&clean, &valid_frames()).await;

    let hostile = hostile_frames();
    assert!(
        hostile.len() >= 30,
        "only {} hostile fixtures",
        hostile.len()
    );
    // Every hostile frame between every two valid ones.
    let mut mixed = Vec::new();
    for frame in valid_frames() {
        mixed.extend(hostile.iter().cloned());
        mixed.push(frame);
    }
    let pool = database().await;
    let (plan, _) = ingest(&pool, &mixed).await;
    assert_eq!(plan.changes, 9, "valid events lost among hostile ones");
    assert_eq!(
        plan.cursor_us,
        Some(1_732_406_408_000_000),
        "a hostile time_us moved the cursor"
    );
    assert_eq!(plan.seen as usize, mixed.len());
    assert_eq!(
        plan.dropped.len() as u64 + plan.changes + plan.ignored,
        plan.seen,
        "every frame is recorded, ignored or dropped"
    );
    for dropped in &plan.dropped {
        assert!(!dropped.reason.is_empty());
        assert!(
            dropped.detail.len() < 300,
            "unbounded detail: {}",
            dropped.detail
        );
    }
    assert_eq!(visible(&pool).await, visible(&clean).await);
}

#[tokio::test]
async fn an_optimistic_row_is_confirmed_and_forwarded_as_one_status() {
    let pool = database().await;
    let rkey = &tid(1);
    let uri = format!("at://{ALICE}/xyz.statusphere.status/{rkey}");
    let optimistic = Status {
        uri: uri.clone(),
        author_did: ALICE.into(),
        rkey: rkey.clone(),
        status: "🦋".into(),
        created_at: "2026-11-24T00:00:00.000Z".into(),
        indexed_at: 1_000,
        rev: rkey.clone(),
        cid: None,
        origin: Origin::Edge,
        confirmed: false,
    };
    batch(&pool, &sql::upsert_statuses(&[optimistic])).await;
    let (_, messages) = ingest(&pool, &[a_status(ALICE, rkey, "🦋", 2_000_000)]).await;
    // The confirmation changes no count: the optimistic row already counted.
    let [ServerMessage::StatusUpserted { status }] = messages.as_slice() else {
        panic!("{messages:#?}")
    };
    assert_eq!(status.uri, uri);
    assert!(status.confirmed);
    assert_eq!(
        status.origin,
        Origin::Edge,
        "the row keeps where it was first written"
    );
    assert_eq!(
        status.indexed_at, 1_000,
        "the status does not jump in the list"
    );
    assert_eq!(visible(&pool).await.len(), 1);
}

#[tokio::test]
async fn handles_ride_along_and_inactive_authors_are_not_pushed() {
    let pool = database().await;
    let bob = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
    // A verified handle (from sign-in or a background lookup) rides along with bob's statuses.
    batch(&pool, &[sql::learn_handle(bob, "bob.test", 1)]).await;
    let (_, messages) = ingest(&pool, &[a_status(bob, &tid(2), "😎", 5)]).await;
    let upserted: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::StatusUpserted { status } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(upserted.len(), 1);
    assert_eq!(upserted[0].handle.as_deref(), Some("bob.test"));

    // An identity event claiming another handle is only a hint: the stored handle goes (pages show
    // the DID), bob is due for a verified lookup at once, and the claim is never recorded.
    sqlx::query("INSERT INTO handle_lookup (did, checked_at) VALUES (?1, 99)")
        .bind(bob)
        .execute(&pool)
        .await
        .unwrap();
    let identity = serde_json::json!({"did": bob, "time_us": 10, "kind": "identity",
        "identity": {"did": bob, "handle": "jay.bsky.team", "seq": 1, "time": "2026-11-24T00:00:00Z"}})
    .to_string();
    let (_, messages) = ingest(&pool, &[identity]).await;
    assert_eq!(
        messages,
        vec![ServerMessage::HandleChanged {
            did: bob.into(),
            handle: None
        }]
    );
    let handle: Option<String> = sqlx::query_scalar("SELECT handle FROM account WHERE did = ?1")
        .bind(bob)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(handle, None);
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handle_lookup WHERE did = ?1")
        .bind(bob)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        queued, 0,
        "bob's last lookup is forgotten: he is claimable now"
    );

    let deactivate = serde_json::json!({"did": bob, "time_us": 30, "kind": "account",
        "account": {"active": false, "did": bob, "seq": 2, "status": "deactivated",
                    "time": "2026-11-24T00:00:00Z"}})
    .to_string();
    let (_, messages) = ingest(&pool, &[deactivate, a_status(bob, &tid(3), "🤓", 40)]).await;
    // His shown status no longer counts; the new one, hidden, never did.
    let [ServerMessage::AccountChanged { did, active: false }, ServerMessage::CountsChanged { counts }] =
        messages.as_slice()
    else {
        panic!("an inactive author's new status was pushed: {messages:?}");
    };
    assert_eq!(did, bob);
    assert_eq!(
        counts
            .iter()
            .map(|c| (c.status.as_str(), c.count))
            .collect::<Vec<_>>(),
        [("😎", 0)]
    );
    assert!(visible(&pool).await.is_empty());
}

#[tokio::test]
async fn a_thousand_events_fit_d1_limits_and_all_land() {
    let pool = database().await;
    let frames: Vec<String> = (0..1_000)
        .map(|n| {
            let did = format!("did:plc:{:0>24}", n % 300);
            a_status(&did, &tid(n as u64), "👍", 1_000 + n)
        })
        .collect();
    let (plan, messages) = ingest(&pool, &frames).await;
    assert!(
        plan.dropped.is_empty(),
        "{:?}",
        &plan.dropped[..3.min(plan.dropped.len())]
    );
    assert!(
        plan.statements.len() > 1,
        "one statement cannot hold 1,000 rows in D1"
    );
    assert!(plan.parts.iter().filter(|p| **p == Part::Authors).count() >= 3);
    assert_eq!(
        messages
            .iter()
            .filter(|m| matches!(m, ServerMessage::StatusUpserted { .. }))
            .count(),
        1_000
    );
    assert_eq!(plan.cursor_us, Some(1_999));
}

/// A valid TID (record key and revision) that sorts by `n`.
fn tid(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut tail = [b'2'; 9];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(n % 32) as usize];
        n /= 32;
    }
    format!("3lbk{}", String::from_utf8_lossy(&tail))
}

#[test]
fn results_that_do_not_match_the_plan_are_an_error() {
    let plan = Batch::plan([a_status(ALICE, &tid(4), "😎", 5).as_str()], common::NOW_US);
    assert!(plan.messages(&[]).is_err());
    let nonsense = vec![vec![serde_json::json!({"uri": 5})]; plan.statements.len()];
    assert!(plan.messages(&nonsense).is_err());
    // An upsert's row names the status it stands for by URI and revision: one the batch did not
    // send is an error, not a message made up of nothing.
    let upserts = plan
        .parts
        .iter()
        .position(|p| *p == domain::ingest::Part::Upserts)
        .expect("an upsert");
    // `a_status` writes the record key as the revision too.
    let rev = tid(4);
    let uri = format!("at://{ALICE}/xyz.statusphere.status/{rev}");
    assert_eq!(
        plan.upserted(&uri, &rev).map(|s| s.status.as_str()),
        Some("😎")
    );
    let row = |uri: &str, rev: &str| serde_json::json!({"uri": uri, "rev": rev, "indexed_at": 5, "origin": "network", "confirmed": 1});
    let mut results = vec![Vec::new(); plan.statements.len()];
    results[upserts] = vec![row(&uri, &rev)];
    assert_eq!(plan.messages(&results).expect("its own row").len(), 1);
    results[upserts] = vec![row(&uri, "3zzzzzzzzzzzz")];
    let error = plan.messages(&results).expect_err("another revision");
    assert!(error.to_string().contains("did not write"), "{error}");
}

#[tokio::test]
async fn a_clock_ahead_is_brought_back_to_now_and_the_future_is_dropped() {
    let pool = database().await;
    let minute = 60_000_000;
    let frames = [
        a_status(ALICE, &tid(4), "😎", common::NOW_US + minute),
        a_status(BOB, &tid(5), "🦋", common::NOW_US + 60 * minute),
    ];
    let (plan, messages) = ingest(&pool, &frames).await;
    assert_eq!(
        plan.cursor_us,
        Some(common::NOW_US),
        "the cursor stays at now"
    );
    assert_eq!(plan.dropped.len(), 1);
    assert_eq!(plan.dropped[0].reason, "future");
    let [ServerMessage::StatusUpserted { status }, ServerMessage::CountsChanged { counts }] =
        messages.as_slice()
    else {
        panic!("one status and its count expected: {messages:?}");
    };
    assert_eq!(
        counts
            .iter()
            .map(|c| (c.status.as_str(), c.count))
            .collect::<Vec<_>>(),
        [("😎", 1)]
    );
    assert_eq!(status.author_did, ALICE);
    assert_eq!(status.indexed_at, common::NOW_US / 1000, "sorted as of now");
}

/// A status write with its own revision (`create` or `update`).
fn a_write(did: &str, rkey: &str, rev: &str, operation: &str, emoji: &str, time_us: i64) -> String {
    serde_json::json!({
        "did": did, "time_us": time_us, "kind": "commit",
        "commit": {"rev": rev, "operation": operation, "collection": "xyz.statusphere.status",
                   "rkey": rkey, "cid": "bafyreigh2akiscaildc",
                   "record": {"$type": "xyz.statusphere.status", "status": emoji,
                              "createdAt": "2026-11-24T00:00:00.000Z"}}
    })
    .to_string()
}

/// A random stream over a few accounts: writes, deletes, handle changes, deactivations,
/// reactivations, deletions of accounts, and junk.
fn random_stream(seed: u64, length: usize) -> Vec<String> {
    let dids: Vec<String> = (0..5).map(|i| format!("did:plc:{i:0>24}")).collect();
    let mut rng = seed;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    (0..length)
        .map(|n| {
            let time_us = 1_000 + n as i64;
            let did = dids[next(5) as usize].as_str();
            let rkey = tid(next(3));
            let emoji = ["😎", "👍", "🚀"][next(3) as usize];
            let account = |active: bool, status: Option<&str>| {
                serde_json::json!({"did": did, "time_us": time_us, "kind": "account",
                    "account": {"active": active, "did": did, "seq": n, "status": status,
                                "time": "2026-11-24T00:00:00Z"}})
                .to_string()
            };
            match next(12) {
                0..=4 => a_write(did, &rkey, &tid(1_000 + n as u64), "update", emoji, time_us),
                5 => serde_json::json!({"did": did, "time_us": time_us, "kind": "commit",
                    "commit": {"rev": tid(1_000 + n as u64), "operation": "delete",
                               "collection": "xyz.statusphere.status", "rkey": rkey}})
                .to_string(),
                6 | 7 => serde_json::json!({"did": did, "time_us": time_us, "kind": "identity",
                    "identity": {"did": did, "handle": format!("h{n}.test"), "seq": n,
                                 "time": "2026-11-24T00:00:00Z"}})
                .to_string(),
                8 => account(false, Some("deactivated")),
                9 => account(true, None),
                10 => account(false, Some("deleted")),
                _ => "{\"not\": \"an event\"".to_owned(),
            }
        })
        .collect()
}

async fn tables(pool: &SqlitePool) -> Vec<Vec<serde_json::Value>> {
    let dumps = [
        "SELECT * FROM status ORDER BY uri",
        "SELECT * FROM account ORDER BY did",
        "SELECT * FROM current_status ORDER BY author_did",
        "SELECT status, count FROM status_count ORDER BY status",
    ];
    let statements: Vec<sql::Statement> = dumps
        .iter()
        .map(|sql| sql::Statement {
            sql: (*sql).into(),
            params: Vec::new(),
        })
        .collect();
    batch_json(pool, &statements).await
}

/// Wherever the stream is cut into batches, the tables end the same: the listener's batches
/// (cut by size and time) and a test's oracle (one batch) can be compared row for row.
#[tokio::test]
async fn any_batching_gives_the_same_tables() {
    for seed in [1_u64, 0x5eed, 0xdead_beef, 7, 42, 0xabc, 2024, 0x1234_5678] {
        let frames = random_stream(seed, 400);
        let whole = database().await;
        ingest(&whole, &frames).await;
        let expected = tables(&whole).await;
        assert!(expected[0].len() > 5, "the stream writes statuses");
        assert!(!expected[1].is_empty(), "the stream records some accounts");
        for size in [1, 2, 7, 64] {
            let pool = database().await;
            for chunk in frames.chunks(size) {
                ingest(&pool, chunk).await;
            }
            assert_eq!(
                tables(&pool).await,
                expected,
                "seed {seed}, batches of {size}"
            );
        }
    }
}

/// The baseline `cargo xtask bench listener` compares with (a statement a row) writes the same
/// tables and tells pages the same things as the shipped plan, from more statements.
#[tokio::test]
async fn one_row_per_statement_is_the_same_plan_spelled_longer() {
    for seed in [3_u64, 0xfeed] {
        let frames = random_stream(seed, 400);
        let shipped = database().await;
        let (plan, messages) = ingest(&shipped, &frames).await;

        let baseline = database().await;
        let one =
            Batch::plan(frames.iter().map(String::as_str), common::NOW_US).one_row_per_statement();
        assert!(
            one.statements.len() > plan.statements.len(),
            "{} statements a row, {} shipped",
            one.statements.len(),
            plan.statements.len()
        );
        assert_eq!(one.parts.len(), one.statements.len());
        let results = batch_json(&baseline, &one.statements).await;
        assert_eq!(one.messages(&results).expect("rows read back"), messages);
        assert_eq!(
            tables(&baseline).await,
            tables(&shipped).await,
            "seed {seed}"
        );
    }
}

#[test]
fn a_statement_of_one_row_or_of_no_rows_is_left_as_it_is() {
    let single = sql::recent_statuses(5);
    assert_eq!(sql::one_row_each(single.clone()), [single]);
    let counts = sql::counts_changed();
    assert_eq!(sql::one_row_each(counts.clone()), [counts]);
}

/// The baseline splits a JSON-array statement into its rows whatever the strings hold (commas,
/// brackets, quotes and backslashes inside a status or a date), and each row lands as it would have.
#[tokio::test]
async fn a_json_statement_splits_into_its_rows_whatever_the_strings_hold() {
    let did = "did:plc:000000000000000000000009";
    let tricky = ["a,b", "[x]", "say \"hi\", ok", "back\\slash", "]\\\",["];
    let statuses: Vec<Status> = tricky
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let rkey = tid(i as u64);
            Status {
                uri: format!("at://{did}/xyz.statusphere.status/{rkey}"),
                author_did: did.into(),
                rkey: rkey.clone(),
                status: (*text).into(),
                created_at: format!("{text}, then"),
                indexed_at: i as i64,
                rev: rkey,
                cid: None,
                origin: Origin::Network,
                confirmed: true,
            }
        })
        .collect();
    let whole = sql::upsert_statuses(&statuses);
    assert_eq!(whole.len(), 1);
    let split = sql::one_row_each(whole[0].clone());
    assert_eq!(split.len(), tricky.len());
    let pool = database().await;
    let rows = batch_json(&pool, &split).await;
    assert_eq!(
        rows.iter().flatten().count(),
        tricky.len(),
        "each row written"
    );
    // Oldest first (`indexed_at` is the index in `tricky`).
    let mut written: Vec<(String, String)> = batch_json(&pool, &[sql::recent_statuses(10)]).await
        [0]
    .iter()
    .map(|r| {
        (
            r["status"].as_str().unwrap().to_owned(),
            r["created_at"].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    written.reverse();
    let expected: Vec<(String, String)> = tricky
        .iter()
        .map(|t| ((*t).to_owned(), format!("{t}, then")))
        .collect();
    assert_eq!(written, expected);
}
