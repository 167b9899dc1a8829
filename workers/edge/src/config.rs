//! Edge's settings, from wrangler vars and secrets: which OAuth client it is, where identities
//! are looked up, whether private networks may be fetched. Configuration decides, not code edits
//! (docs/auth.md lists every var).

use std::cell::OnceCell;

use oauth::sealed::Keyring;
use oauth::{Client, IdentityConfig, KeyRing};
use worker::{Env, Url};
use workers_common::vars::{number, text_or};

use crate::session::Cookies;

/// The scope the app asks for: sign-in, and writing its own records only.
pub const SCOPE: &str = "atproto repo:xyz.statusphere.status";

/// Status writes one account may make per minute, unless `WRITES_PER_MINUTE` says otherwise.
const WRITES_PER_MINUTE: i64 = 10;

/// How long before an access token expires it is refreshed, unless `REFRESH_MARGIN_SECONDS` says
/// otherwise.
const REFRESH_MARGIN_S: i64 = 30;

/// How long a browser session lasts, unless `SESSION_TTL_SECONDS` says otherwise.
const SESSION_TTL_S: i64 = 30 * 24 * 3_600;

pub struct Config {
    /// The OAuth client, made on first use: reading the production key costs a scalar
    /// multiplication, which pages that need no client should not pay.
    client: OnceCell<Result<Client, String>>,
    /// The keys OAuth sessions are sealed with at rest, read on first use.
    session_keys: OnceCell<Result<Keyring, String>>,
    env: Env,
    url: Url,
    /// How cookies are made (Secure everywhere but a plain-http local origin).
    pub cookies: Cookies,
    /// Where profile links go (the DID is appended).
    pub profile_base: String,
    /// Status writes one account may make per minute (the benchmark raises it).
    pub writes_per_minute: i64,
    /// How long a browser session lasts, in seconds (a test shortens it).
    pub session_ttl_s: i64,
    /// Access tokens this close to expiry (seconds) are refreshed before use (a test makes every
    /// write refresh).
    pub refresh_margin_s: i64,
    /// How long the home page waits between reading the broker's head and reading D1: always 0,
    /// but for a test stack's `GET /?__test_pause_ms=<ms>` (`TEST_HOOKS=on`), which publishes
    /// in exactly that window.
    pub page_pause_ms: u64,
}

impl Config {
    /// Reads the settings; `url` is the request's (the loopback client's redirect follows the
    /// port the app is served on).
    pub fn from_env(env: &Env, url: &Url) -> Config {
        Config {
            cookies: Cookies::for_origin(url),
            profile_base: text_or(env, "PROFILE_URL", "/profile/"),
            writes_per_minute: number(env, "WRITES_PER_MINUTE", WRITES_PER_MINUTE, 1..=i64::MAX),
            session_ttl_s: number(env, "SESSION_TTL_SECONDS", SESSION_TTL_S, 1..=i64::MAX),
            refresh_margin_s: number(
                env,
                "REFRESH_MARGIN_SECONDS",
                REFRESH_MARGIN_S,
                1..=i64::MAX,
            ),
            page_pause_ms: test_page_pause_ms(env, url),
            client: OnceCell::new(),
            session_keys: OnceCell::new(),
            env: env.clone(),
            url: url.clone(),
        }
    }

    /// The OAuth client, or why there is none (a misconfigured deploy still serves its pages).
    pub fn client(&self) -> &Result<Client, String> {
        self.client.get_or_init(|| client(&self.env, &self.url))
    }

    /// The key ring from the `SESSION_KEYS` secret (`kid:key,…`, current first; `cargo xtask
    /// session-key` makes an entry), or why there is none.
    pub fn session_keys(&self) -> &Result<Keyring, String> {
        self.session_keys.get_or_init(|| {
            let spec = self
                .env
                .secret("SESSION_KEYS")
                .map(|s| s.to_string())
                .map_err(|_| "the SESSION_KEYS secret is not set".to_owned())?;
            Keyring::parse(&spec).map_err(|e| e.to_string())
        })
    }
}

/// `?__test_pause_ms=<ms>` (at most 10 s), on a stack with `TEST_HOOKS=on` only.
fn test_page_pause_ms(env: &Env, url: &Url) -> u64 {
    if text_or(env, "TEST_HOOKS", "off") != "on" {
        return 0;
    }
    url.query_pairs()
        .find(|(key, _)| key == "__test_pause_ms")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .map_or(0, |ms| ms.min(10_000))
}

/// Where identities are looked up (sign-in, and handles of authors the firehose never named).
pub fn identity(env: &Env) -> IdentityConfig {
    workers_common::http::identity(env)
}

fn client(env: &Env, url: &Url) -> Result<Client, String> {
    let identity = identity(env);
    match text_or(env, "OAUTH_CLIENT", "confidential").as_str() {
        "loopback" => {
            // The loopback client's redirect must be on 127.0.0.1 (not localhost).
            let port = url.port_or_known_default().unwrap_or(80);
            let redirect = format!("http://127.0.0.1:{port}/oauth/callback");
            Ok(Client::loopback(&redirect, SCOPE, identity))
        }
        "confidential" => {
            let public_url = text_or(env, "PUBLIC_URL", "");
            if !public_url.starts_with("https://") {
                return Err("PUBLIC_URL must be the app's https URL".into());
            }
            let jwk = env
                .secret("OAUTH_PRIVATE_KEY")
                .map(|s| s.to_string())
                .map_err(|_| "the OAUTH_PRIVATE_KEY secret is not set".to_owned())?;
            // One JWK, or a ring: a JSON array whose first key signs (docs/operations.md).
            let keys = KeyRing::from_jwks_text(&jwk).map_err(|e| e.to_string())?;
            Client::confidential(&public_url, keys, SCOPE, identity).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "OAUTH_CLIENT {other:?} is neither loopback nor confidential"
        )),
    }
}
