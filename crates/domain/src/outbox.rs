//! Publishes the broker has not taken yet (docs/broker.md, "When the broker fails"): kept in the
//! listener's Durable Object storage, in order, and sent again with a doubling wait until the
//! broker takes them, so that a broker outage delays open pages but loses them nothing.
//!
//! What changed is put here in the same storage write as the listener's cursor (after D1
//! committed), then sent; a publish is removed only once the broker answered it. Each is sent
//! with an id of its own ([`Publish::id`]), the same on every try, and the broker sequences an
//! id once: a publish whose answer was lost and is sent again is not shown twice.
//!
//! Each publish's messages are serialised once, when queued: the outbox stores them and the broker
//! is sent them as that same JSON text ([`Pending::messages`], [`Due::body`]). In a catch-up,
//! hundreds of messages a batch were otherwise written out three times (to weigh them, to store
//! them, to send them).
//!
//! The outbox is bounded by its stored size ([`MAX_BYTES`], under the platform's 2 MB a stored
//! value): past it, the oldest publishes are dropped and counted, and a `reload` goes first to
//! the pages, so that they learn they missed something and load what D1 holds. A publish the
//! broker refuses for good (a 4xx: too big, not a publish) is dropped and counted too, so that
//! it cannot hold back the rest for ever.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::wire::{ServerMessage, MAX_PUBLISH_MESSAGES};

/// The most the publishes waiting may weigh as stored (JSON), well under the 2 MB a Durable
/// Object's stored value may be.
pub const MAX_BYTES: usize = 1_500_000;
/// The longest wait between two tries (or 16 times the first wait, if that is shorter).
pub const MAX_RETRY_MS: i64 = 60_000;
/// Why pages are told to reload when the outbox dropped what they should have been sent.
pub const RELOAD_REASON: &str = "updates were missed while the broker was down";

/// One publish waiting for the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// Its messages, as the JSON array the broker is sent.
    pub messages: Box<RawValue>,
    /// How many messages it holds (0 when stored before this was kept: see [`Outbox::all_sent`]).
    #[serde(default)]
    pub count: usize,
    /// Of them, how many dropping it would lose (all but a `reload`).
    #[serde(default)]
    pub lost_if_dropped: usize,
    /// Sent at least once (or perhaps, before a restart): its content is fixed (the broker may
    /// have sequenced it under its id).
    #[serde(default)]
    pub sent: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Pending) -> bool {
        (&self.id, self.messages.get(), self.count, self.sent)
            == (&other.id, other.messages.get(), other.count, other.sent)
    }
}

impl Eq for Pending {}

impl Pending {
    fn new(id: String, messages: &[ServerMessage], sent: bool) -> Pending {
        Pending {
            id,
            messages: to_raw(messages),
            count: messages.len(),
            lost_if_dropped: lost_if_dropped(messages),
            sent,
        }
    }

    /// Its size as stored.
    fn bytes(&self) -> usize {
        self.messages.get().len()
    }

    /// Adds `more` to its messages: one JSON array of both.
    fn extend(&mut self, more: &[ServerMessage]) {
        let more = Pending::new(String::new(), more, self.sent);
        let (mine, theirs) = (self.messages.get(), more.messages.get());
        let joined = match (mine.len() > 2, theirs.len() > 2) {
            (true, true) => format!("{},{}", &mine[..mine.len() - 1], &theirs[1..]),
            (false, _) => theirs.to_owned(),
            (true, false) => mine.to_owned(),
        };
        self.messages = RawValue::from_string(joined).unwrap_or_else(|_| RawValue::NULL.to_owned());
        self.count += more.count;
        self.lost_if_dropped += more.lost_if_dropped;
    }
}

/// Of `messages`, those a drop loses: all but a `reload`.
fn lost_if_dropped(messages: &[ServerMessage]) -> usize {
    messages
        .iter()
        .filter(|m| !matches!(m, ServerMessage::Reload { .. }))
        .count()
}

/// `messages` as one JSON array.
fn to_raw(messages: &[ServerMessage]) -> Box<RawValue> {
    serde_json::to_string(messages)
        .ok()
        .and_then(|json| RawValue::from_string(json).ok())
        // Never: messages always serialise. `null` is refused by the broker, and counted.
        .unwrap_or_else(|| RawValue::NULL.to_owned())
}

/// The oldest publish, to send now: its id, its count of messages, and the body the broker is
/// sent (a `domain::wire::Publish` as JSON, with the queued messages as they were serialised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub id: String,
    pub count: usize,
    pub body: String,
}

/// What the outbox has done, for `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxCounters {
    /// Publishes the broker took from the outbox.
    #[serde(default)]
    pub delivered: u64,
    /// Tries the broker refused or did not answer.
    #[serde(default)]
    pub failures: u64,
    /// Messages dropped because the outbox was full.
    #[serde(default)]
    pub dropped: u64,
    /// Messages of publishes the broker refused for good (a 4xx).
    #[serde(default)]
    pub rejected: u64,
}

/// The publishes waiting, oldest first, and when the next try is due.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    pub pending: VecDeque<Pending>,
    /// Failed tries in a row.
    #[serde(default)]
    pub attempts: u32,
    /// No try before this time (unix ms).
    #[serde(default)]
    pub next_try_ms: i64,
    #[serde(default)]
    pub counters: OutboxCounters,
}

impl Outbox {
    /// Queues `messages` after what is waiting: into the last publish if it was never sent and
    /// has room, else as new ones (at most [`MAX_PUBLISH_MESSAGES`] each) with ids from `new_id`.
    /// Returns the messages dropped to stay within [`MAX_BYTES`].
    pub fn push(
        &mut self,
        mut messages: Vec<ServerMessage>,
        new_id: &mut impl FnMut() -> String,
    ) -> u64 {
        if let Some(last) = self.pending.back_mut().filter(|last| !last.sent) {
            let room = MAX_PUBLISH_MESSAGES.saturating_sub(last.count);
            let rest = messages.split_off(room.min(messages.len()));
            if !messages.is_empty() {
                last.extend(&messages);
            }
            messages = rest;
        }
        while !messages.is_empty() {
            let rest = messages.split_off(MAX_PUBLISH_MESSAGES.min(messages.len()));
            self.pending
                .push_back(Pending::new(new_id(), &messages, false));
            messages = rest;
        }
        self.bound(new_id)
    }

    /// Queues a publish another worker already tried (edge's), as one publish of its own with its
    /// own id, never added to. Returns the messages dropped to stay within [`MAX_BYTES`].
    pub fn push_fixed(
        &mut self,
        id: String,
        messages: Vec<ServerMessage>,
        new_id: &mut impl FnMut() -> String,
    ) -> u64 {
        if messages.is_empty() {
            return 0;
        }
        self.pending.push_back(Pending::new(id, &messages, true));
        self.bound(new_id)
    }

    /// Drops the oldest publishes past [`MAX_BYTES`] (never the newest) and, if any went, puts a
    /// `reload` first; returns how many messages went.
    fn bound(&mut self, new_id: &mut impl FnMut() -> String) -> u64 {
        let mut dropped = 0;
        while self.bytes() > MAX_BYTES && self.pending.len() > 1 {
            if let Some(oldest) = self.pending.pop_front() {
                dropped += oldest.lost_if_dropped as u64;
            }
        }
        if dropped > 0 {
            self.counters.dropped += dropped;
            let reload = ServerMessage::Reload {
                reason: RELOAD_REASON.to_owned(),
            };
            self.pending
                .push_front(Pending::new(new_id(), &[reload], false));
        }
        dropped
    }

    /// The publishes' size as stored.
    pub fn bytes(&self) -> usize {
        self.pending.iter().map(Pending::bytes).sum()
    }

    /// Messages waiting.
    pub fn messages(&self) -> usize {
        self.pending.iter().map(|p| p.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// After a restart: any publish may have been sent before it (the flag is stored after the
    /// try), so none is added to. A publish stored before its count was kept is counted now.
    pub fn all_sent(&mut self) {
        for pending in &mut self.pending {
            pending.sent = true;
            if pending.count == 0 {
                let messages: Vec<ServerMessage> =
                    serde_json::from_str(pending.messages.get()).unwrap_or_default();
                pending.count = messages.len();
                pending.lost_if_dropped = lost_if_dropped(&messages);
            }
        }
    }

    /// Whether a try is due at `now_ms`.
    pub fn due(&self, now_ms: i64) -> bool {
        !self.pending.is_empty() && now_ms >= self.next_try_ms
    }

    /// The oldest publish, to send now (marked sent: it is not added to any more); `None` when
    /// nothing is due.
    pub fn next(&mut self, now_ms: i64, sent_at_ms: i64) -> Option<Due> {
        if !self.due(now_ms) {
            return None;
        }
        let oldest = self.pending.front_mut()?;
        oldest.sent = true;
        // A `Publish` written out by hand around the stored messages: its fields are
        // `messages`, `sent_at_ms` and `id` (`crate::wire::Publish`).
        let id = serde_json::to_string(&oldest.id).ok()?;
        let body = format!(
            "{{\"messages\":{},\"sent_at_ms\":{sent_at_ms},\"id\":{id}}}",
            oldest.messages.get()
        );
        Some(Due {
            id: oldest.id.clone(),
            count: oldest.count,
            body,
        })
    }

    /// The broker took the publish `id`: it leaves the outbox, and the next is due at once.
    /// Returns the messages it held (none if another try already took it out).
    pub fn delivered(&mut self, id: &str) -> u64 {
        let taken = self.remove(id);
        if taken.is_some() {
            self.counters.delivered += 1;
        }
        self.attempts = 0;
        self.next_try_ms = 0;
        taken.unwrap_or(0)
    }

    /// The broker refused the publish `id` for good: it is dropped and counted, and the next is
    /// due at once.
    pub fn rejected(&mut self, id: &str) {
        if let Some(messages) = self.remove(id) {
            self.counters.rejected += messages;
        }
        self.attempts = 0;
        self.next_try_ms = 0;
    }

    fn remove(&mut self, id: &str) -> Option<u64> {
        let at = self.pending.iter().position(|p| p.id == id)?;
        self.pending.remove(at).map(|p| p.count as u64)
    }

    /// A try failed at `now_ms`: the next waits `retry_ms`, doubled for each failure in a row,
    /// at most 16 times `retry_ms` and at most [`MAX_RETRY_MS`].
    pub fn failed(&mut self, now_ms: i64, retry_ms: i64) {
        self.attempts = self.attempts.saturating_add(1);
        self.counters.failures += 1;
        let doublings = (self.attempts - 1).min(4);
        self.next_try_ms = now_ms + retry_ms.saturating_mul(1 << doublings).min(MAX_RETRY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Publish;

    fn confirmed(n: usize) -> Vec<ServerMessage> {
        (0..n)
            .map(|i| ServerMessage::StatusConfirmed {
                uri: format!("at://did:plc:a/xyz.statusphere.status/{i}"),
            })
            .collect()
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("p{n}")
        }
    }

    #[test]
    fn publishes_wait_in_order_and_leave_once_taken() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push(confirmed(2), &mut id);
        outbox.push(confirmed(3), &mut id);
        assert_eq!(outbox.pending.len(), 1, "an unsent publish takes more");
        let first = outbox.next(0, 0).unwrap();
        assert_eq!((first.id.as_str(), first.count), ("p1", 5));
        outbox.push(confirmed(1), &mut id);
        assert_eq!(outbox.pending.len(), 2, "a sent publish is fixed");
        assert_eq!(outbox.delivered("p1"), 5);
        assert_eq!(outbox.delivered("p1"), 0, "taken once, counted once");
        let second = outbox.next(0, 0).unwrap();
        assert_eq!(second.id, "p2");
        outbox.delivered("p2");
        assert!(outbox.is_empty() && outbox.next(0, 0).is_none());
        assert_eq!(outbox.counters.delivered, 2);
    }

    #[test]
    fn a_batch_larger_than_a_publish_is_split_and_a_restart_fixes_every_publish() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push(confirmed(10), &mut id);
        outbox.push(confirmed(MAX_PUBLISH_MESSAGES * 2), &mut id);
        let sizes: Vec<usize> = outbox.pending.iter().map(|p| p.count).collect();
        assert_eq!(sizes, [MAX_PUBLISH_MESSAGES, MAX_PUBLISH_MESSAGES, 10]);
        outbox.all_sent();
        outbox.push(confirmed(1), &mut id);
        assert_eq!(
            outbox.pending.len(),
            4,
            "nothing is added to what may have been sent"
        );
    }

    #[test]
    fn failures_wait_longer_each_time_and_a_delivery_resets_the_wait() {
        let mut outbox = Outbox::default();
        outbox.push(confirmed(1), &mut ids());
        let sent = outbox.next(1_000, 1_000).unwrap();
        outbox.failed(1_000, 1_000);
        assert!(!outbox.due(1_999) && outbox.due(2_000));
        let again = outbox.next(2_000, 2_000).unwrap();
        assert_eq!(again.id, sent.id, "the same id on every try");
        outbox.failed(2_000, 1_000);
        assert_eq!(outbox.next_try_ms, 4_000);
        for _ in 0..10 {
            outbox.failed(4_000, 1_000);
        }
        assert_eq!(
            outbox.next_try_ms,
            4_000 + 16_000,
            "16 times the first wait"
        );
        outbox.failed(4_000, 10_000);
        assert_eq!(outbox.next_try_ms, 4_000 + MAX_RETRY_MS);
        outbox.delivered(&sent.id);
        assert_eq!((outbox.attempts, outbox.next_try_ms), (0, 0));
        assert_eq!(outbox.counters.failures, 13);
    }

    #[test]
    fn a_publish_refused_for_good_is_dropped_and_counted() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push(confirmed(3), &mut id);
        let refused = outbox.next(0, 0).unwrap();
        outbox.push(confirmed(1), &mut id);
        outbox.rejected(&refused.id);
        assert_eq!(outbox.counters.rejected, 3);
        assert_eq!(outbox.next(0, 0).unwrap().id, "p2");
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_publishes_counts_them_and_has_pages_reload() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        let mut pushes = 0;
        while outbox.counters.dropped == 0 {
            outbox.push(confirmed(MAX_PUBLISH_MESSAGES), &mut id);
            pushes += 1;
            assert!(pushes < 1_000, "never full");
        }
        assert_eq!(outbox.counters.dropped, MAX_PUBLISH_MESSAGES as u64);
        assert!(outbox.bytes() <= MAX_BYTES + 100);
        let first = outbox.next(0, 0).unwrap();
        assert!(matches!(
            sent(&first).messages.as_slice(),
            [ServerMessage::Reload { .. }]
        ));
        assert_eq!(outbox.push(Vec::new(), &mut id), 0);
    }

    #[test]
    fn a_publish_handed_over_keeps_its_id_and_is_never_added_to() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push_fixed("edge-1".into(), confirmed(1), &mut id);
        outbox.push(confirmed(1), &mut id);
        assert_eq!(outbox.pending.len(), 2);
        assert_eq!(outbox.next(0, 0).unwrap().id, "edge-1");
    }

    /// What the broker would read of a publish the outbox sends.
    fn sent(due: &Due) -> Publish {
        serde_json::from_str(&due.body).unwrap()
    }

    #[test]
    fn the_broker_is_sent_the_messages_as_queued_in_order_under_the_publish_id() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push(confirmed(2), &mut id);
        outbox.push(Vec::new(), &mut id);
        outbox.push(confirmed(3), &mut id);
        let due = outbox.next(0, 1_234).unwrap();
        let publish = sent(&due);
        let mut expected = confirmed(2);
        expected.extend(confirmed(3));
        assert_eq!(publish.messages, expected);
        assert_eq!(publish.id.as_deref(), Some("p1"));
        assert_eq!(publish.sent_at_ms, Some(1_234));
        assert_eq!(due.count, 5);
        assert_eq!(
            outbox.bytes(),
            serde_json::to_string(&expected).unwrap().len()
        );
    }

    #[test]
    fn a_stored_outbox_reads_back_and_an_older_one_is_counted_on_load() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        outbox.push(confirmed(2), &mut id);
        outbox.push_fixed("edge-1".into(), confirmed(1), &mut id);
        let stored = serde_json::to_string(&outbox).unwrap();
        let read: Outbox = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, outbox);
        // As stored before the count was kept: the messages, their size, no count.
        let messages = serde_json::to_string(&confirmed(3)).unwrap();
        let older = format!(
            r#"{{"pending":[{{"id":"old-1","messages":{messages},"sent":true,"bytes":{}}}]}}"#,
            messages.len()
        );
        let mut read: Outbox = serde_json::from_str(&older).unwrap();
        read.all_sent();
        assert_eq!(read.messages(), 3);
        let due = read.next(0, 0).unwrap();
        assert_eq!(
            (due.id.as_str(), sent(&due).messages),
            ("old-1", confirmed(3))
        );
        assert_eq!(read.delivered("old-1"), 3);
    }
}
