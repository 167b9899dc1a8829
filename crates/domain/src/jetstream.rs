//! Jetstream frames, on both of today's wires, one JSON object per text frame.
//!
//! The legacy `/subscribe` wire (Jetstream v1's JSON; a v2 instance adds `cursor`, its own
//! sequence number):
//!
//! ```json
//! {"did":"did:plc:…","time_us":1725911162329308,"cursor":12345,"kind":"commit",
//!  "commit":{"rev":"3l3qo2vutsw2b","operation":"create","collection":"xyz.statusphere.status",
//!            "rkey":"3l3qo2vuowo2b","record":{…},"cid":"bafyrei…"}}
//! {"did":"did:plc:…","time_us":…,"kind":"identity","identity":{"did":"…","handle":"…","seq":1,"time":"…"}}
//! {"did":"did:plc:…","time_us":…,"kind":"account","account":{"active":false,"did":"…","seq":2,"time":"…","status":"deactivated"}}
//! ```
//!
//! The v2 wire (`/xrpc/network.bsky.jetstream.subscribeEvents`, atproto's JSON subscription
//! framing): a `message` whose payload's `$type` names the kind, the commit's fields at the
//! payload's top level, `seq` for `cursor` and an RFC 3339 `time` (six fractional digits) for
//! `time_us`; an `#info` payload (no seq, no time) and an `error` envelope are [`Notice`]s:
//!
//! ```json
//! {"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#commit","seq":12345,
//!   "did":"did:plc:…","time":"2024-09-09T19:46:02.329308Z","rev":"…","operation":"create",
//!   "collection":"xyz.statusphere.status","rkey":"…","cid":"…","record":{…}}}
//! {"$type":"error","error":"ConsumerTooSlow","message":"…"}
//! ```
//!
//! Both parse into the same [`Event`], so a stream means the same whichever wire carried it
//! (docs/listener.md). Lenient where the protocol allows (unknown fields, kinds and payload
//! types, an absent `record`/`cid` on deletes, an unknown account status), strict where it
//! matters (the DID, the time, the repo revision, the collection, the record key, and the record
//! itself when it is a status). A bad frame is an [`Error`](crate::Error) value, never a panic.

use lexicon::syntax::{Did, Handle, Nsid, RecordKey, Tid};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::status::{at_uri, Origin, Status};
use crate::{bounded, Error, Result};

/// Jetstream frames larger than this are refused before parsing (real status frames are < 1 KB;
/// Jetstream's own default `maxMessageSizeBytes` is unlimited, ours is not).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The longest DID atproto allows.
const MAX_DID_BYTES: usize = 2048;

/// How far ahead of our clock a remote timestamp (an event's `time_us`, a revision's TID) may be
/// and still be believed: clocks drift, but a frame from next week is a lie. A later time would
/// pin the cursor past real events and sort the status above everything else.
pub const MAX_CLOCK_SKEW_US: i64 = 5 * 60 * 1_000_000;

/// One Jetstream event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The repository (account) the event is about; checked DID syntax.
    pub did: Did,
    /// When Jetstream received the event: unix microseconds, the cursor that works on every
    /// instance (v1 `time_us`, v2 `time`).
    pub time_us: i64,
    /// The instance's own sequence number (v1 `cursor`, v2 `seq`), when the server sends one:
    /// an exact resumption point, on that instance only.
    pub seq: Option<u64>,
    pub body: EventBody,
}

/// One frame: an event, or a notice from the server about the stream itself.
#[derive(Debug, Clone)]
pub enum Frame {
    Event(Event),
    Notice(Notice),
}

/// What a v2 server says about the stream rather than the network: an `#info` (e.g.
/// `OutdatedCursor`: the cursor was older than it keeps, and it starts at its oldest), an
/// `error` (the last frame before it closes: `ConsumerTooSlow`, `InternalError`), or a frame type
/// this code does not know (skipped, as the protocol asks). It carries no event and no cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: NoticeLevel,
    /// The info's or error's name, bounded.
    pub name: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    Info,
    Error,
    /// A frame or payload type this code does not know.
    Unknown,
}

/// The NSID of the v2 stream: its payload types are `<this>#commit`, `#identity`, …
pub const EVENTS_NSID: &str = "network.bsky.jetstream.subscribeEvents";

#[derive(Debug, Clone)]
pub enum EventBody {
    Commit(Commit),
    Identity(Identity),
    Account(Account),
    /// A kind this code does not know; tolerated and skipped.
    Unknown {
        kind: String,
    },
}

#[derive(Debug, Clone)]
pub struct Commit {
    /// The repository revision: orders the writes of one repository.
    pub rev: Tid,
    pub operation: Operation,
    pub collection: Nsid,
    /// Never `.` or `..` (they are record keys by syntax, but not as a path segment).
    pub rkey: RecordKey,
    /// The record's JSON, on create and update.
    pub record: Option<Box<RawValue>>,
    /// The record's CID, on create and update.
    pub cid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Identity {
    /// The handle the event claims; `None` when absent or not a valid handle. A claim only:
    /// whoever runs the account's PDS (or a Jetstream) can write any handle here, so it is never
    /// shown (see [`Event::change`]). Lowercased.
    pub handle: Option<Handle>,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub active: bool,
    pub status: Option<AccountStatus>,
}

/// Why an account is not active (atproto `#account` status values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountStatus {
    Takendown,
    Suspended,
    Deleted,
    Deactivated,
    Desynchronized,
    Throttled,
    Other(String),
}

impl AccountStatus {
    fn parse(text: &str) -> AccountStatus {
        match text {
            "takendown" => AccountStatus::Takendown,
            "suspended" => AccountStatus::Suspended,
            "deleted" => AccountStatus::Deleted,
            "deactivated" => AccountStatus::Deactivated,
            "desynchronized" => AccountStatus::Desynchronized,
            "throttled" => AccountStatus::Throttled,
            other => AccountStatus::Other(bounded(other)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AccountStatus::Takendown => "takendown",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Deleted => "deleted",
            AccountStatus::Deactivated => "deactivated",
            AccountStatus::Desynchronized => "desynchronized",
            AccountStatus::Throttled => "throttled",
            AccountStatus::Other(other) => other,
        }
    }
}

// The wire shapes, deserialized once (both wires in one pass: every field is optional here);
// `Frame::parse` validates them into the types above.

#[derive(Deserialize)]
struct RawFrame {
    /// v2 only: `message` or `error`.
    #[serde(rename = "$type", default)]
    envelope: Option<String>,
    #[serde(default)]
    payload: Option<RawPayload>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    // v1.
    #[serde(default)]
    did: Option<String>,
    #[serde(default)]
    time_us: Option<i64>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default)]
    commit: Option<RawCommit>,
    #[serde(default)]
    identity: Option<RawIdentity>,
    #[serde(default)]
    account: Option<RawAccount>,
}

/// A v2 message's payload: the kind in `$type`, the commit's fields at the top level.
#[derive(Deserialize)]
struct RawPayload {
    #[serde(rename = "$type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    did: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    rev: Option<String>,
    #[serde(default)]
    operation: Option<Operation>,
    #[serde(default)]
    collection: Option<String>,
    #[serde(default)]
    rkey: Option<String>,
    #[serde(default)]
    record: Option<Box<RawValue>>,
    #[serde(default)]
    cid: Option<String>,
    #[serde(default)]
    identity: Option<RawIdentity>,
    #[serde(default)]
    account: Option<RawAccount>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawCommit {
    rev: String,
    operation: Operation,
    collection: String,
    rkey: String,
    #[serde(default)]
    record: Option<Box<RawValue>>,
    #[serde(default)]
    cid: Option<String>,
}

#[derive(Deserialize)]
struct RawIdentity {
    #[serde(default)]
    handle: Option<String>,
}

#[derive(Deserialize)]
struct RawAccount {
    active: bool,
    #[serde(default)]
    status: Option<String>,
}

impl Frame {
    /// Parses and validates one frame of either wire.
    pub fn parse(frame: &str) -> Result<Frame> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(Error::Invalid {
                field: "frame",
                value: format!("{} bytes", frame.len()),
            });
        }
        // serde would read `[]` as a struct whose fields are all optional.
        if !frame.trim_start().starts_with('{') {
            return Err(Error::Json("not a JSON object".into()));
        }
        let raw: RawFrame =
            serde_json::from_str(frame).map_err(|e| Error::Json(bounded(&e.to_string())))?;
        match raw.envelope.as_deref() {
            None => Event::from_v1(raw).map(Frame::Event),
            Some("message") => {
                let payload = raw.payload.ok_or(Error::Missing("payload"))?;
                Event::from_v2(payload)
            }
            Some("error") => Ok(Frame::Notice(Notice {
                level: NoticeLevel::Error,
                name: bounded(raw.error.as_deref().unwrap_or("")),
                message: raw.message.as_deref().map(bounded),
            })),
            Some(other) => Ok(Frame::Notice(Notice {
                level: NoticeLevel::Unknown,
                name: bounded(other),
                message: None,
            })),
        }
    }
}

/// A checked DID.
fn did_of(text: Option<String>) -> Result<Did> {
    let text = text.ok_or(Error::Missing("did"))?;
    if text.len() > MAX_DID_BYTES {
        return Err(Error::invalid("did", &text));
    }
    text.parse().map_err(|_| Error::invalid("did", &text))
}

/// A v2 `time`: RFC 3339 (Jetstream writes six fractional digits, so no microsecond is lost),
/// as unix microseconds after the epoch.
fn time_of(text: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_micros())
        .filter(|us| *us > 0)
        .ok_or_else(|| Error::invalid("time", text))
}

fn identity_of(raw: Option<RawIdentity>) -> Result<EventBody> {
    let identity = raw.ok_or(Error::Missing("identity"))?;
    // An invalid handle is no handle: the account shows as its DID.
    let handle = identity
        .handle
        .and_then(|h| Handle::new(h.to_ascii_lowercase()).ok());
    Ok(EventBody::Identity(Identity { handle }))
}

fn account_of(raw: Option<RawAccount>) -> Result<EventBody> {
    let account = raw.ok_or(Error::Missing("account"))?;
    Ok(EventBody::Account(Account {
        active: account.active,
        status: account.status.as_deref().map(AccountStatus::parse),
    }))
}

impl Event {
    /// Parses and validates one frame that must be an event (of either wire).
    pub fn parse(frame: &str) -> Result<Event> {
        match Frame::parse(frame)? {
            Frame::Event(event) => Ok(event),
            Frame::Notice(notice) => Err(Error::invalid("frame", &notice.name)),
        }
    }

    fn from_v1(raw: RawFrame) -> Result<Event> {
        let did = did_of(raw.did)?;
        let time_us = raw.time_us.ok_or(Error::Missing("time_us"))?;
        if time_us <= 0 {
            return Err(Error::invalid("time_us", &time_us.to_string()));
        }
        let kind = raw.kind.ok_or(Error::Missing("kind"))?;
        let body = match kind.as_str() {
            "commit" => EventBody::Commit(Commit::validate(
                raw.commit.ok_or(Error::Missing("commit"))?,
            )?),
            "identity" => identity_of(raw.identity)?,
            "account" => account_of(raw.account)?,
            other => EventBody::Unknown {
                kind: bounded(other),
            },
        };
        Ok(Event {
            did,
            time_us,
            seq: raw.cursor,
            body,
        })
    }

    /// A v2 payload: an event, or an `#info` notice (which has neither DID nor time).
    fn from_v2(raw: RawPayload) -> Result<Frame> {
        let kind = raw
            .kind
            .strip_prefix(EVENTS_NSID)
            .and_then(|k| k.strip_prefix('#'));
        if kind == Some("info") {
            return Ok(Frame::Notice(Notice {
                level: NoticeLevel::Info,
                name: bounded(raw.name.as_deref().unwrap_or("")),
                message: raw.message.as_deref().map(bounded),
            }));
        }
        // A type this code does not know is skipped; one that has an event's fields still
        // counts as an event (its time and seq are the stream's).
        if kind.is_none() && (raw.did.is_none() || raw.time.is_none()) {
            return Ok(Frame::Notice(Notice {
                level: NoticeLevel::Unknown,
                name: bounded(&raw.kind),
                message: None,
            }));
        }
        let did = did_of(raw.did)?;
        let time_us = time_of(raw.time.as_deref().ok_or(Error::Missing("time"))?)?;
        let body = match kind {
            Some("commit") => EventBody::Commit(Commit::validate(RawCommit {
                rev: raw.rev.ok_or(Error::Missing("rev"))?,
                operation: raw.operation.ok_or(Error::Missing("operation"))?,
                collection: raw.collection.ok_or(Error::Missing("collection"))?,
                rkey: raw.rkey.ok_or(Error::Missing("rkey"))?,
                record: raw.record,
                cid: raw.cid,
            })?),
            Some("identity") => identity_of(raw.identity)?,
            Some("account") => account_of(raw.account)?,
            Some(other) => EventBody::Unknown {
                kind: bounded(other),
            },
            None => EventBody::Unknown {
                kind: bounded(&raw.kind),
            },
        };
        Ok(Frame::Event(Event {
            did,
            time_us,
            seq: raw.seq,
            body,
        }))
    }

    /// The event as of our clock (`now_us`, unix µs): refused when its `time_us` is further ahead
    /// than [`MAX_CLOCK_SKEW_US`]; a time ahead by less is brought back to `now_us`, so that it
    /// can neither move the cursor past the present nor sort above what arrives next.
    pub fn as_of(mut self, now_us: i64) -> Result<Event> {
        if self.time_us > now_us.saturating_add(MAX_CLOCK_SKEW_US) {
            return Err(Error::Future {
                field: "time_us",
                value: self.time_us.to_string(),
            });
        }
        self.time_us = self.time_us.min(now_us);
        Ok(self)
    }

    /// What this event means for the app: `Ok(None)` for events that do not concern it (another
    /// collection, an unknown kind); an error when it concerns it but is invalid.
    pub fn change(&self) -> Result<Option<Change>> {
        let indexed_at = self.time_us / 1000;
        match &self.body {
            EventBody::Commit(commit) if commit.collection.as_str() == lexicon::STATUS_NSID => {
                let rkey = commit.rkey.as_str();
                lexicon::validate_rkey(rkey)?;
                let (did, rev) = (self.did.as_str(), commit.rev.as_str());
                let uri = at_uri(did, rkey);
                match commit.operation {
                    Operation::Delete => Ok(Some(Change::Delete(Tombstone {
                        uri,
                        author_did: did.to_owned(),
                        rkey: rkey.to_owned(),
                        rev: rev.to_owned(),
                        indexed_at,
                    }))),
                    Operation::Create | Operation::Update => {
                        let json = commit.record.as_ref().ok_or(Error::Missing("record"))?;
                        let cid = commit.cid.clone().ok_or(Error::Missing("cid"))?;
                        let record = lexicon::StatusRecord::from_json(json.get())?;
                        Ok(Some(Change::Upsert(Status {
                            uri,
                            author_did: did.to_owned(),
                            rkey: rkey.to_owned(),
                            status: record.status.as_str().to_owned(),
                            created_at: record.created_at.as_str().to_owned(),
                            indexed_at,
                            rev: rev.to_owned(),
                            cid: Some(cid),
                            origin: Origin::Network,
                            confirmed: true,
                        })))
                    }
                }
            }
            EventBody::Commit(_) | EventBody::Unknown { .. } => Ok(None),
            // An identity event says the account's identity changed, not what it is: the stored
            // handle is dropped (the page shows the DID) and the account is queued for the
            // background lookup, which believes a handle only once it resolves to the DID and the
            // DID document names it back. The handle the event claims is never recorded.
            EventBody::Identity(_) => Ok(Some(Change::Handle(HandleUpdate {
                did: self.did.to_string(),
                handle: None,
                time_us: self.time_us,
            }))),
            EventBody::Account(account) => Ok(Some(Change::Account(AccountUpdate {
                did: self.did.to_string(),
                active: account.active,
                status: account.status.as_ref().map(|s| s.as_str().to_owned()),
                time_us: self.time_us,
            }))),
        }
    }
}

impl Commit {
    fn validate(raw: RawCommit) -> Result<Commit> {
        let rev = Tid::new(raw.rev.clone()).map_err(|_| Error::invalid("rev", &raw.rev))?;
        let collection = Nsid::new(raw.collection.clone())
            .map_err(|_| Error::invalid("collection", &raw.collection))?;
        let rkey = match RecordKey::new(raw.rkey.clone()) {
            Ok(rkey) if !matches!(rkey.as_str(), "." | "..") => rkey,
            _ => return Err(Error::invalid("rkey", &raw.rkey)),
        };
        let (record, cid) = match raw.operation {
            // Deletes carry neither; ignore them if a server sends them anyway.
            Operation::Delete => (None, None),
            Operation::Create | Operation::Update => (raw.record, raw.cid),
        };
        Ok(Commit {
            rev,
            operation: raw.operation,
            collection,
            rkey,
            record,
            cid,
        })
    }
}

/// A change to what the app knows, derived from one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A status was created or updated.
    Upsert(Status),
    /// A status was deleted.
    Delete(Tombstone),
    /// An account's handle is now this (or none: unknown until verified).
    Handle(HandleUpdate),
    /// An account became active or inactive.
    Account(AccountUpdate),
}

/// A deleted status: kept as a tombstone so that a replayed, older create cannot revive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub uri: String,
    pub author_did: String,
    pub rkey: String,
    pub rev: String,
    pub indexed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleUpdate {
    pub did: String,
    pub handle: Option<String>,
    /// Orders identity events: an older one never overwrites a newer one.
    pub time_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUpdate {
    pub did: String,
    pub active: bool,
    pub status: Option<String>,
    /// Orders account events: an older one never overwrites a newer one.
    pub time_us: i64,
}

impl AccountUpdate {
    /// A deleted account's statuses are purged, not just hidden.
    pub fn purges(&self) -> bool {
        !self.active && self.status.as_deref() == Some("deleted")
    }
}
