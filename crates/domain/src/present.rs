//! Pure presentation helpers: dates and ISO 8601 times, and the app's emoji set.

/// The statuses the picker offers. Any single grapheme valid under the lexicon is accepted and
/// shown; these are the ones a person can pick with one click.
pub const EMOJI: &[&str] = &[
    "👍",
    "👎",
    "💙",
    "🥹",
    "😧",
    "😤",
    "🙃",
    "😉",
    "😎",
    "🤓",
    "🤨",
    "🥳",
    "😭",
    "🤯",
    "🫡",
    "💀",
    "✊",
    "🤘",
    "👀",
    "🧠",
    "👩‍💻",
    "🧑‍💻",
    "🥷",
    "🧌",
    "🦋",
    "🚀",
];

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// "Nov 3, 2026" (UTC).
pub fn date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY));
    format!("{} {day}, {year}", MONTHS[(month - 1) as usize])
}

/// The display name in an `app.bsky.actor.profile` record (the `value` of `getRecord`'s answer):
/// trimmed, without control characters, at most 64 characters (the lexicon's grapheme cap; a
/// page stays tidy whatever a profile says); `None` when there is none.
pub fn display_name(record: &serde_json::Value) -> Option<String> {
    let name = record.get("displayName")?.as_str()?.trim();
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    let name = name.trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// `2026-11-24T02:52:24.340Z`: an atproto datetime (UTC, milliseconds) for unix ms `ms`.
pub fn iso8601(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(DAY));
    let in_day = ms.rem_euclid(DAY);
    let (h, m, s, milli) = (
        in_day / HOUR,
        in_day % HOUR / MINUTE,
        in_day % MINUTE / 1000,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Whether two instants fall on the same UTC day ("is feeling X today" vs "was feeling X on …").
pub fn same_day(a_ms: i64, b_ms: i64) -> bool {
    a_ms.div_euclid(DAY) == b_ms.div_euclid(DAY)
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_488_744_340; // 2026-11-24T02:52:24Z

    #[test]
    fn display_names_are_tidy_or_absent() {
        let name = |v: serde_json::Value| display_name(&v);
        assert_eq!(
            name(serde_json::json!({"displayName": " Alice "})).as_deref(),
            Some("Alice")
        );
        assert_eq!(
            name(serde_json::json!({"displayName": "a\u{0007}b\n"})).as_deref(),
            Some("ab")
        );
        assert_eq!(
            name(serde_json::json!({"displayName": "x".repeat(100)})).map(|n| n.len()),
            Some(64)
        );
        for none in [
            serde_json::json!({}),
            serde_json::json!({"displayName": "  "}),
            serde_json::json!({"displayName": 7}),
        ] {
            assert_eq!(name(none), None);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "Jan 1, 1970");
        assert_eq!(date(NOW), "Nov 24, 2026");
        assert_eq!(date(951_782_400_000), "Feb 29, 2000");
        assert_eq!(date(-1), "Dec 31, 1969");
        assert!(same_day(NOW, NOW - 2 * HOUR));
        assert_eq!(iso8601(NOW), "2026-11-24T02:52:24.340Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert!(lexicon::CreatedAt::parse(&iso8601(NOW)).is_ok());
        assert!(!same_day(NOW, NOW - 3 * HOUR));
    }

    #[test]
    fn emoji_set_is_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for emoji in EMOJI {
            assert!(lexicon::StatusText::new(*emoji).is_ok(), "{emoji} invalid");
            assert!(seen.insert(emoji), "{emoji} twice");
        }
    }
}
