//! A shard: one SQLite-backed Durable Object (class `Broker`, named `shard-<k>`) that holds its
//! pages' WebSockets through the hibernation API (idle sockets cost nothing) and pushes them
//! sequenced updates: every publish the relay sends on, numbered in this shard's own log.
//!
//! The protocol a page speaks is in docs/broker.md; the pure rules (what a page may send, where a
//! reconnecting page resumes) are in `domain::wire`, the durable log in [`crate::feed`].

use std::cell::{Cell, RefCell, RefMut};
use workers_common::now_ms;
use workers_common::vars::{number, text};

use domain::internal::{self, BrokerHead, PublishAck, ShardStats};
use domain::limit::{Admission, SocketCaps};
use domain::wire::{self, Resume, ServerFrame, ServerMessage, Verdict};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use worker::wasm_bindgen::JsCast;
use worker::worker_sys::WebSocketRequestResponsePair;
use worker::*;

use crate::feed::Feed;

/// The broker's settings, from its wrangler vars.
struct Config {
    /// How many messages a reconnecting page can be sent (`LOG_CAPACITY`).
    log_capacity: u64,
    /// A socket that has not pinged for this long is closed (`IDLE_TIMEOUT_SECONDS`).
    idle_timeout_ms: i64,
    /// Open sockets kept per network and in all (`MAX_SOCKETS_PER_NETWORK`, `MAX_SOCKETS`).
    caps: SocketCaps,
    /// `TEST_HOOKS=on` (test stacks only; the deploy refuses it): [`internal::BROKER_REFUSE`].
    test_hooks: bool,
}

impl Config {
    fn from_env(env: &Env) -> Config {
        let default = SocketCaps::DEFAULT;
        Config {
            log_capacity: number(env, "LOG_CAPACITY", 1_000, 1..=100_000) as u64,
            idle_timeout_ms: number(env, "IDLE_TIMEOUT_SECONDS", 90, 1..=86_400) * 1_000,
            caps: SocketCaps {
                per_network: number(
                    env,
                    "MAX_SOCKETS_PER_NETWORK",
                    default.per_network as i64,
                    1..=32_768,
                ) as usize,
                total: number(env, "MAX_SOCKETS", default.total as i64, 1..=32_768) as usize,
            },
            test_hooks: text(env, "TEST_HOOKS").as_deref() == Some("on"),
        }
    }

    /// How often the idle sweep runs while sockets are open.
    fn sweep_every_ms(&self) -> i64 {
        (self.idle_timeout_ms / 3).max(1_000)
    }
}

/// What each socket carries through hibernation.
#[derive(Debug, Serialize, Deserialize)]
struct Attachment {
    /// When the socket was accepted (unix ms).
    connected_ms: i64,
    /// When the object itself last answered a ping from it (pings the runtime answers are
    /// timestamped by the runtime).
    #[serde(default)]
    pinged_ms: Option<i64>,
}

#[durable_object]
pub struct Broker {
    state: State,
    config: Config,
    instance_id: String,
    started_ms: i64,
    feed: RefCell<Option<Feed>>,
    /// Whether this instance has made sure the idle sweep is scheduled.
    sweep_scheduled: Cell<bool>,
    /// Which shard this is, as the last request to it said ([`internal::SHARD_HEADER`]).
    shard: Cell<u32>,
}

impl DurableObject for Broker {
    fn new(state: State, env: Env) -> Self {
        // Pings are answered by the runtime without waking the object.
        match WebSocketRequestResponsePair::new(wire::PING, wire::PONG) {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(error) => tracing::error!(?error, "could not set the ping auto-response"),
        }
        let started_ms = now_ms();
        let instance_id = format!(
            "{:08x}",
            (js_sys::Math::random() * f64::from(u32::MAX)) as u32
        );
        tracing::info!(instance_id, "broker instance started");
        Self {
            state,
            config: Config::from_env(&env),
            instance_id,
            started_ms,
            feed: RefCell::new(None),
            sweep_scheduled: Cell::new(false),
            shard: Cell::new(0),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        let span = workers_common::log::request_span(&req);
        self.serve(req).instrument(span).await
    }

    async fn alarm(&self) -> Result<Response> {
        let _busy = workers_common::usage::object_request();
        self.sweep()
            .instrument(workers_common::log::alarm_span())
            .await
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        workers_common::usage::object_socket_event();
        if !is_open(&ws) {
            // Already closed by the broker (a flood's later messages): nothing more to say.
            return Ok(());
        }
        let verdict = match &message {
            WebSocketIncomingMessage::String(text) => wire::judge_text(text),
            WebSocketIncomingMessage::Binary(bytes) => wire::judge_binary(bytes.len()),
        };
        let now = now_ms();
        let mut feed = self.feed()?;
        match verdict {
            Verdict::Pong => {
                // A ping the auto-response did not match byte for byte (other spacing).
                ws.send_with_str(wire::PONG)?;
                let mut attachment = attachment(&ws).unwrap_or(Attachment {
                    connected_ms: now,
                    pinged_ms: None,
                });
                attachment.pinged_ms = Some(now);
                ws.serialize_attachment(&attachment)?;
                feed.count(|c| c.pings_answered += 1);
            }
            Verdict::Close { code, reason } => {
                tracing::warn!(
                    code,
                    reason,
                    bytes = message_len(&message),
                    "closing a socket that broke the protocol"
                );
                let _ = ws.close(Some(code), Some(reason));
                feed.count(|c| match code {
                    wire::close::UNSUPPORTED_DATA => c.closed_binary += 1,
                    wire::close::TOO_BIG => c.closed_too_big += 1,
                    _ => c.closed_policy += 1,
                });
            }
        }
        feed.save_soon(now)
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        workers_common::usage::object_socket_event();
        // Reciprocate the close so the socket is released at once. 1005 (no code) and 1006 (no
        // close frame) may not be sent, so those are answered with a plain 1000.
        let code = u16::try_from(code)
            .ok()
            .filter(|c| *c != 1005 && *c != 1006)
            .unwrap_or(wire::close::NORMAL);
        let _ = ws.close(Some(code), Some("closing"));
        let mut feed = self.feed()?;
        feed.count(|c| c.closed_by_page += 1);
        feed.save_soon(now_ms())
    }

    async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
        workers_common::usage::object_socket_event();
        tracing::warn!(%error, "websocket error");
        let _ = ws.close(Some(1011), Some("socket error"));
        let mut feed = self.feed()?;
        feed.count(|c| c.socket_errors += 1);
        feed.save_soon(now_ms())
    }
}

impl Broker {
    /// A service-binding call: a page's WebSocket, a publish, the stats or the head.
    async fn serve(&self, mut req: Request) -> Result<Response> {
        if let Some(shard) = req
            .headers()
            .get(internal::SHARD_HEADER)?
            .and_then(|k| k.parse().ok())
        {
            self.shard.set(shard);
        }
        let (path, query) = workers_common::target(&req);
        match (req.method(), path.as_str()) {
            (Method::Get, internal::BROKER_WS) => {
                let response = self.accept(&req)?;
                if response.status_code() == 101 {
                    self.schedule_sweep().await?;
                }
                Ok(response)
            }
            (Method::Post, internal::BROKER_PUBLISH) => self.publish(&mut req).await,
            (Method::Get, internal::BROKER_STATS) => {
                workers_common::json_response(200, &self.stats()?)
            }
            (Method::Get, internal::BROKER_HEAD) => {
                let seq = self.feed()?.head();
                let shard = self.shard.get();
                workers_common::json_response(200, &BrokerHead { seq, shard })
            }
            (Method::Post, internal::BROKER_REFUSE) if self.config.test_hooks => {
                let ms: i64 = internal::query_value(query.as_deref(), "ms")
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0);
                self.feed()?.refuse_until(now_ms() + ms.clamp(0, 600_000))?;
                tracing::warn!(ms, "publishes refused (test hook)");
                Response::empty()
            }
            _ => workers_common::text_error(404, "no such broker route"),
        }
    }

    /// The idle sweep: closes sockets that stopped pinging, and runs again while any are open.
    async fn sweep(&self) -> Result<Response> {
        let now = now_ms();
        let sockets = open_sockets(&self.state);
        let mut pruned = 0u64;
        for ws in &sockets {
            let connected = attachment(ws);
            let last_seen = [
                connected.as_ref().map(|a| a.connected_ms),
                connected.as_ref().and_then(|a| a.pinged_ms),
                self.auto_response_ms(ws),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
            if now - last_seen > self.config.idle_timeout_ms {
                let _ = ws.close(
                    Some(wire::close::GOING_AWAY),
                    Some("no ping: presumed gone"),
                );
                pruned += 1;
            }
        }
        let remaining = sockets.len() as u64 - pruned;
        if pruned > 0 {
            tracing::info!(pruned, remaining, "idle sweep closed silent sockets");
        }
        {
            let mut feed = self.feed()?;
            feed.count(|c| c.pruned_idle += pruned);
            feed.save(now)?;
        }
        if remaining > 0 {
            // An i64 alarm time is an offset from now.
            self.state
                .storage()
                .set_alarm(self.config.sweep_every_ms())
                .await?;
        }
        self.sweep_scheduled.set(remaining > 0);
        Response::empty()
    }

    /// The log, opened on first use by this instance.
    fn feed(&self) -> Result<RefMut<'_, Feed>> {
        let mut slot = self.feed.borrow_mut();
        if slot.is_none() {
            let feed = Feed::open(
                self.state.storage().sql(),
                self.config.log_capacity,
                now_ms(),
            )?;
            *slot = Some(feed);
        }
        Ok(RefMut::map(slot, |slot| {
            slot.as_mut().expect("the feed was just opened")
        }))
    }

    /// Accepts a WebSocket upgrade handed over by edge, first sending what the page missed since
    /// its `since` (or telling it to reload). The runtime keeps the socket while the object
    /// hibernates.
    fn accept(&self, req: &Request) -> Result<Response> {
        let upgrade = req.headers().get("Upgrade")?;
        if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return workers_common::text_error(426, "expected a WebSocket upgrade");
        }
        let since = match wire::parse_since(workers_common::target(req).1.as_deref()) {
            Ok(since) => since,
            Err(message) => return workers_common::text_error(400, &message),
        };
        let network = network_of(req)?;
        let now = now_ms();
        let mut feed = self.feed()?;
        let admission = self
            .config
            .caps
            .admit(self.count_sockets(Some(&network)), self.count_sockets(None));
        if let Some(reason) = admission.close_reason() {
            // Accepted outside the hibernation API only to be closed with a reason the page can
            // read: it never counts against anyone's cap.
            let pair = WebSocketPair::new()?;
            pair.server.accept()?;
            pair.server
                .close(Some(wire::close::TRY_AGAIN_LATER), Some(reason))?;
            feed.count(|c| match admission {
                Admission::NetworkFull => c.refused_network_full += 1,
                _ => c.refused_full += 1,
            });
            tracing::warn!(network, reason, "refused a socket");
            feed.save_soon(now)?;
            return Response::from_websocket(pair.client);
        }
        let resume = wire::resume(since, feed.bounds()?);
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[network.as_str()]);
        pair.server.serialize_attachment(&Attachment {
            connected_ms: now,
            pinged_ms: None,
        })?;
        feed.count(|c| c.sockets_accepted += 1);
        match resume {
            Resume::Live => {}
            Resume::Replay { after } => {
                let frames = feed.after(after)?;
                for pack in wire::pack(&frames) {
                    pair.server.send_with_str(pack.text)?;
                }
                let sent = frames.len() as u64;
                feed.count(|c| {
                    c.replays += 1;
                    c.frames_sent += sent;
                });
            }
            Resume::Reload { reason } => {
                let frame = ServerFrame::new(
                    feed.head(),
                    ServerMessage::Reload {
                        reason: reason.to_owned(),
                    },
                );
                pair.server.send_with_str(frame.to_json())?;
                pair.server
                    .close(Some(wire::close::NORMAL), Some("reload"))?;
                feed.count(|c| c.reloads += 1);
                tracing::info!(?since, head = feed.head(), reason, "told a page to reload");
            }
        }
        feed.save_soon(now)?;
        Response::from_websocket(pair.client)
    }

    /// Makes sure the idle sweep will run (once per instance it asks storage; later it knows).
    async fn schedule_sweep(&self) -> Result<()> {
        if self.sweep_scheduled.get() {
            return Ok(());
        }
        let storage = self.state.storage();
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(self.config.sweep_every_ms()).await?;
        }
        self.sweep_scheduled.set(true);
        Ok(())
    }

    /// Sequences, logs and sends the messages of one publish to every open socket.
    async fn publish(&self, req: &mut Request) -> Result<Response> {
        let body = req.bytes().await?;
        let publish = match wire::read_publish(&body) {
            Ok(publish) => publish,
            Err((status, message)) => return workers_common::text_error(status, &message),
        };
        let now = now_ms();
        let mut feed = self.feed()?;
        if self.config.test_hooks && now < feed.refusing_until()? {
            feed.count(|c| c.refused_publishes += 1);
            feed.save(now)?;
            return workers_common::text_error(503, "refusing publishes (test hook)");
        }
        // A publish sent again (its answer was lost) is acknowledged as it was, not shown twice.
        if let Some(id) = &publish.id {
            if let Some((first, last)) = feed.sequenced(id)? {
                feed.count(|c| c.repeats += 1);
                feed.save(now)?;
                tracing::info!(id, first, last, "a publish sent again; already sequenced");
                let ack = PublishAck {
                    first_seq: Some(first),
                    last_seq: Some(last),
                    delivered: 0,
                };
                return workers_common::json_response(200, &ack);
            }
        }
        let frames = feed.append(&publish.messages)?;
        if let (Some(id), Some((first, _)), Some((last, _))) =
            (&publish.id, frames.first(), frames.last())
        {
            feed.remember(id, *first, *last)?;
        }
        let sockets = open_sockets(&self.state);
        let (sent, failed) = send_all(&sockets, &frames);
        feed.count(|c| {
            c.publishes += 1;
            c.messages += frames.len() as u64;
            c.frames_sent += sent;
            c.send_failures += failed;
        });
        feed.record_fanout(
            publish.sent_at_ms.map(|sent_at| now - sent_at),
            sockets.len(),
        );
        feed.save(now)?;
        let ack = PublishAck {
            first_seq: frames.first().map(|(seq, _)| *seq),
            last_seq: frames.last().map(|(seq, _)| *seq),
            delivered: sockets.len() - failed as usize,
        };
        tracing::info!(
            messages = frames.len(),
            sockets = sockets.len(),
            failed,
            last_seq = ?ack.last_seq,
            "published"
        );
        workers_common::json_response(200, &ack)
    }

    fn stats(&self) -> Result<ShardStats> {
        let all = self.state.get_websockets();
        let connections = all.iter().filter(|ws| is_open(ws)).count();
        let mut feed = self.feed()?;
        feed.save(now_ms())?;
        let bounds = feed.bounds()?;
        Ok(ShardStats {
            shard: self.shard.get(),
            connections,
            closing: all.len() - connections,
            head_seq: bounds.head,
            oldest_seq: bounds.oldest,
            log_capacity: feed.capacity(),
            instance_id: self.instance_id.clone(),
            instance_started_ms: self.started_ms,
            counters: feed.counters().clone(),
            fanout: feed.fanout(),
        })
    }

    /// How many sockets the runtime holds for this object (open or closing), all of them or those
    /// tagged with one network. The hibernation API's `getWebSockets` is called directly so that
    /// only the array's length crosses into wasm, not a handle per socket.
    fn count_sockets(&self, tag: Option<&str>) -> usize {
        let state: &worker::wasm_bindgen::JsValue = self.state.as_raw().as_ref();
        let Some(method) = js_sys::Reflect::get(state, &"getWebSockets".into())
            .ok()
            .and_then(|m| m.dyn_into::<js_sys::Function>().ok())
        else {
            return match tag {
                Some(tag) => self.state.get_websockets_with_tag(tag).len(),
                None => self.state.get_websockets().len(),
            };
        };
        let sockets = match tag {
            Some(tag) => method.call1(state, &tag.into()),
            None => method.call0(state),
        };
        sockets
            .ok()
            .and_then(|array| array.dyn_into::<js_sys::Array>().ok())
            .map_or(0, |array| array.length() as usize)
    }

    /// When the runtime last answered a ping on this socket by itself (the hibernation API's
    /// `getWebSocketAutoResponseTimestamp`, which workers-rs does not wrap).
    fn auto_response_ms(&self, ws: &WebSocket) -> Option<i64> {
        let state: &worker::wasm_bindgen::JsValue = self.state.as_raw().as_ref();
        let method = js_sys::Reflect::get(state, &"getWebSocketAutoResponseTimestamp".into())
            .ok()?
            .dyn_into::<js_sys::Function>()
            .ok()?;
        let socket: &web_sys::WebSocket = ws.as_ref();
        let at = method.call1(state, socket).ok()?;
        at.dyn_into::<js_sys::Date>()
            .ok()
            .map(|date| date.get_time() as i64)
    }
}

/// Sends every frame to every socket, in order, [`wire::pack`]ed (a send costs about the same
/// whatever it carries); returns (messages sent, sockets that failed). A socket whose send fails
/// is gone: it gets nothing more and is closed.
///
/// Each pack becomes a JavaScript string once and `WebSocket.send` is called with it directly:
/// `send_with_str` would copy and decode the UTF-8 again for every socket.
fn send_all(sockets: &[WebSocket], frames: &[(u64, String)]) -> (u64, u64) {
    use worker::wasm_bindgen::JsValue;
    let frames: Vec<&str> = frames.iter().map(|(_, f)| f.as_str()).collect();
    let packs = wire::pack(&frames);
    let texts: Vec<JsValue> = packs.iter().map(|p| JsValue::from_str(&p.text)).collect();
    let send = sockets.first().and_then(|ws| {
        let raw: &web_sys::WebSocket = ws.as_ref();
        js_sys::Reflect::get(raw, &"send".into())
            .ok()?
            .dyn_into::<js_sys::Function>()
            .ok()
    });
    let (mut sent, mut failed) = (0u64, 0u64);
    for ws in sockets {
        let raw: &web_sys::WebSocket = ws.as_ref();
        for (text, pack) in texts.iter().zip(&packs) {
            let ok = match &send {
                Some(send) => send.call1(raw, text).is_ok(),
                None => ws.send_with_str(&pack.text).is_ok(),
            };
            if ok {
                sent += pack.messages;
            } else {
                failed += 1;
                let _ = ws.close(Some(wire::close::GOING_AWAY), Some("send failed"));
                break;
            }
        }
    }
    (sent, failed)
}

/// The network the page's upgrade came from, as edge named it: the tag its socket is counted by.
/// A missing or malformed header (edge always sets one) counts as the unknown network.
fn network_of(req: &Request) -> Result<String> {
    let named = req.headers().get(internal::NETWORK_HEADER)?;
    Ok(named
        .filter(|n| {
            // A tag is at most 256 bytes; a network key is an address or a /64.
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b))
        })
        .unwrap_or_else(|| domain::limit::UNKNOWN_NETWORK.to_owned()))
}

/// The sockets that are open. A socket the broker closed stays in the runtime's list until the page
/// answers the close (or its connection is seen to end); it gets nothing more and is not counted.
fn open_sockets(state: &State) -> Vec<WebSocket> {
    state.get_websockets().into_iter().filter(is_open).collect()
}

fn is_open(ws: &WebSocket) -> bool {
    const OPEN: u16 = 1;
    let socket: &web_sys::WebSocket = ws.as_ref();
    socket.ready_state() == OPEN
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment().ok().flatten()
}

fn message_len(message: &WebSocketIncomingMessage) -> usize {
    match message {
        WebSocketIncomingMessage::String(text) => text.len(),
        WebSocketIncomingMessage::Binary(bytes) => bytes.len(),
    }
}
