//! What the shared logic needs from its runtime, as two small traits: a [`Database`] that runs
//! `domain::sql` statements, and a [`Clock`] that tells the time and waits.
//!
//! The futures need not be `Send`: a worker's D1 and timer futures are not, and nothing here runs
//! on more than one thread.

use domain::sql::Statement;
use serde_json::Value;

use crate::Result;

/// D1, or anything that runs SQLite statements the way D1 does.
#[allow(async_fn_in_trait)] // single-threaded by design (see the module docs)
pub trait Database {
    /// Runs one statement and returns its rows as JSON objects (column name to value).
    async fn rows(&self, statement: &Statement) -> Result<Vec<Value>>;
    /// Runs statements as one transaction (a D1 batch) and returns each one's rows.
    async fn batch(&self, statements: &[Statement]) -> Result<Vec<Vec<Value>>>;
}

/// The time, and a way to wait.
#[allow(async_fn_in_trait)] // single-threaded by design (see the module docs)
pub trait Clock {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Waits `ms` milliseconds.
    async fn sleep(&self, ms: u64);
}
