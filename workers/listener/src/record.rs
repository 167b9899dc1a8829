//! Recording one batch: `domain::ingest` plans it, D1 runs it as one transaction, the cursor is
//! stored only after that committed, and what changed goes to the broker in one publish.

use domain::cursor::InstanceSeq;
use domain::ingest::Batch;
use domain::internal::ListenerStatus;
use domain::jetstream::NoticeLevel;
use worker::*;

use workers_common::now_ms;

/// The storage key of the [`ListenerStatus`]: the cursor and the counters, saved after every
/// batch that committed.
pub const KEY_STATUS: &str = "status";

pub struct Recorder {
    db: D1Database,
    broker: Fetcher,
    /// The URL being read: the instance whose sequence numbers the batches carry.
    url: String,
}

/// What a recorded batch covered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Covered {
    /// The greatest event time of its valid events.
    pub cursor_us: Option<i64>,
    /// Its valid events.
    pub events: u64,
}

impl Recorder {
    pub fn new(env: &Env, url: &str) -> Result<Recorder> {
        Ok(Recorder {
            db: env.d1("DB")?,
            broker: env.service("BROKER")?,
            url: url.to_owned(),
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
        let batch = Batch::plan(frames.iter().map(String::as_str), now_ms() * 1000);
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
            // is not moved).
            let results = workers_common::d1::batch(&self.db, &batch.statements).await?;
            let rows = results
                .iter()
                .map(|r| r.results::<serde_json::Value>())
                .collect::<Result<Vec<_>>>()?;
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
        // The cursor is stored (with the counters) only now that D1 has the batch; the publish
        // comes after, so what pages are told is always in D1.
        storage.put(KEY_STATUS, &*status).await?;
        if !messages.is_empty() {
            self.publish(status, messages).await;
        }
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

    /// One publish per batch. A failure is counted and logged, not retried: D1 already has the
    /// data, and a page that missed it catches up when it reloads.
    async fn publish(
        &self,
        status: &mut ListenerStatus,
        messages: Vec<domain::wire::ServerMessage>,
    ) {
        let count = messages.len() as u64;
        match workers_common::broker::publish(&self.broker, messages).await {
            Ok(()) => status.counters.published += count,
            Err(error) => {
                status.counters.publish_failures += 1;
                tracing::error!(%error, messages = count, "publishing to the broker failed");
            }
        }
    }
}
