//! Every query of `domain::sql`, run through sqlx against SQLite with the real `migrations/`
//! applied: the same text D1 runs. Batches run in one transaction, as a D1 batch does.

use std::collections::{BTreeMap, HashMap};

use domain::jetstream::{AccountUpdate, HandleUpdate, Tombstone};
use domain::sql::{self, Statement};
use domain::{Origin, Status};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use crate::common::{batch, database, query};

async fn one(pool: &SqlitePool, statement: Statement) -> Vec<SqliteRow> {
    batch(pool, &[statement]).await
}

async fn count_rows(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(pool).await.unwrap().get(0)
}

const DID_A: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const DID_B: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const DID_C: &str = "did:plc:cccccccccccccccccccccccc";

/// A TID-shaped key that sorts by `n`.
fn tid(n: u32) -> String {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'2'; 13];
    let mut v = n;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 32) as usize];
        v /= 32;
    }
    String::from_utf8(out).unwrap()
}

fn uri(did: &str, rkey: u32) -> String {
    domain::status::at_uri(did, &tid(rkey))
}

fn status(did: &str, rkey: u32, emoji: &str, rev: u32, at: i64, origin: Origin) -> Status {
    Status {
        uri: uri(did, rkey),
        author_did: did.into(),
        rkey: tid(rkey),
        status: emoji.into(),
        created_at: "2026-11-24T00:00:00Z".into(),
        indexed_at: at,
        rev: tid(rev),
        cid: Some(format!("bafy{rev}")),
        origin,
        confirmed: origin == Origin::Network,
    }
}

fn tombstone(did: &str, rkey: u32, rev: u32, at: i64) -> Tombstone {
    Tombstone {
        uri: uri(did, rkey),
        author_did: did.into(),
        rkey: tid(rkey),
        rev: tid(rev),
        indexed_at: at,
    }
}

fn account(did: &str, active: bool, status: Option<&str>, time_us: i64) -> AccountUpdate {
    AccountUpdate {
        did: did.into(),
        active,
        status: status.map(str::to_owned),
        time_us,
    }
}

fn handle(did: &str, handle: Option<&str>, time_us: i64) -> HandleUpdate {
    HandleUpdate {
        did: did.into(),
        handle: handle.map(str::to_owned),
        time_us,
    }
}

async fn upsert(pool: &SqlitePool, statuses: &[Status]) -> Vec<SqliteRow> {
    batch(pool, &sql::upsert_statuses(statuses)).await
}

async fn recent(pool: &SqlitePool, limit: i64) -> Vec<(String, String, Option<String>)> {
    one(pool, sql::recent_statuses(limit))
        .await
        .iter()
        .map(|r| (r.get("author_did"), r.get("status"), r.get("handle")))
        .collect()
}

async fn counts(pool: &SqlitePool) -> Vec<(String, i64)> {
    one(pool, sql::status_counts(&[], 1000))
        .await
        .iter()
        .map(|r| (r.get("status"), r.get("count")))
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
}

async fn current(pool: &SqlitePool, did: &str) -> Option<String> {
    one(pool, sql::current_status(did))
        .await
        .first()
        .map(|r| r.get("status"))
}

async fn handle_of(pool: &SqlitePool, did: &str) -> Option<String> {
    sqlx::query_scalar("SELECT handle FROM account WHERE did = ?1")
        .bind(did)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_create_every_table() {
    let pool = database().await;
    let tables: Vec<String> =
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("name"))
            .collect();
    for table in [
        "account",
        "backfill_repo",
        "browser_session",
        "counts_clock",
        "current_status",
        "health_probe",
        "identity_cache",
        "oauth_session",
        "oauth_state",
        "status",
        "status_count",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing: {tables:?}"
        );
    }
}

#[tokio::test]
async fn the_same_event_twice_changes_nothing() {
    let pool = database().await;
    let s = status(DID_A, 1, "😎", 1, 1000, Origin::Network);
    assert_eq!(upsert(&pool, std::slice::from_ref(&s)).await.len(), 1);
    assert!(
        upsert(&pool, &[s]).await.is_empty(),
        "a replay returned a change"
    );
    // Twice in one batch: one change.
    let t = status(DID_A, 2, "🚀", 2, 2000, Origin::Network);
    assert_eq!(upsert(&pool, &[t.clone(), t]).await.len(), 1);
    assert_eq!(count_rows(&pool, "SELECT COUNT(*) FROM status").await, 2);
}

#[tokio::test]
async fn an_older_event_never_overwrites_a_newer_one() {
    let pool = database().await;
    upsert(&pool, &[status(DID_A, 1, "🚀", 5, 5000, Origin::Network)]).await;
    let older = status(DID_A, 1, "😎", 3, 3000, Origin::Network);
    assert!(upsert(&pool, &[older]).await.is_empty());
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🚀"));
    // A newer update lands and moves the status up the recent list.
    let update = status(DID_A, 1, "🦋", 7, 7000, Origin::Network);
    assert_eq!(upsert(&pool, &[update]).await.len(), 1);
    let row = one(&pool, sql::status_by_uri(&uri(DID_A, 1))).await;
    assert_eq!(row[0].get::<String, _>("status"), "🦋");
    assert_eq!(row[0].get::<i64, _>("indexed_at"), 7000);
}

#[tokio::test]
async fn an_optimistic_status_becomes_confirmed_not_duplicated() {
    let pool = database().await;
    let optimistic = status(DID_A, 1, "😎", 4, 1000, Origin::Edge);
    assert!(!optimistic.confirmed);
    assert_eq!(
        upsert(&pool, std::slice::from_ref(&optimistic)).await.len(),
        1
    );
    // The network echoes it a little later: same uri, same rev, confirmed.
    let echoed = status(DID_A, 1, "😎", 4, 1300, Origin::Network);
    let changed = upsert(&pool, std::slice::from_ref(&echoed)).await;
    assert_eq!(changed.len(), 1, "a confirmation is a change");
    assert_eq!(changed[0].get::<i64, _>("confirmed"), 1);
    assert_eq!(changed[0].get::<String, _>("origin"), "edge");
    assert_eq!(
        changed[0].get::<i64, _>("indexed_at"),
        1000,
        "first sighting kept"
    );
    assert_eq!(recent(&pool, 10).await.len(), 1);
    // Replays of either change nothing more; edge cannot unconfirm.
    assert!(upsert(&pool, &[echoed]).await.is_empty());
    assert!(upsert(&pool, &[optimistic]).await.is_empty());

    // The network may be first: the late optimistic write is then a no-op.
    upsert(&pool, &[status(DID_B, 1, "🚀", 9, 2000, Origin::Network)]).await;
    let late = status(DID_B, 1, "🚀", 9, 2100, Origin::Edge);
    assert!(upsert(&pool, &[late]).await.is_empty());

    // An optimistic row whose revision edge did not learn is confirmed by the network's.
    let mut unknown_rev = status(DID_C, 1, "👀", 1, 3000, Origin::Edge);
    unknown_rev.rev = String::new();
    upsert(&pool, &[unknown_rev]).await;
    let changed = upsert(&pool, &[status(DID_C, 1, "👀", 2, 3500, Origin::Network)]).await;
    assert_eq!(changed[0].get::<i64, _>("confirmed"), 1);
    assert_eq!(changed[0].get::<i64, _>("indexed_at"), 3000);
}

#[tokio::test]
async fn a_delete_is_final_for_replays() {
    let pool = database().await;
    let create = status(DID_A, 1, "😎", 1, 1000, Origin::Network);
    upsert(&pool, std::slice::from_ref(&create)).await;
    let deleted = batch(
        &pool,
        &sql::delete_statuses(&[tombstone(DID_A, 1, 2, 2000)]),
    )
    .await;
    assert_eq!(deleted.len(), 1);
    assert!(recent(&pool, 10).await.is_empty());
    assert_eq!(current(&pool, DID_A).await, None);
    assert!(counts(&pool).await.is_empty());
    // The replayed create (older rev) does not revive it; a replayed delete is a no-op.
    assert!(upsert(&pool, &[create]).await.is_empty());
    let again = batch(
        &pool,
        &sql::delete_statuses(&[tombstone(DID_A, 1, 2, 2000)]),
    )
    .await;
    assert!(again.is_empty());
    assert!(recent(&pool, 10).await.is_empty());
    // A tombstone keeps no content.
    let row = one(&pool, sql::status_by_uri(&uri(DID_A, 1))).await;
    assert_eq!(row[0].get::<String, _>("status"), "");
    assert_eq!(row[0].get::<i64, _>("deleted"), 1);
    // A genuinely newer write to the same key brings it back.
    let newer = status(DID_A, 1, "🚀", 3, 3000, Origin::Network);
    assert_eq!(upsert(&pool, &[newer]).await.len(), 1);
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🚀"));
}

/// What a transaction that began with `mark_counts` changed, read at its end: its counts and only
/// its counts, zeros included, each version above any earlier one (migration 0011).
async fn changed_by(pool: &SqlitePool, statements: Vec<Statement>) -> Vec<(String, i64, i64)> {
    let mut all = vec![sql::mark_counts()];
    all.extend(statements);
    all.push(sql::counts_changed());
    let results = crate::common::batch_json(pool, &all).await;
    results
        .last()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["count"].as_i64().unwrap(),
                r["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_transaction_finds_exactly_the_counts_it_changed() {
    let pool = database().await;
    let first = changed_by(
        &pool,
        sql::upsert_statuses(&[status(DID_A, 1, "🦋", 1, 10, Origin::Network)]),
    )
    .await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].0.as_str(), first[0].1), ("🦋", 1));
    // Another author, another status: only that count.
    let second = changed_by(
        &pool,
        sql::upsert_statuses(&[status(DID_B, 2, "🚀", 2, 20, Origin::Network)]),
    )
    .await;
    assert_eq!(
        second
            .iter()
            .map(|c| (c.0.as_str(), c.1))
            .collect::<Vec<_>>(),
        [("🚀", 1)]
    );
    // A moves from 🦋 to 🚀: both, 🦋 down to zero, at versions above everything before.
    let third = changed_by(
        &pool,
        sql::upsert_statuses(&[status(DID_A, 3, "🚀", 3, 30, Origin::Network)]),
    )
    .await;
    let mut moved: Vec<(&str, i64)> = third.iter().map(|c| (c.0.as_str(), c.1)).collect();
    moved.sort();
    assert_eq!(moved, [("🚀", 2), ("🦋", 0)]);
    let before = first[0].2.max(second[0].2);
    assert!(
        third.iter().all(|c| c.2 > before),
        "{third:?} after {before}"
    );
    // B's account deactivated: its count goes; reactivated: it comes back, newer again.
    let hidden = changed_by(
        &pool,
        sql::set_account_states(&[account(DID_B, false, Some("deactivated"), 40)]),
    )
    .await;
    assert_eq!(
        hidden
            .iter()
            .map(|c| (c.0.as_str(), c.1))
            .collect::<Vec<_>>(),
        [("🚀", 1)]
    );
    let back = changed_by(
        &pool,
        sql::set_account_states(&[account(DID_B, true, None, 50)]),
    )
    .await;
    assert_eq!(
        back.iter().map(|c| (c.0.as_str(), c.1)).collect::<Vec<_>>(),
        [("🚀", 2)]
    );
    assert!(back[0].2 > hidden[0].2);
    // The same event again, or nothing at all: no count changed, none is named.
    let replay = sql::upsert_statuses(&[status(DID_A, 3, "🚀", 3, 30, Origin::Network)]);
    assert!(changed_by(&pool, replay).await.is_empty());
    assert!(changed_by(&pool, Vec::new()).await.is_empty());
    // What the page reads carries the same versions.
    let page = one(&pool, sql::status_counts(&["🦋"], 5)).await;
    let read: Vec<(String, i64)> = page
        .iter()
        .map(|r| (r.get("status"), r.get("version")))
        .collect();
    assert_eq!(read, [("🚀".to_owned(), back[0].2)]);
}

/// Every visible status, page by page through `statuses_page` with `Before` cursors.
async fn all_pages(pool: &SqlitePool, author: Option<&str>, size: i64) -> Vec<String> {
    let mut seen = Vec::new();
    let mut before: Option<sql::Before> = None;
    loop {
        let rows = one(pool, sql::statuses_page(author, before.as_ref(), size)).await;
        for row in &rows {
            seen.push(row.get::<String, _>("uri"));
        }
        let Some(last) = rows.last() else { break };
        before = Some(sql::Before {
            indexed_at: last.get("indexed_at"),
            uri: last.get("uri"),
        });
    }
    seen
}

#[tokio::test]
async fn pages_of_statuses_follow_a_stable_cursor() {
    let pool = database().await;
    // A's five statuses (two seen in the same millisecond), B's three; one of A's deleted.
    let mut rows = Vec::new();
    for (i, at) in [10, 20, 20, 30, 40].into_iter().enumerate() {
        rows.push(status(
            DID_A,
            i as u32 + 1,
            "🦋",
            i as u32 + 1,
            at,
            Origin::Network,
        ));
    }
    for (i, at) in [15, 25, 35].into_iter().enumerate() {
        rows.push(status(
            DID_B,
            i as u32 + 10,
            "🚀",
            i as u32 + 10,
            at,
            Origin::Network,
        ));
    }
    upsert(&pool, &rows).await;
    batch(&pool, &sql::delete_statuses(&[tombstone(DID_A, 4, 50, 41)])).await;
    let everyone = all_pages(&pool, None, 1_000).await;
    assert_eq!(everyone.len(), 7);
    for size in [1, 2, 3] {
        assert_eq!(
            all_pages(&pool, None, size).await,
            everyone,
            "pages of {size}"
        );
    }
    let a_only = all_pages(&pool, Some(DID_A), 2).await;
    assert_eq!(a_only.len(), 4);
    assert!(a_only.iter().all(|u| u.contains(DID_A)), "{a_only:?}");
    assert_eq!(
        a_only,
        everyone
            .iter()
            .filter(|u| u.contains(DID_A))
            .cloned()
            .collect::<Vec<_>>()
    );

    // A status arriving after the first page does not shift the second.
    let first = one(&pool, sql::statuses_page(None, None, 3)).await;
    let last = first.last().unwrap();
    let before = sql::Before {
        indexed_at: last.get("indexed_at"),
        uri: last.get("uri"),
    };
    let second = one(&pool, sql::statuses_page(None, Some(&before), 3)).await;
    upsert(&pool, &[status(DID_B, 20, "🌈", 20, 99, Origin::Network)]).await;
    let again = one(&pool, sql::statuses_page(None, Some(&before), 3)).await;
    let uris = |rows: &[SqliteRow]| {
        rows.iter()
            .map(|r| r.get::<String, _>("uri"))
            .collect::<Vec<_>>()
    };
    assert_eq!(uris(&second), uris(&again));

    // An inactive author's statuses leave the pages.
    batch(
        &pool,
        &sql::set_account_states(&[account(DID_B, false, Some("deactivated"), 60)]),
    )
    .await;
    assert!(all_pages(&pool, Some(DID_B), 2).await.is_empty());
}

#[tokio::test]
async fn a_handle_finds_its_account() {
    let pool = database().await;
    upsert(&pool, &[status(DID_A, 1, "🦋", 1, 10, Origin::Network)]).await;
    upsert(&pool, &[status(DID_B, 2, "🚀", 2, 20, Origin::Network)]).await;
    batch(
        &pool,
        &sql::set_handles(&[handle(DID_A, Some("same.test"), 10)]),
    )
    .await;
    // B claimed the handle later: B holds it (A's row is stale until A's next identity event).
    batch(
        &pool,
        &sql::set_handles(&[handle(DID_B, Some("same.test"), 20)]),
    )
    .await;
    let found = one(&pool, sql::account_by_handle("same.test")).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<String, _>("did"), DID_B);
    assert!(one(&pool, sql::account_by_handle("nobody.test"))
        .await
        .is_empty());
    let named = one(&pool, sql::account_by_did(DID_A)).await;
    assert_eq!(
        named[0].get::<Option<String>, _>("handle").as_deref(),
        Some("same.test")
    );
}

#[tokio::test]
async fn a_repository_read_changes_only_what_the_app_does_not_know() {
    let pool = database().await;
    // Known from the network: 1 (shown), 2 (deleted there since).
    upsert(&pool, &[status(DID_A, 1, "🦋", 1, 10, Origin::Network)]).await;
    upsert(&pool, &[status(DID_A, 2, "🚀", 2, 20, Origin::Network)]).await;
    batch(&pool, &sql::delete_statuses(&[tombstone(DID_A, 2, 3, 30)])).await;
    // The repository at revision 9: 1 unchanged, 3 new, and 4 that the app never saw.
    let read = |rkey: u32, emoji: &str, cid: &str| {
        let mut s = status(DID_A, rkey, emoji, 9, 5, Origin::Network);
        s.cid = Some(cid.into());
        s
    };
    // Written at revision 1, so its CID is `bafy1` (see `status`).
    let known = read(1, "🦋", "bafy1");
    let written = batch(
        &pool,
        &sql::import_statuses(&[known, read(3, "🌈", "c3"), read(4, "🧠", "c4")]),
    )
    .await;
    let uris: Vec<String> = written.iter().map(|r| r.get("uri")).collect();
    assert_eq!(
        uris,
        [uri(DID_A, 3), uri(DID_A, 4)],
        "the known record is left alone"
    );
    // A replayed Jetstream event older than the read changes nothing; a newer one wins.
    assert!(
        upsert(&pool, &[status(DID_A, 3, "💀", 8, 40, Origin::Network)])
            .await
            .is_empty()
    );
    assert_eq!(
        upsert(&pool, &[status(DID_A, 3, "🎉", 10, 50, Origin::Network)])
            .await
            .len(),
        1
    );
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🎉"));
}

#[tokio::test]
async fn a_quiet_cron_skips_its_claims_until_a_status_is_newer_or_ten_minutes_pass() {
    let pool = database().await;
    let newest = |pool: &SqlitePool| {
        let pool = pool.clone();
        async move {
            let rows = one(&pool, sql::newest_status()).await;
            rows[0].get::<Option<i64>, _>("newest")
        }
    };
    assert_eq!(newest(&pool).await, None, "no status yet");
    upsert(&pool, &[status(DID_A, 1, "🦋", 1, 10, Origin::Network)]).await;
    let seen = newest(&pool).await;
    assert!(seen.is_some());
    let quiet = sql::Quiet {
        newest: seen,
        at_ms: 1_000,
    };
    let skip = sql::QUIET_SKIP_MS;
    assert!(
        quiet.holds(seen, 61_000, skip),
        "nothing newer, a minute on"
    );
    assert!(!quiet.holds(seen, 1_000 + skip, skip), "ten minutes on");
    assert!(!quiet.holds(seen, 500, skip), "a clock that went back");
    assert!(!quiet.holds(seen, 1_000, 0), "no quiet stretch at all");
    upsert(&pool, &[status(DID_B, 2, "🚀", 2, 20, Origin::Network)]).await;
    let newer = newest(&pool).await;
    assert!(!quiet.holds(newer, 2_000, skip), "a newer status");
}

#[tokio::test]
async fn display_names_are_claimed_once_a_day_and_shown_with_statuses() {
    let pool = database().await;
    upsert(&pool, &[status(DID_A, 1, "🦋", 1, 10, Origin::Network)]).await;
    upsert(&pool, &[status(DID_B, 2, "🚀", 2, 20, Origin::Network)]).await;
    let day = sql::PROFILE_RECHECK_MS;
    let claim = |now: i64, limit: i64| one(&pool, sql::claim_profile_checks(now, limit));
    let first: Vec<String> = claim(1_000, 10)
        .await
        .iter()
        .map(|r| r.get("did"))
        .collect();
    assert_eq!(first.len(), 2, "both authors, never read");
    assert!(
        claim(2_000, 10).await.is_empty(),
        "claimed: not again within a day"
    );
    assert_eq!(
        claim(1_000 + day + 1, 1).await.len(),
        1,
        "a day later, as many as asked"
    );

    let changed = one(
        &pool,
        sql::set_display_name(DID_A, Some("Alice <b>"), 5_000),
    )
    .await;
    assert_eq!(changed.len(), 1, "a new name is published");
    assert!(one(
        &pool,
        sql::set_display_name(DID_A, Some("Alice <b>"), 6_000)
    )
    .await
    .is_empty());
    let shown = one(&pool, sql::recent_statuses(10)).await;
    let names: Vec<(String, Option<String>)> = shown
        .iter()
        .map(|r| (r.get("author_did"), r.get("display_name")))
        .collect();
    assert!(
        names.contains(&(DID_A.to_owned(), Some("Alice <b>".to_owned()))),
        "{names:?}"
    );
    assert!(names.contains(&(DID_B.to_owned(), None)), "{names:?}");
    // The listener's authors lookup has it too (B has no account row, only a profile row).
    let authors = one(&pool, sql::accounts_of(&[DID_A, DID_B]).remove(0)).await;
    assert_eq!(authors.len(), 2);
}

#[tokio::test]
async fn counts_are_a_bounded_read_exact_for_the_picker() {
    let pool = database().await;
    // Forty accounts, each showing a status of its own, and one showing a picker emoji.
    let mut statuses: Vec<Status> = (0..40u32)
        .map(|n| {
            let did = format!("did:plc:{n:0>24}");
            let text = char::from_u32(0x2460 + n).unwrap().to_string(); // ①, ②, …
            status(&did, 1, &text, 1, 1000 + i64::from(n), Origin::Network)
        })
        .collect();
    statuses.push(status(DID_A, 1, "🦋", 1, 5000, Origin::Network));
    upsert(&pool, &statuses).await;
    let rows = one(&pool, sql::status_counts(&["🦋", "🚀"], 5)).await;
    let got: Vec<String> = rows.iter().map(|r| r.get("status")).collect();
    assert_eq!(
        got.len(),
        6,
        "the picker's one status and five others: {got:?}"
    );
    assert!(
        got.contains(&"🦋".to_owned()),
        "a picker status is never cut: {got:?}"
    );
}

#[tokio::test]
async fn a_row_never_changes_author() {
    let pool = database().await;
    upsert(&pool, &[status(DID_A, 1, "🦋", 2, 2000, Origin::Network)]).await;
    // Another account's write to A's URI, with a huge revision: nothing changes, nothing returns.
    let mut forged = status(DID_B, 1, "💀", 999_999, 9000, Origin::Edge);
    forged.uri = uri(DID_A, 1);
    assert!(upsert(&pool, std::slice::from_ref(&forged))
        .await
        .is_empty());
    let tombstone = Tombstone {
        author_did: DID_B.into(),
        ..tombstone(DID_A, 1, 999_999, 9000)
    };
    assert!(batch(&pool, &sql::delete_statuses(&[tombstone]))
        .await
        .is_empty());
    assert_eq!(
        recent(&pool, 10).await,
        vec![(DID_A.into(), "🦋".into(), None)]
    );
    // A's own later write still lands.
    assert_eq!(
        upsert(&pool, &[status(DID_A, 1, "🚀", 3, 3000, Origin::Network)])
            .await
            .len(),
        1
    );
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🚀"));
    assert_eq!(current(&pool, DID_B).await, None);
}

#[tokio::test]
async fn rows_whose_uri_names_another_author_are_skipped() {
    let pool = database().await;
    // A row claiming A's URI for B (or another collection, or another key) is never inserted,
    // and the rows beside it in the same statement still are.
    let mut for_b = status(DID_B, 1, "💀", 9, 9000, Origin::Edge);
    for_b.uri = uri(DID_A, 1);
    let mut post = status(DID_B, 2, "💀", 9, 9000, Origin::Edge);
    post.uri = format!("at://{DID_B}/app.bsky.feed.post/{}", tid(2));
    let mut other_key = status(DID_B, 3, "💀", 9, 9000, Origin::Edge);
    other_key.rkey = tid(4);
    let honest = status(DID_C, 1, "🦋", 1, 1000, Origin::Network);
    let written = upsert(&pool, &[for_b, post, other_key, honest.clone()]).await;
    assert_eq!(written.len(), 1);
    assert_eq!(
        recent(&pool, 10).await,
        vec![(DID_C.into(), "🦋".into(), None)]
    );
    // … so that A's real status, arriving later, is A's.
    upsert(&pool, &[status(DID_A, 1, "🚀", 2, 2000, Origin::Network)]).await;
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🚀"));
    assert_eq!(current(&pool, DID_B).await, None);
    let mut forged_tombstone = tombstone(DID_A, 5, 9, 9000);
    forged_tombstone.author_did = DID_B.into();
    assert!(batch(&pool, &sql::delete_statuses(&[forged_tombstone]))
        .await
        .is_empty());
    assert_eq!(count_rows(&pool, "SELECT COUNT(*) FROM status").await, 2);
}

#[tokio::test]
async fn a_delete_before_its_create_still_wins() {
    let pool = database().await;
    // The delete of a status never seen (created before our cursor) leaves a tombstone …
    let deleted = batch(
        &pool,
        &sql::delete_statuses(&[tombstone(DID_A, 1, 5, 5000)]),
    )
    .await;
    assert_eq!(deleted.len(), 1, "the tombstone is written");
    // … so that its create, replayed later, stays deleted.
    let create = status(DID_A, 1, "😎", 4, 4000, Origin::Network);
    assert!(upsert(&pool, &[create]).await.is_empty());
    assert!(recent(&pool, 10).await.is_empty());
    assert!(counts(&pool).await.is_empty());
}

#[tokio::test]
async fn recent_statuses_are_newest_first_with_handles_and_limited() {
    let pool = database().await;
    let statuses: Vec<Status> = (0..30u32)
        .map(|i| {
            let did = [DID_A, DID_B, DID_C][i as usize % 3];
            let emoji = domain::present::EMOJI[i as usize % 5];
            status(did, i, emoji, i, 1000 + i64::from(i), Origin::Network)
        })
        .collect();
    upsert(&pool, &statuses).await;
    batch(
        &pool,
        &sql::set_handles(&[handle(DID_B, Some("bob.test"), 1)]),
    )
    .await;
    let rows = recent(&pool, 10).await;
    assert_eq!(rows.len(), 10);
    let times: Vec<i64> = one(&pool, sql::recent_statuses(30))
        .await
        .iter()
        .map(|r| r.get("indexed_at"))
        .collect();
    assert_eq!(times.len(), 30);
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {times:?}"
    );
    assert_eq!(rows[0].0, DID_C, "status 29 is the newest");
    for (did, _, handle) in &rows {
        assert_eq!(handle.as_deref(), (did == DID_B).then_some("bob.test"));
    }
    // Rows decode into the view the pages use.
    let first = &one(&pool, sql::recent_statuses(1)).await[0];
    let view = sql::StatusViewRow {
        uri: first.get("uri"),
        author_did: first.get("author_did"),
        handle: first.get("handle"),
        display_name: None,
        rkey: first.get("rkey"),
        status: first.get("status"),
        created_at: first.get("created_at"),
        indexed_at: first.get("indexed_at"),
        origin: first.get("origin"),
        confirmed: first.get("confirmed"),
    }
    .into_view();
    assert!(view.confirmed);
    assert_eq!(view.origin, Origin::Network);
    assert_eq!(view.author_label(), DID_C);
}

#[tokio::test]
async fn inactive_accounts_are_hidden_and_come_back() {
    let pool = database().await;
    upsert(
        &pool,
        &[
            status(DID_A, 1, "😎", 1, 1000, Origin::Network),
            status(DID_B, 1, "😎", 1, 1100, Origin::Network),
        ],
    )
    .await;
    assert_eq!(counts(&pool).await, pairs(&[("😎", 2)]));
    let deactivate = account(DID_A, false, Some("deactivated"), 10);
    let changed = batch(
        &pool,
        &sql::set_account_states(std::slice::from_ref(&deactivate)),
    )
    .await;
    assert_eq!(changed.len(), 1);
    assert_eq!(recent(&pool, 10).await.len(), 1);
    assert_eq!(counts(&pool).await, pairs(&[("😎", 1)]));
    // Replayed: no change, no double decrement.
    assert!(batch(&pool, &sql::set_account_states(&[deactivate]))
        .await
        .is_empty());
    assert_eq!(counts(&pool).await, pairs(&[("😎", 1)]));
    // An older "active" event does not undo the newer deactivation.
    let stale = account(DID_A, true, None, 5);
    assert!(batch(&pool, &sql::set_account_states(&[stale]))
        .await
        .is_empty());
    assert_eq!(recent(&pool, 10).await.len(), 1);
    // A status written while inactive stays hidden and uncounted.
    upsert(&pool, &[status(DID_A, 2, "🚀", 2, 2000, Origin::Network)]).await;
    assert_eq!(counts(&pool).await, pairs(&[("😎", 1)]));
    // Reactivated: shown and counted again, with the newest status.
    let back = account(DID_A, true, None, 20);
    assert_eq!(
        batch(&pool, &sql::set_account_states(&[back])).await.len(),
        1
    );
    assert_eq!(recent(&pool, 10).await.len(), 3);
    // Equal counts are ordered by the status's bytes.
    assert_eq!(counts(&pool).await, pairs(&[("😎", 1), ("🚀", 1)]));
    // An account first seen taken down hides what it already had.
    let takedown = account(DID_B, false, Some("takendown"), 30);
    batch(&pool, &sql::set_account_states(&[takedown])).await;
    assert_eq!(counts(&pool).await, pairs(&[("🚀", 1)]));
    assert_eq!(recent(&pool, 10).await.len(), 2);
}

#[tokio::test]
async fn deleted_accounts_are_purged() {
    let pool = database().await;
    upsert(
        &pool,
        &[
            status(DID_A, 1, "😎", 1, 1000, Origin::Network),
            status(DID_A, 2, "🚀", 2, 2000, Origin::Network),
            status(DID_B, 1, "👀", 1, 1500, Origin::Network),
        ],
    )
    .await;
    let deleted = account(DID_A, false, Some("deleted"), 3_000_000);
    assert!(deleted.purges());
    let mut statements = sql::set_account_states(&[deleted]);
    statements.extend(sql::purge_statuses(&[(DID_A, 3_000_000)]));
    batch(&pool, &statements).await;
    let left = sqlx::query("SELECT COUNT(*) FROM status WHERE author_did = ? AND status <> ''")
        .bind(DID_A)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(left, 0, "a deleted account's content is gone");
    assert_eq!(recent(&pool, 10).await.len(), 1);
    assert_eq!(counts(&pool).await, pairs(&[("👀", 1)]));
    let replay = status(DID_A, 2, "🚀", 2, 2000, Origin::Network);
    assert!(
        upsert(&pool, &[replay]).await.is_empty(),
        "a replay stays purged"
    );

    // The account comes back and writes; the deletion read again (after a crash) purges only
    // what it purged the first time.
    let back = account(DID_A, true, None, 4_000_000);
    batch(&pool, &sql::set_account_states(&[back])).await;
    let later = status(DID_A, 5, "🌱", 5, 5000, Origin::Network);
    assert_eq!(upsert(&pool, &[later]).await.len(), 1);
    let again = account(DID_A, false, Some("deleted"), 3_000_000);
    let mut statements = sql::set_account_states(&[again]);
    statements.extend(sql::purge_statuses(&[(DID_A, 3_000_000)]));
    batch(&pool, &statements).await;
    let shown: Vec<String> = recent(&pool, 10)
        .await
        .into_iter()
        .map(|(_, status, _)| status)
        .collect();
    assert_eq!(shown, ["🌱", "👀"], "what came after the deletion stays");
}

#[tokio::test]
async fn handles_follow_the_newest_identity_event() {
    let pool = database().await;
    let set = |h, t| sql::set_handles(&[handle(DID_A, h, t)]);
    // A stranger's identity event writes nothing (nor does its account event).
    assert!(batch(&pool, &set(Some("alice.test"), 1)).await.is_empty());
    let hidden = account(DID_A, false, Some("deactivated"), 1);
    assert!(batch(&pool, &sql::set_account_states(&[hidden]))
        .await
        .is_empty());
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM account")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "strangers are not recorded");
    // Once the app shows a status of theirs, they are known.
    upsert(&pool, &[status(DID_A, 1, "😎", 1, 1000, Origin::Network)]).await;
    assert_eq!(batch(&pool, &set(Some("alice.test"), 10)).await.len(), 1);
    assert!(
        batch(&pool, &set(Some("alice.test"), 10)).await.is_empty(),
        "no change"
    );
    assert!(
        batch(&pool, &set(Some("old.test"), 5)).await.is_empty(),
        "older ignored"
    );
    assert_eq!(batch(&pool, &set(Some("alice2.test"), 20)).await.len(), 1);
    assert_eq!(
        handle_of(&pool, DID_A).await.as_deref(),
        Some("alice2.test")
    );
    // A later identity event without a valid handle clears it: the DID is shown.
    assert_eq!(batch(&pool, &set(None, 30)).await.len(), 1);
    assert_eq!(handle_of(&pool, DID_A).await, None);
    // Handles learned at sign-in count as of their time.
    one(&pool, sql::learn_handle(DID_A, "alice3.test", 40)).await;
    assert_eq!(
        handle_of(&pool, DID_A).await.as_deref(),
        Some("alice3.test")
    );
    // A handle does not touch the account's state.
    let active: i64 = sqlx::query("SELECT active FROM account WHERE did = ?")
        .bind(DID_A)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 1);
}

/// A small deterministic generator for the oracle test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random interleavings of creates, updates, replays, deletes, account changes and optimistic
/// writes: the derived tables always equal a full recomputation.
#[tokio::test]
async fn derived_counts_match_a_full_recomputation() {
    let pool = database().await;
    let dids: Vec<String> = (0..6).map(|i| format!("did:plc:oracle{i:019}")).collect();
    let emoji = &domain::present::EMOJI[..6];
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut history: Vec<Status> = Vec::new();
    for step in 0..400u32 {
        let rev = step + 1;
        let did = dids[rng.below(dids.len())].as_str();
        // Times mostly grow, but some writes come older than their author's current status
        // (a late event, a backfilled record): it must stay current.
        let at = i64::from(rev) * 10 - 25 * rng.below(3) as i64;
        let key = rng.below(8) as u32;
        let statements = match rng.below(10) {
            0..=4 => {
                let s = status(did, key, emoji[rng.below(6)], rev, at, Origin::Network);
                history.push(s.clone());
                sql::upsert_statuses(&[s])
            }
            5 if !history.is_empty() => {
                let old = history[rng.below(history.len())].clone();
                sql::upsert_statuses(&[old])
            }
            6 => sql::delete_statuses(&[tombstone(did, key, rev, at)]),
            7 => {
                let active = rng.below(3) > 0;
                let why = (!active).then_some("deactivated");
                sql::set_account_states(&[account(did, active, why, at)])
            }
            8 => sql::upsert_statuses(&[status(did, key, "👍", rev, at, Origin::Edge)]),
            _ => {
                // An optimistic write, confirmed by the network in the same batch.
                let key = 100 + key;
                let mut both =
                    sql::upsert_statuses(&[status(did, key, "🧠", rev, at, Origin::Edge)]);
                let echo = status(did, key, "🧠", rev, at + 3, Origin::Network);
                both.extend(sql::upsert_statuses(&[echo]));
                both
            }
        };
        batch(&pool, &statements).await;
        if step % 25 == 0 || step == 399 {
            assert_eq!(
                counts(&pool).await,
                oracle(&pool).await,
                "after step {step}"
            );
            assert_eq!(
                currents(&pool).await,
                newest(&pool).await,
                "after step {step}"
            );
        }
    }
    assert!(!counts(&pool).await.is_empty());
}

/// `current_status`, whole: `(author, uri, status)`.
async fn currents(pool: &SqlitePool) -> Vec<(String, String, String)> {
    author_uri_status(
        pool,
        "SELECT author_did, uri, status FROM current_status ORDER BY author_did",
    )
    .await
}

/// Each author's newest visible status (greatest `indexed_at`, then `uri`), recomputed from
/// scratch, as [`currents`] lists them: what the triggers keep in `current_status`.
async fn newest(pool: &SqlitePool) -> Vec<(String, String, String)> {
    author_uri_status(
        pool,
        "SELECT author_did, uri, status FROM status AS s WHERE deleted = 0 AND NOT EXISTS \
         (SELECT 1 FROM status AS t WHERE t.author_did = s.author_did AND t.deleted = 0 \
          AND (t.indexed_at > s.indexed_at OR (t.indexed_at = s.indexed_at AND t.uri > s.uri))) \
         ORDER BY author_did",
    )
    .await
}

async fn author_uri_status(pool: &SqlitePool, query: &str) -> Vec<(String, String, String)> {
    let rows = sqlx::query(query).fetch_all(pool).await.unwrap();
    rows.iter()
        .map(|r| (r.get("author_did"), r.get("uri"), r.get("status")))
        .collect()
}

/// Counts recomputed from scratch: each active author's newest non-deleted status.
async fn oracle(pool: &SqlitePool) -> Vec<(String, i64)> {
    let rows = sqlx::query(
        "SELECT s.author_did, s.status, s.indexed_at, s.uri FROM status s \
         LEFT JOIN account a ON a.did = s.author_did \
         WHERE s.deleted = 0 AND (a.active IS NULL OR a.active = 1)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut newest: HashMap<String, (i64, String, String)> = HashMap::new();
    for row in rows {
        let key: (i64, String, String) = (row.get("indexed_at"), row.get("uri"), row.get("status"));
        let entry = newest
            .entry(row.get("author_did"))
            .or_insert_with(|| key.clone());
        if (key.0, &key.1) > (entry.0, &entry.1) {
            *entry = key;
        }
    }
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for (_, _, status) in newest.into_values() {
        *by_status.entry(status).or_default() += 1;
    }
    let mut counts: Vec<(String, i64)> = by_status.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

#[tokio::test]
async fn batches_respect_d1_limits_and_lose_nothing() {
    let pool = database().await;
    // 1,000 ordinary statuses: one JSON array a statement, as many rows as D1's bytes allow (a
    // row is about 250 bytes; 10 rows a statement when each value was bound on its own).
    let many: Vec<Status> = (0..1000u32)
        .map(|i| {
            let did = format!("did:plc:batch{i:019}");
            status(&did, i, "🚀", i, i64::from(i), Origin::Network)
        })
        .collect();
    let statements = sql::upsert_statuses(&many);
    assert!(
        (3..=5).contains(&statements.len()),
        "{} statements",
        statements.len()
    );
    assert!(statements
        .iter()
        .all(|s| s.params.len() == 1 && s.size() <= sql::D1_MAX_STATEMENT_BYTES));
    // A statement a row (the bench's baseline) splits the arrays into the same 1,000 rows.
    let one_each: Vec<Statement> = statements
        .iter()
        .cloned()
        .flat_map(sql::one_row_each)
        .collect();
    assert_eq!(one_each.len(), 1000);
    assert_eq!(batch(&pool, &statements).await.len(), 1000);
    assert_eq!(counts(&pool).await, pairs(&[("🚀", 1000)]));

    // Identifiers far longer than atproto allows (the parser refuses them; this checks the
    // splitter alone) make the byte limit bind before the parameter limit.
    let host = "a".repeat(19_990);
    let wide: Vec<Status> = (0..40u32)
        .map(|i| {
            status(
                &format!("did:web:{host}{i:02}"),
                i,
                "👀",
                i,
                1,
                Origin::Network,
            )
        })
        .collect();
    let statements = sql::upsert_statuses(&wide);
    assert!(
        statements.len() >= 20,
        "split by size: {}",
        statements.len()
    );
    assert!(statements
        .iter()
        .all(|s| s.size() <= sql::D1_MAX_STATEMENT_BYTES));
    assert_eq!(batch(&pool, &statements).await.len(), 40);

    // Deletes, handles and account states batch the same way (for accounts the app knows: ones
    // with a status to show, or signed in).
    let known: Vec<Statement> = (0..301)
        .map(|i| sql::learn_handle(&format!("did:plc:batch{i:019}"), "old.test", 0))
        .collect();
    batch(&pool, &known).await;
    let tombstones: Vec<Tombstone> = (0..250u32)
        .map(|i| tombstone(&format!("did:plc:batch{i:019}"), i, 5000 + i, 9))
        .collect();
    let statements = sql::delete_statuses(&tombstones);
    assert!(statements
        .iter()
        .all(|s| s.params.len() <= sql::D1_MAX_PARAMS));
    assert_eq!(batch(&pool, &statements).await.len(), 250);
    let handles: Vec<HandleUpdate> = (0..301)
        .map(|i| {
            let did = format!("did:plc:batch{i:019}");
            handle(&did, Some(&format!("user{i}.test")), 1)
        })
        .collect();
    let statements = sql::set_handles(&handles);
    assert_eq!(statements.len(), 10, "33 rows of 3 values a statement");
    assert_eq!(batch(&pool, &statements).await.len(), 301);
    let states: Vec<AccountUpdate> = (0..100)
        .map(|i| {
            account(
                &format!("did:plc:batch{i:019}"),
                false,
                Some("suspended"),
                1,
            )
        })
        .collect();
    assert_eq!(
        batch(&pool, &sql::set_account_states(&states)).await.len(),
        100
    );
    assert!(sql::upsert_statuses(&[]).is_empty());
}

#[tokio::test]
async fn oauth_state_is_single_use_and_expires() {
    let pool = database().await;
    one(
        &pool,
        sql::insert_oauth_state("s1", r#"{"verifier":"v"}"#, "browser-hash", 2000),
    )
    .await;
    one(&pool, sql::insert_oauth_state("s2", "{}", "h", 2000)).await;
    let taken = one(&pool, sql::take_oauth_state("s1", 1000)).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].get::<String, _>("data"), r#"{"verifier":"v"}"#);
    assert_eq!(taken[0].get::<i64, _>("fresh"), 1);
    assert_eq!(taken[0].get::<String, _>("browser"), "browser-hash");
    assert!(
        one(&pool, sql::take_oauth_state("s1", 1000))
            .await
            .is_empty(),
        "taken twice"
    );
    let late = one(&pool, sql::take_oauth_state("s2", 3000)).await;
    assert_eq!(
        late[0].get::<i64, _>("fresh"),
        0,
        "expired: refused, and removed"
    );
    assert!(one(&pool, sql::take_oauth_state("nope", 0))
        .await
        .is_empty());
    // A state cannot be stored twice.
    one(&pool, sql::insert_oauth_state("s3", "{}", "h", 2000)).await;
    let duplicate = sql::insert_oauth_state("s3", "{}", "h", 2000);
    assert!(query(&duplicate).execute(&pool).await.is_err());
    batch(&pool, &sql::purge_expired(5000)).await;
    assert_eq!(
        count_rows(&pool, "SELECT COUNT(*) FROM oauth_state").await,
        0
    );
}

#[tokio::test]
async fn oauth_sessions_refresh_under_a_lease() {
    let pool = database().await;
    let data = |rows: Vec<SqliteRow>| rows[0].get::<String, _>("data");
    one(&pool, sql::put_oauth_session(DID_A, "tokens-1", 100)).await;
    assert_eq!(
        data(one(&pool, sql::get_oauth_session(DID_A)).await),
        "tokens-1"
    );
    // Worker 1 takes the lease; worker 2 cannot while it lasts.
    assert_eq!(
        one(&pool, sql::lock_oauth_session(DID_A, "w1", 1000, 31_000))
            .await
            .len(),
        1
    );
    assert!(
        one(&pool, sql::lock_oauth_session(DID_A, "w2", 2000, 32_000))
            .await
            .is_empty()
    );
    // Only the holder may store; then the lease is free.
    let stolen = sql::store_refreshed_session(DID_A, "w2", "stolen", 3000);
    assert!(one(&pool, stolen).await.is_empty());
    let stored = sql::store_refreshed_session(DID_A, "w1", "tokens-2", 3000);
    assert_eq!(one(&pool, stored).await.len(), 1);
    assert_eq!(
        data(one(&pool, sql::get_oauth_session(DID_A)).await),
        "tokens-2"
    );
    assert_eq!(
        one(&pool, sql::lock_oauth_session(DID_A, "w2", 4000, 34_000))
            .await
            .len(),
        1
    );
    // A lease that ran out (its holder died) can be taken over; the old holder cannot store.
    assert_eq!(
        one(&pool, sql::lock_oauth_session(DID_A, "w3", 40_000, 70_000))
            .await
            .len(),
        1
    );
    let late = sql::store_refreshed_session(DID_A, "w2", "late", 41_000);
    assert!(one(&pool, late).await.is_empty());
    one(&pool, sql::unlock_oauth_session(DID_A, "w3")).await;
    assert_eq!(
        one(&pool, sql::lock_oauth_session(DID_A, "w4", 41_000, 71_000))
            .await
            .len(),
        1
    );
    // Signing in again replaces the session and drops the lease.
    one(&pool, sql::put_oauth_session(DID_A, "tokens-3", 50_000)).await;
    assert_eq!(
        one(&pool, sql::lock_oauth_session(DID_A, "w5", 50_001, 80_000))
            .await
            .len(),
        1
    );
    // The nonce lives beside the (sealed) data and never touches it; a new session forgets it.
    one(&pool, sql::put_oauth_session(DID_A, "v1.k.sealed", 1)).await;
    one(&pool, sql::set_pds_nonce(DID_A, "n2")).await;
    let row = &one(&pool, sql::get_oauth_session(DID_A)).await[0];
    assert_eq!(row.get::<String, _>("data"), "v1.k.sealed");
    assert_eq!(
        row.get::<Option<String>, _>("pds_nonce").as_deref(),
        Some("n2")
    );
    let locked = one(&pool, sql::lock_oauth_session(DID_A, "w6", 90_000, 99_000)).await;
    assert_eq!(
        locked[0].get::<Option<String>, _>("pds_nonce").as_deref(),
        Some("n2")
    );
    one(&pool, sql::put_oauth_session(DID_A, "v1.k.again", 2)).await;
    let row = &one(&pool, sql::get_oauth_session(DID_A)).await[0];
    assert_eq!(row.get::<Option<String>, _>("pds_nonce"), None);
    one(&pool, sql::delete_oauth_session(DID_A)).await;
    assert!(one(&pool, sql::get_oauth_session(DID_A)).await.is_empty());
}

#[tokio::test]
async fn browser_sessions_expire_and_sign_out() {
    let pool = database().await;
    one(&pool, sql::learn_handle(DID_A, "alice.test", 1)).await;
    one(
        &pool,
        sql::insert_browser_session("h1", DID_A, Some("Alice"), 0, 1000),
    )
    .await;
    one(
        &pool,
        sql::insert_browser_session("h2", DID_A, None, 0, 1000),
    )
    .await;
    one(
        &pool,
        sql::insert_browser_session("h3", DID_B, None, 0, 1000),
    )
    .await;
    let live = one(&pool, sql::get_browser_session("h1", 500)).await;
    assert_eq!(live[0].get::<String, _>("did"), DID_A);
    assert_eq!(
        live[0].get::<Option<String>, _>("handle").as_deref(),
        Some("alice.test")
    );
    assert_eq!(
        live[0].get::<Option<String>, _>("display_name").as_deref(),
        Some("Alice")
    );
    assert!(
        one(&pool, sql::get_browser_session("h1", 1000))
            .await
            .is_empty(),
        "expired"
    );
    one(&pool, sql::delete_browser_session("h1")).await;
    assert!(one(&pool, sql::get_browser_session("h1", 0))
        .await
        .is_empty());
    one(&pool, sql::delete_browser_sessions_of(DID_A)).await;
    assert!(one(&pool, sql::get_browser_session("h2", 0))
        .await
        .is_empty());
    assert_eq!(one(&pool, sql::get_browser_session("h3", 0)).await.len(), 1);
}

#[tokio::test]
async fn unknown_handles_are_claimed_once_per_retry_window() {
    let pool = database().await;
    // A: no account row; B: a row without a handle; C: a known handle; D: inactive.
    const DID_D: &str = "did:plc:dddddddddddddddddddddddd";
    upsert(
        &pool,
        &[
            status(DID_A, 1, "🦋", 1, 30, Origin::Network),
            status(DID_B, 2, "🚀", 2, 20, Origin::Network),
            status(DID_C, 3, "🧠", 3, 10, Origin::Network),
            status(DID_D, 4, "🌈", 4, 40, Origin::Network),
            status(DID_A, 5, "🌈", 5, 50, Origin::Network),
        ],
    )
    .await;
    one(&pool, sql::learn_handle(DID_C, "carol.test", 1)).await;
    batch(
        &pool,
        &sql::set_account_states(&[account(DID_D, false, Some("deactivated"), 1)]),
    )
    .await;
    batch(
        &pool,
        &sql::set_account_states(&[account(DID_B, true, None, 1)]),
    )
    .await;
    let accounts = |pool: SqlitePool| async move {
        sqlx::query("SELECT did FROM account ORDER BY did")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("did"))
            .collect::<Vec<_>>()
    };
    let accounts_before = accounts(pool.clone()).await;
    assert_eq!(accounts_before, vec![DID_B, DID_C, DID_D]);
    let claimed = |statement: Statement| {
        let pool = pool.clone();
        async move {
            let mut dids: Vec<String> = one(&pool, statement)
                .await
                .iter()
                .map(|r| r.get::<String, _>("did"))
                .collect();
            dids.sort();
            dids
        }
    };
    let t = 1_800_000_000_000;
    let ab = vec![DID_A.to_owned(), DID_B.to_owned()];
    // The cron's: authors of the newest statuses, each once, at most `limit`.
    assert_eq!(
        claimed(sql::claim_recent_handle_lookups(t, 1)).await.len(),
        1
    );
    assert_eq!(
        claimed(sql::claim_recent_handle_lookups(t, 10)).await.len(),
        1,
        "the other one"
    );
    // Claimed: not again within the retry window, whoever asks.
    assert!(claimed(sql::claim_recent_handle_lookups(t + 1, 10))
        .await
        .is_empty());
    assert!(
        claimed(sql::claim_handle_lookups_among(&[DID_A, DID_B], t + 1, 10))
            .await
            .is_empty()
    );
    // After the window, a page's own DIDs: known and inactive accounts are never claimed.
    let later = t + sql::HANDLE_RETRY_MS;
    assert_eq!(
        claimed(sql::claim_handle_lookups_among(
            &[DID_A, DID_B, DID_C, DID_D],
            later,
            10
        ))
        .await,
        ab
    );
    // A lookup that found B's handle takes B out for good; A comes back an hour later.
    one(&pool, sql::learn_handle(DID_B, "bob.test", 2)).await;
    assert_eq!(
        claimed(sql::claim_recent_handle_lookups(
            later + sql::HANDLE_RETRY_MS,
            10
        ))
        .await,
        vec![DID_A.to_owned()]
    );
    assert!(claimed(sql::claim_handle_lookups_among(&[], later, 10))
        .await
        .is_empty());
    // Claiming wrote nothing to `account` (that is the network's) and hid nothing.
    assert_eq!(accounts(pool.clone()).await, accounts_before);
    assert_eq!(recent(&pool, 10).await.len(), 4);
}

#[tokio::test]
async fn the_page_reads_the_viewer_status_through_the_session() {
    let pool = database().await;
    upsert(
        &pool,
        &[
            status(DID_A, 1, "🦋", 1, 10, Origin::Network),
            status(DID_B, 2, "🚀", 2, 10, Origin::Network),
        ],
    )
    .await;
    one(
        &pool,
        sql::insert_browser_session("h1", DID_A, None, 0, 1000),
    )
    .await;
    let of = |hash: &'static str, now: i64| {
        let pool = pool.clone();
        async move {
            one(&pool, sql::current_status_of_session(hash, now))
                .await
                .iter()
                .map(|r| {
                    (
                        r.get::<String, _>("author_did"),
                        r.get::<String, _>("status"),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        of("h1", 500).await,
        vec![(DID_A.to_owned(), "🦋".to_owned())]
    );
    assert!(
        of("h1", 1000).await.is_empty(),
        "an expired session shows nothing"
    );
    assert!(of("nobody", 500).await.is_empty());
}

#[tokio::test]
async fn write_budget_counts_per_account_per_minute() {
    let pool = database().await;
    let t0 = 1_800_000_000_000; // a window start
    let write = |did: &'static str, at: i64| {
        let pool = pool.clone();
        async move {
            let row = &one(&pool, sql::count_write(did, at)).await[0];
            let counted = sql::WriteCount {
                window_start: row.get("window_start"),
                count: row.get("count"),
                prev_count: row.get("prev_count"),
            };
            (
                counted.count,
                counted.prev_count,
                sql::writes_in_last_minute(counted, at),
            )
        }
    };
    assert_eq!(write(DID_A, t0).await, (1, 0, 1.0));
    assert_eq!(write(DID_A, t0 + 59_999).await.0, 2);
    assert_eq!(write(DID_B, t0 + 1).await, (1, 0, 1.0), "per account");
    // A new window: the old count still weighs, by how much of it is inside the last minute.
    assert_eq!(
        write(DID_A, t0 + 60_000).await,
        (1, 2, 3.0),
        "all of it, at the boundary"
    );
    assert_eq!(
        write(DID_A, t0 + 90_000).await,
        (2, 2, 3.0),
        "half of it, half-way"
    );
    // A window after a quiet one starts clean.
    assert_eq!(write(DID_B, t0 + 180_000).await, (1, 0, 1.0));
    // Ten writes just before a boundary and ten just after are twenty in the last minute.
    for i in 0..10 {
        write(DID_C, t0 + 59_000 + i).await;
    }
    let (count, prev, estimate) = write(DID_C, t0 + 60_500).await;
    assert_eq!((count, prev), (1, 10));
    assert!(estimate > 10.0, "{estimate}");
    batch(&pool, &sql::purge_expired(t0 + 240_000)).await;
    assert_eq!(
        count_rows(&pool, "SELECT COUNT(*) FROM write_budget").await,
        1,
        "only B's window (3 min) still counts"
    );
}

async fn plan(pool: &SqlitePool, statement: &Statement) -> String {
    let explain = Statement {
        sql: format!("EXPLAIN QUERY PLAN {}", statement.sql).into(),
        params: statement.params.clone(),
    };
    query(&explain)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn hot_queries_use_their_indexes() {
    let pool = database().await;
    let cases = [
        (sql::recent_statuses(20), "USING INDEX status_recent"),
        (sql::current_status(DID_A), "USING PRIMARY KEY"),
        (
            sql::current_status_of_session("h", 0),
            "USING INDEX sqlite_autoindex_browser_session_1",
        ),
        (
            sql::status_by_uri("at://x"),
            "USING INDEX sqlite_autoindex_status_1",
        ),
        (
            sql::purge_statuses(&[(DID_A, 1), (DID_B, 2)]).remove(0),
            "INDEX status_author",
        ),
        (sql::counts_changed(), "USING INDEX status_count_version"),
        (
            sql::statuses_page(
                None,
                Some(&sql::Before {
                    indexed_at: 1,
                    uri: "at://x".into(),
                }),
                30,
            ),
            "USING INDEX status_recent",
        ),
        (
            sql::statuses_page(
                Some(DID_A),
                Some(&sql::Before {
                    indexed_at: 1,
                    uri: "at://x".into(),
                }),
                30,
            ),
            "USING INDEX status_author",
        ),
        (sql::account_by_handle("h"), "USING INDEX account_handle"),
        (
            sql::accounts_of(&[DID_A, DID_B]).remove(0),
            "USING INDEX sqlite_autoindex_account_1",
        ),
        (
            sql::take_oauth_state("s", 0),
            "USING INDEX sqlite_autoindex_oauth_state_1",
        ),
        (
            sql::get_oauth_session(DID_A),
            "USING INDEX sqlite_autoindex_oauth_session_1",
        ),
        (
            sql::get_browser_session("h", 0),
            "USING INDEX sqlite_autoindex_browser_session_1",
        ),
        (
            sql::delete_browser_sessions_of(DID_A),
            "USING INDEX browser_session_did",
        ),
        (
            sql::purge_expired(0)[0].clone(),
            "USING INDEX oauth_state_expires",
        ),
        (
            sql::purge_expired(0)[1].clone(),
            "USING INDEX browser_session_expires",
        ),
        (
            sql::purge_expired(0)[3].clone(),
            "INDEX identity_cache_expires",
        ),
    ];
    for (statement, expected) in cases {
        let plan = plan(&pool, &statement).await;
        assert!(
            plan.contains(expected),
            "{}\nexpected {expected}, got:\n{plan}",
            statement.sql
        );
        assert!(
            !plan.lines().any(|l| l == "SCAN s" || l == "SCAN status"),
            "full scan of status:\n{plan}"
        );
    }
    // The counts read only the small derived table, never the statuses.
    let counts_plan = plan(&pool, &sql::status_counts(domain::present::EMOJI, 20)).await;
    assert!(counts_plan.contains("status_count"), "{counts_plan}");
    assert!(!counts_plan.contains("status_recent"), "{counts_plan}");
    // The triggers' "newest status of one author" lookup uses the author index.
    let newest = Statement {
        sql: "SELECT uri FROM status WHERE author_did = ?1 AND deleted = 0 \
              ORDER BY indexed_at DESC, uri DESC LIMIT 1"
            .into(),
        params: vec![DID_A.into()],
    };
    assert!(plan(&pool, &newest).await.contains("INDEX status_author"));
}

#[tokio::test]
async fn identity_lookups_are_kept_until_they_expire() {
    let pool = database().await;
    let value = |rows: Vec<SqliteRow>| rows.first().map(|r| r.get::<String, _>("value"));
    let key = "application/json https://plc.directory/did:plc:a";
    one(
        &pool,
        sql::put_identity_cache(key, "application/json\n{}", 1_000),
    )
    .await;
    assert_eq!(
        value(one(&pool, sql::get_identity_cache(key, 999)).await).as_deref(),
        Some("application/json\n{}")
    );
    assert_eq!(
        value(one(&pool, sql::get_identity_cache(key, 1_000)).await),
        None,
        "expired"
    );
    // A newer answer replaces the old one, and lives on.
    one(
        &pool,
        sql::put_identity_cache(key, "application/json\n[]", 5_000),
    )
    .await;
    assert_eq!(
        value(one(&pool, sql::get_identity_cache(key, 1_500)).await).as_deref(),
        Some("application/json\n[]")
    );
    one(
        &pool,
        sql::put_identity_cache("other", "text/plain\nx", 2_000),
    )
    .await;
    batch(&pool, &sql::purge_expired(3_000)).await;
    assert_eq!(
        count_rows(&pool, "SELECT COUNT(*) FROM identity_cache").await,
        1
    );
}

#[tokio::test]
async fn the_backfill_lists_once_claims_what_is_due_and_records_in_one_transaction() {
    use domain::backfill::{self, Account, Claimed, Outcome, Progress, Recording, Settings};
    use domain::wire::ServerMessage;
    let pool = database().await;
    let settings = Settings {
        relay: Some("https://relay.example".into()),
        run: "1".into(),
        subrequests: 50,
        daily_rows: 100_000,
        max_pages: 3,
        retry_ms: 60_000,
        attempts: domain::backfill::MAX_ATTEMPTS,
    };
    let dids: Vec<String> = [DID_A, DID_B, DID_C].map(str::to_owned).to_vec();
    let new = batch(&pool, &backfill::insert_listed(&dids, 1)).await;
    assert_eq!(new.len(), 3);
    let again = batch(&pool, &backfill::insert_listed(&dids[..1], 2)).await;
    assert!(again.is_empty(), "listed twice, counted once");

    let due = crate::common::batch_json(&pool, &[backfill::claim_due(10, 2)]).await;
    let claimed: Vec<Claimed> = due[0]
        .iter()
        .map(|row| serde_json::from_value(row.clone()).unwrap())
        .collect();
    assert_eq!(claimed.len(), 2);

    // A has a status the app already knows at a newer revision, and one it never saw; B's PDS
    // is down.
    upsert(&pool, &[status(DID_A, 1, "🎉", 9, 900, Origin::Network)]).await;
    let mut progress = Progress::start(&settings, 100);
    progress.listed(3);
    let read = |rkey, emoji: &str| Status {
        rev: tid(5),
        cid: Some(format!("bafyread{rkey}")),
        ..status(DID_A, rkey, emoji, 5, 50, Origin::Network)
    };
    let accounts = [Account {
        did: DID_A.into(),
        handle: Some("a.test".into()),
        display_name: Some(Some("Ada".into())),
        statuses: vec![read(1, "💀"), read(2, "🦋"), read(2, "🦋")],
    }];
    let rows: Vec<_> = [
        (
            &claimed[0],
            Outcome::Read {
                rev: tid(5),
                records: 2,
                dropped: 0,
                truncated: false,
                note: None,
            },
        ),
        (
            &claimed[1],
            Outcome::Failed {
                error: "refused".into(),
            },
        ),
    ]
    .iter()
    .filter_map(|(c, o)| progress.settle(&settings, c, o, 100))
    .collect();
    let recording = Recording::plan(&accounts, &rows, 100);
    let results = crate::common::batch_json(&pool, &recording.statements).await;
    let messages = recording.messages(&results).unwrap();
    let upserted: Vec<&str> = messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::StatusUpserted { status } => {
                assert_eq!(status.handle.as_deref(), Some("a.test"));
                Some(status.status.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        upserted,
        ["🦋"],
        "the newer write is kept; a duplicate lands once"
    );
    assert!(messages.iter().any(
        |m| matches!(m, ServerMessage::ProfileChanged { display_name: Some(n), .. } if n == "Ada")
    ));
    // 🦋 is older than the 🎉 the app knows (at 900): A's current status, and so every count,
    // stays as it was, and no count is published (migration 0015; before it the trigger took the
    // count down and up again, and published it unchanged).
    assert_eq!(current(&pool, DID_A).await.as_deref(), Some("🎉"));
    assert!(!messages
        .iter()
        .any(|m| matches!(m, ServerMessage::CountsChanged { .. })));
    assert_eq!(handle_of(&pool, DID_A).await.as_deref(), Some("a.test"));
    assert_eq!(
        (progress.done, progress.retrying, progress.pending),
        (1, 1, 2)
    );

    // The failed account is not due again before its wait; the third is.
    let due = crate::common::batch_json(&pool, &[backfill::claim_due(101, 10)]).await;
    let left: Vec<&str> = due[0].iter().map(|r| r["did"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], claimed[1].did);
    let next = crate::common::batch_json(&pool, &[backfill::next_due()]).await;
    assert_eq!(
        next[0][0]["next_try"].as_i64(),
        Some(0),
        "the third, due since listed"
    );
    // D1's rows say what the counters say (and put them right if an invocation lost them).
    let tally = crate::common::batch_json(&pool, &[backfill::tally()]).await;
    let tally: backfill::Tally = serde_json::from_value(tally[0][0].clone()).unwrap();
    let mut lost = Progress::start(&settings, 100);
    lost.tallied(tally);
    assert_eq!(
        (
            lost.listed,
            lost.done,
            lost.failed,
            lost.retrying,
            lost.pending,
            lost.records
        ),
        (
            progress.listed,
            progress.done,
            progress.failed,
            progress.retrying,
            progress.pending,
            progress.records
        ),
        "{tally:?}"
    );
    one(&pool, backfill::forget_all()).await;
    assert_eq!(
        count_rows(&pool, "SELECT COUNT(*) FROM backfill_repo").await,
        0
    );
}
