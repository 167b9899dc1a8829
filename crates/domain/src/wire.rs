//! The broker's wire messages: versioned JSON, one message per WebSocket text frame or several
//! packed in one, and the pure rules the broker applies to its sockets (what a page may send,
//! where a reconnecting page resumes).
//!
//! Server to page: `{"v":1,"seq":42,"type":"status_upserted","status":{…}}`. `seq` grows by one per
//! message, so a page can tell what it missed and ask for it with `?since=<seq>`. The messages of
//! one publish (or of a replay) go out [`pack`]ed: a JSON array of them per text frame, because a
//! send to a socket costs the broker about the same whatever it carries.
//! Page to server: only [`PING`], answered by [`PONG`]. The whole protocol is in docs/broker.md.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::sql::CountRow;
use crate::StatusView;

/// The version of this protocol; a page that sees another version reloads.
pub const WIRE_VERSION: u32 = 1;

/// The one message a page may send, byte for byte: the broker's runtime answers it with [`PONG`]
/// without waking the Durable Object (the hibernation API's auto-response).
pub const PING: &str = r#"{"type":"ping"}"#;
/// The answer to [`PING`]. Not sequenced: it is about the socket, not the feed.
pub const PONG: &str = r#"{"type":"pong"}"#;
/// The longest message a page may send; anything longer closes the socket with [`close::TOO_BIG`].
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 256;

/// WebSocket close codes the broker uses, each with the reason it sends.
pub mod close {
    /// The page asked to close, or must reload (the reason says which).
    pub const NORMAL: u16 = 1000;
    /// The page stopped pinging: the socket is presumed gone and is pruned.
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame: the protocol is text only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Text that is not a ping: pages may not speak on this socket.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message over [`super::MAX_CLIENT_MESSAGE_BYTES`].
    pub const TOO_BIG: u16 = 1009;
    /// The broker will not keep this socket now (`crate::limit::Admission`): too many from the
    /// page's network, or the broker is full. The page waits before it tries again.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// One message to pages, with its place in the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    pub v: u32,
    pub seq: u64,
    #[serde(flatten)]
    pub message: ServerMessage,
}

impl ServerFrame {
    pub fn new(seq: u64, message: ServerMessage) -> ServerFrame {
        ServerFrame {
            v: WIRE_VERSION,
            seq,
            message,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A text frame packs consecutive messages up to about this many bytes (a single larger message
/// goes alone).
pub const PACK_BYTES: usize = 64 * 1024;

/// One text frame to send: one message, or several packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// How many messages it carries.
    pub messages: u64,
    pub text: String,
}

/// The text frames that carry `frames` (each one message's JSON, [`ServerFrame::to_json`]) in
/// order: a lone message as itself, consecutive ones as a JSON array of at most about
/// [`PACK_BYTES`].
pub fn pack<S: AsRef<str>>(frames: &[S]) -> Vec<Pack> {
    let mut packs = Vec::new();
    let mut group: Vec<&str> = Vec::new();
    let mut bytes = 0;
    let close = |group: &mut Vec<&str>, packs: &mut Vec<Pack>| {
        let text = match group.len() {
            0 => return,
            1 => group[0].to_owned(),
            _ => format!("[{}]", group.join(",")),
        };
        packs.push(Pack {
            messages: group.len() as u64,
            text,
        });
        group.clear();
    };
    for frame in frames {
        let frame = frame.as_ref();
        if !group.is_empty() && bytes + frame.len() + 1 > PACK_BYTES {
            close(&mut group, &mut packs);
            bytes = 1;
        }
        bytes += frame.len() + 1;
        group.push(frame);
    }
    close(&mut group, &mut packs);
    packs
}

/// The most frames one stored log entry holds.
pub const ENTRY_FRAMES: usize = 1_000;
/// The most bytes of frames one stored log entry holds (a Durable Object's SQLite row may hold
/// 2 MB).
pub const ENTRY_BYTES: usize = 1024 * 1024;

/// Consecutive frames stored as one row of the broker's log: a publish is one row (or a few, if
/// it is large), not one row per message, so a catch-up batch of hundreds of messages costs a
/// shard one row written rather than hundreds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The frames' JSON, one a line (compact JSON holds no raw newline).
    pub frames: String,
}

/// The entries that store `frames` (sequence number and JSON, consecutive), in order: each at
/// most [`ENTRY_FRAMES`] frames and, unless one frame alone is larger, [`ENTRY_BYTES`].
pub fn entries(frames: &[(u64, String)]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut count = 0;
    for (seq, frame) in frames {
        match out.last_mut() {
            Some(entry)
                if count < ENTRY_FRAMES
                    && entry.frames.len() + 1 + frame.len() <= ENTRY_BYTES
                    && entry.last_seq + 1 == *seq =>
            {
                entry.frames.push('\n');
                entry.frames.push_str(frame);
                entry.last_seq = *seq;
                count += 1;
            }
            _ => {
                out.push(Entry {
                    first_seq: *seq,
                    last_seq: *seq,
                    frames: frame.clone(),
                });
                count = 1;
            }
        }
    }
    out
}

/// The frames of a stored entry starting at `first_seq` whose numbers are above `after` and at
/// least `oldest` (the log's capacity may end inside an entry).
pub fn entry_frames(first_seq: u64, frames: &str, after: u64, oldest: u64) -> Vec<String> {
    (first_seq..)
        .zip(frames.split('\n'))
        .filter(|(seq, _)| *seq > after && *seq >= oldest)
        .map(|(_, frame)| frame.to_owned())
        .collect()
}

/// The messages of one text frame from the broker, in order: one, or several [`pack`]ed.
pub fn unpack(text: &str) -> Result<Vec<ServerFrame>, serde_json::Error> {
    if text.trim_start().starts_with('[') {
        serde_json::from_str(text)
    } else {
        serde_json::from_str(text).map(|frame| vec![frame])
    }
}

/// Read by hand ([`ServerMessage`]'s `Deserialize` below), written by serde: the same JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// A status is new or changed (optimistic or from the network).
    StatusUpserted { status: StatusView },
    /// The network confirmed a status the page may already show as optimistic.
    StatusConfirmed { uri: String },
    /// A status was deleted.
    StatusDeleted { uri: String, author_did: String },
    /// An account's handle changed (or is no longer known).
    HandleChanged { did: String, handle: Option<String> },
    /// An account's display name changed (or is no longer known).
    ProfileChanged {
        did: String,
        display_name: Option<String>,
    },
    /// An account's statuses are hidden (inactive) or shown again.
    AccountChanged { did: String, active: bool },
    /// Counts as D1 holds them after a change, each with its version: a page keeps, per status,
    /// the count of the highest version it has seen (a count of 0: no longer shown).
    CountsChanged { counts: Vec<CountRow> },
    /// The page fell too far behind: reload it.
    Reload { reason: String },
}

/// Every field any [`ServerMessage`] has, read at once. serde's own reading of an internally
/// tagged enum first buffers the whole object in a generic form and reads it again, and that
/// machinery, made once per input type, was the largest part of `serde` in the workers' wasm
/// (docs/benchmarks.md, "Bundles"); this reads the object once, into this.
#[derive(Deserialize)]
struct AnyMessage {
    #[serde(rename = "type")]
    kind: String,
    status: Option<StatusView>,
    uri: Option<String>,
    author_did: Option<String>,
    did: Option<String>,
    handle: Option<String>,
    display_name: Option<String>,
    active: Option<bool>,
    counts: Option<Vec<CountRow>>,
    reason: Option<String>,
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let any = AnyMessage::deserialize(deserializer)?;
        let need = |value: Option<String>, name: &'static str| {
            value.ok_or_else(|| D::Error::missing_field(name))
        };
        Ok(match any.kind.as_str() {
            "status_upserted" => ServerMessage::StatusUpserted {
                status: any
                    .status
                    .ok_or_else(|| D::Error::missing_field("status"))?,
            },
            "status_confirmed" => ServerMessage::StatusConfirmed {
                uri: need(any.uri, "uri")?,
            },
            "status_deleted" => ServerMessage::StatusDeleted {
                uri: need(any.uri, "uri")?,
                author_did: need(any.author_did, "author_did")?,
            },
            "handle_changed" => ServerMessage::HandleChanged {
                did: need(any.did, "did")?,
                handle: any.handle,
            },
            "profile_changed" => ServerMessage::ProfileChanged {
                did: need(any.did, "did")?,
                display_name: any.display_name,
            },
            "account_changed" => ServerMessage::AccountChanged {
                did: need(any.did, "did")?,
                active: any
                    .active
                    .ok_or_else(|| D::Error::missing_field("active"))?,
            },
            "counts_changed" => ServerMessage::CountsChanged {
                counts: any
                    .counts
                    .ok_or_else(|| D::Error::missing_field("counts"))?,
            },
            "reload" => ServerMessage::Reload {
                reason: need(any.reason, "reason")?,
            },
            other => return Err(D::Error::unknown_variant(other, MESSAGE_TYPES)),
        })
    }
}

/// The `type`s a [`ServerMessage`] may have.
const MESSAGE_TYPES: &[&str] = &[
    "status_upserted",
    "status_confirmed",
    "status_deleted",
    "handle_changed",
    "profile_changed",
    "account_changed",
    "counts_changed",
    "reload",
];

/// `messages`, then the counts they changed (as one `counts_changed`), if any: what every writer
/// publishes.
pub fn with_counts(mut messages: Vec<ServerMessage>, counts: Vec<CountRow>) -> Vec<ServerMessage> {
    if !counts.is_empty() {
        messages.push(ServerMessage::CountsChanged { counts });
    }
    messages
}

/// What edge and listener send to the broker through its binding: changes to push, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub messages: Vec<ServerMessage>,
    /// When the publisher sent this (unix ms), so the broker can report publish-to-fan-out time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at_ms: Option<i64>,
    /// The publisher's id for this publish, the same on every try (`crate::outbox`): the broker
    /// sequences an id once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The most messages one publish may carry (the listener sends one publish per D1 batch).
pub const MAX_PUBLISH_MESSAGES: usize = 1_000;

/// The largest publish body the broker takes: the relay may have to keep one for a shard in a
/// single stored value, which the platform allows up to 2 MB (the listener's outbox, the
/// largest publisher, holds at most [`crate::outbox::MAX_BYTES`] in all).
pub const MAX_PUBLISH_BYTES: usize = 1_500_000;

/// A [`Publish`] as the broker reads it: each message kept as the JSON text it came as, borrowed
/// from the body. The broker only numbers messages, logs them and sends them on, so it never
/// builds them: reading a catch-up's publishes whole (hundreds of statuses each, in the relay and
/// again in every shard) and writing each out again was a tenth of the catch-up's time
/// (docs/benchmarks.md). Its publishers are this app's own workers, over service bindings; each
/// message is still checked to be an object of a known `type`.
#[derive(Debug, Deserialize)]
pub struct RawPublish<'a> {
    #[serde(borrow)]
    pub messages: Vec<&'a RawValue>,
    #[serde(default)]
    pub sent_at_ms: Option<i64>,
    #[serde(default)]
    pub id: Option<String>,
}

/// A message's `type`, read without the rest.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// Reads a publish's body as the broker takes it: at most [`MAX_PUBLISH_BYTES`] and
/// [`MAX_PUBLISH_MESSAGES`] (else a 413), a [`Publish`] in JSON whose messages are objects of a
/// known `type` (else a 400), with the refusal's status and words.
pub fn read_publish(body: &[u8]) -> Result<RawPublish<'_>, (u16, String)> {
    let body = std::str::from_utf8(body).map_err(|_| refused("not UTF-8"))?;
    read_publish_text(body)
}

/// [`read_publish`] of a body already known to be UTF-8 (the relay keeps the body as text).
pub fn read_publish_text(body: &str) -> Result<RawPublish<'_>, (u16, String)> {
    if body.len() > MAX_PUBLISH_BYTES {
        return Err((413, "publish body over 1.5 MB".to_owned()));
    }
    let publish: RawPublish = serde_json::from_str(body).map_err(|e| refused(&e.to_string()))?;
    if publish.messages.len() > MAX_PUBLISH_MESSAGES {
        let message = format!(
            "{} messages in one publish; at most {MAX_PUBLISH_MESSAGES}",
            publish.messages.len()
        );
        return Err((413, message));
    }
    for message in &publish.messages {
        let text = message.get();
        if !text.starts_with('{') {
            return Err(refused(&format!("a message is not an object: {text}")));
        }
        let Kind { kind } = serde_json::from_str(text).map_err(|e| refused(&e.to_string()))?;
        if !MESSAGE_TYPES.contains(&kind.as_ref()) {
            return Err(refused(&format!("unknown message type {kind:?}")));
        }
    }
    Ok(publish)
}

/// A publish refused as malformed, saying why.
fn refused(why: &str) -> (u16, String) {
    (400, format!("not a publish: {}", crate::bounded(why)))
}

/// The frame of a message numbered `seq`, from the message's JSON object as it came: the same
/// text as [`ServerFrame::to_json`] of it, written without reading the message.
pub fn frame_json(seq: u64, message: &RawValue) -> String {
    let members = message.get().strip_prefix('{').unwrap_or("}").trim_start();
    let comma = if members.starts_with('}') { "" } else { "," };
    format!("{{\"v\":{WIRE_VERSION},\"seq\":{seq}{comma}{members}")
}

/// What a page may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Ping,
}

/// What the broker does with a message from a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A ping (in a spelling the runtime's auto-response did not match): answer [`PONG`].
    Pong,
    /// Close the socket with this code and reason.
    Close { code: u16, reason: &'static str },
}

/// Judges a text message from a page: only a ping is allowed.
pub fn judge_text(text: &str) -> Verdict {
    if text.len() > MAX_CLIENT_MESSAGE_BYTES {
        return Verdict::Close {
            code: close::TOO_BIG,
            reason: "message too big: pages may only ping",
        };
    }
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Ping) => Verdict::Pong,
        Err(_) => Verdict::Close {
            code: close::POLICY_VIOLATION,
            reason: "pages may only ping",
        },
    }
}

/// Judges a binary message from a page: never allowed.
pub fn judge_binary(len: usize) -> Verdict {
    if len > MAX_CLIENT_MESSAGE_BYTES {
        Verdict::Close {
            code: close::TOO_BIG,
            reason: "message too big: pages may only ping",
        }
    } else {
        Verdict::Close {
            code: close::UNSUPPORTED_DATA,
            reason: "binary frames are not accepted",
        }
    }
}

/// The sequence numbers the broker's recent log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The last sequence number given out (the log's epoch base if none was yet).
    pub head: u64,
    /// The oldest message still in the log, if any.
    pub oldest: Option<u64>,
}

/// Where a (re)connecting page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing to catch up: live messages only.
    Live,
    /// Send the logged messages after this sequence number, then live ones.
    Replay { after: u64 },
    /// The gap cannot be filled: tell the page to reload.
    Reload { reason: &'static str },
}

/// Decides where a page that says it has seen everything up to `since` resumes.
pub fn resume(since: Option<u64>, log: LogBounds) -> Resume {
    let Some(since) = since else {
        return Resume::Live;
    };
    if since == log.head {
        return Resume::Live;
    }
    if since > log.head {
        // Sequence numbers start from the log's creation time (see `epoch_base`), so this is a page
        // from before the log was reset, not one from the future.
        return Resume::Reload {
            reason: "the live feed was reset",
        };
    }
    match log.oldest {
        Some(oldest) if oldest <= since + 1 => Resume::Replay { after: since },
        _ => Resume::Reload {
            reason: "too far behind the live feed",
        },
    }
}

/// The `head` of a new, empty log created at `now_ms`: sequence numbers start at the creation time
/// in microseconds, so a log that is ever recreated starts above every number the old one gave out
/// (unless it handed out more than a thousand per millisecond), and pages from before the reset are
/// told to reload instead of being sent the wrong messages.
pub fn epoch_base(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0).saturating_mul(1_000)
}

/// Reads `since` from a query string (`since=<seq>`; absent means live only). Anything else is an
/// error that says why.
pub fn parse_since(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "since" {
            continue;
        }
        if since.is_some() {
            return Err("since given twice".to_owned());
        }
        let parsed = value.parse::<u64>().map_err(|_| {
            format!(
                "since must be a sequence number, not {:?}",
                crate::bounded(value)
            )
        })?;
        since = Some(parsed);
    }
    Ok(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let view = StatusView {
            uri: "at://did:plc:a/xyz.statusphere.status/3k".into(),
            author_did: "did:plc:a".into(),
            handle: None,
            display_name: Some("A".into()),
            rkey: "3k".into(),
            status: "🦋".into(),
            created_at: "2026-12-05T00:00:00.000Z".into(),
            indexed_at: 5,
            origin: crate::status::Origin::Network,
            confirmed: true,
        };
        let all = vec![
            ServerMessage::StatusUpserted { status: view },
            ServerMessage::StatusConfirmed {
                uri: "at://u".into(),
            },
            ServerMessage::StatusDeleted {
                uri: "at://u".into(),
                author_did: "did:plc:a".into(),
            },
            ServerMessage::HandleChanged {
                did: "did:plc:a".into(),
                handle: None,
            },
            ServerMessage::HandleChanged {
                did: "did:plc:a".into(),
                handle: Some("a.test".into()),
            },
            ServerMessage::ProfileChanged {
                did: "did:plc:a".into(),
                display_name: Some("<b>".into()),
            },
            ServerMessage::AccountChanged {
                did: "did:plc:a".into(),
                active: false,
            },
            ServerMessage::CountsChanged {
                counts: vec![CountRow {
                    status: "🦋".into(),
                    count: 2,
                    version: 7,
                }],
            },
            ServerMessage::Reload {
                reason: "behind".into(),
            },
        ];
        for message in &all {
            let text = serde_json::to_string(message).unwrap();
            let back: ServerMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, message, "{text}");
        }
        // The broker reads a publish of them without building them, and frames each one as
        // the frame of the message would be written.
        let publish = Publish {
            messages: all.clone(),
            sent_at_ms: Some(5),
            id: Some("p-1".into()),
        };
        let body = serde_json::to_string(&publish).unwrap();
        let read = read_publish(body.as_bytes()).expect("a publish");
        assert_eq!(
            (read.sent_at_ms, read.id.as_deref()),
            (Some(5), Some("p-1"))
        );
        assert_eq!(read.messages.len(), all.len());
        for (seq, (raw, message)) in (40..).zip(read.messages.iter().zip(&all)) {
            let written = ServerFrame::new(seq, message.clone()).to_json();
            assert_eq!(frame_json(seq, raw), written);
        }
        // Whitespace a publisher may leave is kept inside, and the frame is still the message.
        let spaced: RawPublish =
            serde_json::from_str(r#"{"messages":[ { "type" : "reload", "reason" : "x" } ]}"#)
                .unwrap();
        let frame: ServerFrame = serde_json::from_str(&frame_json(3, spaced.messages[0])).unwrap();
        assert_eq!(
            frame,
            ServerFrame::new(3, ServerMessage::Reload { reason: "x".into() })
        );
        let frame = ServerFrame::new(
            9,
            ServerMessage::StatusConfirmed {
                uri: "at://u".into(),
            },
        );
        assert_eq!(unpack(&frame.to_json()).unwrap(), vec![frame]);
        // What serde's tagged reading refused, this refuses too, saying what is wrong.
        for (bad, says) in [
            (r#"{"type":"status_deleted","uri":"at://u"}"#, "author_did"),
            (r#"{"type":"account_changed","did":"d"}"#, "active"),
            (r#"{"type":"shout","uri":"at://u"}"#, "shout"),
            (r#"{"uri":"at://u"}"#, "type"),
            (r#"{"type":"reload","reason":5}"#, "invalid type"),
        ] {
            let error = serde_json::from_str::<ServerMessage>(bad).unwrap_err();
            assert!(error.to_string().contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_publish_the_broker_cannot_take_is_refused_saying_why() {
        for (body, status, says) in [
            (&b"{\"messages\":[1]}"[..], 400, "not an object"),
            (b"{\"messages\":[[\"reload\"]]}", 400, "not an object"),
            (b"{\"messages\":[{\"reason\":\"x\"}]}", 400, "type"),
            (b"{\"messages\":[{\"type\":\"shout\"}]}", 400, "shout"),
            (b"{\"messages\":[{\"type\":5}]}", 400, "invalid type"),
            (b"{\"messages\":[{\"type\":\"reload\"}", 400, "EOF"),
            (b"{\"messages\":[\xff]}", 400, "UTF-8"),
            (b"[]", 400, "not a publish"),
        ] {
            let (code, message) = read_publish(body).unwrap_err();
            assert_eq!(code, status, "{message}");
            assert!(message.contains(says), "{message}");
        }
        let many = format!(
            "{{\"messages\":[{}]}}",
            vec![r#"{"type":"reload","reason":"x"}"#; MAX_PUBLISH_MESSAGES + 1].join(",")
        );
        assert_eq!(read_publish(many.as_bytes()).unwrap_err().0, 413);
        let big = vec![b' '; MAX_PUBLISH_BYTES + 1];
        assert_eq!(read_publish(&big).unwrap_err().0, 413);
        let none = read_publish(b"{\"messages\":[]}").expect("an empty publish");
        assert!(none.messages.is_empty());
    }

    #[test]
    fn entries_hold_consecutive_frames_and_give_back_what_is_asked() {
        let frames: Vec<(u64, String)> = (10..15)
            .map(|seq| (seq, format!("{{\"seq\":{seq},\"t\":\"a\\nb\"}}")))
            .collect();
        let stored = entries(&frames);
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].first_seq, stored[0].last_seq), (10, 14));
        let all = entry_frames(10, &stored[0].frames, 0, 0);
        assert_eq!(
            all,
            frames.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>()
        );
        // After 11, and the capacity ending at 13.
        let some = entry_frames(10, &stored[0].frames, 11, 13);
        assert_eq!(some, vec![frames[3].1.clone(), frames[4].1.clone()]);
        // A gap in the numbers starts a new entry; so do the limits.
        let gapped = vec![(1, "a".to_owned()), (3, "b".to_owned())];
        assert_eq!(entries(&gapped).len(), 2);
        let many: Vec<(u64, String)> = (0..ENTRY_FRAMES as u64 + 1)
            .map(|s| (s, "x".into()))
            .collect();
        let split = entries(&many);
        assert_eq!(split.len(), 2);
        assert_eq!((split[1].first_seq, split[1].last_seq), (1000, 1000));
        let big = "y".repeat(ENTRY_BYTES / 2 - 1);
        let large: Vec<(u64, String)> = (0..3).map(|s| (s, big.clone())).collect();
        assert_eq!(entries(&large).len(), 2);
        assert!(entries(&[]).is_empty());
    }
    use crate::Origin;

    fn confirmed(seq: u64, uri_len: usize) -> ServerFrame {
        ServerFrame::new(
            seq,
            ServerMessage::StatusConfirmed {
                uri: "u".repeat(uri_len),
            },
        )
    }

    #[test]
    fn a_lone_message_goes_as_itself_and_several_as_one_array() {
        let one = [confirmed(1, 10).to_json()];
        let packs = pack(&one);
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].text, one[0], "a single message is not wrapped");
        assert_eq!(unpack(&packs[0].text).unwrap(), [confirmed(1, 10)]);

        let three: Vec<ServerFrame> = (1..=3).map(|seq| confirmed(seq, 10)).collect();
        let packs = pack(&three.iter().map(ServerFrame::to_json).collect::<Vec<_>>());
        assert_eq!(packs.len(), 1, "one publish, one send");
        assert_eq!(packs[0].messages, 3);
        assert!(packs[0].text.starts_with("[{") && packs[0].text.ends_with("}]"));
        assert_eq!(unpack(&packs[0].text).unwrap(), three, "in order, whole");
        assert!(pack::<String>(&[]).is_empty());
        assert!(unpack("not json").is_err());
        assert!(unpack("[1]").is_err(), "an array of something else");
    }

    #[test]
    fn packs_are_bounded_and_keep_the_order() {
        // About 10 KiB each: six fit in a pack, the seventh starts the next.
        let frames: Vec<ServerFrame> = (1..=20).map(|seq| confirmed(seq, 10_000)).collect();
        let packs = pack(&frames.iter().map(ServerFrame::to_json).collect::<Vec<_>>());
        assert!(
            packs.iter().all(|p| p.text.len() <= PACK_BYTES),
            "each within its bound"
        );
        let sizes: Vec<u64> = packs.iter().map(|p| p.messages).collect();
        assert_eq!(sizes, [6, 6, 6, 2], "20 messages of 10 KiB in packs of six");
        let back: Vec<ServerFrame> = packs
            .iter()
            .flat_map(|p| unpack(&p.text).unwrap())
            .collect();
        assert_eq!(back, frames);

        // One message larger than a pack goes alone, between packs.
        let big = confirmed(2, PACK_BYTES * 2);
        let mixed = [confirmed(1, 10), big.clone(), confirmed(3, 10)];
        let packs = pack(&mixed.iter().map(ServerFrame::to_json).collect::<Vec<_>>());
        assert_eq!(packs.len(), 3);
        assert_eq!(unpack(&packs[1].text).unwrap(), [big]);
    }

    #[test]
    fn frames_are_flat_versioned_json() {
        let frame = ServerFrame::new(
            7,
            ServerMessage::StatusConfirmed {
                uri: "at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b".into(),
            },
        );
        assert_eq!(
            frame.to_json(),
            r#"{"v":1,"seq":7,"type":"status_confirmed","uri":"at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b"}"#
        );
        let back: ServerFrame = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn upserts_carry_the_view() {
        let status = StatusView {
            uri: "at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b".into(),
            author_did: "did:plc:a".into(),
            handle: Some("alice.test".into()),
            display_name: None,
            rkey: "3l3qo2vutsw2b".into(),
            status: "😎".into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            indexed_at: 1,
            origin: Origin::Edge,
            confirmed: false,
        };
        let json = ServerFrame::new(1, ServerMessage::StatusUpserted { status }).to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], "status_upserted");
        assert_eq!(value["status"]["handle"], "alice.test");
        assert_eq!(value["status"]["origin"], "edge");
    }

    #[test]
    fn the_ping_constants_are_the_messages() {
        assert_eq!(
            serde_json::from_str::<ClientMessage>(PING).unwrap(),
            ClientMessage::Ping
        );
        assert_eq!(judge_text(PING), Verdict::Pong);
        assert_eq!(judge_text(r#"{ "type" : "ping" }"#), Verdict::Pong);
        let pong: serde_json::Value = serde_json::from_str(PONG).unwrap();
        assert_eq!(pong["type"], "pong");
    }

    #[test]
    fn anything_but_a_ping_closes() {
        let code = |v: Verdict| match v {
            Verdict::Close { code, .. } => code,
            Verdict::Pong => 0,
        };
        assert_eq!(code(judge_text("hello")), close::POLICY_VIOLATION);
        assert_eq!(
            code(judge_text(r#"{"type":"publish"}"#)),
            close::POLICY_VIOLATION
        );
        assert_eq!(code(judge_text("")), close::POLICY_VIOLATION);
        let padded = format!("{PING}{}", " ".repeat(MAX_CLIENT_MESSAGE_BYTES));
        assert_eq!(code(judge_text(&padded)), close::TOO_BIG);
        assert_eq!(code(judge_binary(4)), close::UNSUPPORTED_DATA);
        assert_eq!(code(judge_binary(1 << 20)), close::TOO_BIG);
    }

    #[test]
    fn resume_fills_gaps_or_asks_for_a_reload() {
        let log = LogBounds {
            head: 1_000_010,
            oldest: Some(1_000_005),
        };
        assert_eq!(resume(None, log), Resume::Live);
        assert_eq!(resume(Some(1_000_010), log), Resume::Live);
        assert_eq!(
            resume(Some(1_000_004), log),
            Resume::Replay { after: 1_000_004 }
        );
        assert_eq!(
            resume(Some(1_000_009), log),
            Resume::Replay { after: 1_000_009 }
        );
        assert!(matches!(
            resume(Some(1_000_003), log),
            Resume::Reload { .. }
        ));
        assert!(matches!(resume(Some(0), log), Resume::Reload { .. }));
        assert!(matches!(
            resume(Some(1_000_011), log),
            Resume::Reload { .. }
        ));
        assert!(matches!(resume(Some(u64::MAX), log), Resume::Reload { .. }));
        // An empty log can only serve a page that is already at its head.
        let empty = LogBounds {
            head: 5_000,
            oldest: None,
        };
        assert_eq!(resume(Some(5_000), empty), Resume::Live);
        assert!(matches!(resume(Some(4_999), empty), Resume::Reload { .. }));
    }

    #[test]
    fn a_recreated_log_starts_above_the_old_one() {
        let old = epoch_base(1_790_000_000_000);
        let old_head = old + 500_000;
        let new = epoch_base(1_790_000_001_000);
        assert!(new > old_head);
        let log = LogBounds {
            head: new,
            oldest: None,
        };
        assert!(matches!(resume(Some(old_head), log), Resume::Reload { .. }));
        assert_eq!(epoch_base(-5), 0);
        // Still exact in a JavaScript number in the year 2200.
        assert!(epoch_base(7_258_118_400_000) < (1 << 53));
    }

    #[test]
    fn since_is_a_number_or_absent() {
        assert_eq!(parse_since(None), Ok(None));
        assert_eq!(parse_since(Some("")), Ok(None));
        assert_eq!(parse_since(Some("x=1")), Ok(None));
        assert_eq!(parse_since(Some("since=42")), Ok(Some(42)));
        assert_eq!(parse_since(Some("a=b&since=7&c")), Ok(Some(7)));
        assert!(parse_since(Some("since=-1")).is_err());
        assert!(parse_since(Some("since=")).is_err());
        assert!(parse_since(Some("since=1&since=2")).is_err());
        let long = format!("since={}", "9".repeat(10_000));
        let error = parse_since(Some(&long)).unwrap_err();
        assert!(error.len() < 400, "{error}");
    }

    #[test]
    fn publishes_carry_an_optional_send_time() {
        let plain: Publish = serde_json::from_str(r#"{"messages":[]}"#).unwrap();
        assert_eq!(plain.sent_at_ms, None);
        let json = serde_json::to_string(&Publish {
            messages: vec![],
            sent_at_ms: Some(5),
            id: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"messages":[],"sent_at_ms":5}"#);
    }

    #[test]
    fn pages_may_only_ping() {
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"publish"}"#).is_err());
    }
}
