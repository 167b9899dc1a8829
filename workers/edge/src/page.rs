//! `GET /`: the home page (rendered by `domain::page`) from the broker's head and then one D1
//! batch (recent statuses, counts, the viewer's current status); and the hashed static assets.

use domain::internal;
pub use domain::page::Notice;
use domain::page::{self as view, HomePage, PageData};
use domain::sql::{self, BrowserSessionRow, CountRow, StatusViewRow};
use worker::{Env, Error, Response, Result};

use crate::config::Config;
use crate::session::SignedIn;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The icon, for `/favicon.ico`; every asset under `/assets/` is served from `public/` by the
/// asset layer before the worker runs (build.rs).
const ICON: &str = include_str!("../assets/icon.svg");

/// How many recent statuses the page lists.
const RECENT: i64 = 30;
/// How many statuses outside the picker "Also in use" shows (the most used).
const OTHER_COUNTS: i64 = 20;

/// Who the page is for.
pub enum Viewer<'a> {
    /// Signed out.
    Nobody,
    /// Already looked up (a handler that needed the session anyway).
    Known(&'a SignedIn),
    /// A session cookie's hash, looked up in the page's own D1 batch (GET /: one round trip).
    Cookie(String),
}

impl<'a> From<Option<&'a SignedIn>> for Viewer<'a> {
    fn from(signed_in: Option<&'a SignedIn>) -> Viewer<'a> {
        signed_in.map_or(Viewer::Nobody, Viewer::Known)
    }
}

/// Renders the page for `viewer` with an optional notice, answering `status`.
pub async fn render(
    env: &Env,
    config: &Config,
    viewer: Viewer<'_>,
    notice: Option<Notice>,
    handle_input: &str,
    now_ms: i64,
    status: u16,
) -> Result<Response> {
    let rendered = render_page(env, config, viewer, notice, handle_input, now_ms, status).await?;
    Ok(rendered.response)
}

/// A rendered page, and the authors it had to show by DID for want of a handle.
pub struct Rendered {
    pub response: Response,
    pub unknown_handles: Vec<String>,
}

pub async fn render_page(
    env: &Env,
    config: &Config,
    viewer: Viewer<'_>,
    notice: Option<Notice>,
    handle_input: &str,
    now_ms: i64,
    status: u16,
) -> Result<Rendered> {
    // The head first, then D1: whatever is published after the head was read reaches the page
    // over its socket (`?since=<head>`), and whatever was published before it is already in D1
    // (every publisher commits to D1 first). Read the other way round, a status published between
    // the two reads would be in neither (docs/broker.md).
    let seq = match broker_head(env).await {
        Ok(seq) => Some(seq),
        Err(error) => {
            tracing::warn!(%error, "broker head unavailable; the page starts live");
            None
        }
    };
    if config.page_pause_ms > 0 {
        worker::Delay::from(std::time::Duration::from_millis(config.page_pause_ms)).await;
    }
    let db = env.d1("DB")?;
    let mut statements = vec![
        sql::recent_statuses(RECENT),
        sql::status_counts(domain::present::EMOJI, OTHER_COUNTS),
    ];
    match &viewer {
        Viewer::Nobody => {}
        Viewer::Known(signed_in) => statements.push(sql::current_status(&signed_in.did)),
        Viewer::Cookie(id_hash) => {
            statements.push(sql::current_status_of_session(id_hash, now_ms));
            statements.push(sql::get_browser_session(id_hash, now_ms));
        }
    }
    let results = workers_common::d1::batch(&db, &statements).await?;
    let recent: Vec<StatusViewRow> = results[0].results()?;
    let mut unknown_handles: Vec<String> = recent
        .iter()
        .filter(|row| row.handle.is_none())
        .map(|row| row.author_did.clone())
        .collect();
    unknown_handles.sort();
    unknown_handles.dedup();
    let counts: Vec<CountRow> = results[1].results()?;
    let current = match results.get(2) {
        Some(result) => result
            .results::<StatusViewRow>()?
            .into_iter()
            .next()
            .map(|r| r.status),
        None => None,
    };
    let looked_up: Option<SignedIn> = match results.get(3) {
        Some(result) => result
            .results::<BrowserSessionRow>()?
            .into_iter()
            .next()
            .map(SignedIn::from),
        None => None,
    };
    let viewer = match viewer {
        Viewer::Nobody => None,
        Viewer::Known(signed_in) => Some(signed_in),
        Viewer::Cookie(_) => looked_up.as_ref(),
    };
    let page = HomePage::new(PageData {
        viewer: viewer.map(|v| view::Viewer {
            did: v.did.clone(),
            handle: v.handle.clone(),
            display_name: v.display_name.clone(),
            current,
        }),
        notice,
        handle_input: handle_input.to_owned(),
        counts,
        recent: recent.into_iter().map(StatusViewRow::into_view).collect(),
        now_ms,
        seq,
        css_url: CSS_PATH.to_owned(),
        js_url: JS_PATH.to_owned(),
        icon_url: ICON_PATH.to_owned(),
        profile_base: config.profile_base.clone(),
    });
    let html = page.html().map_err(Error::RustError)?;
    let response = Response::from_html(html)?.with_status(status);
    let headers = response.headers();
    headers.set("Cache-Control", "no-store")?;
    headers.set(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self' https: http://localhost:*; frame-ancestors 'none'; \
         base-uri 'none'",
    )?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    headers.set("Referrer-Policy", "same-origin")?;
    Ok(Rendered {
        response,
        unknown_handles,
    })
}

async fn broker_head(env: &Env) -> Result<u64> {
    let head: internal::BrokerHead = workers_common::broker::internal_json(
        &env.service("BROKER")?,
        "BROKER",
        internal::BROKER_HEAD,
    )
    .await?;
    Ok(head.seq)
}

/// `/favicon.ico`: the icon, for a day (its name cannot carry a hash, so the asset layer, which
/// serves `/assets/`, does not have it).
pub fn favicon() -> Result<Response> {
    let response = Response::ok(ICON)?;
    let headers = response.headers();
    headers.set("Content-Type", "image/svg+xml")?;
    headers.set("Cache-Control", "public, max-age=86400")?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    Ok(response)
}
