//! A subscriber's options, parsed and validated the way Jetstream does it: from the `/subscribe`
//! query string, and again from `options_update` messages on a live connection; or from the v2
//! stream's query (`kinds`, `dids`, `collections`: [`SubscribeRequest::from_events_query`]).

use std::collections::HashSet;

use lexicon::syntax::{Did, Nsid};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::window::{Cursor, Start};

pub const MAX_WANTED_COLLECTIONS: usize = 100;
pub const MAX_WANTED_DIDS: usize = 10_000;

/// What one subscriber wants to receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact collections; with `prefixes`, empty for both means every collection.
    collections: HashSet<String>,
    /// From `prefix.*`: kept with the trailing dot, so `app.bsky.*` matches `app.bsky.feed.post`.
    prefixes: Vec<String>,
    dids: HashSet<String>,
    /// v2's `kinds`: empty means every kind. Frames whose kind cannot be read pass.
    kinds: HashSet<String>,
    /// Frames larger than this are skipped for this subscriber; 0 means no limit.
    pub max_message_size_bytes: u32,
}

/// The kinds v2's `kinds` may name.
const KINDS: [&str; 4] = ["commit", "identity", "account", "sync"];

/// Which endpoint a subscriber came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `/subscribe`.
    Legacy,
    /// `/xrpc/network.bsky.jetstream.subscribeEvents`.
    Events,
}

impl Filter {
    pub fn new(
        collections: &[String],
        dids: &[String],
        max_message_size_bytes: u32,
    ) -> Result<Filter> {
        let mut filter = Filter {
            max_message_size_bytes,
            ..Filter::default()
        };
        for wanted in collections {
            if let Some(prefix) = wanted.strip_suffix(".*") {
                let well_formed = !prefix.is_empty()
                    && prefix.split('.').all(|seg| {
                        !seg.is_empty()
                            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !well_formed {
                    return Err(Error::Options(format!(
                        "invalid collection prefix: {wanted}"
                    )));
                }
                filter.prefixes.push(format!("{prefix}."));
            } else {
                Nsid::new(wanted.clone())
                    .map_err(|_| Error::Options(format!("invalid collection: {wanted}")))?;
                filter.collections.insert(wanted.clone());
            }
        }
        if filter.collections.len() + filter.prefixes.len() > MAX_WANTED_COLLECTIONS {
            return Err(Error::Options("too many wanted collections".into()));
        }
        for did in dids {
            Did::new(did.clone()).map_err(|_| Error::Options(format!("invalid DID: {did}")))?;
            filter.dids.insert(did.clone());
        }
        if filter.dids.len() > MAX_WANTED_DIDS {
            return Err(Error::Options("too many wanted DIDs".into()));
        }
        Ok(filter)
    }

    /// Whether this subscriber receives the frame, `len` bytes long on its wire. Events without
    /// a collection (identity, account) pass the collection filter; the DID filter applies to
    /// every event.
    pub fn wants(&self, frame: &Frame, len: usize) -> bool {
        if !self.kinds.is_empty() {
            if let Some(kind) = frame.kind.as_deref() {
                if !self.kinds.contains(kind) {
                    return false;
                }
            }
        }
        if let Some(collection) = frame.collection.as_deref() {
            let all = self.collections.is_empty() && self.prefixes.is_empty();
            if !all
                && !self.collections.contains(collection)
                && !self
                    .prefixes
                    .iter()
                    .any(|p| collection.starts_with(p.as_str()))
            {
                return false;
            }
        }
        if !self.dids.is_empty() {
            match frame.did.as_deref() {
                Some(did) if self.dids.contains(did) => {}
                _ => return false,
            }
        }
        self.max_message_size_bytes == 0 || len <= self.max_message_size_bytes as usize
    }
}

/// Jetstream reads a bad or negative size as "no limit".
fn parse_max_size(value: &str) -> u32 {
    value
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .map(|v| v.min(u32::MAX as i64) as u32)
        .unwrap_or(0)
}

/// Everything a subscription's query string says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub wire: Wire,
    pub filter: Filter,
    pub cursor: Cursor,
    pub require_hello: bool,
    /// Where it starts, when that was decided before the upgrade (v2, which refuses a seq
    /// older than the window there); otherwise once the options are known.
    pub start: Option<Start>,
}

/// A `cursor` value: a non-negative integer (Jetstream answers 400 otherwise).
fn parse_cursor(value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| Error::Options(format!("invalid cursor: {value}")))
}

impl SubscribeRequest {
    pub fn from_query(query: &str) -> Result<SubscribeRequest> {
        let mut collections = Vec::new();
        let mut dids = Vec::new();
        let mut cursor = None;
        let mut max_size = 0;
        let mut require_hello = false;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "wantedCollections" => collections.push(value.into_owned()),
                "wantedDids" => dids.push(value.into_owned()),
                "cursor" if !value.is_empty() => cursor = Some(parse_cursor(&value)?),
                "maxMessageSizeBytes" => max_size = parse_max_size(&value),
                "requireHello" => require_hello = value == "true",
                "compress" if value == "true" => {
                    return Err(Error::Options(
                        "compression is not supported by this local Jetstream; connect with compress=false".into(),
                    ))
                }
                _ => {}
            }
        }
        // Cheap guards before parsing thousands of DIDs.
        if collections.len() > MAX_WANTED_COLLECTIONS {
            return Err(Error::Options("too many wanted collections".into()));
        }
        if dids.len() > MAX_WANTED_DIDS {
            return Err(Error::Options("too many wanted DIDs".into()));
        }
        Ok(SubscribeRequest {
            wire: Wire::Legacy,
            filter: Filter::new(&collections, &dids, max_size)?,
            cursor: Cursor::of(cursor),
            require_hello,
            start: None,
        })
    }

    /// The v2 stream's query: `kinds` (at most 4 of commit, identity, account, sync), `dids`,
    /// `collections` (commits only), `cursor`, `maxMessageSizeBytes` (strict: a bad or repeated
    /// value is refused). The legacy parameters are refused by name rather than ignored.
    pub fn from_events_query(query: &str) -> Result<SubscribeRequest> {
        let mut collections = Vec::new();
        let mut dids = Vec::new();
        let mut kinds = HashSet::new();
        let mut kinds_given = 0;
        let mut cursor = None;
        let mut max_size = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "kinds" => {
                    if !KINDS.contains(&&*value) {
                        return Err(Error::Options(format!(
                            "unknown kind {value}: commit, identity, account or sync"
                        )));
                    }
                    kinds_given += 1;
                    kinds.insert(value.into_owned());
                }
                "dids" => dids.push(value.into_owned()),
                "collections" => collections.push(value.into_owned()),
                "cursor" => cursor = Some(parse_cursor(&value)?),
                "maxMessageSizeBytes" => {
                    let parsed = value.parse::<u32>().ok().filter(|_| max_size.is_none());
                    max_size = Some(parsed.ok_or_else(|| {
                        Error::Options(format!("invalid maxMessageSizeBytes: {value}"))
                    })?);
                }
                "zstdDictionary" => {
                    return Err(Error::Options(
                        "compression is not supported by this local Jetstream; connect without zstdDictionary".into(),
                    ))
                }
                "wantedCollections" | "wantedDids" | "requireHello" => {
                    return Err(Error::Options(format!(
                        "{key} is a /subscribe parameter; this endpoint takes collections, dids and kinds"
                    )))
                }
                "compress" if value == "true" => {
                    return Err(Error::Options(
                        "compress is a /subscribe parameter; this endpoint has no such compression".into(),
                    ))
                }
                _ => {}
            }
        }
        if kinds_given > KINDS.len() {
            return Err(Error::Options("too many kinds".into()));
        }
        if !collections.is_empty() && !kinds.is_empty() && !kinds.contains("commit") {
            return Err(Error::Options(
                "collections filter commits, but kinds excludes commit".into(),
            ));
        }
        if collections.len() > MAX_WANTED_COLLECTIONS {
            return Err(Error::Options("too many collections".into()));
        }
        if dids.len() > MAX_WANTED_DIDS {
            return Err(Error::Options("too many dids".into()));
        }
        let mut filter = Filter::new(&collections, &dids, max_size.unwrap_or(0))?;
        filter.kinds = kinds;
        Ok(SubscribeRequest {
            wire: Wire::Events,
            filter,
            cursor: Cursor::of(cursor),
            require_hello: false,
            start: None,
        })
    }
}

/// A text message from a subscriber.
#[derive(Debug, Deserialize)]
struct SubscriberMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OptionsUpdate {
    #[serde(default)]
    wanted_collections: Vec<String>,
    #[serde(default)]
    wanted_dids: Vec<String>,
    #[serde(default)]
    max_message_size_bytes: i64,
}

/// Parses a subscriber's text message: `Ok(Some(filter))` for a valid `options_update`, `Ok(None)`
/// for a message type Jetstream ignores, `Err` for anything Jetstream answers by closing.
pub fn parse_subscriber_message(text: &str) -> Result<Option<Filter>> {
    let message: SubscriberMessage = serde_json::from_str(text).map_err(|e| {
        Error::Options(format!(
            "failed to unmarshal subscriber sourced message: {e}"
        ))
    })?;
    if message.kind != "options_update" {
        return Ok(None);
    }
    let payload = message
        .payload
        .as_deref()
        .map(|p| p.get())
        .unwrap_or("null");
    let update: OptionsUpdate = serde_json::from_str(payload).map_err(|e| {
        Error::Options(format!(
            "failed to unmarshal subscriber options update: {e}"
        ))
    })?;
    let max_size = update.max_message_size_bytes.clamp(0, u32::MAX as i64) as u32;
    Filter::new(&update.wanted_collections, &update.wanted_dids, max_size)
        .map(Some)
        .map_err(|e| Error::Options(format!("failed to parse subscriber options: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Incoming, TimeMode};

    fn frame(collection: Option<&str>, did: &str) -> Frame {
        let raw = match collection {
            Some(c) => format!(
                r#"{{"did":"{did}","time_us":1,"kind":"commit","commit":{{"collection":"{c}"}}}}"#
            ),
            None => format!(r#"{{"did":"{did}","time_us":1,"kind":"account","account":{{}}}}"#),
        };
        Incoming::parse(raw).place(1, 1, TimeMode::Keep)
    }

    fn wants(filter: &Filter, frame: &Frame) -> bool {
        filter.wants(frame, frame.text.len())
    }

    #[test]
    fn collections_prefixes_and_dids() {
        let f = Filter::new(
            &["xyz.statusphere.status".into(), "app.bsky.*".into()],
            &[],
            0,
        )
        .unwrap();
        assert!(wants(
            &f,
            &frame(Some("xyz.statusphere.status"), "did:plc:a")
        ));
        assert!(wants(&f, &frame(Some("app.bsky.feed.post"), "did:plc:a")));
        assert!(!wants(&f, &frame(Some("app.bskyx.feed.post"), "did:plc:a")));
        assert!(!wants(&f, &frame(Some("com.example.thing"), "did:plc:a")));
        assert!(
            wants(&f, &frame(None, "did:plc:a")),
            "account events ignore wantedCollections"
        );
        let f = Filter::new(&[], &["did:plc:a".into()], 0).unwrap();
        assert!(wants(&f, &frame(Some("any.thing.here"), "did:plc:a")));
        assert!(
            !wants(&f, &frame(None, "did:plc:b")),
            "wantedDids applies to every kind"
        );
    }

    #[test]
    fn query_validation() {
        let ok = SubscribeRequest::from_query(
            "wantedCollections=a.b.c&cursor=5&requireHello=true&maxMessageSizeBytes=-3",
        )
        .unwrap();
        assert_eq!(ok.cursor, Cursor::Seq(5));
        assert_eq!(ok.wire, Wire::Legacy);
        assert!(ok.require_hello);
        assert_eq!(ok.filter.max_message_size_bytes, 0);
        assert_eq!(
            SubscribeRequest::from_query("cursor=1732406400000000")
                .unwrap()
                .cursor,
            Cursor::Time(1732406400000000),
        );
        assert_eq!(
            SubscribeRequest::from_query("").unwrap().cursor,
            Cursor::Live
        );
        for bad in [
            "cursor=abc",
            "cursor=-5",
            "wantedCollections=not%20an%20nsid",
            "wantedDids=alice",
            "wantedCollections=.*",
            "compress=true",
        ] {
            assert!(SubscribeRequest::from_query(bad).is_err(), "{bad}");
        }
        let many: String = (0..101)
            .map(|i| format!("wantedCollections=a.b.c{i}&"))
            .collect();
        assert!(SubscribeRequest::from_query(&many).is_err());
    }

    #[test]
    fn v2_queries() {
        let ok = SubscribeRequest::from_events_query(
            "collections=xyz.statusphere.status&kinds=commit&kinds=account&cursor=12&maxMessageSizeBytes=0",
        )
        .unwrap();
        assert_eq!((ok.wire, ok.cursor), (Wire::Events, Cursor::Seq(12)));
        let f = &ok.filter;
        assert!(wants(
            f,
            &frame(Some("xyz.statusphere.status"), "did:plc:a")
        ));
        assert!(!wants(f, &frame(Some("app.bsky.feed.post"), "did:plc:a")));
        assert!(wants(f, &frame(None, "did:plc:a")), "account events pass");
        let identity = Incoming::parse(
            r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{}}"#.into(),
        )
        .place(1, 1, TimeMode::Keep);
        assert!(!wants(f, &identity), "kinds leaves identity out");
        for bad in [
            "kinds=post",
            "kinds=account&collections=a.b.c",
            "wantedCollections=a.b.c",
            "wantedDids=did:plc:a",
            "requireHello=true",
            "compress=true",
            "zstdDictionary=1",
            "maxMessageSizeBytes=-1",
            "maxMessageSizeBytes=1&maxMessageSizeBytes=2",
            "cursor=-1",
            "dids=alice",
        ] {
            assert!(SubscribeRequest::from_events_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_update_messages() {
        let update = r#"{"type":"options_update","payload":{"wantedCollections":["a.b.c"],"wantedDids":[],"maxMessageSizeBytes":100}}"#;
        let filter = parse_subscriber_message(update).unwrap().unwrap();
        assert_eq!(filter.max_message_size_bytes, 100);
        assert_eq!(
            parse_subscriber_message(r#"{"type":"something_else"}"#).unwrap(),
            None
        );
        assert!(parse_subscriber_message("not json").is_err());
        assert!(parse_subscriber_message(
            r#"{"type":"options_update","payload":{"wantedDids":["x"]}}"#
        )
        .is_err());
        assert!(parse_subscriber_message(r#"{"type":"options_update","payload":5}"#).is_err());
    }
}
