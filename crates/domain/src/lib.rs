//! The domain of Statusphere, shared by every worker, the sidecar and the tests: Jetstream events,
//! the listener's batching and ingest plan, statuses as the app knows them, the checks on a PDS's
//! answers (a write, a clear, a repository read at sign-in or by the backfill), the backfill's
//! budgets and progress, the broker's wire messages, the
//! per-client limits, the SQL
//! the workers run, and pure presentation helpers.
//!
//! Pure Rust: no `worker`, no tokio. It builds for `wasm32-unknown-unknown` and for native.

pub mod backfill;
pub mod batch;
pub mod cursor;
pub mod ingest;
pub mod internal;
pub mod jetstream;
pub mod limit;
pub mod outbox;
pub mod page;
pub mod present;
pub mod repo;
pub mod shard;
pub mod sql;
pub mod status;
pub mod wire;
pub mod write;

pub use lexicon::bounded;
pub use status::{Origin, Status, StatusView};

/// Everything that can go wrong in the domain: each variant names a reason that the listener
/// counts drops by.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("frame is not valid JSON for its kind: {0}")]
    Json(String),
    #[error("invalid {field}: {value}")]
    Invalid { field: &'static str, value: String },
    #[error("missing {0}")]
    Missing(&'static str),
    /// A remote clock further ahead than any drift explains (`jetstream::MAX_CLOCK_SKEW_US`).
    #[error("{field} is from the future: {value}")]
    Future { field: &'static str, value: String },
    #[error(transparent)]
    Lexicon(#[from] lexicon::Error),
}

impl Error {
    /// A short, fixed label for metrics ("dropped by reason").
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Json(_) => "json",
            Error::Invalid { field, .. } => field,
            Error::Missing(field) => field,
            Error::Future { .. } => "future",
            Error::Lexicon(_) => "record",
        }
    }

    pub(crate) fn invalid(field: &'static str, value: &str) -> Error {
        Error::Invalid {
            field,
            value: bounded(value),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
