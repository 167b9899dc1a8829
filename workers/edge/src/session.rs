//! Browser sessions: the browser holds only an opaque random id in an HttpOnly, SameSite=Lax
//! cookie (`__Host-` prefixed and Secure on https); D1 holds the id's SHA-256 and the account.
//! A second short-lived cookie binds each sign-in to the browser that started it. Also the
//! cross-site check every state-changing request passes first.

use domain::sql::{self, BrowserSessionRow};
use sha2::{Digest, Sha256};
use worker::{D1Database, Request, Result};

/// The signed-in person behind a request.
pub struct SignedIn {
    pub did: String,
    pub handle: Option<String>,
    pub display_name: Option<String>,
}

impl From<BrowserSessionRow> for SignedIn {
    fn from(row: BrowserSessionRow) -> SignedIn {
        SignedIn {
            did: row.did,
            handle: row.handle,
            display_name: row.display_name,
        }
    }
}

/// The browser's session cookie.
const SESSION: &str = "sid";
/// The cookie that ties a sign-in in progress to the browser that started it (see
/// [`sign_in_cookie`]).
const SIGN_IN: &str = "signin";

fn cookie_name(base: &str, secure: bool) -> String {
    // `__Host-` makes the browser refuse the cookie unless Secure, Path=/ and no Domain.
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn set_cookie(base: &str, value: &str, secure: bool, max_age_s: i64) -> String {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}",
        cookie_name(base, secure)
    );
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// The `Set-Cookie` value for a new session id.
pub fn cookie(id: &str, secure: bool, max_age_s: i64) -> String {
    set_cookie(SESSION, id, secure, max_age_s)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    cookie("", secure, 0)
}

/// The `Set-Cookie` value that ties sign-ins to this browser for `max_age_s`: the callback is
/// only accepted from a browser holding the value whose hash was stored with the `state`, so a
/// callback URL from someone else's sign-in cannot sign this browser in as them (login CSRF,
/// RFC 9700 §4.7.1). SameSite=Lax still sends it on the server's redirect back (a top-level GET).
pub fn sign_in_cookie(value: &str, secure: bool, max_age_s: i64) -> String {
    set_cookie(SIGN_IN, value, secure, max_age_s)
}

/// The `Set-Cookie` value that removes the sign-in cookie.
pub fn clear_sign_in_cookie(secure: bool) -> String {
    sign_in_cookie("", secure, 0)
}

/// What the table stores for an id.
pub fn hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The random value (43 base64url characters, as we make them) that the request's cookie
/// `base` carries, if any; anything else is not ours and is ignored.
fn token_of(req: &Request, base: &str, secure: bool) -> Option<String> {
    let header = req.headers().get("Cookie").ok().flatten()?;
    let name = cookie_name(base, secure);
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name
            && v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| v.to_owned())
    })
}

/// The session id the request's cookie carries, if any.
pub fn id_of(req: &Request, secure: bool) -> Option<String> {
    token_of(req, SESSION, secure)
}

/// The sign-in binding the request's cookie carries, if any.
pub fn sign_in_binding_of(req: &Request, secure: bool) -> Option<String> {
    token_of(req, SIGN_IN, secure)
}

/// The signed-in person, if the cookie names a live session.
pub async fn current(
    req: &Request,
    db: &D1Database,
    secure: bool,
    now_ms: i64,
) -> Result<Option<SignedIn>> {
    let Some(id) = id_of(req, secure) else {
        return Ok(None);
    };
    let rows: Vec<BrowserSessionRow> =
        workers_common::d1::rows(db, &sql::get_browser_session(&hash(&id), now_ms)).await?;
    Ok(rows.into_iter().next().map(SignedIn::from))
}

/// Whether a state-changing request comes from this site's own pages. Browsers say where a
/// request comes from (`Sec-Fetch-Site`, and `Origin` on every cross-origin POST); a request
/// that says another site, or a mismatching or opaque origin, is refused. Requests with neither
/// header come from outside browsers and carry no ambient cookies to abuse.
pub fn same_origin(req: &Request) -> Result<bool> {
    let headers = req.headers();
    if let Some(site) = headers.get("Sec-Fetch-Site")? {
        if site != "same-origin" && site != "none" {
            return Ok(false);
        }
    }
    if let Some(origin) = headers.get("Origin")? {
        let own = req.url()?.origin().ascii_serialization();
        if origin != own {
            return Ok(false);
        }
    }
    Ok(true)
}
