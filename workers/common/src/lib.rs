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

/// A request's path and its query (`domain::internal::path_and_query`), owned.
pub fn target(req: &worker::Request) -> (String, Option<String>) {
    let url = req.inner().url();
    let (path, query) = domain::internal::path_and_query(&url);
    (path.to_owned(), query.map(str::to_owned))
}

/// A JSON response with the given status code.
pub fn json_response<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// A plain-text error response: every refusal says why, in words.
pub fn text_error(status: u16, message: &str) -> Result<Response> {
    Response::error(message, status)
}
