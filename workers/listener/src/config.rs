//! The listener's settings, from its wrangler vars (docs/listener.md lists them). An unusable value
//! is logged and the default used.

use worker::Env;

/// The public Jetstream instances, used when `JETSTREAM_URLS` is not set.
const PUBLIC_JETSTREAMS: &[&str] = &[
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
];

pub struct Config {
    /// Jetstream `/subscribe` endpoints, tried in order, failing over on error.
    pub urls: Vec<String>,
    pub poll_interval_ms: i64,
    /// How soon to try again (the next URL) after a failed poll.
    pub retry_ms: i64,
    /// Rewound from the stored cursor on every (re)connect.
    pub rewind_us: i64,
    /// Where the very first poll starts when there is no cursor: `None` = now.
    pub start_from_us: Option<i64>,
    /// Frames per D1 batch.
    pub batch_max_events: usize,
    /// No frame for this long means the stream has caught up.
    pub quiet_ms: u64,
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
        Config {
            urls,
            poll_interval_ms: number(env, "POLL_INTERVAL_SECONDS", 60, 1..=3_600) * 1_000,
            retry_ms: number(env, "RETRY_SECONDS", 5, 1..=3_600) * 1_000,
            rewind_us: number(env, "REWIND_SECONDS", 5, 0..=3_600) * 1_000_000,
            start_from_us: text(env, "START_FROM_US").and_then(|t| t.parse().ok()),
            batch_max_events: number(env, "BATCH_MAX_EVENTS", 500, 1..=5_000) as usize,
            quiet_ms: number(env, "QUIET_MS", 2_000, 100..=60_000) as u64,
        }
    }

    pub fn mode_name(&self) -> &'static str {
        "poll"
    }

    /// The URL for the `index`-th attempt (round robin over the list).
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }
}

fn text(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

fn number(env: &Env, name: &str, default: i64, range: std::ops::RangeInclusive<i64>) -> i64 {
    let Some(value) = text(env, name) else {
        return default;
    };
    match value.parse::<i64>() {
        Ok(n) if range.contains(&n) => n,
        _ => {
            tracing::error!(name, value = %domain::bounded(&value), ?range, default, "unusable var; using the default");
            default
        }
    }
}
