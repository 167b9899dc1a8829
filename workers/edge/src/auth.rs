//! Sign-in, sign-out and the OAuth session behind a signed-in person: `/login` (resolve, PAR,
//! off to the person's server), `/oauth/callback` (checks, tokens, a browser session),
//! `/logout` (revoke, forget), the confidential client's metadata and JWKS, and a fresh
//! session for writes (refreshed under a D1 lease: refresh tokens are single-use).

use account::{Lease, Sessions};
use domain::sql;
use oauth::{Callback, OAuth, Pending, Session};
use serde::Deserialize;
use worker::{Env, Request, Response, Result};

use crate::config::Config;
use crate::error::{self, Error};
use crate::page::{self, Notice, Viewer};
use crate::ports::{WorkerClock, D1};
use crate::session;
use workers_common::http::CachedHttp;

/// The fetches one refresh makes at most: the DID document, the PDS's protected-resource
/// metadata, the authorization server's metadata, the token request and its nonce retry.
const REFRESH_FETCHES: u64 = 5;

/// How long a sign-in may stay pending in D1.
const PENDING_TTL_MS: i64 = oauth::client::PENDING_TTL_S * 1000;
// One refresh may hold the lease longer than the worst case of the fetches it makes (each cut
// off at its deadline), so that a slow server cannot make two refreshers overlap.
const _: () = assert!(
    Lease::DEFAULT.hold_ms as u64
        > REFRESH_FETCHES * workers_common::http::FETCH_DEADLINE_MS + 5_000
);

/// The flows, or (for a deploy whose client is misconfigured) why sign-in is unavailable.
fn oauth<'a>(
    config: &'a Config,
    http: &'a CachedHttp,
    now_ms: i64,
) -> std::result::Result<OAuth<'a, CachedHttp>, oauth::Error> {
    match config.client() {
        Ok(client) => Ok(OAuth {
            http,
            client,
            now_s: now_ms / 1000,
        }),
        Err(why) => {
            tracing::error!(%why, "sign-in is misconfigured");
            Err(oauth::Error::Key(why.clone()))
        }
    }
}

/// A 303 to `location`, setting `cookies`.
pub fn see_other(location: &str, cookies: &[&str]) -> Result<Response> {
    let response = Response::empty()?.with_status(303);
    response.headers().set("Location", location)?;
    response.headers().set("Cache-Control", "no-store")?;
    for cookie in cookies {
        response.headers().append("Set-Cookie", cookie)?;
    }
    Ok(response)
}

/// What the person's error says, and which status it gets.
fn sign_in_failure(error: &oauth::Error) -> (u16, String) {
    use oauth::Error::*;
    match error {
        Input(m) | Identity(m) => (400, m.clone()),
        Callback(m) => (400, m.clone()),
        Denied(_) => (
            403,
            "Sign-in was declined, so you are not signed in.".into(),
        ),
        Transport(_) | Server { .. } | Protocol(_) => (
            502,
            format!("Your server could not complete the sign-in ({error}). Please try again."),
        ),
        Key(_) => (
            503,
            "Sign-in is not available on this server right now.".into(),
        ),
    }
}

/// `POST /login`: starts a sign-in for the handle, DID or server typed in.
pub async fn login(mut req: Request, env: &Env, config: &Config, now_ms: i64) -> Result<Response> {
    // This browser's sign-in binding: kept if it has one (sign-ins in two tabs both finish).
    let binding = match config.cookies.sign_in_binding(&req) {
        Some(binding) => binding,
        None => oauth::random::token().map_err(|e| worker::Error::RustError(e.to_string()))?,
    };
    let form = req.form_data().await.ok();
    let input = form
        .as_ref()
        .and_then(|f| f.get_field("handle"))
        .unwrap_or_default();
    let input: String = input.chars().take(512).collect();
    let db = env.d1("DB")?;
    let http = workers_common::http::transport(env)?;
    match async { oauth(config, &http, now_ms)?.authorize(&input).await }.await {
        Ok((url, pending)) => {
            let data = match seal(config, &serde_json::to_string(&pending)?, &pending.state) {
                Ok(data) => data,
                Err(error) => return sign_in_unavailable(env, config, &input, now_ms, error).await,
            };
            let statement = sql::insert_oauth_state(
                &pending.state,
                &data,
                &session::hash(&binding),
                now_ms + PENDING_TTL_MS,
            );
            workers_common::d1::batch(&db, &[statement]).await?;
            tracing::info!(issuer = %pending.server.issuer, "sign-in started");
            let cookie = config
                .cookies
                .sign_in(&binding, oauth::client::PENDING_TTL_S);
            see_other(&url, &[&cookie])
        }
        Err(error) => {
            tracing::warn!(%error, "sign-in could not start");
            let (status, text) = sign_in_failure(&error);
            page::render(
                env,
                config,
                Viewer::Nobody,
                Some(Notice::error(text)),
                &input,
                now_ms,
                status,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct Taken {
    data: String,
    fresh: i64,
    /// The SHA-256 of the sign-in binding of the browser that started it.
    browser: String,
}

/// `GET /oauth/callback`: finishes a sign-in.
pub async fn callback(req: Request, env: &Env, config: &Config, now_ms: i64) -> Result<Response> {
    let url = req.url()?;
    let params = Callback::from_query(url.query().unwrap_or(""));
    let db = env.d1("DB")?;
    let fail = |status: u16, text: String| async move {
        page::render(
            env,
            config,
            Viewer::Nobody,
            Some(Notice::error(text)),
            "",
            now_ms,
            status,
        )
        .await
    };
    let Some(state) = params.state.as_deref().filter(|s| s.len() <= 128) else {
        return fail(
            400,
            "This sign-in link is incomplete. Please sign in again.".into(),
        )
        .await;
    };
    let another_browser = || {
        fail(
            400,
            "This sign-in was started in another browser (or this browser's cookies were \
             cleared), so it cannot finish here. Please sign in again."
                .into(),
        )
    };
    // Only the browser that started a sign-in may finish it (login CSRF).
    let Some(binding) = config.cookies.sign_in_binding(&req) else {
        tracing::warn!("a sign-in callback without this browser's binding");
        return another_browser().await;
    };
    let taken: Vec<Taken> =
        workers_common::d1::rows(&db, &sql::take_oauth_state(state, now_ms)).await?;
    let Some(taken) = taken.into_iter().next().filter(|t| t.fresh == 1) else {
        return fail(
            400,
            "This sign-in has expired or was already used. Please sign in again.".into(),
        )
        .await;
    };
    if taken.browser != session::hash(&binding) {
        tracing::warn!("a sign-in callback from another browser than the one that started it");
        return another_browser().await;
    }
    let opened = open(config, &taken.data, state);
    let pending: Pending = match opened.and_then(|json| {
        serde_json::from_slice(&json).map_err(|e| oauth::Error::Key(e.to_string()))
    }) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::error!(%error, "a stored sign-in is unreadable");
            return fail(
                500,
                "This sign-in could not be finished. Please sign in again.".into(),
            )
            .await;
        }
    };
    let http = workers_common::http::transport(env)?;
    let session = match async {
        oauth(config, &http, now_ms)?
            .callback(&params, pending)
            .await
    }
    .await
    {
        Ok(session) => session,
        Err(error) => {
            tracing::warn!(%error, "sign-in refused at the callback");
            let (status, text) = sign_in_failure(&error);
            return fail(status, text).await;
        }
    };
    let reach = crate::config::identity(env).reach;
    let display_name = account::repo::display_name(&http, reach, &session.pds, &session.did)
        .await
        .ok()
        .flatten();
    let id = oauth::random::token().map_err(|e| worker::Error::RustError(e.to_string()))?;
    let sealed = match seal(config, &serde_json::to_string(&session)?, &session.did) {
        Ok(sealed) => sealed,
        Err(error) => return sign_in_unavailable(env, config, "", now_ms, error).await,
    };
    let mut statements = vec![
        sql::put_oauth_session(&session.did, &sealed, now_ms),
        sql::insert_browser_session(
            &session::hash(&id),
            &session.did,
            display_name.as_deref(),
            now_ms,
            now_ms + config.session_ttl_s * 1000,
        ),
    ];
    if let Some(handle) = &session.handle {
        statements.push(sql::learn_handle(&session.did, handle, now_ms * 1000));
    }
    statements.push(sql::set_display_name(
        &session.did,
        display_name.as_deref(),
        now_ms,
    ));
    workers_common::d1::batch(&db, &statements).await?;
    tracing::info!(did = %session.did, "signed in");
    import_own_statuses(env, config, &db, &http, &session, display_name.as_deref()).await;
    let cookie = config.cookies.session(&id, config.session_ttl_s);
    let done = config.cookies.clear_sign_in();
    see_other("/", &[&cookie, &done])
}

/// The person's own statuses, read from their repository (`account::repo`) so that the page they
/// land on shows their status even if the network never brought it here; what changed goes to
/// the broker. A failure is logged: the sign-in goes on.
async fn import_own_statuses(
    env: &Env,
    config: &Config,
    db: &worker::D1Database,
    http: &CachedHttp,
    session: &Session,
    display_name: Option<&str>,
) {
    let d1 = D1(db);
    let imported = match sessions(&d1, config, http) {
        Ok(sessions) => sessions.import_own_statuses(session, display_name).await,
        Err(error) => Err(error.to_string()),
    };
    match imported {
        Ok(imported) => {
            if !imported.dropped.is_empty() {
                tracing::warn!(did = %session.did, dropped = ?imported.dropped, "records of the repository refused");
            }
            tracing::info!(did = %session.did, read = imported.read, changed = imported.messages.len(), "own statuses read");
            if !imported.messages.is_empty() {
                crate::write::publish(env, imported.messages).await;
            }
        }
        Err(error) => tracing::warn!(did = %session.did, %error, "own statuses not read"),
    }
}

/// `POST /logout`: revokes the grant at the person's server (best effort), forgets the OAuth
/// session, and signs every browser of that account out.
pub async fn logout(req: Request, env: &Env, config: &Config, now_ms: i64) -> Result<Response> {
    let db = env.d1("DB")?;
    if let Some(signed_in) = session::current(&req, &db, config.cookies, now_ms).await? {
        let d1 = D1(&db);
        let http = workers_common::http::transport(env)?;
        // Misconfigured keys or a failing D1 only mean no revocation: signing out still happens.
        let stored = match sessions(&d1, config, &http) {
            Ok(sessions) => sessions.load(&signed_in.did).await.unwrap_or_default(),
            Err(_) => None,
        };
        if let Some(session) = stored {
            if let Err(error) = async { oauth(config, &http, now_ms)?.revoke(&session).await }.await
            {
                tracing::warn!(%error, "revocation failed; the session is forgotten anyway");
            }
        }
        let statements = [
            sql::delete_oauth_session(&signed_in.did),
            sql::delete_browser_sessions_of(&signed_in.did),
        ];
        workers_common::d1::batch(&db, &statements).await?;
        tracing::info!(did = %signed_in.did, "signed out");
    }
    see_other("/", &[&config.cookies.clear_session()])
}

/// Seals `json` (a session, a sign-in in progress) for the row `row` with the session keys.
fn seal(config: &Config, json: &str, row: &str) -> std::result::Result<String, oauth::Error> {
    let keys = config.session_keys().as_ref().map_err(|why| {
        tracing::error!(%why, "session keys are misconfigured");
        oauth::Error::Key(why.clone())
    })?;
    keys.seal(json.as_bytes(), row)
}

/// Opens what [`seal`] sealed for the row `row`.
fn open(config: &Config, sealed: &str, row: &str) -> std::result::Result<Vec<u8>, oauth::Error> {
    let keys = config
        .session_keys()
        .as_ref()
        .map_err(|why| oauth::Error::Key(why.clone()))?;
    keys.open(sealed, row)
}

/// The sign-in page, saying sign-in is unavailable (this server's keys are misconfigured).
async fn sign_in_unavailable(
    env: &Env,
    config: &Config,
    input: &str,
    now_ms: i64,
    error: oauth::Error,
) -> Result<Response> {
    let (status, text) = sign_in_failure(&error);
    let notice = Some(Notice::error(text));
    page::render(env, config, Viewer::Nobody, notice, input, now_ms, status).await
}

/// The signed-in accounts' sessions, on D1, the Workers clock and fetch; or why there are none to
/// be had (this deploy's client or session keys are misconfigured).
pub fn sessions<'a>(
    db: &'a D1<'a>,
    config: &'a Config,
    http: &'a CachedHttp,
) -> account::Result<Sessions<'a, D1<'a>, WorkerClock, CachedHttp>> {
    let misconfigured = |why: &String| {
        tracing::error!(%why, "sessions are misconfigured");
        account::Error::Unavailable("sign-in is not available on this server right now".into())
    };
    Ok(Sessions {
        db,
        clock: &WorkerClock,
        http,
        client: config.client().as_ref().map_err(misconfigured)?,
        keys: config.session_keys().as_ref().map_err(misconfigured)?,
        margin_s: config.refresh_margin_s,
        lease: Lease::DEFAULT,
    })
}

/// `GET /oauth-client-metadata.json` and `GET /.well-known/jwks.json` (the confidential
/// client's; the loopback client has neither).
pub fn client_document(config: &Config, path: &str) -> error::Result<Response> {
    let Ok(client) = config.client() else {
        return Err(Error::refused(
            503,
            "sign-in is not configured on this server",
        ));
    };
    if client.auth_method() == "none" {
        return Err(Error::refused(
            404,
            "no client metadata: this is the loopback client",
        ));
    }
    let body = if path == "/.well-known/jwks.json" {
        client.jwks()
    } else {
        client.metadata_document("Statusphere")
    };
    let response = workers_common::json_response(200, &body)?;
    response
        .headers()
        .set("Cache-Control", "public, max-age=300")?;
    Ok(response)
}
