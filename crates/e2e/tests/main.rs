//! The end-to-end suite as one test binary (one link instead of seven): each module is one part
//! of the system under real `wrangler dev`, a real local atproto network and real Chromium.
//! `cargo test -p e2e --test e2e edge::` runs one part.

mod backfill;
mod broker;
mod chaos;
mod chromium;
mod confidential;
mod deploy;
mod edge;
mod help;
mod identity;
mod listener;
mod oauth;
mod skeleton;
