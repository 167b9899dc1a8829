//! An account's OAuth session: read from the database and opened ([`Sessions::load`]), and made
//! fresh before use ([`Sessions::fresh`]).
//!
//! A refresh token is single-use: two refreshers spending the same one would leave one of them
//! with `invalid_grant`, which ends the session. So a refresh runs under a lease on the session's
//! row (`sql::lock_oauth_session`, held for [`Lease::hold_ms`]): whoever takes it refreshes and
//! stores the new tokens (`sql::store_refreshed_session`, only while it still owns the lease);
//! whoever finds it taken waits a little and uses what the holder stored. The lease is held longer
//! than the refresh's fetches can last (edge asserts it), so a lease runs out under a refresher
//! only if the database itself stalls; then its tokens are thrown away rather than stored over
//! someone else's. docs/auth.md tells the whole story.

use atrium_xrpc::HttpClient;
use domain::sql;
use oauth::sealed::Keyring;
use oauth::{Client, OAuth, Session};
use serde::Deserialize;
use serde_json::Value;

use crate::port::{Clock, Database};
use crate::{Error, Result};

/// How the refresh lease is taken and waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// How long one refresh may hold the lease.
    pub hold_ms: i64,
    /// How many times a refresher looks for the lease before giving up.
    pub tries: u32,
    /// How long it waits between looks.
    pub wait_ms: u64,
    /// How many times refreshed tokens are offered to the database before they count as lost.
    pub store_tries: u32,
    /// How long it waits between those offers.
    pub store_wait_ms: u64,
}

impl Lease {
    /// What edge runs: a 40 s lease, waited for up to 3 s; new tokens offered 3 times.
    pub const DEFAULT: Lease = Lease {
        hold_ms: 40_000,
        tries: 10,
        wait_ms: 300,
        store_tries: 3,
        store_wait_ms: 200,
    };
}

/// When [`Sessions::fresh`] refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Only if the access token expires within the margin.
    IfExpiring,
    /// Now: the PDS said the token is no longer valid.
    Now,
}

/// A row of `sql::get_oauth_session` and `sql::lock_oauth_session`.
#[derive(Deserialize)]
struct Row {
    /// The session, sealed under the session keys.
    data: String,
    /// The PDS's latest DPoP nonce, kept beside it (`sql::set_pds_nonce`).
    #[serde(default)]
    pds_nonce: Option<String>,
}

/// The sessions of signed-in accounts, over a database, a clock and HTTP.
pub struct Sessions<'a, D, C, H> {
    pub db: &'a D,
    pub clock: &'a C,
    pub http: &'a H,
    /// This app as an OAuth client (for refreshing).
    pub client: &'a Client,
    /// What the sessions are sealed with.
    pub keys: &'a Keyring,
    /// A token this close to its expiry (seconds) is refreshed before use.
    pub margin_s: i64,
    pub lease: Lease,
}

impl<D: Database, C: Clock, H: HttpClient> Sessions<'_, D, C, H> {
    /// The stored session of `did`, if there is one and it can be opened.
    pub async fn load(&self, did: &str) -> Result<Option<Session>> {
        let rows = self.db.rows(&sql::get_oauth_session(did)).await?;
        Ok(self.decode(did, rows))
    }

    /// The session in rows of `sql::get_oauth_session(did)` (read by the caller in a batch of its
    /// own), if any and readable. An unreadable one is logged and counts as none.
    pub fn decode(&self, did: &str, rows: Vec<Value>) -> Option<Session> {
        let row = rows.into_iter().next()?;
        let opened = serde_json::from_value::<Row>(row)
            .map_err(|e| e.to_string())
            .and_then(|row| {
                let json = self.keys.open(&row.data, did).map_err(|e| e.to_string())?;
                let mut session =
                    serde_json::from_slice::<Session>(&json).map_err(|e| e.to_string())?;
                if row.pds_nonce.is_some() {
                    session.pds_nonce = row.pds_nonce;
                }
                Ok(session)
            });
        match opened {
            Ok(session) => Some(session),
            Err(error) => {
                tracing::error!(%error, did, "a stored OAuth session is unreadable");
                None
            }
        }
    }

    /// A session for `did` whose access token is good for a while, refreshed first as `refresh`
    /// says.
    pub async fn fresh(&self, did: &str, refresh: Refresh) -> Result<Session> {
        let stored = self.load(did).await?;
        self.fresh_from(did, stored, refresh).await
    }

    /// [`Sessions::fresh`], from a session the caller already read.
    pub async fn fresh_from(
        &self,
        did: &str,
        stored: Option<Session>,
        refresh: Refresh,
    ) -> Result<Session> {
        let session = stored.ok_or(Error::Ended)?;
        if refresh == Refresh::IfExpiring && !self.expires_soon(&session) {
            return Ok(session);
        }
        let owner = oauth::random::short_token().map_err(|e| Error::Unavailable(e.to_string()))?;
        for _ in 0..self.lease.tries {
            let now_ms = self.clock.now_ms();
            let until_ms = now_ms + self.lease.hold_ms;
            let locked = self
                .db
                .rows(&sql::lock_oauth_session(did, &owner, now_ms, until_ms))
                .await?;
            if !locked.is_empty() {
                let Some(current) = self.decode(did, locked) else {
                    self.unlock(did, &owner).await?;
                    return Err(Error::Ended);
                };
                if current.access_token != session.access_token && !self.expires_soon(&current) {
                    // Refreshed by someone else since the caller read it.
                    self.unlock(did, &owner).await?;
                    return Ok(current);
                }
                return self.refresh_held(current, &owner).await;
            }
            // Someone else holds the lease: wait, then use their result if it is there.
            self.clock.sleep(self.lease.wait_ms).await;
            match self.load(did).await? {
                Some(latest) if latest.access_token != session.access_token => return Ok(latest),
                Some(_) => {}
                // Their refresh was refused and ended it, or the account signed out.
                None => return Err(Error::Ended),
            }
        }
        Err(Error::Unavailable(
            "the session is being refreshed elsewhere".into(),
        ))
    }

    fn expires_soon(&self, session: &Session) -> bool {
        session.expires_within(self.clock.now_ms() / 1000, self.margin_s)
    }

    /// Refreshes `session`, whose lease `owner` holds, and stores the result.
    async fn refresh_held(&self, session: Session, owner: &str) -> Result<Session> {
        let did = session.did.clone();
        let oauth = OAuth {
            http: self.http,
            client: self.client,
            now_s: self.clock.now_ms() / 1000,
        };
        match oauth.refresh(&session).await {
            Ok(refreshed) => self.store_refreshed(refreshed, owner).await,
            Err(error) if error.ends_grant() => {
                // The grant is gone (revoked, expired, the refresh token spent, or the account
                // moved): sign in again.
                tracing::warn!(%error, did, "refresh refused; the session ends");
                self.db
                    .batch(&sql::end_refused_session(&did, owner))
                    .await?;
                Err(Error::Ended)
            }
            Err(error) => {
                // Busy, failing, slow or confused: the session stays as it was, to be tried again.
                tracing::warn!(%error, did, "refresh failed; the session is kept");
                self.unlock(&did, owner).await?;
                Err(Error::Unavailable(error.to_string()))
            }
        }
    }

    /// Stores refreshed tokens, trying a failing database again: the old refresh token is spent,
    /// so losing the new one ends the session at its next refresh.
    async fn store_refreshed(&self, refreshed: Session, owner: &str) -> Result<Session> {
        let did = refreshed.did.as_str();
        let sealed = serde_json::to_string(&refreshed)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                self.keys
                    .seal(json.as_bytes(), did)
                    .map_err(|e| e.to_string())
            });
        let data = match sealed {
            Ok(data) => data,
            Err(error) => {
                tracing::error!(%error, did, "refreshed tokens could not be sealed");
                self.unlock(did, owner).await?;
                return Err(Error::Unavailable(
                    "the new tokens could not be saved".into(),
                ));
            }
        };
        let statement = sql::store_refreshed_session(did, owner, &data, self.clock.now_ms());
        for attempt in 1..=self.lease.store_tries {
            match self.db.rows(&statement).await {
                Ok(rows) if rows.is_empty() => {
                    // The lease ran out and someone else took it: they refresh; these tokens
                    // were not kept, so they must not be used.
                    tracing::warn!(
                        did,
                        "the refresh outlived its lease; its tokens are dropped"
                    );
                    return Err(Error::Unavailable("the refresh took too long".into()));
                }
                Ok(_) => {
                    tracing::info!(did, "session refreshed");
                    return Ok(refreshed);
                }
                Err(error) => {
                    tracing::error!(%error, attempt, did, "storing refreshed tokens failed");
                    if attempt < self.lease.store_tries {
                        self.clock.sleep(self.lease.store_wait_ms).await;
                    }
                }
            }
        }
        Err(Error::Unavailable(
            "the new tokens could not be saved".into(),
        ))
    }

    async fn unlock(&self, did: &str, owner: &str) -> Result<()> {
        self.db
            .batch(&[sql::unlock_oauth_session(did, owner)])
            .await
            .map(drop)
    }
}
