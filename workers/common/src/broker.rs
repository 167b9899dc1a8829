//! Talking to the broker (and the listener) over their service bindings: one publish of changes
//! to push, and GETs of the internal JSON routes (`domain::internal`).

use domain::internal;
use domain::wire::{Publish, ServerMessage};
use worker::{Error, Fetcher, Method, Request, RequestInit, Result};

/// Sends `messages` to the broker in one publish, stamped with the time sent.
pub async fn publish(broker: &Fetcher, messages: Vec<ServerMessage>) -> Result<()> {
    let body = serde_json::to_string(&Publish {
        messages,
        sent_at_ms: Some(crate::now_ms()),
    })?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let url = format!("https://broker{}", internal::BROKER_PUBLISH);
    let response = broker
        .fetch_request(Request::new_with_init(&url, &init)?)
        .await?;
    match response.status_code() {
        200 => Ok(()),
        code => Err(Error::RustError(format!("broker answered {code}"))),
    }
}

/// GETs an internal route of the worker behind `binding` and reads its JSON answer.
pub async fn internal_json<T: serde::de::DeserializeOwned>(
    service: &Fetcher,
    binding: &str,
    path: &str,
) -> Result<T> {
    let url = format!("https://{}{}", binding.to_ascii_lowercase(), path);
    let mut response = service.fetch(url, None).await?;
    if response.status_code() != 200 {
        return Err(Error::RustError(format!(
            "{binding} answered {}",
            response.status_code()
        )));
    }
    response.json().await
}
