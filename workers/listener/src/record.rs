//! Recording one batch: `domain::ingest` plans it, D1 runs it as one transaction, the cursor is
//! stored only after that committed, in the same storage write as what changed, queued in the
//! outbox (`crate::outbox`); then the outbox goes to the broker.

use domain::cursor::InstanceSeq;
use domain::ingest::Batch;
use domain::internal::ListenerStatus;
use domain::jetstream::NoticeLevel;
use worker::*;

use workers_common::now_ms;

use crate::outbox::{Mailbox, QUIET_TRIES};

/// The storage key of the [`ListenerStatus`]: the cursor and the counters, saved after every
/// batch that committed.
pub const KEY_STATUS: &str = "status";

/// The status and the outbox, written together (their keys: [`KEY_STATUS`] and
/// `crate::outbox::KEY_OUTBOX`).
#[derive(serde::Serialize)]
struct StatusAndOutbox<'a> {
    status: &'a ListenerStatus,
    /// `crate::outbox::Mailbox::stored`.
    outbox: String,
}

/// Stores `status` and the outbox in one write.
async fn store_with(storage: &Storage, status: &ListenerStatus, mailbox: &Mailbox) -> Result<()> {
    let outbox = mailbox.stored()?;
    storage
        .put_multiple(StatusAndOutbox { status, outbox })
        .await
}

pub struct Recorder<'a> {
    db: D1Database,
    broker: Fetcher,
    /// The URL being read: the instance whose sequence numbers the batches carry.
    url: String,
    mailbox: &'a Mailbox,
    /// The bench's baselines (`crate::config::Config::one_row_per_statement` and
    /// `call_per_statement`).
    one_row_per_statement: bool,
    call_per_statement: bool,
    /// Tries of the outbox left while no batch comes.
    quiet_tries: std::cell::Cell<u32>,
}

/// What a recorded batch covered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Covered {
    /// The greatest event time of its valid events.
    pub cursor_us: Option<i64>,
    /// Its valid events.
    pub events: u64,
}

impl<'a> Recorder<'a> {
    pub fn new(
        env: &Env,
        url: &str,
        mailbox: &'a Mailbox,
        config: &crate::config::Config,
    ) -> Result<Recorder<'a>> {
        Ok(Recorder {
            db: env.d1("DB")?,
            broker: env.service("BROKER")?,
            url: url.to_owned(),
            mailbox,
            one_row_per_statement: config.one_row_per_statement,
            call_per_statement: config.call_per_statement,
            quiet_tries: std::cell::Cell::new(QUIET_TRIES),
        })
    }

    /// Records `frames`; returns the cursor the batch covered (if any frame was valid) and how
    /// many valid events it had.
    pub async fn record(
        &self,
        storage: &Storage,
        status: &mut ListenerStatus,
        frames: &[String],
    ) -> Result<Covered> {
        if frames.is_empty() {
            return Ok(Covered::default());
        }
        let mut batch = Batch::plan(frames.iter().map(String::as_str), now_ms() * 1000);
        if self.one_row_per_statement {
            batch = batch.one_row_per_statement();
        }
        let counters = &mut status.counters;
        counters.seen += batch.seen;
        counters.changes += batch.changes;
        counters.ignored += batch.ignored;
        for dropped in &batch.dropped {
            *counters
                .dropped
                .entry(dropped.reason.to_owned())
                .or_default() += 1;
            tracing::warn!(reason = dropped.reason, detail = %dropped.detail, "dropped a frame");
        }
        for notice in &batch.notices {
            let (name, message) = (&notice.name, notice.message.as_deref().unwrap_or(""));
            match notice.level {
                NoticeLevel::Error => {
                    tracing::warn!(name, message, "Jetstream sent an error; it closes next")
                }
                NoticeLevel::Info => tracing::info!(name, message, "Jetstream says"),
                NoticeLevel::Unknown => tracing::info!(name, "skipped a frame of an unknown type"),
            }
        }

        let mut messages = Vec::new();
        if !batch.statements.is_empty() {
            // One D1 batch is one transaction: all of it lands, or none of it (and the cursor
            // is not moved). The naive baseline's calls land one by one; a failure leaves the
            // cursor where it was, and reading again changes nothing twice (idempotent).
            let calls: Vec<&[_]> = match self.call_per_statement {
                true => batch.statements.chunks(1).collect(),
                false => vec![&batch.statements],
            };
            let mut rows = Vec::with_capacity(batch.statements.len());
            for statements in calls {
                rows.extend(
                    workers_common::d1::batch_rows(&self.db, statements)
                        .await?
                        .rows,
                );
            }
            counters.batches += 1;
            messages = batch
                .messages(&rows)
                .map_err(|e| Error::RustError(e.to_string()))?;
        }
        if let Some(cursor) = batch.cursor_us {
            // Never backwards: a rewound read re-covers what the cursor already says.
            let cursor = status.cursor_us.map_or(cursor, |c| c.max(cursor));
            status.cursor_us = Some(cursor);
            status.lag_ms = Some(now_ms() - cursor / 1_000);
            // The sequence number goes with the time of the same batch: this instance's, or
            // none if it numbers nothing (a legacy instance), never another's left behind.
            status.seq = match (batch.seq, status.seq.take()) {
                (Some(seq), Some(old)) if old.url == self.url => Some(InstanceSeq {
                    url: old.url,
                    seq: seq.max(old.seq),
                }),
                (Some(seq), _) => Some(InstanceSeq {
                    url: self.url.clone(),
                    seq,
                }),
                (None, _) => None,
            };
        }
        // The cursor is stored (with the counters) only now that D1 has the batch, and in the
        // same write as what changed, queued for the broker: what pages are told is always in
        // D1, and a crash between the two loses neither.
        if messages.is_empty() {
            workers_common::usage::put(storage, KEY_STATUS, &*status).await?;
        } else {
            let before = self.mailbox.snapshot();
            self.mailbox.push(messages);
            if let Err(error) = store_with(storage, status, self.mailbox).await {
                // Not stored: the batch is read again, and queued again then.
                self.mailbox.restore(before);
                return Err(error);
            }
        }
        self.flush(storage, status, 1).await;
        tracing::info!(
            frames = batch.seen,
            changes = batch.changes,
            dropped = batch.dropped.len(),
            cursor_us = ?status.cursor_us,
            "batch recorded"
        );
        Ok(Covered {
            cursor_us: batch.cursor_us,
            events: batch.changes + batch.ignored,
        })
    }

    /// Sends what is due in the outbox (at most `tries` publishes); a failure is counted and
    /// logged, and the outbox tries again after its wait.
    pub async fn flush(&self, storage: &Storage, status: &mut ListenerStatus, tries: u32) {
        if !self.mailbox.due() {
            return;
        }
        match self.mailbox.flush(&self.broker, storage, tries).await {
            Ok(flushed) => flushed.count(&mut status.counters),
            Err(error) => tracing::error!(%error, "storing the outbox failed"),
        }
    }

    /// While no batch comes: tries the outbox if it is due, a few times a connection (each try
    /// is a subrequest).
    pub async fn flush_quiet(&self, storage: &Storage, status: &mut ListenerStatus) {
        let left = self.quiet_tries.get();
        if left == 0 || !self.mailbox.due() {
            return;
        }
        self.quiet_tries.set(left - 1);
        self.flush(storage, status, 1).await;
    }
}
