//! A cache for identity lookups, in front of any transport: [`Cached`] wraps an `HttpClient`
//! and keeps the 200 answers to the GETs this crate marks with [`CacheFor`] (DNS-over-HTTPS
//! queries, `/.well-known/atproto-did`, DID documents) in a [`CacheStore`] for that long. Every
//! other request passes through untouched, so a worker can use one transport for everything.
//!
//! Why: a sign-in resolves three or four documents and every token refresh two or three again,
//! each a subrequest and a round trip to someone else's server. What a cached answer costs is
//! staleness: a handle re-pointed, or an account moved to another PDS, is seen up to the TTL
//! later (docs/auth.md, "Identity"). Failures are never kept, so a server that was down is
//! asked again at once; a DNS name without the record is an answer (kept for the shorter
//! [`DNS_TTL_S`]).

use atrium_xrpc::HttpClient;
use http::{Request, Response};

/// How long the answer to this request may be kept, in seconds: set by `fetch::get_cached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFor(pub u32);

/// DNS answers (including "no such record": one person setting up their handle waits at most
/// this long after a failed try).
pub const DNS_TTL_S: u32 = 60;
/// `/.well-known/atproto-did` answers and DID documents.
pub const DOCUMENT_TTL_S: u32 = 300;

/// Where cached answers live: D1 in edge, memory in tests. A value is the answer's content type
/// and body ([`Entry`]); expiry is the store's (it knows its clock).
#[cfg_attr(not(target_arch = "wasm32"), trait_variant::make(Send))]
#[allow(async_fn_in_trait)] // single-threaded in a worker; Send natively (above)
pub trait CacheStore {
    /// The entry under `key`, if one is stored and has not expired.
    async fn get(&self, key: &str) -> Option<Entry>;
    /// Keeps `entry` under `key` for `ttl_s` seconds (a failure to keep it is not an error).
    async fn put(&self, key: &str, entry: &Entry, ttl_s: u32);
}

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub content_type: String,
    pub body: String,
}

impl Entry {
    /// One string, for stores that keep text: the content type, a newline, the body.
    pub fn to_text(&self) -> String {
        format!("{}\n{}", self.content_type, self.body)
    }

    pub fn from_text(text: &str) -> Option<Entry> {
        let (content_type, body) = text.split_once('\n')?;
        Some(Entry {
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        })
    }
}

/// A transport with a cache in front of the lookups that ask for one.
pub struct Cached<T, S> {
    pub inner: T,
    pub store: S,
}

/// Marks a response that came from the cache (for logs and tests).
pub const HIT_HEADER: &str = "x-statusphere-cache";

/// `Sync` natively (where transports' futures are `Send`), nothing in a worker (where D1 is a
/// JavaScript object, and one thread).
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync> MaybeSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSync for T {}

impl<T, S> HttpClient for Cached<T, S>
where
    T: HttpClient + MaybeSync,
    S: CacheStore + MaybeSync,
{
    async fn send_http(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let ttl = request.extensions().get::<CacheFor>().copied();
        let (Some(CacheFor(ttl_s)), true) = (ttl, request.method() == http::Method::GET) else {
            return self.inner.send_http(request).await;
        };
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key = format!("{accept} {}", request.uri());
        if let Some(entry) = self.store.get(&key).await {
            return Ok(Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, entry.content_type)
                .header(HIT_HEADER, "hit")
                .body(entry.body.into_bytes())?);
        }
        let response = self.inner.send_http(request).await?;
        if response.status() == http::StatusCode::OK {
            // Only text is kept (every identity document is); anything else is served, not kept.
            if let Ok(body) = std::str::from_utf8(response.body()) {
                let content_type = response
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let entry = Entry {
                    content_type,
                    body: body.to_owned(),
                };
                self.store.put(&key, &entry, ttl_s).await;
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::Entry;

    #[test]
    fn entries_round_trip_as_text() {
        let entry = Entry {
            content_type: "application/json".into(),
            body: "{\"a\":\n1}".into(),
        };
        assert_eq!(Entry::from_text(&entry.to_text()), Some(entry));
        assert_eq!(Entry::from_text("no newline"), None);
    }
}
