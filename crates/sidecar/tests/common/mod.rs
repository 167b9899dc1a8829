//! Helpers shared by the sidecar's integration tests: a server on a free port, a client, and
//! small stream builders.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sidecar::frame::TimeMode;
use sidecar::server::{self, Server, ServerConfig};
use sidecar::window::{Hub, WindowConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const STATUS: &str = "xyz.statusphere.status";
pub const POST: &str = "app.bsky.feed.post";

pub async fn server_with(
    config: impl FnOnce(&mut ServerConfig),
    window: WindowConfig,
    time: TimeMode,
) -> (Arc<Hub>, Server) {
    let hub = Hub::new(window, time);
    let mut server_config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut server_config);
    let server = server::start(server_config, hub.clone()).await.unwrap();
    (hub, server)
}

/// A server that keeps recorded times (so tests can name cursors).
pub async fn server() -> (Arc<Hub>, Server) {
    server_with(|_| {}, WindowConfig::default(), TimeMode::Keep).await
}

pub async fn connect(server: &Server, query: &str) -> Client {
    let url = format!("{}?{query}", server.url());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

pub fn commit(did: &str, time_us: i64, collection: &str, rkey: &str) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{time_us},"kind":"commit","commit":{{"rev":"3lbkn5xkq2k2a","operation":"create","collection":"{collection}","rkey":"{rkey}","record":{{"$type":"{collection}","status":"🙂","text":"hi","createdAt":"2024-11-24T00:00:00.000Z"}},"cid":"bafyreib2rxk3rh6kzwq"}}}}"#
    )
}

pub fn identity(did: &str, time_us: i64) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{time_us},"kind":"identity","identity":{{"did":"{did}","handle":"a.test","seq":1,"time":"2024-11-24T00:00:00.000Z"}}}}"#
    )
}

pub fn account(did: &str, time_us: i64) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{time_us},"kind":"account","account":{{"active":false,"did":"{did}","seq":2,"time":"2024-11-24T00:00:00.000Z","status":"deactivated"}}}}"#
    )
}

/// The next text frame, skipping pings; `None` when nothing arrives within `wait` or the
/// connection ends.
pub async fn next_text(ws: &mut Client, wait: Duration) -> Option<String> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// `time_us` of each of the next `n` frames (panics if fewer arrive).
pub async fn times(ws: &mut Client, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let text = next_text(ws, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("frame {i} of {n} did not arrive; got {out:?}"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        out.push(value["time_us"].as_i64().unwrap());
    }
    out
}

/// The close frame the server sends next (skipping other messages); panics if none comes.
pub async fn close_frame(ws: &mut Client) -> CloseFrame {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame,
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Asserts nothing (but pings) arrives for a while.
pub async fn silent(ws: &mut Client, wait: Duration) {
    if let Some(text) = next_text(ws, wait).await {
        panic!("expected silence, got {text}");
    }
}

/// A served legacy frame without the `cursor` (the seq) the sidecar adds after `time_us`: the
/// frame as it was published.
pub fn without_cursor(text: &str) -> String {
    let Some(at) = text.find(",\"cursor\":") else {
        return text.to_owned();
    };
    let rest = &text[at + ",\"cursor\":".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    format!("{}{}", &text[..at], &rest[digits..])
}
