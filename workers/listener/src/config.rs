//! The listener's settings, from its wrangler vars (docs/listener.md lists them). An unusable value
//! is logged and the default used.

use domain::batch::Rules;
use worker::Env;
use workers_common::vars::{number, text};

/// The public Jetstream instances, used when `JETSTREAM_URLS` is not set (docs/listener.md,
/// "Which Jetstream"): Bluesky's two v2 instances on their v2 stream first (sequence numbers,
/// so a reconnect resumes exactly; resync rows), then two of the legacy v1 instances, which
/// number nothing and are reached by time.
const PUBLIC_JETSTREAMS: &[&str] = &[
    "wss://jetstream.us-east.bsky.network/xrpc/network.bsky.jetstream.subscribeEvents",
    "wss://jetstream.us-west.bsky.network/xrpc/network.bsky.jetstream.subscribeEvents",
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
];

pub use domain::batch::Mode;

#[derive(Debug, Clone)]
pub struct Config {
    /// Jetstream endpoints (`/subscribe` or `/xrpc/network.bsky.jetstream.subscribeEvents`),
    /// tried in order, failing over on error.
    pub urls: Vec<String>,
    pub poll_interval_ms: i64,
    /// The first wait after a failure; it doubles after each full round of the URLs.
    pub retry_ms: i64,
    /// Rewound from the stored cursor on every (re)connect.
    pub rewind_us: i64,
    /// Where the very first connection starts when there is no cursor: `None` = now.
    pub start_from_us: Option<i64>,
    /// The mode, and what shapes one connection: batches, budget, length, silences.
    pub rules: Rules,
    /// `STATEMENT_ROWS = "one"`: D1 gets a statement a row (`domain::ingest::Batch::
    /// one_row_per_statement`), the baseline of `cargo xtask bench listener`; never shipped.
    pub one_row_per_statement: bool,
    /// `D1_CALLS = "each"`: every statement is a D1 call of its own, in order (the naive
    /// listener's shape, the bench's other baseline); never shipped.
    pub call_per_statement: bool,
}

impl Config {
    pub fn from_env(env: &Env) -> Config {
        let urls: Vec<String> = text(env, "JETSTREAM_URLS")
            .map(|list| {
                list.split([',', ' ', '\n'])
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .filter(|urls: &Vec<String>| !urls.is_empty())
            .unwrap_or_else(|| PUBLIC_JETSTREAMS.iter().map(|u| (*u).to_owned()).collect());
        let mode = match text(env, "MODE").as_deref() {
            None | Some("poll") => Mode::Poll,
            Some("live") => Mode::Live,
            Some(other) => {
                tracing::error!(value = %domain::bounded(other), "MODE is poll or live; using poll");
                Mode::Poll
            }
        };
        Config {
            urls,
            poll_interval_ms: number(env, "POLL_INTERVAL_SECONDS", 60, 1..=3_600) * 1_000,
            retry_ms: number(env, "RETRY_SECONDS", 5, 1..=3_600) * 1_000,
            rewind_us: number(env, "REWIND_SECONDS", 5, 0..=3_600) * 1_000_000,
            start_from_us: text(env, "START_FROM_US").and_then(|t| t.parse().ok()),
            rules: Rules {
                mode,
                batch_max_events: number(env, "BATCH_MAX_EVENTS", 1_000, 1..=5_000) as usize,
                flush_ms: number(env, "FLUSH_MS", 1_000, 10..=60_000),
                max_batches: number(env, "MAX_BATCHES", 20, 1..=1_000) as u32,
                session_ms: number(env, "SESSION_SECONDS", 300, 5..=840) * 1_000,
                quiet_ms: number(env, "QUIET_MS", 2_000, 100..=60_000),
                silent_ms: number(env, "SILENT_SECONDS", 20, 1..=3_600) * 1_000,
            },
            one_row_per_statement: text(env, "STATEMENT_ROWS").as_deref() == Some("one"),
            call_per_statement: text(env, "D1_CALLS").as_deref() == Some("each"),
        }
    }

    pub fn mode(&self) -> Mode {
        self.rules.mode
    }

    pub fn mode_name(&self) -> &'static str {
        self.rules.mode.name()
    }

    /// The URL for the `index`-th attempt (round robin over the list).
    pub fn url(&self, index: usize) -> &str {
        &self.urls[domain::batch::url_index(index, self.urls.len())]
    }

    /// How long to wait after `failures` failed connections in a row (`domain::batch::backoff_ms`).
    pub fn backoff_ms(&self, failures: u32) -> i64 {
        domain::batch::backoff_ms(self.retry_ms, self.urls.len(), failures)
    }

    /// The watchdog: if an invocation dies without setting the next alarm, this one fires.
    pub fn watchdog_ms(&self) -> i64 {
        self.rules.session_ms + 60_000
    }
}
