//! Display names beside handles (docs/data-model.md "Display names"): an author's
//! `app.bsky.actor.profile/self` record, read from their PDS when they sign in and, in the
//! background, once a day for each author among the newest statuses (the cron claims a few per
//! run, `sql::claim_profile_checks`). A name that changed is published, so open pages relabel the
//! author's lines in place. Never on a page's own time.

use domain::sql;
use domain::wire::ServerMessage;
use serde::Deserialize;
use worker::{Env, Result};

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

/// The cron's reads: a few authors whose name was never read, or not for a day; returns how many
/// were claimed.
pub async fn refresh(env: &Env, now_ms: i64) -> Result<usize> {
    let db = env.d1("DB")?;
    let claimed: Vec<Claimed> =
        workers_common::d1::rows(&db, &sql::claim_profile_checks(now_ms, CRON_CHECKS)).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let tried = claimed.len();
    let identity = crate::config::identity(env);
    let http = workers_common::http::transport(env)?;
    let mut statements = Vec::new();
    for Claimed { did } in claimed {
        match oauth::identity::resolve_did_identity(&http, &identity, &did).await {
            Ok(found) => {
                match account::repo::display_name(&http, identity.reach, &found.pds, &did).await {
                    Ok(name) => {
                        statements.push(sql::set_display_name(&did, name.as_deref(), now_ms))
                    }
                    Err(error) => {
                        tracing::warn!(did, %error, "profile not read; tried again in a day")
                    }
                }
            }
            Err(error) => tracing::warn!(did, %error, "profile not read; tried again in a day"),
        }
    }
    if statements.is_empty() {
        return Ok(tried);
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
        let listener = env.service("LISTENER")?;
        workers_common::broker::publish(&env.service("BROKER")?, &listener, messages).await?;
    }
    tracing::info!(changed, "profiles read");
    Ok(tried)
}
