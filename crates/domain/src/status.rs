//! A status as the app knows it: the record's content plus where and when the app learned of it.

use serde::{Deserialize, Serialize};

/// Where the app first learned of a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Written through this app's edge (optimistically recorded before the network echoed it).
    Edge,
    /// Seen on the network (Jetstream) first.
    Network,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Edge => "edge",
            Origin::Network => "network",
        }
    }

    pub fn parse(text: &str) -> Option<Origin> {
        match text {
            "edge" => Some(Origin::Edge),
            "network" => Some(Origin::Network),
            _ => None,
        }
    }
}

/// One status record, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `at://<did>/xyz.statusphere.status/<rkey>`: the identity of a status.
    pub uri: String,
    pub author_did: String,
    pub rkey: String,
    /// The status text (one grapheme, valid under the lexicon).
    pub status: String,
    /// The record's `createdAt`, as written by its author (not trusted for ordering).
    pub created_at: String,
    /// When the app first saw this content (unix ms): the order of the recent list.
    pub indexed_at: i64,
    /// The repository revision that wrote this content; orders writes to the same record.
    pub rev: String,
    pub cid: Option<String>,
    pub origin: Origin,
    /// Whether the network (Jetstream) has shown this status.
    pub confirmed: bool,
}

/// A status ready to show: with its author's handle, if known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub uri: String,
    pub author_did: String,
    pub handle: Option<String>,
    /// The author's display name (their profile's `displayName`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub rkey: String,
    pub status: String,
    pub created_at: String,
    pub indexed_at: i64,
    pub origin: Origin,
    pub confirmed: bool,
}

impl StatusView {
    /// The handle when known, the DID otherwise (never a network lookup while rendering).
    pub fn author_label(&self) -> &str {
        self.handle.as_deref().unwrap_or(&self.author_did)
    }
}

/// The AT URI of a status record.
pub fn at_uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/{}/{rkey}", lexicon::STATUS_NSID)
}

/// The record key of `uri` if it is exactly `at://<did>/xyz.statusphere.status/<key>` (the key
/// itself not yet checked): a status of this account's own.
pub fn rkey_in<'a>(did: &str, uri: &'a str) -> Option<&'a str> {
    uri.strip_prefix("at://")
        .and_then(|rest| rest.strip_prefix(did))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix(lexicon::STATUS_NSID))
        .and_then(|rest| rest.strip_prefix('/'))
}
