//! The broker's wire messages: versioned JSON, one object per WebSocket text frame.
//!
//! Server to page: `{"v":1,"seq":42,"type":"status_upserted","status":{…}}`. `seq` grows by one per
//! message, so a page can tell what it missed and ask for it with `?since=<seq>`.
//! Page to server: only `{"type":"ping"}`.

use serde::{Deserialize, Serialize};

use crate::StatusView;

/// The version of this protocol; a page that sees another version reloads.
pub const WIRE_VERSION: u32 = 1;

/// One message to pages, with its place in the sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    pub v: u32,
    pub seq: u64,
    #[serde(flatten)]
    pub message: ServerMessage,
}

impl ServerFrame {
    pub fn new(seq: u64, message: ServerMessage) -> ServerFrame {
        ServerFrame {
            v: WIRE_VERSION,
            seq,
            message,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// A status is new or changed (optimistic or from the network).
    StatusUpserted { status: StatusView },
    /// The network confirmed a status the page may already show as optimistic.
    StatusConfirmed { uri: String },
    /// A status was deleted.
    StatusDeleted { uri: String, author_did: String },
    /// An account's handle changed (or is no longer known).
    HandleChanged { did: String, handle: Option<String> },
    /// An account's statuses are hidden (inactive) or shown again.
    AccountChanged { did: String, active: bool },
    /// The page fell too far behind: reload it.
    Reload { reason: String },
}

/// What edge and listener send to the broker through its binding: changes to push, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub messages: Vec<ServerMessage>,
}

/// What a page may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Ping,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    #[test]
    fn frames_are_flat_versioned_json() {
        let frame = ServerFrame::new(
            7,
            ServerMessage::StatusConfirmed {
                uri: "at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b".into(),
            },
        );
        assert_eq!(
            frame.to_json(),
            r#"{"v":1,"seq":7,"type":"status_confirmed","uri":"at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b"}"#
        );
        let back: ServerFrame = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn upserts_carry_the_view() {
        let status = StatusView {
            uri: "at://did:plc:a/xyz.statusphere.status/3l3qo2vutsw2b".into(),
            author_did: "did:plc:a".into(),
            handle: Some("alice.test".into()),
            rkey: "3l3qo2vutsw2b".into(),
            status: "😎".into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            indexed_at: 1,
            origin: Origin::Edge,
            confirmed: false,
        };
        let json = ServerFrame::new(1, ServerMessage::StatusUpserted { status }).to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["type"], "status_upserted");
        assert_eq!(value["status"]["handle"], "alice.test");
        assert_eq!(value["status"]["origin"], "edge");
    }

    #[test]
    fn pages_may_only_ping() {
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"publish"}"#).is_err());
    }
}
