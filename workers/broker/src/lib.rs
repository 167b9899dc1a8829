//! The broker worker: live updates for every open page, over `SHARDS` shard objects
//! ([`shard::Broker`]) that each hold their pages' WebSockets, and one [`relay::Relay`] that
//! every publish goes to and that sends it on to every shard (docs/broker.md, "Shards").
//!
//! This worker has no public route: edge forwards the browser's upgrade to it, and edge and the
//! listener publish to it, all through service bindings. This entry point only routes: a page's
//! upgrade and a head to the page's shard, a publish and the stats to the relay.

mod feed;
mod meta;
mod relay;
mod shard;

use domain::internal;
use domain::shard::{self as shards, Placement};
use worker::*;

#[event(start)]
fn start() {
    workers_common::log::init("broker");
}

/// How many shards the broker has (`SHARDS`): read the same way by this entry point and the relay.
pub(crate) fn shard_count(env: &Env) -> u32 {
    workers_common::vars::number(env, "SHARDS", 4, 1..=i64::from(shards::MAX_SHARDS)) as u32
}

/// Entry point for service-binding calls.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    workers_common::usage::worker_request();
    let count = shard_count(&env);
    let (path, query) = workers_common::target(&req);
    let asked = match shards::parse_shard(query.as_deref()) {
        Ok(asked) => asked,
        Err(message) => return workers_common::text_error(400, &message),
    };
    let target = format!("https://shard{path}?{}", query.as_deref().unwrap_or(""));
    match (req.method(), path.as_str()) {
        (_, internal::BROKER_WS) => {
            let Placement { shard, since_holds } = shards::place(asked, count);
            let since = internal::query_value(query.as_deref(), "since");
            if !since_holds && since.is_some() {
                // A page of a shard that is gone: its numbers mean nothing here, so it is sent
                // `reload` (a `since` below every log's first number).
                let target = format!("https://shard{path}?since=0");
                return to_shard(&env, shard, &req, &target).await;
            }
            to_shard(&env, shard, &req, &target).await
        }
        (Method::Get, internal::BROKER_HEAD) => {
            let shard = match asked {
                Some(k) if k < count => k,
                Some(k) => {
                    let message = format!("no shard {k}: the broker has {count}");
                    return workers_common::text_error(404, &message);
                }
                None => shards::pick(js_sys::Math::random(), count),
            };
            to_shard(&env, shard, &req, &target).await
        }
        (Method::Post, internal::BROKER_REFUSE) if asked.is_some() => {
            let shard = asked.unwrap_or(0);
            if shard >= count {
                return workers_common::text_error(404, "no such shard");
            }
            to_shard(&env, shard, &req, &target).await
        }
        (_, internal::BROKER_PUBLISH | internal::BROKER_STATS | internal::BROKER_REFUSE) => {
            let relay = env
                .durable_object("RELAY")?
                .get_by_name(shards::RELAY_NAME)?;
            relay.fetch_with_request(req).await
        }
        _ => workers_common::text_error(404, "no such broker route"),
    }
}

/// Hands `req` to shard `k`'s object at `target`, saying which shard it is.
async fn to_shard(env: &Env, shard: u32, req: &Request, target: &str) -> Result<Response> {
    let headers = req.headers().clone();
    headers.set(internal::SHARD_HEADER, &shard.to_string())?;
    let forwarded = Request::new_with_init(
        target,
        RequestInit::new()
            .with_method(req.method())
            .with_headers(headers)
            .with_body(req.inner().body().map(Into::into)),
    )?;
    let object = env
        .durable_object("BROKER")?
        .get_by_name(&shards::object_name(shard))?;
    object.fetch_with_request(forwarded).await
}
