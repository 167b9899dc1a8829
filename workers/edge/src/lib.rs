//! The edge worker: the only public worker. It serves the pages, signs people in with atproto
//! OAuth, writes their statuses to their repos, hands browsers' WebSockets to the broker, reports
//! health, and wakes the listener (from its cron trigger, and on the first request an isolate
//! serves, so a deploy does not wait for the next minute).

mod auth;
mod config;
mod error;
mod handles;
mod health;
mod limits;
mod page;
mod ports;
mod profiles;
mod session;
mod write;

use config::Config;
use error::Error;
use page::Viewer;

use std::sync::atomic::{AtomicBool, Ordering};

use domain::limit::Guarded;
use domain::{internal, sql};
use tracing::Instrument;
use worker::*;

/// Whether this isolate has woken the listener yet.
static LISTENER_WOKEN: AtomicBool = AtomicBool::new(false);

#[event(start)]
fn start() {
    workers_common::log::init("edge");
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    workers_common::usage::worker_request();
    if !LISTENER_WOKEN.swap(true, Ordering::Relaxed) {
        let env = env.clone();
        ctx.wait_until(async move {
            match wake_listener(&env).await {
                Ok(status) => tracing::info!(status, "listener woken by a first request"),
                Err(error) => tracing::error!(%error, "waking the listener failed"),
            }
        });
    }
    let span = workers_common::log::request_span(&req);
    async move {
        let method = req.method();
        let path = req.path();
        // Each request ends in one line saying how: its status and `outcome`.
        match route(req, &env, &ctx, method, &path).await {
            Ok(response) => {
                let status = response.status_code();
                tracing::info!(status, outcome = "ok", "request");
                Ok(response)
            }
            Err(error) => {
                let response = error.response()?;
                let status = response.status_code();
                if let Error::Internal(_) = error {
                    tracing::error!(status, outcome = "failed", %error, "request");
                } else {
                    tracing::info!(status, outcome = "refused", %error, "request");
                }
                Ok(response)
            }
        }
    }
    .instrument(span)
    .await
}

async fn route(
    req: Request,
    env: &Env,
    ctx: &Context,
    method: Method,
    path: &str,
) -> error::Result<Response> {
    let now_ms = workers_common::now_ms();
    match (&method, path) {
        (Method::Get, "/ws") => return websocket(req, env).await,
        (Method::Get, "/health") => return health::answer(&req, env).await,
        // The asset layer serves every asset there is (wrangler/edge.toml's `[assets]`): what
        // reaches the worker is a name no build made.
        (Method::Get, p) if p.starts_with("/assets/") => {
            return Err(Error::refused(404, "no such asset"))
        }
        // Browsers ask for it wherever a page names no icon (error pages, say).
        (Method::Get, "/favicon.ico") => return Ok(page::favicon()?),
        (_, p) if p.starts_with(TEST_HOOK_PREFIX) => return test_hook(req, env).await,
        (Method::Post, _) if !session::same_origin(&req)? => {
            return Err(Error::refused(403, "cross-site request refused"))
        }
        _ => {}
    }
    // Sign-ins and writes are rate-limited per network before anything else is spent on them.
    let guarded = match (&method, path) {
        (Method::Post, "/login") => Some(Guarded::SignIn),
        (Method::Post, "/status") | (Method::Post, "/status/clear") => Some(Guarded::Write),
        _ => None,
    };
    if let Some(guarded) = guarded {
        let network = limits::network_of(&req)?;
        let reply = write::Reply::asked_by(&req)?;
        if let Some(refused) = limits::refusal(env, guarded, &network, reply).await? {
            return Ok(refused);
        }
    }
    let url = req.url()?;
    let config = Config::from_env(env, &url);
    match (method, path) {
        (Method::Get, p)
            if p.starts_with("/profile/")
                || (p == "/" && url.query().is_some_and(|q| q.contains("before="))) =>
        {
            let viewer = match config.cookies.session_id(&req) {
                Some(id) => Viewer::Cookie(session::hash(&id)),
                None => Viewer::Nobody,
            };
            Ok(page::history(env, &config, viewer, &url, now_ms).await?)
        }
        (Method::Get, "/") => {
            let viewer = match config.cookies.session_id(&req) {
                Some(id) => Viewer::Cookie(session::hash(&id)),
                None => Viewer::Nobody,
            };
            let page = page::render_page(env, &config, viewer, None, "", now_ms, 200).await?;
            if !page.unknown_handles.is_empty() {
                // Look a few up after the page is sent; the next page (or the live update) has them.
                let (env, dids) = (env.clone(), page.unknown_handles);
                ctx.wait_until(async move {
                    let lookups = handles::look_up_shown(&env, &dids, now_ms);
                    if let Err(error) = lookups.await {
                        tracing::warn!(%error, "handle lookups after a page failed");
                    }
                });
            }
            Ok(page.response)
        }
        (Method::Post, "/login") => Ok(auth::login(req, env, &config, now_ms).await?),
        (Method::Get, "/oauth/callback") => Ok(auth::callback(req, env, &config, now_ms).await?),
        (Method::Post, "/logout") => Ok(auth::logout(req, env, &config, now_ms).await?),
        (Method::Post, "/status") => Ok(write::set_status(req, env, &config, now_ms).await?),
        (Method::Post, "/status/clear") => {
            Ok(write::clear_status(req, env, &config, now_ms).await?)
        }
        (Method::Get, p @ ("/oauth-client-metadata.json" | "/.well-known/jwks.json")) => {
            auth::client_document(&config, p)
        }
        (Method::Get | Method::Head, _) => Err(Error::refused(404, "not found")),
        _ => Err(Error::refused(405, "method not allowed")),
    }
}

/// The cron trigger makes sure the listener is running (waking it twice is harmless), looks up
/// handles the firehose never named, and purges expired rows.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    workers_common::usage::worker_request();
    // Every line of this run carries its `alarm_id` and the cron that fired.
    let span = workers_common::log::alarm_span();
    span.record("cron", event.cron().as_str());
    async move {
        match wake_listener(&env).await {
            Ok(status) => tracing::info!(status, "listener woken"),
            Err(error) => tracing::error!(%error, "waking the listener failed"),
        }
        let now_ms = workers_common::now_ms();
        if let Err(error) = background_reads(&env, now_ms).await {
            tracing::error!(%error, "background reads failed");
        }
        // Abandoned sign-ins, expired browser sessions and spent budget windows: whatever
        // strangers leave behind goes within a minute, not only when somebody finishes a sign-in.
        if let Err(error) = purge(&env, now_ms).await {
            tracing::error!(%error, "purging expired rows failed");
        }
    }
    .instrument(span)
    .await
}

/// What the last quiet run of the cron's background reads saw (`domain::sql::Quiet`); per isolate,
/// so a new isolate runs them once more than it needs to.
static QUIET: std::sync::Mutex<Option<sql::Quiet>> = std::sync::Mutex::new(None);

/// Handles of authors never named, and display names due a read, unless the last run claimed
/// none and nothing has changed since.
async fn background_reads(env: &Env, now_ms: i64) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Newest {
        newest: Option<i64>,
    }
    let db = env.d1("DB")?;
    let newest = workers_common::d1::rows::<Newest>(&db, &sql::newest_status())
        .await?
        .first()
        .and_then(|row| row.newest);
    let skip_ms = 1_000
        * workers_common::vars::number(
            env,
            "CRON_QUIET_SECONDS",
            sql::QUIET_SKIP_MS / 1_000,
            0..=86_400,
        );
    let quiet = *QUIET.lock().unwrap_or_else(|e| e.into_inner());
    if quiet.is_some_and(|q| q.holds(newest, now_ms, skip_ms)) {
        return Ok(());
    }
    // A run that failed counts as one that claimed something: it is not a quiet one.
    let handles = handles::look_up_recent(env, now_ms)
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "handle lookups failed");
            1
        });
    let profiles = profiles::refresh(env, now_ms)
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "profile reads failed");
            1
        });
    // A run that claimed nothing starts a quiet stretch; one that claimed any ends it.
    *QUIET.lock().unwrap_or_else(|e| e.into_inner()) =
        (handles == 0 && profiles == 0).then_some(sql::Quiet {
            newest,
            at_ms: now_ms,
        });
    Ok(())
}

async fn purge(env: &Env, now_ms: i64) -> Result<()> {
    let db = env.d1("DB")?;
    workers_common::d1::batch(&db, &domain::sql::purge_expired(now_ms)).await?;
    Ok(())
}

/// Wakes the listener, then the backfill (each is idempotent); the listener's status code.
async fn wake_listener(env: &Env) -> Result<u16> {
    let url = format!("https://listener{}", internal::LISTENER_WAKE);
    let response = env.service("LISTENER")?.fetch(url, None).await?;
    let url = format!("https://backfill{}", internal::BACKFILL_WAKE);
    match env.service("BACKFILL")?.fetch(url, None).await {
        Ok(answer) if answer.status_code() == 200 => {}
        Ok(answer) => tracing::error!(status = answer.status_code(), "waking the backfill failed"),
        Err(error) => tracing::error!(%error, "waking the backfill failed"),
    }
    Ok(response.status_code())
}

/// Hands a browser's WebSocket upgrade to the broker, refusing cross-site pages and networks that
/// open too many, and naming the page's network for the broker's connection cap.
async fn websocket(req: Request, env: &Env) -> error::Result<Response> {
    let upgrade = req.headers().get("Upgrade")?;
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(Error::refused(426, "expected a WebSocket upgrade"));
    }
    if let Some(origin) = req.headers().get("Origin")? {
        let url = req.url()?;
        let own = url.origin().ascii_serialization();
        if origin != own {
            return Err(Error::refused(403, "cross-origin WebSocket refused"));
        }
    }
    let network = limits::network_of(&req)?;
    if let Some(refused) =
        limits::refusal(env, Guarded::Connect, &network, write::Reply::Page).await?
    {
        return Ok(refused);
    }
    // A request's own headers are immutable: the upgrade goes on with a copy, in which whatever
    // the browser sent under this name is replaced.
    let headers = req.headers().clone();
    headers.set(internal::NETWORK_HEADER, &network)?;
    let forwarded = Request::new_with_init(
        req.url()?.as_str(),
        RequestInit::new()
            .with_method(Method::Get)
            .with_headers(headers),
    )?;
    Ok(env.service("BROKER")?.fetch_request(forwarded).await?)
}

/// Routes under this prefix exist only when the `TEST_HOOKS` var is `"on"`, which only the test and
/// benchmark stacks set (`wrangler dev --var TEST_HOOKS:on`); no wrangler config sets it, and the
/// deploy refuses a config that does.
const TEST_HOOK_PREFIX: &str = "/__test/";

/// `/__test/broker/<route>`: lets tests and benchmarks reach the broker's internal routes (publish,
/// head, stats) the way the listener and edge itself will, through the service binding.
async fn test_hook(req: Request, env: &Env) -> error::Result<Response> {
    let enabled = env
        .var("TEST_HOOKS")
        .is_ok_and(|value| value.to_string() == "on");
    if !enabled {
        return Err(Error::refused(404, "not found"));
    }
    let url = req.url()?;
    let Some(route) = url.path().strip_prefix("/__test/broker") else {
        return Err(Error::refused(404, "no such test hook"));
    };
    let mut target = Url::parse("https://broker").map_err(worker::Error::from)?;
    target.set_path(route);
    target.set_query(url.query());
    let forwarded = Request::new_with_init(
        target.as_str(),
        RequestInit::new()
            .with_method(req.method())
            .with_headers(req.headers().clone())
            .with_body(req.inner().body().map(Into::into)),
    )?;
    Ok(env.service("BROKER")?.fetch_request(forwarded).await?)
}
