//! Statuses read straight from a person's repository, not from Jetstream: the answer of
//! `com.atproto.repo.listRecords` on their PDS, taken as the state of the repository at the
//! revision `com.atproto.sync.getLatestCommit` gave just before (read first, so that anything the
//! repository does afterwards arrives on Jetstream with a greater revision and wins). Used at
//! sign-in (the person's own statuses, so the first page they see knows their status) and by the
//! backfill (every account the relay lists, `crate::backfill`), a page of records at a time.
//!
//! A PDS is remote input like a Jetstream frame: every record is checked as the listener checks
//! one (its URI names this account's own status under a TID key, its CID parses, the record is a
//! valid status), and one that fails is dropped with its reason, never the whole answer; a
//! revision that is not a TID, or is from the future, refuses the whole answer.

use serde::Deserialize;

use crate::ingest::Dropped;
use crate::status::{at_uri, rkey_in, Origin, Status};
use crate::{bounded, Error, Result};

/// The most records one page of `listRecords` is asked for (the protocol's own cap); a page
/// that sends more is cut there.
pub const PAGE_RECORDS: usize = 100;

/// The longest `listRecords` cursor followed to the next page; a longer one ends the listing.
pub const MAX_CURSOR_CHARS: usize = 512;

/// One record of a `listRecords` answer, as sent.
#[derive(Debug, Deserialize)]
struct Listed {
    uri: String,
    cid: String,
    value: Box<serde_json::value::RawValue>,
}

#[derive(Debug, Deserialize)]
struct ListRecords {
    records: Vec<Listed>,
    #[serde(default)]
    cursor: Option<String>,
}

/// One page of a repository's statuses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Page {
    pub statuses: Vec<Status>,
    /// Records refused, each with its reason.
    pub dropped: Vec<Dropped>,
    /// Where the next page starts, if the PDS says there is one (and the cursor is usable).
    pub cursor: Option<String>,
}

/// `did`'s statuses from a `listRecords` answer (`body`, JSON), as of revision `rev`, and what
/// was dropped. Each status is dated by its `createdAt`, never later than `now_ms`, so an old
/// status sorts where it belongs rather than as new.
pub fn statuses_of(did: &str, rev: &str, body: &[u8], now_ms: i64) -> Result<Page> {
    let rev = crate::write::check_rev(Some(rev), now_ms)?;
    let listed: ListRecords =
        serde_json::from_slice(body).map_err(|e| Error::Json(bounded(&e.to_string())))?;
    let mut page = Page {
        // An empty page ends the listing whatever its cursor says (a PDS looping on nothing).
        cursor: listed
            .cursor
            .filter(|c| !c.is_empty() && c.len() <= MAX_CURSOR_CHARS && !listed.records.is_empty()),
        ..Page::default()
    };
    for record in listed.records.into_iter().take(PAGE_RECORDS) {
        match status_of(did, rev, &record, now_ms) {
            Ok(status) => page.statuses.push(status),
            Err(error) => page.dropped.push(Dropped {
                reason: error.reason(),
                detail: bounded(&error.to_string()),
            }),
        }
    }
    Ok(page)
}

fn status_of(did: &str, rev: &str, record: &Listed, now_ms: i64) -> Result<Status> {
    let rkey = rkey_in(did, &record.uri).ok_or_else(|| Error::invalid("uri", &record.uri))?;
    lexicon::validate_rkey(rkey)?;
    if !lexicon::syntax::is_cid(&record.cid) {
        return Err(Error::invalid("cid", &record.cid));
    }
    let value = lexicon::StatusRecord::from_json(record.value.get())?;
    let created_ms = value.created_at.unix_millis();
    Ok(Status {
        uri: at_uri(did, rkey),
        author_did: did.to_owned(),
        rkey: rkey.to_owned(),
        status: value.status.as_str().to_owned(),
        created_at: value.created_at.as_str().to_owned(),
        indexed_at: created_ms.clamp(0, now_ms),
        rev: rev.to_owned(),
        cid: Some(record.cid.clone()),
        origin: Origin::Network,
        confirmed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    const CID: &str = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    /// 2026-12-01T00:00:00Z.
    const NOW_MS: i64 = 1_796_083_200_000;
    const REV: &str = "3lbk222222222";

    fn record(uri: &str, value: &str) -> String {
        format!(r#"{{"uri":"{uri}","cid":"{CID}","value":{value}}}"#)
    }

    fn status(emoji: &str, created: &str) -> String {
        format!(
            r#"{{"$type":"xyz.statusphere.status","status":"{emoji}","createdAt":"{created}"}}"#
        )
    }

    #[test]
    fn honest_records_become_statuses_at_the_commit_and_dated_by_creation() {
        let own = format!("at://{DID}/xyz.statusphere.status/3lbk222222223");
        let body = format!(
            r#"{{"records":[{}],"cursor":"x"}}"#,
            record(&own, &status("🦋", "2026-11-30T00:00:00.000Z"))
        );
        let page = statuses_of(DID, REV, body.as_bytes(), NOW_MS).unwrap();
        assert!(page.dropped.is_empty(), "{:?}", page.dropped);
        assert_eq!(page.cursor.as_deref(), Some("x"));
        let [s] = page.statuses.as_slice() else {
            panic!("{:?}", page.statuses)
        };
        assert_eq!(
            (s.uri.as_str(), s.status.as_str(), s.rev.as_str()),
            (own.as_str(), "🦋", REV)
        );
        assert_eq!(s.indexed_at, NOW_MS - 86_400_000, "dated by createdAt");
        assert!(s.confirmed && s.origin == Origin::Network);
    }

    #[test]
    fn hostile_records_are_dropped_one_by_one_and_a_bad_revision_refuses_all() {
        let own = |rkey: &str| format!("at://{DID}/xyz.statusphere.status/{rkey}");
        let good = record(
            &own("3lbk222222223"),
            &status("🦋", "2099-01-01T00:00:00.000Z"),
        );
        let records = [
            good.clone(),
            record(
                "at://did:plc:someoneelse0000000000000/xyz.statusphere.status/3lbk222222224",
                &status("💀", "2026-11-30T00:00:00.000Z"),
            ),
            record(&own("not-a-tid"), &status("💀", "2026-11-30T00:00:00.000Z")),
            record(
                &own("3lbk222222225"),
                &status("two words", "2026-11-30T00:00:00.000Z"),
            ),
            record(
                &own("3lbk222222226"),
                r#"{"$type":"xyz.statusphere.status"}"#,
            ),
            format!(
                r#"{{"uri":"{}","cid":"nope","value":{}}}"#,
                own("3lbk222222227"),
                status("🦋", "2026-11-30T00:00:00.000Z")
            ),
        ];
        let body = format!(r#"{{"records":[{}]}}"#, records.join(","));
        let Page {
            statuses, dropped, ..
        } = statuses_of(DID, REV, body.as_bytes(), NOW_MS).unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(
            statuses[0].indexed_at, NOW_MS,
            "a createdAt ahead of now is now"
        );
        assert_eq!(dropped.len(), 5, "{dropped:?}");
        let future_rev = "7zzzzzzzzzzzz";
        for rev in ["not-a-tid", future_rev] {
            assert!(
                statuses_of(DID, rev, body.as_bytes(), NOW_MS).is_err(),
                "{rev}"
            );
        }
        assert!(statuses_of(DID, REV, b"{\"records\":7}", NOW_MS).is_err());
    }

    #[test]
    fn a_page_is_cut_at_its_size_and_a_cursor_on_nothing_ends_the_listing() {
        const DIGITS: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
        let own = |i: usize| {
            let tail: String = [i / 32, i % 32]
                .iter()
                .map(|d| char::from(DIGITS[*d]))
                .collect();
            format!("at://{DID}/xyz.statusphere.status/3lbk2222222{tail}")
        };
        let many: Vec<String> = (0..PAGE_RECORDS + 5)
            .map(|i| record(&own(i), &status("🦋", "2026-11-30T00:00:00.000Z")))
            .collect();
        let body = format!(r#"{{"records":[{}],"cursor":"next"}}"#, many.join(","));
        let page = statuses_of(DID, REV, body.as_bytes(), NOW_MS).unwrap();
        assert_eq!(page.statuses.len(), PAGE_RECORDS);
        assert_eq!(page.cursor.as_deref(), Some("next"));
        let empty = br#"{"records":[],"cursor":"again"}"#;
        assert_eq!(statuses_of(DID, REV, empty, NOW_MS).unwrap().cursor, None);
        let long = format!(
            r#"{{"records":[{}],"cursor":"{}"}}"#,
            many[0],
            "c".repeat(MAX_CURSOR_CHARS + 1)
        );
        let page = statuses_of(DID, REV, long.as_bytes(), NOW_MS).unwrap();
        assert_eq!(page.cursor, None);
    }
}
