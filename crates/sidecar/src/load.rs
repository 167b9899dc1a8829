//! `bench-client`: N subscribers read M events each from a Jetstream as fast as they can; the
//! benchmark behind "the sidecar is never the bottleneck" (docs/benchmarks.md).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// A `/subscribe` URL with its query (e.g. `...?cursor=0`).
    pub url: String,
    pub clients: usize,
    pub events: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub events_per_client: u64,
    /// From the first connect to the last client's last event.
    pub seconds: f64,
    pub events_per_second_per_client: f64,
    pub events_per_second_total: f64,
}

async fn one_client(url: String, events: u64) -> Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut seen = 0u64;
    while seen < events {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => seen += 1,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => {
                return Err(Error::Usage(format!(
                    "the server closed after {seen} events"
                )))
            }
            Err(_) => return Err(Error::Usage(format!("no event for 30 s after {seen}"))),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

pub async fn run(config: &LoadConfig) -> Result<LoadReport> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.clients)
        .map(|_| tokio::spawn(one_client(config.url.clone(), config.events)))
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| Error::Usage(format!("client task: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_client = config.events as f64 / seconds;
    Ok(LoadReport {
        clients: config.clients,
        events_per_client: config.events,
        seconds,
        events_per_second_per_client: per_client,
        events_per_second_total: per_client * config.clients as f64,
    })
}
