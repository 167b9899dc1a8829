//! The backfill's rules (docs/backfill.md), pure: what the listener's `Backfill` object keeps
//! ([`Progress`]), how it reads the relay's list of accounts ([`relay_page`]), what an account's
//! read settles to in D1 and in the counters ([`Progress::settle`]), what one invocation records
//! ([`Recording`]), and when the next invocation runs ([`Progress::next_alarm_ms`]).
//!
//! The budgets are the free plan's: an invocation makes at most `Settings::subrequests` outbound
//! calls (D1 and the broker included), and a day writes at most `Settings::daily_rows` D1 rows
//! (as D1 counts them); past either, the work waits for the next invocation or the next day.

use serde::{Deserialize, Serialize};

use crate::sql::{self, multi_row, Statement};
use crate::status::Status;
use crate::wire::{with_counts, ServerMessage};
use crate::{bounded, Error, Result};

/// DIDs asked for per `com.atproto.sync.listReposByCollection` page.
pub const RELAY_PAGE: usize = 500;
/// The longest relay cursor kept; a longer one ends the listing (a relay that lies).
pub const MAX_RELAY_CURSOR: usize = 512;
/// Failed reads after which an account is given up by default (`failed`, reported, not tried
/// again until an operator's restart).
pub const MAX_ATTEMPTS: i64 = 6;
/// The longest wait between two reads of a failing account.
pub const MAX_RETRY_MS: i64 = 6 * 3_600_000;
/// Subrequests an invocation keeps for itself: the claim, the write, the publish, a relay page
/// and its insert.
pub const OVERHEAD: u32 = 5;
/// Status lines one invocation publishes at most: the newest (an open page shows 30 lines; the
/// rest are read on reload).
pub const PUBLISHED_STATUSES: usize = 100;

const DAY_MS: i64 = 86_400_000;

/// The operator's settings (wrangler vars of the listener; docs/backfill.md lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The relay's base URL; `None`: no backfill.
    pub relay: Option<String>,
    /// The run: a new value starts the backfill over (an operator's restart).
    pub run: String,
    /// Outbound calls per invocation (the free plan's 50).
    pub subrequests: u32,
    /// D1 rows written per UTC day, at most.
    pub daily_rows: u64,
    /// `listRecords` pages read per account, at most (100 statuses each, newest first).
    pub max_pages: u32,
    /// The first wait after a failed read; it doubles with each further failure.
    pub retry_ms: i64,
    /// Failed reads after which an account is given up.
    pub attempts: i64,
}

impl Settings {
    /// The most subrequests one account's read can make: its DID document, the two-way check of
    /// its handle (DNS, then the handle's well-known file), its latest commit, its pages of
    /// records, its profile.
    pub fn per_account(&self) -> u32 {
        1 + 2 + 1 + self.max_pages + 1
    }

    /// Whether `left` subrequests are enough to read one more account and record it.
    pub fn can_read(&self, left: u32) -> bool {
        left >= self.per_account() + 2
    }

    /// How many accounts an invocation with `left` subrequests claims at a time: as many as can
    /// be read if each costs its usual (the identity, the commit, one page, the profile); the
    /// claim's rest stays due.
    pub fn claim_size(&self, left: u32) -> i64 {
        i64::from(left.saturating_sub(OVERHEAD) / 4).max(1)
    }

    /// The wait after `attempts` failed reads.
    pub fn retry_after_ms(&self, attempts: i64) -> i64 {
        let doublings = (attempts - 1).clamp(0, 20) as u32;
        self.retry_ms
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_MS)
    }
}

/// Where the backfill is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No relay configured.
    #[default]
    Off,
    /// Waiting for the listener's first position on Jetstream (the seam, docs/backfill.md).
    Waiting,
    /// Listing accounts and reading them.
    Running,
    /// The day's D1 rows are spent: it goes on after midnight UTC.
    Paused,
    /// Every listed account was tried; some failed and wait for their next try.
    Retrying,
    /// Every listed account is read or given up.
    Done,
}

/// The backfill's state, kept in its Durable Object's storage and shown in `/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub phase: Phase,
    /// The run this progress belongs to (`Settings::run`).
    pub run: String,
    pub relay: Option<String>,
    /// Where the relay's listing goes on.
    pub relay_cursor: Option<String>,
    /// The relay has listed everything.
    pub listed_all: bool,
    /// The listener's Jetstream position when the first repository was read (unix µs): every
    /// change after it reaches D1 through the listener.
    pub jetstream_from_us: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Accounts listed by the relay (each once).
    pub listed: u64,
    /// Accounts read.
    pub done: u64,
    /// Accounts given up after [`MAX_ATTEMPTS`] failed reads.
    pub failed: u64,
    /// Accounts whose last read failed and which are due again later.
    pub retrying: u64,
    /// Accounts not read yet (retrying ones included).
    pub pending: u64,
    /// Statuses read (valid ones), records refused, accounts with more statuses than were read.
    pub records: u64,
    pub dropped: u64,
    pub truncated: u64,
    /// Totals: invocations, outbound calls, D1 rows written.
    pub invocations: u64,
    pub subrequests: u64,
    pub rows_written: u64,
    /// The UTC day (days since 1970) `rows_today` counts.
    pub day: i64,
    pub rows_today: u64,
    pub last_error: Option<String>,
    /// When the next invocation is due (unix ms), if one is.
    pub next_alarm_ms: Option<i64>,
}

/// One account claimed for a read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claimed {
    pub did: String,
    pub attempts: i64,
}

/// How one account's read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read at revision `rev`: `records` valid statuses (and `dropped` refused, the last reason
    /// in `note`); `truncated` if it has more than were read.
    Read {
        rev: String,
        records: u64,
        dropped: u64,
        truncated: bool,
        note: Option<String>,
    },
    /// The PDS (or the identity) failed or lied; tried again later.
    Failed { error: String },
    /// Not finished: the invocation's budget ran out first. Due again at once; not a failure.
    Unfinished,
}

/// An account's read, for the D1 write: what to record besides its progress row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    pub did: String,
    /// Its handle, verified both ways.
    pub handle: Option<String>,
    /// Its profile's display name as read (`Some(None)`: no profile, or no name in it); `None`
    /// when the profile could not be read (the name stays as it was).
    pub display_name: Option<Option<String>>,
    pub statuses: Vec<Status>,
}

/// The relay's answer to one `listReposByCollection` page, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayPage {
    pub dids: Vec<String>,
    /// Entries that were not DIDs (skipped).
    pub skipped: usize,
    /// Where the next page starts; `None`: the listing is over.
    pub cursor: Option<String>,
}

#[derive(Deserialize)]
struct ListRepos {
    repos: Vec<serde_json::Value>,
    #[serde(default)]
    cursor: Option<String>,
}

/// Reads a `listReposByCollection` answer. The relay is remote input: entries that are not DIDs
/// of a method the app resolves are skipped, a page longer than asked is cut, and a cursor that
/// is empty, too long, the one just used, or on an empty page ends the listing (a relay that
/// loops cannot keep the backfill listing for ever).
pub fn relay_page(body: &[u8], asked_after: Option<&str>) -> Result<RelayPage> {
    let listed: ListRepos =
        serde_json::from_slice(body).map_err(|e| Error::Json(bounded(&e.to_string())))?;
    let mut page = RelayPage::default();
    let empty = listed.repos.is_empty();
    for repo in listed.repos.into_iter().take(RELAY_PAGE) {
        match repo.get("did").and_then(|d| d.as_str()) {
            Some(did) if lexicon::syntax::is_supported_did(did) => page.dids.push(did.to_owned()),
            _ => page.skipped += 1,
        }
    }
    page.cursor = listed.cursor.filter(|c| {
        !empty && !c.is_empty() && c.len() <= MAX_RELAY_CURSOR && Some(c.as_str()) != asked_after
    });
    Ok(page)
}

/// What the next invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Work is left now: go on at once.
    Soon,
    /// Nothing is due before this time (unix ms).
    At(i64),
    /// Nothing is left to do.
    Idle,
}

impl Progress {
    /// A fresh progress for `settings`' run (its relay, nothing read).
    pub fn start(settings: &Settings, now_ms: i64) -> Progress {
        Progress {
            phase: if settings.relay.is_some() {
                Phase::Waiting
            } else {
                Phase::Off
            },
            run: settings.run.clone(),
            relay: settings.relay.clone(),
            day: now_ms.div_euclid(DAY_MS),
            ..Progress::default()
        }
    }

    /// Whether this progress is of another run than `settings` say (an operator's restart, or a
    /// relay changed): then the backfill starts over.
    pub fn is_stale(&self, settings: &Settings) -> bool {
        self.run != settings.run || self.relay != settings.relay
    }

    /// Counts `rows` D1 rows written now (the day rolls over at midnight UTC).
    pub fn wrote(&mut self, rows: u64, now_ms: i64) {
        self.roll_day(now_ms);
        self.rows_written += rows;
        self.rows_today += rows;
    }

    fn roll_day(&mut self, now_ms: i64) {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.rows_today = 0;
        }
    }

    /// Whether the day's D1 rows are spent.
    pub fn day_spent(&mut self, settings: &Settings, now_ms: i64) -> bool {
        self.roll_day(now_ms);
        self.rows_today >= settings.daily_rows
    }

    /// Counts `new` accounts the relay listed.
    pub fn listed(&mut self, new: u64) {
        self.listed += new;
        self.recount();
    }

    /// What `outcome` of `claimed`'s read writes to its progress row, and the counters it moves.
    pub fn settle(
        &mut self,
        settings: &Settings,
        claimed: &Claimed,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Option<RepoRow> {
        let was_retrying = claimed.attempts > 0;
        let row = match outcome {
            Outcome::Unfinished => return None,
            Outcome::Read {
                rev,
                records,
                dropped,
                truncated,
                note,
            } => {
                self.done += 1;
                self.records += records;
                self.dropped += dropped;
                self.truncated += u64::from(*truncated);
                self.retrying -= u64::from(was_retrying).min(self.retrying);
                RepoRow {
                    did: claimed.did.clone(),
                    state: "done",
                    attempts: claimed.attempts,
                    next_try: now_ms,
                    rev: Some(rev.clone()),
                    records: *records as i64,
                    dropped: *dropped as i64,
                    error: note.clone(),
                    updated_at: now_ms,
                }
            }
            Outcome::Failed { error } => {
                let attempts = claimed.attempts + 1;
                let give_up = attempts >= settings.attempts;
                if give_up {
                    self.failed += 1;
                    self.retrying -= u64::from(was_retrying).min(self.retrying);
                } else if !was_retrying {
                    self.retrying += 1;
                }
                self.last_error = Some(bounded(&format!("{}: {error}", claimed.did)));
                RepoRow {
                    did: claimed.did.clone(),
                    state: if give_up { "failed" } else { "pending" },
                    attempts,
                    next_try: now_ms + settings.retry_after_ms(attempts),
                    rev: None,
                    records: 0,
                    dropped: 0,
                    error: Some(bounded(error)),
                    updated_at: now_ms,
                }
            }
        };
        self.recount();
        Some(row)
    }

    fn recount(&mut self) {
        self.pending = self.listed.saturating_sub(self.done + self.failed);
    }

    /// Takes the accounts' counters from D1's rows ([`tally`]): an invocation that died after
    /// its D1 transaction and before its progress was stored (a deploy, an eviction) left them
    /// short of what D1 holds.
    pub fn tallied(&mut self, tally: Tally) {
        self.listed = tally.listed;
        self.done = tally.done;
        self.failed = tally.failed;
        self.retrying = tally.retrying;
        self.records = tally.records;
        self.dropped = tally.dropped;
        self.recount();
    }

    /// When the next invocation runs, and the phase that leaves: `due_ms` is the earliest
    /// pending account's `next_try`, if any is pending; `more_now` says this invocation stopped
    /// with work due (its budget ran out).
    pub fn next_alarm_ms(
        &mut self,
        settings: &Settings,
        more_now: bool,
        due_ms: Option<i64>,
        now_ms: i64,
    ) -> Next {
        if self.phase == Phase::Off || self.phase == Phase::Waiting {
            return Next::Idle;
        }
        if self.day_spent(settings, now_ms) {
            self.phase = Phase::Paused;
            return Next::At((self.day + 1) * DAY_MS);
        }
        self.phase = Phase::Running;
        if more_now || !self.listed_all {
            return Next::Soon;
        }
        match due_ms {
            Some(due) if due <= now_ms => Next::Soon,
            Some(due) => {
                self.phase = Phase::Retrying;
                Next::At(due)
            }
            None => {
                self.mark_done(now_ms);
                Next::Idle
            }
        }
    }

    fn mark_done(&mut self, now_ms: i64) {
        self.phase = Phase::Done;
        self.finished_ms.get_or_insert(now_ms);
    }
}

/// An account's progress row (`backfill_repo`, migration 0014).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRow {
    pub did: String,
    pub state: &'static str,
    pub attempts: i64,
    pub next_try: i64,
    pub rev: Option<String>,
    pub records: i64,
    pub dropped: i64,
    pub error: Option<String>,
    pub updated_at: i64,
}

// ---------------------------------------------------------------------------------------------
// SQL

/// Adds the relay's `dids` as pending accounts; an account listed before keeps its row. Returns
/// the DIDs that were new.
pub fn insert_listed(dids: &[String], now_ms: i64) -> Vec<Statement> {
    let rows = dids
        .iter()
        .map(|did| vec![did.as_str().into(), now_ms.into()])
        .collect();
    multi_row(
        "INSERT INTO backfill_repo (did, updated_at) VALUES",
        "ON CONFLICT (did) DO NOTHING RETURNING did",
        rows,
    )
}

/// Up to `limit` pending accounts due at `now_ms`, the longest due first.
pub fn claim_due(now_ms: i64, limit: i64) -> Statement {
    Statement::new(
        "SELECT did, attempts FROM backfill_repo WHERE state = 'pending' AND next_try <= ?1 \
         ORDER BY next_try, did LIMIT ?2",
        vec![now_ms.into(), limit.into()],
    )
}

/// When the earliest pending account is due (`next_try`, NULL when none is pending).
pub fn next_due() -> Statement {
    Statement::new(
        "SELECT MIN(next_try) AS next_try FROM backfill_repo WHERE state = 'pending'",
        vec![],
    )
}

/// The accounts' progress as D1 has it ([`Tally`]): what the counters of [`Progress`] say
/// unless an invocation died between its D1 transaction and storing its progress.
pub fn tally() -> Statement {
    Statement::new(
        "SELECT COUNT(*) AS listed, COALESCE(SUM(state = 'done'), 0) AS done, \
         COALESCE(SUM(state = 'failed'), 0) AS failed, \
         COALESCE(SUM(state = 'pending' AND attempts > 0), 0) AS retrying, \
         COALESCE(SUM(records), 0) AS records, COALESCE(SUM(dropped), 0) AS dropped \
         FROM backfill_repo",
        vec![],
    )
}

/// A row of [`tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Tally {
    pub listed: u64,
    pub done: u64,
    pub failed: u64,
    pub retrying: u64,
    pub records: u64,
    pub dropped: u64,
}

/// Writes accounts' progress rows.
pub fn settle_rows(rows: &[RepoRow]) -> Vec<Statement> {
    let values = rows
        .iter()
        .map(|r| {
            vec![
                r.did.as_str().into(),
                r.state.into(),
                r.attempts.into(),
                r.next_try.into(),
                r.rev.as_deref().into(),
                r.records.into(),
                r.dropped.into(),
                r.error.as_deref().into(),
                r.updated_at.into(),
            ]
        })
        .collect();
    multi_row(
        "INSERT INTO backfill_repo \
         (did, state, attempts, next_try, rev, records, dropped, error, updated_at) VALUES",
        "ON CONFLICT (did) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, \
         next_try = excluded.next_try, rev = excluded.rev, records = excluded.records, \
         dropped = excluded.dropped, error = excluded.error, updated_at = excluded.updated_at",
        values,
    )
}

/// An operator's restart: every account's progress forgotten (the statuses stay).
pub fn forget_all() -> Statement {
    Statement::new("DELETE FROM backfill_repo", vec![])
}

// ---------------------------------------------------------------------------------------------
// One invocation's write

/// What a statement of a [`Recording`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Nothing,
    Statuses,
    Handle,
    Profile,
    Counts,
}

/// One invocation's D1 write, one transaction: the statuses read (by the same idempotent import
/// as a sign-in's: a newer write already in D1 wins, a status the app has changes nothing), the
/// verified handles and display names, the accounts' progress rows, and the counts changed.
#[derive(Debug, Clone)]
pub struct Recording {
    pub statements: Vec<Statement>,
    parts: Vec<Part>,
    /// Each account's handle and display name, for the status lines published.
    names: Vec<(String, Option<String>, Option<String>)>,
}

impl Recording {
    pub fn plan(accounts: &[Account], rows: &[RepoRow], now_ms: i64) -> Recording {
        let mut recording = Recording {
            statements: Vec::new(),
            parts: Vec::new(),
            names: accounts
                .iter()
                .map(|a| {
                    (
                        a.did.clone(),
                        a.handle.clone(),
                        a.display_name.clone().flatten(),
                    )
                })
                .collect(),
        };
        recording.push(sql::mark_counts(), Part::Nothing);
        let mut statuses: Vec<Status> = Vec::new();
        for account in accounts {
            for status in &account.statuses {
                // A PDS that lists a record twice (a looping cursor) records it once.
                if !statuses.iter().any(|s| s.uri == status.uri) {
                    statuses.push(status.clone());
                }
            }
        }
        for statement in sql::import_statuses(&statuses) {
            recording.push(statement, Part::Statuses);
        }
        for account in accounts {
            if let Some(handle) = &account.handle {
                recording.push(
                    sql::learn_handle(&account.did, handle, now_ms * 1_000),
                    Part::Handle,
                );
            }
            if let Some(name) = &account.display_name {
                recording.push(
                    sql::set_display_name(&account.did, name.as_deref(), now_ms),
                    Part::Profile,
                );
            }
        }
        for statement in settle_rows(rows) {
            recording.push(statement, Part::Nothing);
        }
        recording.push(sql::counts_changed(), Part::Counts);
        recording
    }

    fn push(&mut self, statement: Statement, part: Part) {
        self.statements.push(statement);
        self.parts.push(part);
    }

    /// What open pages are told, from the rows each statement returned: the newest
    /// [`PUBLISHED_STATUSES`] status lines that changed, the handles and names that changed, then
    /// the counts.
    pub fn messages(&self, rows: &[Vec<serde_json::Value>]) -> Result<Vec<ServerMessage>> {
        let json = |e: serde_json::Error| Error::Json(bounded(&e.to_string()));
        let mut statuses = Vec::new();
        let mut others = Vec::new();
        let mut counts = Vec::new();
        for (part, rows) in self.parts.iter().zip(rows) {
            for row in rows {
                match part {
                    Part::Nothing => {}
                    Part::Statuses => {
                        let mut view: sql::StatusViewRow =
                            serde_json::from_value(row.clone()).map_err(json)?;
                        if let Some((_, handle, name)) =
                            self.names.iter().find(|(did, ..)| *did == view.author_did)
                        {
                            view.handle = handle.clone();
                            view.display_name = name.clone();
                        }
                        statuses.push(view.into_view());
                    }
                    Part::Handle => {
                        others.push(ServerMessage::HandleChanged {
                            did: text(row, "did")?,
                            handle: row["handle"].as_str().map(str::to_owned),
                        });
                    }
                    Part::Profile => {
                        others.push(ServerMessage::ProfileChanged {
                            did: text(row, "did")?,
                            display_name: row["display_name"].as_str().map(str::to_owned),
                        });
                    }
                    Part::Counts => counts.push(serde_json::from_value(row.clone()).map_err(json)?),
                }
            }
        }
        statuses.sort_by_key(|s| std::cmp::Reverse(s.indexed_at));
        statuses.truncate(PUBLISHED_STATUSES);
        // Oldest first, as a page applies them: each lands in its place in the feed.
        let mut messages: Vec<ServerMessage> = statuses
            .into_iter()
            .rev()
            .map(|status| ServerMessage::StatusUpserted { status })
            .collect();
        messages.extend(others);
        Ok(with_counts(messages, counts))
    }
}

fn text(row: &serde_json::Value, field: &'static str) -> Result<String> {
    row[field]
        .as_str()
        .map(str::to_owned)
        .ok_or(Error::Missing(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_083_200_000;

    fn settings() -> Settings {
        Settings {
            relay: Some("https://relay.example".into()),
            run: "1".into(),
            subrequests: 50,
            daily_rows: 1_000,
            max_pages: 3,
            retry_ms: 60_000,
            attempts: MAX_ATTEMPTS,
        }
    }

    fn claimed(did: &str, attempts: i64) -> Claimed {
        Claimed {
            did: did.into(),
            attempts,
        }
    }

    fn read(records: u64) -> Outcome {
        Outcome::Read {
            rev: "3lbk222222222".into(),
            records,
            dropped: 0,
            truncated: false,
            note: None,
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed {
            error: "connection refused".into(),
        }
    }

    #[test]
    fn the_relay_is_read_as_remote_input() {
        let body = br#"{"repos":[{"did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz"},{"did":"not a did"},
            {"did":7},{},{"did":"did:key:z6Mk"},{"did":"did:web:example.com"}],"cursor":"c1"}"#;
        let page = relay_page(body, None).unwrap();
        assert_eq!(
            page.dids,
            ["did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:example.com"]
        );
        assert_eq!((page.skipped, page.cursor.as_deref()), (4, Some("c1")));
        assert_eq!(relay_page(body, Some("c1")).unwrap().cursor, None, "a loop");
        let empty = br#"{"repos":[],"cursor":"c2"}"#;
        assert_eq!(relay_page(empty, None).unwrap().cursor, None);
        let long = format!(
            r#"{{"repos":[{{"did":"did:web:a.example"}}],"cursor":"{}"}}"#,
            "x".repeat(MAX_RELAY_CURSOR + 1)
        );
        assert_eq!(relay_page(long.as_bytes(), None).unwrap().cursor, None);
        let many: Vec<String> = (0..RELAY_PAGE + 10)
            .map(|i| format!(r#"{{"did":"did:web:a{i}.example"}}"#))
            .collect();
        let body = format!(r#"{{"repos":[{}]}}"#, many.join(","));
        assert_eq!(
            relay_page(body.as_bytes(), None).unwrap().dids.len(),
            RELAY_PAGE
        );
        assert!(relay_page(b"{\"repos\":{}}", None).is_err());
        assert!(relay_page(b"<html>", None).is_err());
    }

    #[test]
    fn reads_count_once_and_failures_back_off_then_give_up() {
        let s = settings();
        let mut p = Progress::start(&s, NOW);
        p.listed(3);
        assert_eq!(p.pending, 3);
        let row = p.settle(&s, &claimed("a", 0), &read(4), NOW).unwrap();
        assert_eq!((row.state, p.done, p.records, p.pending), ("done", 1, 4, 2));

        let mut attempts = 0;
        let mut waits = Vec::new();
        loop {
            let row = p
                .settle(&s, &claimed("b", attempts), &failed(), NOW)
                .unwrap();
            attempts = row.attempts;
            if row.state == "failed" {
                break;
            }
            assert_eq!((row.state, p.retrying), ("pending", 1));
            waits.push(row.next_try - NOW);
        }
        assert_eq!(attempts, MAX_ATTEMPTS);
        assert_eq!(
            waits,
            [60_000, 120_000, 240_000, 480_000, 960_000],
            "doubling"
        );
        assert_eq!((p.failed, p.retrying, p.pending), (1, 0, 1));
        assert!(p
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection refused"));

        // A retried account that reads at last is done, and no longer retrying.
        p.settle(&s, &claimed("c", 0), &failed(), NOW);
        assert_eq!(p.retrying, 1);
        p.settle(&s, &claimed("c", 1), &read(0), NOW);
        assert_eq!((p.retrying, p.done, p.pending), (0, 2, 0));
        assert_eq!(
            p.settle(&s, &claimed("d", 0), &Outcome::Unfinished, NOW),
            None
        );
        assert_eq!(s.retry_after_ms(40), MAX_RETRY_MS);
    }

    #[test]
    fn the_next_invocation_follows_the_work_and_the_days_rows() {
        let s = settings();
        let mut p = Progress::start(&s, NOW);
        assert_eq!(p.next_alarm_ms(&s, false, None, NOW), Next::Idle, "waiting");
        p.phase = Phase::Running;
        assert_eq!(p.next_alarm_ms(&s, false, None, NOW), Next::Soon, "listing");
        p.listed_all = true;
        assert_eq!(p.next_alarm_ms(&s, true, None, NOW), Next::Soon, "budget");
        assert_eq!(
            p.next_alarm_ms(&s, false, Some(NOW - 1), NOW),
            Next::Soon,
            "due"
        );
        assert_eq!(
            p.next_alarm_ms(&s, false, Some(NOW + 5), NOW),
            Next::At(NOW + 5)
        );
        assert_eq!((p.phase, p.finished_ms), (Phase::Retrying, None));
        assert_eq!(p.next_alarm_ms(&s, false, None, NOW + 9), Next::Idle);
        assert_eq!((p.phase, p.finished_ms), (Phase::Done, Some(NOW + 9)));
        assert_eq!(p.next_alarm_ms(&s, false, None, NOW + 20), Next::Idle);
        assert_eq!(p.finished_ms, Some(NOW + 9), "finished once");

        p.wrote(1_000, NOW);
        let midnight = (NOW / DAY_MS + 1) * DAY_MS;
        assert_eq!(p.next_alarm_ms(&s, true, None, NOW), Next::At(midnight));
        assert_eq!(p.phase, Phase::Paused);
        assert!(!p.day_spent(&s, midnight), "a new day");
        assert_eq!(p.rows_written, 1_000);
    }

    #[test]
    fn a_new_run_or_relay_starts_over_and_budgets_fit_the_plan() {
        let s = settings();
        let p = Progress::start(&s, NOW);
        assert!(!p.is_stale(&s));
        assert!(p.is_stale(&Settings {
            run: "2".into(),
            ..s.clone()
        }));
        assert!(p.is_stale(&Settings {
            relay: None,
            ..s.clone()
        }));
        assert_eq!(
            Progress::start(
                &Settings {
                    relay: None,
                    ..s.clone()
                },
                NOW
            )
            .phase,
            Phase::Off
        );
        assert_eq!(s.per_account(), 8);
        assert!(s.can_read(10) && !s.can_read(9));
        assert_eq!(s.claim_size(50), 11);
        assert_eq!(s.claim_size(0), 1);
    }
}
