//! The session lease and refresh (`account::session`) and the status write (`account::write`)
//! natively, in seconds: SQLite through sqlx
//! with the real `migrations/` in place of D1, reqwest for HTTP, and for the account's server the
//! hostile PDS of the attack tests (`e2e::hostile`), which speaks real OAuth (DPoP-bound,
//! single-use refresh tokens) and misbehaves when told to.
//!
//! What end-to-end tests cannot reach cheaply: two refreshers racing, a lease running out
//! mid-refresh, a refresh refused, a busy server, D1 failing after a successful refresh (once, and
//! every time), and a sign-in that replaces the session while its refresh is refused; a write's
//! budget, a token the PDS stopped taking, a refusing PDS, an answer naming another record, and
//! D1 failing after the PDS wrote; the backfill's read of an account, in pages within its
//! subrequest budget, from a PDS that lies, fails or redirects.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use account::repo::{read_account, Metered};
use account::{Clock, Database, Error, Lease, Refresh, Refused, Sessions, Written};
use domain::backfill::Outcome;
use domain::sql::{self, Statement};
use e2e::hostile::{Hostile, Misbehaviour};
use e2e::pds::Reqwest;
use lexicon::StatusText;
use oauth::sealed::Keyring;
use oauth::{Callback, Client, HandleResolution, IdentityConfig, OAuth, Reach, Session};
use serde_json::Value;
use sqlx::sqlite::SqlitePool;

/// The native SQL tests' SQLite, migrations applied, statements bound as D1 binds them.
#[path = "../../domain/tests/common/mod.rs"]
mod common;

const SCOPE: &str = "atproto repo:xyz.statusphere.status";
/// Never called: the test reads the redirect the server would send the browser to.
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
/// Refresh a token this close to its expiry.
const MARGIN_S: i64 = 300;
/// The production lease, with waits short enough for a test.
const LEASE: Lease = Lease {
    hold_ms: Lease::DEFAULT.hold_ms,
    tries: 20,
    wait_ms: 50,
    store_tries: 3,
    store_wait_ms: 10,
};

// ---------------------------------------------------------------------------------------------
// The ports, natively

/// SQLite in place of D1; `fail_stores` makes the next stores of refreshed tokens fail.
#[derive(Clone)]
struct Sqlite {
    pool: SqlitePool,
    fail_stores: Arc<AtomicU32>,
}

impl Sqlite {
    async fn new() -> Sqlite {
        Sqlite {
            pool: common::database().await,
            fail_stores: Arc::default(),
        }
    }

    /// Whether `statement` stores refreshed tokens (the statement `account` runs for it).
    fn is_store(statement: &Statement) -> bool {
        statement.sql == sql::store_refreshed_session("", "", "", 0).sql
    }

    async fn run(&self, statement: &Statement) -> Result<Vec<Value>, String> {
        if Self::is_store(statement)
            && self
                .fail_stores
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err("D1_ERROR: the database is overloaded (injected)".into());
        }
        let rows = common::query(statement)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.iter().map(common::row_json).collect())
    }

    async fn query(&self, sql: &str, did: &str) -> Vec<Value> {
        let statement = Statement {
            sql: sql.to_owned().into(),
            params: vec![did.into()],
        };
        self.run(&statement).await.unwrap()
    }
}

impl Database for Sqlite {
    async fn rows(&self, statement: &Statement) -> account::Result<Vec<Value>> {
        self.run(statement).await.map_err(Error::Store)
    }

    async fn batch(&self, statements: &[Statement]) -> account::Result<Vec<Vec<Value>>> {
        let store = |e: sqlx::Error| Error::Store(e.to_string());
        let mut tx = self.pool.begin().await.map_err(store)?;
        let mut results = Vec::new();
        for statement in statements {
            let rows = common::query(statement)
                .fetch_all(&mut *tx)
                .await
                .map_err(store)?;
            results.push(rows.iter().map(common::row_json).collect());
        }
        tx.commit().await.map_err(store)?;
        Ok(results)
    }
}

/// The system clock, which a test can move forward; waits are real.
#[derive(Clone, Default)]
struct TestClock {
    ahead_ms: Arc<AtomicI64>,
}

impl TestClock {
    fn advance(&self, ms: i64) {
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        e2e::now_ms() + self.ahead_ms.load(Ordering::SeqCst)
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// What happens in the database while the account's server is working on a refresh, as if
/// another request ran then.
#[derive(Clone)]
enum Meanwhile {
    /// The clock passes the lease and another refresher takes it.
    LeaseTaken,
    /// The person signs in again (a new session, the lease cleared).
    SignedInAgain(String),
}

/// reqwest, doing [`Meanwhile`] (once) before it sends a token request.
struct Http {
    reqwest: Reqwest,
    db: Sqlite,
    clock: TestClock,
    did: String,
    meanwhile: Mutex<Option<Meanwhile>>,
}

impl atrium_xrpc::HttpClient for Http {
    async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let meanwhile = if request.uri().path() == "/oauth/token" {
            self.meanwhile.lock().unwrap().take()
        } else {
            None
        };
        match meanwhile {
            Some(Meanwhile::LeaseTaken) => {
                self.clock.advance(LEASE.hold_ms + 1_000);
                let now = self.clock.now_ms();
                let taken = self
                    .db
                    .run(&sql::lock_oauth_session(
                        &self.did,
                        "another-refresher",
                        now,
                        now + LEASE.hold_ms,
                    ))
                    .await?;
                assert_eq!(
                    taken.len(),
                    1,
                    "the lease had run out, so it could be taken"
                );
            }
            Some(Meanwhile::SignedInAgain(data)) => {
                self.db
                    .run(&sql::put_oauth_session(
                        &self.did,
                        &data,
                        self.clock.now_ms(),
                    ))
                    .await?;
            }
            None => {}
        }
        self.reqwest.send_http(request).await
    }
}

// ---------------------------------------------------------------------------------------------
// The account

struct Account {
    server: Hostile,
    db: Sqlite,
    clock: TestClock,
    http: Http,
    client: Client,
    keys: Keyring,
}

impl Account {
    /// An account on its own (hostile, for now honest) server, signed in, with one browser.
    async fn signed_in() -> Account {
        let server = Hostile::start("alice.test").await.unwrap();
        let db = Sqlite::new().await;
        let clock = TestClock::default();
        let identity = IdentityConfig {
            plc_url: "http://127.0.0.1:9".into(),
            handles: HandleResolution::Service {
                url: server.url.clone(),
            },
            reach: Reach::Local,
        };
        let account = Account {
            http: Http {
                reqwest: Reqwest::default(),
                db: db.clone(),
                clock: clock.clone(),
                did: server.did.clone(),
                meanwhile: Mutex::new(None),
            },
            client: Client::loopback(REDIRECT, SCOPE, identity),
            keys: Keyring::parse(&Keyring::generate_entry("k1").unwrap()).unwrap(),
            server,
            db,
            clock,
        };
        let session = account.sign_in().await;
        account.store(&session).await;
        let now = account.clock.now_ms();
        account
            .db
            .batch(&[sql::insert_browser_session(
                "browser-1",
                &account.server.did,
                None,
                now,
                now + 86_400_000,
            )])
            .await
            .unwrap();
        account
    }

    fn did(&self) -> &str {
        &self.server.did
    }

    /// A sign-in at the server, as the callback would finish it.
    async fn sign_in(&self) -> Session {
        let oauth = OAuth {
            http: &self.http.reqwest,
            client: &self.client,
            now_s: self.clock.now_ms() / 1000,
        };
        let (url, pending) = oauth.authorize(self.did()).await.unwrap();
        let consented = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        let location = consented.headers()["location"].to_str().unwrap();
        let query = location.strip_prefix(&format!("{REDIRECT}?")).unwrap();
        oauth
            .callback(&Callback::from_query(query), pending)
            .await
            .unwrap()
    }

    fn sealed(&self, session: &Session) -> String {
        let json = serde_json::to_string(session).unwrap();
        self.keys.seal(json.as_bytes(), &session.did).unwrap()
    }

    async fn store(&self, session: &Session) {
        let data = self.sealed(session);
        let statement = sql::put_oauth_session(&session.did, &data, self.clock.now_ms());
        self.db.batch(&[statement]).await.unwrap();
    }

    fn sessions(&self) -> Sessions<'_, Sqlite, TestClock, Http> {
        Sessions {
            db: &self.db,
            clock: &self.clock,
            http: &self.http,
            client: &self.client,
            keys: &self.keys,
            margin_s: MARGIN_S,
            lease: LEASE,
        }
    }

    async fn stored(&self) -> Option<Session> {
        self.sessions().load(self.did()).await.unwrap()
    }

    async fn lock_owner(&self) -> Option<String> {
        let rows = self
            .db
            .query(
                "SELECT lock_owner FROM oauth_session WHERE did = ?1",
                self.did(),
            )
            .await;
        rows.first()
            .and_then(|row| row["lock_owner"].as_str().map(str::to_owned))
    }

    async fn browsers(&self) -> usize {
        self.db
            .query(
                "SELECT id_hash FROM browser_session WHERE did = ?1",
                self.did(),
            )
            .await
            .len()
    }
}

/// `did` has no session to be had: sign in again.
async fn assert_signed_out(sessions: &Sessions<'_, Sqlite, TestClock, Http>, did: &str) {
    let fresh = sessions.fresh(did, Refresh::IfExpiring).await;
    assert_eq!(fresh.unwrap_err(), Error::Ended);
}

fn token_of(result: &account::Result<Session>) -> &str {
    &result.as_ref().expect("a session").access_token
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_session_with_time_left_is_used_as_it_is_and_an_expiring_one_is_refreshed() {
    let account = Account::signed_in().await;
    let before = account.stored().await.unwrap();
    let fresh = account
        .sessions()
        .fresh(account.did(), Refresh::IfExpiring)
        .await;
    assert_eq!(
        token_of(&fresh),
        before.access_token,
        "an hour left: no refresh"
    );
    assert_eq!(account.server.refreshes(), 0);

    // Inside the margin: refreshed, and what is stored is the new session, sealed.
    account.clock.advance((3600 - MARGIN_S + 1) * 1000);
    let fresh = account
        .sessions()
        .fresh(account.did(), Refresh::IfExpiring)
        .await;
    let token = token_of(&fresh).to_owned();
    assert_ne!(token, before.access_token);
    assert_eq!(account.server.refreshes(), 1);
    assert_eq!(account.stored().await.unwrap().access_token, token);
    let raw = account
        .db
        .query(
            "SELECT data FROM oauth_session WHERE did = ?1",
            account.did(),
        )
        .await;
    assert!(!raw[0]["data"].as_str().unwrap().contains(&token), "sealed");
    assert_eq!(account.lock_owner().await, None, "the lease is released");
}

#[tokio::test]
async fn two_refreshers_racing_spend_the_refresh_token_once_and_share_the_result() {
    let account = Account::signed_in().await;
    let sessions = account.sessions();
    let (first, second) = tokio::join!(
        sessions.fresh(account.did(), Refresh::Now),
        sessions.fresh(account.did(), Refresh::Now)
    );
    assert_eq!(token_of(&first), token_of(&second));
    assert_eq!(account.server.refreshes(), 1, "one refresh for both");
    assert_eq!(
        account.stored().await.unwrap().access_token,
        token_of(&first)
    );
    // And the refreshed session refreshes again (its new refresh token was kept).
    let again = sessions.fresh(account.did(), Refresh::Now).await;
    assert_ne!(token_of(&again), token_of(&first));
    assert_eq!(account.server.refreshes(), 2);
}

#[tokio::test]
async fn a_refused_refresh_ends_the_session_and_signs_its_browsers_out() {
    let account = Account::signed_in().await;
    account.server.forget_refresh_tokens();
    let sessions = account.sessions();
    // The one that holds the lease is refused; the one waiting for it learns the session ended.
    let (first, second) = tokio::join!(
        sessions.fresh(account.did(), Refresh::Now),
        sessions.fresh(account.did(), Refresh::Now)
    );
    assert_eq!(first.unwrap_err(), Error::Ended);
    assert_eq!(second.unwrap_err(), Error::Ended);
    assert!(account.stored().await.is_none());
    assert_eq!(account.browsers().await, 0);
    assert_signed_out(&sessions, account.did()).await;
}

#[tokio::test]
async fn a_sign_in_during_a_refused_refresh_is_kept_with_its_browser() {
    let account = Account::signed_in().await;
    let again = account.sign_in().await;
    *account.http.meanwhile.lock().unwrap() =
        Some(Meanwhile::SignedInAgain(account.sealed(&again)));
    account.server.forget_refresh_tokens();
    let refreshed = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(
        refreshed.unwrap_err(),
        Error::Ended,
        "this refresh's grant is gone"
    );
    let stored = account.stored().await.expect("the new sign-in is kept");
    assert_eq!(stored.access_token, again.access_token);
    assert_eq!(account.browsers().await, 1, "and nobody is signed out");
}

#[tokio::test]
async fn a_busy_or_failing_server_keeps_the_session_for_later() {
    let account = Account::signed_in().await;
    let before = account.stored().await.unwrap();
    for how in [Misbehaviour::Status(429), Misbehaviour::Status(503)] {
        account.server.misbehave("/oauth/token", Some(how));
        let refused = account.sessions().fresh(account.did(), Refresh::Now).await;
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
        assert_eq!(
            account.stored().await.unwrap().access_token,
            before.access_token
        );
        assert_eq!(account.lock_owner().await, None, "the lease is released");
        assert_eq!(account.browsers().await, 1);
    }
    account.server.misbehave("/oauth/token", None);
    let fresh = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_ne!(token_of(&fresh), before.access_token);
}

#[tokio::test]
async fn a_refresh_that_outlives_its_lease_drops_its_tokens() {
    let account = Account::signed_in().await;
    let before = account.stored().await.unwrap();
    *account.http.meanwhile.lock().unwrap() = Some(Meanwhile::LeaseTaken);
    let late = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(
        late.unwrap_err(),
        Error::Unavailable("the refresh took too long".into())
    );
    // Not stored over the lease's new holder, and not handed out.
    assert_eq!(
        account.stored().await.unwrap().access_token,
        before.access_token
    );
    assert_eq!(
        account.lock_owner().await.as_deref(),
        Some("another-refresher")
    );
    // While that holder's lease lasts, others wait for it, then say so.
    let waiting = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(
        waiting.unwrap_err(),
        Error::Unavailable("the session is being refreshed elsewhere".into())
    );
    assert_eq!(account.server.refreshes(), 1);
}

#[tokio::test]
async fn d1_failing_after_a_refresh_is_tried_again() {
    let account = Account::signed_in().await;
    account
        .db
        .fail_stores
        .store(LEASE.store_tries - 1, Ordering::SeqCst);
    let fresh = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(
        account.stored().await.unwrap().access_token,
        token_of(&fresh)
    );
    assert_eq!(account.db.fail_stores.load(Ordering::SeqCst), 0);
    assert_eq!(account.lock_owner().await, None);
}

#[tokio::test]
async fn d1_failing_every_try_after_a_refresh_loses_the_tokens_and_the_session_ends_cleanly() {
    let account = Account::signed_in().await;
    account
        .db
        .fail_stores
        .store(LEASE.store_tries, Ordering::SeqCst);
    let lost = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(
        lost.unwrap_err(),
        Error::Unavailable("the new tokens could not be saved".into())
    );
    assert_eq!(
        account.db.fail_stores.load(Ordering::SeqCst),
        0,
        "every try was made"
    );
    // The spent refresh token is all that is stored. Until the lease runs out nobody spends it
    // again; after, the next refresh is refused and the session ends, browsers signed out: the
    // person signs in again, and nothing half-done is left.
    let waiting = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert!(matches!(waiting, Err(Error::Unavailable(_))), "{waiting:?}");
    account.clock.advance(LEASE.hold_ms + 1_000);
    let ended = account.sessions().fresh(account.did(), Refresh::Now).await;
    assert_eq!(ended.unwrap_err(), Error::Ended);
    assert!(account.stored().await.is_none());
    assert_eq!(account.browsers().await, 0);
}

#[tokio::test]
async fn a_session_sealed_under_a_retired_key_counts_as_signed_out() {
    let account = Account::signed_in().await;
    let other = Keyring::parse(&Keyring::generate_entry("k2").unwrap()).unwrap();
    let sessions = Sessions {
        keys: &other,
        ..account.sessions()
    };
    assert_eq!(
        sessions.load(account.did()).await.unwrap().map(|s| s.did),
        None
    );
    assert_signed_out(&sessions, account.did()).await;
}

// ---------------------------------------------------------------------------------------------
// Writes

const PER_MINUTE: i64 = 10;

fn emoji(text: &str) -> StatusText {
    StatusText::new(text).unwrap()
}

impl Account {
    async fn write(&self, text: &str) -> Result<Written, Refused> {
        self.sessions()
            .write_status(self.did(), &emoji(text), PER_MINUTE)
            .await
    }

    async fn rows(&self) -> Vec<Value> {
        self.db
            .query(
                "SELECT uri, status, origin FROM status WHERE author_did = ?1",
                self.did(),
            )
            .await
    }
}

#[tokio::test]
async fn a_write_reaches_the_repository_then_the_database_as_the_page_shows_it() {
    let account = Account::signed_in().await;
    let Ok(Written::Recorded {
        status: view,
        counts,
    }) = account.write("🦀").await
    else {
        panic!("not recorded");
    };
    assert_eq!(view.status, "🦀");
    // The count it changed, as D1 holds it now, with the version a page orders counts by.
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!((counts[0].status.as_str(), counts[0].count), ("🦀", 1));
    assert!(counts[0].version > 0, "{counts:?}");
    assert_eq!(view.author_did, account.did());
    let records = account.server.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].2["status"], "🦀");
    let rows = account.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["uri"], view.uri.as_str());
    assert_eq!(rows[0]["origin"], "edge");
    let nonce = account
        .db
        .query(
            "SELECT pds_nonce FROM oauth_session WHERE did = ?1",
            account.did(),
        )
        .await;
    assert!(nonce[0]["pds_nonce"].is_string(), "the PDS's nonce is kept");
}

#[tokio::test]
async fn the_write_over_budget_is_refused_before_the_server_is_asked() {
    let account = Account::signed_in().await;
    for _ in 0..PER_MINUTE {
        assert!(matches!(
            account.write("🦀").await,
            Ok(Written::Recorded { .. })
        ));
    }
    let refused = account.write("🦀").await.unwrap_err();
    assert_eq!(refused, Refused::TooFast);
    assert_eq!(refused.status(), 429);
    assert_eq!(account.server.records().len(), PER_MINUTE as usize);
    // A minute and a half later the window has slid past most of them.
    account.clock.advance(90_000);
    assert!(matches!(
        account.write("🦀").await,
        Ok(Written::Recorded { .. })
    ));
}

#[tokio::test]
async fn a_token_the_server_stopped_taking_is_refreshed_once_then_the_sign_in_ends() {
    let account = Account::signed_in().await;
    account.server.forget_access_tokens();
    assert!(matches!(
        account.write("🦀").await,
        Ok(Written::Recorded { .. })
    ));
    assert_eq!(account.server.refreshes(), 1);
    // A server that refuses even the refreshed token: one refresh, then sign in again.
    account.server.misbehave(
        "/xrpc/com.atproto.repo.createRecord",
        Some(Misbehaviour::Status(401)),
    );
    let refused = account.write("🐢").await.unwrap_err();
    assert_eq!(refused, Refused::Session(Error::Ended));
    assert_eq!(refused.status(), 401);
    assert_eq!(account.server.refreshes(), 2);
    assert_eq!(account.rows().await.len(), 1);
}

#[tokio::test]
async fn a_refusing_server_changes_nothing_and_says_why() {
    let account = Account::signed_in().await;
    account.server.misbehave(
        "/xrpc/com.atproto.repo.createRecord",
        Some(Misbehaviour::Status(400)),
    );
    let refused = account.write("🦀").await.unwrap_err();
    assert!(matches!(&refused, Refused::Rejected(why) if why.contains("temporarily_unavailable")));
    assert_eq!(refused.status(), 502);
    assert!(refused.message().contains("Nothing was changed"));
    assert!(account.rows().await.is_empty());
}

#[tokio::test]
async fn an_answer_naming_another_record_is_not_recorded() {
    let account = Account::signed_in().await;
    account.server.answer_creates_with(|answer| {
        answer["uri"] = "at://did:plc:someoneelse/xyz.statusphere.status/3lbbbbbbbbbbb".into();
    });
    let refused = account.write("🦀").await.unwrap_err();
    assert!(
        matches!(&refused, Refused::Unverified(why) if why.contains("uri")),
        "{refused:?}"
    );
    assert_eq!(refused.status(), 502);
    assert!(account.rows().await.is_empty());
    let theirs = account
        .db
        .query(
            "SELECT uri FROM status WHERE author_did = ?1",
            "did:plc:someoneelse",
        )
        .await;
    assert!(theirs.is_empty(), "nobody else's row was written");
}

#[tokio::test]
async fn d1_failing_after_the_server_wrote_says_written_not_recorded() {
    let account = Account::signed_in().await;
    sqlx::query(
        "CREATE TRIGGER test_refuse_status BEFORE INSERT ON status \
         BEGIN SELECT RAISE(ABORT, 'injected by the test'); END",
    )
    .execute(&account.db.pool)
    .await
    .unwrap();
    assert_eq!(account.write("🦀").await, Ok(Written::NotRecorded));
    assert_eq!(
        account.server.records().len(),
        1,
        "the record is in the repository"
    );
    assert!(account.rows().await.is_empty());
    sqlx::query("DROP TRIGGER test_refuse_status")
        .execute(&account.db.pool)
        .await
        .unwrap();
    assert!(matches!(
        account.write("🐢").await,
        Ok(Written::Recorded { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The backfill's read of an account (`account::repo::read_account`)

/// A repository of `statuses` valid statuses (and a display name) on a server of its own, and
/// the identity settings that find it.
async fn repository(statuses: usize) -> (Hostile, IdentityConfig) {
    let server = Hostile::start("someone.test").await.unwrap();
    let now_us = e2e::now_ms() * 1000;
    for n in 0..statuses {
        let created = domain::present::iso8601(now_us / 1000 - 60_000);
        let record = serde_json::json!({ "status": "🦀", "createdAt": created });
        server.put_record(
            lexicon::STATUS_NSID,
            &e2e::hostile::tid(now_us - n as i64, 1),
            record,
        );
    }
    let profile = serde_json::json!({ "displayName": "Someone" });
    server.put_record("app.bsky.actor.profile", "self", profile);
    let identity = IdentityConfig {
        plc_url: "http://127.0.0.1:9".into(),
        handles: HandleResolution::Service {
            url: server.url.clone(),
        },
        reach: Reach::Local,
    };
    (server, identity)
}

async fn read(
    server: &Hostile,
    identity: &IdentityConfig,
    budget: u32,
    max_pages: u32,
) -> (Option<domain::backfill::Account>, Outcome, u32) {
    let http = Reqwest::default();
    let metered = Metered::new(&http, budget);
    let now = e2e::now_ms();
    let (account, outcome) = read_account(&metered, identity, &server.did, max_pages, now).await;
    (account, outcome, metered.used())
}

#[tokio::test]
async fn the_backfill_reads_an_account_in_pages_within_its_budget() {
    let (server, identity) = repository(130).await;
    let (account, outcome, used) = read(&server, &identity, 50, 3).await;
    let Outcome::Read {
        records,
        dropped,
        truncated,
        ..
    } = outcome
    else {
        panic!("not read: {outcome:?}");
    };
    assert_eq!((records, dropped, truncated), (130, 0, false));
    let account = account.unwrap();
    assert_eq!(account.statuses.len(), 130);
    assert!(account.statuses.iter().all(|s| s.author_did == server.did));
    assert_eq!(account.display_name, Some(Some("Someone".to_owned())));
    // Its handle does not resolve back to it (the server answers no resolveHandle).
    assert_eq!(account.handle, None);
    // The DID document, the handle's check, the commit, two pages, the profile.
    assert_eq!(used, 6);

    // One page allowed: the newest 100, and the rest said to be missing.
    let (_, outcome, _) = read(&server, &identity, 50, 1).await;
    assert!(
        matches!(
            outcome,
            Outcome::Read {
                records: 100,
                truncated: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    // A budget that runs out in the middle leaves the account unfinished, not failed.
    let (account, outcome, used) = read(&server, &identity, 4, 3).await;
    assert_eq!((account, outcome, used), (None, Outcome::Unfinished, 4));
}

#[tokio::test]
async fn a_pds_that_lies_or_fails_fails_the_read_and_its_bad_records_are_dropped() {
    let (server, identity) = repository(2).await;
    let commit = "/xrpc/com.atproto.sync.getLatestCommit";
    let now_us = e2e::now_ms() * 1000;
    let future = e2e::hostile::tid(now_us + 86_400_000_000, 1);
    server.misbehave_times(
        commit,
        Misbehaviour::Json(serde_json::json!({ "cid": "x", "rev": future })),
        1,
    );
    let (account, outcome, used) = read(&server, &identity, 50, 3).await;
    assert!(account.is_none());
    assert!(
        matches!(&outcome, Outcome::Failed { error } if error.contains("rev")),
        "a revision from the future: {outcome:?}"
    );
    assert_eq!(used, 3, "no record is asked for after a lying commit");
    server.misbehave_times(
        "/xrpc/com.atproto.repo.listRecords",
        Misbehaviour::Status(503),
        1,
    );
    let (_, outcome, _) = read(&server, &identity, 50, 3).await;
    assert!(
        matches!(&outcome, Outcome::Failed { error } if error.contains("503")),
        "a PDS that is down: {outcome:?}"
    );
    let elsewhere = Misbehaviour::Redirect("http://127.0.0.1:9/elsewhere".into());
    server.misbehave_times(commit, elsewhere, 1);
    let (_, outcome, _) = read(&server, &identity, 50, 3).await;
    assert!(
        matches!(outcome, Outcome::Failed { .. }),
        "a PDS that sends it elsewhere: {outcome:?}"
    );

    // Records that are not valid statuses, or not this account's, are dropped one by one.
    let words = serde_json::json!({ "status": "two words", "createdAt": "2026-01-01T00:00:00Z" });
    server.put_record(
        lexicon::STATUS_NSID,
        &e2e::hostile::tid(now_us - 10, 1),
        words,
    );
    let theirs = serde_json::json!({ "status": "😈", "createdAt": "2026-01-01T00:00:00Z" });
    server.list_as_is(serde_json::json!({
        "uri": format!("at://did:plc:someoneelse/{}/{}", lexicon::STATUS_NSID,
                       e2e::hostile::tid(now_us, 5)),
        "cid": e2e::hostile::cid_of(&theirs),
        "value": theirs,
    }));
    // And a profile that fails only leaves the name unknown.
    server.misbehave_times(
        "/xrpc/com.atproto.repo.getRecord",
        Misbehaviour::Status(503),
        1,
    );
    let (account, outcome, _) = read(&server, &identity, 50, 3).await;
    assert!(
        matches!(
            outcome,
            Outcome::Read {
                records: 2,
                dropped: 2,
                ..
            }
        ),
        "{outcome:?}"
    );
    let account = account.unwrap();
    assert!(account.statuses.iter().all(|s| s.status == "🦀"));
    assert_eq!(account.display_name, None);
}
