//! A Jetstream connection's frames, gathered in JavaScript (`inbox.js`) and taken by the listener
//! many at a time.
//!
//! `worker::WebSocket::events` calls into wasm once a frame: a closure through wasm-bindgen's
//! glue, a channel and a task woken, then the frame copied out of JavaScript on its own. During a
//! catch-up that is thousands of crossings a second for frames the listener only buffers; the
//! profile put a quarter of the catch-up's time in that loop (docs/benchmarks.md). Here a frame
//! costs one `push` in JavaScript, and the listener crosses once for all that came while it was
//! busy: one string, the frames joined by a separator no valid JSON text holds.

use js_sys::futures::JsFuture;
use js_sys::Promise;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/inbox.js")]
extern "C" {
    type JsInbox;

    #[wasm_bindgen(constructor, js_class = "Inbox")]
    fn new(socket: &JsValue) -> JsInbox;
    #[wasm_bindgen(method)]
    fn pending(this: &JsInbox) -> bool;
    #[wasm_bindgen(method)]
    fn ready(this: &JsInbox) -> Promise;
    #[wasm_bindgen(method, js_name = takeFrames)]
    fn take_frames(this: &JsInbox) -> Option<String>;
    #[wasm_bindgen(method, js_name = takeBinary)]
    fn take_binary(this: &JsInbox) -> u32;
    #[wasm_bindgen(method, js_name = closeCode)]
    fn close_code(this: &JsInbox) -> Option<u16>;
    #[wasm_bindgen(method, js_name = closeReason)]
    fn close_reason(this: &JsInbox) -> Option<String>;
    #[wasm_bindgen(method)]
    fn failed(this: &JsInbox) -> Option<String>;
    #[wasm_bindgen(method)]
    fn stop(this: &JsInbox);
}

/// The separator `inbox.js` joins frames with.
const SEPARATOR: char = '\x1e';

/// What came from the socket since the last [`Inbox::take`], in this order: binary frames,
/// text frames, then the end (a close or an error), if it came.
#[derive(Debug, Default)]
pub struct Taken {
    pub binary: u32,
    /// The text frames, joined by [`SEPARATOR`] (see [`Taken::frames`]).
    joined: Option<String>,
    pub end: Option<Ended>,
}

impl Taken {
    /// The text frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = &str> {
        self.joined.iter().flat_map(|text| text.split(SEPARATOR))
    }
}

/// How the socket ended.
#[derive(Debug)]
pub enum Ended {
    Closed { code: u16, reason: String },
    Failed(String),
}

/// A socket's frames, gathered until taken. Listens from its creation to its drop.
pub struct Inbox {
    js: JsInbox,
    /// The wait for the next thing, kept across calls until it settles.
    waiting: Option<JsFuture>,
}

impl Inbox {
    /// Starts gathering what `socket` (accepted) receives.
    pub fn new(socket: &worker::WebSocket) -> Inbox {
        let raw: &JsValue = socket.as_ref();
        Inbox {
            js: JsInbox::new(raw),
            waiting: None,
        }
    }

    /// Settles once something waits to be taken (at once if something does). Cancel-safe: a
    /// wait dropped unsettled is taken up again by the next call.
    pub async fn ready(&mut self) {
        if self.js.pending() {
            self.waiting = None;
            return;
        }
        let waiting = self
            .waiting
            .get_or_insert_with(|| JsFuture::from(self.js.ready()));
        // The promise only ever resolves.
        let _ = waiting.await;
        self.waiting = None;
    }

    /// Everything that waits.
    pub fn take(&self) -> Taken {
        let end = match (self.js.failed(), self.js.close_code()) {
            (Some(error), _) => Some(Ended::Failed(error)),
            (None, Some(code)) => Some(Ended::Closed {
                code,
                reason: self.js.close_reason().unwrap_or_default(),
            }),
            (None, None) => None,
        };
        Taken {
            binary: self.js.take_binary(),
            joined: self.js.take_frames(),
            end,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.js.stop();
    }
}
