//! `edge-bench`: CPU time per request of edge's pages and status writes on a local stack, printed
//! as a section of docs/benchmarks.md (`cargo xtask bench edge` runs it and writes the section).
//!
//! workerd does not report CPU time per request locally, so this reads the CPU time the kernel
//! counted for the stack's workerd processes (`/proc/<pid>/stat`) around a run of sequential
//! requests, subtracts what the same processes use idle over the same wall time, and divides by
//! the requests. That is an upper bound on the worker's own CPU time: it also holds workerd's
//! HTTP handling, the local D1 (SQLite in the same process; on Cloudflare it runs elsewhere and
//! is not billed as the worker's CPU) and the broker's share of a publish. The PDS (Node) is a
//! separate process and not counted.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::pds::Answer;
use e2e::web::{self, Browser};
use reqwest::StatusCode;
use xtask::stack::Stack;

/// Rounds per request kind; the table shows the median round.
const ROUNDS: usize = 5;
/// Requests per round: enough that the 10 ms clock tick is a few percent of a round's CPU.
const PER_ROUND_GET: usize = 200;
const PER_ROUND_POST: usize = 50;
/// How long the idle baseline is measured.
const IDLE: Duration = Duration::from_secs(10);

struct Round {
    cpu_per_request: Duration,
    wall_per_request: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // Every write goes to the PDS: the benchmark needs more than the default 10 a minute.
    let net = tokio::task::block_in_place(|| {
        web::start_with("bench-edge", |config| {
            config.with_var("edge", "WRITES_PER_MINUTE", "1000000")
        })
    })?;
    let stack = &net.stack;

    let mut alice = Browser::new(stack);
    let signed_in = alice
        .sign_in("alice.test", "alice", Answer::Consent)
        .await?;
    ensure!(
        signed_in.status() == StatusCode::SEE_OTHER,
        "sign-in answered {}",
        signed_in.status()
    );
    let page = alice.page().await?;
    let css = page
        .split("href=\"")
        .find_map(|rest| rest.split('"').next().filter(|p| p.starts_with("/assets/")))
        .context("no stylesheet on the page")?
        .to_owned();

    // Past wrangler's proxy, so the only workerd that works is the one running the workers.
    let direct = format!("http://127.0.0.1:{}", stack.direct_port()?);
    alice.base = direct.clone();
    let mut visitor = Browser::new(stack);
    visitor.base = direct;

    let idle_rate = idle_rate(stack).await;
    let asset = rounds(stack, idle_rate, &mut visitor, Request::Asset(&css)).await?;
    let home_out = rounds(stack, idle_rate, &mut visitor, Request::Home).await?;
    let home_in = rounds(stack, idle_rate, &mut alice, Request::Home).await?;
    let write = rounds(stack, idle_rate, &mut alice, Request::Write).await?;

    println!(
        "## Edge: CPU time per request\n\n\
         Command: `cargo xtask bench edge` ({}), {}. One `wrangler dev` stack with the local \
         PLC + PDS; alice signed in through OAuth (DPoP-bound tokens in D1). Requests are \
         sequential, past wrangler's proxy. CPU is what the kernel counted for the stack's \
         workerd processes around each run, minus their idle use over the same wall time \
         ({:.2} ms of CPU per second idle), divided by the requests: an upper bound on the \
         worker's CPU, since it also holds workerd's HTTP handling, the local D1 (SQLite in the \
         same process; Cloudflare runs D1 elsewhere) and, for writes, the broker's publish. The \
         PDS is another process. {ROUNDS} rounds of {PER_ROUND_GET} GETs or {PER_ROUND_POST} \
         writes; the table shows the median round.\n",
        xtask::bench::machine(),
        xtask::bench::today(),
        idle_rate * 1000.0,
    );
    println!("| request | CPU per request (median round) | min–max of rounds | wall per request | of the 2 ms target |");
    println!("|---|---:|---:|---:|---:|");
    for (name, result) in [
        ("GET /assets/app.*.css (floor: no D1)", &asset),
        ("GET / signed out", &home_out),
        ("GET / signed in", &home_in),
        ("POST /status (createRecord over DPoP, D1, publish)", &write),
    ] {
        let mut cpu: Vec<Duration> = result.iter().map(|r| r.cpu_per_request).collect();
        cpu.sort();
        let mut wall: Vec<Duration> = result.iter().map(|r| r.wall_per_request).collect();
        wall.sort();
        let median = cpu[cpu.len() / 2];
        println!(
            "| {name} | {:.2} ms | {:.2}–{:.2} ms | {:.2} ms | {:.0}% |",
            ms(median),
            ms(cpu[0]),
            ms(cpu[cpu.len() - 1]),
            ms(wall[wall.len() / 2]),
            ms(median) / 2.0 * 100.0,
        );
    }
    println!(
        "\nTarget (DESIGN.md): < 2 ms of CPU for GET / and POST /status. Cloudflare counts only \
         the isolate's CPU on its own hardware; these figures include the rest of workerd here."
    );
    Ok(())
}

/// workerd's CPU seconds per wall second with nothing to do (the listener's alarm loop, timers).
async fn idle_rate(stack: &Stack) -> f64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stack.workerd_cpu();
    let started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let used = stack.workerd_cpu().saturating_sub(before);
    used.as_secs_f64() / started.elapsed().as_secs_f64()
}

#[derive(Clone, Copy)]
enum Request<'a> {
    /// A hashed static asset: the floor (routing, no D1).
    Asset(&'a str),
    /// The home page, as whoever the browser is.
    Home,
    /// A status write by form POST.
    Write,
}

impl Request<'_> {
    fn per_round(self) -> usize {
        match self {
            Request::Write => PER_ROUND_POST,
            _ => PER_ROUND_GET,
        }
    }

    async fn send(self, browser: &mut Browser, i: usize) -> Result<()> {
        match self {
            Request::Asset(path) => expect(browser.get(path).await?, StatusCode::OK).await,
            Request::Home => {
                let signed_in = browser.cookie.is_some();
                let response = browser.get("/").await?;
                ensure!(response.status() == StatusCode::OK);
                let text = response.text().await?;
                ensure!(
                    text.contains("Signed in as") == signed_in,
                    "the session changed mid-run"
                );
                Ok(())
            }
            Request::Write => {
                let emoji = ["🦋", "🚀", "🧠", "🌈"][i % 4];
                let response = browser.post("/status", &[("status", emoji)], None).await?;
                expect(response, StatusCode::SEE_OTHER).await
            }
        }
    }
}

/// Warms the path up, then runs [`ROUNDS`] rounds of requests.
async fn rounds(
    stack: &Stack,
    idle_rate: f64,
    browser: &mut Browser,
    request: Request<'_>,
) -> Result<Vec<Round>> {
    for i in 0..5 {
        request.send(browser, i).await?;
    }
    let n = request.per_round();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let before = stack.workerd_cpu();
        let started = Instant::now();
        for i in 0..n {
            request.send(browser, i).await?;
        }
        let wall = started.elapsed();
        let used = stack.workerd_cpu().saturating_sub(before);
        let busy = used.as_secs_f64() - idle_rate * wall.as_secs_f64();
        rounds.push(Round {
            cpu_per_request: Duration::from_secs_f64(busy.max(0.0) / n as f64),
            wall_per_request: wall / n as u32,
        });
    }
    Ok(rounds)
}

async fn expect(response: reqwest::Response, want: StatusCode) -> Result<()> {
    let status = response.status();
    let body = response.text().await?;
    ensure!(status == want, "answered {status}: {body}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
