//! Handles of authors the firehose never named. The network sends an identity event only when a
//! handle changes, so most authors arrive as bare DIDs; the page shows the DID rather than wait.
//! Here a few such authors are claimed in D1 (each at most once an hour: the cron claims among
//! the newest statuses, a home page among the authors it showed by DID), looked up (DID document
//! -> handle -> back to the same DID), recorded, and published, so open pages relabel the
//! author's lines in place. Always in the background: never on a page's own time.

use domain::sql::{self, Statement};
use domain::wire::ServerMessage;
use serde::Deserialize;
use worker::{Env, Result};

/// Lookups per cron run: each is two or three fetches, well inside a request's subrequest limit.
pub const CRON_LOOKUPS: i64 = 10;
/// Lookups after a page view that showed a DID.
pub const PAGE_LOOKUPS: i64 = 3;

#[derive(Deserialize)]
struct Claimed {
    did: String,
}

#[derive(Deserialize)]
struct Learned {
    did: String,
    handle: Option<String>,
}

/// The cron's lookups: unknown handles among the newest statuses; returns how many were claimed.
pub async fn look_up_recent(env: &Env, now_ms: i64) -> Result<usize> {
    look_up(
        env,
        &sql::claim_recent_handle_lookups(now_ms, CRON_LOOKUPS),
        now_ms,
    )
    .await
}

/// After a home page: the authors it showed by DID.
pub async fn look_up_shown(env: &Env, dids: &[String], now_ms: i64) -> Result<usize> {
    let dids: Vec<&str> = dids.iter().map(String::as_str).collect();
    let claim = sql::claim_handle_lookups_among(&dids, now_ms, PAGE_LOOKUPS);
    look_up(env, &claim, now_ms).await
}

/// Looks up the handles `claim` claims; returns how many were claimed.
async fn look_up(env: &Env, claim: &Statement, now_ms: i64) -> Result<usize> {
    let db = env.d1("DB")?;
    let claimed: Vec<Claimed> = workers_common::d1::rows(&db, claim).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let tried = claimed.len();
    let identity = crate::config::identity(env);
    let http = workers_common::http::transport(env)?;
    let mut statements = Vec::new();
    for Claimed { did } in claimed {
        match oauth::identity::resolve_did_handle(&http, &identity, &did).await {
            Ok(Some(handle)) => statements.push(sql::learn_handle(&did, &handle, now_ms * 1000)),
            Ok(None) => tracing::info!(did, "no handle that resolves back to this DID"),
            Err(error) => tracing::warn!(did, %error, "handle lookup failed; retried in an hour"),
        }
    }
    if statements.is_empty() {
        return Ok(tried);
    }
    let mut changes = Vec::new();
    for result in workers_common::d1::batch(&db, &statements).await? {
        for row in result.results::<Learned>()? {
            changes.push(ServerMessage::HandleChanged {
                did: row.did,
                handle: row.handle,
            });
        }
    }
    let learned = changes.len();
    if learned > 0 {
        let listener = env.service("LISTENER")?;
        workers_common::broker::publish(&env.service("BROKER")?, &listener, changes).await?;
    }
    tracing::info!(learned, "handles looked up");
    Ok(tried)
}
