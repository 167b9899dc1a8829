//! Crash campaigns (docs/reliability.md): a generated replay with every hostile fixture mixed in,
//! served by the sidecar to a live listener under `wrangler dev`, and the system broken on
//! purpose at seeded random points: the whole stack killed with SIGKILL and started again on the
//! same state, or the sidecar killed and started again on the same port. Once the listener has
//! read everything, D1 is compared with the oracle (`domain::ingest` natively over the frames
//! the sidecar served): nothing lost, nothing twice, the counts exact.
//!
//! `cargo xtask chaos` runs a long campaign (`src/bin/chaos.rs`); the test suite a short one
//! (`crates/e2e/tests/chaos.rs`). Each prints its seed; a failing seed is run again with
//! `cargo xtask chaos --seed N` and kept as a regression test.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use domain::ingest::Batch;
use serde_json::Value;
use xtask::sidecar::Sidecar;
use xtask::toolchain::Tools;

use crate::listening;
use crate::tables::{self, Tables};

/// What to run.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Names the run's folder under `target/` and its stack.
    pub name: String,
    /// Generated events (30% broken), before the hostile fixtures are mixed in.
    pub events: usize,
    /// Crashes, each at a later point of the replay; every third kills the sidecar, the others
    /// the whole stack.
    pub rounds: usize,
    pub seed: u64,
}

/// One crash.
#[derive(Debug, Clone)]
pub struct Crash {
    /// `stack` or `sidecar`.
    pub what: &'static str,
    /// The listener's cursor when it was killed.
    pub at_us: i64,
    /// From the kill until the listener's cursor moved past where it was.
    pub recovered: Duration,
}

/// What a campaign found.
#[derive(Debug, Clone)]
pub struct Report {
    pub campaign: Campaign,
    /// Frames the sidecar served (generated, broken and hostile).
    pub frames: usize,
    pub crashes: Vec<Crash>,
    /// Oracle rows missing from D1 (statuses and accounts).
    pub lost: usize,
    /// D1 rows the oracle does not have (statuses and accounts).
    pub duplicated: usize,
    /// Rows present in both that differ, and counts that differ.
    pub differing: usize,
    pub took: Duration,
}

impl Report {
    /// Nothing lost, nothing twice, nothing different.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.differing == 0
    }

    /// The slowest recovery.
    pub fn worst_recovery(&self) -> Duration {
        self.crashes
            .iter()
            .map(|c| c.recovered)
            .max()
            .unwrap_or_default()
    }

    /// One row of docs/reliability.md's table.
    pub fn row(&self) -> String {
        let stack = self.crashes.iter().filter(|c| c.what == "stack").count();
        let mut recoveries: Vec<Duration> = self.crashes.iter().map(|c| c.recovered).collect();
        recoveries.sort();
        let median = recoveries
            .get(recoveries.len() / 2)
            .copied()
            .unwrap_or_default();
        format!(
            "| {} | {} | {} ({} stack, {} sidecar) | {} | {} | {} | {} | {:.1} s / {:.1} s | {:.0} s |",
            self.campaign.seed,
            self.campaign.events,
            self.crashes.len(),
            stack,
            self.crashes.len() - stack,
            self.frames,
            self.lost,
            self.duplicated,
            self.differing,
            median.as_secs_f64(),
            self.worst_recovery().as_secs_f64(),
            self.took.as_secs_f64(),
        )
    }
}

/// A small seeded generator (xorshift64*): the same seed, the same crash points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fraction in [0.05, 0.95).
    fn fraction(&mut self) -> f64 {
        0.05 + 0.9 * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs `campaign`; an `Err` is a campaign that could not run (a stack that did not start),
/// not a finding: findings are in the report.
pub async fn run(campaign: &Campaign) -> Result<Report> {
    let started = Instant::now();
    eprintln!(
        "chaos: seed {} ({} events, {} crashes)",
        campaign.seed, campaign.events, campaign.rounds
    );
    let tools = Tools::ensure()?;
    xtask::sidecar::build()?;
    let dir = listening::run_dir(&campaign.name)?;
    let file = tokio::task::block_in_place(|| {
        listening::hostile_replay(&dir, campaign.seed, campaign.events)
    })?;

    // The oracle: what a sidecar serves from the file, read by a plain client.
    let plain = listening::start_sidecar(&dir, &file, "plain", &[])?;
    let frames = tables::served_frames(&plain.url, Duration::from_secs(2)).await?;
    drop(plain);
    let plan = Batch::plan(frames.iter().map(String::as_str), crate::now_ms() * 1000);
    let first_us = frames
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok()?["time_us"].as_i64())
        .min()
        .context("no frame has a time")?;
    let last_us = plan.cursor_us.context("no valid event")?;
    let oracle = Tables::oracle(&frames).await?;

    // The sidecar on a port of its own, so that it can be started again where the listener
    // looks for it; the listener reads the v2 stream (it resumes by sequence number).
    let port = xtask::net::free_port()?;
    let serve = |name: &str| {
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--time",
            "keep",
            "--pace",
            "max",
            "--replay",
            &file.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        Sidecar::start(&args, &dir.join(format!("sidecar-{name}.log")))
    };
    let mut sidecar = serve("0")?;
    let url = listening::events_url(&sidecar.url);
    let config = listening::test_config(&campaign.name, "live", &[&url])?;
    let mut stack = listening::start(config.clone()).await?;

    let mut rng = Rng(campaign.seed.max(1));
    let mut points: Vec<f64> = (0..campaign.rounds).map(|_| rng.fraction()).collect();
    points.sort_by(f64::total_cmp);
    let mut crashes = Vec::new();
    for (round, point) in points.into_iter().enumerate() {
        let target = first_us + ((last_us - first_us) as f64 * point) as i64;
        let status = listening::wait_for_cursor(&stack, target, Duration::from_secs(300)).await?;
        let at_us = status["cursor_us"].as_i64().unwrap_or(target);
        if at_us >= last_us {
            // Read to the end already: nothing left to break.
            break;
        }
        let killed = Instant::now();
        let what = if round % 3 == 2 {
            sidecar.kill();
            sidecar = serve(&round.to_string())?;
            "sidecar"
        } else {
            tokio::task::block_in_place(|| stack.crash_and_restart(&tools, config.clone()))?;
            crate::backfilling::wake(&stack).await?;
            "stack"
        };
        listening::wait_for_cursor(&stack, at_us + 1, Duration::from_secs(300)).await?;
        let recovered = killed.elapsed();
        eprintln!(
            "chaos: crash {} ({what}) at {:.0}% of the replay; moving again after {:.1} s",
            round + 1,
            point * 100.0,
            recovered.as_secs_f64()
        );
        crashes.push(Crash {
            what,
            at_us,
            recovered,
        });
    }
    listening::wait_for_cursor(&stack, last_us, Duration::from_secs(600)).await?;
    let stored = Tables::of_stack(&stack.config().persist_dir).await?;
    let (lost, duplicated, differing) = compare(&stored, &oracle);
    if lost + duplicated + differing > 0 {
        eprintln!(
            "chaos: seed {} differs from the oracle:\n{}",
            campaign.seed,
            stored.diff(&oracle)
        );
    }
    ensure!(!frames.is_empty(), "nothing served");
    Ok(Report {
        campaign: campaign.clone(),
        frames: frames.len(),
        crashes,
        lost,
        duplicated,
        differing,
        took: started.elapsed(),
    })
}

/// Rows of the oracle missing from D1, rows of D1 not in the oracle, and rows (and counts) in
/// both that differ, keyed by the tables' own keys.
fn compare(stored: &Tables, oracle: &Tables) -> (usize, usize, usize) {
    let (mut lost, mut extra, mut differing) = (0, 0, 0);
    let tables: [(&[Value], &[Value], &str); 4] = [
        (&stored.status, &oracle.status, "uri"),
        (&stored.account, &oracle.account, "did"),
        (&stored.current_status, &oracle.current_status, "author_did"),
        (&stored.status_count, &oracle.status_count, "status"),
    ];
    for (stored, oracle, key) in tables {
        let by_key = |rows: &[Value]| -> std::collections::BTreeMap<String, Value> {
            rows.iter()
                .map(|r| (r[key].to_string(), r.clone()))
                .collect()
        };
        let (stored, oracle) = (by_key(stored), by_key(oracle));
        for (k, row) in &oracle {
            match stored.get(k) {
                None => lost += 1,
                Some(other) if other != row => differing += 1,
                Some(_) => {}
            }
        }
        extra += stored.keys().filter(|k| !oracle.contains_key(*k)).count();
    }
    (lost, extra, differing)
}
