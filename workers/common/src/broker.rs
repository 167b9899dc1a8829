//! Talking to the broker (and the listener) over their service bindings: one publish of changes
//! to push (handed to the listener's outbox when the broker does not take it), and GETs of the
//! internal JSON routes (`domain::internal`).

use domain::internal;
use domain::wire::{Publish, ServerMessage};
use worker::{Error, Fetcher, Method, Request, RequestInit, Result};

/// Sends `messages` to the broker in one publish with a new id; if the broker does not take it,
/// hands it to the listener's outbox (through `listener`, its service binding), which sends it
/// again (same id) until the broker does. `Err` only when neither took it: then it is lost to
/// open pages (D1 has it; they see it on reload).
pub async fn publish(
    broker: &Fetcher,
    listener: &Fetcher,
    messages: Vec<ServerMessage>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let publish = new_publish(messages);
    let error = match send(broker, &publish).await {
        Ok(Answer::Taken) => return Ok(()),
        Ok(Answer::Refused(code)) => {
            return Err(Error::RustError(format!(
                "the broker refused the publish ({code})"
            )))
        }
        Err(error) => error,
    };
    tracing::warn!(%error, messages = publish.messages.len(), "the broker did not take a publish; handing it to the listener's outbox");
    let body = serde_json::to_string(&publish)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init(
        &format!("https://listener{}", internal::LISTENER_OUTBOX),
        &init,
    )?;
    let response = listener.fetch_request(request).await?;
    match response.status_code() {
        200 => Ok(()),
        code => Err(Error::RustError(format!(
            "the broker failed ({error}) and the outbox answered {code}"
        ))),
    }
}

/// A publish of `messages` with a new id, stamped with the time sent.
pub fn new_publish(messages: Vec<ServerMessage>) -> Publish {
    let id = oauth::random::short_token().unwrap_or_else(|_| crate::now_ms().to_string());
    Publish {
        messages,
        sent_at_ms: Some(crate::now_ms()),
        id: Some(id),
    }
}

/// What the broker said to a publish it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It has it.
    Taken,
    /// It refused it for good (a 4xx: too big, not a publish): trying again would not help.
    Refused(u16),
}

/// Sends `publish` to the broker: `Ok` when the broker answered that it has it or refused it
/// for good, `Err` when it failed or did not answer (worth another try).
pub async fn send(broker: &Fetcher, publish: &Publish) -> Result<Answer> {
    send_body(broker, serde_json::to_string(publish)?).await
}

/// [`send`] with the publish already written out as JSON (the listener's outbox keeps it so).
pub async fn send_body(broker: &Fetcher, body: String) -> Result<Answer> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let url = format!("https://broker{}", internal::BROKER_PUBLISH);
    let response = broker
        .fetch_request(Request::new_with_init(&url, &init)?)
        .await?;
    match response.status_code() {
        200 => Ok(Answer::Taken),
        code @ 400..=499 => Ok(Answer::Refused(code)),
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
