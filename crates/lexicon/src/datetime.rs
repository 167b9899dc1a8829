//! The atproto `datetime` string format: RFC 3339 restricted to what ISO 8601 also accepts.
//! Uppercase `T` and `Z`, seconds required, fractional seconds optional, a timezone required
//! (`Z` or `±hh:mm`, never `-00:00`), no whitespace.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{bounded, Error, Result};

/// A record's `createdAt`: validated, and kept exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAt {
    text: String,
    unix_millis: i64,
}

impl CreatedAt {
    /// Parses and validates an atproto datetime.
    pub fn parse(text: &str) -> Result<CreatedAt> {
        let invalid = || Error::InvalidDatetime(bounded(text));
        if !well_formed(text) {
            return Err(invalid());
        }
        let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| invalid())?;
        Ok(CreatedAt {
            text: text.to_owned(),
            unix_millis: parsed.timestamp_millis(),
        })
    }

    /// The datetime as written in the record.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.unix_millis
    }
}

impl fmt::Display for CreatedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CreatedAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CreatedAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CreatedAt::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The shape check: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)`, not `-00:00`. Ranges
/// (month 13, hour 25) are left to the RFC 3339 parser.
fn well_formed(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 64 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        b"Z" => true,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let all_digits = [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit());
            all_digits && !(*sign == b'-' && rest[1..] == *b"00:00")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_atproto_datetimes() {
        for ok in [
            "2024-09-09T19:46:02.102Z",
            "2024-09-09T19:46:02Z",
            "2024-09-09T19:46:02.123456789Z",
            "2024-09-09T19:46:02+00:00",
            "2024-09-09T19:46:02.1+05:30",
            "2024-09-09T19:46:02-07:00",
            "2024-09-09T19:46:02-10:00",
            "1985-04-12T23:20:50.123Z",
        ] {
            let parsed = CreatedAt::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(parsed.unix_millis() > 0, "{ok}");
        }
        assert_eq!(
            CreatedAt::parse("2024-09-09T19:46:02.102Z")
                .unwrap()
                .as_str(),
            "2024-09-09T19:46:02.102Z",
            "kept as written"
        );
    }

    #[test]
    fn refuses_what_atproto_refuses() {
        for bad in [
            "",
            "2024-09-09",
            "2024-09-09T19:46Z",
            "2024-09-09t19:46:02Z",
            "2024-09-09T19:46:02z",
            "2024-09-09 19:46:02Z",
            "2024-09-09T19:46:02",
            "2024-09-09T19:46:02.Z",
            "2024-09-09T19:46:02-00:00",
            "2024-09-09T19:46:02+0000",
            "2024-13-09T19:46:02Z",
            "2024-02-30T19:46:02Z",
            "2024-09-09T25:46:02Z",
            " 2024-09-09T19:46:02Z",
            "2024-09-09T19:46:02Z ",
            "２０２４-09-09T19:46:02Z",
            "not a date at all, and rather long too, well past sixty-four bytes of text",
        ] {
            assert!(CreatedAt::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
