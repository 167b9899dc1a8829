//! A JSON value an object keeps in one row of its `meta` table (a shard's counters, the relay's
//! state): read once when the object opens its storage, changed in memory, and written only when
//! it changed, at once ([`Kept::save`]) or at most every few seconds ([`Kept::save_soon`]), so
//! that a burst of events costs one row written, not one each (the free plan allows 100,000 a
//! day). What an eviction interrupts is at most those few seconds of changes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::{Result, SqlStorage};
use workers_common::usage;

/// How long [`Kept::save_soon`] lets a change wait.
const SOON_MS: i64 = 5_000;

#[derive(Deserialize)]
struct TextValue {
    value: String,
}

/// The value under `key`, and whether it changed since it was written.
pub struct Kept<T> {
    sql: SqlStorage,
    key: &'static str,
    value: T,
    dirty: bool,
    saved_at_ms: i64,
}

impl<T: Serialize + DeserializeOwned + Default> Kept<T> {
    /// Reads the value under `key` (the default when there is none, or it does not parse),
    /// counted as written at `saved_at_ms` (0: the first [`Kept::save_soon`] writes). `meta` must
    /// exist.
    pub fn open(sql: &SqlStorage, key: &'static str, saved_at_ms: i64) -> Result<Kept<T>> {
        let value = usage::sql_rows::<TextValue>(
            sql,
            "SELECT value FROM meta WHERE key = ?",
            vec![key.into()],
        )?
        .first()
        .and_then(|row| serde_json::from_str(&row.value).ok())
        .unwrap_or_default();
        Ok(Kept {
            sql: sql.clone(),
            key,
            value,
            dirty: false,
            saved_at_ms,
        })
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    /// The value, to change: it is written at the next save.
    pub fn change(&mut self) -> &mut T {
        self.dirty = true;
        &mut self.value
    }

    /// Writes the value if it changed (one row).
    pub fn save(&mut self, now_ms: i64) -> Result<()> {
        if self.dirty {
            let json = serde_json::to_string(&self.value)?;
            usage::sql(
                &self.sql,
                "INSERT INTO meta (key, value) VALUES (?, ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec![self.key.into(), json.into()],
            )?;
            self.dirty = false;
            self.saved_at_ms = now_ms;
        }
        Ok(())
    }

    /// Writes the value unless it was written in the last few seconds.
    pub fn save_soon(&mut self, now_ms: i64) -> Result<()> {
        if now_ms - self.saved_at_ms >= SOON_MS {
            self.save(now_ms)?;
        }
        Ok(())
    }
}
