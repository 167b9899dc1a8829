//! A deterministic synthetic Jetstream stream: the same seed gives the same stream, byte for byte.
//!
//! N accounts write, update and delete statuses; some post to another collection (so filters have
//! something to filter); handles change (identity events); accounts are deactivated, taken down,
//! deleted and reactivated (account events); and an optional share of frames is malformed in the
//! ways a hostile or broken upstream can be (see [`Malformed`]).

use chrono::{DateTime, SecondsFormat};
use ipld_core::cid::multihash::Multihash;
use ipld_core::cid::Cid;
use serde_json::json;

use crate::error::{Error, Result};

/// 2025-01-01T00:00:00Z: where generated `time_us` values start.
const BASE_TIME_US: i64 = 1_735_689_600_000_000;
/// Generated events are this far apart in (recorded) time.
const STEP_US: i64 = 1_000;
const STATUS: &str = "xyz.statusphere.status";

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub seed: u64,
    pub accounts: usize,
    pub events: usize,
    /// Fraction of frames (0..=1) that are malformed.
    pub malformed_share: f64,
}

impl GenerateConfig {
    pub fn validate(&self) -> Result<()> {
        if self.accounts == 0 {
            return Err(Error::Usage("--accounts must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.malformed_share) {
            return Err(Error::Usage(
                "--malformed-share must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }
}

/// splitmix64: tiny, fast, and stable forever (a dependency's generator could change its stream).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const BASE32_SORTABLE: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";

/// An atproto TID: 53 bits of microseconds and a 10-bit clock id, base32-sortable.
pub fn tid(time_us: i64, clock_id: u64) -> String {
    let value = ((time_us as u64) & ((1 << 53) - 1)) << 10 | (clock_id & 0x3FF);
    (0..13)
        .map(|i| BASE32_SORTABLE[((value >> (60 - 5 * i)) & 31) as usize] as char)
        .collect()
}

struct Account {
    did: String,
    handle_generation: u32,
    active: bool,
    statuses: Vec<String>,
}

/// The kinds of broken frames the generator mixes in, in rotation.
#[derive(Debug, Clone, Copy)]
pub enum Malformed {
    Truncated,
    NotJson,
    TwoGraphemes,
    MissingType,
    BadDid,
    TimeAsString,
    Oversized,
    BadRkey,
    /// The status itself is an array nested 300 deep.
    DeepNesting,
    UnknownKind,
    /// A raw record separator (U+001E) between two members: not JSON, and the character the
    /// listener joins frames with on their way into wasm (workers/listener/src/inbox.rs).
    ControlCharacter,
}

const MALFORMED: [Malformed; 11] = [
    Malformed::Truncated,
    Malformed::NotJson,
    Malformed::TwoGraphemes,
    Malformed::MissingType,
    Malformed::BadDid,
    Malformed::TimeAsString,
    Malformed::Oversized,
    Malformed::BadRkey,
    Malformed::DeepNesting,
    Malformed::UnknownKind,
    Malformed::ControlCharacter,
];

fn created_at(time_us: i64) -> String {
    DateTime::from_timestamp_micros(time_us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn handle(index: usize, generation: u32) -> String {
    if generation == 0 {
        format!("user{index}.statusphere.test")
    } else {
        format!("user{index}-v{generation}.statusphere.test")
    }
}

fn commit(
    did: &str,
    time_us: i64,
    rev: &str,
    operation: &str,
    collection: &str,
    rkey: &str,
    // The record as JSON text, and its CID.
    record: Option<(&str, &str)>,
) -> String {
    // Built by hand to keep Jetstream's member order (did, time_us, kind, commit).
    let mut body = format!(
        r#"{{"rev":{},"operation":{},"collection":{},"rkey":{}"#,
        json!(rev),
        json!(operation),
        json!(collection),
        json!(rkey)
    );
    if let Some((record, cid)) = record {
        body.push_str(&format!(r#","record":{record},"cid":{}"#, json!(cid)));
    }
    body.push('}');
    format!(
        r#"{{"did":{},"time_us":{time_us},"kind":"commit","commit":{body}}}"#,
        json!(did)
    )
}

/// A well-formed CIDv1 (dag-cbor, sha2-256) over pseudo-random digest bytes: consumers parse
/// CIDs but do not re-hash records.
fn fake_cid(rng: &mut Rng) -> String {
    let digest: Vec<u8> = (0..4).flat_map(|_| rng.next().to_be_bytes()).collect();
    match Multihash::<64>::wrap(0x12, &digest) {
        Ok(hash) => Cid::new_v1(0x71, hash).to_string(),
        Err(_) => String::new(),
    }
}

/// Generates the stream as JSON lines.
pub fn generate(config: &GenerateConfig) -> Vec<String> {
    let mut rng = Rng(config.seed);
    let mut accounts: Vec<Account> = (0..config.accounts)
        .map(|_| {
            let did: String = (0..24)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz234567"[rng.below(32)] as char)
                .collect();
            Account {
                did: format!("did:plc:{did}"),
                handle_generation: 0,
                active: true,
                statuses: Vec::new(),
            }
        })
        .collect();
    let emoji = domain::present::EMOJI;
    let mut out = Vec::with_capacity(config.events);
    let mut malformed_turn = 0usize;
    for i in 0..config.events {
        let time_us = BASE_TIME_US + i as i64 * STEP_US;
        let rev = tid(time_us, rng.next());
        let index = rng.below(accounts.len());
        let did = accounts[index].did.clone();
        if rng.unit() < config.malformed_share {
            let kind = MALFORMED[malformed_turn % MALFORMED.len()];
            malformed_turn += 1;
            out.push(malformed(kind, &did, time_us, &rev, &mut rng));
            continue;
        }
        let roll = rng.unit();
        let account = &mut accounts[index];
        let line = if !account.active || roll >= 0.93 {
            account_event(account, time_us, &mut rng)
        } else if roll >= 0.85 {
            account.handle_generation += 1;
            let handle = handle(index, account.handle_generation);
            format!(
                r#"{{"did":{},"time_us":{time_us},"kind":"identity","identity":{{"did":{},"handle":{},"seq":{},"time":{}}}}}"#,
                json!(did),
                json!(did),
                json!(handle),
                i + 1,
                json!(created_at(time_us))
            )
        } else if roll >= 0.77 {
            let rkey = tid(time_us, rng.next());
            let record = json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"), "createdAt": created_at(time_us)});
            commit(
                &did,
                time_us,
                &rev,
                "create",
                "app.bsky.feed.post",
                &rkey,
                Some((&record.to_string(), &fake_cid(&mut rng))),
            )
        } else if roll >= 0.67 && !account.statuses.is_empty() {
            let rkey = account
                .statuses
                .swap_remove(rng.below(account.statuses.len()));
            commit(&did, time_us, &rev, "delete", STATUS, &rkey, None)
        } else if roll >= 0.55 && !account.statuses.is_empty() {
            let rkey = account.statuses[rng.below(account.statuses.len())].clone();
            let record = json!({"$type": STATUS, "status": emoji[rng.below(emoji.len())], "createdAt": created_at(time_us)});
            commit(
                &did,
                time_us,
                &rev,
                "update",
                STATUS,
                &rkey,
                Some((&record.to_string(), &fake_cid(&mut rng))),
            )
        } else {
            let rkey = tid(time_us, rng.next());
            account.statuses.push(rkey.clone());
            let record = json!({"$type": STATUS, "status": emoji[rng.below(emoji.len())], "createdAt": created_at(time_us)});
            commit(
                &did,
                time_us,
                &rev,
                "create",
                STATUS,
                &rkey,
                Some((&record.to_string(), &fake_cid(&mut rng))),
            )
        };
        out.push(line);
    }
    out
}

fn account_event(account: &mut Account, time_us: i64, rng: &mut Rng) -> String {
    let status = if account.active {
        account.active = false;
        Some(["deactivated", "takendown", "suspended", "deleted"][rng.below(4)])
    } else {
        account.active = true;
        None
    };
    if status == Some("deleted") {
        // A deleted account's records are gone; if it comes back, it starts empty.
        account.statuses.clear();
    }
    let status = status
        .map(|s| format!(r#","status":{}"#, json!(s)))
        .unwrap_or_default();
    format!(
        r#"{{"did":{did},"time_us":{time_us},"kind":"account","account":{{"active":{},"did":{did},"seq":{},"time":{}{status}}}}}"#,
        account.active,
        time_us / STEP_US,
        json!(created_at(time_us)),
        did = json!(account.did),
    )
}

/// The CID written into malformed creates (never looked at: the frames are refused first).
const MALFORMED_CID: &str = "bafyreimalformed";

fn malformed(kind: Malformed, did: &str, time_us: i64, rev: &str, rng: &mut Rng) -> String {
    let rkey = tid(time_us, rng.next());
    let created_at = created_at(time_us);
    let create = |record: &str| {
        commit(
            did,
            time_us,
            rev,
            "create",
            STATUS,
            &rkey,
            Some((record, MALFORMED_CID)),
        )
    };
    let valid =
        || create(&json!({"$type": STATUS, "status": "🙂", "createdAt": created_at}).to_string());
    match kind {
        Malformed::Truncated => {
            let full = valid();
            full[..full.floor_char_boundary(full.len() / 2)].to_owned()
        }
        Malformed::NotJson => format!("<html>{time_us}: upstream error</html>"),
        Malformed::TwoGraphemes => {
            create(&json!({"$type": STATUS, "status": "🙂🙂", "createdAt": created_at}).to_string())
        }
        Malformed::MissingType => {
            create(&json!({"status": "🙂", "createdAt": created_at}).to_string())
        }
        Malformed::BadDid => valid().replacen(did, "alice", 1),
        Malformed::TimeAsString => valid().replacen(
            &format!("\"time_us\":{time_us}"),
            &format!("\"time_us\":\"{time_us}\""),
            1,
        ),
        Malformed::Oversized => create(
            &json!({"$type": STATUS, "status": "🙂", "createdAt": created_at, "padding": "x".repeat(70 * 1024)})
                .to_string(),
        ),
        Malformed::BadRkey => {
            valid().replacen(&format!("\"rkey\":\"{rkey}\""), "\"rkey\":\"..\"", 1)
        }
        Malformed::DeepNesting => create(&format!(
            r#"{{"$type":"{STATUS}","status":{}{},"createdAt":{}}}"#,
            "[".repeat(300),
            "]".repeat(300),
            json!(created_at)
        )),
        Malformed::UnknownKind => format!(
            r#"{{"did":{},"time_us":{time_us},"kind":"mystery","mystery":{{}}}}"#,
            json!(did)
        ),
        Malformed::ControlCharacter => valid().replacen(",\"kind\"", ",\u{1e}\"kind\"", 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64, malformed_share: f64) -> GenerateConfig {
        GenerateConfig {
            seed,
            accounts: 20,
            events: 2_000,
            malformed_share,
        }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        assert_eq!(generate(&config(7, 0.05)), generate(&config(7, 0.05)));
        assert_ne!(generate(&config(7, 0.05)), generate(&config(8, 0.05)));
    }

    #[test]
    fn tids_are_valid_and_sortable() {
        let a = tid(BASE_TIME_US, 1);
        let b = tid(BASE_TIME_US + 1, 0);
        assert_eq!(a.len(), 13);
        assert!(a < b);
        assert!(lexicon::syntax::is_tid(&a));
    }

    #[test]
    fn valid_frames_parse_with_the_domain_crate_and_cover_every_kind() {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for line in generate(&config(3, 0.0)) {
            let event =
                domain::jetstream::Event::parse(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let kind = match &event.body {
                domain::jetstream::EventBody::Commit(c) => {
                    format!("{}:{:?}", c.collection.as_str(), c.operation)
                }
                domain::jetstream::EventBody::Identity(_) => "identity".into(),
                domain::jetstream::EventBody::Account(_) => "account".into(),
                domain::jetstream::EventBody::Unknown { kind } => kind.clone(),
            };
            if event.change().is_err() {
                panic!("status change refused: {line}");
            }
            *kinds.entry(kind).or_default() += 1;
        }
        for expected in [
            "xyz.statusphere.status:Create",
            "xyz.statusphere.status:Update",
            "xyz.statusphere.status:Delete",
            "app.bsky.feed.post:Create",
            "identity",
            "account",
        ] {
            assert!(
                kinds.get(expected).copied().unwrap_or(0) > 10,
                "{expected}: {kinds:?}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_all_refused_by_the_domain_crate() {
        let lines = generate(&GenerateConfig {
            malformed_share: 1.0,
            ..config(5, 1.0)
        });
        for line in lines.iter().take(MALFORMED.len() * 3) {
            let refused = match domain::jetstream::Event::parse(line) {
                Err(_) => true,
                Ok(event) => {
                    matches!(event.body, domain::jetstream::EventBody::Unknown { .. })
                        || event.change().is_err()
                }
            };
            assert!(refused, "accepted: {}", &line[..line.len().min(200)]);
        }
    }
}
