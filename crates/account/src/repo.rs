//! A person's own statuses, read from their repository when they sign in
//! ([`Sessions::import_own_statuses`]), so that the first page they see knows their status even
//! if this app never saw it on the network (it was written before the app was deployed, or while
//! its listener was behind). The revision is read first, then one page of records
//! (`domain::repo`); they are recorded like Jetstream events, idempotently, with the counts they
//! changed, and what changed is returned for the broker.

use atrium_xrpc::HttpClient;
use domain::sql::{self, StatusViewRow};
use domain::wire::{with_counts, ServerMessage};
use oauth::fetch;
use oauth::Session;
use serde::Deserialize;

use crate::port::{Clock, Database};
use crate::session::Sessions;

/// What a sign-in's read of the repository did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Imported {
    /// What changed here, for the broker (statuses, then counts).
    pub messages: Vec<ServerMessage>,
    /// Records read.
    pub read: usize,
    /// Records refused, with their reasons.
    pub dropped: Vec<String>,
}

#[derive(Deserialize)]
struct LatestCommit {
    rev: String,
}

impl<D: Database, C: Clock, H: HttpClient + Sync> Sessions<'_, D, C, H> {
    /// Reads the signed-in person's statuses from their PDS and records them. A failure (the
    /// PDS down, an answer that does not hold up, D1) is an error for the caller to log: the
    /// sign-in itself goes on.
    /// Their lines carry `display_name`, read at the same sign-in.
    pub async fn import_own_statuses(
        &self,
        session: &Session,
        display_name: Option<&str>,
    ) -> Result<Imported, String> {
        let reach = self.client.identity.reach;
        let did = session.did.as_str();
        let pds = session.pds.trim_end_matches('/');
        // The revision first: whatever the repository does after it reaches us on Jetstream with
        // a greater revision, and wins.
        let url = format!("{pds}/xrpc/com.atproto.sync.getLatestCommit?did={did}");
        let commit: LatestCommit = fetch::get_json(self.http, &url, reach, "the latest commit")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "{pds}/xrpc/com.atproto.repo.listRecords?repo={did}&collection={}&limit={}",
            lexicon::STATUS_NSID,
            domain::repo::SIGN_IN_RECORDS
        );
        let body = fetch::get(self.http, &url, reach, "application/json", "the statuses")
            .await
            .map_err(|e| e.to_string())?;
        let now_ms = self.clock.now_ms();
        let (statuses, dropped) = domain::repo::statuses_of(did, &commit.rev, &body, now_ms)
            .map_err(|e| e.to_string())?;
        let mut imported = Imported {
            read: statuses.len() + dropped.len(),
            dropped: dropped.into_iter().map(|d| d.detail).collect(),
            ..Imported::default()
        };
        if statuses.is_empty() {
            return Ok(imported);
        }
        let recorded = self
            .record_with_counts(sql::import_statuses(&statuses), None, None)
            .await
            .ok_or("D1 failed")?;
        let mut messages = Vec::new();
        for row in recorded.changed {
            let mut row: StatusViewRow = serde_json::from_value(row).map_err(|e| e.to_string())?;
            row.handle = session.handle.clone();
            row.display_name = display_name.map(str::to_owned);
            messages.push(ServerMessage::StatusUpserted {
                status: row.into_view(),
            });
        }
        imported.messages = with_counts(messages, recorded.counts);
        Ok(imported)
    }
}
