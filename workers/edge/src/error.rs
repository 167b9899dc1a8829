//! Edge's one error type: how a request ends when it does not get what it asked for. A refusal
//! carries the HTTP status and the message the client is shown; anything else (D1, a binding,
//! the runtime) is ours, logged with its cause and answered 500 without it. The status write's
//! own refusals (`account::Refused`) become pages or JSON in `write.rs`; this covers the rest.

use std::borrow::Cow;

use worker::Response;

#[derive(Debug)]
pub enum Error {
    /// The request was refused: its status and the message shown.
    Refused {
        status: u16,
        message: Cow<'static, str>,
    },
    /// Something on our side failed; the client sees only "internal error".
    Internal(worker::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A refusal with `status` and `message`.
    pub fn refused(status: u16, message: impl Into<Cow<'static, str>>) -> Error {
        Error::Refused {
            status,
            message: message.into(),
        }
    }

    /// The response the client gets: the refusal as plain text, or a bare 500.
    pub fn response(&self) -> worker::Result<Response> {
        match self {
            Error::Refused { status, message } => workers_common::text_error(*status, message),
            Error::Internal(_) => workers_common::text_error(500, "internal error"),
        }
    }
}

impl From<worker::Error> for Error {
    fn from(error: worker::Error) -> Error {
        Error::Internal(error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Refused { status, message } => write!(f, "refused ({status}): {message}"),
            Error::Internal(error) => write!(f, "{error}"),
        }
    }
}
