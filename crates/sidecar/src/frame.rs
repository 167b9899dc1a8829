//! One Jetstream event as the sidecar stores and serves it: the exact JSON text plus the few fields
//! the server filters on (DID, commit collection) and its position in time (`time_us`).
//!
//! Frames come from recordings and generators that may be hostile on purpose, so nothing here
//! assumes the text is a well-formed event: a frame that is not a JSON object is served verbatim,
//! and a frame whose DID or collection cannot be read passes every collection filter (as Jetstream
//! treats events without a collection).

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A stored, servable event.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The window's key: unique and strictly increasing across the window.
    pub time_us: i64,
    pub did: Option<Box<str>>,
    /// The commit's collection; `None` for identity and account events (and unreadable frames).
    pub collection: Option<Box<str>>,
    /// The JSON text sent to subscribers (cheap to clone: reference counted).
    pub text: Utf8Bytes,
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
        let is_commit = field("kind")
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .is_some_and(|kind| kind == "commit");
        let collection = if is_commit {
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
            collection,
        }
    }

    /// Gives the frame its `time_us`; under [`TimeMode::Now`] the JSON says it too (when the frame
    /// has a `time_us` field to rewrite), under [`TimeMode::Keep`] the JSON is served as recorded.
    pub fn place(self, time_us: i64, mode: TimeMode) -> Frame {
        let text = match self.object {
            Some(mut object) if mode == TimeMode::Now => {
                if object.set("time_us", time_us) {
                    object.render()
                } else {
                    self.raw
                }
            }
            _ => self.raw,
        };
        Frame {
            time_us,
            did: self.did,
            collection: self.collection,
            text: Utf8Bytes::from(text),
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
        let frame = Incoming::parse(raw.to_owned()).place(42, TimeMode::Now);
        assert_eq!(
            frame.text.as_str(),
            r#"{"did":"did:plc:a","time_us":42,"kind":"commit","commit":{"collection":"x.y.z","record":{"time_us":1}}}"#
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
            let frame = Incoming::parse(raw.to_owned()).place(7, TimeMode::Now);
            assert_eq!(frame.text.as_str(), raw);
            assert_eq!(frame.collection, None);
        }
    }

    #[test]
    fn identity_events_have_no_collection() {
        let raw =
            r#"{"did":"did:plc:a","time_us":5,"kind":"identity","identity":{"did":"did:plc:a"}}"#;
        let incoming = Incoming::parse(raw.to_owned());
        assert_eq!(incoming.recorded_time_us, Some(5));
        let frame = incoming.place(6, TimeMode::Keep);
        assert_eq!(frame.collection, None);
        assert_eq!(frame.text.as_str(), raw);
    }
}
