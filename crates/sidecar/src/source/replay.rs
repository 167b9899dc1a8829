//! Replays a recorded stream (JSON lines) into the hub at its recorded pace, a multiple of it, or
//! all at once (then each subscriber reads as fast as it can).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::error::{Error, Result};
use crate::frame::Incoming;
use crate::window::Hub;

/// Publishing this many frames at once keeps locking and wake-ups cheap.
const CHUNK: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The gaps between recorded `time_us` values, kept.
    Recorded,
    /// The recorded gaps divided by this factor (`x10` = ten times faster).
    Speed(f64),
    /// Everything at once.
    Max,
}

impl Pace {
    pub fn parse(text: &str) -> Result<Pace> {
        match text {
            "recorded" => Ok(Pace::Recorded),
            "max" => Ok(Pace::Max),
            _ => text
                .strip_prefix('x')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(Pace::Speed)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--pace: expected recorded, max or xN (e.g. x10), got {text}"
                    ))
                }),
        }
    }

    fn factor(self) -> Option<f64> {
        match self {
            Pace::Recorded => Some(1.0),
            Pace::Speed(f) => Some(f),
            Pace::Max => None,
        }
    }
}

/// Reads a replay file: one frame per non-empty line, served verbatim (malformed lines included,
/// on purpose: they are how hostile input is injected).
pub fn read_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect())
}

/// Publishes `lines` into the hub at `pace`, then marks the source done.
pub async fn run(hub: Arc<Hub>, lines: Vec<String>, pace: Pace) {
    let total = lines.len();
    let frames: Vec<Incoming> = lines.into_iter().map(Incoming::parse).collect();
    match pace.factor() {
        None => {
            let mut frames = frames.into_iter().peekable();
            while frames.peek().is_some() {
                hub.publish_parsed(frames.by_ref().take(CHUNK).collect());
                tokio::task::yield_now().await;
            }
        }
        Some(factor) => {
            let start = Instant::now();
            let base = frames.iter().find_map(|f| f.recorded_time_us);
            let mut pending = Vec::new();
            for frame in frames {
                if let (Some(base), Some(t)) = (base, frame.recorded_time_us) {
                    let offset = Duration::from_micros(((t - base).max(0) as f64 / factor) as u64);
                    let due = start + offset;
                    if due > Instant::now() {
                        hub.publish_parsed(std::mem::take(&mut pending));
                        tokio::time::sleep_until(due).await;
                    }
                }
                pending.push(frame);
                if pending.len() >= CHUNK {
                    hub.publish_parsed(std::mem::take(&mut pending));
                }
            }
            hub.publish_parsed(pending);
        }
    }
    hub.counters.source_done.store(true, Ordering::Relaxed);
    info!(frames = total, "replay finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_parsing() {
        assert_eq!(Pace::parse("recorded").unwrap(), Pace::Recorded);
        assert_eq!(Pace::parse("max").unwrap(), Pace::Max);
        assert_eq!(Pace::parse("x2.5").unwrap(), Pace::Speed(2.5));
        for bad in ["x0", "x-1", "fast", "xNaN", "x"] {
            assert!(Pace::parse(bad).is_err(), "{bad}");
        }
    }
}
