//! Clients that drive a running stack from outside, shared by the end-to-end tests (`tests/`) and
//! the load benchmark (`src/bin/e2e-bench.rs`): a page's WebSocket, and the broker's internal
//! routes reached through edge's test hooks (`TEST_HOOKS=on` stacks only).

pub mod backfilling;
pub mod chaos;
pub mod hostile;
pub mod listening;
pub mod names;
pub mod pds;
pub mod shared;
pub mod tables;
pub mod tls;
pub mod web;

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use domain::internal::{BrokerHead, BrokerStats, PublishAck, RelayAck, ShardStats};
use domain::wire::{Publish, ServerFrame, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use xtask::stack::Stack;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for one expected frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How a page's socket reads: into a 4 KiB buffer. tungstenite's default (128 KiB) is zeroed
/// again before every read, frames or not: it was most of a bench client's time (a broker frame
/// is a few hundred bytes) and 1.3 GB for 10,000 pages. A larger frame still grows the buffer.
fn page_socket() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A page's live socket: edge's `/ws`, handed to the broker.
pub struct Page {
    pub socket: Socket,
    /// Messages of a packed frame not handed out yet (`domain::wire::unpack`).
    pending: std::collections::VecDeque<ServerFrame>,
}

impl Page {
    /// Opens `/ws` on the stack at `port`, with `?since=` when given and the stack's own Origin:
    /// a page that names no shard, which the broker keeps on shard 0.
    pub async fn connect(port: u16, since: Option<u64>) -> Result<Page> {
        Page::connect_at(port, &ws_query(None, since)).await
    }

    /// Opens `/ws` as [`Page::connect`] does, for a page bound to `shard`.
    pub async fn connect_to(port: u16, shard: u32, since: Option<u64>) -> Result<Page> {
        Page::connect_at(port, &ws_query(Some(shard), since)).await
    }

    async fn connect_at(port: u16, query: &str) -> Result<Page> {
        match Page::open_at(port, query, None).await? {
            Opened::Page(page) => Ok(*page),
            Opened::Refused { status, body, .. } => bail!("upgrade answered {status}: {body}"),
        }
    }

    /// Opens `/ws` as [`Page::connect`] does, from the client address `ip` when given (the
    /// `CF-Connecting-IP` Cloudflare would set; the local runtime keeps one a client sends), and
    /// says what an upgrade that was refused answered.
    pub async fn open(port: u16, since: Option<u64>, ip: Option<&str>) -> Result<Opened> {
        Page::open_at(port, &ws_query(None, since), ip).await
    }

    /// Opens `/ws?<query>` as [`Page::open`] does.
    pub async fn open_at(port: u16, query: &str, ip: Option<&str>) -> Result<Opened> {
        let url = match query {
            "" => format!("ws://127.0.0.1:{port}/ws"),
            query => format!("ws://127.0.0.1:{port}/ws?{query}"),
        };
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("Origin", format!("http://127.0.0.1:{port}").parse()?);
        if let Some(ip) = ip {
            headers.insert("CF-Connecting-IP", ip.parse()?);
        }
        match tokio_tungstenite::connect_async_with_config(request, Some(page_socket()), false)
            .await
        {
            Ok((socket, response)) => {
                ensure!(
                    response.status() == 101,
                    "upgrade answered {}",
                    response.status()
                );
                Ok(Opened::Page(Box::new(Page {
                    socket,
                    pending: Default::default(),
                })))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Ok(Opened::Refused {
                    status: response.status().as_u16(),
                    retry_after: header("Retry-After"),
                    body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                        .into_owned(),
                })
            }
            Err(error) => Err(error).context("opening /ws"),
        }
    }

    /// The next text frame (pings and pongs at the WebSocket level are skipped).
    pub async fn next_text(&mut self) -> Result<String> {
        self.next_text_within(FRAME_TIMEOUT).await
    }

    /// [`Page::next_text`], waiting at most `wait`.
    pub async fn next_text_within(&mut self, wait: Duration) -> Result<String> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .context("no frame within the timeout")?
                .context("the socket ended")??;
            match message {
                Message::Text(text) => return Ok(text.to_string()),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next sequenced message from the broker (a text frame may carry several).
    pub async fn next_frame(&mut self) -> Result<ServerFrame> {
        self.next_frame_within(FRAME_TIMEOUT).await
    }

    /// [`Page::next_frame`], waiting at most `wait`.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Result<ServerFrame> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(frame);
            }
            let text = self.next_text_within(wait).await?;
            let frames = domain::wire::unpack(&text)
                .with_context(|| format!("not a server frame: {text}"))?;
            self.pending.extend(frames);
        }
    }

    /// Waits for the broker to close the socket; returns its close code and reason.
    pub async fn closed(&mut self) -> Result<(u16, String)> {
        loop {
            let next = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .context("not closed within the timeout")?;
            match next {
                Some(Ok(Message::Close(frame))) => {
                    return Ok(frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())))
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => bail!("socket failed instead of closing: {error}"),
                None => bail!("socket ended without a close frame"),
            }
        }
    }

    /// Nothing arrives within `wait` (pings and pongs aside).
    pub async fn silent_for(&mut self, wait: Duration) -> Result<()> {
        if let Some(frame) = self.pending.front() {
            bail!("unexpected message {}", frame.to_json());
        }
        match tokio::time::timeout(wait, self.next_text()).await {
            Err(_) => Ok(()),
            Ok(Ok(text)) => bail!("unexpected frame {text}"),
            Ok(Err(error)) => bail!("socket failed: {error:#}"),
        }
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// Closes from the page's side and waits for the broker's answer.
    pub async fn close(mut self) -> Result<()> {
        self.socket
            .close(Some(CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            }))
            .await?;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next()).await {}
        Ok(())
    }
}

/// What an attempt to open `/ws` got.
pub enum Opened {
    Page(Box<Page>),
    /// The upgrade was answered with an HTTP status instead.
    Refused {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
}

/// Where a rendered home page's socket starts: its `data-shard` and `data-seq`.
pub fn live_from(html: &str) -> Option<(u32, u64)> {
    let attribute = |name: &str| {
        html.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(value, _)| value.to_owned())
    };
    let shard = attribute("data-shard")?.parse().ok()?;
    let seq = attribute("data-seq")?.parse().ok()?;
    Some((shard, seq))
}

/// The query of a page's `/ws`: its shard and `since`, when it has them.
pub fn ws_query(shard: Option<u32>, since: Option<u64>) -> String {
    let shard = shard.map(|k| format!("shard={k}"));
    let since = since.map(|s| format!("since={s}"));
    [shard, since]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("&")
}

/// The broker's internal routes, through edge's `/__test/broker/…` hook, as one shard sees them:
/// publishes (through the relay, to every shard) answer with this shard's part, and the head,
/// stats and connections are this shard's.
pub struct Broker {
    base: String,
    http: reqwest::Client,
    pub shard: u32,
}

impl Broker {
    /// Shard 0, where pages that name no shard ([`Page::connect`]) are.
    pub fn new(port: u16) -> Broker {
        Broker::on_shard(port, 0)
    }

    pub fn on_shard(port: u16, shard: u32) -> Broker {
        Broker {
            base: format!("http://127.0.0.1:{port}/__test/broker"),
            http: reqwest::Client::new(),
            shard,
        }
    }

    /// Publishes messages, stamped with the send time, and returns this shard's answer.
    pub async fn publish(&self, messages: Vec<ServerMessage>) -> Result<PublishAck> {
        self.publish_as(None, messages).await
    }

    /// [`Broker::publish`] with the publisher's id (`Publish::id`).
    pub async fn publish_as(
        &self,
        id: Option<&str>,
        messages: Vec<ServerMessage>,
    ) -> Result<PublishAck> {
        let relayed = self.publish_all(id, messages).await?;
        let mine = relayed.shards.iter().find(|s| s.shard == self.shard);
        match mine {
            Some(answer) if answer.kept => {
                bail!("shard {} did not take it: {relayed:?}", self.shard)
            }
            Some(answer) => Ok(answer.ack.clone()),
            None => Ok(PublishAck::default()),
        }
    }

    /// Publishes messages and returns the relay's answer (every shard's part).
    pub async fn publish_all(
        &self,
        id: Option<&str>,
        messages: Vec<ServerMessage>,
    ) -> Result<RelayAck> {
        let publish = Publish {
            messages,
            sent_at_ms: Some(now_ms()),
            id: id.map(str::to_owned),
        };
        let (status, body) = self.publish_raw(serde_json::to_vec(&publish)?).await?;
        ensure!(status == 200, "publish answered {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("publish ack {body}"))
    }

    /// Makes the broker refuse publishes (503) for the next `ms` (the relay's test hook: an
    /// outage of the whole broker, as publishers see it).
    pub async fn refuse(&self, ms: u64) -> Result<()> {
        self.post_refuse(&format!("ms={ms}")).await
    }

    /// Makes this shard refuse the relay's publishes for the next `ms` (its test hook).
    pub async fn refuse_on_shard(&self, ms: u64) -> Result<()> {
        self.post_refuse(&format!("ms={ms}&shard={}", self.shard))
            .await
    }

    async fn post_refuse(&self, query: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/refuse?{query}", self.base))
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "refuse answered {}",
            response.status()
        );
        Ok(())
    }

    /// Posts any body to the publish route; returns the status and the body.
    pub async fn publish_raw(&self, body: Vec<u8>) -> Result<(u16, String)> {
        let response = self
            .http
            .post(format!("{}/publish", self.base))
            .body(body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// This shard's stats.
    pub async fn stats(&self) -> Result<ShardStats> {
        let all = self.all_stats().await?;
        all.shards
            .into_iter()
            .find(|s| s.shard == self.shard)
            .with_context(|| format!("no stats from shard {}: {:?}", self.shard, all.unreachable))
    }

    /// The relay's and every shard's stats.
    pub async fn all_stats(&self) -> Result<BrokerStats> {
        self.get_json("stats").await
    }

    /// Waits up to `timeout` until this shard reports `want` open sockets.
    pub async fn wait_connections(&self, want: usize, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let have = self.stats().await?.connections;
            if have == want {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{have} connections after {timeout:?}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `timeout` until the shards hold `want` open sockets in all.
    pub async fn wait_all_connections(&self, want: usize, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let have = self.all_stats().await?.connections;
            if have == want {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{have} connections over all shards after {timeout:?}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// This shard's head.
    pub async fn head(&self) -> Result<u64> {
        let head: BrokerHead = self.get_json(&format!("head?shard={}", self.shard)).await?;
        ensure!(
            head.shard == self.shard,
            "asked shard {}, got {head:?}",
            self.shard
        );
        Ok(head.seq)
    }

    /// The head of the shard the broker picks for a new page, and which it is.
    pub async fn pick(&self) -> Result<BrokerHead> {
        self.get_json("head").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, route: &str) -> Result<T> {
        let response = self
            .http
            .get(format!("{}/{route}", self.base))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == 200, "{route} answered {status}: {body}");
        serde_json::from_str(&body).with_context(|| format!("{route}: {body}"))
    }
}

/// A status message as edge (`Origin::Edge`: optimistic, not yet confirmed) or the listener
/// (`Origin::Network`) would publish it.
pub fn upsert(uri_rkey: &str, status: &str, origin: domain::Origin) -> ServerMessage {
    let did = "did:plc:e2eaaaaaaaaaaaaaaaaaaaaa";
    ServerMessage::StatusUpserted {
        status: domain::StatusView {
            uri: domain::status::at_uri(did, uri_rkey),
            author_did: did.to_owned(),
            handle: Some("alice.test".to_owned()),
            display_name: None,
            rkey: uri_rkey.to_owned(),
            status: status.to_owned(),
            created_at: "2026-11-24T00:00:00.000Z".to_owned(),
            indexed_at: now_ms(),
            confirmed: origin == domain::Origin::Network,
            origin,
        },
    }
}

/// The number that follows the option `flag` in a binary's `args` (`--events 1000`).
pub fn number_after(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64> {
    args.next()
        .with_context(|| format!("{flag} needs a value"))?
        .parse()
        .with_context(|| format!("{flag} takes a number"))
}

/// Fails the test with every failed check named, and the end of wrangler's output: one stack serves
/// many checks (starting workerd costs seconds), and each failure says which check it was.
pub fn assert_checks<'a>(checks: impl IntoIterator<Item = (&'a str, Result<()>)>, stack: &Stack) {
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{}\n--- wrangler output (tail) ---\n{}",
        failures.join("\n"),
        stack.log_tail(80)
    );
}

/// Edge's detailed `/health` report (the operator's, with the stack's health token).
pub async fn health(stack: &Stack) -> Result<serde_json::Value> {
    let token = stack
        .health_token()
        .context("the stack has no health token")?;
    let response = reqwest::Client::new()
        .get(format!("{}/health", stack.base_url()))
        .bearer_auth(token)
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    ensure!(status == 200, "/health answered {status}: {body}");
    Ok(body)
}

/// For a benchmark binary's `main`: `true` (after printing `about` and how it is run) when its
/// command line asks for help. The benchmarks take no arguments: anything else is refused.
pub fn asked_for_help(about: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        return false;
    }
    if !args.iter().all(|a| a == "--help" || a == "-h") {
        eprintln!("error: unexpected arguments {args:?}; see --help");
        std::process::exit(2);
    }
    println!(
        "{about}\n\nTakes no arguments. `cargo xtask bench NAME` runs it and writes its section \
         of docs/benchmarks.md."
    );
    true
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
