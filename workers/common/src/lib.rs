//! Runtime glue shared by the edge, listener and broker workers.
//!
//! Only worker crates depend on this one (it depends on `worker`); pure logic belongs in `domain`.

pub mod broker;
pub mod d1;
pub mod http;
pub mod log;
pub mod usage;
pub mod vars;

use serde::Serialize;
use worker::{Response, Result};

/// The time in Unix milliseconds (`Date.now()`: in a Worker it moves on only across I/O).
pub fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64
}

/// Sets a Durable Object's "running" flag and clears it when dropped, however the alarm it marks
/// ends: a wake that finds the flag clear and the watchdog alarm set knows the run died.
pub struct Running<'a>(&'a std::cell::Cell<bool>);

impl<'a> Running<'a> {
    pub fn start(flag: &'a std::cell::Cell<bool>) -> Running<'a> {
        flag.set(true);
        Running(flag)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A request's path and its query (`domain::internal::path_and_query`), owned.
pub fn target(req: &worker::Request) -> (String, Option<String>) {
    let url = req.inner().url();
    let (path, query) = domain::internal::path_and_query(&url);
    (path.to_owned(), query.map(str::to_owned))
}

/// Opens an outbound WebSocket to `url` (`ws://` or `wss://`), as `WebSocket::connect` does but
/// from the URL's text: the `url` crate's parser (and its Unicode tables) stays out of the
/// workers that need no other URL handling.
pub async fn websocket_connect(url: &str) -> worker::Result<worker::WebSocket> {
    let target = if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        url.to_owned()
    };
    let mut req = worker::Request::new(&target, worker::Method::Get)?;
    req.headers_mut()?.set("upgrade", "websocket")?;
    let res = worker::Fetch::Request(req).send().await?;
    let status = res.status_code();
    match res.websocket() {
        Some(socket) => Ok(socket),
        None => Err(worker::Error::RustError(format!(
            "{url} did not upgrade to a WebSocket (status {status})"
        ))),
    }
}

/// A JSON response with the given status code.
pub fn json_response<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// A plain-text error response: every refusal says why, in words.
pub fn text_error(status: u16, message: &str) -> Result<Response> {
    Response::error(message, status)
}
