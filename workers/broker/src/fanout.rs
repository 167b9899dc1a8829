//! A publish's fan-out to a shard's sockets, run in JavaScript (`fanout.js`).
//!
//! Sending from wasm crossed into JavaScript several times a socket: the runtime's list turned
//! into a `Vec` of handles (each one put in and later taken out of wasm-bindgen's table), its
//! `readyState` read and `send` called through the glue. Here the whole loop is one call: the
//! sockets never leave JavaScript, and the packs cross once, as strings.

use domain::wire;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/src/fanout.js")]
extern "C" {
    #[wasm_bindgen(js_name = sendAll)]
    fn send_all_js(
        state: &JsValue,
        texts: &js_sys::Array,
        close_code: u16,
        close_reason: &str,
    ) -> js_sys::Array;
}

/// What a fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// The sockets that were open.
    pub sockets: usize,
    /// Messages sent, summed over the sockets.
    pub messages: u64,
    /// Sockets whose send failed: they got nothing more and were closed.
    pub failed: u64,
}

/// Sends every pack to every open socket of the object whose state is `state`, in order. A
/// socket whose send fails is gone: it gets nothing more and is closed.
pub fn send_all(state: &JsValue, packs: &[wire::Pack]) -> Sent {
    let texts: js_sys::Array = packs.iter().map(|p| JsValue::from_str(&p.text)).collect();
    let counts = send_all_js(state, &texts, wire::close::GOING_AWAY, "send failed");
    let count = |i: u32| counts.get(i).as_f64().unwrap_or(0.0) as u64;
    Sent {
        sockets: count(0) as usize,
        failed: count(1),
        messages: packs
            .iter()
            .zip(2..)
            .map(|(pack, i)| count(i) * pack.messages)
            .sum(),
    }
}
