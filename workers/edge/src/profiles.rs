//! Display names beside handles (docs/data-model.md "Display names"): an author's
//! `app.bsky.actor.profile/self` record, read from their PDS when they sign in and, in the
//! background, once a day for each author among the newest statuses (the cron claims a few per
//! run, `sql::claim_profile_checks`). A name that changed is published, so open pages relabel the
//! author's lines in place. Never on a page's own time.

use domain::sql;
use domain::wire::ServerMessage;
use serde::Deserialize;
use worker::{Env, Result};

use crate::http::WorkerHttp;

/// Profiles read per cron run: each is a DID document (usually cached) and one record.
pub const CRON_CHECKS: i64 = 5;

#[derive(Deserialize)]
struct Claimed {
    did: String,
}

#[derive(Deserialize)]
struct Named {
    did: String,
    display_name: Option<String>,
}

/// The display name in `did`'s profile record on its PDS `pds`, if it has one (public data, read
/// without a session; any failure only means the handle is shown alone).
pub async fn display_name_at(pds: &str, did: &str) -> Option<String> {
    use atrium_xrpc::HttpClient;
    let url = format!(
        "{}/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.actor.profile&rkey=self",
        pds.trim_end_matches('/')
    );
    let mut request = http::Request::get(url).body(Vec::new()).ok()?;
    request
        .extensions_mut()
        .insert(oauth::fetch::BodyLimit(oauth::fetch::MAX_BODY));
    let response = WorkerHttp.send_http(request).await.ok()?;
    if response.status() != 200 {
        return None;
    }
    let record: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    domain::present::display_name(&record["value"])
}

/// The cron's reads: a few authors whose name was never read, or not for a day; returns how many
/// names changed.
pub async fn refresh(env: &Env, now_ms: i64) -> Result<usize> {
    let db = env.d1("DB")?;
    let claimed: Vec<Claimed> =
        workers_common::d1::rows(&db, &sql::claim_profile_checks(now_ms, CRON_CHECKS)).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let identity = crate::config::identity(env);
    let http = crate::http::transport(env)?;
    let mut statements = Vec::new();
    for Claimed { did } in claimed {
        match oauth::identity::resolve_did_identity(&http, &identity, &did).await {
            Ok(found) => {
                let name = display_name_at(&found.pds, &did).await;
                statements.push(sql::set_display_name(&did, name.as_deref(), now_ms));
            }
            Err(error) => tracing::warn!(did, %error, "profile not read; tried again in a day"),
        }
    }
    if statements.is_empty() {
        return Ok(0);
    }
    let results = workers_common::d1::batch(&db, &statements).await?;
    let mut messages = Vec::new();
    for result in results {
        for Named { did, display_name } in result.results::<Named>()? {
            messages.push(ServerMessage::ProfileChanged { did, display_name });
        }
    }
    let changed = messages.len();
    if !messages.is_empty() {
        workers_common::broker::publish(&env.service("BROKER")?, messages).await?;
    }
    tracing::info!(changed, "profiles read");
    Ok(changed)
}
