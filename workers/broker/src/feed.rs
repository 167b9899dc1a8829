//! The broker's durable state, in its Durable Object's own SQLite: the recent log of sequenced
//! frames (what a reconnecting page can be sent), the ids of the publishes in it (a publish sent
//! again is sequenced once), the head sequence number (the newest logged frame's), and the counters that `/health` reports.
//!
//! Every method is synchronous: SQL storage calls do not yield, so nothing else runs in the object
//! between giving out a sequence number, logging the frame and sending it. Writes made in one event
//! are committed together, and the runtime's output gate holds the frames sent in that event until
//! they are durable, so a page never sees a sequence number that a crash could give out again.

use std::collections::VecDeque;

use domain::internal::{BrokerCounters, FanoutTimings};
use domain::wire::{self, LogBounds, ServerFrame, ServerMessage};
use serde::{Deserialize, Serialize};
use worker::{Result, SqlStorage, SqlStorageValue};
use workers_common::usage;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL);
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
struct TextValue {
    value: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<i64>,
}

#[derive(Deserialize)]
struct FrameRow {
    frame: String,
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
    stats: Persisted,
    /// Counters changed since they were last written.
    dirty: bool,
    saved_at_ms: i64,
}

impl Feed {
    /// Opens the log, creating it (with its sequence numbers starting at `now_ms`'s epoch base)
    /// if this object has none yet.
    pub fn open(sql: SqlStorage, capacity: u64, now_ms: i64) -> Result<Feed> {
        usage::sql(&sql, SCHEMA, None)?;
        // The head is the newest logged frame's number: the log is never emptied once written,
        // so only a new log's starting point (its epoch base) is kept apart, written once.
        let newest = usage::sql_rows::<SeqRow>(&sql, "SELECT MAX(seq) AS seq FROM log", None)?
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
        let stats =
            usage::sql_rows::<TextValue>(&sql, "SELECT value FROM meta WHERE key = 'stats'", None)?
                .first()
                .and_then(|row| serde_json::from_str(&row.value).ok())
                .unwrap_or_default();
        Ok(Feed {
            sql,
            capacity: capacity.max(1),
            head,
            stats,
            dirty: false,
            saved_at_ms: now_ms,
        })
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn bounds(&self) -> Result<LogBounds> {
        let oldest = usage::sql_rows::<SeqRow>(&self.sql, "SELECT MIN(seq) AS seq FROM log", None)?
            .first()
            .and_then(|row| row.seq)
            .and_then(|seq| u64::try_from(seq).ok());
        Ok(LogBounds {
            head: self.head,
            oldest,
        })
    }

    /// Gives each message the next sequence number, logs it, and drops what falls out of the
    /// log's capacity. Returns the frames, in order, ready to send.
    pub fn append(&mut self, messages: Vec<ServerMessage>) -> Result<Vec<(u64, String)>> {
        let frames: Vec<(u64, String)> = (self.head + 1..)
            .zip(messages)
            .map(|(seq, message)| (seq, ServerFrame::new(seq, message).to_json()))
            .collect();
        // Many rows a statement: each statement is a call across into the runtime. The head
        // moves with what was written, so a failure leaves it at the last row logged.
        for rows in frames.chunks(LOG_ROWS_PER_INSERT) {
            let marks = vec!["(?, ?)"; rows.len()].join(", ");
            let params: Vec<SqlStorageValue> = rows
                .iter()
                .flat_map(|(seq, frame)| [int(*seq), frame.as_str().into()])
                .collect();
            usage::sql(
                &self.sql,
                &format!("INSERT INTO log (seq, frame) VALUES {marks}"),
                params,
            )?;
            self.head = rows.last().map_or(self.head, |(seq, _)| *seq);
        }
        if !frames.is_empty() {
            let keep_from = self.head.saturating_sub(self.capacity) + 1;
            usage::sql(
                &self.sql,
                "DELETE FROM log WHERE seq < ?",
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
        Ok(usage::sql_rows::<FrameRow>(
            &self.sql,
            "SELECT frame FROM log WHERE seq > ? ORDER BY seq",
            vec![int(seq)],
        )?
        .into_iter()
        .map(|row| row.frame)
        .collect())
    }

    /// Changes the counters; they are written at the next [`Feed::save`] (or [`Feed::save_soon`]).
    pub fn count(&mut self, change: impl FnOnce(&mut BrokerCounters)) {
        change(&mut self.stats.counters);
        self.dirty = true;
    }

    /// Records one publish's fan-out.
    pub fn record_fanout(&mut self, publish_to_send_ms: Option<i64>, sockets: usize) {
        if let Some(ms) = publish_to_send_ms {
            if self.stats.samples.len() == SAMPLES {
                self.stats.samples.pop_front();
            }
            self.stats.samples.push_back(ms.max(0));
        }
        self.stats.last_sockets = sockets;
        self.dirty = true;
    }

    pub fn counters(&self) -> &BrokerCounters {
        &self.stats.counters
    }

    pub fn fanout(&self) -> FanoutTimings {
        let samples: Vec<i64> = self.stats.samples.iter().copied().collect();
        FanoutTimings::from_samples(&samples, self.stats.last_sockets)
    }

    /// Writes the counters if they changed (one row).
    pub fn save(&mut self, now_ms: i64) -> Result<()> {
        if self.dirty {
            let json = serde_json::to_string(&self.stats)?;
            usage::sql(
                &self.sql,
                "INSERT INTO meta (key, value) VALUES ('stats', ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec![json.into()],
            )?;
            self.dirty = false;
            self.saved_at_ms = now_ms;
        }
        Ok(())
    }

    /// Writes the counters unless they were written in the last few seconds. Socket events use
    /// this so that a burst of connects and closes costs one row write, not one each (the free plan
    /// allows 100,000 rows written a day); what a hibernation interrupts is at most a few seconds of
    /// counts, never a log entry.
    pub fn save_soon(&mut self, now_ms: i64) -> Result<()> {
        const EVERY_MS: i64 = 5_000;
        if now_ms - self.saved_at_ms >= EVERY_MS {
            self.save(now_ms)?;
        }
        Ok(())
    }
}

/// Rows of the log one `INSERT` writes: a statement binds at most 100 values, two a row.
const LOG_ROWS_PER_INSERT: usize = 50;

/// Sequence numbers stay below 2^53 (see `wire::epoch_base`), so they are exact as JavaScript
/// numbers.
fn int(value: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}
