//! `/health`: whether D1 answers (a write read back in one transaction), and what the listener and
//! the broker report about themselves through their service bindings.

use domain::internal::{self, BrokerStats, ListenerStatus};
use domain::sql;
use serde::{Deserialize, Serialize};
use worker::*;

#[derive(Serialize)]
struct Health {
    ok: bool,
    d1: Part<D1Probe>,
    listener: Part<ListenerStatus>,
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

pub async fn report(env: &Env) -> Result<Response> {
    let d1 = Part::from_result(probe_d1(env).await);
    let listener =
        Part::from_result(internal_json(env, "LISTENER", internal::LISTENER_STATUS).await);
    let broker = Part::from_result(internal_json(env, "BROKER", internal::BROKER_STATS).await);
    let ok = d1.is_ok() && listener.is_ok() && broker.is_ok();
    let health = Health {
        ok,
        d1,
        listener,
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
