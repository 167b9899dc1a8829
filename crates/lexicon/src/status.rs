//! The status record and its `status` field.

use std::fmt;

use crate::syntax::Tid;
use serde::{Deserialize, Deserializer, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::{bounded, CreatedAt, Error, Result};
use crate::{STATUS_MAX_BYTES, STATUS_MAX_GRAPHEMES, STATUS_MIN_BYTES};

/// An `xyz.statusphere.status` record, serialized exactly as atproto expects it:
/// `{"$type":"xyz.statusphere.status","status":"…","createdAt":"…"}`. Deserializing requires the
/// `$type`, validates every field and ignores unknown ones (lexicons may grow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "$type",
    rename = "xyz.statusphere.status",
    rename_all = "camelCase",
    try_from = "TypedRecord"
)]
pub struct StatusRecord {
    pub status: StatusText,
    pub created_at: CreatedAt,
}

/// The wire form, with `$type` as a field: serde's struct tags do not insist on the tag when
/// deserializing, and a record without its `$type` is not a valid atproto record.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedRecord {
    #[serde(rename = "$type")]
    kind: String,
    status: StatusText,
    created_at: CreatedAt,
}

impl TryFrom<TypedRecord> for StatusRecord {
    type Error = Error;

    fn try_from(record: TypedRecord) -> Result<StatusRecord> {
        if record.kind != crate::STATUS_NSID {
            return Err(Error::Record(format!("$type is {}", bounded(&record.kind))));
        }
        Ok(StatusRecord::new(record.status, record.created_at))
    }
}

impl StatusRecord {
    pub fn new(status: StatusText, created_at: CreatedAt) -> StatusRecord {
        StatusRecord { status, created_at }
    }

    /// Parses and validates a record from its JSON.
    pub fn from_json(json: &str) -> Result<StatusRecord> {
        serde_json::from_str(json).map_err(|e| Error::Record(bounded(&e.to_string())))
    }

    /// The record's JSON, as written to a repository.
    pub fn to_json(&self) -> String {
        // A struct of two strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A `status` value: 1 to 32 UTF-8 bytes and exactly one grapheme cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct StatusText(String);

impl StatusText {
    /// Validates `text` against the lexicon's constraints on `status`.
    pub fn new(text: impl Into<String>) -> Result<StatusText> {
        let text = text.into();
        let bytes = text.len();
        if bytes < STATUS_MIN_BYTES {
            return Err(Error::StatusEmpty);
        }
        if bytes > STATUS_MAX_BYTES {
            return Err(Error::StatusTooLong { bytes });
        }
        let graphemes = text.graphemes(true).count();
        if graphemes > STATUS_MAX_GRAPHEMES {
            return Err(Error::StatusTooManyGraphemes { graphemes });
        }
        Ok(StatusText(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StatusText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StatusText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        StatusText::new(text).map_err(serde::de::Error::custom)
    }
}

/// Checks that a status record's key is a TID, as the lexicon's `key: "tid"` requires.
pub fn validate_rkey(rkey: &str) -> Result<Tid> {
    Tid::new(rkey.to_owned()).map_err(|_| Error::InvalidRecordKey(bounded(rkey)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grapheme_is_one_status() {
        for ok in [
            "👍",
            "a",
            "👨‍👩‍👧‍👦", // family: a ZWJ sequence, 25 bytes
            "🇫🇷", // flag: two regional indicators
            "👍🏽", // skin-tone modifier
            "1️⃣", // keycap: digit, VS16, combining keycap
            "🏳️‍🌈", // rainbow flag: VS16 + ZWJ
            "👩‍💻",
            "é", // e + combining acute
        ] {
            assert!(StatusText::new(ok).is_ok(), "{ok:?} refused");
        }
    }

    #[test]
    fn refuses_what_the_lexicon_refuses() {
        assert_eq!(StatusText::new(""), Err(Error::StatusEmpty));
        assert_eq!(
            StatusText::new("ab"),
            Err(Error::StatusTooManyGraphemes { graphemes: 2 })
        );
        assert_eq!(
            StatusText::new("👍👍"),
            Err(Error::StatusTooManyGraphemes { graphemes: 2 })
        );
        assert_eq!(
            StatusText::new("🇫🇷🇩🇪"),
            Err(Error::StatusTooManyGraphemes { graphemes: 2 })
        );
        // One grapheme, but 33 bytes: a combining-mark pile is still one cluster.
        let heavy = format!("e{}", "\u{301}".repeat(16));
        assert_eq!(heavy.len(), 33);
        assert_eq!(heavy.graphemes(true).count(), 1);
        assert_eq!(
            StatusText::new(heavy),
            Err(Error::StatusTooLong { bytes: 33 })
        );
        // A real emoji ZWJ sequence over 32 bytes: kiss, two people, two skin tones.
        let kiss = "🧑🏻‍❤️‍💋‍🧑🏿";
        assert_eq!(kiss.graphemes(true).count(), 1);
        assert!(kiss.len() > 32);
        assert!(matches!(
            StatusText::new(kiss),
            Err(Error::StatusTooLong { .. })
        ));
    }

    #[test]
    fn serializes_as_atproto_expects() {
        let record = StatusRecord::new(
            StatusText::new("😎").unwrap(),
            CreatedAt::parse("2024-09-09T19:46:02.102Z").unwrap(),
        );
        assert_eq!(
            record.to_json(),
            r#"{"$type":"xyz.statusphere.status","status":"😎","createdAt":"2024-09-09T19:46:02.102Z"}"#
        );
        assert_eq!(StatusRecord::from_json(&record.to_json()).unwrap(), record);
    }

    #[test]
    fn parses_strictly_where_it_matters() {
        let ok = r#"{"$type":"xyz.statusphere.status","status":"😎","createdAt":"2024-09-09T19:46:02Z","future":1}"#;
        assert!(
            StatusRecord::from_json(ok).is_ok(),
            "unknown fields are ignored"
        );
        for bad in [
            r#"{"status":"😎","createdAt":"2024-09-09T19:46:02Z"}"#,
            r#"{"$type":"app.bsky.feed.post","status":"😎","createdAt":"2024-09-09T19:46:02Z"}"#,
            r#"{"$type":"xyz.statusphere.status","createdAt":"2024-09-09T19:46:02Z"}"#,
            r#"{"$type":"xyz.statusphere.status","status":"😎"}"#,
            r#"{"$type":"xyz.statusphere.status","status":7,"createdAt":"2024-09-09T19:46:02Z"}"#,
            r#"{"$type":"xyz.statusphere.status","status":"ab","createdAt":"2024-09-09T19:46:02Z"}"#,
            r#"{"$type":"xyz.statusphere.status","status":"😎","createdAt":"yesterday"}"#,
            r#"["xyz.statusphere.status"]"#,
            "",
        ] {
            assert!(StatusRecord::from_json(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn record_keys_are_tids() {
        assert!(validate_rkey("3l3qo2vutsw2b").is_ok());
        for bad in [
            "self",
            "",
            "3l3qo2vutsw2",
            "3L3QO2VUTSW2B",
            "zzzzzzzzzzzzz",
            "../etc/passwd",
        ] {
            assert!(validate_rkey(bad).is_err(), "{bad:?} accepted");
        }
    }
}
