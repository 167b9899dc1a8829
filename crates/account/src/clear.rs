//! Clearing a status ([`Sessions::clear_status`]): the account's current status deleted from its
//! repository (`com.atproto.repo.deleteRecord` through atrium over DPoP, with the same budget,
//! session and error handling as a write), the PDS's answer checked (`domain::write::tombstone`),
//! and only then the row tombstoned and the counts it changed read, in one transaction. The
//! network's delete, when the listener sees it, is the same tombstone again and changes nothing.

use atrium_api::client::AtpServiceClient;
use atrium_api::com::atproto::repo::delete_record;
use atrium_xrpc::HttpClient;
use domain::sql::{self, CountRow, StatusViewRow};
use lexicon::STATUS_NSID;
use oauth::{PdsClient, Session};

use crate::port::{Clock, Database};
use crate::session::{Refresh, Sessions};
use crate::write::{classify, counts_of, new_nonce, CreateError, Refused};

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
        let now_ms = self.clock.now_ms();
        // One round trip: a unit of the budget, the tokens, and what is to be cleared.
        let read = self
            .db
            .batch(&[
                sql::count_write(did, now_ms),
                sql::get_oauth_session(did),
                sql::current_status(did),
            ])
            .await?;
        let [counted, stored, current]: [Vec<serde_json::Value>; 3] = read
            .try_into()
            .map_err(|_| Refused::Store("a batch of three gave another count of results".into()))?;
        let counted = counted
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<sql::WriteCount>(row).ok())
            .ok_or_else(|| Refused::Store("the write budget returned no row".into()))?;
        let stored = self.decode(did, stored);
        if sql::writes_in_last_minute(counted, now_ms) > per_minute as f64 {
            return Err(Refused::TooFast);
        }
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
        let mut statements = vec![sql::mark_counts()];
        statements.extend(sql::delete_statuses(std::slice::from_ref(&tombstone)));
        let read_back = statements.len();
        statements.push(sql::current_status(did));
        statements.push(sql::counts_changed());
        statements.extend(new_nonce(did, nonce, &session));
        let results = match self.db.batch(&statements).await {
            Ok(results) => results,
            Err(error) => {
                tracing::error!(%error, did, uri = %current.uri, "status cleared, but D1 failed");
                return Ok(Cleared::NotRecorded);
            }
        };
        let mut results = results.into_iter().skip(read_back);
        let now_current = results
            .next()
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<StatusViewRow>(row).ok())
            .map(|row| row.status);
        let counts = counts_of(results.next());
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
    ) -> Result<(delete_record::OutputData, Option<String>), CreateError> {
        let pds = PdsClient::new(self.http, session, self.clock.now_ms() / 1000);
        let input = delete_record::InputData {
            collection: STATUS_NSID
                .parse()
                .map_err(|e: &str| CreateError::Rejected(e.into()))?,
            repo: session
                .did
                .parse()
                .map_err(|e: &str| CreateError::Rejected(e.into()))?,
            rkey: rkey
                .parse()
                .map_err(|e: &str| CreateError::Rejected(e.into()))?,
            swap_commit: None,
            swap_record: None,
        };
        let nonce_cell = pds.nonce_cell();
        let client = AtpServiceClient::new(pds);
        let result = client
            .service
            .com
            .atproto
            .repo
            .delete_record(input.into())
            .await;
        let nonce = nonce_cell.lock().ok().and_then(|n| n.clone());
        result.map(|output| (output.data, nonce)).map_err(classify)
    }
}
