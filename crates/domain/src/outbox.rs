//! Publishes the broker has not taken yet (docs/broker.md, "When the broker fails"): kept in the
//! listener's Durable Object storage, in order, and sent again with a doubling wait until the
//! broker takes them, so that a broker outage delays open pages but loses them nothing.
//!
//! What changed is put here in the same storage write as the listener's cursor (after D1
//! committed), then sent; a publish is removed only once the broker answered it. Each is sent
//! with an id of its own ([`Publish::id`]), the same on every try, and the broker sequences an
//! id once: a publish whose answer was lost and is sent again is not shown twice.
//!
//! The outbox is bounded ([`MAX_MESSAGES`]): past it, the oldest publishes are dropped and
//! counted (those pages catch up when they reload, as they would after a broker restart).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::wire::{Publish, ServerMessage, MAX_PUBLISH_MESSAGES};

/// The most messages the outbox keeps; past it the oldest publishes are dropped.
pub const MAX_MESSAGES: usize = 20_000;
/// The longest wait between two tries (or 16 times the first wait, if that is shorter).
pub const MAX_RETRY_MS: i64 = 60_000;

/// One publish waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub messages: Vec<ServerMessage>,
    /// Sent at least once: its content is fixed (the broker may have sequenced it).
    #[serde(default)]
    pub sent: bool,
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
    /// has room, else as a new one with the id `new_id` gives. Returns the messages dropped to
    /// keep the outbox within [`MAX_MESSAGES`].
    pub fn push(&mut self, messages: Vec<ServerMessage>, new_id: impl FnOnce() -> String) -> u64 {
        if messages.is_empty() {
            return 0;
        }
        match self.pending.back_mut() {
            Some(last)
                if !last.sent && last.messages.len() + messages.len() <= MAX_PUBLISH_MESSAGES =>
            {
                last.messages.extend(messages)
            }
            _ => self.pending.push_back(Pending {
                id: new_id(),
                messages,
                sent: false,
            }),
        }
        self.bound()
    }

    /// Queues a publish another worker already tried (edge's), as one publish of its own with its
    /// own id, never added to. Returns the messages dropped to stay within [`MAX_MESSAGES`].
    pub fn push_fixed(&mut self, id: String, messages: Vec<ServerMessage>) -> u64 {
        if messages.is_empty() {
            return 0;
        }
        self.pending.push_back(Pending {
            id,
            messages,
            sent: true,
        });
        self.bound()
    }

    /// Drops the oldest publishes past [`MAX_MESSAGES`] (never the newest); returns how many
    /// messages went.
    fn bound(&mut self) -> u64 {
        let mut dropped = 0;
        while self.messages() > MAX_MESSAGES && self.pending.len() > 1 {
            if let Some(oldest) = self.pending.pop_front() {
                dropped += oldest.messages.len() as u64;
            }
        }
        self.counters.dropped += dropped;
        dropped
    }

    /// Messages waiting.
    pub fn messages(&self) -> usize {
        self.pending.iter().map(|p| p.messages.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a try is due at `now_ms`.
    pub fn due(&self, now_ms: i64) -> bool {
        !self.pending.is_empty() && now_ms >= self.next_try_ms
    }

    /// The oldest publish, to send now (marked sent: it is not added to any more); `None` when
    /// nothing is due.
    pub fn next(&mut self, now_ms: i64, sent_at_ms: i64) -> Option<Publish> {
        if !self.due(now_ms) {
            return None;
        }
        let oldest = self.pending.front_mut()?;
        oldest.sent = true;
        Some(Publish {
            messages: oldest.messages.clone(),
            sent_at_ms: Some(sent_at_ms),
            id: Some(oldest.id.clone()),
        })
    }

    /// The broker took the publish `id`: it leaves the outbox, and the next is due at once.
    pub fn delivered(&mut self, id: &str) {
        let before = self.pending.len();
        self.pending.retain(|p| p.id != id);
        if self.pending.len() < before {
            self.counters.delivered += 1;
        }
        self.attempts = 0;
        self.next_try_ms = 0;
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
        assert_eq!((first.id.as_deref(), first.messages.len()), (Some("p1"), 5));
        outbox.push(confirmed(1), &mut id);
        assert_eq!(outbox.pending.len(), 2, "a sent publish is fixed");
        outbox.delivered("p1");
        let second = outbox.next(0, 0).unwrap();
        assert_eq!(second.id.as_deref(), Some("p2"));
        outbox.delivered("p2");
        assert!(outbox.is_empty() && outbox.next(0, 0).is_none());
        assert_eq!(outbox.counters.delivered, 2);
    }

    #[test]
    fn failures_wait_longer_each_time_and_a_delivery_resets_the_wait() {
        let mut outbox = Outbox::default();
        outbox.push(confirmed(1), ids());
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
        outbox.delivered(sent.id.as_deref().unwrap());
        assert_eq!((outbox.attempts, outbox.next_try_ms), (0, 0));
        assert_eq!(outbox.counters.failures, 13);
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_publishes_and_counts_them() {
        let mut outbox = Outbox::default();
        let mut id = ids();
        for _ in 0..(MAX_MESSAGES / MAX_PUBLISH_MESSAGES) {
            outbox.push(confirmed(MAX_PUBLISH_MESSAGES), &mut id);
        }
        assert_eq!(outbox.messages(), MAX_MESSAGES);
        assert_eq!(
            outbox.push(confirmed(10), &mut id),
            MAX_PUBLISH_MESSAGES as u64
        );
        assert_eq!(outbox.pending.front().unwrap().id, "p2");
        assert_eq!(outbox.counters.dropped, MAX_PUBLISH_MESSAGES as u64);
        assert_eq!(outbox.push(Vec::new(), &mut id), 0);
    }

    #[test]
    fn a_publish_handed_over_keeps_its_id_and_is_never_added_to() {
        let mut outbox = Outbox::default();
        outbox.push_fixed("edge-1".into(), confirmed(1));
        outbox.push(confirmed(1), ids());
        assert_eq!(outbox.pending.len(), 2);
        assert_eq!(outbox.next(0, 0).unwrap().id.as_deref(), Some("edge-1"));
    }
}
