//! atproto OAuth for a server-side ("backend") client, as the atproto OAuth profile requires:
//! identity resolution with bidirectional handle checks, authorization server discovery, PAR,
//! PKCE S256, DPoP with ES256, server nonces and `ath`, `iss`/`sub` checks on the callback,
//! refresh and revocation, and a DPoP-authenticated XRPC client for the person's PDS.
//!
//! Runtime-neutral: every request goes through an [`atrium_xrpc::HttpClient`] the caller supplies
//! (the Workers fetch API in edge, reqwest in native tests), and every function that needs the time
//! is given it. Nothing here stores anything: flows hand back serialisable values ([`Pending`],
//! [`Session`]) for the caller to keep, [`sealed`] seals them for storage, and [`cache`] keeps
//! identity lookups in a store the caller supplies. Why our own crate
//! and not atrium-oauth: docs/auth.md.

pub mod cache;
pub mod client;
pub mod dpop;
pub mod fetch;
pub mod identity;
pub mod jose;
pub mod metadata;
pub mod pds;
pub mod pkce;
pub mod random;
pub mod sealed;

pub use client::{Callback, Client, ClientAuth, KeyRing, OAuth, Pending, Session};
pub use fetch::Reach;
pub use identity::{HandleResolution, Identity, IdentityConfig};
pub use jose::Key;
pub use pds::PdsClient;

/// Everything that can go wrong in sign-in, refresh, revocation and identity resolution. The
/// variants say whose fault it is, so that the app can say something useful to the person.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the person typed is not a handle, a DID or a server URL.
    #[error("{0}")]
    Input(String),
    /// The identity could not be resolved or does not check out.
    #[error("{0}")]
    Identity(String),
    /// A server could not be reached, or answered something unreadable or too large.
    #[error("{0}")]
    Transport(String),
    /// A server answered with an error.
    #[error("{endpoint} answered {status}: {error}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    Server {
        endpoint: &'static str,
        status: u16,
        error: String,
        description: String,
    },
    /// A server's metadata or answer breaks the protocol.
    #[error("{0}")]
    Protocol(String),
    /// The person, or their server, refused the authorization.
    #[error("authorization refused: {0}")]
    Denied(String),
    /// The callback does not belong to the sign-in it names.
    #[error("{0}")]
    Callback(String),
    /// A key could not be made, read or used.
    #[error("key: {0}")]
    Key(String),
}

impl Error {
    /// Whether this refresh failure means the grant is gone (sign in again), as opposed to a
    /// failure to try again later. Only an explicit refusal ends it: `invalid_grant` (the refresh
    /// token is expired, revoked or spent) or a [`Error::Denied`] (the account moved). A 429, a
    /// 5xx, any other error code, an unreadable answer or no answer at all leave the session as it
    /// was: ending every session of an account because its server was busy would be the server's
    /// hiccup made permanent.
    pub fn ends_grant(&self) -> bool {
        match self {
            Error::Denied(_) => true,
            Error::Server { error, .. } => error == "invalid_grant",
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shortens remote text before it goes into an error message or a log line (at most 200 bytes).
pub(crate) fn bounded(text: &str) -> String {
    lexicon::bounded_to(text, 200)
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn only_a_refusal_ends_a_grant() {
        let server = |status: u16, error: &str| Error::Server {
            endpoint: "token refresh",
            status,
            error: error.into(),
            description: String::new(),
        };
        assert!(server(400, "invalid_grant").ends_grant());
        assert!(Error::Denied("moved".into()).ends_grant());
        for transient in [
            server(429, "rate_limited"),
            server(503, "temporarily_unavailable"),
            server(500, "server_error"),
            server(400, "invalid_request"),
            server(401, "invalid_client"),
            server(400, "use_dpop_nonce"),
            Error::Transport("timed out".into()),
            Error::Protocol("unreadable".into()),
        ] {
            assert!(!transient.ends_grant(), "{transient}");
        }
    }
}
