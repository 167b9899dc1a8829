//! The home page, server-rendered from a view model through an askama template that escapes
//! every value (a status, handle or display name from the network cannot become markup). The view
//! model is built here from plain data, so that what the page says ("is feeling X today", "was
//! feeling X on Nov 3, 2026", counts, the viewer's highlight) is tested natively.

use askama::Template;

use crate::present::{self, EMOJI};
use crate::sql::{Before, CountRow};
use crate::StatusView;

/// The signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub did: String,
    pub handle: Option<String>,
    pub display_name: Option<String>,
    /// Their current status, if any.
    pub current: Option<String>,
}

impl Viewer {
    /// Display name, else handle, else DID.
    pub fn name(&self) -> &str {
        self.display_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .or(self.handle.as_deref())
            .unwrap_or(&self.did)
    }
}

/// A message at the top of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub error: bool,
    pub text: String,
}

impl Notice {
    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            error: true,
            text: text.into(),
        }
    }

    pub fn info(text: impl Into<String>) -> Notice {
        Notice {
            error: false,
            text: text.into(),
        }
    }
}

/// One button of the emoji grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmojiButton {
    pub emoji: &'static str,
    pub count: i64,
    /// The count's version (migration 0011), for the page's script.
    pub version: i64,
    pub current: bool,
}

/// How many statuses the top list shows.
pub const TOP: usize = 5;

/// One line of the recent list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLine {
    pub uri: String,
    pub did: String,
    pub label: String,
    /// The author's display name, or "" (the handle alone then).
    pub name: String,
    pub status: String,
    /// "is feeling X today" (else "was feeling X on {date}"), in UTC: the page's script says
    /// it again in the reader's time zone.
    pub today: bool,
    pub date: String,
    /// When the app first saw the status, ISO 8601 (the line's `<time datetime>`).
    pub seen_at: String,
    /// Written by this app and not yet seen on the network.
    pub pending: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub viewer: Option<Viewer>,
    pub notice: Option<Notice>,
    /// What the person typed last (kept after a failed sign-in).
    pub handle_input: String,
    pub emoji: Vec<EmojiButton>,
    /// Current statuses outside the picker's set, with their counts.
    pub others: Vec<CountRow>,
    /// The most shown statuses, picker or not, most first ([`TOP`] of them).
    pub top: Vec<CountRow>,
    pub feed: Vec<FeedLine>,
    /// The broker sequence number the page's socket resumes after ("" = start live).
    pub seq: String,
    /// The broker shard that number is from, which the page's socket names ("" = none).
    pub shard: String,
    pub css_url: String,
    pub js_url: String,
    pub icon_url: String,
    /// Where a profile link goes: this, then the DID.
    pub profile_base: String,
    /// The feed's heading.
    pub title: String,
    /// The home page itself: the sign-in, the picker and the counts, and live updates. History
    /// pages (older statuses, a person's page) are the feed alone, as it was.
    pub full: bool,
    /// The next page's address (older statuses), if there are more.
    pub older: Option<String>,
    /// The first page's address, on a page after the first.
    pub newest: Option<String>,
}

/// Which statuses a page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Everyone's, newest first: the home page (live, with the picker) or, after a cursor, one
    /// of its older pages.
    Everyone,
    /// One person's, newest first (`/profile/<handle or DID>`).
    Person { did: String, label: String },
}

impl Listing {
    /// The first page's path.
    pub fn path(&self) -> String {
        match self {
            Listing::Everyone => "/".to_owned(),
            Listing::Person { did, .. } => format!("/profile/{}", url_component(did)),
        }
    }
}

/// How many statuses a page lists.
pub const PAGE_SIZE: usize = 30;

/// The `before` parameter of a page after the first: `<indexed_at>~<uri>`, from the last status
/// a page showed.
pub fn cursor_param(before: &Before) -> String {
    url_component(&format!("{}~{}", before.indexed_at, before.uri))
}

/// Reads a `before` parameter (already percent-decoded); `None` for anything that is not one.
/// Only ever a bound value in SQL, so a forged one can at most show another page.
pub fn parse_cursor(value: &str) -> Option<Before> {
    let (at, uri) = value.split_once('~')?;
    let indexed_at: i64 = at.parse().ok().filter(|at: &i64| *at >= 0)?;
    (uri.starts_with("at://") && uri.len() <= 512).then(|| Before {
        indexed_at,
        uri: uri.to_owned(),
    })
}

/// Percent-decodes a path segment; `None` if it is not UTF-8 or a `%` is not followed by two hex
/// digits.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn url_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Everything the page shows, gathered by the worker.
pub struct PageData {
    pub viewer: Option<Viewer>,
    pub notice: Option<Notice>,
    pub handle_input: String,
    pub counts: Vec<CountRow>,
    pub recent: Vec<StatusView>,
    pub now_ms: i64,
    /// Where the page's socket resumes: the head of the shard the broker bound it to.
    pub live_from: Option<crate::internal::BrokerHead>,
    pub css_url: String,
    pub js_url: String,
    pub icon_url: String,
    pub profile_base: String,
    /// What the page lists, and from where: `None` is the home page itself.
    pub listing: Listing,
    pub before: Option<Before>,
    /// Whether `recent` is followed by more (the worker reads one row beyond the page).
    pub more: bool,
}

impl HomePage {
    pub fn new(data: PageData) -> HomePage {
        let current = data.viewer.as_ref().and_then(|v| v.current.clone());
        let emoji = EMOJI
            .iter()
            .map(|&emoji| {
                let count = data.counts.iter().find(|c| c.status == emoji);
                EmojiButton {
                    emoji,
                    count: count.map_or(0, |c| c.count),
                    version: count.map_or(0, |c| c.version),
                    current: current.as_deref() == Some(emoji),
                }
            })
            .collect();
        // The counts come most shown first (`sql::status_counts`).
        let top = data.counts.iter().take(TOP).cloned().collect();
        let others = data
            .counts
            .into_iter()
            .filter(|c| !EMOJI.contains(&c.status.as_str()))
            .collect();
        let full = data.listing == Listing::Everyone && data.before.is_none();
        let path = data.listing.path();
        let older = match data.recent.last() {
            Some(last) if data.more => Some(format!(
                "{path}?before={}",
                cursor_param(&Before {
                    indexed_at: last.indexed_at,
                    uri: last.uri.clone(),
                })
            )),
            _ => None,
        };
        let title = match (&data.listing, data.before.is_some()) {
            (Listing::Everyone, false) => "Recent".to_owned(),
            (Listing::Everyone, true) => "Older statuses".to_owned(),
            (Listing::Person { label, .. }, _) => format!("@{label}"),
        };
        let feed = data
            .recent
            .into_iter()
            .map(|s| FeedLine {
                today: present::same_day(data.now_ms, s.indexed_at),
                date: present::date(s.indexed_at),
                seen_at: present::iso8601(s.indexed_at),
                label: s.author_label().to_owned(),
                name: s.display_name.clone().unwrap_or_default(),
                pending: !s.confirmed,
                uri: s.uri,
                did: s.author_did,
                status: s.status,
            })
            .collect();
        let live_from = data.live_from.as_ref();
        HomePage {
            viewer: data.viewer,
            notice: data.notice,
            handle_input: data.handle_input,
            emoji,
            others,
            top,
            feed,
            seq: live_from.map(|h| h.seq.to_string()).unwrap_or_default(),
            shard: live_from.map(|h| h.shard.to_string()).unwrap_or_default(),
            css_url: data.css_url,
            js_url: data.js_url,
            icon_url: data.icon_url,
            profile_base: data.profile_base,
            title,
            full,
            older,
            newest: data.before.is_some().then_some(path),
        }
    }

    /// The HTML. Rendering a built page cannot fail on data (askama only fails on a formatter
    /// error); a failure is reported, not panicked on.
    pub fn html(&self) -> Result<String, String> {
        self.render().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    const NOW: i64 = 1_795_488_744_340; // 2026-11-24T02:52:24Z

    fn status(did: &str, handle: Option<&str>, text: &str, at: i64, confirmed: bool) -> StatusView {
        StatusView {
            uri: format!("at://{did}/xyz.statusphere.status/3k{at}"),
            author_did: did.into(),
            handle: handle.map(str::to_owned),
            display_name: None,
            rkey: format!("3k{at}"),
            status: text.into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            indexed_at: at,
            origin: Origin::Network,
            confirmed,
        }
    }

    fn data() -> PageData {
        PageData {
            viewer: None,
            notice: None,
            handle_input: String::new(),
            counts: vec![
                CountRow {
                    status: "🦋".into(),
                    count: 3,
                    version: 1,
                },
                CountRow {
                    status: "🐙".into(),
                    count: 1,
                    version: 1,
                },
            ],
            recent: vec![
                status("did:plc:a", Some("alice.test"), "🦋", NOW - 1000, true),
                status("did:plc:b", None, "🐙", NOW - 3 * 86_400_000, false),
            ],
            now_ms: NOW,
            live_from: Some(crate::internal::BrokerHead { seq: 42, shard: 3 }),
            css_url: "/assets/app.1.css".into(),
            js_url: "/assets/app.1.js".into(),
            icon_url: "/assets/icon.1.svg".into(),
            profile_base: "https://bsky.app/profile/".into(),
            listing: Listing::Everyone,
            before: None,
            more: false,
        }
    }

    #[test]
    fn signed_out_page() {
        let html = HomePage::new(data()).html().unwrap();
        assert!(html.contains("action=\"/login\""));
        assert!(html.contains("@alice.test"));
        assert!(html.contains("<span class=\"verb\">is</span> feeling"));
        assert!(html.contains("<span class=\"verb\">was</span> feeling"));
        assert!(html.contains(&format!(
            "<time class=\"when\" datetime=\"{}\">today</time>",
            present::iso8601(NOW - 1000)
        )));
        assert!(html.contains(">on Nov 21, 2026</time>"));
        assert!(
            html.contains("did:plc:b"),
            "a status without a known handle shows the DID"
        );
        assert!(
            html.contains("🐙"),
            "statuses outside the picker are counted too"
        );
        assert!(html.contains("data-seq=\"42\" data-shard=\"3\""));
        // The top list: most shown first, each count with its version for the script.
        let top = &html[html.find("<ol id=\"top\"").expect("a top list")..];
        let top = &top[..top.find("</ol>").expect("the list ends")];
        let (butterfly, octopus) = (top.find("🦋").unwrap(), top.find("🐙").unwrap());
        assert!(butterfly < octopus, "{top}");
        assert!(top.contains("data-version=\"1\">3</span>"), "{top}");
        assert!(html.contains("Sign in to set your status"));
        assert!(!html.contains("action=\"/logout\""));
    }

    /// The `<template>` the script fills for a live update is the same markup as a rendered
    /// line of today's status, only empty: one copy, so the two cannot drift apart.
    #[test]
    fn the_live_line_template_is_a_rendered_line() {
        let html = HomePage::new(data()).html().unwrap();
        let between = |from: &str, to: &str| -> String {
            let start = html.find(from).expect(from);
            let end = start + html[start..].find(to).expect(to) + to.len();
            html[start..end].to_owned()
        };
        let template = between("<template id=\"line-template\">", "</template>");
        let rendered = between("<li data-uri=\"at://did:plc:a/", "</li>");
        let emptied = rendered
            .replace("at://did:plc:a/xyz.statusphere.status/3k1795488743340", "")
            .replace("did:plc:a", "")
            .replace("alice.test", "")
            .replace(&present::iso8601(NOW - 1000), "")
            .replace("🦋", "");
        assert!(
            template.contains(emptied.trim()),
            "template:\n{template}\nrendered line, emptied:\n{emptied}"
        );
        for class in ["glyph net", "author net", "said net"] {
            assert!(template.contains(&format!("class=\"{class}\"")), "{class}");
        }
    }

    #[test]
    fn history_pages_are_the_feed_alone_with_a_stable_cursor() {
        let mut first = data();
        first.more = true;
        let home = HomePage::new(first);
        let last = home.feed.last().unwrap().clone();
        let older = home
            .older
            .clone()
            .expect("an older link when there is more");
        assert!(older.starts_with("/?before="), "{older}");
        let value = older.trim_start_matches("/?before=");
        assert!(
            !value.contains('/') && !value.contains(':'),
            "percent-encoded: {value}"
        );
        let decoded = value
            .replace("%3A", ":")
            .replace("%2F", "/")
            .replace("%7E", "~");
        let cursor = parse_cursor(&decoded).unwrap();
        assert_eq!(cursor.uri, last.uri);
        assert!(home.full && home.newest.is_none());

        let mut theirs = data();
        theirs.listing = Listing::Person {
            did: "did:plc:a".into(),
            label: "alice.test".into(),
        };
        theirs.before = Some(cursor);
        let person = HomePage::new(theirs);
        assert!(!person.full);
        assert_eq!(person.newest.as_deref(), Some("/profile/did%3Aplc%3Aa"));
        assert!(person.older.is_none(), "no more: no older link");
        let html = person.html().unwrap();
        assert!(html.contains("@alice.test"));
        assert!(!html.contains("action=\"/login\"") && !html.contains("id=\"grid\""));
        assert!(!html.contains("data-live"), "history pages are not live");

        for bad in ["", "12", "x~at://a", "-1~at://a", "12~https://a"] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
        assert_eq!(
            percent_decode("did%3Aplc%3Aa").as_deref(),
            Some("did:plc:a")
        );
        for bad in ["%", "%4", "%zz", "%FF"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn signed_in_page_highlights_the_current_status() {
        let mut data = data();
        data.viewer = Some(Viewer {
            did: "did:plc:a".into(),
            handle: Some("alice.test".into()),
            display_name: Some("Alice".into()),
            current: Some("🦋".into()),
        });
        let page = HomePage::new(data);
        assert!(page
            .emoji
            .iter()
            .any(|e| e.emoji == "🦋" && e.current && e.count == 3));
        assert_eq!(page.emoji.iter().filter(|e| e.current).count(), 1);
        let html = page.html().unwrap();
        assert!(html.contains("action=\"/logout\""));
        assert!(html.contains("Alice"));
        assert!(html.contains("aria-pressed=\"true\""));
        assert!(!html.contains("Sign in to set your status"));
    }

    #[test]
    fn strings_from_the_network_are_isolated() {
        // A right-to-left override alone is one grapheme, so a valid status; so is a letter
        // under fifteen combining marks. Each must sit alone in an isolated element (every
        // `<bdi>` of the template has the `net` class: isolated and clipped by app.css).
        let override_ = "\u{202E}";
        let tower = format!("e{}", "\u{301}".repeat(15));
        let mut data = data();
        data.viewer = Some(Viewer {
            did: "did:plc:a".into(),
            handle: Some("alice.test".into()),
            display_name: Some(override_.into()),
            current: None,
        });
        data.counts.push(CountRow {
            status: override_.into(),
            count: 1,
            version: 1,
        });
        data.recent
            .push(status("did:plc:e", None, override_, NOW, true));
        data.recent
            .push(status("did:plc:f", None, &tower, NOW - 1, true));
        let html = HomePage::new(data).html().unwrap();
        for hostile in [override_, tower.as_str()] {
            let everywhere = html.matches(hostile).count();
            let isolated = html.matches(&format!("\">{hostile}</bdi>")).count();
            let in_attributes = html.matches(&format!("=\"{hostile}")).count();
            assert!(isolated >= 2, "{hostile:?} isolated {isolated} times");
            assert_eq!(
                everywhere,
                isolated + in_attributes,
                "{hostile:?} outside an isolated element: {html}"
            );
        }
    }

    #[test]
    fn hostile_strings_render_inert() {
        let evil = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
        let mut data = data();
        data.viewer = Some(Viewer {
            did: "did:plc:a".into(),
            handle: Some(evil.into()),
            display_name: Some(evil.into()),
            current: Some(evil.into()),
        });
        data.notice = Some(Notice {
            error: true,
            text: evil.into(),
        });
        data.handle_input = evil.into();
        data.counts.push(CountRow {
            status: evil.into(),
            count: 2,
            version: 1,
        });
        let mut line = status("did:plc:e", Some(evil), evil, NOW, true);
        line.display_name = Some(evil.into());
        data.recent.push(line);
        let html = HomePage::new(data).html().unwrap();
        assert!(
            html.contains("<bdi class=\"name net\">&#60;script&#62;alert(1)"),
            "a display name sits escaped in its own isolated box"
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(!html.contains("\"'>"), "attribute values cannot be closed");
        let visible = html
            .find("alert(1)")
            .map(|i| &html[i.saturating_sub(20)..i + 20]);
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;"),
            "escaped, still visible: {visible:?}"
        );
    }
}
