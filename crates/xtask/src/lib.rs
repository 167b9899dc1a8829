//! The project's automation, in Rust rather than shell: `cargo xtask <command>`.
//!
//! The library half is shared with the end-to-end tests (they start the same stack `dev` starts);
//! the binary half (`main.rs`) is the command line.

pub mod bench;
pub mod citations;
pub mod deploy;
pub mod devnet;
pub mod figures;
pub mod net;
pub mod paths;
pub mod preflight;
pub mod process;
pub mod sidecar;
pub mod stack;
pub mod toolchain;
pub mod workers;

pub use anyhow::{Context, Error, Result};
