//! The `xyz.statusphere.status` lexicon: the record every status is written as.

/// The collection (NSID) of status records.
pub const STATUS_NSID: &str = "xyz.statusphere.status";
