//! Per-network rate limits on the routes a stranger can spend the free plan through
//! (`domain::limit`): sign-ins, status writes and WebSocket upgrades. Each guarded route asks its
//! Workers Rate Limiting binding first, before it reads D1 or calls anything, so that a refused
//! request costs one counter and nothing else.

use domain::limit::{self, Guarded};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Request, Response, Result};

use crate::write::Reply;

/// The client's network (`CF-Connecting-IP`, set by Cloudflare on every request).
pub fn network_of(req: &Request) -> Result<String> {
    let ip = req.headers().get("CF-Connecting-IP")?;
    Ok(limit::network_of(ip.as_deref()))
}

/// `Some(429)` when `network` has used up its allowance of `guarded` for this window.
///
/// A binding that is missing or fails lets the request through, with an error logged: the
/// deploy's preflight checks that each binding is declared, so this is a fault of the platform,
/// and refusing every sign-in would turn it into an outage.
pub async fn refusal(
    env: &Env,
    guarded: Guarded,
    network: &str,
    reply: Reply,
) -> Result<Option<Response>> {
    match allowed(env, guarded.binding(), network).await {
        Ok(true) => Ok(None),
        Ok(false) => {
            tracing::warn!(limit = guarded.binding(), network, "rate limited");
            refused(guarded.refusal(), reply).map(Some)
        }
        Err(error) => {
            tracing::error!(limit = guarded.binding(), %error, "rate limit unavailable; let through");
            Ok(None)
        }
    }
}

/// A 429 with `Retry-After` and the message, as JSON (`{"error": ...}`, for the page's script) or
/// as text. Nothing else is read to make it.
fn refused(message: &str, reply: Reply) -> Result<Response> {
    let response = if reply == Reply::Json {
        workers_common::json_response(429, &serde_json::json!({ "error": message }))?
    } else {
        workers_common::text_error(429, message)?
    };
    response
        .headers()
        .set("Retry-After", &limit::PERIOD_S.to_string())?;
    Ok(response)
}

/// Asks the binding. Called through JavaScript by name rather than through `worker::RateLimiter`,
/// whose cast checks the binding's class name, which differs between the local runtime and
/// Cloudflare's.
async fn allowed(env: &Env, binding: &str, key: &str) -> std::result::Result<bool, String> {
    let js = |e: JsValue| format!("{e:?}");
    let env: &JsValue = env.as_ref();
    let limiter = js_sys::Reflect::get(env, &binding.into()).map_err(js)?;
    if limiter.is_undefined() {
        return Err(format!("no binding {binding}"));
    }
    let limit = js_sys::Reflect::get(&limiter, &"limit".into())
        .map_err(js)?
        .dyn_into::<js_sys::Function>()
        .map_err(|_| format!("{binding}.limit is not a function"))?;
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"key".into(), &key.into()).map_err(js)?;
    let promise = limit
        .call1(&limiter, &options)
        .map_err(js)?
        .dyn_into::<js_sys::Promise>()
        .map_err(|_| format!("{binding}.limit did not return a promise"))?;
    let outcome = JsFuture::from(promise).await.map_err(js)?;
    let success = js_sys::Reflect::get(&outcome, &"success".into()).map_err(js)?;
    success
        .as_bool()
        .ok_or_else(|| format!("{binding}.limit answered no success"))
}
