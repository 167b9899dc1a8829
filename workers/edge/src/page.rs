//! `GET /`: the home page (rendered by `domain::page`) from one D1 batch (recent statuses,
//! counts, the viewer's current status) and the broker's head; and the hashed static assets.

use domain::internal;
pub use domain::page::Notice;
use domain::page::{HomePage, PageData, Viewer};
use domain::sql::{self, CountRow, StatusViewRow};
use worker::{Env, Error, Response, Result};

use crate::config::Config;
use crate::session::SignedIn;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

/// How many recent statuses the page lists.
const RECENT: i64 = 30;

/// Renders the page for `viewer` with an optional notice, answering `status`.
pub async fn render(
    env: &Env,
    config: &Config,
    viewer: Option<&SignedIn>,
    notice: Option<Notice>,
    handle_input: &str,
    now_ms: i64,
    status: u16,
) -> Result<Response> {
    let db = env.d1("DB")?;
    let mut statements = vec![sql::recent_statuses(RECENT), sql::status_counts()];
    if let Some(viewer) = viewer {
        statements.push(sql::current_status(&viewer.did));
    }
    let results = workers_common::d1::batch(&db, &statements).await?;
    let recent: Vec<StatusViewRow> = results[0].results()?;
    let counts: Vec<CountRow> = results[1].results()?;
    let current = match results.get(2) {
        Some(result) => result
            .results::<StatusViewRow>()?
            .into_iter()
            .next()
            .map(|r| r.status),
        None => None,
    };
    let seq = match broker_head(env).await {
        Ok(seq) => Some(seq),
        Err(error) => {
            tracing::warn!(%error, "broker head unavailable; the page starts live");
            None
        }
    };
    let page = HomePage::new(PageData {
        viewer: viewer.map(|v| Viewer {
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
    Ok(response)
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

/// `GET /assets/app.<hash>.{css,js}`: cached for a year (the name changes with the content).
pub fn asset(path: &str) -> Result<Response> {
    let (body, kind) = if path == CSS_PATH {
        (CSS, "text/css; charset=utf-8")
    } else if path == JS_PATH {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return workers_common::text_error(404, "no such asset");
    };
    let response = Response::ok(body)?;
    let headers = response.headers();
    headers.set("Content-Type", kind)?;
    headers.set("Cache-Control", "public, max-age=31536000, immutable")?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    Ok(response)
}
