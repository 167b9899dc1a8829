//! `POST /status`: validates the status against the lexicon, has `account::write` spend one unit
//! of the account's write budget, write the record to the person's repo and record the optimistic
//! row in D1 (nothing reaches D1 unless the PDS accepted the record), then publishes it to the
//! broker and answers the page or its script. `POST /status/clear`: the same for deleting the
//! person's current status (`account::clear`).

use account::clear::CLEARED_NOT_RECORDED;
use account::write::WRITTEN_NOT_RECORDED;
use account::Sessions;
use account::{Cleared, Refused, Written};
use domain::wire::{with_counts, ServerMessage};
use lexicon::StatusText;
use worker::{Env, Request, Response, Result};

use crate::auth;
use crate::config::Config;
use crate::page::{self, Notice, Viewer};
use crate::ports::{WorkerClock, D1};
use crate::session::{self, SignedIn};
use workers_common::http::CachedHttp;

pub async fn set_status(
    mut req: Request,
    env: &Env,
    config: &Config,
    now_ms: i64,
) -> Result<Response> {
    let reply = Reply::asked_by(&req)?;
    let Some(signed_in) = signed_in(&req, env, config, now_ms).await? else {
        return refusal_to_sign_in(env, config, reply, now_ms, "set").await;
    };
    let form = req.form_data().await.ok();
    let text = form
        .as_ref()
        .and_then(|f| f.get_field("status"))
        .unwrap_or_default();
    let outcome = match StatusText::new(&text) {
        Ok(status) => write(env, config, &signed_in, &status).await,
        Err(_) => Err(Refused::NotAStatus),
    };
    match outcome {
        // The row as D1 holds it (what the broker publishes too): the script shows it at once,
        // whether or not its socket is connected.
        Ok(Written::Recorded { status, counts }) if reply == Reply::Json => {
            Response::from_json(&serde_json::json!({ "status": status, "counts": counts }))
        }
        Ok(Written::Recorded { .. }) => auth::see_other("/", &[]),
        // Written to the repo, but not recorded here (D1 failed): say so, rather than "failed".
        Ok(Written::NotRecorded) => {
            not_recorded(env, config, &signed_in, reply, now_ms, WRITTEN_NOT_RECORDED).await
        }
        Err(refused) => answer_refusal(env, config, &signed_in, reply, now_ms, refused).await,
    }
}

/// `POST /status/clear`: has `account::clear` delete the signed-in person's current status from
/// their repository and tombstone it here, then publishes the delete and the counts.
pub async fn clear_status(
    req: Request,
    env: &Env,
    config: &Config,
    now_ms: i64,
) -> Result<Response> {
    let reply = Reply::asked_by(&req)?;
    let Some(signed_in) = signed_in(&req, env, config, now_ms).await? else {
        return refusal_to_sign_in(env, config, reply, now_ms, "clear").await;
    };
    match clear(env, config, &signed_in).await {
        Ok(Cleared::Recorded {
            uri,
            current,
            counts,
        }) if reply == Reply::Json => Response::from_json(
            &serde_json::json!({ "deleted": uri, "current": current, "counts": counts }),
        ),
        Ok(Cleared::Recorded { .. }) => auth::see_other("/", &[]),
        Ok(Cleared::NotRecorded) => {
            not_recorded(env, config, &signed_in, reply, now_ms, CLEARED_NOT_RECORDED).await
        }
        Err(refused) => answer_refusal(env, config, &signed_in, reply, now_ms, refused).await,
    }
}

/// The person signed in, if any.
async fn signed_in(
    req: &Request,
    env: &Env,
    config: &Config,
    now_ms: i64,
) -> Result<Option<SignedIn>> {
    let db = env.d1("DB")?;
    session::current(req, &db, config.cookies, now_ms).await
}

/// 401: sign in to `what` (set, clear) a status.
async fn refusal_to_sign_in(
    env: &Env,
    config: &Config,
    reply: Reply,
    now_ms: i64,
    what: &str,
) -> Result<Response> {
    let message = format!("Sign in to {what} your status.");
    if reply == Reply::Json {
        return json_refusal(401, &message);
    }
    let notice = Notice::error(message);
    page::render(env, config, Viewer::Nobody, Some(notice), "", now_ms, 401).await
}

/// 202: done in the person's repository, not recorded here (D1 failed): say so, rather than
/// "failed", which would invite doing it twice.
async fn not_recorded(
    env: &Env,
    config: &Config,
    signed_in: &SignedIn,
    reply: Reply,
    now_ms: i64,
    message: &str,
) -> Result<Response> {
    if reply == Reply::Json {
        return Ok(
            Response::from_json(&serde_json::json!({ "status": null, "notice": message }))?
                .with_status(202),
        );
    }
    let notice = Notice::info(message);
    let known = Viewer::Known(signed_in);
    match page::render(env, config, known, Some(notice), "", now_ms, 202).await {
        Ok(page) => Ok(page),
        Err(_) => Ok(Response::ok(message)?.with_status(202)),
    }
}

/// A refused write or clear: its status and sentence, as JSON for the script or on the page; a
/// session that ended also clears the cookie and goes back to sign-in.
async fn answer_refusal(
    env: &Env,
    config: &Config,
    signed_in: &SignedIn,
    reply: Reply,
    now_ms: i64,
    refused: Refused,
) -> Result<Response> {
    let (status, message) = (refused.status(), refused.message());
    if let Refused::Store(why) | Refused::Session(account::Error::Store(why)) = &refused {
        tracing::error!(%why, "D1 failed before a write");
    }
    tracing::warn!(did = %signed_in.did, status, message, "status write refused");
    let response = if reply == Reply::Json {
        json_refusal(status, &message)?
    } else if status == 401 {
        // The session is over: back to sign-in, with the reason, and no loop.
        let notice = Notice::error(message);
        page::render(env, config, Viewer::Nobody, Some(notice), "", now_ms, 401).await?
    } else {
        let notice = Notice::error(message);
        let known = Viewer::Known(signed_in);
        page::render(env, config, known, Some(notice), "", now_ms, status).await?
    };
    if status == 401 {
        response
            .headers()
            .set("Set-Cookie", &config.cookies.clear_session())?;
    }
    Ok(response)
}

/// The write itself (`account::write`), and the broker told of a recorded one.
async fn write(
    env: &Env,
    config: &Config,
    who: &SignedIn,
    status: &StatusText,
) -> std::result::Result<Written, Refused> {
    let per_minute = config.writes_per_minute;
    let written = with_sessions(env, config, async |sessions| {
        sessions.write_status(&who.did, status, per_minute).await
    })
    .await?;
    if let Written::Recorded { status, counts } = &written {
        let upserted = ServerMessage::StatusUpserted {
            status: (**status).clone(),
        };
        publish(env, with_counts(vec![upserted], counts.clone())).await;
    }
    Ok(written)
}

/// The clear itself (`account::clear`), and the broker told of a recorded one.
async fn clear(
    env: &Env,
    config: &Config,
    who: &SignedIn,
) -> std::result::Result<Cleared, Refused> {
    let per_minute = config.writes_per_minute;
    let cleared = with_sessions(env, config, async |sessions| {
        sessions.clear_status(&who.did, per_minute).await
    })
    .await?;
    if let Cleared::Recorded { uri, counts, .. } = &cleared {
        let deleted = ServerMessage::StatusDeleted {
            uri: uri.clone(),
            author_did: who.did.clone(),
        };
        publish(env, with_counts(vec![deleted], counts.clone())).await;
    }
    Ok(cleared)
}

/// Runs `act` with the account sessions of this worker (D1, the Workers clock, edge's fetch).
async fn with_sessions<T>(
    env: &Env,
    config: &Config,
    act: impl AsyncFnOnce(
        &Sessions<'_, D1<'_>, WorkerClock, CachedHttp>,
    ) -> std::result::Result<T, Refused>,
) -> std::result::Result<T, Refused> {
    let db = env.d1("DB").map_err(|e| Refused::Store(e.to_string()))?;
    let d1 = D1(&db);
    let http = workers_common::http::transport(env).map_err(|e| Refused::Store(e.to_string()))?;
    let sessions = auth::sessions(&d1, config, &http)?;
    act(&sessions).await
}

/// What a write (or its refusal) answers with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reply {
    /// JSON: the page's script posts with fetch and asks for it.
    Json,
    /// Not JSON: a page or a redirect for a plain form post (JavaScript off), plain text for
    /// what is not a page (a refused WebSocket upgrade).
    Page,
}

impl Reply {
    /// The reply the request asks for, by its `Accept` header.
    pub fn asked_by(req: &Request) -> Result<Reply> {
        let json = req
            .headers()
            .get("Accept")?
            .is_some_and(|accept| accept.contains("application/json"));
        Ok(if json { Reply::Json } else { Reply::Page })
    }
}

/// A refusal for the page's script: `{"error": message}` with the status.
fn json_refusal(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

/// One publish to the broker, handed to the listener's outbox if the broker does not take it; a
/// failure of both is logged (pages catch up on reload), not an error: the change is already in
/// the repo and in D1.
pub async fn publish(env: &Env, messages: Vec<ServerMessage>) {
    let result = async {
        let broker = env.service("BROKER")?;
        let listener = env.service("LISTENER")?;
        workers_common::broker::publish(&broker, &listener, messages).await
    }
    .await;
    if let Err(error) = result {
        tracing::error!(%error, "publishing to the broker failed, and keeping it too");
    }
}
