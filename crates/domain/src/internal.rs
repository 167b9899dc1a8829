//! The contracts between the workers: the routes each one serves over its service binding, and the
//! JSON they exchange. Neither listener nor broker has a public route; only these paths, only
//! through bindings.

use serde::{Deserialize, Serialize};

/// Broker: the browser's WebSocket upgrade, forwarded by edge.
pub const BROKER_WS: &str = "/ws";
/// Broker: a message to push to every open page (POST, body is the message).
pub const BROKER_PUBLISH: &str = "/publish";
/// Broker: connection counts for edge's `/health`.
pub const BROKER_STATS: &str = "/stats";

/// Listener: make sure the listener is running (idempotent).
pub const LISTENER_WAKE: &str = "/wake";
/// Listener: counters and state for edge's `/health`.
pub const LISTENER_STATUS: &str = "/status";

/// The broker's answer to a publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishAck {
    /// Sockets the message was handed to.
    pub delivered: usize,
}

/// The broker's state as `/health` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerStats {
    /// Open WebSockets, hibernating or not.
    pub connections: usize,
}

/// The listener's state as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListenerStatus {
    /// Times the listener's alarm has fired since its storage was created.
    pub alarms_fired: u64,
    /// When the alarm last fired (unix milliseconds).
    pub last_alarm_ms: Option<i64>,
    /// When the alarm is due next (unix milliseconds), if it is set.
    pub next_alarm_ms: Option<i64>,
}
