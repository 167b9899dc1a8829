//! The domain of Statusphere, shared by every worker, the sidecar and the tests.
//!
//! Pure Rust: no `worker`, no tokio. It builds for `wasm32-unknown-unknown` and for native.

pub mod internal;
pub mod sql;
