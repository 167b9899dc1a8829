//! The listener's pure core: Jetstream frames in; out, one D1 batch (statements within D1's limits,
//! run as one transaction), the cursor it covers, what was dropped and why, and, from the rows the
//! statements return, the messages for the broker.
//!
//! The worker only moves bytes: it reads frames, runs [`Batch::statements`] as one D1 batch, stores
//! [`Batch::cursor_us`] once that committed, and publishes [`Batch::messages`].

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::jetstream::{AccountUpdate, Change, Event, HandleUpdate, Tombstone};
use crate::sql::{self, Statement, StatusViewRow};
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
    /// `sql::upsert_statuses`: returns the statuses written.
    Upserts,
    /// `sql::delete_statuses`: returns `(uri, author_did)` of tombstones written.
    Deletes,
    /// `sql::accounts_of`: `(did, handle, active)` of the upserted statuses' authors.
    Authors,
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
    /// Frames read.
    pub seen: u64,
    /// Valid events that change what the app knows (before idempotency: a replay still counts).
    pub changes: u64,
    /// Valid events that do not concern the app (other collections, unknown kinds).
    pub ignored: u64,
    pub dropped: Vec<Dropped>,
}

impl Batch {
    /// Parses, validates and plans `frames`, in order.
    pub fn plan<'a>(frames: impl IntoIterator<Item = &'a str>) -> Batch {
        let mut batch = Batch::default();
        let mut upserts: Vec<Status> = Vec::new();
        let mut deletes: Vec<Tombstone> = Vec::new();
        let mut handles: Vec<HandleUpdate> = Vec::new();
        let mut accounts: Vec<AccountUpdate> = Vec::new();
        for frame in frames {
            batch.seen += 1;
            let event = match Event::parse(frame) {
                Ok(event) => event,
                Err(error) => {
                    batch.drop(&error);
                    continue;
                }
            };
            match event.change() {
                Ok(Some(change)) => {
                    batch.changes += 1;
                    match change {
                        Change::Upsert(status) => upserts.push(status),
                        Change::Delete(tombstone) => deletes.push(tombstone),
                        Change::Handle(update) => handles.push(update),
                        Change::Account(update) => accounts.push(update),
                    }
                }
                Ok(None) => batch.ignored += 1,
                Err(error) => {
                    batch.drop(&error);
                    continue;
                }
            }
            batch.cursor_us = batch.cursor_us.max(Some(event.time_us));
        }

        // Statuses first, so that an author new to the app is known by the time its identity and
        // account events (in the same batch) are applied: those are recorded for known accounts
        // only. Upserts before deletes: the revisions decide, whatever order the two arrived in.
        // (The triggers keep the counts right in any order.)
        batch.add(Part::Upserts, sql::upsert_statuses(&upserts));
        batch.add(Part::Deletes, sql::delete_statuses(&deletes));
        batch.add(Part::Handles, sql::set_handles(&handles));
        batch.add(Part::Accounts, sql::set_account_states(&accounts));
        let purged: BTreeSet<&str> = accounts
            .iter()
            .filter(|a| a.purges())
            .map(|a| a.did.as_str())
            .collect();
        for did in purged {
            batch.add(Part::Purge, vec![sql::purge_statuses(did)]);
        }
        // Last, so that it sees the handles and account states above.
        let authors: BTreeSet<&str> = upserts.iter().map(|s| s.author_did.as_str()).collect();
        batch.add(
            Part::Authors,
            sql::accounts_of(&authors.into_iter().collect::<Vec<_>>()),
        );
        batch
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
        let rows = |part: Part| {
            self.parts
                .iter()
                .zip(results)
                .filter(move |(p, _)| **p == part)
                .flat_map(|(_, rows)| rows.iter())
        };
        let authors: Vec<AuthorRow> = rows(Part::Authors)
            .map(read)
            .collect::<crate::Result<_>>()?;
        let author = |did: &str| authors.iter().find(|a| a.did == did);

        let mut messages = Vec::new();
        for row in rows(Part::Handles) {
            let row: HandleRow = read(row)?;
            messages.push(ServerMessage::HandleChanged {
                did: row.did,
                handle: row.handle,
            });
        }
        for row in rows(Part::Accounts) {
            let row: AccountRow = read(row)?;
            messages.push(ServerMessage::AccountChanged {
                did: row.did,
                active: row.active != 0,
            });
        }
        for row in rows(Part::Upserts) {
            // The upsert returns no handle; the authors' lookup in the same batch has it.
            let mut row: StatusViewRow = read(row)?;
            let known = author(&row.author_did);
            if known.is_some_and(|a| a.active == Some(0)) {
                continue;
            }
            row.handle = known.and_then(|a| a.handle.clone());
            messages.push(ServerMessage::StatusUpserted {
                status: row.into_view(),
            });
        }
        for row in rows(Part::Deletes) {
            let row: DeleteRow = read(row)?;
            messages.push(ServerMessage::StatusDeleted {
                uri: row.uri,
                author_did: row.author_did,
            });
        }
        Ok(messages)
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
}
