//! The listener's outbox (`domain::outbox`; docs/broker.md, "When the broker fails"): what the
//! broker has not taken yet, its own and what edge could not deliver, held in memory and in the
//! object's storage, and sent in order with a doubling wait between failed tries.
//!
//! The object is single-threaded but its handlers interleave at every `await` (edge's handing
//! over a publish arrives while an alarm reads Jetstream), so the outbox lives in one
//! `RefCell` that is never borrowed across an `await`: each change is made and stored whole.

use std::cell::{Cell, RefCell};

use domain::internal::OutboxStatus;
use domain::outbox::Outbox;
use domain::wire::{Publish, ServerMessage};
use worker::{Fetcher, Result, Storage};
use workers_common::broker::Answer;

use workers_common::now_ms;

/// The storage key of the [`Outbox`].
pub const KEY_OUTBOX: &str = "outbox";

/// Tries one connection makes while no batch comes (a quiet network); each batch makes its own.
pub const QUIET_TRIES: u32 = 5;

pub struct Mailbox {
    outbox: RefCell<Option<Outbox>>,
    /// Ids of the publishes made here: this instance's prefix and a counter.
    prefix: String,
    next: Cell<u64>,
    retry_ms: i64,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flushed {
    /// Messages the broker took.
    pub delivered: u64,
    /// Tries that failed.
    pub failures: u64,
}

impl Flushed {
    /// Adds this flush to the listener's counters (`published`, `publish_failures`).
    pub fn count(self, counters: &mut domain::internal::ListenerCounters) {
        counters.published += self.delivered;
        counters.publish_failures += self.failures;
    }
}

impl Mailbox {
    pub fn new(retry_ms: i64) -> Mailbox {
        let prefix = oauth::random::short_token().unwrap_or_else(|_| now_ms().to_string());
        Mailbox {
            outbox: RefCell::new(None),
            prefix,
            next: Cell::new(0),
            retry_ms,
        }
    }

    /// Reads the stored outbox, once per instance. Whatever it holds may have been sent before
    /// the restart, so none of it is added to. One that cannot be read is logged and started
    /// over: it must not stop the listener.
    pub async fn load(&self, storage: &Storage) -> Result<()> {
        if self.outbox.borrow().is_some() {
            return Ok(());
        }
        let stored = match workers_common::usage::get::<String>(storage, KEY_OUTBOX)
            .await
            .and_then(|stored| {
                stored
                    .map(|text| serde_json::from_str::<Outbox>(&text))
                    .transpose()
                    .map_err(|e| worker::Error::RustError(e.to_string()))
            }) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%error, "the stored outbox could not be read; starting over");
                None
            }
        };
        let mut slot = self.outbox.borrow_mut();
        if slot.is_none() {
            let mut outbox = stored.unwrap_or_default();
            outbox.all_sent();
            *slot = Some(outbox);
        }
        Ok(())
    }

    fn with<T>(&self, change: impl FnOnce(&mut Outbox) -> T) -> T {
        change(self.outbox.borrow_mut().get_or_insert_with(Outbox::default))
    }

    fn new_id(&self) -> String {
        let n = self.next.get() + 1;
        self.next.set(n);
        format!("listener-{}-{n}", self.prefix)
    }

    /// Queues the listener's own `messages` (after [`Mailbox::load`]); returns the messages
    /// dropped to keep the outbox bounded.
    pub fn push(&self, messages: Vec<ServerMessage>) -> u64 {
        let dropped = self.with(|outbox| outbox.push(messages, &mut || self.new_id()));
        if dropped > 0 {
            tracing::error!(
                dropped,
                "the outbox is full; its oldest messages are dropped"
            );
        }
        dropped
    }

    /// Queues a publish edge could not deliver, as it is (its id may already be sequenced).
    pub fn push_publish(&self, publish: Publish) -> u64 {
        let id = publish.id.unwrap_or_else(|| self.new_id());
        let dropped =
            self.with(|outbox| outbox.push_fixed(id, publish.messages, &mut || self.new_id()));
        if dropped > 0 {
            tracing::error!(
                dropped,
                "the outbox is full; its oldest messages are dropped"
            );
        }
        dropped
    }

    /// The outbox as it is now, to store.
    pub fn snapshot(&self) -> Outbox {
        self.with(|outbox| outbox.clone())
    }

    /// The outbox as it is now, as stored: one JSON string. Stored as a structured value, each
    /// of its messages became JavaScript objects on the way in and was serialised again by the
    /// runtime: in a catch-up (hundreds of messages a batch) that was about a tenth of the time
    /// (docs/benchmarks.md, "Listener: catching up").
    pub fn stored(&self) -> Result<String> {
        self.with(|outbox| serde_json::to_string(outbox))
            .map_err(|e| worker::Error::RustError(e.to_string()))
    }

    /// Stores the outbox as it is now (alone; a batch stores it with its cursor).
    pub async fn store(&self, storage: &Storage) -> Result<()> {
        workers_common::usage::put(storage, KEY_OUTBOX, self.stored()?).await
    }

    /// Puts back an earlier [`Mailbox::snapshot`] (what was queued was not stored).
    pub fn restore(&self, outbox: Outbox) {
        *self.outbox.borrow_mut() = Some(outbox);
    }

    pub fn due(&self) -> bool {
        self.with(|outbox| outbox.due(now_ms()))
    }

    /// When the next try is due (unix ms), if anything waits.
    pub fn next_try_ms(&self) -> Option<i64> {
        self.with(|outbox| (!outbox.is_empty()).then_some(outbox.next_try_ms))
    }

    pub fn status(&self) -> OutboxStatus {
        self.with(|outbox| OutboxStatus::of(outbox))
    }

    /// Sends up to `tries` due publishes, oldest first, stopping at the first failure; stores
    /// the outbox after.
    pub async fn flush(&self, broker: &Fetcher, storage: &Storage, tries: u32) -> Result<Flushed> {
        let mut flushed = Flushed::default();
        for _ in 0..tries {
            let now = now_ms();
            let Some(due) = self.with(|outbox| outbox.next(now, now)) else {
                break;
            };
            let (id, count) = (due.id, due.count as u64);
            match workers_common::broker::send_body(broker, due.body).await {
                Ok(Answer::Taken) => {
                    // Another try running at the same time may have taken it out already.
                    flushed.delivered += self.with(|outbox| outbox.delivered(&id));
                }
                Ok(Answer::Refused(code)) => {
                    self.with(|outbox| outbox.rejected(&id));
                    flushed.failures += 1;
                    tracing::error!(
                        code,
                        messages = count,
                        "the broker refused a publish for good; dropped"
                    );
                }
                Err(error) => {
                    self.with(|outbox| outbox.failed(now_ms(), self.retry_ms));
                    flushed.failures += 1;
                    let status = self.status();
                    tracing::error!(%error, messages = status.messages, attempts = status.attempts, "the broker did not take a publish; kept in the outbox");
                    break;
                }
            }
        }
        if flushed.delivered > 0 || flushed.failures > 0 {
            self.store(storage).await?;
        }
        Ok(flushed)
    }
}
