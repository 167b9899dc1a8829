//! Jetstream frames from `tests/data/jetstream/`: real-format frames parse into the changes they
//! mean; hostile frames are error values (with the reason the listener counts), never panics.

use std::collections::BTreeMap;
use std::path::PathBuf;

use domain::ingest::Batch;
use domain::jetstream::{Change, Event, EventBody, Frame, NoticeLevel, MAX_CLOCK_SKEW_US};
use domain::Origin;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jetstream")
        .join(path)
}

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// 2026-12-01T00:00:00Z: "now" for these tests.
const NOW_US: i64 = 1_796_083_200_000_000;

#[test]
fn real_frames_mean_what_they_say() {
    let text = std::fs::read_to_string(data("valid.jsonl")).unwrap();
    let changes: Vec<Change> = text
        .lines()
        .map(|line| {
            let event = Event::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            event
                .change()
                .unwrap()
                .expect("every valid frame here matters")
        })
        .collect();
    assert_eq!(changes.len(), 9);

    let Change::Upsert(created) = &changes[0] else {
        panic!("{:?}", changes[0])
    };
    assert_eq!(
        created.uri,
        format!("at://{ALICE}/xyz.statusphere.status/3lbkn5xkpzs2a")
    );
    assert_eq!(created.status, "😎");
    assert_eq!(created.created_at, "2024-11-24T00:00:00.000Z");
    assert_eq!(created.indexed_at, 1_732_406_400_000, "time_us in ms");
    assert_eq!(created.rev, "3lbkn5xkq2k2a");
    assert_eq!(created.cid.as_deref(), Some("bafyreib2rxk3rh6kzwq"));
    assert_eq!(created.origin, Origin::Network);
    assert!(created.confirmed);

    let Change::Upsert(updated) = &changes[1] else {
        panic!("{:?}", changes[1])
    };
    assert_eq!(updated.uri, created.uri);
    assert_eq!(updated.status, "🇫🇷");
    assert!(updated.rev > created.rev);

    let Change::Delete(deleted) = &changes[2] else {
        panic!("{:?}", changes[2])
    };
    assert_eq!(deleted.uri, created.uri);
    assert_eq!(deleted.rev, "3lbkn5xkq2k2c");

    // An identity event drops the stored handle (it is looked up and verified later); the
    // handle it claims is parsed, lowercased, and never recorded.
    let Change::Handle(handle) = &changes[3] else {
        panic!("{:?}", changes[3])
    };
    assert_eq!(handle.handle, None, "a claimed handle is never recorded");
    let claim = Event::parse(text.lines().nth(3).unwrap()).unwrap();
    let EventBody::Identity(identity) = &claim.body else {
        panic!("{claim:?}")
    };
    assert_eq!(
        identity.handle.as_deref(),
        Some("alice.example.com"),
        "lowercased"
    );

    let Change::Account(inactive) = &changes[4] else {
        panic!("{:?}", changes[4])
    };
    assert!(!inactive.active && !inactive.purges());
    assert_eq!(inactive.status.as_deref(), Some("deactivated"));
    let Change::Account(active) = &changes[5] else {
        panic!("{:?}", changes[5])
    };
    assert!(active.active && active.status.is_none());

    let Change::Upsert(family) = &changes[6] else {
        panic!("{:?}", changes[6])
    };
    assert_eq!(family.author_did, "did:web:statusphere.example.com");
    assert_eq!(family.status, "👨‍👩‍👧‍👦");

    let Change::Account(deleted_account) = &changes[7] else {
        panic!("{:?}", changes[7])
    };
    assert!(deleted_account.purges());

    let Change::Handle(no_handle) = &changes[8] else {
        panic!("{:?}", changes[8])
    };
    assert_eq!(no_handle.handle, None);

    let with_cursor = Event::parse(text.lines().nth(6).unwrap()).unwrap();
    assert_eq!(with_cursor.seq, Some(98765));
}

/// What must come of a hostile fixture.
#[derive(Debug)]
enum Expect {
    /// Dropped, and counted under this reason.
    Drop(&'static str),
    /// Tolerated and skipped: not an error, not a change.
    Skip,
    /// Valid after all (e.g. junk in a field the lexicon does not know): kept.
    Keep,
}

use Expect::{Drop, Keep, Skip};

/// Every hostile fixture and what must come of it.
fn expectations() -> BTreeMap<&'static str, Expect> {
    BTreeMap::from([
        ("account-missing-active.json", Drop("json")),
        ("another-collection.json", Skip),
        ("commit-missing.json", Drop("commit")),
        ("create-with-null-record.json", Drop("record")),
        ("create-without-cid.json", Drop("cid")),
        ("create-without-record.json", Drop("record")),
        ("deeply-nested-frame.json", Drop("json")),
        ("deeply-nested-status.json", Drop("record")),
        ("deeply-nested-unknown-field.json", Keep),
        ("did-as-number.json", Drop("json")),
        ("empty.json", Drop("json")),
        ("frame-over-size-limit.json", Drop("frame")),
        ("impossible-date.json", Drop("record")),
        ("invalid-collection.json", Drop("collection")),
        ("invalid-datetime.json", Drop("record")),
        ("invalid-did.json", Drop("did")),
        ("invalid-rev.json", Drop("rev")),
        ("invalid-rkey.json", Drop("rkey")),
        ("invalid-utf8-escape.json", Drop("record")),
        ("missing-did.json", Drop("did")),
        ("negative-time-us.json", Drop("time_us")),
        ("not-an-object.json", Drop("json")),
        ("record-not-an-object.json", Drop("record")),
        ("record-of-another-type.json", Drop("record")),
        ("record-without-type.json", Drop("record")),
        ("rkey-not-a-tid.json", Drop("record")),
        ("status-33-bytes.json", Drop("record")),
        ("status-as-number.json", Drop("record")),
        ("status-empty.json", Drop("record")),
        ("status-huge-string.json", Drop("record")),
        ("status-two-graphemes.json", Drop("record")),
        ("time-us-as-string.json", Drop("json")),
        ("time-us-in-the-future.json", Drop("future")),
        ("truncated.json", Drop("json")),
        ("unknown-kind.json", Skip),
        ("unknown-operation.json", Drop("json")),
    ])
}

#[test]
fn hostile_frames_are_errors_with_reasons_never_panics() {
    let expected = expectations();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(data("hostile")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Read as bytes: a fixture may not even be UTF-8 text.
        let bytes = std::fs::read(&path).unwrap();
        let frame = String::from_utf8_lossy(&bytes);
        let outcome = Event::parse(&frame)
            .and_then(|event| event.as_of(NOW_US))
            .and_then(|event| event.change());
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} has no expectation in this test"));
        match (outcome, want) {
            (Ok(None), Skip) | (Ok(Some(_)), Keep) => {}
            (Err(error), Drop(reason)) => {
                assert_eq!(error.reason(), *reason, "{name}: {error}");
                // Logged errors stay bounded whatever the frame held.
                assert!(
                    error.to_string().len() < 400,
                    "{name}: unbounded error message"
                );
            }
            (got, want) => panic!("{name}: expected {want:?}, got {got:?}"),
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), expected.len(), "a fixture is missing: {seen:?}");
}

#[test]
fn the_future_is_refused_and_the_near_future_is_now() {
    let frame = |time_us: i64| {
        format!(r#"{{"did":"{ALICE}","time_us":{time_us},"kind":"identity","identity":{{}}}}"#)
    };
    let at = |time_us: i64| Event::parse(&frame(time_us)).unwrap().as_of(NOW_US);
    assert_eq!(at(NOW_US - 7).unwrap().time_us, NOW_US - 7);
    // A clock a little ahead: believed, but never later than now.
    assert_eq!(at(NOW_US + 1_000_000).unwrap().time_us, NOW_US);
    assert_eq!(at(NOW_US + MAX_CLOCK_SKEW_US).unwrap().time_us, NOW_US);
    let error = at(NOW_US + MAX_CLOCK_SKEW_US + 1).unwrap_err();
    assert_eq!(error.reason(), "future");
    assert_eq!(at(i64::MAX).unwrap_err().reason(), "future");
}

#[test]
fn unknown_kinds_are_tolerated() {
    let event = Event::parse(
        r#"{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","time_us":1,"kind":"sync","sync":{}}"#,
    )
    .unwrap();
    assert!(matches!(event.body, EventBody::Unknown { ref kind } if kind == "sync"));
    assert!(event.change().unwrap().is_none());
}

/// The v2 wire (`subscribeEvents`) carries the same events as the legacy one: each frame of
/// `valid-v2.jsonl` is the frame of `valid.jsonl` on the same line, framed as a v2 instance frames
/// it, and means the same, with its `seq`.
#[test]
fn the_v2_wire_means_what_the_legacy_wire_means() {
    let v1 = std::fs::read_to_string(data("valid.jsonl")).unwrap();
    let v2 = std::fs::read_to_string(data("valid-v2.jsonl")).unwrap();
    assert_eq!(v1.lines().count(), v2.lines().count());
    for (i, (old, new)) in v1.lines().zip(v2.lines()).enumerate() {
        let old = Event::parse(old).unwrap();
        let new = Event::parse(new).unwrap_or_else(|e| panic!("{e}: {new}"));
        assert_eq!(new.did, old.did, "line {i}");
        assert_eq!(
            new.time_us, old.time_us,
            "line {i}: the time to the microsecond"
        );
        assert_eq!(new.seq, Some(1000 + i as u64));
        assert_eq!(new.change().unwrap(), old.change().unwrap(), "line {i}");
    }
    // A batch of either wire plans the same statements.
    let plan = |text: &str| Batch::plan(text.lines(), NOW_US);
    let (old, new) = (plan(&v1), plan(&v2));
    assert_eq!(old.statements, new.statements);
    assert_eq!(old.cursor_us, new.cursor_us);
    assert_eq!(new.seq, Some(1000 + v2.lines().count() as u64 - 1));
    assert_eq!(old.seq, Some(98765), "the legacy wire's `cursor`");
}

#[test]
fn v2_notices_are_not_events() {
    let frames = [
        r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#info","name":"OutdatedCursor","message":"starting at seq 7"}}"#,
        r#"{"$type":"error","error":"ConsumerTooSlow","message":"reconnect with cursor=9"}"#,
        r#"{"$type":"hello-from-the-future"}"#,
        r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents.later#thing"}}"#,
    ];
    let levels: Vec<NoticeLevel> = frames
        .iter()
        .map(
            |f| match Frame::parse(f).unwrap_or_else(|e| panic!("{e}: {f}")) {
                Frame::Notice(notice) => notice.level,
                Frame::Event(event) => panic!("an event: {event:?}"),
            },
        )
        .collect();
    assert_eq!(
        levels,
        [
            NoticeLevel::Info,
            NoticeLevel::Error,
            NoticeLevel::Unknown,
            NoticeLevel::Unknown
        ]
    );
    let Frame::Notice(info) = Frame::parse(frames[0]).unwrap() else {
        unreachable!()
    };
    assert_eq!(info.name, "OutdatedCursor");
    assert_eq!(info.message.as_deref(), Some("starting at seq 7"));
    // A batch counts them as seen, and neither drops them nor moves the cursor.
    let batch = Batch::plan(frames, NOW_US);
    assert_eq!(
        (batch.seen, batch.dropped.len(), batch.cursor_us),
        (4, 0, None)
    );
    assert_eq!(batch.notices.len(), 4);
}

#[test]
fn v2_sync_markers_are_tolerated_and_bad_v2_frames_are_dropped_with_reasons() {
    let sync = r#"{"$type":"message","payload":{"$type":"network.bsky.jetstream.subscribeEvents#sync","seq":5,"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz","time":"2026-11-30T10:00:00.000000Z","sync":{"rev":"3lbkn5xkq2k2a"}}}"#;
    let event = Event::parse(sync).unwrap();
    assert!(matches!(event.body, EventBody::Unknown { ref kind } if kind == "sync"));
    assert_eq!(event.seq, Some(5));
    assert!(event.change().unwrap().is_none());

    let commit = |fields: &str| {
        format!(
            r#"{{"$type":"message","payload":{{"$type":"network.bsky.jetstream.subscribeEvents#commit","seq":6,{fields}}}}}"#
        )
    };
    let did = r#""did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz""#;
    let time = r#""time":"2026-11-30T10:00:00.000000Z""#;
    let rest = r#""rev":"3lbkn5xkq2k2a","operation":"delete","collection":"xyz.statusphere.status","rkey":"3lbkn5xkpzs2a""#;
    for (fields, reason) in [
        (format!("{time},{rest}"), "did"),
        (format!("{did},{rest}"), "time"),
        (format!(r#"{did},"time":"yesterday",{rest}"#), "time"),
        (
            format!(r#"{did},"time":"1970-01-01T00:00:00Z",{rest}"#),
            "time",
        ),
        (format!("{did},{time}"), "rev"),
        (format!(r#"{did},"time":12,{rest}"#), "json"),
        (
            format!(r#"{did},"time":"2100-01-01T00:00:00.000000Z",{rest}"#),
            "future",
        ),
    ] {
        let frame = commit(&fields);
        let error = Event::parse(&frame)
            .and_then(|e| e.as_of(NOW_US))
            .unwrap_err();
        assert_eq!(error.reason(), reason, "{frame}: {error}");
    }
    assert_eq!(
        Frame::parse(r#"{"$type":"message"}"#).unwrap_err().reason(),
        "payload"
    );
}
