//! The SQL the workers run, in one place: D1 runs it in the workers, sqlx runs the very same text
//! against the same `migrations/` in native tests.

/// Health probe, step 1: write a token into the single probe row.
/// Binds: `?1` token, `?2` unix milliseconds.
pub const HEALTH_PROBE_WRITE: &str =
    "INSERT INTO health_probe (id, token, at_ms) VALUES (1, ?1, ?2) \
     ON CONFLICT (id) DO UPDATE SET token = excluded.token, at_ms = excluded.at_ms";

/// Health probe, step 2 (same batch, so it reads step 1's write): read the token back.
pub const HEALTH_PROBE_READ: &str = "SELECT token, at_ms FROM health_probe WHERE id = 1";
