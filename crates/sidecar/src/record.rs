//! `record`: connects to any Jetstream URL and writes what arrives to a replay file, one raw
//! frame per line, so real streams can be captured where a network exists and replayed here.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    /// A full `/subscribe` URL, query included (e.g. `...?wantedCollections=xyz.statusphere.status`).
    pub url: String,
    /// Standard output when `None`.
    pub out: Option<PathBuf>,
    /// Stop after this many frames.
    pub limit: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// What a recording saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub frames: u64,
    /// Binary (compressed) frames and frames that cannot be kept on one line.
    pub skipped: u64,
}

/// One line for the replay file: the frame itself, or its compact form when the server
/// pretty-printed it; `None` when it cannot be written as one line.
fn as_line(text: &str) -> Option<String> {
    if !text.contains(['\n', '\r']) {
        return Some(text.to_owned());
    }
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .map(|v| v.to_string())
}

pub async fn record(config: &RecordConfig) -> Result<Recorded> {
    let mut out: Box<dyn Write + Send> = match &config.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(config.url.as_str()).await?;
    info!(url = %config.url, "recording");
    let mut seen = Recorded::default();
    let deadline = config.duration.map(|d| tokio::time::Instant::now() + d);
    let write_error = |e| Error::io("writing the recording", e);
    loop {
        if config.limit.is_some_and(|limit| seen.frames >= limit) {
            break;
        }
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => ws.next().await,
        };
        match next {
            Some(Ok(Message::Text(text))) => match as_line(&text) {
                Some(line) => {
                    writeln!(out, "{line}").map_err(write_error)?;
                    seen.frames += 1;
                }
                None => {
                    seen.skipped += 1;
                    warn!("a multi-line frame that is not JSON was skipped");
                }
            },
            Some(Ok(Message::Binary(_))) => {
                seen.skipped += 1;
                warn!("binary (compressed?) frame skipped: record with compress=false");
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    out.flush().map_err(write_error)?;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    let _ = ws.flush().await;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::as_line;

    #[test]
    fn lines() {
        assert_eq!(as_line(r#"{"a":1}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(as_line("{\n  \"a\": 1\n}").as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(as_line("not\njson"), None);
    }
}
