//! The broker worker: one SQLite-backed Durable Object that holds every open page's WebSocket through
//! the hibernation API (idle sockets cost nothing) and pushes updates to them.
//!
//! This worker has no public route: edge reaches it through a service binding and forwards the
//! browser's upgrade request to it.

use domain::internal::{self, BrokerStats, PublishAck};
use worker::*;

const HUB_NAME: &str = "global";

#[event(start)]
fn start() {
    workers_common::log::init("broker");
}

/// Entry point for service-binding calls: everything goes to the one broker object.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    match req.path().as_str() {
        internal::BROKER_WS | internal::BROKER_PUBLISH | internal::BROKER_STATS => {
            let hub = env.durable_object("BROKER")?.get_by_name(HUB_NAME)?;
            hub.fetch_with_request(req).await
        }
        _ => workers_common::text_error(404, "no such broker route"),
    }
}

#[durable_object]
pub struct Broker {
    state: State,
}

impl DurableObject for Broker {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            (Method::Get, internal::BROKER_WS) => self.accept(&req),
            (Method::Post, internal::BROKER_PUBLISH) => {
                let text = req.text().await?;
                let delivered = self.broadcast(&text);
                workers_common::json_response(200, &PublishAck { delivered })
            }
            (Method::Get, internal::BROKER_STATS) => {
                let stats = BrokerStats {
                    connections: self.state.get_websockets().len(),
                };
                workers_common::json_response(200, &stats)
            }
            _ => workers_common::text_error(404, "no such broker route"),
        }
    }

    async fn websocket_message(
        &self,
        _ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        // The walking skeleton relays what a client says to every client.
        if let WebSocketIncomingMessage::String(text) = message {
            let delivered = self.broadcast(&text);
            tracing::info!(delivered, "relayed a client message");
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        // Reciprocate the close so the socket is released at once.
        let code = u16::try_from(code).unwrap_or(1000);
        let code = if code == 1005 || code == 1006 {
            1000
        } else {
            code
        };
        let _ = ws.close(Some(code), Some("closing"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, error: Error) -> Result<()> {
        tracing::warn!(%error, "websocket error");
        Ok(())
    }
}

impl Broker {
    /// Accepts a WebSocket upgrade handed over by edge; the runtime keeps the socket while the object
    /// hibernates.
    fn accept(&self, req: &Request) -> Result<Response> {
        let upgrade = req.headers().get("Upgrade")?;
        if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return workers_common::text_error(426, "expected a WebSocket upgrade");
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        tracing::info!(
            connections = self.state.get_websockets().len(),
            "socket accepted"
        );
        Response::from_websocket(pair.client)
    }

    /// Sends `text` to every open socket; returns how many took it.
    fn broadcast(&self, text: &str) -> usize {
        self.state
            .get_websockets()
            .iter()
            .filter(|ws| ws.send_with_str(text).is_ok())
            .count()
    }
}
