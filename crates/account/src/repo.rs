//! Statuses read from their repository, not from Jetstream ([`statuses`]: the revision first,
//! then pages of records, checked by `domain::repo`):
//! - a person's own when they sign in ([`Sessions::import_own_statuses`]), so that the first page
//!   they see knows their status even if this app never saw it on the network (written before the
//!   app was deployed, or while its listener was behind), recorded like Jetstream events,
//!   idempotently, with the counts they changed, and what changed returned for the broker;
//! - every account the relay lists, by the listener's backfill ([`read_account`]: identity,
//!   statuses, display name, within an invocation's subrequest budget, [`Metered`]).

use std::sync::atomic::{AtomicU32, Ordering};

use atrium_xrpc::HttpClient;
use domain::backfill::{Account, Outcome};
use domain::ingest::Dropped;
use domain::sql::{self, StatusViewRow};
use domain::wire::{with_counts, ServerMessage};
use domain::Status;
use oauth::{fetch, IdentityConfig, Reach, Session};
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

/// A repository's statuses as of one revision.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Statuses {
    pub rev: String,
    pub statuses: Vec<Status>,
    pub dropped: Vec<Dropped>,
    /// The repository has more than the pages read.
    pub truncated: bool,
}

/// `did`'s statuses on its PDS `pds`: the latest commit's revision first (whatever the
/// repository does after it reaches the app on Jetstream with a greater revision, and wins),
/// then up to `max_pages` pages of records, newest first.
pub async fn statuses<H: HttpClient>(
    http: &H,
    reach: Reach,
    pds: &str,
    did: &str,
    max_pages: u32,
    now_ms: i64,
) -> Result<Statuses, String> {
    let pds = pds.trim_end_matches('/');
    let url = format!("{pds}/xrpc/com.atproto.sync.getLatestCommit?did={did}");
    let commit: LatestCommit = fetch::get_json(http, &url, reach, "the latest commit")
        .await
        .map_err(|e| e.to_string())?;
    // A revision that is no TID, or from the future, is refused before any record is asked for.
    domain::write::check_rev(Some(&commit.rev), now_ms)
        .map_err(|e| format!("the latest commit: {e}"))?;
    let mut read = Statuses {
        rev: commit.rev,
        ..Statuses::default()
    };
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let mut url = format!(
            "{pds}/xrpc/com.atproto.repo.listRecords?repo={did}&collection={}&limit={}",
            lexicon::STATUS_NSID,
            domain::repo::PAGE_RECORDS
        );
        // A cursor is the PDS's own text, sent back as it came.
        if let Some(cursor) = &cursor {
            url = domain::internal::with_query(&url, &[("cursor", cursor)]);
        }
        let body = fetch::get(http, &url, reach, "application/json", "the statuses")
            .await
            .map_err(|e| e.to_string())?;
        let page =
            domain::repo::statuses_of(did, &read.rev, &body, now_ms).map_err(|e| e.to_string())?;
        read.statuses.extend(page.statuses);
        read.dropped.extend(page.dropped);
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(read);
        }
    }
    read.truncated = true;
    Ok(read)
}

/// The display name in `did`'s `app.bsky.actor.profile/self` record on its PDS `pds` (public
/// data, read without a session): `Ok(None)` when it has no profile or no name in it, an error
/// when the PDS could not say.
pub async fn display_name<H: HttpClient>(
    http: &H,
    reach: Reach,
    pds: &str,
    did: &str,
) -> Result<Option<String>, String> {
    let url = format!(
        "{}/xrpc/com.atproto.repo.getRecord?repo={did}&collection=app.bsky.actor.profile&rkey=self",
        pds.trim_end_matches('/')
    );
    let url = fetch::check_url(&url, reach).map_err(|e| e.to_string())?;
    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let response = fetch::send(http, request, fetch::MAX_BODY)
        .await
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
    match response.status().as_u16() {
        200 => Ok(domain::present::display_name(&body["value"])),
        // The reference PDS answers a missing record with 400 `RecordNotFound`.
        400 if body["error"] == "RecordNotFound" => Ok(None),
        status => Err(format!("the profile answered {status}")),
    }
}

/// An HTTP client that makes at most `limit` requests (the invocation's subrequest budget),
/// refusing the rest, and counts them.
pub struct Metered<'a, H> {
    inner: &'a H,
    limit: u32,
    used: AtomicU32,
}

impl<'a, H> Metered<'a, H> {
    pub fn new(inner: &'a H, limit: u32) -> Self {
        Metered {
            inner,
            limit,
            used: AtomicU32::new(0),
        }
    }

    /// Requests made (or refused for the budget) so far.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed).min(self.limit)
    }

    /// Requests left.
    pub fn left(&self) -> u32 {
        self.limit - self.used()
    }

    /// Counts a call made elsewhere (D1, the broker).
    pub fn spend(&self, n: u32) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }
}

impl<H: HttpClient + Sync> HttpClient for Metered<'_, H> {
    async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        if self.used.fetch_add(1, Ordering::Relaxed) >= self.limit {
            return Err("the invocation's subrequest budget is spent".into());
        }
        self.inner.send_http(request).await
    }
}

/// The backfill's read of one account (docs/backfill.md): its identity (DID document, PDS, the
/// handle verified both ways), its statuses ([`statuses`], up to `max_pages` pages), its display
/// name. A failure of the identity, the commit or the records fails the read (retried later); a
/// profile that cannot be read only leaves the name as it was. `Outcome::Unfinished` when the
/// budget ran out in the middle.
pub async fn read_account<H: HttpClient + Sync>(
    http: &Metered<'_, H>,
    identity: &IdentityConfig,
    did: &str,
    max_pages: u32,
    now_ms: i64,
) -> (Option<Account>, Outcome) {
    let failed = |error: String| {
        if http.left() == 0 {
            (None, Outcome::Unfinished)
        } else {
            (None, Outcome::Failed { error })
        }
    };
    let found = match oauth::identity::resolve_did_identity(http, identity, did).await {
        Ok(found) => found,
        Err(error) => return failed(error.to_string()),
    };
    let read = match statuses(http, identity.reach, &found.pds, did, max_pages, now_ms).await {
        Ok(read) => read,
        Err(error) => return failed(error),
    };
    let name = display_name(http, identity.reach, &found.pds, did).await;
    if name.is_err() && http.left() == 0 {
        return (None, Outcome::Unfinished);
    }
    let outcome = Outcome::Read {
        rev: read.rev,
        records: read.statuses.len() as u64,
        dropped: read.dropped.len() as u64,
        truncated: read.truncated,
        note: read.dropped.last().map(|d| d.detail.clone()),
    };
    let account = Account {
        did: did.to_owned(),
        handle: found.handle,
        display_name: name.ok(),
        statuses: read.statuses,
    };
    (Some(account), outcome)
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
        let now_ms = self.clock.now_ms();
        let read = statuses(self.http, reach, &session.pds, did, 1, now_ms).await?;
        let statuses = read.statuses;
        let mut imported = Imported {
            read: statuses.len() + read.dropped.len(),
            dropped: read.dropped.into_iter().map(|d| d.detail).collect(),
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
