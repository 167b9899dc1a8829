//! The WebSocket server: both of a Jetstream v2 instance's streams, the legacy `/subscribe` (v1
//! JSON, with `cursor`) and `/xrpc/network.bsky.jetstream.subscribeEvents` (the v2 framing), plus
//! `GET /stats` (a local extension) and `GET /` (a banner). Binds where it is told; the CLI
//! defaults to 127.0.0.1.
//!
//! The HTTP request head is read and validated here, so that a bad subscription gets Jetstream's
//! answer before any upgrade (400 with a plain-text message on `/subscribe`, an XRPC error
//! `{"error","message"}` on v2, `CursorTooOld` for a v2 seq older than the window); valid ones
//! are upgraded in place.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::fault::{Faults, Next};
use crate::filter::{parse_subscriber_message, Filter, SubscribeRequest, Wire};
use crate::frame::EVENTS_NSID;
use crate::window::{Hub, MAX_REPOS_PAGE};

/// The v2 stream's path: `/xrpc/` and [`EVENTS_NSID`] (checked by a unit test).
pub const EVENTS_PATH: &str = "/xrpc/network.bsky.jetstream.subscribeEvents";

/// Frames read from the window per step (and written before one flush).
const BATCH: usize = 256;
/// The longest request head accepted: room for 10,000 `wantedDids` in the query (~400 KB), as
/// Jetstream's HTTP server (Go's 1 MB default) allows.
const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Subscriber messages are small JSON; anything bigger is a protocol error that ends the socket.
const MAX_CLIENT_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A subscriber that cannot take a write within this long is disconnected (Jetstream: 10 s).
    pub write_timeout: Duration,
    /// Pings to idle subscribers (Jetstream: 30 s).
    pub ping_interval: Duration,
    pub faults: Faults,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            faults: Faults::default(),
        }
    }
}

/// A running server; dropping it stops accepting and ends every connection.
pub struct Server {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("ws://{}/subscribe", self.addr)
    }

    /// The v2 stream's URL.
    pub fn events_url(&self) -> String {
        format!("ws://{}{EVENTS_PATH}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.accept.abort();
    }
}

pub async fn start(config: ServerConfig, hub: Arc<Hub>) -> Result<Server> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    let (shutdown, _) = watch::channel(false);
    let config = Arc::new(config);
    let stop = shutdown.clone();
    let accept = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let (hub, config, stop) = (hub.clone(), config.clone(), stop.subscribe());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, hub, config, stop).await {
                            info!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(Server {
        addr,
        accept,
        shutdown,
    })
}

/// The parts of an HTTP request head the server looks at.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Reads up to the end of the request head; returns the head and any bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Result<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(Error::Usage("request head too large".into()));
        }
        let mut chunk = [0u8; 8192];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Error::io("reading the request", e))?;
        if n == 0 {
            return Err(Error::Usage(
                "connection closed before the request head ended".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| Error::Usage("request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err(Error::Usage("malformed request line".into()));
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    };
    Ok((head, buf[end..].to_vec()))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(response.as_bytes())
        .await
        .map_err(|e| Error::io("writing a response", e))?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A refusal before the upgrade: plain text on the legacy wire, an XRPC error on v2.
async fn refuse(stream: &mut TcpStream, wire: Wire, error: &str, message: &str) -> Result<()> {
    match wire {
        Wire::Legacy => respond(stream, 400, "text/plain", &format!("{message}\n")).await,
        Wire::Events => {
            let body = serde_json::json!({ "error": error, "message": message }).to_string();
            respond(stream, 400, "application/json", &body).await
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (head, leftover) = match timeout(Duration::from_secs(10), read_head(&mut stream)).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => return respond(&mut stream, 400, "text/plain", &format!("{e}\n")).await,
        Err(_) => return Err(Error::Usage("request head timed out".into())),
    };
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    match (head.method.as_str(), path) {
        ("GET", "/subscribe" | EVENTS_PATH) => {
            let wire = if path == EVENTS_PATH { Wire::Events } else { Wire::Legacy };
            if !head.has_token("upgrade", "websocket") {
                return respond(&mut stream, 426, "text/plain", &format!("{path} speaks WebSocket only\n")).await;
            }
            let parsed = match wire {
                Wire::Legacy => SubscribeRequest::from_query(query),
                Wire::Events => SubscribeRequest::from_events_query(query),
            };
            let mut request = match parsed {
                Ok(request) => request,
                Err(e) => {
                    hub.counters.refused.fetch_add(1, Ordering::Relaxed);
                    info!(error = %e, "subscription refused");
                    return refuse(&mut stream, wire, "InvalidRequest", &e.to_string()).await;
                }
            };
            // The legacy wire starts where the stream is when the subscriber's options are
            // known (after its hello, if it asked for one); v2 has no hello, and refuses a seq
            // older than it keeps before the upgrade.
            request.start = match wire {
                Wire::Legacy => None,
                Wire::Events => match hub.start_for(request.cursor) {
                    Ok(start) => Some(start),
                    Err(too_old) => {
                        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
                        let message = format!(
                            "subscribe: cursor too old: cursor below lookback floor {}; re-backfill from your last seq",
                            too_old.floor
                        );
                        return refuse(&mut stream, wire, "CursorTooOld", &message).await;
                    }
                },
            };
            let Some(key) = head.header("sec-websocket-key") else {
                return refuse(&mut stream, wire, "InvalidRequest", "missing Sec-WebSocket-Key").await;
            };
            let accept = derive_accept_key(key.as_bytes());
            // v2 echoes the subprotocol it speaks when offered (the framing is the same without).
            let protocol = if wire == Wire::Events && head.has_token("sec-websocket-protocol", "xrpc.v1.json") {
                "Sec-WebSocket-Protocol: xrpc.v1.json\r\n"
            } else {
                ""
            };
            let switching = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
            );
            stream
                .write_all(switching.as_bytes())
                .await
                .map_err(|e| Error::io("writing the upgrade", e))?;
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES));
            let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config)).await;
            subscriber(ws, request, hub, config, shutdown).await;
            Ok(())
        }
        ("GET", "/stats") => {
            let body = serde_json::to_string(&hub.stats()).unwrap_or_default();
            respond(&mut stream, 200, "application/json", &body).await
        }
        ("GET", REPOS_PATH) => {
            let (status, body) = list_repos(&hub, query);
            respond(&mut stream, status, "application/json", &body).await
        }
        ("GET", "/") => {
            respond(
                &mut stream,
                200,
                "text/plain",
                "statusphere-sidecar: a local Jetstream. Subscribe at /subscribe (v1 JSON) or /xrpc/network.bsky.jetstream.subscribeEvents (v2); counters at /stats; repositories by collection at /xrpc/com.atproto.sync.listReposByCollection.\n",
            )
            .await
        }
        (_, "/subscribe" | EVENTS_PATH | "/stats" | "/" | REPOS_PATH) => respond(&mut stream, 405, "text/plain", "only GET is allowed\n").await,
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

/// The relay's `com.atproto.sync.listReposByCollection`, which a backfill starts from: every DID
/// this instance has seen commit to a collection (from whatever source it serves: for the local
/// network, the PDS's firehose from its first event), in order, paged by the last DID.
pub const REPOS_PATH: &str = "/xrpc/com.atproto.sync.listReposByCollection";

/// `?collection=<nsid>&limit=<1..=2000, default 500>&cursor=<did>` → `{"repos":[{"did":…}],
/// "cursor":…}`, or an XRPC error.
fn list_repos(hub: &Hub, query: &str) -> (u16, String) {
    let invalid = |message: &str| {
        let body = serde_json::json!({ "error": "InvalidRequest", "message": message });
        (400, body.to_string())
    };
    let mut collection = None;
    let mut limit = 500usize;
    let mut cursor = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "collection" => collection = Some(value.into_owned()),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_REPOS_PAGE).contains(&n) => limit = n,
                _ => return invalid("limit must be a number from 1 to 2000"),
            },
            "cursor" => cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(collection) = collection.filter(|c| !c.is_empty() && c.len() <= 317) else {
        return invalid("collection is required");
    };
    let (repos, next) = hub.repos_with(&collection, cursor.as_deref(), limit);
    let repos: Vec<serde_json::Value> = repos
        .into_iter()
        .map(|did| serde_json::json!({ "did": did }))
        .collect();
    let mut body = serde_json::json!({ "repos": repos });
    if let Some(next) = next {
        body["cursor"] = next.into();
    }
    (200, body.to_string())
}

/// What the reading half reports to the writing half.
enum Inbound {
    Options(Filter),
    Invalid(String),
    Closed,
}

/// Decrements the live connection count however the subscriber ends.
struct Live<'a>(&'a Hub);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Aborts the reader task however the subscriber ends, so that the socket is really closed.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Sink = futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>;

async fn read_client(
    mut source: futures_util::stream::SplitStream<WebSocketStream<TcpStream>>,
    tx: mpsc::Sender<Inbound>,
    wire: Wire,
) {
    while let Some(message) = source.next().await {
        let inbound = match message {
            // The v2 stream is server-push only: any data frame from the client ends it.
            Ok(Message::Text(_) | Message::Binary(_)) if wire == Wire::Events => {
                Inbound::Invalid("this stream takes no messages".into())
            }
            Ok(Message::Text(text)) => match parse_subscriber_message(&text) {
                Ok(Some(filter)) => Inbound::Options(filter),
                Ok(None) => continue,
                Err(e) => Inbound::Invalid(e.to_string()),
            },
            // Binary frames are ignored, as by Jetstream; pings are answered by tungstenite.
            Ok(Message::Close(_)) | Err(_) => Inbound::Closed,
            Ok(_) => continue,
        };
        let last = !matches!(inbound, Inbound::Options(_));
        if tx.send(inbound).await.is_err() || last {
            return;
        }
    }
    let _ = tx.send(Inbound::Closed).await;
}

fn close_frame(code: u16, reason: &str) -> Message {
    // A close reason must fit in a control frame (123 bytes).
    let cut = reason.floor_char_boundary(123);
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason[..cut].to_owned()),
    }))
}

/// Why a subscriber ended, for the log.
enum End {
    ClientClosed,
    /// The client sent what this stream refuses: closed with this code.
    Invalid(u16, String),
    Slow(&'static str),
    Fault(&'static str),
    Shutdown,
}

async fn subscriber(
    ws: WebSocketStream<TcpStream>,
    request: SubscribeRequest,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let counters = &hub.counters;
    let number = counters.connections_total.fetch_add(1, Ordering::Relaxed) + 1;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let _live = Live(&hub);
    let by_cursor = match request.cursor {
        crate::window::Cursor::Live => &counters.cursor_live,
        crate::window::Cursor::Seq(_) => &counters.cursor_seq,
        crate::window::Cursor::Time(_) => &counters.cursor_time,
    };
    by_cursor.fetch_add(1, Ordering::Relaxed);
    if request.wire == Wire::Events {
        counters.v2_connections.fetch_add(1, Ordering::Relaxed);
    }
    info!(connection = number, wire = ?request.wire, cursor = ?request.cursor, require_hello = request.require_hello, "subscriber connected");

    let (mut sink, source) = ws.split();
    let (tx, mut inbox) = mpsc::channel(8);
    let _reader = AbortOnDrop(tokio::spawn(read_client(source, tx, request.wire)));
    let end = serve(
        &mut sink,
        &mut inbox,
        request,
        &hub,
        &config,
        number,
        &mut shutdown,
    )
    .await;
    let write_timeout = config.write_timeout;
    match &end {
        End::ClientClosed => {
            // Sends the reply to the client's close frame, queued by tungstenite.
            let _ = timeout(write_timeout, sink.close()).await;
            info!(connection = number, "subscriber closed");
        }
        End::Invalid(code, reason) => {
            let _ = timeout(write_timeout, sink.send(close_frame(*code, reason))).await;
            info!(
                connection = number,
                reason, "subscriber sent invalid options; closed"
            );
        }
        End::Slow(why) => {
            counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
            warn!(connection = number, why, "slow subscriber dropped");
        }
        End::Fault(what) => info!(connection = number, what, "fault injected"),
        End::Shutdown => {}
    }
}

/// Sends a v2 `#info` (envelope `message`) or `error` frame; `false` if it was not taken in time.
async fn notify(
    sink: &mut Sink,
    config: &ServerConfig,
    envelope: &str,
    name: &str,
    message: &str,
) -> bool {
    let text = match envelope {
        "error" => serde_json::json!({ "$type": "error", "error": name, "message": message }),
        _ => serde_json::json!({ "$type": "message", "payload": {
            "$type": format!("{EVENTS_NSID}#info"), "name": name, "message": message } }),
    };
    let frame = Message::Text(Utf8Bytes::from(text.to_string()));
    matches!(
        timeout(config.write_timeout, sink.send(frame)).await,
        Ok(Ok(()))
    )
}

async fn serve(
    sink: &mut Sink,
    inbox: &mut mpsc::Receiver<Inbound>,
    request: SubscribeRequest,
    hub: &Hub,
    config: &ServerConfig,
    number: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let wire = request.wire;
    // A refused client message: the legacy wire closes normally with the reason, v2 with 1008.
    let invalid = |reason: String| match wire {
        Wire::Legacy => End::Invalid(1000, reason),
        Wire::Events => End::Invalid(1008, reason),
    };
    let mut filter = request.filter;
    if request.require_hello {
        tokio::select! {
            inbound = inbox.recv() => match inbound {
                Some(Inbound::Options(f)) => filter = f,
                Some(Inbound::Invalid(reason)) => return invalid(reason),
                Some(Inbound::Closed) | None => return End::ClientClosed,
            },
            _ = shutdown.changed() => return End::Shutdown,
        }
    }
    let mut faults = config.faults.for_connection(number);
    // The legacy wire clamps a seq older than the window silently, as Jetstream does.
    let start = request.start.unwrap_or_else(|| {
        hub.start_for(request.cursor)
            .unwrap_or_else(|old| old.start)
    });
    if start.clamped {
        hub.counters.clamped.fetch_add(1, Ordering::Relaxed);
        if wire == Wire::Events {
            let oldest = hub.stats().oldest_seq.unwrap_or(0);
            let message = format!(
                "requested timestamp cursor below retention floor; starting at seq {oldest}"
            );
            if !notify(sink, config, "message", "OutdatedCursor", &message).await {
                return End::Slow("info not written in time");
            }
        }
    }
    let mut position = start.position;
    let mut head = hub.watch_head();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + config.ping_interval,
        config.ping_interval,
    );
    let mut stalled = false;
    let mut out = Vec::with_capacity(BATCH);
    loop {
        loop {
            match inbox.try_recv() {
                Ok(Inbound::Options(f)) => filter = f,
                Ok(Inbound::Invalid(reason)) => return invalid(reason),
                Ok(Inbound::Closed) | Err(mpsc::error::TryRecvError::Disconnected) => {
                    return End::ClientClosed
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        let seen_head = *head.borrow_and_update();
        let batch = if stalled {
            Vec::new()
        } else {
            match hub.read(position, BATCH) {
                Ok(batch) => batch,
                Err(_) => {
                    if wire == Wire::Events {
                        let seq = hub.stats().oldest_seq.unwrap_or(0);
                        let message =
                            format!("fell behind the retained window; reconnect with cursor={seq}");
                        notify(sink, config, "error", "ConsumerTooSlow", &message).await;
                    }
                    return End::Slow("fell out of the retained window");
                }
            }
        };
        if batch.is_empty() {
            if !stalled && seen_head > position {
                continue;
            }
            tokio::select! {
                changed = head.changed(), if !stalled => if changed.is_err() { return End::Shutdown },
                inbound = inbox.recv() => match inbound {
                    Some(Inbound::Options(f)) => filter = f,
                    Some(Inbound::Invalid(reason)) => return invalid(reason),
                    Some(Inbound::Closed) | None => return End::ClientClosed,
                },
                _ = ping.tick(), if !stalled => {
                    match timeout(config.write_timeout, sink.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::ClientClosed,
                        Err(_) => return End::Slow("ping not written in time"),
                    }
                }
                _ = shutdown.changed() => return End::Shutdown,
            }
            continue;
        }
        position += batch.len() as u64;
        for frame in &batch {
            let text = match wire {
                Wire::Legacy => &frame.text,
                Wire::Events => frame.v2_text(),
            };
            if filter.wants(frame, text.len()) {
                faults.shape(text.clone(), &mut out);
            }
        }
        faults.flush(&mut out);
        let mut written = 0u64;
        for text in out.drain(..) {
            match faults.next() {
                Next::Send => {}
                Next::Stall => {
                    stalled = true;
                    break;
                }
                Next::Close(code) => {
                    // What was written before the fault still reaches the client.
                    let _ = timeout(config.write_timeout, sink.flush()).await;
                    let Some(code) = code else {
                        return End::Fault("abrupt close");
                    };
                    let _ = timeout(
                        config.write_timeout,
                        sink.send(close_frame(code, "fault injection")),
                    )
                    .await;
                    return End::Fault("close with code");
                }
            }
            if faults.binary_before() {
                let copy = Message::Binary(text.as_bytes().to_vec().into());
                match timeout(config.write_timeout, sink.feed(copy)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::ClientClosed,
                    Err(_) => return End::Slow("write not taken in time"),
                }
            }
            let sent = match faults.delay() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    timeout(config.write_timeout, sink.send(Message::Text(text))).await
                }
                None => timeout(config.write_timeout, sink.feed(Message::Text(text))).await,
            };
            match sent {
                Ok(Ok(())) => {
                    faults.sent_one();
                    written += 1;
                }
                Ok(Err(_)) => return End::ClientClosed,
                Err(_) => return End::Slow("write not taken in time"),
            }
        }
        out.clear();
        hub.counters.delivered.fetch_add(written, Ordering::Relaxed);
        match timeout(config.write_timeout, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return End::ClientClosed,
            Err(_) => return End::Slow("flush not taken in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_events_path_names_the_nsid() {
        assert_eq!(super::EVENTS_PATH, format!("/xrpc/{}", super::EVENTS_NSID));
    }
}
