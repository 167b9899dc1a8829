//! The runtime under the shared `account` crate: D1 as its [`account::Database`], the Workers
//! clock and timers as its [`account::Clock`].

use domain::sql::Statement;
use serde_json::Value;
use worker::{D1Database, Delay};

/// D1, for `account`.
pub struct D1<'a>(pub &'a D1Database);

impl account::Database for D1<'_> {
    async fn rows(&self, statement: &Statement) -> account::Result<Vec<Value>> {
        workers_common::d1::rows(self.0, statement)
            .await
            .map_err(|e| account::Error::Store(e.to_string()))
    }

    async fn batch(&self, statements: &[Statement]) -> account::Result<Vec<Vec<Value>>> {
        let store = |e: worker::Error| account::Error::Store(e.to_string());
        let results = workers_common::d1::batch(self.0, statements)
            .await
            .map_err(store)?;
        results
            .iter()
            .map(|result| result.results::<Value>().map_err(store))
            .collect()
    }
}

/// `Date.now()` and `setTimeout`, for `account`.
pub struct WorkerClock;

impl account::Clock for WorkerClock {
    fn now_ms(&self) -> i64 {
        workers_common::now_ms()
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(std::time::Duration::from_millis(ms)).await;
    }
}
