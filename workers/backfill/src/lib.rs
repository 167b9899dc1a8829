//! The backfill worker (docs/backfill.md): one named, SQLite-backed Durable Object that reads
//! every account the relay lists as having statuses from its own repository, so that a new deploy
//! shows the network's statuses from its first page.
//!
//! A worker of its own, not a second object in the listener's: what it carries (identity
//! resolution, repository reads, an HTTP client held to public addresses) is most of a worker's
//! budget on its own (docs/design.md, "Bundles"), and the listener, which reads Jetstream all day,
//! should not pay for it. It reaches the listener over a service binding (the listener's position
//! on Jetstream; its outbox for a publish the broker does not take) and the broker over another.
//! Edge wakes it and asks its progress for `/health`; it has no public route.
//!
//! Each alarm is one invocation within the free plan's budgets: at most `BACKFILL_SUBREQUESTS`
//! outbound calls (each account's identity, commit, records and profile; the claim, the write
//! and the publish) and, per UTC day, `BACKFILL_DAILY_ROWS` D1 rows. It claims the accounts due
//! (`backfill_repo`, migration 0014), lists the relay's next page when none is, reads what the
//! budget allows, and records it all in one D1 transaction (`domain::backfill::Recording`) before
//! its progress is stored; then it publishes, and sets the next alarm. The rules are
//! `domain::backfill`; the reads are `account::repo`; this file moves bytes.
//!
//! The seam with Jetstream: nothing is read before the listener has a position on Jetstream
//! (kept in `Progress::jetstream_from_us`), so whatever an account does after its read reaches
//! D1 through the listener, and the revision order decides between the two.

use std::cell::Cell;

use account::repo::{read_account, Metered};
use domain::backfill::{self, Claimed, Next, Outcome, Phase, Progress, Recording, Settings};
use domain::internal::{self, BackfillStatus, ListenerStatus};
use serde::Deserialize;
use tracing::Instrument;
use worker::*;
use workers_common::http::WorkerHttp;
use workers_common::now_ms;
use workers_common::vars::{number, text};

/// The backfill object's name (there is one).
const NAME: &str = "main";

const KEY_PROGRESS: &str = "progress";
/// How soon an invocation follows one that stopped with work left.
const CONTINUE_MS: i64 = 100;
/// How long to wait for the listener's first position on Jetstream.
const WAIT_FOR_LISTENER_MS: i64 = 2_000;
/// Set at the start of an invocation: if it dies, the next one runs this much later (or at the
/// next wake, which tells this alarm from a planned one).
const WATCHDOG_MS: i64 = 120_000;
/// When the watchdog alarm of the current invocation is due (unix ms).
const KEY_WATCHDOG: &str = "watchdog_ms";

#[event(start)]
fn start() {
    workers_common::log::init("backfill");
}

/// Entry point for edge's service-binding calls: both routes go to the one object, and the
/// status carries this isolate's use of the metered resources.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    workers_common::usage::worker_request();
    let path = req.path();
    if path != internal::BACKFILL_WAKE && path != internal::BACKFILL_STATUS {
        return workers_common::text_error(404, "no such backfill route");
    }
    let object = env.durable_object("BACKFILL")?.get_by_name(NAME)?;
    let progress: Progress = object.fetch_with_request(req).await?.json().await?;
    let status = BackfillStatus {
        usage: workers_common::usage::snapshot(),
        progress,
    };
    workers_common::json_response(200, &status)
}

/// The backfill's settings (docs/backfill.md lists them). `BACKFILL_RELAY` is the relay's base
/// URL, or `off`.
fn settings(env: &Env) -> Settings {
    use domain::backfill::{MAX_ATTEMPTS, OVERHEAD};
    let relay = text(env, "BACKFILL_RELAY")
        .map(|r| r.trim().trim_end_matches('/').to_owned())
        .filter(|r| !r.is_empty() && r != "off");
    let max_pages = number(env, "BACKFILL_MAX_PAGES", 3, 1..=20) as u32;
    let mut settings = Settings {
        relay,
        run: text(env, "BACKFILL_RUN").unwrap_or_else(|| "1".into()),
        subrequests: 0,
        daily_rows: number(env, "BACKFILL_DAILY_ROWS", 50_000, 1..=10_000_000) as u64,
        max_pages,
        retry_ms: number(env, "BACKFILL_RETRY_SECONDS", 60, 1..=86_400) * 1_000,
        attempts: number(env, "BACKFILL_ATTEMPTS", MAX_ATTEMPTS, 1..=20),
    };
    // At least one account's read, whatever the var says.
    let least = i64::from(settings.per_account() + OVERHEAD);
    settings.subrequests = number(env, "BACKFILL_SUBREQUESTS", 50, least..=1_000) as u32;
    settings
}

#[durable_object]
pub struct Backfill {
    state: State,
    env: Env,
    /// Whether this instance is in an invocation right now.
    running: Cell<bool>,
}

impl DurableObject for Backfill {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            running: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        let span = workers_common::log::request_span(&req);
        self.serve(req).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        let span = tracing::info_span!("backfill");
        match self.invocation().instrument(span).await {
            Ok(()) => Response::empty(),
            Err(error) => {
                // The watchdog alarm set at the start runs the next invocation.
                tracing::error!(%error, "backfill invocation failed");
                let storage = self.state.storage();
                if let Ok(Some(mut progress)) =
                    workers_common::usage::get::<Progress>(&storage, KEY_PROGRESS).await
                {
                    progress.last_error = Some(domain::bounded(&error.to_string()));
                    let _ = workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await;
                }
                Response::empty()
            }
        }
    }
}

impl Backfill {
    async fn serve(&self, req: Request) -> Result<Response> {
        let settings = settings(&self.env);
        let storage = self.state.storage();
        let stored: Option<Progress> = workers_common::usage::get(&storage, KEY_PROGRESS).await?;
        match req.path().as_str() {
            internal::BACKFILL_WAKE => {
                // A wake starts work that is not under way: a first deploy, a new run, or an
                // invocation that died (the object restarted in the middle: its watchdog is the
                // alarm, and nothing runs). A finished backfill stays asleep.
                let wanted = match &stored {
                    None => settings.relay.is_some(),
                    Some(progress) => {
                        progress.is_stale(&settings)
                            || !matches!(progress.phase, Phase::Done | Phase::Off)
                    }
                };
                let alarm = storage.get_alarm().await?;
                let stale = !self.running.get()
                    && alarm.is_some()
                    && alarm == workers_common::usage::get::<i64>(&storage, KEY_WATCHDOG).await?;
                if wanted && (alarm.is_none() || stale) {
                    storage.set_alarm(CONTINUE_MS).await?;
                    tracing::info!(run = settings.run, stale, "backfill woken");
                }
                self.progress(stored, &settings).await
            }
            internal::BACKFILL_STATUS => self.progress(stored, &settings).await,
            _ => workers_common::text_error(404, "no such backfill route"),
        }
    }

    /// The progress as `/status` (and a wake) answers it: with the next alarm.
    async fn progress(&self, stored: Option<Progress>, settings: &Settings) -> Result<Response> {
        let mut progress = stored.unwrap_or_else(|| Progress::start(settings, now_ms()));
        progress.next_alarm_ms = self.state.storage().get_alarm().await?;
        workers_common::json_response(200, &progress)
    }

    /// One invocation: wait for the listener, or list and read within the budgets.
    async fn invocation(&self) -> Result<()> {
        let storage = self.state.storage();
        storage.set_alarm(WATCHDOG_MS).await?;
        if let Some(at) = storage.get_alarm().await? {
            workers_common::usage::put(&storage, KEY_WATCHDOG, at).await?;
        }
        let _running = workers_common::Running::start(&self.running);
        let settings = settings(&self.env);
        let db = self.env.d1("DB")?;
        let now = now_ms();
        let mut progress =
            match workers_common::usage::get::<Progress>(&storage, KEY_PROGRESS).await? {
                Some(progress) if !progress.is_stale(&settings) => progress,
                stale => {
                    if stale.is_some() {
                        // An operator's restart (a new BACKFILL_RUN) or another relay: start over.
                        workers_common::d1::rows::<serde_json::Value>(&db, &backfill::forget_all())
                            .await?;
                        tracing::info!(run = settings.run, "backfill starts over");
                    }
                    Progress::start(&settings, now)
                }
            };
        if settings.relay.is_none() {
            progress.phase = Phase::Off;
            workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await?;
            return storage.delete_alarm().await;
        }
        progress.invocations += 1;
        let http = WorkerHttp;
        let metered = Metered::new(&http, settings.subrequests);

        if progress.jetstream_from_us.is_none() {
            metered.spend(1);
            let listener = self.env.service("LISTENER")?;
            let status: ListenerStatus = workers_common::broker::internal_json(
                &listener,
                "LISTENER",
                internal::LISTENER_STATUS,
            )
            .await?;
            let Some(cursor_us) = status.cursor_us else {
                progress.phase = Phase::Waiting;
                progress.subrequests += u64::from(metered.used());
                workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await?;
                return storage.set_alarm(WAIT_FOR_LISTENER_MS).await;
            };
            progress.jetstream_from_us = Some(cursor_us);
            progress.started_ms = Some(now);
            progress.phase = Phase::Running;
            tracing::info!(cursor_us, "backfill starts after the listener's position");
        }

        // The counters move on a copy, kept only once D1 has what they count.
        let mut next = progress.clone();
        let identity = workers_common::http::identity(&self.env);
        let mut accounts = Vec::new();
        let mut rows = Vec::new();
        let mut more_now = false;
        let mut retry_listing = false;
        // One claim per invocation (what it claimed is written at its end): listing the relay's
        // next page first whenever nothing is due.
        while !next.day_spent(&settings, now) && settings.can_read(metered.left()) {
            metered.spend(1);
            let limit = settings.claim_size(metered.left());
            let claim = backfill::claim_due(now_ms(), limit);
            let claimed: Vec<Claimed> = workers_common::d1::rows(&db, &claim).await?;
            if claimed.is_empty() {
                if next.listed_all {
                    break;
                }
                match self
                    .list_page(&metered, &settings, &identity, &db, &mut next)
                    .await
                {
                    Ok(()) => {
                        // Listed accounts are in D1: the listing's place is kept at once.
                        progress.clone_from(&next);
                        workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await?;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the relay's list failed; tried again later");
                        next.last_error = Some(domain::bounded(&error));
                        retry_listing = true;
                        break;
                    }
                }
            }
            // A full claim may have left more due.
            more_now = claimed.len() as i64 == limit;
            for claimed in claimed {
                if !settings.can_read(metered.left()) {
                    more_now = true;
                    break;
                }
                let (account, outcome) = read_account(
                    &metered,
                    &identity,
                    &claimed.did,
                    settings.max_pages,
                    now_ms(),
                )
                .await;
                match &outcome {
                    Outcome::Failed { error } => {
                        tracing::warn!(
                            did = claimed.did,
                            error,
                            "account not read; tried again later"
                        )
                    }
                    Outcome::Read {
                        records, dropped, ..
                    } => tracing::info!(did = claimed.did, records, dropped, "account read"),
                    Outcome::Unfinished => more_now = true,
                }
                rows.extend(next.settle(&settings, &claimed, &outcome, now_ms()));
                accounts.extend(account);
            }
            break;
        }
        if !settings.can_read(metered.left()) && !next.listed_all {
            more_now = true;
        }

        if !rows.is_empty() {
            let recording = Recording::plan(&accounts, &rows, now_ms());
            metered.spend(1);
            let answers = workers_common::d1::batch_rows(&db, &recording.statements).await?;
            let written = answers.rows_written;
            next.wrote(written, now_ms());
            let messages = recording
                .messages(&answers.rows)
                .map_err(|e| Error::RustError(e.to_string()))?;
            progress = next;
            workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await?;
            tracing::info!(
                accounts = rows.len(),
                rows_written = written,
                "backfill recorded"
            );
            if !messages.is_empty() {
                metered.spend(1);
                let listener = self.env.service("LISTENER")?;
                let broker = self.env.service("BROKER")?;
                if let Err(error) =
                    workers_common::broker::publish(&broker, &listener, messages).await
                {
                    // D1 has it: pages see it on their next load.
                    tracing::error!(%error, "publishing the backfill failed, and keeping it too");
                }
            }
        } else {
            progress = next;
        }

        let due = if progress.listed_all && !more_now {
            #[derive(Deserialize)]
            struct Due {
                next_try: Option<i64>,
            }
            let due: Vec<Due> = workers_common::d1::rows(&db, &backfill::next_due()).await?;
            metered.spend(1);
            let due = due.into_iter().next().and_then(|d| d.next_try);
            if due.is_none() {
                // Finished: the counters are D1's, whatever an invocation that died lost of them.
                let tally: Vec<backfill::Tally> =
                    workers_common::d1::rows(&db, &backfill::tally()).await?;
                metered.spend(1);
                if let Some(tally) = tally.into_iter().next() {
                    progress.tallied(tally);
                }
            }
            due
        } else {
            None
        };
        let now = now_ms();
        let next_alarm = if retry_listing {
            progress.phase = Phase::Running;
            Next::At(now + settings.retry_ms)
        } else {
            progress.next_alarm_ms(&settings, more_now, due, now)
        };
        progress.subrequests += u64::from(metered.used());
        workers_common::usage::put(&storage, KEY_PROGRESS, &progress).await?;
        match next_alarm {
            Next::Soon => storage.set_alarm(CONTINUE_MS).await,
            Next::At(at) => storage.set_alarm((at - now).max(CONTINUE_MS)).await,
            Next::Idle => {
                tracing::info!(
                    done = progress.done,
                    failed = progress.failed,
                    records = progress.records,
                    "backfill finished"
                );
                storage.delete_alarm().await
            }
        }
    }

    /// Lists the relay's next page of accounts into `backfill_repo`.
    async fn list_page(
        &self,
        metered: &Metered<'_, WorkerHttp>,
        settings: &Settings,
        identity: &oauth::IdentityConfig,
        db: &D1Database,
        progress: &mut Progress,
    ) -> std::result::Result<(), String> {
        let relay = settings.relay.as_deref().unwrap_or_default();
        let base = format!(
            "{}/xrpc/com.atproto.sync.listReposByCollection",
            relay.trim_end_matches('/')
        );
        let limit = backfill::RELAY_PAGE.to_string();
        let mut query = vec![("collection", lexicon::STATUS_NSID), ("limit", &limit)];
        if let Some(cursor) = &progress.relay_cursor {
            query.push(("cursor", cursor));
        }
        let url = internal::with_query(&base, &query);
        let body = oauth::fetch::get(
            metered,
            &url,
            identity.reach,
            "application/json",
            "the relay's list",
        )
        .await
        .map_err(|e| e.to_string())?;
        let page = backfill::relay_page(&body, progress.relay_cursor.as_deref())
            .map_err(|e| format!("the relay's list: {e}"))?;
        metered.spend(1);
        let insert = backfill::insert_listed(&page.dids, now_ms());
        let answers = workers_common::d1::batch_rows(db, &insert)
            .await
            .map_err(|e| e.to_string())?;
        let new = answers.rows.iter().map(Vec::len).sum::<usize>() as u64;
        progress.wrote(answers.rows_written, now_ms());
        progress.listed(new);
        progress.listed_all = page.cursor.is_none();
        progress.relay_cursor = page.cursor;
        tracing::info!(
            listed = page.dids.len(),
            new,
            skipped = page.skipped,
            done = progress.listed_all,
            "relay page listed"
        );
        Ok(())
    }
}
