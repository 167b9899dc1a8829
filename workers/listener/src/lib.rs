//! The listener worker: one named, SQLite-backed Durable Object that reads Jetstream and records
//! what it sees. In this skeleton it keeps an alarm ticking and counts the ticks; the Jetstream
//! reader stands on that alarm.
//!
//! This worker has no public route: edge reaches it through a service binding.

use domain::internal::{self, ListenerStatus};
use worker::*;

const LISTENER_NAME: &str = "main";
/// How often the alarm fires while the listener runs.
const TICK_MS: i64 = 60_000;
/// How soon the first alarm fires after a wake-up.
const FIRST_TICK_MS: i64 = 1_000;

const KEY_ALARMS_FIRED: &str = "alarms_fired";
const KEY_LAST_ALARM: &str = "last_alarm_ms";

#[event(start)]
fn start() {
    workers_common::log::init("listener");
}

/// Entry point for service-binding calls: everything goes to the one listener object.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    match req.path().as_str() {
        internal::LISTENER_WAKE | internal::LISTENER_STATUS => {
            let listener = env.durable_object("LISTENER")?.get_by_name(LISTENER_NAME)?;
            listener.fetch_with_request(req).await
        }
        _ => workers_common::text_error(404, "no such listener route"),
    }
}

#[durable_object]
pub struct Listener {
    state: State,
}

impl DurableObject for Listener {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            internal::LISTENER_WAKE => {
                // Waking twice is harmless: an alarm that is already set is left alone.
                if self.state.storage().get_alarm().await?.is_none() {
                    self.state.storage().set_alarm(FIRST_TICK_MS).await?;
                    tracing::info!("listener woken; first alarm set");
                }
                workers_common::json_response(200, &self.status().await?)
            }
            internal::LISTENER_STATUS => workers_common::json_response(200, &self.status().await?),
            _ => workers_common::text_error(404, "no such listener route"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let fired = storage.get::<u64>(KEY_ALARMS_FIRED).await?.unwrap_or(0) + 1;
        let now = Date::now().as_millis() as i64;
        storage.put(KEY_ALARMS_FIRED, fired).await?;
        storage.put(KEY_LAST_ALARM, now).await?;
        storage.set_alarm(TICK_MS).await?;
        tracing::info!(alarms_fired = fired, "listener alarm");
        Response::empty()
    }
}

impl Listener {
    async fn status(&self) -> Result<ListenerStatus> {
        let storage = self.state.storage();
        Ok(ListenerStatus {
            alarms_fired: storage.get(KEY_ALARMS_FIRED).await?.unwrap_or(0),
            last_alarm_ms: storage.get(KEY_LAST_ALARM).await?,
            next_alarm_ms: storage.get_alarm().await?,
        })
    }
}
