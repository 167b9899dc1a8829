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
/// [`Cookies::sign_in`]).
const SIGN_IN: &str = "signin";

/// How this origin's cookies are made: `__Host-` prefixed and `Secure` on https (the browser
/// refuses a `__Host-` cookie unless Secure, Path=/ and no Domain), plain on a plain-http local
/// origin, where a browser would drop a Secure cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookies {
    Secure,
    Plain,
}

impl Cookies {
    /// The kind the origin at `url` can hold.
    pub fn for_origin(url: &worker::Url) -> Cookies {
        match url.scheme() {
            "https" => Cookies::Secure,
            _ => Cookies::Plain,
        }
    }

    fn name(self, base: &str) -> String {
        match self {
            Cookies::Secure => format!("__Host-{base}"),
            Cookies::Plain => base.to_owned(),
        }
    }

    fn set(self, base: &str, value: &str, max_age_s: i64) -> String {
        let cookie = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}",
            self.name(base)
        );
        match self {
            Cookies::Secure => cookie + "; Secure",
            Cookies::Plain => cookie,
        }
    }

    /// The `Set-Cookie` value for a new session id.
    pub fn session(self, id: &str, max_age_s: i64) -> String {
        self.set(SESSION, id, max_age_s)
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_session(self) -> String {
        self.session("", 0)
    }

    /// The `Set-Cookie` value that ties sign-ins to this browser for `max_age_s`: the callback
    /// is only accepted from a browser holding the value whose hash was stored with the `state`,
    /// so a callback URL from someone else's sign-in cannot sign this browser in as them (login
    /// CSRF, RFC 9700 §4.7.1). SameSite=Lax still sends it on the server's redirect back (a
    /// top-level GET).
    pub fn sign_in(self, value: &str, max_age_s: i64) -> String {
        self.set(SIGN_IN, value, max_age_s)
    }

    /// The `Set-Cookie` value that removes the sign-in cookie.
    pub fn clear_sign_in(self) -> String {
        self.sign_in("", 0)
    }

    /// The session id the request's cookie carries, if any.
    pub fn session_id(self, req: &Request) -> Option<String> {
        self.token_of(req, SESSION)
    }

    /// The sign-in binding the request's cookie carries, if any.
    pub fn sign_in_binding(self, req: &Request) -> Option<String> {
        self.token_of(req, SIGN_IN)
    }

    /// The random value (43 base64url characters, as we make them) that the request's cookie
    /// `base` carries, if any; anything else is not ours and is ignored.
    fn token_of(self, req: &Request, base: &str) -> Option<String> {
        let header = req.headers().get("Cookie").ok().flatten()?;
        let name = self.name(base);
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name
                && v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .then(|| v.to_owned())
        })
    }
}

/// What the table stores for an id.
pub fn hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The signed-in person, if the cookie names a live session.
pub async fn current(
    req: &Request,
    db: &D1Database,
    cookies: Cookies,
    now_ms: i64,
) -> Result<Option<SignedIn>> {
    let Some(id) = cookies.session_id(req) else {
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
