//! One connection to Jetstream, in either mode: connect from the stored position
//! (`domain::cursor`: the instance's sequence number on the instance that gave it, otherwise the
//! time cursor rewound), on the wire the URL names (`/subscribe` or v2's `subscribeEvents`), read frames,
//! hand them to `domain::batch::Batcher`, record the batches it hands back, and stop when it says
//! so. Whatever was read before the connection ended is recorded all the same; nothing is
//! acknowledged to anyone before D1 has it.

use std::time::Duration;

use domain::batch::{Batcher, Event};
use domain::cursor::{Resume, Wire};
use domain::internal::{self, ListenerStatus};
use futures_util::future::{select, Either};
use worker::*;

use crate::config::Config;
use crate::inbox::{Ended, Inbox};
use crate::outbox::Mailbox;
use crate::record::Recorder;
use workers_common::now_ms;

pub use domain::batch::End;

/// Runs one connection to `url` from the stored cursor.
pub async fn run(
    config: &Config,
    env: &Env,
    storage: &Storage,
    status: &mut ListenerStatus,
    url: &str,
    mailbox: &Mailbox,
) -> Result<End> {
    let started_ms = now_ms();
    let woke_us = started_ms * 1_000;
    // The status was read from storage when the alarm fired: its cursor is the stored one.
    let resume = Resume::choose(
        url,
        status.seq.as_ref(),
        status.cursor_us,
        config.rewind_us,
        config.start_from_us,
        woke_us,
    );
    if status.cursor_us.is_none() {
        // The first connection pins where reading starts, so that every later one (this one
        // failing, a poll a minute on) goes on from there rather than from its own "now": the
        // backfill's seam (docs/backfill.md) counts on no event after this position being
        // skipped.
        status.cursor_us = Some(resume.time_us());
        workers_common::usage::put(storage, crate::record::KEY_STATUS, &*status).await?;
    }
    let subscribe = internal::with_query(url, &resume.query(Wire::of(url)));
    status.url = Some(url.to_owned());
    status.counters.connects += 1;
    tracing::info!(
        url,
        cursor = resume.cursor_param(),
        by = if matches!(resume, Resume::Seq { .. }) {
            "seq"
        } else {
            "time"
        },
        mode = config.mode_name(),
        "connecting to Jetstream"
    );
    let socket = workers_common::websocket_connect(&subscribe).await?;
    socket.accept()?;
    let mut inbox = Inbox::new(&socket);
    let recorder = Recorder::new(env, url, mailbox, config)?;

    let mut batcher = Batcher::new(config.rules, started_ms, resume.time_us(), status.pace);
    // The batcher hears "nothing came" `wait_ms` after the last thing it heard. One timer serves
    // many waits: it is set again only when it rang early (frames came meanwhile) or must ring
    // sooner; a timer set and cleared a frame was a good part of a catch-up's cost.
    let mut heard_ms = started_ms;
    let mut timer: Option<(i64, std::pin::Pin<Box<Delay>>)> = None;
    let outcome: Result<End> = 'read: loop {
        let due_ms = heard_ms + batcher.wait_ms();
        if timer.as_ref().is_some_and(|(at, _)| *at > due_ms) {
            timer = None;
        }
        let (_, delay) = timer.get_or_insert_with(|| {
            let wait = Duration::from_millis((due_ms - now_ms()).max(0) as u64);
            (due_ms, Box::pin(Delay::from(wait)))
        });
        let came = match select(std::pin::pin!(inbox.ready()), delay.as_mut()).await {
            Either::Left(_) => true,
            Either::Right(_) => {
                timer = None;
                if now_ms() < heard_ms + batcher.wait_ms() {
                    // Rang for a wait that frames have since moved on.
                    continue;
                }
                false
            }
        };
        let now = now_ms();
        heard_ms = now;
        if !came {
            recorder.flush_quiet(storage, status).await;
            if let Some(frames) = batcher.on(now, Event::Nothing) {
                let covered = recorder.record(storage, status, &frames).await?;
                if let Some(end) = batcher.recorded(covered.cursor_us, covered.events) {
                    break Ok(end);
                }
            }
            if let Some(end) = batcher.stop(now) {
                break Ok(end);
            }
            continue;
        }
        // Everything that came while the listener waited or recorded, in the order it came.
        let taken = inbox.take();
        for _ in 0..taken.binary {
            // Jetstream sends text unless asked to compress; a binary frame is not one we can
            // read.
            status.counters.seen += 1;
            *status.counters.dropped.entry("binary".into()).or_default() += 1;
            tracing::warn!("dropped a binary frame");
        }
        let events = std::iter::repeat_n(Event::Binary, taken.binary as usize)
            .chain(taken.frames().map(|frame| Event::Text(frame.to_owned())));
        for event in events {
            if let Some(frames) = batcher.on(now, event) {
                let covered = recorder.record(storage, status, &frames).await?;
                if let Some(end) = batcher.recorded(covered.cursor_us, covered.events) {
                    break 'read Ok(end);
                }
            }
        }
        match taken.end {
            Some(Ended::Closed { code, reason }) => {
                tracing::warn!(code, reason = %domain::bounded(&reason), "Jetstream closed the connection");
                break Ok(End::Closed(code));
            }
            Some(Ended::Failed(error)) => break Err(Error::RustError(error)),
            None => {}
        }
        if let Some(end) = batcher.stop(now) {
            break Ok(end);
        }
    };
    // What was read before the end (an error included) is recorded all the same.
    let recorded = recorder.record(storage, status, &batcher.take_rest()).await;
    if let Ok(covered) = &recorded {
        // Its end is already known; this only teaches the pace.
        let _ = batcher.recorded(covered.cursor_us, covered.events);
    }
    // Saved with the status at the end of the alarm (a crash loses only an estimate's update).
    status.pace = batcher.pace();
    drop(inbox);
    let _ = socket.close(Some(1000), Some("done"));
    recorded?;
    outcome
}
