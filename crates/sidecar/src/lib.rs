//! The sidecar: the project's local Jetstream (see docs/sidecar.md).
//!
//! `window` holds the retained events every subscriber reads from; `server` speaks Jetstream's
//! `/subscribe`; `source` fills the window (replay, generator, firehose bridge); `fault` makes
//! connections misbehave on request; `record` captures a real stream to a replay file; `load`
//! measures throughput; `cli` turns a command line into one of those.

pub mod cli;
pub mod error;
pub mod fault;
pub mod filter;
pub mod frame;
pub mod load;
pub mod record;
pub mod server;
pub mod source;
pub mod window;

pub use error::{Error, Result};
