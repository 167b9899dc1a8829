//! The Workers fetch API as an [`atrium_xrpc::HttpClient`]: the transport under the `oauth`
//! crate and the XRPC calls of `account`. Every answer comes from a server someone else runs, so:
//! redirects are not followed (a redirect could lead a checked URL somewhere unchecked), bodies
//! are read as a stream and cut off at a byte cap (whether or not a length was declared: a chunked
//! answer can be endless), and the whole exchange has a deadline, after which it is aborted.
//!
//! [`CachedHttp`] puts `oauth::cache` in front of it, on D1 ([`D1Cache`]): identity lookups are
//! kept for a few minutes; every other request goes straight through. Edge uses that; the
//! listener's backfill, whose lookups are each of another account, uses [`WorkerHttp`] bare.

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use oauth::fetch::BodyLimit;
use oauth::{HandleResolution, IdentityConfig, Reach};
use worker::js_sys::Uint8Array;
use worker::send::SendFuture;
use worker::{
    AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The most any answer may weigh unless the request asks for less ([`BodyLimit`]): far above what
/// PDSes and authorization servers send.
const MAX_BODY: usize = 1024 * 1024;

/// How long one outbound exchange (connect, answer, whole body) may take.
pub const FETCH_DEADLINE_MS: u64 = 5_000;

pub struct WorkerHttp;

/// Where identities are looked up, from the worker's vars (docs/auth.md): `PLC_URL`,
/// `HANDLE_RESOLVER` (`dns`, or a service's URL on a local network), `DOH_URL`,
/// `ALLOW_PRIVATE_NETWORK`.
pub fn identity(env: &worker::Env) -> IdentityConfig {
    use crate::vars::text_or;
    let reach = match text_or(env, "ALLOW_PRIVATE_NETWORK", "off").as_str() {
        "on" => Reach::Local,
        _ => Reach::Public,
    };
    let handles = match text_or(env, "HANDLE_RESOLVER", "dns").as_str() {
        "dns" => HandleResolution::Dns {
            doh_url: text_or(env, "DOH_URL", "https://cloudflare-dns.com/dns-query"),
        },
        service => HandleResolution::Service {
            url: service.trim_end_matches('/').to_owned(),
        },
    };
    IdentityConfig {
        plc_url: text_or(env, "PLC_URL", "https://plc.directory"),
        handles,
        reach,
    }
}

/// Fetch, with identity lookups cached in D1.
pub type CachedHttp = oauth::cache::Cached<WorkerHttp, D1Cache>;

/// [`CachedHttp`] on this deploy's D1.
pub fn transport(env: &worker::Env) -> worker::Result<CachedHttp> {
    Ok(oauth::cache::Cached {
        inner: WorkerHttp,
        store: D1Cache(env.d1("DB")?),
    })
}

/// The `identity_cache` table (migration 0010) as an `oauth::cache::CacheStore`. A D1 failure
/// is a miss (read) or a lookup not kept (write): logged, never the sign-in's failure.
pub struct D1Cache(pub worker::D1Database);

impl oauth::cache::CacheStore for D1Cache {
    async fn get(&self, key: &str) -> Option<oauth::cache::Entry> {
        #[derive(serde::Deserialize)]
        struct Row {
            value: String,
        }
        let statement = domain::sql::get_identity_cache(key, crate::now_ms());
        // Single-threaded, as in `WorkerHttp::send_http`.
        match SendFuture::new(crate::d1::rows::<Row>(&self.0, &statement)).await {
            Ok(rows) => rows
                .into_iter()
                .next()
                .and_then(|row| oauth::cache::Entry::from_text(&row.value)),
            Err(error) => {
                tracing::warn!(%error, "reading the identity cache failed");
                None
            }
        }
    }

    async fn put(&self, key: &str, entry: &oauth::cache::Entry, ttl_s: u32) {
        let expires_ms = crate::now_ms() + i64::from(ttl_s) * 1000;
        let statement = domain::sql::put_identity_cache(key, &entry.to_text(), expires_ms);
        let put = crate::d1::rows::<serde_json::Value>(&self.0, &statement);
        if let Err(error) = SendFuture::new(put).await {
            tracing::warn!(%error, "keeping an identity lookup failed");
        }
    }
}

impl atrium_xrpc::HttpClient for WorkerHttp {
    async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, BoxError> {
        // JS futures are not Send; a Worker is single-threaded, which SendFuture asserts, so
        // that this also compiles natively (where atrium's traits ask for Send).
        SendFuture::new(fetch_with_deadline(request)).await
    }
}

async fn fetch_with_deadline(
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, BoxError> {
    let host = request.uri().host().unwrap_or("").to_owned();
    let controller = AbortController::default();
    let exchange = Box::pin(fetch(request, &controller));
    let deadline = Delay::from(std::time::Duration::from_millis(FETCH_DEADLINE_MS));
    let outcome = match select(exchange, deadline).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            Err(format!("{host} did not answer within {FETCH_DEADLINE_MS} ms").into())
        }
    };
    // Whatever is left of the exchange (a server still sending past the cap, or not at all) is
    // cancelled; after a complete answer this does nothing.
    controller.abort();
    outcome
}

async fn fetch(
    request: http::Request<Vec<u8>>,
    controller: &AbortController,
) -> Result<http::Response<Vec<u8>>, BoxError> {
    let (parts, body) = request.into_parts();
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(MAX_BODY, |limit| limit.0.min(MAX_BODY));
    let headers = Headers::new();
    for (name, value) in &parts.headers {
        headers
            .append(name.as_str(), value.to_str()?)
            .map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(parts.method.as_str().to_owned()))
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !body.is_empty() {
        init.with_body(Some(Uint8Array::from(body.as_slice()).into()));
    }
    let request =
        Request::new_with_init(&parts.uri.to_string(), &init).map_err(|e| e.to_string())?;
    let mut response = Fetch::Request(request)
        .send_with_signal(&controller.signal())
        .await
        .map_err(|e| e.to_string())?;
    let too_large = || format!("answer larger than {limit} bytes");
    let declared = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large().into());
    }
    let mut bytes = Vec::new();
    // A 204 or a redirect may have no body stream at all.
    if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large().into());
            }
            bytes.extend_from_slice(&chunk);
        }
    }
    let mut builder = http::Response::builder().status(response.status_code());
    for (name, value) in response.headers().entries() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(bytes)?)
}
