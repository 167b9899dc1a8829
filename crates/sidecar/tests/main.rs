//! The sidecar's tests as one test binary: its command line, the Jetstream it serves, an outside
//! client (@skyware/jetstream, in Node) reading it, and the firehose bridge against a real local PDS.

mod common;

mod cli;
mod firehose;
mod serve;
mod skyware;
mod v2;
