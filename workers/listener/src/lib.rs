//! The listener worker: one named, SQLite-backed Durable Object that reads Jetstream and records
//! what it sees in D1, then tells the broker what changed.
//!
//! `poll` mode (this module's alarm): every `POLL_INTERVAL_SECONDS` it connects with its cursor
//! (rewound a few seconds), reads until it has caught up with the moment it woke (or the stream
//! goes quiet), records in batches, and disconnects. The pure work (validation, the D1 batch, the
//! broker messages) is `domain::ingest`; [`record`] moves the bytes; docs/listener.md has the rules.
//!
//! This worker has no public route: edge reaches it through a service binding.

mod config;
mod record;

use domain::internal::{self, ListenerStatus};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::*;

use config::Config;

const LISTENER_NAME: &str = "main";
/// How soon the first alarm fires after a wake-up.
const FIRST_TICK_MS: i64 = 1_000;

const KEY_STATUS: &str = "status";
const KEY_URL_INDEX: &str = "url_index";

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
    env: Env,
    config: Config,
}

impl DurableObject for Listener {
    fn new(state: State, env: Env) -> Self {
        let config = Config::from_env(&env);
        Self { state, env, config }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            internal::LISTENER_WAKE => {
                // Waking twice is harmless: an alarm that is already set is left alone.
                if self.state.storage().get_alarm().await?.is_none() {
                    self.state.storage().set_alarm(FIRST_TICK_MS).await?;
                    tracing::info!(
                        mode = self.config.mode_name(),
                        "listener woken; first alarm set"
                    );
                }
                workers_common::json_response(200, &self.status().await?)
            }
            internal::LISTENER_STATUS => workers_common::json_response(200, &self.status().await?),
            _ => workers_common::text_error(404, "no such listener route"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let mut status = self.stored_status().await?;
        status.alarms_fired += 1;
        status.last_alarm_ms = Some(now_ms());
        storage.put(KEY_STATUS, &status).await?;

        let next_ms = match self.poll(&mut status).await {
            Ok(()) => self.config.poll_interval_ms,
            Err(error) => {
                // The next URL, sooner than a full interval.
                tracing::error!(%error, url = ?status.url, "poll failed; failing over");
                status.counters.failures += 1;
                status.last_error = Some(domain::bounded(&error.to_string()));
                let index = storage.get::<usize>(KEY_URL_INDEX).await?.unwrap_or(0);
                storage.put(KEY_URL_INDEX, index + 1).await?;
                self.config.retry_ms
            }
        };
        storage.put(KEY_STATUS, &status).await?;
        // An i64 alarm time is an offset from now.
        storage.set_alarm(next_ms).await?;
        Response::empty()
    }
}

impl Listener {
    async fn stored_status(&self) -> Result<ListenerStatus> {
        let mut status: ListenerStatus = self
            .state
            .storage()
            .get(KEY_STATUS)
            .await?
            .unwrap_or_default();
        status.mode = self.config.mode_name().to_owned();
        Ok(status)
    }

    async fn status(&self) -> Result<ListenerStatus> {
        let mut status = self.stored_status().await?;
        status.next_alarm_ms = self.state.storage().get_alarm().await?;
        Ok(status)
    }

    /// One poll: connect with the cursor, read and record until caught up with the moment of
    /// waking (or quiet, or the server closes), disconnect.
    async fn poll(&self, status: &mut ListenerStatus) -> Result<()> {
        let storage = self.state.storage();
        let woke_us = now_ms() * 1_000;
        let index = storage.get::<usize>(KEY_URL_INDEX).await?.unwrap_or(0);
        let url = self.config.url(index).to_owned();
        let start = status
            .cursor_us
            .map(|cursor| cursor - self.config.rewind_us)
            .or(self.config.start_from_us)
            .unwrap_or(woke_us - self.config.rewind_us);
        let subscribe = record::subscribe_url(&url, start)?;
        status.url = Some(url.clone());
        status.counters.connects += 1;
        tracing::info!(url, cursor_us = start, "connecting to Jetstream");
        let socket = WebSocket::connect(subscribe).await?;
        socket.accept()?;
        let mut events = socket.events()?;
        let recorder = record::Recorder::new(&self.env)?;
        let mut buffer: Vec<String> = Vec::new();
        let outcome = loop {
            let next = events.next();
            let quiet = Delay::from(std::time::Duration::from_millis(self.config.quiet_ms));
            let event = match select(next, quiet).await {
                Either::Left((event, _)) => event,
                Either::Right(_) => break Ok("quiet"),
            };
            match event {
                Some(Ok(WebsocketEvent::Message(message))) => match message.text() {
                    Some(text) => buffer.push(text),
                    None => {
                        // Jetstream sends text; a binary frame (compressed) is not ours to read.
                        status.counters.seen += 1;
                        *status.counters.dropped.entry("binary".into()).or_default() += 1;
                    }
                },
                Some(Ok(WebsocketEvent::Close(close))) => {
                    tracing::warn!(code = close.code(), reason = %close.reason(), "Jetstream closed");
                    break Ok("closed");
                }
                Some(Err(error)) => break Err(error),
                None => break Ok("ended"),
            }
            if buffer.len() >= self.config.batch_max_events {
                let cursor = recorder.record(&storage, status, &buffer).await?;
                buffer.clear();
                if cursor.is_some_and(|c| c >= woke_us) {
                    break Ok("caught up");
                }
            }
        };
        // What was read before an error is recorded all the same.
        recorder.record(&storage, status, &buffer).await?;
        let _ = socket.close(Some(1000), Some("caught up"));
        let how = outcome?;
        tracing::info!(how, cursor_us = ?status.cursor_us, lag_ms = ?status.lag_ms, "poll done");
        status.last_error = None;
        Ok(())
    }
}

fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}
