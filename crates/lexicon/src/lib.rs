//! The `xyz.statusphere.status` lexicon: its JSON document, the Rust type of the record, and
//! validation that follows the document to the letter.
//!
//! - `status`: a string of 1 to 32 UTF-8 bytes (`minLength`/`maxLength` count bytes in atproto)
//!   and at most one grapheme cluster (`maxGraphemes`): a flag, a family, a skin-tone variant or a
//!   keycap is one grapheme; `"ab"` is two.
//! - `createdAt`: an atproto `datetime` (the RFC 3339 / ISO 8601 intersection, timezone required).
//! - the record key is a TID.
//!
//! Any status valid under the lexicon is accepted, whether or not it is in the app's emoji set:
//! the network may hold both, and the lexicon is the contract (see docs/data-model.md).

mod datetime;
mod status;
pub mod syntax;

pub use datetime::CreatedAt;
pub use status::{validate_rkey, StatusRecord, StatusText};

/// The collection (NSID) of status records.
pub const STATUS_NSID: &str = "xyz.statusphere.status";
/// The lexicon document, as published.
pub const STATUS_LEXICON_JSON: &str = include_str!("../lexicons/xyz/statusphere/status.json");
/// `minLength` of `status`, in UTF-8 bytes.
pub const STATUS_MIN_BYTES: usize = 1;
/// `maxLength` of `status`, in UTF-8 bytes.
pub const STATUS_MAX_BYTES: usize = 32;
/// `maxGraphemes` of `status`.
pub const STATUS_MAX_GRAPHEMES: usize = 1;
/// The record key type.
pub const STATUS_RECORD_KEY: &str = "tid";

/// Why a record, or one of its fields, is not valid under the lexicon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("status is empty")]
    StatusEmpty,
    #[error("status is {bytes} bytes long; at most {STATUS_MAX_BYTES} are allowed")]
    StatusTooLong { bytes: usize },
    #[error("status is {graphemes} graphemes long; at most {STATUS_MAX_GRAPHEMES} is allowed")]
    StatusTooManyGraphemes { graphemes: usize },
    #[error("createdAt is not an atproto datetime: {0}")]
    InvalidDatetime(String),
    #[error("record key is not a TID: {0}")]
    InvalidRecordKey(String),
    #[error("record does not match the lexicon: {0}")]
    Record(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shortens untrusted text for an error message or a log field (logs must stay bounded): at most
/// 80 bytes of it.
pub fn bounded(text: &str) -> String {
    bounded_to(text, 80)
}

/// [`bounded`], keeping at most `max` bytes (cut at a character boundary) and saying how long the
/// whole was.
pub fn bounded_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!(
        "{}… ({} bytes)",
        &text[..text.floor_char_boundary(max)],
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::{bounded, bounded_to};

    #[test]
    fn bounded_text_keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(bounded("short"), "short");
        assert_eq!(bounded_to("abcdef", 6), "abcdef");
        assert_eq!(bounded_to("abcdef", 4), "abcd… (6 bytes)");
        // "é" is two bytes: a cut inside it moves back to the boundary.
        assert_eq!(bounded_to("aéb", 2), "a… (4 bytes)");
        assert_eq!(
            bounded(&"x".repeat(100)),
            format!("{}… (100 bytes)", "x".repeat(80))
        );
    }
}
