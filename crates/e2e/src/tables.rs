//! What the listener's tests compare: the app's tables in the local D1 database that `wrangler
//! dev` wrote, and the same tables from an oracle, `domain::ingest` run over the frames the
//! sidecar served, natively in SQLite with the real migrations (one batch: any batching gives
//! the same tables, domain's `any_batching_gives_the_same_tables`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use domain::ingest::Batch;
use domain::sql::Value;
use futures_util::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use xtask::stack::Stack;
use xtask::workers::Worker;

/// The tables the listener writes, each dumped in key order, as JSON rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    pub status: Vec<serde_json::Value>,
    pub account: Vec<serde_json::Value>,
    pub current_status: Vec<serde_json::Value>,
    pub status_count: Vec<serde_json::Value>,
}

impl Tables {
    pub async fn read(pool: &SqlitePool) -> Result<Tables> {
        let dump = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            anyhow::Ok(rows.iter().map(row_json).collect::<Vec<_>>())
        };
        Ok(Tables {
            status: dump("SELECT * FROM status ORDER BY uri").await?,
            account: dump("SELECT * FROM account ORDER BY did").await?,
            current_status: dump("SELECT * FROM current_status ORDER BY author_did").await?,
            // The counts, not their versions: a version numbers changes, which depend on how
            // events were cut into batches (migration 0011); the counts do not.
            status_count: dump("SELECT status, count FROM status_count ORDER BY status").await?,
        })
    }

    /// The local D1 database of a stack's state folder (read only).
    pub async fn of_stack(persist_dir: &Path) -> Result<Tables> {
        let pool = open_d1(persist_dir).await?;
        let tables = Tables::read(&pool).await;
        pool.close().await;
        tables
    }

    /// The OAuth session edge keeps for `did`, read from the stack's local D1 as stored (sealed)
    /// and opened with the stack's session keys, as the operator could: `(sealed, json)`.
    pub async fn oauth_session(stack: &Stack, did: &str) -> Result<Option<(String, String)>> {
        let pool = open_d1(&stack.config().persist_dir).await?;
        let data: std::result::Result<Option<String>, _> =
            sqlx::query_scalar("SELECT data FROM oauth_session WHERE did = ?1")
                .bind(did)
                .fetch_optional(&pool)
                .await;
        pool.close().await;
        let Some(sealed) = data? else {
            return Ok(None);
        };
        let keys = stack
            .config()
            .var(Worker::Edge, "SESSION_KEYS")
            .context("the stack has no session keys")?;
        let json = oauth::sealed::Keyring::parse(keys)?.open(&sealed, did)?;
        Ok(Some((sealed, String::from_utf8(json)?)))
    }

    /// The `data` of every sign-in in progress (`oauth_state`), as stored.
    pub async fn oauth_states(stack: &Stack) -> Result<Vec<String>> {
        let pool = open_d1(&stack.config().persist_dir).await?;
        let data = sqlx::query_scalar("SELECT data FROM oauth_state")
            .fetch_all(&pool)
            .await;
        pool.close().await;
        Ok(data?)
    }

    /// The rows of `sql` (a read) on the stack's local D1 database, as JSON objects.
    pub async fn query(stack: &Stack, sql: &str) -> Result<Vec<serde_json::Value>> {
        let pool = open_d1(&stack.config().persist_dir).await?;
        let rows = sqlx::query(sql).fetch_all(&pool).await;
        pool.close().await;
        Ok(rows?.iter().map(row_json).collect())
    }

    /// The keys of the identity lookups edge keeps (`identity_cache`) that have not expired.
    pub async fn identity_cache(stack: &Stack) -> Result<Vec<String>> {
        let pool = open_d1(&stack.config().persist_dir).await?;
        let keys = sqlx::query_scalar("SELECT key FROM identity_cache WHERE expires_ms > ?1")
            .bind(crate::now_ms())
            .fetch_all(&pool)
            .await;
        pool.close().await;
        Ok(keys?)
    }

    /// Runs `sql` on the stack's local D1 database while the stack runs (SQLite takes writes from
    /// two processes): how a test makes D1 itself fail, with a trigger that raises an error.
    pub async fn execute(stack: &Stack, sql: &str) -> Result<()> {
        let path = d1_file(&stack.config().persist_dir)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let done = sqlx::raw_sql(sql).execute(&pool).await;
        pool.close().await;
        done.with_context(|| format!("running {sql}"))?;
        Ok(())
    }

    /// `domain::ingest` over `frames` in one batch, in a fresh in-memory database.
    pub async fn oracle(frames: &[String]) -> Result<Tables> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await?;
        let migrations = xtask::paths::root().join("migrations");
        sqlx::migrate::Migrator::new(migrations)
            .await?
            .run(&pool)
            .await?;
        let plan = Batch::plan(frames.iter().map(String::as_str), crate::now_ms() * 1000);
        let mut tx = pool.begin().await?;
        for statement in &plan.statements {
            let mut query = sqlx::query(&statement.sql);
            for value in &statement.params {
                query = match value {
                    Value::Null => query.bind(None::<String>),
                    Value::Integer(n) => query.bind(*n),
                    Value::Text(text) => query.bind(text.as_str()),
                };
            }
            query.fetch_all(&mut *tx).await?;
        }
        tx.commit().await?;
        Tables::read(&pool).await
    }

    /// Where two dumps differ, briefly (for a failing test's message).
    pub fn diff(&self, other: &Tables) -> String {
        let mut out = String::new();
        for (name, a, b) in [
            ("status", &self.status, &other.status),
            ("account", &self.account, &other.account),
            (
                "current_status",
                &self.current_status,
                &other.current_status,
            ),
            ("status_count", &self.status_count, &other.status_count),
        ] {
            if a == b {
                continue;
            }
            out += &format!("{name}: {} rows vs {}\n", a.len(), b.len());
            let missing = a.iter().filter(|row| !b.contains(row)).take(3);
            for row in missing {
                out += &format!("  only left:  {row}\n");
            }
            for row in b.iter().filter(|row| !a.contains(row)).take(3) {
                out += &format!("  only right: {row}\n");
            }
        }
        out
    }
}

/// The D1 database file miniflare keeps under `<persist_dir>/v3/d1/`.
/// The stack's local D1 database, read only.
async fn open_d1(persist_dir: &Path) -> Result<SqlitePool> {
    let path = d1_file(persist_dir)?;
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&path).read_only(true))
        .await
        .with_context(|| format!("opening {}", path.display()))
}

fn d1_file(persist_dir: &Path) -> Result<PathBuf> {
    let dir = persist_dir.join("v3/d1/miniflare-D1DatabaseObject");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == "sqlite")
                && path.file_stem().is_some_and(|s| s != "metadata")
        })
        .collect();
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one D1 database in {}: {files:?}", dir.display()),
    }
}

fn row_json(row: &SqliteRow) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => serde_json::Value::Null,
            Ok(raw) => match raw.type_info().name() {
                "INTEGER" => row.get::<i64, _>(i).into(),
                "REAL" => row.get::<f64, _>(i).into(),
                _ => row.get::<String, _>(i).into(),
            },
            Err(_) => serde_json::Value::Null,
        };
        object.insert(column.name().to_owned(), value);
    }
    serde_json::Value::Object(object)
}

/// Every frame a Jetstream URL serves from `cursor=0`, read until it has been silent for `quiet`
/// (the first may take up to a minute: a large replay is read before it is served).
pub async fn served_frames(subscribe_url: &str, quiet: std::time::Duration) -> Result<Vec<String>> {
    let url = format!(
        "{subscribe_url}?wantedCollections={}&cursor=0",
        lexicon::STATUS_NSID
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut frames = Vec::new();
    let first = std::time::Duration::from_secs(60);
    while let Ok(Some(message)) =
        tokio::time::timeout(if frames.is_empty() { first } else { quiet }, socket.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
            frames.push(text.to_string());
        }
    }
    Ok(frames)
}
