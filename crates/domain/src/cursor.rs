//! Where the listener is in Jetstream, and how it asks to come back there.
//!
//! Two positions are kept (docs/listener.md, "Cursors"):
//! - the **time** of the last recorded event (unix µs): every instance understands it, but each
//!   dates events by its own clock, so a connection starts a rewind before it, and replays;
//! - the **sequence number** of the last recorded event, with the URL of the instance that gave
//!   it: exact (the next connection starts at that event, inclusive, and nothing more is
//!   replayed), but meaningful on that instance only. Another instance would read it as one of
//!   its own numbers, silently: a jump to its live tail (a gap), or a replay from an unrelated
//!   point. So it is sent only to the URL it came from.
//!
//! Both travel in the same `cursor` query parameter: Jetstream reads a value below
//! [`SEQ_LIMIT`] as a sequence number and anything above as a time.

use serde::{Deserialize, Serialize};

/// Jetstream's split: a `cursor` below this is a sequence number, at or above it unix µs
/// (1e15 µs is September 2001, older than anything an instance keeps).
pub const SEQ_LIMIT: u64 = 1_000_000_000_000_000;

/// The sequence number of the last recorded event, on the instance that numbered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSeq {
    /// The URL the listener read it from, exactly as configured.
    pub url: String,
    pub seq: u64,
}

/// Which of Jetstream's two endpoints a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `/subscribe`: the v1 JSON (with `cursor` on a v2 instance).
    Legacy,
    /// `/xrpc/network.bsky.jetstream.subscribeEvents`: the v2 framing.
    Events,
}

impl Wire {
    /// By the URL's path: the v2 method's name, or anything else (`/subscribe`).
    pub fn of(url: &str) -> Wire {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        if path
            .trim_end_matches('/')
            .ends_with(&format!("/xrpc/{}", crate::jetstream::EVENTS_NSID))
        {
            Wire::Events
        } else {
            Wire::Legacy
        }
    }
}

/// Where a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At this sequence number, on the instance that gave it. `time_us` is the stored time
    /// cursor it corresponds to (where the stream is, for the batcher).
    Seq { seq: u64, time_us: i64 },
    /// At this time (already rewound).
    Time { time_us: i64 },
}

impl Resume {
    /// The start for a connection to `url`: the stored sequence number if it came from this
    /// URL; otherwise the stored time less `rewind_us`; with nothing stored, `start_from_us`
    /// (an operator's choice) or now less the rewind.
    pub fn choose(
        url: &str,
        seq: Option<&InstanceSeq>,
        cursor_us: Option<i64>,
        rewind_us: i64,
        start_from_us: Option<i64>,
        now_us: i64,
    ) -> Resume {
        match (seq, cursor_us) {
            (Some(stored), Some(time_us)) if stored.url == url => Resume::Seq {
                seq: stored.seq,
                time_us,
            },
            (_, Some(time_us)) => Resume::Time {
                time_us: time_us - rewind_us,
            },
            (_, None) => Resume::Time {
                time_us: start_from_us.unwrap_or(now_us - rewind_us),
            },
        }
    }

    /// Where the stream is taken to start, in event time.
    pub fn time_us(&self) -> i64 {
        match *self {
            Resume::Seq { time_us, .. } | Resume::Time { time_us } => time_us,
        }
    }

    /// The `cursor` parameter. A time is never sent below [`SEQ_LIMIT`], where it would be read
    /// as a sequence number (`START_FROM_US=0`, "from the oldest", becomes the oldest time).
    pub fn cursor_param(&self) -> u64 {
        match *self {
            Resume::Seq { seq, .. } => seq,
            Resume::Time { time_us } => (time_us.max(0) as u64).max(SEQ_LIMIT),
        }
    }

    /// The query parameters of a subscription to the app's collection on `wire`. The v2 stream
    /// is asked for commits, identity and account events only (its `#sync` markers mean
    /// nothing here).
    pub fn query(&self, wire: Wire) -> Vec<(&'static str, String)> {
        let cursor = ("cursor", self.cursor_param().to_string());
        match wire {
            Wire::Legacy => vec![
                ("wantedCollections", lexicon::STATUS_NSID.to_owned()),
                cursor,
            ],
            Wire::Events => vec![
                ("collections", lexicon::STATUS_NSID.to_owned()),
                ("kinds", "commit".to_owned()),
                ("kinds", "identity".to_owned()),
                ("kinds", "account".to_owned()),
                cursor,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "wss://jetstream.us-east.bsky.network/subscribe";
    const B: &str = "wss://jetstream.us-west.bsky.network/subscribe";
    const NOW: i64 = 1_796_083_200_000_000;

    fn stored(url: &str, seq: u64) -> InstanceSeq {
        InstanceSeq {
            url: url.to_owned(),
            seq,
        }
    }

    #[test]
    fn a_sequence_number_goes_back_only_to_its_own_instance() {
        let seq = stored(A, 42);
        let same = Resume::choose(A, Some(&seq), Some(NOW - 9), 5, None, NOW);
        assert_eq!(
            same,
            Resume::Seq {
                seq: 42,
                time_us: NOW - 9
            }
        );
        assert_eq!(same.cursor_param(), 42);
        let other = Resume::choose(B, Some(&seq), Some(NOW - 9), 5, None, NOW);
        assert_eq!(other, Resume::Time { time_us: NOW - 14 });
        assert_eq!(other.cursor_param(), (NOW - 14) as u64);
    }

    #[test]
    fn nothing_stored_starts_where_the_operator_said_or_now() {
        assert_eq!(
            Resume::choose(A, None, None, 5, None, NOW),
            Resume::Time { time_us: NOW - 5 }
        );
        let oldest = Resume::choose(A, None, None, 5, Some(0), NOW);
        assert_eq!(oldest.cursor_param(), SEQ_LIMIT, "a time, never a seq");
        // A sequence number without a time cursor cannot happen; if it did, time decides.
        assert_eq!(
            Resume::choose(A, Some(&stored(A, 3)), None, 5, None, NOW),
            Resume::Time { time_us: NOW - 5 }
        );
    }

    #[test]
    fn wires_by_path_and_their_queries() {
        assert_eq!(Wire::of(A), Wire::Legacy);
        let v2 = "wss://jetstream.us-east.bsky.network/xrpc/network.bsky.jetstream.subscribeEvents";
        assert_eq!(Wire::of(v2), Wire::Events);
        assert_eq!(Wire::of(&format!("{v2}?x=1")), Wire::Events);
        let resume = Resume::Time { time_us: NOW };
        assert_eq!(
            resume.query(Wire::Legacy),
            vec![
                ("wantedCollections", "xyz.statusphere.status".to_owned()),
                ("cursor", NOW.to_string())
            ]
        );
        let v2_query = resume.query(Wire::Events);
        assert_eq!(v2_query[0].0, "collections");
        assert_eq!(v2_query.iter().filter(|(k, _)| *k == "kinds").count(), 3);
    }
}
