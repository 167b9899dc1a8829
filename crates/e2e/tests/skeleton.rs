//! The walking skeleton, end to end: one `wrangler dev` running edge, listener and broker (built
//! wasm, local D1 with the migrations applied), driven over HTTP and WebSockets from outside.
//!
//! One stack serves every check in this file: starting workerd costs seconds, and each check says
//! which one failed.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::Page;
use serde_json::Value;
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skeleton_end_to_end() {
    let tools = Tools::locate().expect("toolchain");
    // The shipped configuration: no test hooks (and no network: a Jetstream nobody serves), with
    // the health token an operator sets as a secret, and the committed rate limits; only the
    // broker's socket caps are lowered, so that a check can reach them.
    let mut config = StackConfig::for_test("skeleton")
        .expect("test config")
        .with_committed_limits()
        .with_var(
            Worker::Broker,
            "MAX_SOCKETS_PER_NETWORK",
            &CAP_PER_NETWORK.to_string(),
        )
        .with_var(Worker::Broker, "MAX_SOCKETS", &CAP_TOTAL.to_string());
    config.vars.retain(|v| v.worker != Worker::Edge);
    let config = config.with_health_token().expect("a health token");
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config)).expect("stack starts");
    let checks: [(&str, Result<()>); 12] = [
        ("home page", home_page(&stack).await),
        ("assets served before the worker", assets(&stack).await),
        (
            "first request wakes the listener",
            first_request_wakes(&stack).await,
        ),
        ("websocket hand-off", websocket_hand_off(&stack).await),
        ("d1 write and read", d1_write_and_read(&stack, &tools).await),
        ("public health", public_health(&stack, &tools).await),
        ("listener alarm", listener_alarm(&stack).await),
        ("logs are JSON lines", logs_are_json(&stack).await),
        (
            "internal workers unreachable",
            internal_unreachable(&stack).await,
        ),
        ("sign-ins rate-limited", sign_ins_limited(&stack).await),
        ("writes rate-limited", writes_limited(&stack).await),
        ("sockets capped and limited", sockets_capped(&stack).await),
    ];
    e2e::assert_checks(checks, &stack);
}

/// The broker's socket caps in this file's stack (the committed ones are far larger).
const CAP_PER_NETWORK: usize = 3;
const CAP_TOTAL: usize = 5;

async fn home_page(stack: &Stack) -> Result<()> {
    let response = reqwest::get(format!("{}/", stack.base_url())).await?;
    ensure!(
        response.status() == 200,
        "GET / answered {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("text/html"),
        "content-type {content_type}"
    );
    let body = response.text().await?;
    ensure!(
        body.contains(">Statusphere</a></h1>") && body.contains("action=\"/login\""),
        "unexpected page:\n{body}"
    );
    // Rendered with the broker's head, so that its socket resumes from there.
    let seq = body
        .split_once("data-seq=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(seq, _)| seq)
        .unwrap_or_default();
    ensure!(
        seq.parse::<u64>().is_ok_and(|s| s > 0),
        "no head sequence number in the page: {seq:?}"
    );
    Ok(())
}

/// The page's stylesheet, script and icon come from the asset layer (`[assets]` in
/// wrangler/edge.toml): the right type, a year's cache, never sniffed, and no worker invocation
/// (edge logs a line for every request it serves, and none for these). A name no build made
/// reaches the worker and is a 404.
async fn assets(stack: &Stack) -> Result<()> {
    let page = reqwest::get(format!("{}/", stack.base_url()))
        .await?
        .text()
        .await?;
    let named: Vec<String> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("/assets/"))
        .map(str::to_owned)
        .collect();
    ensure!(named.len() == 3, "the page names {named:?}");
    for (path, kind) in named
        .iter()
        .zip(["image/svg+xml", "text/css", "javascript"])
    {
        let response = reqwest::get(format!("{}{path}", stack.base_url())).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        ensure!(response.status() == 200, "{path}: {}", response.status());
        let (content_type, cache, sniff) = (
            header("content-type"),
            header("cache-control"),
            header("x-content-type-options"),
        );
        ensure!(
            content_type.contains(kind),
            "{path}: content-type {content_type}"
        );
        ensure!(
            cache.contains("max-age=31536000") && cache.contains("immutable"),
            "{path}: cache-control {cache:?}"
        );
        ensure!(
            sniff == "nosniff",
            "{path}: x-content-type-options {sniff:?}"
        );
        ensure!(!response.bytes().await?.is_empty(), "{path}: empty");
    }
    let missing = reqwest::get(format!(
        "{}/assets/app.0000000000000000.css",
        stack.base_url()
    ))
    .await?;
    ensure!(
        missing.status() == 404,
        "an unknown asset: {}",
        missing.status()
    );
    // Edge's request lines are flushed as they happen; give the log a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Edge's own lines (JSON, with the path as a field), not wrangler's access log.
    let log = stack.log_tail(5_000);
    let reached = |path: &str| log.contains(&format!("\"path\":\"{path}\""));
    ensure!(
        reached("/assets/app.0000000000000000.css"),
        "the unknown asset reached the worker, which logs it:\n{log}"
    );
    for path in &named {
        ensure!(!reached(path), "{path} reached the worker:\n{log}");
    }
    Ok(())
}

async fn health(stack: &Stack) -> Result<Value> {
    e2e::health(stack).await
}

/// The public `/health` says only whether edge and D1 answer: it writes nothing and calls no
/// Durable Object (a stranger polling it spends next to nothing); the detailed report needs the
/// operator's token.
async fn public_health(stack: &Stack, tools: &Tools) -> Result<()> {
    let url = format!("{}/health", stack.base_url());
    let http = reqwest::Client::new();
    // The detailed report writes its probe row; the public calls after it leave it as it is.
    let detailed = health(stack).await?;
    ensure!(
        !detailed["listener"].is_null() && !detailed["broker"].is_null(),
        "{detailed}"
    );
    for _ in 0..5 {
        let public: Value = http.get(&url).send().await?.json().await?;
        ensure!(public == serde_json::json!({ "ok": true }), "{public}");
    }
    let stored = stored_probe_token(stack, tools).await?;
    ensure!(
        detailed["d1"]["token"] == stored.as_str(),
        "a public /health wrote D1: {stored} after {detailed}"
    );
    let wrong = http.get(&url).bearer_auth("not-the-token").send().await?;
    ensure!(
        wrong.status() == 401,
        "a wrong token answered {}",
        wrong.status()
    );
    Ok(())
}

/// The token of the health probe row, read with wrangler's own D1 client from the same local
/// database.
async fn stored_probe_token(stack: &Stack, tools: &Tools) -> Result<String> {
    let config = stack.config();
    let mut cmd = tools.wrangler();
    cmd.args(["d1", "execute", "statusphere", "--local", "--json", "-c"])
        .arg(Worker::Edge.wrangler_config())
        .arg("--persist-to")
        .arg(&config.persist_dir)
        .args(["--command", "SELECT token FROM health_probe WHERE id = 1"]);
    let out = tokio::task::block_in_place(|| xtask::process::output(&mut cmd))?;
    let rows: Value = serde_json::from_str(&out).with_context(|| format!("d1 execute: {out}"))?;
    Ok(rows[0]["results"][0]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// A page's socket reaches the broker through edge and the service binding; /health counts it, and
/// the count drops when the page closes (the broker reciprocates). The protocol itself is
/// tests/broker.rs's.
async fn websocket_hand_off(stack: &Stack) -> Result<()> {
    let mut page = Page::connect(stack.port(), None).await?;
    let connections = health(stack).await?["broker"]["connections"].clone();
    ensure!(connections == 1, "broker reports {connections} connections");
    page.send_text(domain::wire::PING).await?;
    ensure!(page.next_text().await? == domain::wire::PONG, "no pong");
    page.close().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let connections = health(stack).await?["broker"]["connections"].clone();
        if connections == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "still {connections} connections after close"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The detailed /health writes a fresh token into D1 and reads it back; the local database holds
/// the last one.
async fn d1_write_and_read(stack: &Stack, tools: &Tools) -> Result<()> {
    let first = health(stack).await?;
    let second = health(stack).await?;
    let token = |h: &Value| h["d1"]["token"].as_str().map(str::to_owned);
    let (Some(t1), Some(t2)) = (token(&first), token(&second)) else {
        bail!("no D1 probe in {first} / {second}");
    };
    ensure!(t1 != t2, "two probes wrote the same token");

    let stored = stored_probe_token(stack, tools).await?;
    ensure!(stored == t2, "D1 holds {stored:?}, /health wrote {t2:?}");
    Ok(())
}

/// A deploy does not wait for the cron: the first request an isolate serves wakes the listener.
async fn first_request_wakes(stack: &Stack) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listener = health(stack).await?["listener"].clone();
        if listener["alarms_fired"].as_u64().unwrap_or(0) >= 1 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "alarm never fired: {listener}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cron trigger wakes the listener, whose alarm then fires; a second wake is harmless. (Its
/// Jetstream is a dead port here: each alarm fails and sets the next one by backoff.)
/// Every line the workers log is one JSON object with its time, level, worker and message; a
/// request's lines carry its `request_id`, method and path and its last line the status and
/// `outcome`; an alarm's lines carry its `alarm_id`, and how its connection ended. (Run after
/// the checks above, whose requests and alarms it reads back.)
async fn logs_are_json(stack: &Stack) -> Result<()> {
    let answer = reqwest::get(format!("{}/health", stack.base_url())).await?;
    ensure!(
        answer.status() == 200,
        "GET /health answered {}",
        answer.status()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = stack.log_tail(20_000);
    let mut lines: Vec<(String, Value)> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((name, text)) = rest.split_once("] ") else {
            continue;
        };
        let Some(worker) = name.strip_prefix("statusphere-") else {
            continue;
        };
        let object: Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("a {worker} line is not JSON ({e}): {text}"))?;
        for field in ["timestamp", "level", "worker", "message"] {
            ensure!(object[field].is_string(), "no {field} in {text}");
        }
        ensure!(
            object["worker"] == worker,
            "{name} logged as {}",
            object["worker"]
        );
        lines.push((worker.to_owned(), object));
    }
    for worker in ["edge", "listener", "broker"] {
        ensure!(
            lines.iter().any(|(w, _)| w == worker),
            "no line from {worker} in:\n{log}"
        );
    }
    let health_line = lines
        .iter()
        .map(|(_, line)| line)
        .find(|line| line["message"] == "request" && line["path"] == "/health")
        .with_context(|| format!("no request line for /health:\n{log}"))?;
    ensure!(
        health_line["method"] == "GET"
            && health_line["status"] == 200
            && health_line["outcome"] == "ok"
            && health_line["request_id"]
                .as_str()
                .is_some_and(|id| id.len() >= 16),
        "{health_line}"
    );
    // Every line of that request carries its id, and no other line does.
    let id = &health_line["request_id"];
    ensure!(
        lines
            .iter()
            .filter(|(_, line)| line["request_id"] == *id)
            .all(|(w, line)| w == "edge" && line["path"] == "/health"),
        "request {id} shared with another request"
    );
    ensure!(
        lines
            .iter()
            .any(|(_, line)| line["message"] == "request" && line["outcome"] == "refused"),
        "no refused request (the unknown asset, the refused sign-ins) logged as refused"
    );
    let alarm_ends: Vec<&Value> = lines
        .iter()
        .filter(|(w, line)| {
            w == "listener"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("connection failed"))
        })
        .map(|(_, line)| line)
        .collect();
    ensure!(
        !alarm_ends.is_empty(),
        "no connection end in the listener's lines"
    );
    for line in alarm_ends {
        ensure!(
            line["alarm_id"].as_str().is_some_and(|id| id.len() == 16)
                && line["outcome"] == "error",
            "{line}"
        );
    }
    Ok(())
}

async fn listener_alarm(stack: &Stack) -> Result<()> {
    let cron = format!("{}/__scheduled?cron=*+*+*+*+*", stack.base_url());
    ensure!(
        reqwest::get(&cron).await?.status() == 200,
        "cron trigger failed"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listener = health(stack).await?["listener"].clone();
        let failed = listener["counters"]["failures"].as_u64().unwrap_or(0);
        if failed >= 1 && listener["last_end"] == "error" {
            ensure!(
                listener["next_alarm_ms"].is_i64(),
                "no next alarm: {listener}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no failed connection: {listener}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The second wake leaves the alarm where it was (unless an alarm fired in between: then
    // look again).
    for _ in 0..5 {
        let before = health(stack).await?["listener"].clone();
        ensure!(
            reqwest::get(&cron).await?.status() == 200,
            "second cron failed"
        );
        let after = health(stack).await?["listener"].clone();
        if before["alarms_fired"] != after["alarms_fired"]
            || before["last_end_ms"] != after["last_end_ms"]
        {
            continue;
        }
        ensure!(
            after["next_alarm_ms"] == before["next_alarm_ms"],
            "waking again moved the alarm: {before} -> {after}"
        );
        return Ok(());
    }
    bail!("alarms kept firing during the check")
}

/// The listener's and broker's routes are not served to the public, whatever the Host says; their
/// configs give them no public URL.
async fn internal_unreachable(stack: &Stack) -> Result<()> {
    let client = reqwest::Client::new();
    for path in [
        "/publish",
        "/stats",
        "/head",
        "/wake",
        "/status",
        "/__test/broker/stats",
        "/__test/broker/head",
    ] {
        for host in [
            None,
            Some("statusphere-broker"),
            Some("statusphere-listener"),
        ] {
            let mut request = client.get(format!("{}{path}", stack.base_url()));
            if let Some(host) = host {
                request = request.header("Host", host);
            }
            let status = request.send().await?.status();
            ensure!(
                status == 404,
                "GET {path} (Host {host:?}) answered {status}"
            );
        }
    }
    let status = client
        .post(format!("{}/publish", stack.base_url()))
        .body("{}")
        .send()
        .await?
        .status();
    ensure!(status == 405, "POST /publish answered {status}");
    // Without TEST_HOOKS (the shipped configuration) the test hook does not exist.
    let status = client
        .post(format!("{}/__test/broker/publish", stack.base_url()))
        .body(r#"{"messages":[]}"#)
        .send()
        .await?
        .status();
    ensure!(
        status == 404,
        "POST /__test/broker/publish answered {status}"
    );

    for worker in [Worker::Listener, Worker::Broker] {
        let path = worker.wrangler_config();
        let config: toml::Table = std::fs::read_to_string(&path)?.parse()?;
        ensure!(
            config.get("workers_dev") == Some(&toml::Value::Boolean(false)),
            "{worker}: workers_dev must be false"
        );
        for key in ["route", "routes"] {
            ensure!(!config.contains_key(key), "{worker}: has a public {key}");
        }
    }
    Ok(())
}

/// Sends requests from one network until one is refused with a 429, and returns that refusal.
/// The first `limit` must not be refused, and one of the next `limit + 1` must be: the binding's
/// windows are aligned to the clock, so `limit` requests can straddle two windows, but `2 * limit
/// + 1` sent within a minute cannot all fit.
async fn until_refused<F, Fut>(limit: u32, mut send: F) -> Result<reqwest::Response>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    for n in 1..=2 * limit + 1 {
        let response = send().await?;
        if response.status() == 429 {
            ensure!(
                n > limit,
                "refused at request {n}, within the limit of {limit}"
            );
            let retry_after = response.headers().get("Retry-After").cloned();
            ensure!(
                retry_after.as_ref().and_then(|v| v.to_str().ok()) == Some("60"),
                "Retry-After {retry_after:?}"
            );
            return Ok(response);
        }
    }
    bail!("{} requests in a minute, none refused", 2 * limit + 1)
}

/// `POST /login` is limited per network (an IPv4 address, an IPv6 /64), before it stores anything
/// or asks any server; other networks are not affected.
async fn sign_ins_limited(stack: &Stack) -> Result<()> {
    let limit = xtask::stack::committed_rate_limit("SIGN_IN_LIMIT")?;
    let http = reqwest::Client::new();
    let base = stack.base_url();
    let login = |ip: &'static str| {
        http.post(format!("{base}/login"))
            .header("Origin", &base)
            .header("CF-Connecting-IP", ip)
            .form(&[("handle", "nobody.test")])
            .send()
    };
    let refused = until_refused(limit, || login("203.0.113.1")).await?;
    let text = refused.text().await?;
    ensure!(
        text.contains("Too many sign-ins from your network"),
        "{text}"
    );
    let other = login("203.0.113.2").await?.status();
    ensure!(other != 429, "another network was refused too");

    until_refused(limit, || login("2001:db8:5:6::1")).await?;
    let same_64 = login("2001:db8:5:6:ffff::2").await?.status();
    ensure!(
        same_64 == 429,
        "an address in the same /64 answered {same_64}"
    );
    let next_64 = login("2001:db8:5:7::1").await?.status();
    ensure!(next_64 != 429, "the next /64 was refused too");
    Ok(())
}

/// `POST /status` is limited per network before the session is even looked up; the page's script
/// gets the refusal as JSON.
async fn writes_limited(stack: &Stack) -> Result<()> {
    let limit = xtask::stack::committed_rate_limit("WRITE_LIMIT")?;
    let http = reqwest::Client::new();
    let base = stack.base_url();
    let mut signed_out = 0;
    let refused = until_refused(limit, || {
        signed_out += 1;
        http.post(format!("{base}/status"))
            .header("Origin", &base)
            .header("Accept", "application/json")
            .header("CF-Connecting-IP", "203.0.113.3")
            .form(&[("status", "🙂")])
            .send()
    })
    .await?;
    let body: Value = refused.json().await?;
    let error = body["error"].as_str().unwrap_or_default();
    ensure!(error.contains("Too many status changes"), "{body}");
    ensure!(signed_out > limit, "refused after {signed_out}");
    Ok(())
}

/// The broker keeps at most [`CAP_PER_NETWORK`] sockets per network and [`CAP_TOTAL`] in all,
/// closing one more at once with 1013 and a reason; edge limits upgrades per network (each one
/// counts, kept or not) with a 429. A closed socket frees its place.
async fn sockets_capped(stack: &Stack) -> Result<()> {
    use e2e::Opened;
    let port = stack.port();
    let limit = xtask::stack::committed_rate_limit("SOCKET_LIMIT")?;
    ensure!(
        limit as usize > CAP_PER_NETWORK + 1,
        "the socket rate limit ({limit}) is below what this check needs"
    );
    let open = |ip: &'static str| Page::open(port, None, Some(ip));
    let page = |opened: Opened| match opened {
        Opened::Page(page) => Ok(*page),
        Opened::Refused { status, body, .. } => bail!("upgrade answered {status}: {body}"),
    };
    // One network: its first sockets are kept, the rest closed at once, then upgrades refused.
    let mut kept = Vec::new();
    for _ in 0..CAP_PER_NETWORK {
        kept.push(page(open("203.0.113.4").await?)?);
    }
    for page in &mut kept {
        page.silent_for(Duration::from_millis(200)).await?;
    }
    let mut attempts = CAP_PER_NETWORK as u32;
    let refusal = loop {
        attempts += 1;
        ensure!(
            attempts <= 2 * limit + 1,
            "no upgrade refused by the {attempts}th"
        );
        match open("203.0.113.4").await? {
            Opened::Page(mut extra) => {
                let (code, reason) = extra.closed().await?;
                ensure!(
                    (code, reason.as_str())
                        == (1013, "too many live connections from your network"),
                    "an extra socket was closed with {code} {reason:?}"
                );
            }
            Opened::Refused {
                status,
                retry_after,
                body,
            } => break (status, retry_after, body, attempts),
        }
    };
    let (status, retry_after, body, at) = refusal;
    ensure!(
        status == 429 && retry_after.as_deref() == Some("60"),
        "upgrade refused with {status}, Retry-After {retry_after:?}"
    );
    ensure!(
        at > limit,
        "upgrades refused at the {at}th, within the limit of {limit}"
    );
    // (tungstenite does not read a refused upgrade's body; browsers do not show it either.)
    ensure!(
        body.is_empty() || body.contains("Too many live connections opened"),
        "{body}"
    );

    // Other networks fill the broker; one more is refused as full, and gets in once a place frees.
    let mut others = Vec::new();
    for ip in ["203.0.113.5", "203.0.113.6"]
        .iter()
        .take(CAP_TOTAL - CAP_PER_NETWORK)
    {
        others.push(page(open(ip).await?)?);
    }
    let (code, reason) = page(open("203.0.113.7").await?)?.closed().await?;
    ensure!(
        (code, reason.as_str()) == (1013, "the live feed is full"),
        "a socket over the total cap was closed with {code} {reason:?}"
    );
    others.pop().context("no other socket")?.close().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admitted = loop {
        let mut candidate = page(open("203.0.113.7").await?)?;
        match tokio::time::timeout(Duration::from_millis(300), candidate.closed()).await {
            // Not closed: kept.
            Err(_) => break candidate,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(closed) => bail!("no place freed after a close: {closed:?}"),
        }
    };
    admitted.send_text(domain::wire::PING).await?;
    ensure!(admitted.next_text().await? == domain::wire::PONG, "no pong");

    // The pages named no shard: they are on shard 0.
    let counters = health(stack).await?["broker"]["shards"][0]["counters"].clone();
    let network_full = counters["refused_network_full"].as_u64().unwrap_or(0);
    ensure!(
        network_full >= u64::from(limit) - CAP_PER_NETWORK as u64,
        "refused_network_full {network_full} in {counters}"
    );
    ensure!(counters["refused_full"].as_u64() >= Some(1), "{counters}");
    for page in kept.into_iter().chain(others).chain([admitted]) {
        page.close().await?;
    }
    Ok(())
}
