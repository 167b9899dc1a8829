//! Bridges a PDS's (or relay's) `com.atproto.sync.subscribeRepos` firehose to Jetstream events.
//!
//! Each binary firehose frame is two DAG-CBOR values: a header `{op, t}` and a body. For a
//! `#commit`, the body's `blocks` is a CARv1 holding the records its `ops` point at; each op
//! becomes one Jetstream commit event with the record as JSON (bytes as `{"$bytes"}`, links as
//! `{"$link"}`). `#identity` and `#account` become Jetstream's identity and account events.
//! `time_us` is given by the hub when the event is published (monotonic, like Jetstream's).

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::window::Hub;

const SUBSCRIBE_REPOS: &str = "/xrpc/com.atproto.sync.subscribeRepos";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseConfig {
    /// `ws://host:port` (the subscribeRepos path is added when absent).
    pub url: String,
    /// Firehose sequence number to start after; `Some(0)` replays what the PDS still holds.
    pub cursor: Option<i64>,
}

/// Builds the subscribeRepos URL for a base URL and cursor.
pub fn subscribe_url(base: &str, cursor: Option<i64>) -> Result<String> {
    let mut url =
        url::Url::parse(base).map_err(|e| Error::Usage(format!("--firehose {base}: {e}")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(Error::Usage(format!(
            "--firehose {base}: expected a ws:// or wss:// URL"
        )));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path(SUBSCRIBE_REPOS);
    }
    url.set_query(None);
    if let Some(cursor) = cursor {
        url.query_pairs_mut()
            .append_pair("cursor", &cursor.to_string());
    }
    Ok(url.to_string())
}

/// Follows the firehose forever, reconnecting (from the last sequence seen) with backoff.
pub async fn run(hub: Arc<Hub>, config: FirehoseConfig) {
    let mut cursor = config.cursor;
    let mut backoff = Duration::from_millis(250);
    loop {
        let url = match subscribe_url(&config.url, cursor) {
            Ok(url) => url,
            Err(e) => {
                warn!(error = %e, "firehose bridge stopped");
                return;
            }
        };
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                info!(%url, "firehose connected");
                backoff = Duration::from_millis(250);
                while let Some(message) = ws.next().await {
                    let bytes = match message {
                        Ok(Message::Binary(bytes)) => bytes,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    match translate(&bytes) {
                        Ok(translated) => {
                            if let Some(seq) = translated.seq {
                                cursor = Some(cursor.map_or(seq, |c| c.max(seq)));
                            }
                            hub.publish(translated.events);
                        }
                        Err(e) => warn!(error = %e, "firehose frame dropped"),
                    }
                }
                info!("firehose disconnected");
            }
            Err(e) => warn!(error = %e, %url, "firehose connection failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// What one firehose frame becomes.
#[derive(Debug, Default)]
pub struct Translated {
    /// The frame's sequence number, when it has one.
    pub seq: Option<i64>,
    /// Jetstream events as JSON text (`time_us` is a placeholder the hub rewrites).
    pub events: Vec<String>,
}

#[derive(Serialize)]
struct JetstreamEvent<'a> {
    did: &'a str,
    time_us: i64,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<CommitOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<IdentityOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<AccountOut<'a>>,
}

#[derive(Serialize)]
struct CommitOut<'a> {
    rev: &'a str,
    operation: &'a str,
    collection: &'a str,
    rkey: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
}

#[derive(Serialize)]
struct IdentityOut<'a> {
    did: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
    seq: i64,
    time: &'a str,
}

#[derive(Serialize)]
struct AccountOut<'a> {
    active: bool,
    did: &'a str,
    seq: i64,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

fn field<'a>(map: &'a BTreeMap<String, Ipld>, name: &str) -> Option<&'a Ipld> {
    map.get(name)
}

fn text<'a>(map: &'a BTreeMap<String, Ipld>, name: &str) -> Result<&'a str> {
    match field(map, name) {
        Some(Ipld::String(s)) => Ok(s),
        _ => Err(Error::Firehose(format!("`{name}` missing or not a string"))),
    }
}

fn integer(map: &BTreeMap<String, Ipld>, name: &str) -> Result<i64> {
    match field(map, name) {
        Some(Ipld::Integer(i)) => {
            i64::try_from(*i).map_err(|_| Error::Firehose(format!("`{name}` out of range")))
        }
        _ => Err(Error::Firehose(format!(
            "`{name}` missing or not an integer"
        ))),
    }
}

fn to_json(event: &JetstreamEvent) -> String {
    // Serialising plain structs of strings, numbers and JSON values cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}

/// Decodes one binary firehose frame.
pub fn translate(frame: &[u8]) -> Result<Translated> {
    let mut reader = Cursor::new(frame);
    let header: Ipld = serde_ipld_dagcbor::de::from_reader_once(&mut reader)
        .map_err(|e| Error::Firehose(format!("header: {e}")))?;
    let body: Ipld = serde_ipld_dagcbor::de::from_reader_once(&mut reader)
        .map_err(|e| Error::Firehose(format!("body: {e}")))?;
    let (Ipld::Map(header), Ipld::Map(body)) = (header, body) else {
        return Err(Error::Firehose("header or body is not a map".into()));
    };
    if integer(&header, "op")? != 1 {
        let message = field(&body, "message").or(field(&body, "error"));
        return Err(Error::Firehose(format!("error frame: {message:?}")));
    }
    let kind = text(&header, "t")?;
    let seq = integer(&body, "seq").ok();
    let mut out = Translated {
        seq,
        events: Vec::new(),
    };
    match kind {
        "#commit" => out.events = commit_events(&body)?,
        "#identity" => {
            let did = text(&body, "did")?;
            let event = JetstreamEvent {
                did,
                time_us: 0,
                kind: "identity",
                commit: None,
                identity: Some(IdentityOut {
                    did,
                    handle: text(&body, "handle").ok(),
                    seq: integer(&body, "seq")?,
                    time: text(&body, "time")?,
                }),
                account: None,
            };
            out.events.push(to_json(&event));
        }
        "#account" => {
            let did = text(&body, "did")?;
            let active = matches!(field(&body, "active"), Some(Ipld::Bool(true)));
            let event = JetstreamEvent {
                did,
                time_us: 0,
                kind: "account",
                commit: None,
                identity: None,
                account: Some(AccountOut {
                    active,
                    did,
                    seq: integer(&body, "seq")?,
                    time: text(&body, "time")?,
                    status: text(&body, "status").ok(),
                }),
            };
            out.events.push(to_json(&event));
        }
        // #sync, #info and future kinds carry nothing Jetstream serves.
        other => info!(kind = other, "firehose frame kind not bridged"),
    }
    Ok(out)
}

fn commit_events(body: &BTreeMap<String, Ipld>) -> Result<Vec<String>> {
    let did = text(body, "repo")?;
    let rev = text(body, "rev")?;
    let blocks = match field(body, "blocks") {
        Some(Ipld::Bytes(bytes)) => car_blocks(bytes)?,
        _ => HashMap::new(),
    };
    let Some(Ipld::List(ops)) = field(body, "ops") else {
        return Err(Error::Firehose("`ops` missing".into()));
    };
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        let Ipld::Map(op) = op else {
            return Err(Error::Firehose("an op is not a map".into()));
        };
        let action = text(op, "action")?;
        let path = text(op, "path")?;
        let Some((collection, rkey)) = path.split_once('/') else {
            return Err(Error::Firehose(format!("op path without a slash: {path}")));
        };
        let (record, cid) = match (action, field(op, "cid")) {
            ("create" | "update", Some(Ipld::Link(cid))) => {
                let Some(block) = blocks.get(cid) else {
                    warn!(%did, path, "record block missing from the commit (tooBig?); op skipped");
                    continue;
                };
                let record: Ipld = serde_ipld_dagcbor::from_slice(block)
                    .map_err(|e| Error::Firehose(format!("record {path}: {e}")))?;
                (Some(ipld_to_json(&record)), Some(cid.to_string()))
            }
            ("delete", _) => (None, None),
            _ => {
                return Err(Error::Firehose(format!(
                    "op `{action}` on {path} without a record link"
                )))
            }
        };
        let event = JetstreamEvent {
            did,
            time_us: 0,
            kind: "commit",
            commit: Some(CommitOut {
                rev,
                operation: action,
                collection,
                rkey,
                record,
                cid,
            }),
            identity: None,
            account: None,
        };
        events.push(to_json(&event));
    }
    Ok(events)
}

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*pos)
            .ok_or_else(|| Error::Firehose("CAR: truncated varint".into()))?;
        *pos += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Error::Firehose("CAR: varint too long".into()))
}

/// The blocks of a CARv1 file by CID: a varint-prefixed header, then varint-prefixed
/// (CID, data) sections.
pub fn car_blocks(car: &[u8]) -> Result<HashMap<Cid, &[u8]>> {
    let mut pos = 0usize;
    let header_len = varint(car, &mut pos)? as usize;
    pos = pos
        .checked_add(header_len)
        .filter(|end| *end <= car.len())
        .ok_or_else(|| Error::Firehose("CAR: header runs past the end".into()))?;
    let mut blocks = HashMap::new();
    while pos < car.len() {
        let len = varint(car, &mut pos)? as usize;
        let end = pos
            .checked_add(len)
            .filter(|end| *end <= car.len())
            .ok_or_else(|| Error::Firehose("CAR: block runs past the end".into()))?;
        let section = &car[pos..end];
        let mut reader = Cursor::new(section);
        let cid = Cid::read_bytes(&mut reader)
            .map_err(|e| Error::Firehose(format!("CAR: block CID: {e}")))?;
        blocks.insert(cid, &section[reader.position() as usize..]);
        pos = end;
    }
    Ok(blocks)
}

/// The atproto JSON form of a DAG-CBOR value.
pub fn ipld_to_json(value: &Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .or_else(|_| u64::try_from(*i).map(Value::from))
            .unwrap_or(Value::Null),
        Ipld::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => {
            serde_json::json!({ "$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(b) })
        }
        Ipld::List(items) => Value::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(cid) => serde_json::json!({ "$link": cid.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_urls() {
        assert_eq!(
            subscribe_url("ws://127.0.0.1:2583", Some(5)).unwrap(),
            "ws://127.0.0.1:2583/xrpc/com.atproto.sync.subscribeRepos?cursor=5"
        );
        assert_eq!(
            subscribe_url(
                "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos",
                None
            )
            .unwrap(),
            "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos"
        );
        assert!(subscribe_url("http://127.0.0.1:2583", None).is_err());
        assert!(subscribe_url("not a url", None).is_err());
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        for frame in [
            &b""[..],
            b"\xa2\x62op\x01",
            b"\xff\xff\xff",
            b"\xa1\x61t\x67#commit\xa0",
        ] {
            assert!(translate(frame).is_err());
        }
        assert!(car_blocks(b"\x05\x01").is_err());
        assert!(car_blocks(b"\x00\x7f\x01").is_err());
        assert!(car_blocks(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn bytes_and_links_take_their_atproto_json_form() {
        let cid: Cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
            .parse()
            .unwrap();
        let value = Ipld::Map(BTreeMap::from([
            ("b".to_owned(), Ipld::Bytes(vec![1, 2, 3, 4])),
            ("l".to_owned(), Ipld::Link(cid)),
        ]));
        assert_eq!(
            ipld_to_json(&value),
            serde_json::json!({"b": {"$bytes": "AQIDBA"}, "l": {"$link": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}})
        );
    }
}
