//! What the app does on behalf of a signed-in account, independent of any runtime: keep its OAuth
//! session usable ([`session`]: stored sealed, refreshed under a lease because refresh tokens are
//! single-use), write its status ([`write`]: budget, repository, check, record) and clear it
//! ([`clear`]: the same, with `deleteRecord` and a tombstone), and read their own statuses from
//! their repository when they sign in ([`repo`], whose reads the listener's backfill makes for
//! every account too).
//!
//! The worker supplies what differs between runtimes through the small traits of [`port`] (the
//! database and the clock) and an [`atrium_xrpc::HttpClient`]: D1, `Date.now` and `fetch` in edge;
//! SQLite through sqlx, the system clock and reqwest in the native tests
//! (`crates/account/tests/`). How the lease works and why: docs/auth.md.

pub mod clear;
pub mod port;
pub mod repo;
pub mod session;
pub mod write;
pub mod xrpc;

pub use clear::Cleared;
pub use port::{Clock, Database};
pub use session::{Lease, Refresh, Sessions};
pub use write::{Refused, Written};

/// Why an account's session cannot be had. One type for the whole crate: the variants say what the
/// person should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Signed out, revoked, or the refresh was refused: sign in again.
    #[error("the session has ended")]
    Ended,
    /// The person's server could not be reached or failed, or the refresh could not finish:
    /// try again later (the session is kept).
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("the database failed: {0}")]
    Store(String),
}

pub type Result<T> = std::result::Result<T, Error>;
