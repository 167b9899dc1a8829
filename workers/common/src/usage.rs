//! Counting what this isolate uses of the platform's metered resources (`domain::internal::Usage`):
//! D1 rows as D1 reports them, rows of a Durable Object's own SQLite, key-value reads and writes,
//! and the events Durable Objects handle. `/health` shows the counts; the budget bench
//! (`cargo xtask bench budget`) reads them around each thing a person or the network does.

use std::cell::RefCell;

use domain::internal::Usage;
use worker::{D1Result, Result, SqlCursor, SqlStorage, SqlStorageValue, Storage};

thread_local! {
    static USAGE: RefCell<Usage> = RefCell::new(Usage {
        since_ms: crate::now_ms(),
        ..Usage::default()
    });
}

fn add(change: impl FnOnce(&mut Usage)) {
    USAGE.with(|usage| change(&mut usage.borrow_mut()));
}

/// The counts so far.
pub fn snapshot() -> Usage {
    USAGE.with(|usage| usage.borrow().clone())
}

/// Counts one D1 statement's result.
pub fn d1(result: &D1Result) {
    let meta = result.meta().ok().flatten();
    let (read, written) = meta.map_or((0, 0), |m| {
        (
            m.rows_read.unwrap_or(0) as u64,
            m.rows_written.unwrap_or(0) as u64,
        )
    });
    d1_rows(read, written);
}

/// Counts one D1 statement's rows read and written, as its answer's meta says them.
pub fn d1_rows(read: u64, written: u64) {
    add(|u| {
        u.d1_queries += 1;
        u.d1_rows_read += read;
        u.d1_rows_written += written;
    });
}

/// Runs a statement on a Durable Object's SQLite and counts what it wrote and has read so far
/// (for a statement whose rows are wanted, [`sql_rows`]).
pub fn sql(
    sql: &SqlStorage,
    query: &str,
    params: impl Into<Option<Vec<SqlStorageValue>>>,
) -> Result<SqlCursor> {
    let cursor = sql.exec(query, params)?;
    count_cursor(&cursor);
    Ok(cursor)
}

/// Runs a query on a Durable Object's SQLite, reads its rows, and counts them.
pub fn sql_rows<T: serde::de::DeserializeOwned>(
    sql: &SqlStorage,
    query: &str,
    params: impl Into<Option<Vec<SqlStorageValue>>>,
) -> Result<Vec<T>> {
    let cursor = sql.exec(query, params)?;
    let rows = cursor.to_array()?;
    count_cursor(&cursor);
    Ok(rows)
}

fn count_cursor(cursor: &SqlCursor) {
    let (read, written) = (cursor.rows_read() as u64, cursor.rows_written() as u64);
    add(|u| {
        u.sql_rows_read += read;
        u.sql_rows_written += written;
    });
}

/// A Durable Object's key-value read, counted.
pub async fn get<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    key: &str,
) -> Result<Option<T>> {
    add(|u| u.kv_reads += 1);
    storage.get(key).await
}

/// A Durable Object's key-value write, counted.
pub async fn put<T: serde::Serialize>(storage: &Storage, key: &str, value: T) -> Result<()> {
    add(|u| u.kv_writes += 1);
    storage.put(key, value).await
}

/// This worker was invoked (a fetch or a cron).
pub fn worker_request() {
    add(|u| u.worker_requests += 1);
}

/// A Durable Object handling a request or an alarm: counted now, its wall time when dropped.
#[must_use = "the event's wall time is counted when this is dropped"]
pub struct ObjectEvent {
    started_ms: i64,
}

impl Drop for ObjectEvent {
    fn drop(&mut self) {
        let busy = (crate::now_ms() - self.started_ms).max(0) as u64;
        add(|u| u.object_busy_ms += busy);
    }
}

/// Starts counting a Durable Object's request or alarm (keep the guard for as long as it runs).
pub fn object_request() -> ObjectEvent {
    add(|u| u.object_requests += 1);
    ObjectEvent {
        started_ms: crate::now_ms(),
    }
}

/// A Durable Object handled a WebSocket message, close or error.
pub fn object_socket_event() {
    add(|u| u.object_socket_events += 1);
}
