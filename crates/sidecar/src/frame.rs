//! One Jetstream event as the sidecar stores and serves it: the exact JSON text plus the few fields
//! the server filters on (DID, kind, commit collection), its position in time (`time_us`) and its
//! sequence number on this instance (`seq`), in the legacy wire's JSON (`cursor` says the seq),
//! and, made the first time a v2 subscriber asks, in the v2 wire's framing ([`Frame::v2_text`]).
//!
//! Frames come from recordings and generators that may be hostile on purpose, so nothing here
//! assumes the text is a well-formed event: a frame that is not a JSON object is served verbatim,
//! and a frame whose DID or collection cannot be read passes every collection filter (as Jetstream
//! treats events without a collection).

use std::fmt;
use std::sync::OnceLock;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A stored, servable event.
#[derive(Debug)]
pub struct Frame {
    /// The window's key: unique and strictly increasing across the window.
    pub time_us: i64,
    /// This instance's number for the event: strictly increasing by one.
    pub seq: u64,
    pub did: Option<Box<str>>,
    /// `kind`: `commit`, `identity`, `account`, … (`None` for unreadable frames).
    pub kind: Option<Box<str>>,
    /// The commit's collection; `None` for identity and account events (and unreadable frames).
    pub collection: Option<Box<str>>,
    /// The legacy JSON text sent to subscribers (cheap to clone: reference counted).
    pub text: Utf8Bytes,
    /// The v2 text, made once when first asked for.
    v2: OnceLock<Utf8Bytes>,
}

/// The NSID whose `#commit`, `#identity`, … name v2 payloads (the listener's parser's own).
pub use domain::jetstream::EVENTS_NSID;

impl Frame {
    /// The frame on the v2 wire: `{"$type":"message","payload":{"$type":"<nsid>#<kind>","seq":…,
    /// "did":…,"time":"<RFC 3339, µs>",…}}`, a commit's fields at the payload's top level, an
    /// identity's or account's object under its kind. Values are carried over unparsed, so a
    /// hostile frame stays exactly as hostile (a `time_us` that is not a number becomes a `time`
    /// that is not a date). A frame that is not an object with a `kind` is served verbatim.
    pub fn v2_text(&self) -> &Utf8Bytes {
        self.v2
            .get_or_init(|| match v2_render(self.text.as_str(), self.seq) {
                Some(text) => Utf8Bytes::from(text),
                None => self.text.clone(),
            })
    }
}

/// The RFC 3339 UTC form Jetstream v2 writes (six fractional digits: no microsecond lost).
pub fn rfc3339_us(time_us: i64) -> Option<String> {
    let time = chrono::DateTime::from_timestamp_micros(time_us)?;
    let text = time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    // Years past 9999 (or before 0) are not RFC 3339.
    (text.len() == 27).then_some(text)
}

fn v2_render(legacy: &str, seq: u64) -> Option<String> {
    let object = serde_json::from_str::<Object>(legacy).ok()?;
    let kind: String = serde_json::from_str(object.get("kind")?.get()).ok()?;
    let raw = |text: String| RawValue::from_string(text).ok();
    let mut payload = Object(Vec::new());
    let type_name = serde_json::to_string(&format!("{EVENTS_NSID}#{kind}")).ok()?;
    payload.0.push(("$type".into(), raw(type_name)?));
    payload.0.push(("seq".into(), raw(seq.to_string())?));
    if let Some(did) = object.get("did") {
        payload.0.push(("did".into(), raw(did.get().to_owned())?));
    }
    if let Some(time_us) = object.get("time_us") {
        let time = serde_json::from_str::<i64>(time_us.get())
            .ok()
            .and_then(rfc3339_us)
            .and_then(|t| serde_json::to_string(&t).ok())
            .unwrap_or_else(|| time_us.get().to_owned());
        payload.0.push(("time".into(), raw(time)?));
    }
    match object.get(&kind) {
        // A commit's fields move up; anything else stays under its kind.
        Some(body) if kind == "commit" => match serde_json::from_str::<Object>(body.get()) {
            Ok(commit) => payload.0.extend(commit.0),
            Err(_) => payload.0.push((kind.clone(), raw(body.get().to_owned())?)),
        },
        Some(body) => payload.0.push((kind.clone(), raw(body.get().to_owned())?)),
        None => {}
    }
    let envelope = Object(vec![
        ("$type".into(), raw("\"message\"".into())?),
        ("payload".into(), raw(payload.render())?),
    ]);
    Some(envelope.render())
}

/// How served events get their `time_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMode {
    /// Like Jetstream: the moment the sidecar emits the event (unix µs, strictly increasing).
    Now,
    /// Keep the recorded `time_us` (made strictly increasing where a recording is not).
    Keep,
}

/// A frame parsed as far as the server needs, before it is given its place in time.
#[derive(Debug)]
pub struct Incoming {
    object: Option<Object>,
    raw: String,
    /// The `time_us` written in the frame, if any.
    pub recorded_time_us: Option<i64>,
    did: Option<Box<str>>,
    kind: Option<Box<str>>,
    collection: Option<Box<str>>,
}

impl Incoming {
    pub fn parse(raw: String) -> Incoming {
        let object = serde_json::from_str::<Object>(&raw).ok();
        let field = |name: &str| object.as_ref().and_then(|o| o.get(name));
        let recorded_time_us =
            field("time_us").and_then(|v| serde_json::from_str::<i64>(v.get()).ok());
        let did = field("did")
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .map(String::into_boxed_str);
        let kind = field("kind")
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .map(String::into_boxed_str);
        let collection = if kind.as_deref() == Some("commit") {
            #[derive(Deserialize)]
            struct CommitHead {
                collection: String,
            }
            field("commit")
                .and_then(|v| serde_json::from_str::<CommitHead>(v.get()).ok())
                .map(|c| c.collection.into_boxed_str())
        } else {
            None
        };
        Incoming {
            object,
            raw,
            recorded_time_us,
            did,
            kind,
            collection,
        }
    }

    /// Gives the frame its `time_us` and `seq`. The JSON says the seq as `cursor` (after
    /// `time_us`, where Jetstream puts it, replacing any a recording carried from another
    /// instance); under [`TimeMode::Now`] it says the time too (when the frame has a `time_us`
    /// to rewrite), under [`TimeMode::Keep`] the recorded time stays. A frame that is not an
    /// object is served verbatim.
    pub fn place(self, time_us: i64, seq: u64, mode: TimeMode) -> Frame {
        let text = match self.object {
            Some(mut object) => {
                if mode == TimeMode::Now {
                    object.set("time_us", time_us);
                }
                object.set_after("cursor", seq as i64, "time_us");
                object.render()
            }
            None => self.raw,
        };
        Frame {
            time_us,
            seq,
            did: self.did,
            kind: self.kind,
            collection: self.collection,
            text: Utf8Bytes::from(text),
            v2: OnceLock::new(),
        }
    }
}

/// A JSON object whose members keep their order and whose values stay unparsed, so that
/// re-serialising a frame changes only what we mean to change.
#[derive(Debug)]
struct Object(Vec<(String, Box<RawValue>)>);

impl Object {
    fn get(&self, name: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
    }

    fn set(&mut self, name: &str, value: i64) -> bool {
        let Some(slot) = self.0.iter_mut().find(|(k, _)| k == name) else {
            return false;
        };
        match RawValue::from_string(value.to_string()) {
            Ok(raw) => {
                slot.1 = raw;
                true
            }
            Err(_) => false,
        }
    }

    /// Sets `name`, or inserts it after the member `after` (at the end if there is none).
    fn set_after(&mut self, name: &str, value: i64, after: &str) {
        if self.set(name, value) {
            return;
        }
        let Ok(raw) = RawValue::from_string(value.to_string()) else {
            return;
        };
        let at = self
            .0
            .iter()
            .position(|(k, _)| k == after)
            .map_or(self.0.len(), |i| i + 1);
        self.0.insert(at, (name.to_owned(), raw));
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(
            self.0
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 2,
        );
        out.push('{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Serialising a string cannot fail.
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
        out
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((key, value));
                }
                Ok(Object(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_time_us_and_keeps_member_order() {
        let raw = r#"{"did":"did:plc:a","time_us":5,"kind":"commit","commit":{"collection":"x.y.z","record":{"time_us":1}}}"#;
        let frame = Incoming::parse(raw.to_owned()).place(42, 7, TimeMode::Now);
        assert_eq!(
            frame.text.as_str(),
            r#"{"did":"did:plc:a","time_us":42,"cursor":7,"kind":"commit","commit":{"collection":"x.y.z","record":{"time_us":1}}}"#
        );
        assert_eq!(frame.did.as_deref(), Some("did:plc:a"));
        assert_eq!(frame.collection.as_deref(), Some("x.y.z"));
    }

    #[test]
    fn malformed_frames_are_served_verbatim_and_unclassified() {
        for raw in [
            "{\"did\":",
            "[1,2]",
            "\"text\"",
            r#"{"kind":"commit","commit":{"collection":5}}"#,
        ] {
            let frame = Incoming::parse(raw.to_owned()).place(7, 1, TimeMode::Now);
            if raw.starts_with('{') && raw.ends_with('}') {
                assert!(frame.text.as_str().ends_with(r#","cursor":1}"#), "{raw}");
            } else {
                assert_eq!(frame.text.as_str(), raw);
                assert_eq!(frame.v2_text().as_str(), raw);
            }
            assert_eq!(frame.collection, None);
        }
    }

    #[test]
    fn identity_events_have_no_collection() {
        let raw =
            r#"{"did":"did:plc:a","time_us":5,"kind":"identity","identity":{"did":"did:plc:a"}}"#;
        let incoming = Incoming::parse(raw.to_owned());
        assert_eq!(incoming.recorded_time_us, Some(5));
        let frame = incoming.place(6, 3, TimeMode::Keep);
        assert_eq!(frame.collection, None);
        assert_eq!(
            frame.text.as_str(),
            r#"{"did":"did:plc:a","time_us":5,"cursor":3,"kind":"identity","identity":{"did":"did:plc:a"}}"#,
            "the recorded time kept, this instance's seq added"
        );
    }

    #[test]
    fn a_recorded_cursor_is_replaced_by_this_instances() {
        let raw = r#"{"did":"did:plc:a","time_us":5,"cursor":999,"kind":"account","account":{}}"#;
        let frame = Incoming::parse(raw.to_owned()).place(5, 4, TimeMode::Keep);
        assert_eq!(
            frame.text.as_str(),
            r#"{"did":"did:plc:a","time_us":5,"cursor":4,"kind":"account","account":{}}"#
        );
    }

    #[test]
    fn the_v2_wire_frames_the_same_event() {
        let raw = r#"{"did":"did:plc:a","time_us":1732406400000001,"kind":"commit","commit":{"rev":"3lbkn5xkq2k2a","operation":"create","collection":"x.y.z","rkey":"k","record":{"a":1},"cid":"bafy"}}"#;
        let frame = Incoming::parse(raw.to_owned()).place(1, 12, TimeMode::Keep);
        assert_eq!(
            frame.v2_text().as_str(),
            r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#commit","seq":12,"did":"did:plc:a","time":"2024-11-24T00:00:00.000001Z","rev":"3lbkn5xkq2k2a","operation":"create","collection":"x.y.z","rkey":"k","record":{"a":1},"cid":"bafy"}}"#
        );
        let identity = r#"{"did":"did:plc:a","time_us":"soon","kind":"identity","identity":{"handle":"a.test"}}"#;
        let frame = Incoming::parse(identity.to_owned()).place(2, 13, TimeMode::Keep);
        assert_eq!(
            frame.v2_text().as_str(),
            r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#identity","seq":13,"did":"did:plc:a","time":"soon","identity":{"handle":"a.test"}}}"#,
            "a hostile time stays hostile"
        );
        assert_eq!(
            rfc3339_us(0).as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(rfc3339_us(i64::MAX), None);
    }
}
