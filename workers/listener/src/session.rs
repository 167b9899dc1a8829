//! One connection to Jetstream, in either mode: connect from the cursor (rewound), read frames,
//! write them in batches (when the stream pauses, the batch is full, or it waited `flush_ms`), and
//! stop when the mode says so. Whatever was read before the connection ended is recorded all the
//! same; nothing is acknowledged to anyone before D1 has it.

use std::time::Duration;

use domain::internal::ListenerStatus;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::*;

use crate::config::{Config, Mode};
use crate::record::Recorder;

/// Frames are written once the stream pauses this long (or the batch is full, or `flush_ms`).
const LULL_MS: i64 = 25;

/// How a connection ended. The first four are normal; the others fail over to the next URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Poll: a batch reached the moment the listener woke.
    CaughtUp,
    /// Poll: no frame for `quiet_ms`.
    Quiet,
    /// `max_batches` written: go on in the next invocation, at once.
    Budget,
    /// `session_ms` elapsed: go on in the next invocation, at once.
    SessionOver,
    /// Live: no frame for `silent_ms`.
    Silent,
    /// The server closed the connection (or it dropped).
    Closed(u16),
}

impl End {
    pub fn is_failure(&self) -> bool {
        matches!(self, End::Silent | End::Closed(_))
    }

    /// Whether reading should go on at once (there is more to read, or the mode is live).
    pub fn continues(&self, mode: Mode) -> bool {
        matches!(self, End::Budget | End::SessionOver) || mode == Mode::Live
    }

    pub fn label(&self) -> String {
        match self {
            End::CaughtUp => "caught up".into(),
            End::Quiet => "quiet".into(),
            End::Budget => "budget".into(),
            End::SessionOver => "session over".into(),
            End::Silent => "silent".into(),
            End::Closed(code) => format!("closed {code}"),
        }
    }
}

/// Runs one connection to `url` from the stored cursor.
pub async fn run(
    config: &Config,
    env: &Env,
    storage: &Storage,
    status: &mut ListenerStatus,
    url: &str,
) -> Result<End> {
    let started_ms = now_ms();
    let woke_us = started_ms * 1_000;
    // The status was read from storage when the alarm fired: its cursor is the stored one.
    let start = status
        .cursor_us
        .map(|cursor| cursor - config.rewind_us)
        .or(config.start_from_us)
        .unwrap_or(woke_us - config.rewind_us);
    let subscribe = subscribe_url(url, start)?;
    status.url = Some(url.to_owned());
    status.counters.connects += 1;
    tracing::info!(
        url,
        cursor_us = start,
        mode = config.mode_name(),
        "connecting to Jetstream"
    );
    let socket = WebSocket::connect(subscribe).await?;
    socket.accept()?;
    let mut events = socket.events()?;
    let recorder = Recorder::new(env)?;

    let mut buffer: Vec<String> = Vec::new();
    let mut first_buffered_ms = 0;
    let mut last_frame_ms = started_ms;
    let mut batches = 0;
    // Ticks bound how long a stop condition can go unnoticed while no frame comes; with frames
    // waiting, a short lull is enough to write them (a lone status is not held for `flush_ms`).
    let tick = Duration::from_millis(config.flush_ms.min(250) as u64);
    let lull = Duration::from_millis(LULL_MS.min(config.flush_ms) as u64);
    let outcome: Result<End> = loop {
        let wait = if buffer.is_empty() { tick } else { lull };
        let event = match select(events.next(), Delay::from(wait)).await {
            Either::Left((event, _)) => Some(event),
            Either::Right(_) => None,
        };
        let lulled = event.is_none();
        let now = now_ms();
        match event {
            Some(Some(Ok(WebsocketEvent::Message(message)))) => {
                last_frame_ms = now;
                match message.text() {
                    Some(text) => {
                        if buffer.is_empty() {
                            first_buffered_ms = now;
                        }
                        buffer.push(text);
                    }
                    None => {
                        // Jetstream sends text unless asked to compress; a binary frame is not
                        // one we can read.
                        status.counters.seen += 1;
                        *status.counters.dropped.entry("binary".into()).or_default() += 1;
                        tracing::warn!("dropped a binary frame");
                    }
                }
            }
            Some(Some(Ok(WebsocketEvent::Close(close)))) => {
                tracing::warn!(code = close.code(), reason = %domain::bounded(&close.reason()), "Jetstream closed the connection");
                break Ok(End::Closed(close.code()));
            }
            Some(Some(Err(error))) => break Err(error),
            Some(None) => break Ok(End::Closed(1006)),
            None => {}
        }

        let due = !buffer.is_empty()
            && (lulled
                || buffer.len() >= config.batch_max_events
                || now - first_buffered_ms >= config.flush_ms);
        if due {
            let frames = std::mem::take(&mut buffer);
            let covered = recorder.record(storage, status, &frames).await?;
            batches += 1;
            if config.mode == Mode::Poll && covered.is_some_and(|c| c >= woke_us) {
                break Ok(End::CaughtUp);
            }
            if batches >= config.max_batches {
                break Ok(End::Budget);
            }
        }
        if now - started_ms >= config.session_ms {
            break Ok(End::SessionOver);
        }
        let silence = now - last_frame_ms;
        match config.mode {
            Mode::Poll if silence >= config.quiet_ms => break Ok(End::Quiet),
            Mode::Live if silence >= config.silent_ms => break Ok(End::Silent),
            _ => {}
        }
    };
    // What was read before the end (an error included) is recorded all the same.
    let recorded = recorder.record(storage, status, &buffer).await;
    let _ = socket.close(Some(1000), Some("done"));
    recorded?;
    outcome
}

/// `<url>?wantedCollections=xyz.statusphere.status&cursor=<cursor_us>`.
fn subscribe_url(base: &str, cursor_us: i64) -> Result<Url> {
    let mut url = Url::parse(base).map_err(|e| Error::RustError(format!("{base}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("wantedCollections", lexicon::STATUS_NSID)
        .append_pair("cursor", &cursor_us.max(0).to_string());
    Ok(url)
}

pub fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}
