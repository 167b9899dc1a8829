//! `/health`. The public answer is liveness only: whether D1 answers a read (no write, no Durable
//! Object call, so a stranger polling it spends next to nothing and learns nothing internal). With
//! `Authorization: Bearer <HEALTH_TOKEN>` (a `wrangler secret`) it is the operator's report: a D1
//! write read back in one transaction, and what the listener, the backfill and the broker say
//! about themselves through their service bindings.

use domain::internal::{self, BackfillStatus, BrokerStats, ListenerStatus};
use domain::sql;
use serde::{Deserialize, Serialize};
use worker::*;

use crate::error;

#[derive(Serialize)]
struct Health {
    ok: bool,
    /// Edge's isolate: what it used of the metered resources (docs/budget.md).
    usage: internal::Usage,
    d1: Part<D1Probe>,
    listener: Part<ListenerStatus>,
    backfill: Part<BackfillStatus>,
    broker: Part<BrokerStats>,
}

/// One component's report: its data, or why it could not be had.
#[derive(Serialize)]
#[serde(untagged)]
enum Part<T> {
    Ok(T),
    Failed { error: String },
}

impl<T> Part<T> {
    fn from_result(result: Result<T>) -> Self {
        match result {
            Ok(value) => Part::Ok(value),
            Err(error) => Part::Failed {
                error: error.to_string(),
            },
        }
    }

    fn is_ok(&self) -> bool {
        matches!(self, Part::Ok(_))
    }
}

#[derive(Serialize, Deserialize)]
struct D1Probe {
    token: String,
    at_ms: i64,
}

/// The public answer.
#[derive(Serialize)]
struct Liveness {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `GET /health`: liveness for anyone, the detailed report for the holder of the health token.
pub async fn answer(req: &Request, env: &Env) -> error::Result<Response> {
    let Some(bearer) = req.headers().get("Authorization")? else {
        let ok = ping_d1(env).await;
        let liveness = match ok {
            Ok(()) => Liveness {
                ok: true,
                error: None,
            },
            Err(error) => {
                tracing::error!(%error, "health: D1 does not answer");
                Liveness {
                    ok: false,
                    error: Some("the database does not answer".into()),
                }
            }
        };
        let status = if liveness.ok { 200 } else { 503 };
        return Ok(workers_common::json_response(status, &liveness)?);
    };
    let Ok(token) = env.secret("HEALTH_TOKEN").map(|t| t.to_string()) else {
        return Err(error::Error::refused(
            404,
            "the detailed health report is not configured",
        ));
    };
    let given = bearer.strip_prefix("Bearer ").unwrap_or_default();
    if token.is_empty() || !same(given.as_bytes(), token.as_bytes()) {
        return Err(error::Error::refused(401, "wrong health token"));
    }
    Ok(report(env).await?)
}

/// Whether D1 answers a read.
async fn ping_d1(env: &Env) -> Result<()> {
    env.d1("DB")?
        .prepare(sql::HEALTH_PING)
        .first::<serde_json::Value>(None)
        .await?;
    Ok(())
}

/// Compares without stopping at the first difference (the token is a secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn report(env: &Env) -> Result<Response> {
    let d1 = Part::from_result(probe_d1(env).await);
    let listener =
        Part::from_result(internal_json(env, "LISTENER", internal::LISTENER_STATUS).await);
    let backfill =
        Part::from_result(internal_json(env, "BACKFILL", internal::BACKFILL_STATUS).await);
    let broker = Part::from_result(internal_json(env, "BROKER", internal::BROKER_STATS).await);
    let ok = d1.is_ok() && listener.is_ok() && backfill.is_ok() && broker.is_ok();
    let health = Health {
        ok,
        usage: workers_common::usage::snapshot(),
        d1,
        listener,
        backfill,
        broker,
    };
    workers_common::json_response(if ok { 200 } else { 503 }, &health)
}

/// Writes a fresh token and reads it back in the same batch (one D1 transaction).
async fn probe_d1(env: &Env) -> Result<D1Probe> {
    let db = env.d1("DB")?;
    let token = format!("{:016x}", (js_sys::Math::random() * u64::MAX as f64) as u64);
    let now = Date::now().as_millis() as f64;
    let write = db
        .prepare(sql::HEALTH_PROBE_WRITE)
        .bind(&[token.clone().into(), now.into()])?;
    let read = db.prepare(sql::HEALTH_PROBE_READ);
    let results = db.batch(vec![write, read]).await?;
    results.iter().for_each(workers_common::usage::d1);
    let probe = results
        .get(1)
        .map(|r| r.results::<D1Probe>())
        .transpose()?
        .and_then(|rows| rows.into_iter().next())
        .ok_or_else(|| Error::RustError("health probe row missing after write".into()))?;
    if probe.token != token {
        return Err(Error::RustError(
            "health probe read back another token".into(),
        ));
    }
    Ok(probe)
}

async fn internal_json<T: serde::de::DeserializeOwned>(
    env: &Env,
    binding: &str,
    path: &str,
) -> Result<T> {
    workers_common::broker::internal_json(&env.service(binding)?, binding, path).await
}
