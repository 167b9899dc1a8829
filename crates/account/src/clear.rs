//! Clearing a status ([`Sessions::clear_status`]): the account's current status deleted from its
//! repository (`com.atproto.repo.deleteRecord` through atrium over DPoP, with the same budget,
//! session and error handling as a write), the PDS's answer checked (`domain::write::tombstone`),
//! and only then the row tombstoned and the counts it changed read, in one transaction. The
//! network's delete, when the listener sees it, is the same tombstone again and changes nothing.

use atrium_xrpc::HttpClient;
use domain::sql::{self, CountRow, StatusViewRow};
use lexicon::STATUS_NSID;
use oauth::{PdsClient, Session};

use crate::port::{Clock, Database};
use crate::session::{Refresh, Sessions};
use crate::write::{classify, new_nonce, CreateError, Refused};

/// What a person is told when their PDS deleted the status but D1 could not record it.
pub const CLEARED_NOT_RECORDED: &str =
    "Your status was removed from your repository; this page will catch up in a moment.";

/// A status removed from the person's repository.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleared {
    /// Tombstoned here too: the record that went, the author's current status now (an older
    /// one comes back, as the network sees it, or none), and the counts that changed.
    Recorded {
        uri: String,
        current: Option<String>,
        counts: Vec<CountRow>,
    },
    /// Gone from the repository, but the database failed: the listener records the network's
    /// delete when it comes.
    NotRecorded,
}

impl<D: Database, C: Clock, H: HttpClient + Sync> Sessions<'_, D, C, H> {
    /// Deletes `did`'s current status, if its budget (`per_minute` writes, shared with writing a
    /// status) allows and it has one.
    pub async fn clear_status(&self, did: &str, per_minute: i64) -> Result<Cleared, Refused> {
        // One round trip: a unit of the budget, the tokens, and what is to be cleared.
        let (stored, current) = self
            .spend_budget(did, per_minute, Some(sql::current_status(did)))
            .await?;
        let Some(current) = current
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<StatusViewRow>(row).ok())
        else {
            return Err(Refused::NothingToClear);
        };
        let session = self.fresh_from(did, stored, Refresh::IfExpiring).await?;
        let rkey = current.rkey.as_str();
        let ((output, nonce), session) = self
            .on_pds(did, session, |session| async move {
                self.delete(&session, rkey).await
            })
            .await?;
        let rev = output.commit.as_ref().map(|c| c.rev.to_string());
        let tombstone = domain::write::tombstone(
            did,
            &current.uri,
            &current.rkey,
            rev.as_deref(),
            self.clock.now_ms(),
        )
        .map_err(|error| {
            tracing::warn!(did, %error, "a PDS's deleteRecord answer was refused");
            Refused::Unverified(error.to_string())
        })?;
        let changes = sql::delete_statuses(std::slice::from_ref(&tombstone));
        let read = sql::current_status(did);
        let extra = new_nonce(did, nonce, &session);
        let Some(recorded) = self.record_with_counts(changes, Some(read), extra).await else {
            tracing::error!(did, uri = %current.uri, "status cleared, but D1 failed");
            return Ok(Cleared::NotRecorded);
        };
        let now_current = recorded
            .read
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<StatusViewRow>(row).ok())
            .map(|row| row.status);
        let counts = recorded.counts;
        tracing::info!(did, uri = %current.uri, "status cleared");
        Ok(Cleared::Recorded {
            uri: current.uri,
            current: now_current,
            counts,
        })
    }

    /// `deleteRecord` of the status `rkey` on the session's PDS; the answer and the PDS's latest
    /// DPoP nonce.
    async fn delete(
        &self,
        session: &Session,
        rkey: &str,
    ) -> Result<(crate::xrpc::Deleted, Option<String>), CreateError> {
        let pds = PdsClient::new(self.http, session, self.clock.now_ms() / 1000);
        let result = crate::xrpc::delete_record(&pds, &session.did, STATUS_NSID, rkey).await;
        let nonce = pds.nonce();
        result.map(|output| (output, nonce)).map_err(classify)
    }
}
