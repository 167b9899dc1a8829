//! Driving the listener from outside, for its end-to-end tests and its benchmark: a sidecar
//! serving a replay file as Jetstream, a stack whose listener reads it, and the listener's state as
//! edge's `/health` reports it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use serde_json::Value;
use xtask::sidecar::Sidecar;
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// Writes the sidecar generator's stream (`events` events, `malformed` share broken) to `file`.
pub fn generate(file: &Path, seed: u64, events: usize, malformed: f64) -> Result<()> {
    xtask::sidecar::build()?;
    let status = std::process::Command::new(xtask::sidecar::binary())
        .args(["generate", "--seed", &seed.to_string(), "--accounts", "40"])
        .args(["--events", &events.to_string()])
        .args(["--malformed-share", &malformed.to_string()])
        .arg("--out")
        .arg(file)
        .status()?;
    ensure!(status.success(), "the generator failed");
    Ok(())
}

/// Writes to `dir` a replay of the generator's `events` (seeded by `seed`, 30% of them broken)
/// with every hostile fixture of `crates/domain/tests/data/jetstream/hostile` mixed in, one
/// every 80 frames; returns its path.
pub fn hostile_replay(dir: &Path, seed: u64, events: usize) -> Result<PathBuf> {
    let generated = dir.join("generated.jsonl");
    generate(&generated, seed, events, 0.3)?;
    let generated = std::fs::read_to_string(&generated)?;
    let hostile_dir = xtask::paths::root().join("crates/domain/tests/data/jetstream/hostile");
    let mut hostile: Vec<PathBuf> = std::fs::read_dir(&hostile_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    hostile.sort();
    let mut lines: Vec<String> = Vec::new();
    let mut hostile = hostile.iter();
    for (i, line) in generated.lines().enumerate() {
        if i % 80 == 40 {
            if let Some(path) = hostile.next() {
                let bytes = std::fs::read(path)?;
                let text = String::from_utf8_lossy(&bytes);
                lines.push(text.trim_end_matches('\n').to_owned());
            }
        }
        lines.push(line.to_owned());
    }
    ensure!(hostile.next().is_none(), "not every hostile fixture fit in");
    let file = dir.join("replay.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n")?;
    Ok(file)
}

/// A sidecar replaying `file` as fast as it is read, with its recorded times, and `faults`.
pub fn start_sidecar(dir: &Path, file: &Path, name: &str, faults: &[&str]) -> Result<Sidecar> {
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--time", "keep", "--pace", "max"]
        .map(str::to_owned)
        .to_vec();
    args.push("--replay".into());
    args.push(file.display().to_string());
    args.extend(faults.iter().map(|f| (*f).to_owned()));
    Sidecar::start(&args, &dir.join(format!("sidecar-{name}.log")))
}

/// A stack whose listener reads `urls` from the start of the replay (the shipped batch settings).
pub fn config(name: &str, mode: &str, urls: &[&str]) -> Result<StackConfig> {
    Ok(StackConfig::for_test(name)?
        .with_var(Worker::Listener, "MODE", mode)
        .with_var(Worker::Listener, "JETSTREAM_URLS", &urls.join(","))
        .with_var(Worker::Listener, "START_FROM_US", "0"))
}

/// [`config`] in small batches (several per connection, several connections per replay), fast
/// timeouts, and no rewind: each reconnect starts exactly at the stored cursor, so no slack can
/// hide a gap.
pub fn test_config(name: &str, mode: &str, urls: &[&str]) -> Result<StackConfig> {
    Ok(config(name, mode, urls)?
        .with_var(Worker::Listener, "BATCH_MAX_EVENTS", "200")
        .with_var(Worker::Listener, "MAX_BATCHES", "4")
        .with_var(Worker::Listener, "FLUSH_MS", "200")
        .with_var(Worker::Listener, "POLL_INTERVAL_SECONDS", "2")
        .with_var(Worker::Listener, "QUIET_MS", "1000")
        .with_var(Worker::Listener, "RETRY_SECONDS", "1")
        .with_var(Worker::Listener, "SILENT_SECONDS", "2")
        .with_var(Worker::Listener, "REWIND_SECONDS", "0"))
}

/// Starts the stack and fires edge's cron (which wakes the listener).
pub async fn start(config: StackConfig) -> Result<Stack> {
    let tools = Tools::locate()?;
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config))?;
    let cron = format!("{}/__scheduled?cron=*+*+*+*+*", stack.base_url());
    let answer = reqwest::get(&cron).await?.status();
    ensure!(answer == 200, "the cron trigger answered {answer}");
    Ok(stack)
}

/// The listener's state, from edge's detailed `/health`.
pub async fn status(stack: &Stack) -> Result<Value> {
    Ok(crate::health(stack).await?["listener"].clone())
}

/// Waits until the listener's stored cursor reaches `target_us`.
pub async fn wait_for_cursor(stack: &Stack, target_us: i64, within: Duration) -> Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let status = status(stack).await?;
        if status["cursor_us"].as_i64().is_some_and(|c| c >= target_us) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("the cursor did not reach {target_us}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A folder for one run's files under `target/`.
pub fn run_dir(name: &str) -> Result<PathBuf> {
    let dir = xtask::paths::scratch().join("runs").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The v2 stream's path.
fn events_path() -> String {
    format!("/xrpc/{}", domain::jetstream::EVENTS_NSID)
}

/// The v2 stream (`subscribeEvents`) of the sidecar whose `/subscribe` URL is `url`.
pub fn events_url(url: &str) -> String {
    url.replace("/subscribe", &events_path())
}

/// The `/stats` of the sidecar serving `url` (either stream).
pub async fn sidecar_stats(url: &str) -> Result<Value> {
    let base = url
        .replace("ws://", "http://")
        .replace(&events_path(), "/subscribe")
        .replace("/subscribe", "/stats");
    Ok(reqwest::get(base).await?.json().await?)
}
