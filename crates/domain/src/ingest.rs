//! The listener's pure core: Jetstream frames in; out, one D1 batch (statements within D1's limits,
//! run as one transaction), the cursor it covers, what was dropped and why, and, from the rows the
//! statements return, the messages for the broker.
//!
//! The worker only moves bytes: it reads frames, runs [`Batch::statements`] as one D1 batch, stores
//! [`Batch::cursor_us`] once that committed, and publishes [`Batch::messages`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::jetstream::{AccountUpdate, Change, Frame, HandleUpdate, Notice, Tombstone};
use crate::sql::{self, Statement, UpsertedRow};
use crate::status::Status;
use crate::wire::ServerMessage;
use crate::{bounded, Error};

/// A frame that was not recorded: why (a fixed label for counters) and a bounded excerpt for the
/// log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub reason: &'static str,
    pub detail: String,
}

/// What a statement of the batch is, so that the rows it returns can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `sql::set_handles`: returns `(did, handle)` of handles that changed.
    Handles,
    /// `sql::set_account_states`: returns `(did, active)` of accounts whose state changed.
    Accounts,
    /// `sql::purge_statuses`: returns nothing.
    Purge,
    /// `sql::requeue_handle_lookups`: returns nothing.
    Lookups,
    /// `sql::upsert_statuses`: returns a `sql::UpsertedRow` of each status written.
    Upserts,
    /// `sql::delete_statuses`: returns `(uri, author_did)` of tombstones written.
    Deletes,
    /// `sql::accounts_of`: `(did, handle, active)` of the upserted statuses' authors.
    Authors,
    /// `sql::mark_counts`, first: returns nothing.
    CountsMark,
    /// `sql::counts_changed`, last: the counts the batch changed, with their versions.
    Counts,
}

/// One batch of frames, planned.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub statements: Vec<Statement>,
    /// `parts[i]` says what `statements[i]` is.
    pub parts: Vec<Part>,
    /// The greatest `time_us` of the valid events: the cursor to store once the batch committed.
    /// Dropped frames do not move it (a hostile `time_us` could skip real events).
    pub cursor_us: Option<i64>,
    /// The greatest instance sequence number of the valid events, if the server numbers them:
    /// the exact place to resume on that instance (`domain::cursor`).
    pub seq: Option<u64>,
    /// Frames read.
    pub seen: u64,
    /// Valid events that change what the app knows (before idempotency: a replay still counts).
    pub changes: u64,
    /// Valid events that do not concern the app (other collections, unknown kinds).
    pub ignored: u64,
    pub dropped: Vec<Dropped>,
    /// What the server said about the stream (v2 `#info` and `error` frames, unknown types).
    pub notices: Vec<Notice>,
    /// The statuses upserted: what an upsert's row stands for, found by its URI and revision
    /// ([`Batch::upserted`]). Of two with the same pair (the same commit, or a hostile stream's
    /// lie), the first: a later one changes nothing (`sql::upsert_statuses` lands only newer
    /// revisions or a first confirmation).
    upserts: Vec<Status>,
    /// Where each `upserted_key` is in `upserts`. A map of strings to indices, as [`Phases`]
    /// keeps: its code is in the listener's wasm already (a map keyed by pairs was 3 KB more).
    upserted_at: BTreeMap<String, usize>,
}

/// A status's URI and revision as one key: a space joins them, which neither holds (both are
/// validated: an AT URI of a DID, a collection and a record key; a TID).
fn upserted_key(uri: &str, rev: &str) -> String {
    format!("{uri} {rev}")
}

impl Batch {
    /// Parses, validates and plans `frames`, in order, as of `now_us` (unix µs: events from the
    /// future are dropped, see [`crate::jetstream::Event::as_of`]).
    ///
    /// The result does not depend on where a stream is cut into batches: applying the batches one
    /// after the other gives the same tables as applying the events one by one. Within a run of
    /// status events (or of identity and account events) statements are grouped by kind, which is
    /// safe because revisions and event times decide, not arrival order. Between an account's
    /// runs its order in the stream is kept, because whether an account is known
    /// (`sql::set_handles`) and whether its statuses are purged depend on what came before; but
    /// one account's events never depend on another's, so the runs are [`Phases`]: each event
    /// joins the first phase of its family not before its account's previous event, and a batch
    /// is a few phases of many accounts each rather than a statement or more per switch between
    /// families (the network interleaves identity and account events of every account with the
    /// statuses: runs of one or two events).
    pub fn plan<'a>(frames: impl IntoIterator<Item = &'a str>, now_us: i64) -> Batch {
        let mut batch = Batch::default();
        let mut phases = Phases::default();
        let mut authors: BTreeSet<String> = BTreeSet::new();
        for frame in frames {
            batch.seen += 1;
            let event = match Frame::parse(frame) {
                Ok(Frame::Event(event)) => event.as_of(now_us),
                Ok(Frame::Notice(notice)) => {
                    batch.notices.push(notice);
                    continue;
                }
                Err(error) => Err(error),
            };
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    batch.drop(&error);
                    continue;
                }
            };
            match event.change() {
                Ok(Some(change)) => {
                    batch.changes += 1;
                    if let Change::Upsert(status) = &change {
                        authors.insert(status.author_did.clone());
                    }
                    phases.push(change);
                }
                Ok(None) => batch.ignored += 1,
                Err(error) => {
                    batch.drop(&error);
                    continue;
                }
            }
            batch.cursor_us = batch.cursor_us.max(Some(event.time_us));
            batch.seq = batch.seq.max(event.seq);
        }
        for mut run in phases.runs {
            batch.flush(&mut run);
        }
        // Last, so that it sees every handle and account state above.
        batch.add(
            Part::Authors,
            sql::accounts_of(&authors.iter().map(String::as_str).collect::<Vec<_>>()),
        );
        if batch.changes > 0 {
            // The counts this batch changed, published with their versions (migration 0011).
            batch.statements.insert(0, sql::mark_counts());
            batch.parts.insert(0, Part::CountsMark);
            batch.add(Part::Counts, vec![sql::counts_changed()]);
        }
        batch
    }

    /// The same batch with each statement of several rows written as one statement a row
    /// (`sql::one_row_each`): the baseline the listener runs with `STATEMENT_ROWS = "one"`, for
    /// `cargo xtask bench listener` to compare with. Same rows, same results, same messages.
    pub fn one_row_per_statement(mut self) -> Batch {
        let (mut statements, mut parts) = (Vec::new(), Vec::new());
        for (statement, part) in self.statements.drain(..).zip(self.parts.drain(..)) {
            let split = sql::one_row_each(statement);
            parts.extend(std::iter::repeat_n(part, split.len()));
            statements.extend(split);
        }
        self.statements = statements;
        self.parts = parts;
        self
    }

    /// Turns a run of events into statements and empties it.
    fn flush(&mut self, run: &mut Run) {
        let run = std::mem::take(run);
        // Upserts before deletes: the revisions decide, whatever order the two arrived in.
        self.add(Part::Upserts, sql::upsert_statuses(&run.upserts));
        for status in run.upserts {
            let key = upserted_key(&status.uri, &status.rev);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.upserted_at.entry(key) {
                slot.insert(self.upserts.len());
                self.upserts.push(status);
            }
        }
        self.add(Part::Deletes, sql::delete_statuses(&run.deletes));
        self.add(Part::Handles, sql::set_handles(&run.handles));
        let changed: BTreeSet<&str> = run.handles.iter().map(|h| h.did.as_str()).collect();
        self.add(
            Part::Lookups,
            sql::requeue_handle_lookups(&changed.into_iter().collect::<Vec<_>>()),
        );
        self.add(Part::Accounts, sql::set_account_states(&run.accounts));
        // Per account, its latest deletion in the run.
        let mut purged: std::collections::BTreeMap<&str, i64> = Default::default();
        for account in run.accounts.iter().filter(|a| a.purges()) {
            let at = purged.entry(account.did.as_str()).or_default();
            *at = (*at).max(account.time_us);
        }
        let purged: Vec<(&str, i64)> = purged.into_iter().collect();
        self.add(Part::Purge, sql::purge_statuses(&purged));
    }

    /// The status this batch upserts at `uri` with revision `rev`, if it does.
    pub fn upserted(&self, uri: &str, rev: &str) -> Option<&Status> {
        let at = *self.upserted_at.get(&upserted_key(uri, rev))?;
        self.upserts.get(at)
    }

    fn drop(&mut self, error: &Error) {
        self.dropped.push(Dropped {
            reason: error.reason(),
            detail: bounded(&error.to_string()),
        });
    }

    fn add(&mut self, part: Part, statements: Vec<Statement>) {
        self.parts
            .extend(std::iter::repeat_n(part, statements.len()));
        self.statements.extend(statements);
    }

    /// What changed, for the broker, from the rows each statement returned (`results[i]` for
    /// `statements[i]`, as D1 or sqlx give them). A replay returns no rows, so it is forwarded
    /// nowhere; statuses of inactive authors are recorded but not pushed to pages.
    pub fn messages(
        &self,
        results: &[Vec<serde_json::Value>],
    ) -> crate::Result<Vec<ServerMessage>> {
        if results.len() != self.statements.len() {
            return Err(Error::Json(format!(
                "{} results for {} statements",
                results.len(),
                self.statements.len()
            )));
        }
        let authors: Vec<AuthorRow> = self
            .parts
            .iter()
            .zip(results)
            .filter(|(part, _)| **part == Part::Authors)
            .flat_map(|(_, rows)| rows.iter().map(read))
            .collect::<crate::Result<_>>()?;
        // By DID: a catch-up batch of the network holds up to a thousand authors.
        let mut by_did: BTreeMap<String, usize> = BTreeMap::new();
        for (at, row) in authors.iter().enumerate() {
            by_did.insert(row.did.clone(), at);
        }
        let author = |did: &str| by_did.get(did).map(|at| &authors[*at]);

        // In the order the statements ran, so that a page applying them in order ends where D1 is.
        let mut messages = Vec::new();
        let mut counts = Vec::new();
        for (part, rows) in self.parts.iter().zip(results) {
            for row in rows {
                let message = match part {
                    Part::Handles => {
                        let row: HandleRow = read(row)?;
                        ServerMessage::HandleChanged {
                            did: row.did,
                            handle: row.handle,
                        }
                    }
                    Part::Accounts => {
                        let row: AccountRow = read(row)?;
                        ServerMessage::AccountChanged {
                            did: row.did,
                            active: row.active != 0,
                        }
                    }
                    Part::Upserts => {
                        // The upsert returns what the row kept; the rest is the status sent, and
                        // the handle is the authors' lookup's at the end.
                        let row: UpsertedRow = read(row)?;
                        let sent = self.upserted(&row.uri, &row.rev).ok_or_else(|| {
                            Error::Json(bounded(&format!(
                                "an upsert returned a status the batch did not write: {} at {}",
                                row.uri, row.rev
                            )))
                        })?;
                        let known = author(&sent.author_did);
                        if known.is_some_and(|a| a.active == Some(0)) {
                            continue;
                        }
                        let mut status = row.view_of(sent);
                        status.handle = known.and_then(|a| a.handle.clone());
                        status.display_name = known.and_then(|a| a.display_name.clone());
                        ServerMessage::StatusUpserted { status }
                    }
                    Part::Deletes => {
                        let row: DeleteRow = read(row)?;
                        ServerMessage::StatusDeleted {
                            uri: row.uri,
                            author_did: row.author_did,
                        }
                    }
                    Part::Counts => {
                        counts.push(read(row)?);
                        continue;
                    }
                    Part::Purge | Part::Lookups | Part::Authors | Part::CountsMark => continue,
                };
                messages.push(message);
            }
        }
        Ok(crate::wire::with_counts(messages, counts))
    }
}

/// A batch's events as runs of one family each, in turn: statuses (upserts and deletes), handles
/// (identity events), account states (account events), statuses again, and so on. An event goes
/// to the first run of its family at or after the run of its account's previous event: per
/// account, the stream's order of families is kept (an identity event and an account event of
/// the same account do not commute either: whichever comes first creates its `account` row), and
/// accounts do not wait for one another.
#[derive(Default)]
struct Phases {
    runs: Vec<Run>,
    /// Per account, the run its latest event went to.
    last: std::collections::BTreeMap<String, usize>,
}

impl Phases {
    fn push(&mut self, change: Change) {
        let (did, family) = match &change {
            Change::Upsert(status) => (&status.author_did, 0),
            Change::Delete(tombstone) => (&tombstone.author_did, 0),
            Change::Handle(update) => (&update.did, 1),
            Change::Account(update) => (&update.did, 2),
        };
        let after = self.last.get(did.as_str()).copied().unwrap_or(0);
        let run = after + (family + 3 - after % 3) % 3;
        self.last.insert(did.clone(), run);
        if self.runs.len() <= run {
            self.runs.resize_with(run + 1, Run::default);
        }
        self.runs[run].push(change);
    }
}

/// Events of one family: statuses, handles or account states (see [`Phases`]).
#[derive(Default)]
struct Run {
    upserts: Vec<Status>,
    deletes: Vec<Tombstone>,
    handles: Vec<HandleUpdate>,
    accounts: Vec<AccountUpdate>,
}

impl Run {
    fn push(&mut self, change: Change) {
        match change {
            Change::Upsert(status) => self.upserts.push(status),
            Change::Delete(tombstone) => self.deletes.push(tombstone),
            Change::Handle(update) => self.handles.push(update),
            Change::Account(update) => self.accounts.push(update),
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(row: &serde_json::Value) -> crate::Result<T> {
    T::deserialize(row).map_err(|e| Error::Json(bounded(&e.to_string())))
}

#[derive(Deserialize)]
struct HandleRow {
    did: String,
    handle: Option<String>,
}

#[derive(Deserialize)]
struct AccountRow {
    did: String,
    active: i64,
}

#[derive(Deserialize)]
struct DeleteRow {
    uri: String,
    author_did: String,
}

#[derive(Deserialize)]
struct AuthorRow {
    did: String,
    handle: Option<String>,
    active: Option<i64>,
    display_name: Option<String>,
}
