//! What the native SQL tests share: an in-memory SQLite with the real `migrations/` applied, and
//! statements run the way D1 runs them (one batch = one transaction). `crates/account/tests` uses
//! it too (by path: it is test code, not a crate).

#![allow(dead_code)] // each test file uses its own share of these

use std::path::Path;

use domain::sql::{self, Statement, Value};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// 2026-12-01T00:00:00Z: "now" for the ingest tests (every fixture is older).
pub const NOW_US: i64 = 1_796_083_200_000_000;

pub async fn database() -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("in-memory SQLite");
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    sqlx::migrate::Migrator::new(migrations)
        .await
        .expect("migrations/ parse")
        .run(&pool)
        .await
        .expect("migrations apply");
    pool
}

pub fn query(
    statement: &Statement,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let mut q = sqlx::query(&statement.sql);
    for value in &statement.params {
        q = match value {
            Value::Null => q.bind(None::<String>),
            Value::Integer(n) => q.bind(*n),
            Value::Text(text) => q.bind(text.as_str()),
        };
    }
    q
}

/// Runs statements as one transaction (a D1 batch, within D1's limits) and returns each one's rows.
async fn run(pool: &SqlitePool, statements: &[Statement]) -> Vec<Vec<SqliteRow>> {
    let mut tx = pool.begin().await.unwrap();
    let mut results = Vec::new();
    for statement in statements {
        assert!(
            statement.params.len() <= sql::D1_MAX_PARAMS,
            "too many params"
        );
        assert!(
            statement.size() <= sql::D1_MAX_STATEMENT_BYTES,
            "statement too big"
        );
        let rows = query(statement)
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", statement.sql));
        results.push(rows);
    }
    tx.commit().await.unwrap();
    results
}

/// Runs statements as one transaction and returns every row they returned.
pub async fn batch(pool: &SqlitePool, statements: &[Statement]) -> Vec<SqliteRow> {
    run(pool, statements).await.into_iter().flatten().collect()
}

/// Runs statements as one transaction and returns each statement's rows as JSON objects, as D1's
/// batch results give them to a worker.
pub async fn batch_json(
    pool: &SqlitePool,
    statements: &[Statement],
) -> Vec<Vec<serde_json::Value>> {
    run(pool, statements)
        .await
        .iter()
        .map(|rows| rows.iter().map(row_json).collect())
        .collect()
}

pub fn row_json(row: &SqliteRow) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).unwrap();
        let value = if raw.is_null() {
            serde_json::Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => row.get::<i64, _>(i).into(),
                "REAL" => row.get::<f64, _>(i).into(),
                _ => row.get::<String, _>(i).into(),
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    serde_json::Value::Object(object)
}
