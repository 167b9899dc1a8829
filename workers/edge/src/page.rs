//! `GET /`: the home page (rendered by `domain::page`) from the broker's head and then one D1
//! batch (recent statuses, counts, the viewer's current status); and the hashed static assets.

use domain::internal;
pub use domain::page::Notice;
use domain::page::{self as view, HomePage, Listing, PageData, PAGE_SIZE};
use domain::sql::{self, AccountNameRow, Before, BrowserSessionRow, CountRow, StatusViewRow};
use worker::{Env, Error, Response, Result};

use crate::config::Config;
use crate::session::SignedIn;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The icon, for `/favicon.ico`; every asset under `/assets/` is served from `public/` by the
/// asset layer before the worker runs (build.rs).
const ICON: &str = include_str!("../assets/icon.svg");

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

/// The home page itself.
pub async fn render_page(
    env: &Env,
    config: &Config,
    viewer: Viewer<'_>,
    notice: Option<Notice>,
    handle_input: &str,
    now_ms: i64,
    status: u16,
) -> Result<Rendered> {
    let page = Listed {
        listing: Listing::Everyone,
        before: None,
        notice,
        handle_input,
        status,
    };
    render_listed(env, config, viewer, page, now_ms).await
}

/// What a page lists, and how it answers.
pub struct Listed<'a> {
    pub listing: Listing,
    /// Statuses older than this (a page after the first).
    pub before: Option<Before>,
    pub notice: Option<Notice>,
    pub handle_input: &'a str,
    pub status: u16,
}

/// A page of statuses: the home page (everyone's newest, live, with the picker and the counts),
/// or a history page (everyone's older statuses, or one person's), which is the feed alone.
pub async fn render_listed(
    env: &Env,
    config: &Config,
    viewer: Viewer<'_>,
    page: Listed<'_>,
    now_ms: i64,
) -> Result<Rendered> {
    let home = page.listing == Listing::Everyone && page.before.is_none();
    // The head first, then D1: whatever is published after the head was read reaches the page
    // over its socket (`?since=<head>`), and whatever was published before it is already in D1
    // (every publisher commits to D1 first). Read the other way round, a status published between
    // the two reads would be in neither (docs/broker.md). History pages are not live.
    let live_from = match home {
        false => None,
        true => match broker_head(env).await {
            Ok(head) => Some(head),
            Err(error) => {
                tracing::warn!(%error, "broker head unavailable; the page starts live");
                None
            }
        },
    };
    if config.page_pause_ms > 0 {
        worker::Delay::from(std::time::Duration::from_millis(config.page_pause_ms)).await;
    }
    let db = env.d1("DB")?;
    let author = match &page.listing {
        Listing::Everyone => None,
        Listing::Person { did, .. } => Some(did.as_str()),
    };
    // One row beyond the page says whether there is an older one.
    let mut statements = vec![sql::statuses_page(
        author,
        page.before.as_ref(),
        PAGE_SIZE as i64 + 1,
    )];
    if home {
        statements.push(sql::status_counts(domain::present::EMOJI, OTHER_COUNTS));
    }
    let viewer_at = statements.len();
    match &viewer {
        Viewer::Nobody => {}
        Viewer::Known(signed_in) => statements.push(sql::current_status(&signed_in.did)),
        Viewer::Cookie(id_hash) => {
            statements.push(sql::current_status_of_session(id_hash, now_ms));
            statements.push(sql::get_browser_session(id_hash, now_ms));
        }
    }
    let results = workers_common::d1::batch(&db, &statements).await?;
    let mut recent: Vec<StatusViewRow> = results[0].results()?;
    let more = recent.len() > PAGE_SIZE;
    recent.truncate(PAGE_SIZE);
    let mut unknown_handles: Vec<String> = recent
        .iter()
        .filter(|row| row.handle.is_none())
        .map(|row| row.author_did.clone())
        .collect();
    unknown_handles.sort();
    unknown_handles.dedup();
    let counts: Vec<CountRow> = match home {
        true => results[1].results()?,
        false => Vec::new(),
    };
    let current = match results.get(viewer_at) {
        Some(result) => result
            .results::<StatusViewRow>()?
            .into_iter()
            .next()
            .map(|r| r.status),
        None => None,
    };
    let looked_up: Option<SignedIn> = match results.get(viewer_at + 1) {
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
    let rendered = HomePage::new(PageData {
        viewer: viewer.map(|v| view::Viewer {
            did: v.did.clone(),
            handle: v.handle.clone(),
            display_name: v.display_name.clone(),
            current,
        }),
        notice: page.notice,
        handle_input: page.handle_input.to_owned(),
        counts,
        recent: recent.into_iter().map(StatusViewRow::into_view).collect(),
        now_ms,
        live_from,
        css_url: CSS_PATH.to_owned(),
        js_url: JS_PATH.to_owned(),
        icon_url: ICON_PATH.to_owned(),
        profile_base: config.profile_base.clone(),
        listing: page.listing.clone(),
        before: page.before.clone(),
        more,
    });
    let html = rendered.html().map_err(Error::RustError)?;
    let response = Response::from_html(html)?.with_status(page.status);
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

/// `GET /?before=…` (everyone's older statuses) and `GET /profile/<handle or DID>[?before=…]`
/// (one person's): history pages, the feed alone and not live. A person is found in D1 only
/// (a page never waits on the network): by DID, or by a handle the app has verified.
pub async fn history(
    env: &Env,
    config: &Config,
    viewer: Viewer<'_>,
    url: &worker::Url,
    now_ms: i64,
) -> crate::error::Result<Response> {
    use crate::error::Error as Refusal;
    let before = match url.query_pairs().find(|(key, _)| key == "before") {
        None => None,
        Some((_, value)) => Some(
            view::parse_cursor(&value)
                .ok_or_else(|| Refusal::refused(400, "That page link is not one this app made."))?,
        ),
    };
    let listing = match url.path().strip_prefix("/profile/") {
        None => Listing::Everyone,
        Some(id) => {
            let id = view::percent_decode(id)
                .ok_or_else(|| Refusal::refused(400, "That is not a handle or a DID."))?;
            person(env, &id).await?
        }
    };
    let page = Listed {
        listing,
        before,
        notice: None,
        handle_input: "",
        status: 200,
    };
    Ok(render_listed(env, config, viewer, page, now_ms)
        .await?
        .response)
}

/// Whose page `/profile/<id>` is: a DID (its handle if known), or a handle the app knows.
async fn person(env: &Env, id: &str) -> crate::error::Result<Listing> {
    use crate::error::Error as Refusal;
    let db = env.d1("DB")?;
    let statement = if id.starts_with("did:") {
        id.parse::<lexicon::syntax::Did>()
            .map_err(|_| Refusal::refused(400, "That is not a handle or a DID."))?;
        sql::account_by_did(id)
    } else {
        let handle = id.trim_start_matches('@').to_ascii_lowercase();
        handle
            .parse::<lexicon::syntax::Handle>()
            .map_err(|_| Refusal::refused(400, "That is not a handle or a DID."))?;
        sql::account_by_handle(&handle)
    };
    let found = workers_common::d1::rows::<AccountNameRow>(&db, &statement)
        .await?
        .into_iter()
        .next();
    match (found, id.starts_with("did:")) {
        (Some(row), _) => Ok(Listing::Person {
            label: row.handle.unwrap_or_else(|| row.did.clone()),
            did: row.did,
        }),
        (None, true) => Ok(Listing::Person {
            did: id.to_owned(),
            label: id.to_owned(),
        }),
        (None, false) => Err(Refusal::refused(
            404,
            "This app knows no account with that handle.",
        )),
    }
}

/// The head of the shard the broker binds this page to.
async fn broker_head(env: &Env) -> Result<internal::BrokerHead> {
    workers_common::broker::internal_json(&env.service("BROKER")?, "BROKER", internal::BROKER_HEAD)
        .await
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
