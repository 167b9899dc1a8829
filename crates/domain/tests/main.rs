//! The domain's native integration tests as one test binary: Jetstream frames, the listener's
//! ingest plan and every SQL statement, on SQLite with the real `migrations/`.

mod common;

mod ingest;
mod jetstream;
mod sql;
