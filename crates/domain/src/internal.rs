//! The contracts between the workers: the routes each one serves over its service binding, and the
//! JSON they exchange. Only edge has a public route: the other workers serve these paths, and only
//! through bindings.

use serde::{Deserialize, Serialize};

/// Broker: the browser's WebSocket upgrade, forwarded by edge.
pub const BROKER_WS: &str = "/ws";
/// Broker: messages to push to every open page (POST, body is a [`crate::wire::Publish`]); the
/// relay answers a [`RelayAck`], a shard (from the relay) a [`PublishAck`].
pub const BROKER_PUBLISH: &str = "/publish";
/// Broker: connection counts, counters and fan-out timings for edge's `/health` (the relay's
/// [`BrokerStats`]; a shard's own [`ShardStats`]).
pub const BROKER_STATS: &str = "/stats";
/// Broker: a shard's last sequence number given out, `?shard=<k>` or a shard picked for a new
/// page; a page rendered after asking passes both on (`/ws?shard=<k>&since=<seq>`).
pub const BROKER_HEAD: &str = "/head";
/// Broker, on a stack with `TEST_HOOKS=on` only: refuse publishes (503) for the next
/// `?ms=<ms>`: the relay's (a broker outage for the outbox's tests), or with `&shard=<k>` that
/// shard's (a shard outage the relay rides out).
pub const BROKER_REFUSE: &str = "/refuse";
/// Broker: on a request to a shard object, which shard it is (the relay and the broker's entry
/// set it; the object reports it in its stats).
pub const SHARD_HEADER: &str = "x-statusphere-shard";
/// Broker: on a forwarded upgrade, the page's network (`crate::limit::network_of`), which its
/// connection cap counts by. Edge always sets it (replacing whatever the browser sent).
pub const NETWORK_HEADER: &str = "x-statusphere-network";

/// Listener: make sure the listener is running (idempotent).
pub const LISTENER_WAKE: &str = "/wake";
/// Listener: counters and state for edge's `/health`.
pub const LISTENER_STATUS: &str = "/status";
/// Listener: a publish the broker did not take from edge, to keep in the listener's outbox
/// (POST, body is a [`crate::wire::Publish`]).
pub const LISTENER_OUTBOX: &str = "/outbox";

/// Backfill: make sure the backfill is running if it has work (idempotent); answers its
/// [`BackfillStatus`].
pub const BACKFILL_WAKE: &str = "/wake";
/// Backfill: its [`BackfillStatus`] for edge's `/health`.
pub const BACKFILL_STATUS: &str = "/status";

/// A request URL's path and query, read from its text: a URL the runtime already checked needs no
/// full parser (and the broker, which needs nothing else of one, stays smaller without it).
/// `https://broker/ws?since=5#x` is `("/ws", Some("since=5"))`.
pub fn path_and_query(url: &str) -> (&str, Option<&str>) {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let target = after_scheme
        .find('/')
        .map_or("", |start| &after_scheme[start..]);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// The value of `key` in a query string (the first, undecoded).
pub fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| value)
}

/// `base` with `pairs` added to its query, each key and value percent-encoded.
pub fn with_query<K: AsRef<str>, V: AsRef<str>>(base: &str, pairs: &[(K, V)]) -> String {
    let mut out = base.to_owned();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(match (i, base.contains('?')) {
            (0, false) => '?',
            _ => '&',
        });
        out.push_str(&crate::page::url_component(key.as_ref()));
        out.push('=');
        out.push_str(&crate::page::url_component(value.as_ref()));
    }
    out
}

/// What one isolate has used of the platform's metered resources since it started (docs/budget.md).
/// Locally there is one isolate per worker, so these are the whole worker's; on Cloudflare, one
/// isolate's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Usage {
    /// When the isolate started counting (unix ms).
    pub since_ms: i64,
    /// Invocations of this worker: its fetch and cron handlers. A call through a service binding
    /// is counted by the worker it reaches; Cloudflare bills it as part of the request that made
    /// it, so only the public worker's count (edge's) is billed.
    pub worker_requests: u64,
    /// D1 queries (a batch counts each statement), and the rows D1 reported reading and writing.
    pub d1_queries: u64,
    pub d1_rows_read: u64,
    pub d1_rows_written: u64,
    /// Rows read and written in Durable Objects' own SQLite, through the SQL API.
    pub sql_rows_read: u64,
    pub sql_rows_written: u64,
    /// Values read and written through Durable Objects' key-value API (each a row of their
    /// SQLite).
    pub kv_reads: u64,
    pub kv_writes: u64,
    /// Events Durable Objects handled (a request, an alarm, a WebSocket message or close): what
    /// the platform bills as requests (WebSocket messages at 20 to 1).
    pub object_requests: u64,
    pub object_socket_events: u64,
    /// Wall time Durable Objects spent in requests and alarms (ms; a Worker's clock moves on
    /// across I/O only, which is when an object waits).
    pub object_busy_ms: u64,
}

/// A shard's answer to a publish.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishAck {
    /// The sequence numbers given to the messages, first and last (none for an empty publish).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Sockets the messages were handed to.
    pub delivered: usize,
}

/// The relay's answer to a publish: what each shard did with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayAck {
    /// Sockets the messages were handed to, on every shard that took them now.
    pub delivered: usize,
    pub shards: Vec<ShardAck>,
}

/// What one shard did with a publish the relay sent on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardAck {
    pub shard: u32,
    /// The shard's answer, when it took the publish now.
    #[serde(flatten)]
    pub ack: PublishAck,
    /// The shard did not take it now (it failed, or is still owed older publishes): the relay
    /// keeps it and sends it again, in order.
    pub kept: bool,
}

/// The broker's answer to [`BROKER_HEAD`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerHead {
    pub seq: u64,
    /// The shard whose head it is: the page names it when it connects.
    #[serde(default)]
    pub shard: u32,
}

/// The broker's state as `/health` reports it: the relay, and every shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerStats {
    /// Open WebSockets on every shard that answered.
    pub connections: usize,
    /// Sockets closing, on every shard that answered.
    pub closing: usize,
    pub relay: RelayStats,
    pub shards: Vec<ShardStats>,
    /// Shards that did not answer, with why.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// The relay's state: what it sent on, and what it keeps for shards that did not take it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayStats {
    /// How many shards it sends to (the broker's `SHARDS`).
    pub shards: u32,
    /// This instance of the relay (a new one after every eviction).
    pub instance_id: String,
    pub counters: RelayCounters,
    /// Per shard: publishes kept for it (not taken yet).
    pub kept: Vec<u64>,
    /// Per shard: failed tries in a row.
    pub failing: Vec<u32>,
    /// When the relay next tries the shards it keeps publishes for (unix ms).
    pub next_try_ms: Option<i64>,
    /// The broker's isolate (locally: the relay and every shard).
    #[serde(default)]
    pub usage: Usage,
}

/// The relay's running totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RelayCounters {
    /// Publishes received.
    pub publishes: u64,
    /// Publishes sent to a shard that took them.
    pub sent: u64,
    /// Tries that failed (the shard errored or did not answer): the publish is kept.
    pub failures: u64,
    /// Kept publishes that a later try delivered.
    pub retried: u64,
    /// Publishes kept for a shard still owed older ones (they wait their turn).
    pub queued: u64,
    /// Kept publishes dropped past the bound (`crate::shard::MAX_KEPT`); their shards were sent
    /// a reload.
    pub dropped: u64,
    /// Reloads sent to shards whose pages missed a dropped publish.
    pub reloads: u64,
    /// Publishes a shard refused for good (a 4xx): not sent again.
    pub rejected: u64,
    /// Publishes refused while a test hook made the relay fail (`BROKER_REFUSE`).
    pub refused_publishes: u64,
}

/// One shard's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: u32,
    /// Open WebSockets, hibernating or not.
    pub connections: usize,
    /// Sockets the broker closed whose pages have not answered yet (they get nothing more).
    pub closing: usize,
    /// The last sequence number given out.
    pub head_seq: u64,
    /// The oldest message a reconnecting page can still be sent.
    pub oldest_seq: Option<u64>,
    /// How many messages the recent log keeps.
    pub log_capacity: u64,
    /// This instance of the object (a new one after every hibernation).
    pub instance_id: String,
    pub instance_started_ms: i64,
    /// Totals since the object's storage was created (they survive hibernation).
    pub counters: BrokerCounters,
    /// From a publisher's send to the broker's fan-out, over the last publishes.
    pub fanout: FanoutTimings,
}

/// A shard's running totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BrokerCounters {
    pub sockets_accepted: u64,
    pub publishes: u64,
    pub messages: u64,
    /// Frames handed to sockets (messages × sockets, plus replays).
    pub frames_sent: u64,
    /// Sends that failed (the socket was gone); the socket is closed.
    pub send_failures: u64,
    /// Pages that reconnected with `since` and were sent what they missed.
    pub replays: u64,
    /// Pages that were told to reload (too far behind, or from before a reset).
    pub reloads: u64,
    /// Pings answered by the object itself (ones the runtime's auto-response did not match).
    pub pings_answered: u64,
    /// Sockets closed for sending text that is not a ping.
    pub closed_policy: u64,
    /// Sockets closed for sending a binary frame.
    pub closed_binary: u64,
    /// Sockets closed for sending an oversized message.
    pub closed_too_big: u64,
    /// Silent sockets closed by the idle sweep.
    pub pruned_idle: u64,
    /// Closes started by the page (or its connection ending) and answered.
    pub closed_by_page: u64,
    /// Socket errors the runtime reported.
    pub socket_errors: u64,
    /// Sockets refused (closed at once) because their network held its cap.
    pub refused_network_full: u64,
    /// Sockets refused because the broker held its total cap.
    pub refused_full: u64,
    /// Publishes sent again with an id already sequenced (their answer was lost): acknowledged
    /// with their first sequence numbers, not shown twice.
    pub repeats: u64,
    /// Publishes refused while a test hook made the broker fail (`BROKER_REFUSE`).
    pub refused_publishes: u64,
}

/// Publish-to-fan-out times (ms) over the last publishes that said when they were sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FanoutTimings {
    pub samples: usize,
    pub p50_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
    /// Sockets reached by the last publish.
    pub last_sockets: usize,
}

/// The listener's state as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ListenerStatus {
    /// `poll` or `live`.
    pub mode: String,
    /// The listener's isolate.
    pub usage: Usage,
    /// The Jetstream endpoint in use (or last tried).
    pub url: Option<String>,
    /// The stored cursor (unix µs): everything up to it is in D1.
    pub cursor_us: Option<i64>,
    /// The instance's sequence number of the same event, and that instance's URL, when it
    /// numbers its events (`domain::cursor`): where a reconnect to that URL resumes exactly.
    pub seq: Option<crate::cursor::InstanceSeq>,
    /// How far the stored cursor is behind now, in ms, computed when the status is asked for
    /// (on a quiet network it grows: nothing newer is known).
    pub lag_ms: Option<i64>,
    /// How busy the network has been (`domain::batch::Pace`): what tells a stuck instance from a
    /// quiet network.
    pub pace: crate::batch::Pace,
    /// Times the listener's alarm has fired since its storage was created.
    pub alarms_fired: u64,
    /// When the alarm last fired (unix milliseconds).
    pub last_alarm_ms: Option<i64>,
    /// When the alarm is due next (unix milliseconds), if it is set.
    pub next_alarm_ms: Option<i64>,
    /// The last error (connect, read, D1, broker), if any, bounded.
    pub last_error: Option<String>,
    /// How the last connection ended: `caught up`, `quiet`, `budget`, `session over`, `silent`,
    /// `closed <code>`, `error`.
    pub last_end: Option<String>,
    /// When the last connection ended (unix milliseconds).
    pub last_end_ms: Option<i64>,
    /// Failed connections in a row (sets the backoff; 0 once one works).
    pub consecutive_failures: u32,
    pub counters: ListenerCounters,
    /// What waits for the broker (`crate::outbox`), added when the status is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxStatus>,
}

/// The backfill's state as `/health` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackfillStatus {
    /// The backfill's isolate.
    pub usage: Usage,
    /// Where it is (docs/backfill.md).
    pub progress: crate::backfill::Progress,
}

/// The listener's outbox as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct OutboxStatus {
    /// Publishes waiting.
    pub publishes: usize,
    /// Messages in them.
    pub messages: usize,
    /// Failed tries in a row.
    pub attempts: u32,
    /// When the next try is due (unix ms), if anything waits.
    pub next_try_ms: Option<i64>,
    pub counters: crate::outbox::OutboxCounters,
}

impl OutboxStatus {
    pub fn of(outbox: &crate::outbox::Outbox) -> OutboxStatus {
        OutboxStatus {
            publishes: outbox.pending.len(),
            messages: outbox.messages(),
            attempts: outbox.attempts,
            next_try_ms: (!outbox.is_empty()).then_some(outbox.next_try_ms),
            counters: outbox.counters.clone(),
        }
    }
}

/// The listener's running totals (since its storage was created).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ListenerCounters {
    /// Frames read from Jetstream.
    pub seen: u64,
    /// Valid events that change what the app knows (replays included).
    pub changes: u64,
    /// Valid events that do not concern the app.
    pub ignored: u64,
    /// Frames dropped, by reason.
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// D1 batches committed.
    pub batches: u64,
    /// Messages published to the broker.
    pub published: u64,
    /// Publishes the broker refused or did not answer (kept in the outbox and tried again).
    pub publish_failures: u64,
    /// Connections opened to Jetstream.
    pub connects: u64,
    /// Connections that failed or ended in an error (each one moves to the next URL).
    pub failures: u64,
}

impl FanoutTimings {
    /// Summarises publish-to-fan-out samples (ms, in any order).
    pub fn from_samples(samples: &[i64], last_sockets: usize) -> FanoutTimings {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        FanoutTimings {
            samples: sorted.len(),
            p50_ms: nearest_rank(&sorted, 50),
            p99_ms: nearest_rank(&sorted, 99),
            max_ms: sorted.last().copied(),
            last_sockets,
        }
    }
}

/// The `p`th percentile of `sorted` (ascending) by nearest rank: the smallest sample with at least
/// `p`% of the samples at or below it (`p = 100` is the maximum). `None` when there are none.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    let n = sorted.len();
    (n > 0).then(|| sorted[(n * p).div_ceil(100).clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_added_encoded() {
        assert_eq!(
            with_query("wss://j/subscribe", &[("cursor", "5"), ("a b", "c&d=é")]),
            "wss://j/subscribe?cursor=5&a%20b=c%26d%3D%C3%A9"
        );
        assert_eq!(
            with_query("https://r/x?y=1", &[("z", "2")]),
            "https://r/x?y=1&z=2"
        );
        assert_eq!(with_query::<&str, &str>("https://r/x", &[]), "https://r/x");
    }

    #[test]
    fn path_and_query_from_the_url_text() {
        assert_eq!(
            path_and_query("https://broker/ws?since=5#x"),
            ("/ws", Some("since=5"))
        );
        assert_eq!(path_and_query("https://broker"), ("/", None));
        assert_eq!(
            path_and_query("http://127.0.0.1:8787/a/b?"),
            ("/a/b", Some(""))
        );
        assert_eq!(path_and_query("https://h/p?q=a/b"), ("/p", Some("q=a/b")));
        assert_eq!(query_value(Some("shard=1&ms=250"), "ms"), Some("250"));
        assert_eq!(query_value(Some("ms"), "ms"), None);
        assert_eq!(query_value(None, "ms"), None);
    }

    #[test]
    fn fanout_percentiles_are_nearest_rank() {
        let none = FanoutTimings::from_samples(&[], 3);
        assert_eq!((none.samples, none.p50_ms, none.max_ms), (0, None, None));
        let one = FanoutTimings::from_samples(&[7], 1);
        assert_eq!(
            (one.p50_ms, one.p99_ms, one.max_ms),
            (Some(7), Some(7), Some(7))
        );
        let hundred: Vec<i64> = (1..=100).rev().collect();
        let t = FanoutTimings::from_samples(&hundred, 10);
        assert_eq!(
            (t.p50_ms, t.p99_ms, t.max_ms),
            (Some(50), Some(99), Some(100))
        );
        assert_eq!(t.last_sockets, 10);
    }
}
