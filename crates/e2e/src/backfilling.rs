//! Driving the listener's backfill (docs/backfill.md) from outside, for its end-to-end tests and
//! its benchmark: a network of many accounts written before the stack starts, the sidecar
//! listing them as a relay does, and the backfill's progress as edge's `/health` reports it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use xtask::devnet::Devnet;
use xtask::sidecar::Sidecar;
use xtask::stack::Stack;

use crate::pds::Writer;

/// The app's collection.
pub const STATUS: &str = lexicon::STATUS_NSID;

/// The emojis the generated statuses cycle through.
pub const EMOJIS: [&str; 6] = ["🦋", "🚀", "🌈", "🧠", "🎉", "☕"];

/// A status record of `emoji`, created now.
pub fn status(emoji: &str) -> Value {
    json!({ "status": emoji, "createdAt": domain::present::iso8601(crate::now_ms()) })
}

/// A password session for each of `devnet`'s accounts, eight signing in at a time.
pub async fn writers(devnet: &Devnet) -> Result<Vec<Writer>> {
    stream::iter(devnet.accounts.iter())
        .map(|account| Writer::sign_in(&devnet.pds_url, &account.handle))
        .buffered(8)
        .try_collect()
        .await
}

/// A sidecar bridging `devnet`'s firehose to a local Jetstream that also serves
/// `com.atproto.sync.listReposByCollection` as a relay does; its base URL is the relay's.
pub fn relay(devnet: &Devnet, dir: &Path) -> Result<(Sidecar, String)> {
    let port = xtask::net::free_port()?;
    let sidecar = Sidecar::start(
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--firehose".into(),
            devnet.pds_ws(),
        ],
        &dir.join("sidecar.log"),
    )?;
    Ok((sidecar, format!("http://127.0.0.1:{port}")))
}

/// Waits (up to a minute) until the relay at `relay` lists `expected` accounts for the app's
/// collection.
pub async fn wait_for_relay(relay: &str, expected: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!(
            "{relay}/xrpc/com.atproto.sync.listReposByCollection?collection={STATUS}&limit=2000"
        );
        let body: Value = reqwest::get(url).await?.json().await?;
        let listed = body["repos"].as_array().map_or(0, Vec::len);
        if listed >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay lists {listed} accounts, not {expected}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Fires edge's cron, which wakes the listener and the backfill.
pub async fn wake(stack: &Stack) -> Result<()> {
    let cron = format!("{}/__scheduled?cron=*+*+*+*+*", stack.base_url());
    ensure!(reqwest::get(&cron).await?.status() == 200, "cron refused");
    Ok(())
}

/// Waits (up to `within`) until the backfill's progress in `/health` satisfies `done`; returns
/// that progress.
pub async fn wait_for(
    stack: &Stack,
    what: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let progress = crate::health(stack).await?["backfill"]["progress"].clone();
        if done(&progress) {
            return Ok(progress);
        }
        if Instant::now() > deadline {
            bail!("waited for {what}: {progress}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks that no invocation made more than `budget` subrequests; returns the invocations and
/// the subrequests.
pub fn within_budget(progress: &Value, budget: u64) -> Result<(u64, u64)> {
    let subrequests = progress["subrequests"].as_u64().unwrap_or(0);
    let invocations = progress["invocations"].as_u64().unwrap_or(1);
    ensure!(
        subrequests <= invocations * budget,
        "an invocation made more than {budget} subrequests: {progress}"
    );
    Ok((invocations, subrequests))
}
