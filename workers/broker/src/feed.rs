//! The broker's durable state, in its Durable Object's own SQLite: the recent log of sequenced
//! frames (what a reconnecting page can be sent), a publish's frames in one row
//! (`domain::wire::Entry`); the ids of the publishes in it (a publish sent again is sequenced
//! once); the head sequence number (the newest logged frame's); and the counters that `/health`
//! reports.
//!
//! Every method is synchronous: SQL storage calls do not yield, so nothing else runs in the object
//! between giving out a sequence number, logging the frame and sending it. Writes made in one event
//! are committed together, and the runtime's output gate holds the frames sent in that event until
//! they are durable, so a page never sees a sequence number that a crash could give out again.

use std::collections::VecDeque;

use domain::internal::{BrokerCounters, FanoutTimings};
use domain::wire::{self, LogBounds};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use worker::{Result, SqlStorage, SqlStorageValue};
use workers_common::usage;

use crate::meta::Kept;

// `log`, a row a frame, was the log before entries; its frames are dropped (pages behind the head
// are told to reload once), and the head it left in `meta` carries on.
const SCHEMA: &str = "DROP TABLE IF EXISTS log;
CREATE TABLE IF NOT EXISTS entries (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,
  frames TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value ANY NOT NULL);
CREATE TABLE IF NOT EXISTS published (id TEXT PRIMARY KEY, first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS published_by_last_seq ON published (last_seq);";

/// How many publish-to-fan-out samples the timings are computed over.
const SAMPLES: usize = 128;

/// What is kept under the `stats` key of `meta`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    #[serde(default)]
    counters: BrokerCounters,
    #[serde(default)]
    samples: VecDeque<i64>,
    #[serde(default)]
    last_sockets: usize,
}

#[derive(Deserialize)]
struct IntValue {
    value: i64,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<i64>,
}

#[derive(Deserialize)]
struct EntryRow {
    first_seq: i64,
    frames: String,
}

#[derive(Deserialize)]
struct PublishedRow {
    first_seq: i64,
    last_seq: i64,
}

/// The open log. One per object instance, opened on first use.
pub struct Feed {
    sql: SqlStorage,
    capacity: u64,
    head: u64,
    /// The counters and fan-out samples, under `stats` in `meta`.
    stats: Kept<Persisted>,
}

impl Feed {
    /// Opens the log, creating it (with its sequence numbers starting at `now_ms`'s epoch base)
    /// if this object has none yet.
    pub fn open(sql: SqlStorage, capacity: u64, now_ms: i64) -> Result<Feed> {
        usage::sql(&sql, SCHEMA, None)?;
        // The head is the newest logged frame's number: the log is never emptied once written,
        // so only a new log's starting point (its epoch base) is kept apart, written once.
        let newest =
            usage::sql_rows::<SeqRow>(&sql, "SELECT MAX(last_seq) AS seq FROM entries", None)?
                .first()
                .and_then(|row| row.seq)
                .and_then(|seq| u64::try_from(seq).ok());
        let head = match newest {
            Some(seq) => seq,
            None => match usage::sql_rows::<IntValue>(
                &sql,
                "SELECT value FROM meta WHERE key = 'head'",
                None,
            )?
            .first()
            {
                Some(row) => u64::try_from(row.value).unwrap_or(0),
                None => {
                    let base = wire::epoch_base(now_ms);
                    usage::sql(
                        &sql,
                        "INSERT INTO meta (key, value) VALUES ('head', ?)",
                        vec![int(base)],
                    )?;
                    tracing::info!(head = base, "created the broker's log");
                    base
                }
            },
        };
        let stats = Kept::open(&sql, "stats", now_ms)?;
        Ok(Feed {
            sql,
            capacity: capacity.max(1),
            head,
            stats,
        })
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The oldest frame a page may still be sent: the log keeps the last `capacity`.
    fn keep_from(&self) -> u64 {
        self.head.saturating_sub(self.capacity) + 1
    }

    pub fn bounds(&self) -> Result<LogBounds> {
        let oldest = usage::sql_rows::<SeqRow>(
            &self.sql,
            "SELECT MIN(first_seq) AS seq FROM entries",
            None,
        )?
        .first()
        .and_then(|row| row.seq)
        .and_then(|seq| u64::try_from(seq).ok())
        .map(|oldest| oldest.max(self.keep_from()));
        Ok(LogBounds {
            head: self.head,
            oldest,
        })
    }

    /// Gives each message the next sequence number, logs them, and drops the entries that fall
    /// wholly out of the log's capacity. Returns the frames, in order, ready to send.
    pub fn append(&mut self, messages: &[&RawValue]) -> Result<Vec<(u64, String)>> {
        let frames: Vec<(u64, String)> = (self.head + 1..)
            .zip(messages)
            .map(|(seq, message)| (seq, wire::frame_json(seq, message)))
            .collect();
        // The head moves with what was written, so a failure leaves it at the last entry logged.
        for entry in wire::entries(&frames) {
            usage::sql(
                &self.sql,
                "INSERT INTO entries (first_seq, last_seq, frames) VALUES (?, ?, ?)",
                vec![
                    int(entry.first_seq),
                    int(entry.last_seq),
                    entry.frames.into(),
                ],
            )?;
            self.head = entry.last_seq;
        }
        if !frames.is_empty() {
            let keep_from = self.keep_from();
            usage::sql(
                &self.sql,
                "DELETE FROM entries WHERE last_seq < ?",
                vec![int(keep_from)],
            )?;
            usage::sql(
                &self.sql,
                "DELETE FROM published WHERE last_seq < ?",
                vec![int(keep_from)],
            )?;
        }
        Ok(frames)
    }

    /// The sequence numbers the publish `id` was given, if it is still in the log.
    pub fn sequenced(&self, id: &str) -> Result<Option<(u64, u64)>> {
        Ok(usage::sql_rows::<PublishedRow>(
            &self.sql,
            "SELECT first_seq, last_seq FROM published WHERE id = ?",
            vec![id.into()],
        )?
        .first()
        .map(|row| (row.first_seq as u64, row.last_seq as u64)))
    }

    /// Remembers that the publish `id` was given `first..=last` (kept as long as its frames are).
    pub fn remember(&self, id: &str, first: u64, last: u64) -> Result<()> {
        usage::sql(
            &self.sql,
            "INSERT OR IGNORE INTO published (id, first_seq, last_seq) VALUES (?, ?, ?)",
            vec![id.into(), int(first), int(last)],
        )?;
        Ok(())
    }

    /// Until when publishes are refused (a test hook's outage; 0: they are not).
    pub fn refusing_until(&self) -> Result<i64> {
        Ok(usage::sql_rows::<IntValue>(
            &self.sql,
            "SELECT value FROM meta WHERE key = 'refuse_until'",
            None,
        )?
        .first()
        .map_or(0, |row| row.value))
    }

    /// Refuses publishes until `until_ms`.
    pub fn refuse_until(&self, until_ms: i64) -> Result<()> {
        usage::sql(
            &self.sql,
            "INSERT INTO meta (key, value) VALUES ('refuse_until', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![until_ms.into()],
        )?;
        Ok(())
    }

    /// The logged frames after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Result<Vec<String>> {
        let keep_from = self.keep_from();
        Ok(usage::sql_rows::<EntryRow>(
            &self.sql,
            "SELECT first_seq, frames FROM entries WHERE last_seq > ? ORDER BY first_seq",
            vec![int(seq)],
        )?
        .into_iter()
        .flat_map(|row| {
            let first = u64::try_from(row.first_seq).unwrap_or(0);
            wire::entry_frames(first, &row.frames, seq, keep_from)
        })
        .collect())
    }

    /// Changes the counters; they are written at the next [`Feed::save`] (or [`Feed::save_soon`]).
    pub fn count(&mut self, change: impl FnOnce(&mut BrokerCounters)) {
        change(&mut self.stats.change().counters);
    }

    /// Records one publish's fan-out.
    pub fn record_fanout(&mut self, publish_to_send_ms: Option<i64>, sockets: usize) {
        let stats = self.stats.change();
        if let Some(ms) = publish_to_send_ms {
            if stats.samples.len() == SAMPLES {
                stats.samples.pop_front();
            }
            stats.samples.push_back(ms.max(0));
        }
        stats.last_sockets = sockets;
    }

    pub fn counters(&self) -> &BrokerCounters {
        &self.stats.get().counters
    }

    pub fn fanout(&self) -> FanoutTimings {
        let stats = self.stats.get();
        let samples: Vec<i64> = stats.samples.iter().copied().collect();
        FanoutTimings::from_samples(&samples, stats.last_sockets)
    }

    /// Writes the counters if they changed (one row).
    pub fn save(&mut self, now_ms: i64) -> Result<()> {
        self.stats.save(now_ms)
    }

    /// Writes the counters unless they were written in the last few seconds: socket events use
    /// this, so that a burst of connects and closes costs one row (`crate::meta`); what a
    /// hibernation interrupts is a few seconds of counts, never a log entry.
    pub fn save_soon(&mut self, now_ms: i64) -> Result<()> {
        self.stats.save_soon(now_ms)
    }
}

/// Sequence numbers stay below 2^53 (see `wire::epoch_base`), so they are exact as JavaScript
/// numbers.
fn int(value: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}
