//! The listener worker: one named, SQLite-backed Durable Object that reads Jetstream and records
//! what it sees in D1, then tells the broker what changed.
//!
//! Everything happens in the object's alarm: one alarm, one connection ([`session::run`]), then
//! the next alarm is set from how it ended: `poll` mode waits `POLL_INTERVAL_SECONDS` once caught
//! up, `live` mode reconnects at once, a failure moves to the next URL after a backoff. Before a
//! connection starts, the alarm is set as a watchdog past its longest possible end, so an
//! invocation that dies is followed all the same. The pure work (validation, the D1 batch, the
//! broker messages) is `domain::ingest`; docs/listener.md has the rules and their tests. What
//! the broker has not taken waits in the object's outbox ([`outbox`]), edge's included.
//!
//! This worker has no public route: edge reaches it through a service binding.

mod config;
mod inbox;
mod outbox;
mod record;
mod session;

use std::cell::Cell;

use domain::internal::{self, ListenerStatus};
use tracing::Instrument;
use worker::*;

use config::Config;
use record::KEY_STATUS;
use workers_common::now_ms;

const LISTENER_NAME: &str = "main";
/// How soon the first alarm fires after a wake-up.
const FIRST_TICK_MS: i64 = 1_000;
/// How soon the next connection starts when reading goes on at once.
const CONTINUE_MS: i64 = 100;

const KEY_URL_INDEX: &str = "url_index";
/// When the watchdog alarm of the current connection is due (unix ms).
const KEY_WATCHDOG: &str = "watchdog_ms";

#[event(start)]
fn start() {
    workers_common::log::init("listener");
}

/// Entry point for service-binding calls (edge's, the backfill's): every route is the one
/// object's.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    workers_common::usage::worker_request();
    let path = req.path();
    if path != internal::LISTENER_WAKE
        && path != internal::LISTENER_STATUS
        && path != internal::LISTENER_OUTBOX
    {
        return workers_common::text_error(404, "no such listener route");
    }
    let listener = env.durable_object("LISTENER")?.get_by_name(LISTENER_NAME)?;
    if path == internal::LISTENER_OUTBOX {
        return listener.fetch_with_request(req).await;
    }
    let mut status: ListenerStatus = listener.fetch_with_request(req).await?.json().await?;
    status.usage = workers_common::usage::snapshot();
    workers_common::json_response(200, &status)
}

#[durable_object]
pub struct Listener {
    state: State,
    env: Env,
    config: Config,
    /// Whether this instance is in its alarm (reading) right now.
    running: Cell<bool>,
    mailbox: outbox::Mailbox,
}

impl DurableObject for Listener {
    fn new(state: State, env: Env) -> Self {
        let config = Config::from_env(&env);
        let mailbox = outbox::Mailbox::new(config.retry_ms);
        Self {
            state,
            env,
            config,
            running: Cell::new(false),
            mailbox,
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        let span = workers_common::log::request_span(&req);
        self.serve(req).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        self.read()
            .instrument(workers_common::log::alarm_span())
            .await
    }
}

impl Listener {
    /// A service-binding call: wake, or the status for `/health`.
    async fn serve(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            internal::LISTENER_WAKE => {
                // Waking twice is harmless: an alarm that is already set is left alone, unless
                // it is the watchdog of a connection that is not running (the object was
                // restarted mid-connection: a deploy, a crash): then reading resumes now.
                let storage = self.state.storage();
                let alarm = storage.get_alarm().await?;
                let stale = !self.running.get()
                    && alarm.is_some()
                    && alarm == workers_common::usage::get::<i64>(&storage, KEY_WATCHDOG).await?;
                if alarm.is_none() || stale {
                    storage.set_alarm(FIRST_TICK_MS).await?;
                    tracing::info!(
                        mode = self.config.mode_name(),
                        stale,
                        "listener woken; alarm set"
                    );
                }
                workers_common::json_response(200, &self.status().await?)
            }
            internal::LISTENER_STATUS => workers_common::json_response(200, &self.status().await?),
            internal::LISTENER_OUTBOX => self.keep(req).await,
            _ => workers_common::text_error(404, "no such listener route"),
        }
    }

    /// A publish edge could not deliver: kept in the outbox, tried at once if a try is due, and
    /// the alarm set no later than the next try.
    async fn keep(&self, mut req: Request) -> Result<Response> {
        let publish: domain::wire::Publish = match req.json().await {
            Ok(publish) => publish,
            Err(error) => {
                let message = format!("not a publish: {}", domain::bounded(&error.to_string()));
                return workers_common::text_error(400, &message);
            }
        };
        if publish.messages.len() > domain::wire::MAX_PUBLISH_MESSAGES {
            return workers_common::text_error(413, "too many messages in one publish");
        }
        let storage = self.state.storage();
        self.mailbox.load(&storage).await?;
        let before = self.mailbox.snapshot();
        self.mailbox.push_publish(publish);
        if let Err(error) = self.mailbox.store(&storage).await {
            self.mailbox.restore(before);
            return Err(error);
        }
        // Kept from here on: a failed try only waits for the next.
        if self.mailbox.due() {
            let broker = self.env.service("BROKER")?;
            if let Err(error) = self.mailbox.flush(&broker, &storage, 1).await {
                tracing::error!(%error, "storing the outbox after a try failed");
            }
        }
        if let Some(next_try) = self.mailbox.next_try_ms() {
            let alarm = storage.get_alarm().await?;
            if alarm.is_none_or(|at| at > next_try) {
                storage
                    .set_alarm((next_try - now_ms()).max(CONTINUE_MS))
                    .await?;
            }
        }
        workers_common::json_response(200, &self.mailbox.status())
    }

    /// One alarm: one connection to Jetstream, then the next alarm.
    async fn read(&self) -> Result<Response> {
        let storage = self.state.storage();
        let mut status = self.stored_status().await?;
        status.alarms_fired += 1;
        status.last_alarm_ms = Some(now_ms());
        workers_common::usage::put(&storage, KEY_STATUS, &status).await?;
        // The watchdog (an i64 alarm time is an offset from now), remembered so that a wake
        // can tell it from a planned alarm.
        storage.set_alarm(self.config.watchdog_ms()).await?;
        if let Some(at) = storage.get_alarm().await? {
            workers_common::usage::put(&storage, KEY_WATCHDOG, at).await?;
        }
        let _running = workers_common::Running::start(&self.running);
        // What waits for the broker goes first (each batch after adds to it and tries again).
        self.mailbox.load(&storage).await?;
        if self.mailbox.due() {
            let broker = self.env.service("BROKER")?;
            match self
                .mailbox
                .flush(&broker, &storage, outbox::QUIET_TRIES)
                .await
            {
                Ok(flushed) => flushed.count(&mut status.counters),
                Err(error) => tracing::error!(%error, "storing the outbox failed"),
            }
        }

        let index = workers_common::usage::get::<usize>(&storage, KEY_URL_INDEX)
            .await?
            .unwrap_or(0);
        let url = self.config.url(index).to_owned();
        // Every log line of this connection carries its URL, mode and number.
        let span = tracing::info_span!(
            "connection",
            url,
            mode = self.config.mode_name(),
            number = status.counters.connects + 1
        );
        let seen_before = status.counters.seen;
        let outcome = session::run(
            &self.config,
            &self.env,
            &storage,
            &mut status,
            &url,
            &self.mailbox,
        )
        .instrument(span)
        .await;
        let next_ms = match outcome {
            Ok(end) if !end.is_failure() => {
                status.consecutive_failures = 0;
                status.last_error = None;
                tracing::info!(outcome = end.label(), cursor_us = ?status.cursor_us, lag_ms = ?status.lag_ms, "connection done");
                // Not a frame, on a network whose pace is not known: a quiet network, or an
                // instance that serves nothing (the public network's never is that quiet). Not
                // a failure, but the next connection asks the next URL, so that a silent first
                // instance is not kept for ever; with one URL nothing changes.
                if status.counters.seen == seen_before && !status.pace.is_busy() {
                    self.next_url(&storage, index).await?;
                }
                status.last_end = Some(end.label());
                if end.continues(self.config.mode()) {
                    CONTINUE_MS
                } else {
                    self.config.poll_interval_ms
                }
            }
            failed => {
                let why = match failed {
                    Ok(end) => end.label(),
                    Err(error) => {
                        status.last_error = Some(domain::bounded(&error.to_string()));
                        "error".into()
                    }
                };
                status.counters.failures += 1;
                // Time is safe everywhere; a sequence number may be what failed (v2 refuses
                // one older than it keeps with 400 `CursorTooOld`), so the next try goes by time.
                status.seq = None;
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                let wait = self.config.backoff_ms(status.consecutive_failures);
                tracing::error!(url, outcome = why, error = ?status.last_error, wait_ms = wait, "connection failed; trying the next URL");
                status.last_end = Some(why);
                self.next_url(&storage, index).await?;
                wait
            }
        };
        // An outbox waiting for the broker is tried again when its wait is over.
        let next_ms = match self.mailbox.next_try_ms() {
            Some(at) => next_ms.min((at - now_ms()).max(CONTINUE_MS)),
            None => next_ms,
        };
        status.last_end_ms = Some(now_ms());
        workers_common::usage::put(&storage, KEY_STATUS, &status).await?;
        storage.set_alarm(next_ms).await?;
        Response::empty()
    }

    /// The next connection asks the URL after the `index`-th. With one URL there is no other:
    /// nothing is written (an idle poll a minute wrote this row every time).
    async fn next_url(&self, storage: &Storage, index: usize) -> Result<()> {
        if self.config.urls.len() < 2 {
            return Ok(());
        }
        workers_common::usage::put(storage, KEY_URL_INDEX, index + 1).await
    }

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
        let storage = self.state.storage();
        status.next_alarm_ms = storage.get_alarm().await?;
        self.mailbox.load(&storage).await?;
        status.outbox = Some(self.mailbox.status());
        // Now, not as of the last batch: a stuck or stopped listener shows its lag growing.
        status.lag_ms = status.cursor_us.map(|cursor| now_ms() - cursor / 1_000);
        Ok(status)
    }
}
