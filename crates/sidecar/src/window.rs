//! The retained window of events and the hub every subscriber reads from.
//!
//! There is one ordered log (a ring of `Arc<Frame>`), bounded by event count and by age relative to
//! the newest event. Subscribers hold only a position in it, so a replay to ten clients costs no
//! more memory than a replay to one, and a client that falls so far behind that its position has
//! been evicted is disconnected instead of buffering without bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::frame::{Frame, Incoming, TimeMode};

/// Bounds of the retained window, and where this instance's numbering starts.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub max_events: usize,
    /// Events older than the newest by more than this are evicted (Jetstream keeps ~24-36 h).
    pub max_age_us: i64,
    /// The seq of the first event (Jetstream: 1). Two sidecars with different first seqs are
    /// two instances whose numbers mean different events, as public instances' do.
    pub first_seq: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_events: 500_000,
            max_age_us: 36 * 3600 * 1_000_000,
            first_seq: 1,
        }
    }
}

/// Jetstream's split of `cursor` values: below, a seq; at or above, unix µs (the listener's).
pub use domain::cursor::SEQ_LIMIT;

/// A subscription's `cursor`, as Jetstream reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Absent: the live tail.
    Live,
    /// Below [`SEQ_LIMIT`]: from this seq, inclusive.
    Seq(u64),
    /// Unix µs: from the first event at or after it.
    Time(i64),
}

impl Cursor {
    pub fn of(value: Option<u64>) -> Cursor {
        match value {
            None => Cursor::Live,
            Some(n) if n < SEQ_LIMIT => Cursor::Seq(n),
            Some(n) => Cursor::Time(n.min(i64::MAX as u64) as i64),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Cursor::Live => "live",
            Cursor::Seq(_) => "seq",
            Cursor::Time(_) => "time",
        }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub position: Position,
    /// The cursor asked for what the window no longer holds: it starts at the oldest it does
    /// (v2 says so in an `#info` frame for a time; refuses a seq, see [`TooOld`]).
    pub clamped: bool,
}

/// A seq cursor older than the window: v2 answers 400 `CursorTooOld`, v1 starts at the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest seq still held.
    pub floor: u64,
    pub start: Start,
}

/// A subscriber's place in the log: the absolute index of the next frame to read.
pub type Position = u64;

/// Reading a position the window no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub oldest: Position,
}

#[derive(Debug, Default)]
struct Window {
    frames: VecDeque<Arc<Frame>>,
    /// Absolute index of `frames[0]`.
    first: Position,
    last_time_us: i64,
}

/// Counters reported on `GET /stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub refused: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped_slow: AtomicU64,
    pub source_done: AtomicBool,
    /// Subscriptions by the cursor they asked with, and by wire.
    pub cursor_live: AtomicU64,
    pub cursor_seq: AtomicU64,
    pub cursor_time: AtomicU64,
    /// Subscriptions whose cursor was older than the window.
    pub clamped: AtomicU64,
    /// Subscriptions to the v2 stream (`subscribeEvents`).
    pub v2_connections: AtomicU64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct StatsReport {
    pub connections: u64,
    pub connections_total: u64,
    pub refused: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped_slow: u64,
    pub retained: u64,
    pub oldest_time_us: Option<i64>,
    pub newest_time_us: Option<i64>,
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    pub source_done: bool,
    pub cursor_live: u64,
    pub cursor_seq: u64,
    pub cursor_time: u64,
    pub clamped: u64,
    pub v2_connections: u64,
}

pub struct Hub {
    config: WindowConfig,
    time: TimeMode,
    window: RwLock<Window>,
    /// Serialises publishers so that times are assigned and appended in one order.
    publish: Mutex<()>,
    head: watch::Sender<Position>,
    pub counters: Counters,
    /// Every DID seen committing to each collection, as a relay indexes them for
    /// `com.atproto.sync.listReposByCollection` (kept whatever leaves the window).
    repos: Mutex<BTreeMap<Box<str>, BTreeSet<Box<str>>>>,
}

/// The most DIDs one `listReposByCollection` page holds (the relay's own cap).
pub const MAX_REPOS_PAGE: usize = 2_000;

/// How far ahead of this machine's clock a recorded `time_us` may place a frame.
const FUTURE_SLACK_US: i64 = 24 * 3_600 * 1_000_000;

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Hub {
    pub fn new(config: WindowConfig, time: TimeMode) -> Arc<Hub> {
        let (head, _) = watch::channel(0);
        Arc::new(Hub {
            config,
            time,
            window: RwLock::new(Window::default()),
            publish: Mutex::new(()),
            head,
            counters: Counters::default(),
            repos: Mutex::new(BTreeMap::new()),
        })
    }

    /// Appends raw frames in order; returns the `time_us` given to the last one.
    pub fn publish<I: IntoIterator<Item = String>>(&self, raws: I) -> Option<i64> {
        let incoming: Vec<Incoming> = raws.into_iter().map(Incoming::parse).collect();
        self.publish_parsed(incoming)
    }

    pub fn publish_parsed(&self, incoming: Vec<Incoming>) -> Option<i64> {
        if incoming.is_empty() {
            return None;
        }
        let _one_publisher = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = self.read_window().last_time_us;
        let now = now_us();
        let mut seq = {
            let window = self.read_window();
            self.config.first_seq + window.first + window.frames.len() as u64
        };
        let frames: Vec<Arc<Frame>> = incoming
            .into_iter()
            .map(|inc| {
                let wanted = match self.time {
                    TimeMode::Now => now,
                    // A recorded time from the future (a hostile frame) stays in the frame's
                    // text but does not place it: Jetstream indexes by its own clock, so one
                    // forged `time_us` cannot reorder the stream or empty the window.
                    TimeMode::Keep => inc
                        .recorded_time_us
                        .filter(|t| *t <= now.saturating_add(FUTURE_SLACK_US))
                        .unwrap_or(last),
                };
                last = wanted.max(last + 1);
                seq += 1;
                Arc::new(inc.place(last, seq - 1, self.time))
            })
            .collect();
        let count = frames.len() as u64;
        {
            let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
            for frame in &frames {
                if let (Some("commit"), Some(did), Some(collection)) =
                    (frame.kind.as_deref(), &frame.did, &frame.collection)
                {
                    // A relay indexes real repositories only: a frame's claims are not checked
                    // further here, but nothing that is not a DID is listed.
                    if did.starts_with("did:") && did.len() <= 256 && collection.len() <= 317 {
                        repos
                            .entry(collection.clone())
                            .or_default()
                            .insert(did.clone());
                    }
                }
            }
        }
        let head = {
            let mut window = self.window.write().unwrap_or_else(|p| p.into_inner());
            window.last_time_us = last;
            window.frames.extend(frames);
            let horizon = last - self.config.max_age_us;
            while window.frames.len() > self.config.max_events
                || window.frames.front().is_some_and(|f| f.time_us < horizon)
            {
                window.frames.pop_front();
                window.first += 1;
            }
            window.first + window.frames.len() as u64
        };
        self.counters.published.fetch_add(count, Ordering::Relaxed);
        self.head.send_replace(head);
        Some(last)
    }

    /// One page of the DIDs that committed to `collection`, in order, after `cursor` (a DID from
    /// the previous page), at most `limit`; and the cursor of the next page, if there may be one.
    pub fn repos_with(
        &self,
        collection: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
        let Some(dids) = repos.get(collection) else {
            return (Vec::new(), None);
        };
        let after = cursor.unwrap_or("");
        let page: Vec<String> = dids
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(limit)
            .map(|did| did.to_string())
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().cloned())
            .flatten();
        (page, next)
    }

    fn read_window(&self) -> std::sync::RwLockReadGuard<'_, Window> {
        self.window.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The position just past the newest event: where a live tail starts.
    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    /// Where a subscriber with this cursor starts, as Jetstream decides: a time, at the first
    /// event at or after it; a seq, at that event (inclusive; 0 is 1); the oldest retained event
    /// if the cursor is older than the window (clamped; for a seq, [`TooOld`], which the legacy
    /// wire clamps and v2 refuses); the head (live tail) with no cursor or a future one.
    pub fn start_for(&self, cursor: Cursor) -> Result<Start, TooOld> {
        let window = self.read_window();
        let head = window.first + window.frames.len() as u64;
        let live = Start {
            position: head,
            clamped: false,
        };
        let at = |position: Position| Start {
            position,
            clamped: false,
        };
        let evicted = window.first > 0;
        match cursor {
            Cursor::Live => Ok(live),
            Cursor::Time(t) if t > now_us().max(window.last_time_us) => Ok(live),
            Cursor::Time(t) => {
                let skipped = window.frames.partition_point(|f| f.time_us < t) as u64;
                let older = window.frames.front().is_some_and(|f| t < f.time_us);
                Ok(Start {
                    position: window.first + skipped,
                    clamped: evicted && older,
                })
            }
            Cursor::Seq(seq) => {
                let seq = seq.max(1);
                let first_seq = self.config.first_seq + window.first;
                if seq >= self.config.first_seq + head {
                    Ok(live)
                } else if seq < first_seq {
                    Err(TooOld {
                        floor: first_seq,
                        start: Start {
                            position: window.first,
                            clamped: true,
                        },
                    })
                } else {
                    Ok(at(seq - self.config.first_seq))
                }
            }
        }
    }

    /// Up to `max` frames from `from`, oldest first.
    pub fn read(&self, from: Position, max: usize) -> Result<Vec<Arc<Frame>>, Evicted> {
        let window = self.read_window();
        if from < window.first {
            return Err(Evicted {
                oldest: window.first,
            });
        }
        let start = (from - window.first) as usize;
        Ok(window
            .frames
            .iter()
            .skip(start)
            .take(max)
            .cloned()
            .collect())
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.head.subscribe()
    }

    pub fn stats(&self) -> StatsReport {
        let window = self.read_window();
        let c = &self.counters;
        StatsReport {
            connections: c.connections.load(Ordering::Relaxed),
            connections_total: c.connections_total.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_slow: c.dropped_slow.load(Ordering::Relaxed),
            retained: window.frames.len() as u64,
            oldest_time_us: window.frames.front().map(|f| f.time_us),
            newest_time_us: window.frames.back().map(|f| f.time_us),
            oldest_seq: window.frames.front().map(|f| f.seq),
            newest_seq: window.frames.back().map(|f| f.seq),
            source_done: c.source_done.load(Ordering::Relaxed),
            cursor_live: c.cursor_live.load(Ordering::Relaxed),
            cursor_seq: c.cursor_seq.load(Ordering::Relaxed),
            cursor_time: c.cursor_time.load(Ordering::Relaxed),
            clamped: c.clamped.load(Ordering::Relaxed),
            v2_connections: c.v2_connections.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t: i64) -> String {
        format!(r#"{{"did":"did:plc:a","time_us":{t},"kind":"identity","identity":{{}}}}"#)
    }

    #[test]
    fn cursor_positions_and_eviction() {
        let hub = Hub::new(
            WindowConfig {
                max_events: 3,
                max_age_us: i64::MAX / 2,
                first_seq: 101,
            },
            TimeMode::Keep,
        );
        hub.publish((1..=5).map(|t| event(t * 10)));
        // Window holds 30, 40, 50 at absolute positions 2, 3, 4, numbered 103, 104, 105.
        assert_eq!(hub.head(), 5);
        let position = |cursor| hub.start_for(cursor).map(|s| s.position);
        assert_eq!(position(Cursor::Time(35)), Ok(3));
        assert_eq!(position(Cursor::Time(40)), Ok(3));
        assert_eq!(
            hub.start_for(Cursor::Time(1)),
            Ok(Start {
                position: 2,
                clamped: true
            }),
            "older than the window: from the oldest"
        );
        assert_eq!(position(Cursor::Live), Ok(5));
        assert_eq!(
            position(Cursor::Time(now_us() + 60_000_000)),
            Ok(5),
            "future: live tail"
        );
        assert_eq!(position(Cursor::Seq(104)), Ok(3), "a seq: that event");
        assert_eq!(position(Cursor::Seq(106)), Ok(5), "a future seq: live tail");
        let too_old = hub.start_for(Cursor::Seq(102)).unwrap_err();
        assert_eq!((too_old.floor, too_old.start.position), (103, 2));
        assert_eq!(hub.start_for(Cursor::Seq(0)).unwrap_err().floor, 103);
        let seqs: Vec<u64> = hub.read(2, 10).unwrap().iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![103, 104, 105]);
        assert_eq!(Cursor::of(Some(SEQ_LIMIT - 1)), Cursor::Seq(SEQ_LIMIT - 1));
        assert_eq!(Cursor::of(Some(SEQ_LIMIT)), Cursor::Time(SEQ_LIMIT as i64));
        assert_eq!(hub.read(1, 10).unwrap_err(), Evicted { oldest: 2 });
        let times: Vec<i64> = hub.read(3, 10).unwrap().iter().map(|f| f.time_us).collect();
        assert_eq!(times, vec![40, 50]);
    }

    #[test]
    fn times_are_strictly_increasing_even_when_recordings_are_not() {
        let hub = Hub::new(WindowConfig::default(), TimeMode::Keep);
        hub.publish([event(100), event(90), "garbage".to_owned(), event(300)]);
        let times: Vec<i64> = hub.read(0, 10).unwrap().iter().map(|f| f.time_us).collect();
        assert_eq!(times, vec![100, 101, 102, 300]);
    }

    #[test]
    fn a_forged_future_time_is_served_but_placed_in_order() {
        let hub = Hub::new(WindowConfig::default(), TimeMode::Keep);
        let year_2100 = 4_102_444_800_000_000;
        hub.publish([event(100), event(year_2100), event(200)]);
        let frames = hub.read(0, 10).unwrap();
        let times: Vec<i64> = frames.iter().map(|f| f.time_us).collect();
        assert_eq!(times, vec![100, 101, 200]);
        assert!(
            frames[1].text.contains(&year_2100.to_string()),
            "served as written"
        );
    }

    #[test]
    fn now_mode_rewrites_time_us_near_the_clock() {
        let hub = Hub::new(WindowConfig::default(), TimeMode::Now);
        let before = now_us();
        hub.publish([event(1), event(1)]);
        let frames = hub.read(0, 10).unwrap();
        assert!(frames[0].time_us >= before && frames[1].time_us > frames[0].time_us);
        assert!(frames[1]
            .text
            .contains(&format!("\"time_us\":{}", frames[1].time_us)));
    }

    #[test]
    fn age_eviction_is_relative_to_the_newest_event() {
        let hub = Hub::new(
            WindowConfig {
                max_events: 100,
                max_age_us: 15,
                first_seq: 1,
            },
            TimeMode::Keep,
        );
        hub.publish([event(10), event(20), event(30)]);
        let times: Vec<i64> = hub.read(1, 10).unwrap().iter().map(|f| f.time_us).collect();
        assert_eq!(times, vec![20, 30]);
    }
}
