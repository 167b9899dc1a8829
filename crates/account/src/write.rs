//! A status write for a signed-in account ([`Sessions::write_status`]): one unit of its write
//! budget and its session in one read, the session made fresh, the record created in the
//! person's repository (`com.atproto.repo.createRecord`, `crate::xrpc`, over DPoP; a token the PDS
//! no longer takes is refreshed once), the answer checked (`domain::write`), and only then the
//! optimistic row recorded and read back in one transaction, with the counts it changed.
//!
//! Every way it can end is a [`Written`] or a [`Refused`] with its HTTP status and the sentence
//! the person reads, so the worker only renders.

use atrium_xrpc::HttpClient;
use domain::present::iso8601;
use domain::sql::{self, CountRow, StatusViewRow};
use domain::StatusView;
use lexicon::{CreatedAt, StatusText, STATUS_NSID};
use oauth::{PdsClient, Session};

use crate::port::{Clock, Database};
use crate::session::{Refresh, Sessions};
use crate::Error;

/// What a person is told when their PDS took the status but D1 could not record it.
pub const WRITTEN_NOT_RECORDED: &str =
    "Your status was written to your repository; this page will catch up in a moment.";

/// A write that reached the person's repository.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// Recorded here too: the row as the database holds it, and the counts the write changed
    /// with their versions (what the page shows and the broker publishes).
    Recorded {
        status: Box<StatusView>,
        counts: Vec<CountRow>,
    },
    /// In the repository, but the database failed: the listener records it when the network
    /// echoes it. Saying "failed" would invite a duplicate.
    NotRecorded,
}

/// A write (or clear) that did not happen: nothing was changed anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// What was sent is not a status the lexicon allows.
    NotAStatus,
    /// A clear, from an account that shows no status.
    NothingToClear,
    /// The account spent its write budget.
    TooFast,
    /// No usable session: ended (sign in again), or its refresh could not finish.
    Session(Error),
    /// The person's server refused the record.
    Rejected(String),
    /// The person's server could not be reached.
    Unreachable(String),
    /// The server's answer did not name this account's new record.
    Unverified(String),
    /// The database failed before the person's server was asked.
    Store(String),
}

impl Refused {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refused::NotAStatus | Refused::NothingToClear => 400,
            Refused::TooFast => 429,
            Refused::Session(Error::Ended) => 401,
            Refused::Session(Error::Unavailable(_))
            | Refused::Rejected(_)
            | Refused::Unreachable(_)
            | Refused::Unverified(_) => 502,
            Refused::Session(Error::Store(_)) | Refused::Store(_) => 503,
        }
    }

    /// What the person reads.
    pub fn message(&self) -> String {
        match self {
            Refused::NotAStatus => "That is not a valid status: pick one emoji.".into(),
            Refused::NothingToClear => "You have no status to clear.".into(),
            Refused::TooFast => {
                "You are changing your status too quickly. Please wait a minute.".into()
            }
            Refused::Session(Error::Ended) => {
                "Your sign-in has ended. Please sign in again.".into()
            }
            Refused::Session(Error::Unavailable(why)) | Refused::Unreachable(why) => format!(
                "Your server could not be reached ({why}). Nothing was changed; please try again."
            ),
            Refused::Rejected(why) => {
                format!("Your server refused the status ({why}). Nothing was changed.")
            }
            Refused::Unverified(why) => format!(
                "Your server's answer did not check out ({why}), so this app recorded nothing. \
                 Your server may be misbehaving."
            ),
            Refused::Session(Error::Store(_)) | Refused::Store(_) => {
                "This app could not reach its database. Nothing was changed; please try again."
                    .into()
            }
        }
    }
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        match error {
            Error::Store(why) => Refused::Store(why),
            other => Refused::Session(other),
        }
    }
}

/// The statement that keeps the PDS's newest DPoP nonce, if it changed.
pub(crate) fn new_nonce(
    did: &str,
    nonce: Option<String>,
    session: &Session,
) -> Option<sql::Statement> {
    nonce
        .filter(|n| Some(n) != session.pds_nonce.as_ref())
        .map(|nonce| sql::set_pds_nonce(did, &nonce))
}

/// What [`Sessions::record_with_counts`] read back: the rows the changes returned, the rows of
/// the read after them, and the counts they changed.
pub(crate) struct Recorded {
    pub changed: Vec<serde_json::Value>,
    pub read: Vec<serde_json::Value>,
    pub counts: Vec<CountRow>,
}

/// The rows of `sql::counts_changed`.
fn counts_of(rows: Option<Vec<serde_json::Value>>) -> Vec<CountRow> {
    rows.unwrap_or_default()
        .into_iter()
        .filter_map(|row| serde_json::from_value(row).ok())
        .collect()
}

/// How a `createRecord` (or `deleteRecord`) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// The PDS does not take the access token any more.
    Expired,
    Rejected(String),
    Unreachable(String),
}

/// What atrium's error means for the write (or clear).
pub fn classify<E: std::fmt::Debug + std::fmt::Display>(
    error: atrium_xrpc::Error<E>,
) -> CreateError {
    use atrium_xrpc::error::XrpcErrorKind;
    match error {
        atrium_xrpc::Error::XrpcResponse(e) if e.status == 401 => CreateError::Expired,
        // A 401 whose WWW-Authenticate says the token is bad (expired or revoked at the PDS).
        atrium_xrpc::Error::Authentication(_) => CreateError::Expired,
        atrium_xrpc::Error::XrpcResponse(e) => CreateError::Rejected(match e.error {
            Some(XrpcErrorKind::Undefined(body)) => format!(
                "{}: {}",
                body.error.unwrap_or_default(),
                body.message.unwrap_or_default()
            ),
            Some(XrpcErrorKind::Custom(custom)) => custom.to_string(),
            None => format!("HTTP {}", e.status),
        }),
        atrium_xrpc::Error::HttpClient(e) => CreateError::Unreachable(e.to_string()),
        other => CreateError::Rejected(other.to_string()),
    }
}

impl<D: Database, C: Clock, H: HttpClient + Sync> Sessions<'_, D, C, H> {
    /// Writes `status` as `did`'s, if its budget (`per_minute` writes in any minute) allows.
    pub async fn write_status(
        &self,
        did: &str,
        status: &StatusText,
        per_minute: i64,
    ) -> Result<Written, Refused> {
        let now_ms = self.clock.now_ms();
        let (stored, _) = self.spend_budget(did, per_minute, None).await?;
        let created_at = CreatedAt::parse(&iso8601(now_ms))
            .map_err(|e| Refused::Rejected(format!("clock error: {e}")))?;
        let session = self.fresh_from(did, stored, Refresh::IfExpiring).await?;
        let created = &created_at;
        let ((output, nonce), session) = self
            .on_pds(did, session, |session| async move {
                self.create(&session, status, created).await
            })
            .await?;
        // The PDS is the account's own choice of server: its answer must name this account's new
        // record before it touches the database (domain::write).
        let cid = output.cid.clone();
        let rev = output.commit.as_ref().map(|c| c.rev.to_string());
        let answer = domain::write::CreateAnswer {
            uri: &output.uri,
            cid: &cid,
            rev: rev.as_deref(),
        };
        let row = domain::write::optimistic_row(
            did,
            status.as_str(),
            created_at.as_str(),
            answer,
            self.clock.now_ms(),
        )
        .map_err(|error| {
            tracing::warn!(did, %error, "a PDS's createRecord answer was refused");
            Refused::Unverified(error.to_string())
        })?;
        // Read back in the same transaction: what the page and the broker get is what D1 holds.
        let changes = sql::upsert_statuses(std::slice::from_ref(&row));
        let read = sql::status_by_uri(&row.uri);
        let extra = new_nonce(did, nonce, &session);
        let Some(recorded) = self.record_with_counts(changes, Some(read), extra).await else {
            tracing::error!(did, uri = %row.uri, "status written, but D1 failed");
            return Ok(Written::NotRecorded);
        };
        let view = recorded
            .read
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<StatusViewRow>(row).ok())
            .map(StatusViewRow::into_view);
        let counts = recorded.counts;
        tracing::info!(did, uri = %row.uri, "status written");
        Ok(match view {
            Some(status) => Written::Recorded {
                status: Box::new(status),
                counts,
            },
            None => Written::NotRecorded,
        })
    }

    /// The first round trip of a write or a clear: one unit of `did`'s write budget (refused when
    /// it is spent: `per_minute` writes in any minute), its stored session, and the rows of
    /// `also`, read in the same batch.
    pub(crate) async fn spend_budget(
        &self,
        did: &str,
        per_minute: i64,
        also: Option<sql::Statement>,
    ) -> Result<(Option<Session>, Vec<serde_json::Value>), Refused> {
        let now_ms = self.clock.now_ms();
        let mut statements = vec![sql::count_write(did, now_ms), sql::get_oauth_session(did)];
        statements.extend(also);
        let mut read = self.db.batch(&statements).await?.into_iter();
        let (Some(counted), Some(stored)) = (read.next(), read.next()) else {
            return Err(Refused::Store(
                "a batch gave fewer results than statements".into(),
            ));
        };
        let counted = counted
            .into_iter()
            .next()
            .and_then(|row| serde_json::from_value::<sql::WriteCount>(row).ok())
            .ok_or_else(|| Refused::Store("the write budget returned no row".into()))?;
        if sql::writes_in_last_minute(counted, now_ms) > per_minute as f64 {
            return Err(Refused::TooFast);
        }
        Ok((self.decode(did, stored), read.next().unwrap_or_default()))
    }

    /// Runs `changes` in one transaction that finds the counts they changed (between
    /// `sql::mark_counts` and `sql::counts_changed`), with `read` after them and `extra` (which
    /// returns nothing) last; `None` when D1 failed.
    pub(crate) async fn record_with_counts(
        &self,
        changes: Vec<sql::Statement>,
        read: Option<sql::Statement>,
        extra: Option<sql::Statement>,
    ) -> Option<Recorded> {
        let written = changes.len();
        let mut statements = vec![sql::mark_counts()];
        statements.extend(changes);
        let reads = usize::from(read.is_some());
        statements.extend(read);
        statements.push(sql::counts_changed());
        statements.extend(extra);
        let results = match self.db.batch(&statements).await {
            Ok(results) => results,
            Err(error) => {
                tracing::error!(%error, "recording in D1 failed");
                return None;
            }
        };
        let mut results = results.into_iter().skip(1);
        let changed: Vec<serde_json::Value> = results.by_ref().take(written).flatten().collect();
        let read = results.by_ref().take(reads).flatten().collect();
        Some(Recorded {
            changed,
            read,
            counts: counts_of(results.next()),
        })
    }

    /// Runs `call` on the account's PDS with `session`; a token the PDS no longer takes is
    /// refreshed once and the call made again. The answer, and the session that got it.
    pub(crate) async fn on_pds<T, F, Fut>(
        &self,
        did: &str,
        mut session: Session,
        call: F,
    ) -> Result<(T, Session), Refused>
    where
        F: Fn(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T, CreateError>>,
    {
        let mut retried = false;
        loop {
            match call(session.clone()).await {
                Ok(done) => return Ok((done, session)),
                Err(CreateError::Expired) if !retried => {
                    retried = true;
                    session = self.fresh(did, Refresh::Now).await?;
                }
                Err(CreateError::Expired) => return Err(Refused::Session(Error::Ended)),
                Err(CreateError::Rejected(why)) => return Err(Refused::Rejected(why)),
                Err(CreateError::Unreachable(why)) => return Err(Refused::Unreachable(why)),
            }
        }
    }

    /// `createRecord` on the session's PDS; the record and the PDS's latest DPoP nonce.
    async fn create(
        &self,
        session: &Session,
        status: &StatusText,
        created_at: &CreatedAt,
    ) -> Result<(crate::xrpc::Created, Option<String>), CreateError> {
        let pds = PdsClient::new(self.http, session, self.clock.now_ms() / 1000);
        let record = serde_json::json!({
            "$type": STATUS_NSID,
            "status": status.as_str(),
            "createdAt": created_at.as_str(),
        });
        let result = crate::xrpc::create_record(&pds, &session.did, STATUS_NSID, &record).await;
        let nonce = pds.nonce();
        result.map(|output| (output, nonce)).map_err(classify)
    }
}
