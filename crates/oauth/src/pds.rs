//! An XRPC client for the signed-in person's PDS: every request carries the access token as
//! `Authorization: DPoP …` and a fresh proof bound to it (`ath`), and is sent again once with the
//! PDS's nonce when the PDS asks for one. It is an [`atrium_xrpc::XrpcClient`]: the repository
//! calls of `account::xrpc` run over it.

use std::sync::{Arc, Mutex};

use atrium_xrpc::types::AuthorizationToken;
use atrium_xrpc::{HttpClient, XrpcClient};
use http::{Request, Response};

use crate::client::Session;
use crate::dpop;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Requests to `session.pds` as `session.did`.
pub struct PdsClient<'a, T> {
    http: &'a T,
    session: &'a Session,
    now_s: i64,
    nonce: Arc<Mutex<Option<String>>>,
}

impl<'a, T> PdsClient<'a, T> {
    /// `now_s` (unix seconds) goes into every proof: a client serves one request.
    pub fn new(http: &'a T, session: &'a Session, now_s: i64) -> Self {
        PdsClient {
            http,
            session,
            now_s,
            nonce: Arc::new(Mutex::new(session.pds_nonce.clone())),
        }
    }

    /// The PDS's latest nonce, to keep with the session for the next request.
    pub fn nonce(&self) -> Option<String> {
        self.nonce.lock().map(|n| n.clone()).unwrap_or(None)
    }

    fn set_nonce(&self, nonce: Option<String>) {
        if let (Some(nonce), Ok(mut slot)) = (nonce, self.nonce.lock()) {
            *slot = Some(nonce);
        }
    }
}

impl<T: HttpClient + Sync> HttpClient for PdsClient<'_, T> {
    async fn send_http(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, BoxError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let mut retried = false;
        loop {
            let nonce = self.nonce();
            let proof = dpop::proof(
                &self.session.dpop_key,
                parts.method.as_str(),
                &url,
                nonce.as_deref(),
                Some(&self.session.access_token),
                self.now_s,
            )?;
            let mut builder = Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let request = builder.header("DPoP", proof).body(body.clone())?;
            let response = self.http.send_http(request).await?;
            let fresh = dpop::nonce_of(response.headers());
            self.set_nonce(fresh.clone());
            if !retried
                && dpop::resource_wants_nonce(response.status(), response.headers())
                && fresh.is_some()
                && fresh != nonce
            {
                retried = true;
                continue;
            }
            return Ok(response);
        }
    }
}

impl<T: HttpClient + Sync> XrpcClient for PdsClient<'_, T> {
    fn base_uri(&self) -> String {
        self.session.pds.clone()
    }

    async fn authorization_token(&self, _is_refresh: bool) -> Option<AuthorizationToken> {
        Some(AuthorizationToken::Dpop(self.session.access_token.clone()))
    }
}
