//! Where served events come from: a recording, a seeded generator, or a PDS firehose.

pub mod firehose;
pub mod generate;
pub mod replay;
