//! The walking skeleton, end to end: one `wrangler dev` running edge, listener and broker (built
//! wasm, local D1 with the migrations applied), driven over HTTP and WebSockets from outside.
//!
//! One stack serves every check in this file: starting workerd costs seconds, and each check says
//! which one failed.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skeleton_end_to_end() {
    let tools = Tools::locate().expect("toolchain");
    let config = StackConfig::for_test("skeleton").expect("test config");
    let stack = tokio::task::block_in_place(|| Stack::start(&tools, config)).expect("stack starts");
    let checks: [(&str, Result<()>); 6] = [
        ("home page", home_page(&stack).await),
        ("websocket broadcast", websocket_broadcast(&stack).await),
        (
            "cross-origin websocket",
            cross_origin_websocket(&stack).await,
        ),
        ("d1 write and read", d1_write_and_read(&stack, &tools).await),
        ("listener alarm", listener_alarm(&stack).await),
        (
            "internal workers unreachable",
            internal_unreachable(&stack).await,
        ),
    ];
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{}\n--- wrangler output (tail) ---\n{}",
        failures.join("\n"),
        stack.log_tail(60)
    );
}

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
        body.contains("<h1>Statusphere</h1>"),
        "unexpected page:\n{body}"
    );
    Ok(())
}

async fn connect(stack: &Stack) -> Result<Socket> {
    let url = format!("ws://127.0.0.1:{}/ws", stack.port());
    let (socket, response) = tokio_tungstenite::connect_async(url).await?;
    ensure!(
        response.status() == 101,
        "upgrade answered {}",
        response.status()
    );
    Ok(socket)
}

async fn next_text(socket: &mut Socket) -> Result<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("no message within 10 s")?
            .context("socket ended")??;
        match message {
            Message::Text(text) => return Ok(text.to_string()),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("unexpected frame {other:?}"),
        }
    }
}

async fn health(stack: &Stack) -> Result<Value> {
    let response = reqwest::get(format!("{}/health", stack.base_url())).await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 200, "/health answered {status}: {body}");
    Ok(body)
}

/// Two pages connect through edge's /ws; what one says reaches both, through the service binding
/// and the broker's Durable Object.
async fn websocket_broadcast(stack: &Stack) -> Result<()> {
    let mut a = connect(stack).await?;
    let mut b = connect(stack).await?;
    let connections = health(stack).await?["broker"]["connections"].clone();
    ensure!(
        connections == 2,
        "broker reports {connections} connections, expected 2"
    );

    a.send(Message::text("hello from a")).await?;
    ensure!(
        next_text(&mut a).await? == "hello from a",
        "a did not get its broadcast"
    );
    ensure!(
        next_text(&mut b).await? == "hello from a",
        "b did not get a's broadcast"
    );
    b.send(Message::text("and from b")).await?;
    ensure!(
        next_text(&mut a).await? == "and from b",
        "a did not get b's broadcast"
    );
    ensure!(
        next_text(&mut b).await? == "and from b",
        "b did not get its broadcast"
    );

    a.close(None).await?;
    b.close(None).await?;
    // The broker reciprocates the close; the count drops back.
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

/// A page from another origin cannot open the socket.
async fn cross_origin_websocket(stack: &Stack) -> Result<()> {
    let mut request = format!("ws://127.0.0.1:{}/ws", stack.port()).into_client_request()?;
    request
        .headers_mut()
        .insert("Origin", "http://evil.example".parse()?);
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            ensure!(response.status() == 403, "answered {}", response.status());
            Ok(())
        }
        Err(other) => bail!("unexpected error {other}"),
        Ok(_) => bail!("a cross-origin upgrade was accepted"),
    }
}

/// /health writes a fresh token into D1 and reads it back; the local database holds the last one.
async fn d1_write_and_read(stack: &Stack, tools: &Tools) -> Result<()> {
    let first = health(stack).await?;
    let second = health(stack).await?;
    let token = |h: &Value| h["d1"]["token"].as_str().map(str::to_owned);
    let (Some(t1), Some(t2)) = (token(&first), token(&second)) else {
        bail!("no D1 probe in {first} / {second}");
    };
    ensure!(t1 != t2, "two probes wrote the same token");

    // Read the row with wrangler's own D1 client, from the same local database.
    let config = stack.config();
    let mut cmd = tools.wrangler();
    cmd.args(["d1", "execute", "statusphere", "--local", "--json", "-c"])
        .arg(xtask::paths::wrangler_config("edge"))
        .arg("--persist-to")
        .arg(&config.persist_dir)
        .args(["--command", "SELECT token FROM health_probe WHERE id = 1"]);
    let out = tokio::task::block_in_place(|| xtask::process::output(&mut cmd))?;
    let rows: Value = serde_json::from_str(&out).with_context(|| format!("d1 execute: {out}"))?;
    let stored = rows[0]["results"][0]["token"].as_str().unwrap_or_default();
    ensure!(stored == t2, "D1 holds {stored:?}, /health wrote {t2:?}");
    Ok(())
}

/// The cron trigger wakes the listener, whose alarm then fires; a second wake is harmless.
async fn listener_alarm(stack: &Stack) -> Result<()> {
    let cron = format!("{}/__scheduled?cron=*+*+*+*+*", stack.base_url());
    ensure!(
        reqwest::get(&cron).await?.status() == 200,
        "cron trigger failed"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let listener = loop {
        let listener = health(stack).await?["listener"].clone();
        if listener["alarms_fired"].as_u64().unwrap_or(0) >= 1 {
            break listener;
        }
        ensure!(Instant::now() < deadline, "alarm never fired: {listener}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        listener["next_alarm_ms"].is_i64(),
        "no next alarm: {listener}"
    );

    ensure!(
        reqwest::get(&cron).await?.status() == 200,
        "second cron failed"
    );
    let again = health(stack).await?["listener"].clone();
    ensure!(
        again["next_alarm_ms"] == listener["next_alarm_ms"],
        "waking again moved the alarm: {listener} -> {again}"
    );
    Ok(())
}

/// The listener's and broker's routes are not served to the public, whatever the Host says; their
/// configs give them no public URL.
async fn internal_unreachable(stack: &Stack) -> Result<()> {
    let client = reqwest::Client::new();
    for path in ["/publish", "/stats", "/wake", "/status"] {
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

    for worker in ["listener", "broker"] {
        let path = xtask::paths::wrangler_config(worker);
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
