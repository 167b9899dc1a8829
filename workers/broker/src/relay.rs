//! The relay: one Durable Object (class `Relay`, named `relay`) that every publish goes to, and that
//! sends it on to every shard, so a publisher pays one subrequest whatever the shard count.
//!
//! Every shard is sent publishes in the order they reached the relay: each publish takes a turn on
//! every shard's queue as it arrives, before any wait, and goes to a shard only once the publish
//! before it there is done. A shard that fails to take one (an error, a 5xx, no answer) does not
//! hold back the others: the relay keeps the publish for that shard in its own SQLite, queues what
//! follows behind it, and tries again on its alarm (one second, doubling to a minute). The
//! publisher is answered once every shard took the publish or the relay keeps it, so a publish the
//! relay answered is never lost; one it did not answer is sent again by the publisher, with the
//! same id, and each shard sequences an id once.
//!
//! In the common case (every shard takes every publish) the relay writes nothing per publish
//! except, at most every few seconds, its counters.

use std::cell::{Cell, RefCell, RefMut};

use domain::internal::{
    self, BrokerStats, PublishAck, RelayAck, RelayCounters, RelayStats, ShardAck, ShardStats,
};
use domain::shard::{self as shards, Shards};
use domain::wire::{self, Publish, ServerMessage};
use futures_channel::oneshot;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use worker::*;
use workers_common::now_ms;
use workers_common::usage;

use crate::meta::Kept;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kept (ord INTEGER PRIMARY KEY, body TEXT NOT NULL,
  shards INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value ANY NOT NULL);";

/// Kept publishes read at a time when a shard is caught up.
const CATCH_UP_ROWS: i64 = 20;

#[durable_object]
pub struct Relay {
    state: State,
    env: Env,
    shards: u32,
    /// `TEST_HOOKS=on` (test stacks only): [`internal::BROKER_REFUSE`] without a shard.
    test_hooks: bool,
    instance_id: String,
    books: RefCell<Option<Books>>,
    /// Per shard, the end of its queue: the signal the last publish to take a turn gives when it
    /// is done there.
    turns: RefCell<Vec<Option<oneshot::Receiver<()>>>>,
    /// The last order given to a publish ([`shards::next_order`]).
    last_order: Cell<u64>,
    /// Per shard, when to try it again (unix ms; 0: at once).
    next_try: RefCell<Vec<i64>>,
}

/// What the relay keeps in its SQLite: the publishes shards did not take, and its counters.
struct Books {
    sql: SqlStorage,
    /// Shards owed a kept publish or a reload: what comes next for them queues behind.
    owed: Shards,
    /// Under `state` in `meta`.
    state: Kept<Persisted>,
}

/// What is kept under the `state` key of `meta`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    #[serde(default)]
    counters: RelayCounters,
    /// Shards owed a reload before their kept publishes (some of theirs were dropped).
    #[serde(default)]
    reload: i64,
    /// Per shard: failed tries in a row.
    #[serde(default)]
    failing: Vec<u32>,
    /// Until when publishes are refused (a test hook's outage).
    #[serde(default)]
    refuse_until_ms: i64,
}

#[derive(Deserialize)]
struct KeptRow {
    ord: i64,
    body: String,
}

#[derive(Deserialize)]
struct ShardsRow {
    shards: i64,
}

/// How a shard answered one try.
enum Answer {
    Taken(PublishAck),
    /// A 4xx: trying again would not help.
    Refused(u16),
}

impl DurableObject for Relay {
    fn new(state: State, env: Env) -> Self {
        let shards = crate::shard_count(&env);
        let test_hooks = workers_common::vars::text(&env, "TEST_HOOKS").as_deref() == Some("on");
        let instance_id = format!(
            "{:08x}",
            (js_sys::Math::random() * f64::from(u32::MAX)) as u32
        );
        Self {
            state,
            env,
            shards,
            test_hooks,
            instance_id,
            books: RefCell::new(None),
            turns: RefCell::new((0..shards).map(|_| None).collect()),
            last_order: Cell::new(0),
            next_try: RefCell::new(vec![0; shards as usize]),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        let span = workers_common::log::request_span(&req);
        self.serve(req).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        self.catch_up()
            .instrument(workers_common::log::alarm_span())
            .await?;
        Response::empty()
    }
}

impl Relay {
    async fn serve(&self, mut req: Request) -> Result<Response> {
        let (path, query) = workers_common::target(&req);
        match (req.method(), path.as_str()) {
            (Method::Post, internal::BROKER_PUBLISH) => self.publish(&mut req).await,
            (Method::Get, internal::BROKER_STATS) => {
                workers_common::json_response(200, &self.stats().await?)
            }
            (Method::Post, internal::BROKER_REFUSE) if self.test_hooks => {
                let ms: i64 = internal::query_value(query.as_deref(), "ms")
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0);
                let mut books = self.books()?;
                books.state.change().refuse_until_ms = now_ms() + ms.clamp(0, 600_000);
                books.save(now_ms())?;
                tracing::warn!(ms, "publishes refused (test hook)");
                Response::empty()
            }
            _ => workers_common::text_error(404, "no such broker route"),
        }
    }

    /// The books, opened on first use by this instance.
    fn books(&self) -> Result<RefMut<'_, Books>> {
        let mut slot = self.books.borrow_mut();
        if slot.is_none() {
            *slot = Some(Books::open(self.state.storage().sql(), self.shards)?);
        }
        Ok(RefMut::map(slot, |slot| {
            slot.as_mut().expect("the books were just opened")
        }))
    }

    /// Checks a publish, then sends it on to every shard in its turn; answers once every shard
    /// took it or the relay keeps it for those that did not.
    async fn publish(&self, req: &mut Request) -> Result<Response> {
        let Ok(body) = String::from_utf8(req.bytes().await?) else {
            return workers_common::text_error(400, "not a publish: not UTF-8");
        };
        let empty = match wire::read_publish_text(&body) {
            Ok(publish) => publish.messages.is_empty(),
            Err((status, message)) => return workers_common::text_error(status, &message),
        };
        let now = now_ms();
        {
            let mut books = self.books()?;
            if self.test_hooks && now < books.state.get().refuse_until_ms {
                books.count(|c| c.refused_publishes += 1);
                books.save(now)?;
                return workers_common::text_error(503, "refusing publishes (test hook)");
            }
            books.count(|c| c.publishes += 1);
        }
        if empty {
            return workers_common::json_response(200, &RelayAck::default());
        }
        // The order and the turns are taken before any wait: this is the order every shard sees.
        let order = shards::next_order(self.last_order.get(), now);
        self.last_order.set(order);
        let turns: Vec<_> = (0..self.shards).map(|k| self.take_turn(k)).collect();
        let sends = turns.into_iter().enumerate().map(|(k, (before, done))| {
            let body = body.as_str();
            async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                let answer = self.deliver(k as u32, order, body).await;
                drop(done);
                answer
            }
        });
        let answers = join_all(sends).await;
        let mut ack = RelayAck::default();
        for answer in answers {
            let answer = answer?;
            ack.delivered += answer.ack.delivered;
            ack.shards.push(answer);
        }
        self.books()?.save_soon(now_ms())?;
        workers_common::json_response(200, &ack)
    }

    /// Joins the end of shard `k`'s queue: returns what to wait for (the turn before) and the
    /// signal to give (by dropping it) when done.
    fn take_turn(&self, k: u32) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        let before = self
            .turns
            .borrow_mut()
            .get_mut(k as usize)
            .and_then(|slot| slot.replace(next));
        (before, done)
    }

    /// Sends one publish to shard `k` in its turn: or keeps it, when the shard is owed older
    /// ones or fails to take it.
    async fn deliver(&self, k: u32, order: u64, body: &str) -> Result<ShardAck> {
        let kept = ShardAck {
            shard: k,
            ack: PublishAck::default(),
            kept: true,
        };
        if self.books()?.owed.contains(k) {
            let mut books = self.books()?;
            books.keep(order, body, k)?;
            books.count(|c| c.queued += 1);
            return Ok(kept);
        }
        match self.send(k, body).await {
            Ok(Answer::Taken(ack)) => {
                self.books()?.count(|c| c.sent += 1);
                Ok(ShardAck {
                    shard: k,
                    ack,
                    kept: false,
                })
            }
            Ok(Answer::Refused(code)) => {
                tracing::error!(shard = k, code, "a shard refused a publish for good");
                self.books()?.count(|c| c.rejected += 1);
                Ok(ShardAck {
                    shard: k,
                    ack: PublishAck::default(),
                    kept: false,
                })
            }
            Err(error) => {
                tracing::warn!(shard = k, %error, "a shard did not take a publish; kept for it");
                self.books()?.keep(order, body, k)?;
                self.failed(k).await?;
                Ok(kept)
            }
        }
    }

    /// Sends shard `k` a request for `path` (a POST when there is a body).
    async fn ask(&self, k: u32, path: &str, body: Option<&str>) -> Result<Response> {
        let headers = Headers::new();
        headers.set(internal::SHARD_HEADER, &k.to_string())?;
        let mut init = RequestInit::new();
        init.with_headers(headers);
        if let Some(body) = body {
            init.with_method(Method::Post).with_body(Some(body.into()));
        }
        let request = Request::new_with_init(&format!("https://shard{path}"), &init)?;
        self.env
            .durable_object("BROKER")?
            .get_by_name(&shards::object_name(k))?
            .fetch_with_request(request)
            .await
    }

    /// Posts a publish's body to shard `k`.
    async fn send(&self, k: u32, body: &str) -> Result<Answer> {
        let mut response = self.ask(k, internal::BROKER_PUBLISH, Some(body)).await?;
        match response.status_code() {
            200 => Ok(Answer::Taken(response.json().await.unwrap_or_default())),
            code @ 400..=499 => Ok(Answer::Refused(code)),
            code => Err(Error::RustError(format!("shard {k} answered {code}"))),
        }
    }

    /// Counts a failed try at shard `k` and makes sure the alarm comes for its next one.
    async fn failed(&self, k: u32) -> Result<()> {
        let now = now_ms();
        let at = {
            let mut books = self.books()?;
            books.count(|c| c.failures += 1);
            let failures = books.failing_more(k);
            books.save(now)?;
            now + shards::retry_delay_ms(failures)
        };
        if let Some(slot) = self.next_try.borrow_mut().get_mut(k as usize) {
            *slot = at;
        }
        self.schedule().await
    }

    /// Sets the alarm for the earliest next try of a shard that is owed something.
    async fn schedule(&self) -> Result<()> {
        let owed = self.books()?.owed;
        let next = owed
            .iter()
            .filter_map(|k| self.next_try.borrow().get(k as usize).copied())
            .min();
        if let Some(at) = next {
            let storage = self.state.storage();
            let wanted = (at - now_ms()).max(0);
            let set = storage.get_alarm().await?;
            if set.is_none_or(|set| set > at) {
                storage.set_alarm(wanted).await?;
            }
        }
        Ok(())
    }

    /// The alarm: tries again every owed shard whose time has come, each in its turn.
    async fn catch_up(&self) -> Result<()> {
        let now = now_ms();
        let owed = self.books()?.owed;
        let due: Vec<u32> = owed
            .iter()
            .filter(|k| {
                self.next_try
                    .borrow()
                    .get(*k as usize)
                    .is_none_or(|at| *at <= now)
            })
            .collect();
        let turns: Vec<_> = due.iter().map(|k| (*k, self.take_turn(*k))).collect();
        let tries = turns.into_iter().map(|(k, (before, done))| async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let result = self.catch_up_shard(k).await;
            drop(done);
            result
        });
        for result in join_all(tries).await {
            result?;
        }
        self.books()?.save(now_ms())?;
        self.schedule().await
    }

    /// Sends shard `k` what it is owed, oldest first (a reload first if some was dropped), until
    /// it is caught up or a try fails.
    async fn catch_up_shard(&self, k: u32) -> Result<()> {
        if Shards::from_bits(self.books()?.state.get().reload).contains(k) {
            let reload = Publish {
                messages: vec![ServerMessage::Reload {
                    reason: "the live feed dropped updates".to_owned(),
                }],
                sent_at_ms: Some(now_ms()),
                id: Some(format!("reload-{}", self.last_order.get())),
            };
            match self.send(k, &serde_json::to_string(&reload)?).await {
                Ok(_) => {
                    let mut books = self.books()?;
                    let state = books.state.change();
                    state.reload = Shards::from_bits(state.reload)
                        .without(Shards::one(k))
                        .bits();
                    books.count(|c| c.reloads += 1);
                }
                Err(error) => {
                    tracing::warn!(shard = k, %error, "a shard did not take its reload");
                    return self.failed(k).await;
                }
            }
        }
        loop {
            let rows = self.books()?.kept_for(k)?;
            if rows.is_empty() {
                self.books()?.caught_up(k);
                tracing::info!(shard = k, "a shard caught up");
                return Ok(());
            }
            for row in rows {
                match self.send(k, &row.body).await {
                    Ok(answer) => {
                        let mut books = self.books()?;
                        books.delivered(row.ord, k)?;
                        books.count(|c| match answer {
                            Answer::Taken(_) => c.retried += 1,
                            Answer::Refused(_) => c.rejected += 1,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(shard = k, %error, "a shard still does not take publishes");
                        return self.failed(k).await;
                    }
                }
            }
        }
    }

    /// The relay's books and every shard's stats (each shard asked at once).
    async fn stats(&self) -> Result<BrokerStats> {
        let asks = (0..self.shards).map(|k| async move {
            let mut response = self.ask(k, internal::BROKER_STATS, None).await?;
            match response.status_code() {
                200 => response.json::<ShardStats>().await,
                code => Err(Error::RustError(format!("answered {code}"))),
            }
        });
        let mut stats = BrokerStats::default();
        for (k, answer) in join_all(asks).await.into_iter().enumerate() {
            match answer {
                Ok(shard) => {
                    stats.connections += shard.connections;
                    stats.closing += shard.closing;
                    stats.shards.push(shard);
                }
                Err(error) => stats.unreachable.push(format!("shard {k}: {error}")),
            }
        }
        let next_try_ms = self.state.storage().get_alarm().await?;
        let mut books = self.books()?;
        books.save(now_ms())?;
        let kept = books.kept_counts(self.shards)?;
        stats.relay = RelayStats {
            shards: self.shards,
            instance_id: self.instance_id.clone(),
            counters: books.state.get().counters.clone(),
            kept,
            failing: (0..self.shards as usize)
                .map(|k| books.state.get().failing.get(k).copied().unwrap_or(0))
                .collect(),
            next_try_ms,
            usage: workers_common::usage::snapshot(),
        };
        Ok(stats)
    }
}

impl Books {
    fn open(sql: SqlStorage, shards: u32) -> Result<Books> {
        usage::sql(&sql, SCHEMA, None)?;
        // Never saved by this instance: the first `save_soon` writes.
        let state = Kept::<Persisted>::open(&sql, "state", 0)?;
        // Publishes kept for shards that are gone (the count was lowered) are owed to no one.
        let all = Shards::all(shards);
        usage::sql(
            &sql,
            "UPDATE kept SET shards = shards & ? WHERE shards & ? != shards",
            vec![all.bits().into(), all.bits().into()],
        )?;
        usage::sql(&sql, "DELETE FROM kept WHERE shards = 0", None)?;
        let owed = usage::sql_rows::<ShardsRow>(&sql, "SELECT shards FROM kept", None)?
            .into_iter()
            .fold(Shards::from_bits(state.get().reload), |owed, row| {
                owed.with(Shards::from_bits(row.shards))
            })
            .within(all);
        Ok(Books { sql, owed, state })
    }

    fn count(&mut self, change: impl FnOnce(&mut RelayCounters)) {
        change(&mut self.state.change().counters);
    }

    /// Keeps the publish `order` for shard `k` (one row per publish, whatever the shards it is
    /// kept for); past [`shards::MAX_KEPT`] the oldest is dropped and its shards owed a reload.
    fn keep(&mut self, order: u64, body: &str, k: u32) -> Result<()> {
        usage::sql(
            &self.sql,
            "INSERT INTO kept (ord, body, shards) VALUES (?, ?, ?)
             ON CONFLICT (ord) DO UPDATE SET shards = shards | excluded.shards",
            vec![int(order), body.into(), Shards::one(k).bits().into()],
        )?;
        self.owed = self.owed.with(Shards::one(k));
        let dropped = usage::sql_rows::<ShardsRow>(
            &self.sql,
            "DELETE FROM kept WHERE ord NOT IN (SELECT ord FROM kept ORDER BY ord DESC LIMIT ?)
                 RETURNING shards",
            vec![(shards::MAX_KEPT as i64).into()],
        )?;
        if !dropped.is_empty() {
            let reload = dropped
                .iter()
                .fold(Shards::from_bits(self.state.get().reload), |all, row| {
                    all.with(Shards::from_bits(row.shards))
                });
            tracing::error!(
                dropped = dropped.len(),
                "kept publishes past the bound dropped; their shards will be sent a reload"
            );
            self.state.change().reload = reload.bits();
            let n = dropped.len() as u64;
            self.count(|c| c.dropped += n);
        }
        Ok(())
    }

    /// The oldest publishes kept for shard `k`.
    fn kept_for(&self, k: u32) -> Result<Vec<KeptRow>> {
        usage::sql_rows(
            &self.sql,
            "SELECT ord, body FROM kept WHERE shards & ? != 0 ORDER BY ord LIMIT ?",
            vec![Shards::one(k).bits().into(), CATCH_UP_ROWS.into()],
        )
    }

    /// Shard `k` took the kept publish `ord`.
    fn delivered(&mut self, ord: i64, k: u32) -> Result<()> {
        usage::sql(
            &self.sql,
            "UPDATE kept SET shards = shards & ~? WHERE ord = ?",
            vec![Shards::one(k).bits().into(), ord.into()],
        )?;
        usage::sql(
            &self.sql,
            "DELETE FROM kept WHERE ord = ? AND shards = 0",
            vec![ord.into()],
        )?;
        Ok(())
    }

    /// Shard `k` is owed nothing more.
    fn caught_up(&mut self, k: u32) {
        self.owed = self.owed.without(Shards::one(k));
        if let Some(failures) = self.state.change().failing.get_mut(k as usize) {
            *failures = 0;
        }
    }

    /// One more failed try at shard `k`; returns how many in a row.
    fn failing_more(&mut self, k: u32) -> u32 {
        let k = k as usize;
        let failing = &mut self.state.change().failing;
        if failing.len() <= k {
            failing.resize(k + 1, 0);
        }
        failing[k] += 1;
        failing[k]
    }

    /// Per shard `0..shards`: publishes kept for it.
    fn kept_counts(&self, shards: u32) -> Result<Vec<u64>> {
        let rows = usage::sql_rows::<ShardsRow>(&self.sql, "SELECT shards FROM kept", None)?;
        Ok((0..shards)
            .map(|k| {
                rows.iter()
                    .filter(|row| Shards::from_bits(row.shards).contains(k))
                    .count() as u64
            })
            .collect())
    }

    /// Writes the state if it changed (one row).
    fn save(&mut self, now_ms: i64) -> Result<()> {
        self.state.save(now_ms)
    }

    /// Writes the counters unless they were written in the last few seconds: a publish costs no
    /// row of its own (what an eviction interrupts is a few seconds of counts, never a publish).
    fn save_soon(&mut self, now_ms: i64) -> Result<()> {
        self.state.save_soon(now_ms)
    }
}

/// Orders stay below 2^53 (`shards::next_order`), exact as JavaScript numbers.
fn int(value: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}
