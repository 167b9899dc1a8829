//! A status written or cleared through edge: the person's PDS answers
//! `com.atproto.repo.createRecord` with the new record's `uri`, `cid` and the commit's `rev`
//! (`deleteRecord` with the commit's `rev`), and that answer is checked here before anything
//! reaches D1.
//!
//! A PDS is whatever server an account's DID document names; anyone can run one. So its answer is
//! remote input like a Jetstream frame: it must name a new `xyz.statusphere.status` record in the
//! signed-in account's own repository, under a TID record key, with a CID that parses and a
//! revision that is a TID not from the future. An answer naming someone else's record would
//! otherwise overwrite their row (and a huge `rev` would make it win over their later writes).

use lexicon::syntax::Tid;

use crate::jetstream::{Tombstone, MAX_CLOCK_SKEW_US};
use crate::status::{at_uri, rkey_in, Origin, Status};
use crate::{bounded, Error, Result};

/// What a PDS answered to `createRecord` (as sent: nothing is believed yet).
#[derive(Debug, Clone, Copy)]
pub struct CreateAnswer<'a> {
    pub uri: &'a str,
    pub cid: &'a str,
    /// The commit's revision; the lexicon makes `commit` optional, this app does not.
    pub rev: Option<&'a str>,
}

/// The optimistic row for a status that `did` just wrote (`status` and `created_at` already
/// checked against the lexicon), if the PDS's `answer` holds up; `now_ms` is our clock.
pub fn optimistic_row(
    did: &str,
    status: &str,
    created_at: &str,
    answer: CreateAnswer<'_>,
    now_ms: i64,
) -> Result<Status> {
    let rkey = rkey_in(did, answer.uri).ok_or_else(|| Error::invalid("uri", answer.uri))?;
    lexicon::validate_rkey(rkey).map_err(|_| Error::invalid("uri", answer.uri))?;
    let uri = at_uri(did, rkey);
    debug_assert_eq!(uri, answer.uri);
    if !lexicon::syntax::is_cid(answer.cid) {
        return Err(Error::invalid("cid", answer.cid));
    }
    let rev = check_rev(answer.rev, now_ms)?;
    Ok(Status {
        uri,
        author_did: did.to_owned(),
        rkey: rkey.to_owned(),
        status: status.to_owned(),
        created_at: created_at.to_owned(),
        indexed_at: now_ms,
        rev: rev.to_owned(),
        cid: Some(answer.cid.to_owned()),
        origin: Origin::Edge,
        confirmed: false,
    })
}

/// The tombstone for `did`'s status at `uri` (its current one, read from D1: ours, not the PDS's)
/// once its PDS answered `deleteRecord` with the commit's revision `rev`, if that holds up. No
/// revision (a PDS answers none when the record was not there) is refused: without it the
/// tombstone could not be ordered against the network's events.
pub fn tombstone(
    did: &str,
    uri: &str,
    rkey: &str,
    rev: Option<&str>,
    now_ms: i64,
) -> Result<Tombstone> {
    let rev = check_rev(rev, now_ms)?;
    Ok(Tombstone {
        uri: uri.to_owned(),
        author_did: did.to_owned(),
        rkey: rkey.to_owned(),
        rev: rev.to_owned(),
        indexed_at: now_ms,
    })
}

/// A commit's revision: present, a TID, and not from the future (a huge one would win over every
/// later event of the record).
pub fn check_rev(rev: Option<&str>, now_ms: i64) -> Result<&str> {
    let rev = rev.ok_or(Error::Missing("rev"))?;
    let tid = Tid::new(rev.to_owned()).map_err(|_| Error::invalid("rev", rev))?;
    if tid_time_us(&tid) > (now_ms * 1000).saturating_add(MAX_CLOCK_SKEW_US) {
        return Err(Error::Future {
            field: "rev",
            value: bounded(rev),
        });
    }
    Ok(rev)
}

/// The time a TID was made (unix µs): its first 53 bits, in base32-sortable.
pub fn tid_time_us(tid: &Tid) -> i64 {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let value = tid.as_str().bytes().fold(0u64, |value, c| {
        let digit = ALPHABET.iter().position(|a| *a == c).unwrap_or(0) as u64;
        (value << 5) | digit
    });
    // 13 characters are 65 bits, of which the first is always 0; the last 10 are a clock id.
    ((value >> 10) & ((1 << 53) - 1)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    const CID: &str = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    /// 2026-12-01T00:00:00Z.
    const NOW_MS: i64 = 1_796_083_200_000;

    /// A TID made at `time_us`.
    fn tid(time_us: i64) -> String {
        const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
        let mut value = (time_us as u64) << 10 | 7;
        let mut out = [0u8; 13];
        for slot in out.iter_mut().rev() {
            *slot = ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn answer<'a>(uri: &'a str, cid: &'a str, rev: Option<&'a str>) -> CreateAnswer<'a> {
        CreateAnswer { uri, cid, rev }
    }

    #[test]
    fn a_delete_answer_needs_a_present_revision() {
        let rkey = tid(NOW_MS * 1000 - 5);
        let uri = at_uri(DID, &rkey);
        let rev = tid(NOW_MS * 1000 - 1);
        let row = tombstone(DID, &uri, &rkey, Some(&rev), NOW_MS).unwrap();
        assert_eq!(
            (row.uri.as_str(), row.rev.as_str()),
            (uri.as_str(), rev.as_str())
        );
        assert_eq!((row.author_did.as_str(), row.indexed_at), (DID, NOW_MS));
        let future = tid(NOW_MS * 1000 + 10 * 60 * 1_000_000);
        for bad in [None, Some("not-a-tid"), Some(future.as_str())] {
            assert!(tombstone(DID, &uri, &rkey, bad, NOW_MS).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tids_tell_their_time() {
        let t = tid(NOW_MS * 1000);
        assert_eq!(tid_time_us(&Tid::new(t).unwrap()), NOW_MS * 1000);
    }

    #[test]
    fn an_honest_answer_becomes_the_optimistic_row() {
        let rkey = tid(NOW_MS * 1000 - 5);
        let rev = tid(NOW_MS * 1000 - 3);
        let uri = at_uri(DID, &rkey);
        let row = optimistic_row(
            DID,
            "🦋",
            "2026-12-01T00:00:00.000Z",
            answer(&uri, CID, Some(&rev)),
            NOW_MS,
        )
        .unwrap();
        assert_eq!(row.uri, uri);
        assert_eq!(row.author_did, DID);
        assert_eq!(row.rkey, rkey);
        assert_eq!(row.rev, rev);
        assert_eq!(row.cid.as_deref(), Some(CID));
        assert_eq!(row.indexed_at, NOW_MS);
        assert_eq!(row.origin, Origin::Edge);
        assert!(!row.confirmed);
    }

    #[test]
    fn an_answer_that_is_not_this_accounts_new_status_is_refused() {
        let rkey = tid(NOW_MS * 1000);
        let rev = tid(NOW_MS * 1000);
        let own = at_uri(DID, &rkey);
        let victim = at_uri("did:plc:victimvictimvictimvictim", &rkey);
        let prefix_of_ours = at_uri("did:plc:ewvi7nxzyoun6zhxrhs64oizz", &rkey);
        let post = format!("at://{DID}/app.bsky.feed.post/{rkey}");
        let not_tid = at_uri(DID, "self");
        let nested = format!("{own}/extra");
        let future = tid(NOW_MS * 1000 + MAX_CLOCK_SKEW_US + 1);
        let cases: [(CreateAnswer, &str); 10] = [
            (answer(&victim, CID, Some(&rev)), "uri"),
            (answer(&prefix_of_ours, CID, Some(&rev)), "uri"),
            (answer(&post, CID, Some(&rev)), "uri"),
            (answer(&not_tid, CID, Some(&rev)), "uri"),
            (answer(&nested, CID, Some(&rev)), "uri"),
            (answer("", CID, Some(&rev)), "uri"),
            (answer(&own, "bafy-not-a-cid", Some(&rev)), "cid"),
            (answer(&own, CID, Some("not-a-tid")), "rev"),
            (answer(&own, CID, None), "rev"),
            (answer(&own, CID, Some(&future)), "future"),
        ];
        for (answer, reason) in cases {
            let error = optimistic_row(DID, "🦋", "2026-12-01T00:00:00.000Z", answer, NOW_MS)
                .expect_err(answer.uri);
            assert_eq!(error.reason(), reason, "{answer:?}: {error}");
            assert!(error.to_string().len() < 400, "bounded: {error}");
        }
    }
}
