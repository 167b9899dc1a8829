//! The OAuth client itself: who we are ([`Client`]: loopback or confidential), and the flows
//! ([`OAuth`]): `authorize` (resolve, discover, PAR with PKCE and DPoP, the URL to send the
//! person to), `callback` (every check, then the token exchange), `refresh` and `revoke`.

use atrium_xrpc::HttpClient;
use http::Request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fetch::{self, Reach, MAX_BODY};
use crate::identity::{self, Identity, IdentityConfig, LoginInput};
use crate::jose::Key;
use crate::metadata::{self, AuthServer};
use crate::{bounded, dpop, pkce, random, Error, Result};

/// How long a sign-in may take between the PAR and the callback.
pub const PENDING_TTL_S: i64 = 600;

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// A public client (the loopback client of local development).
    None,
    /// A confidential client: `private_key_jwt` assertions signed by the keys of this ring.
    PrivateKeyJwt(KeyRing),
}

/// The confidential client's keys, each with its own `kid`, all of them published in the JWKS.
/// The first signs new sign-ins; a sign-in and the session it becomes keep the kid they started
/// with (`Pending::client_kid`, `Session::client_kid`), because the authorization server binds the
/// session to the key of its PAR and refuses its refreshes signed by any other. So a key rotates
/// in three steps (docs/operations.md): publish the new key after the current one (servers cache
/// the JWKS for minutes), then put it first, then drop the old one once its sessions are gone.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// Keys in order (the first signs), each with a distinct `kid`.
    pub fn new(keys: Vec<Key>) -> Result<KeyRing> {
        if keys.is_empty() {
            return Err(Error::Key("the client key ring is empty".into()));
        }
        let mut kids = Vec::new();
        for key in &keys {
            let Some(kid) = key.kid() else {
                return Err(Error::Key("every client key needs a kid".into()));
            };
            if kids.contains(&kid) {
                return Err(Error::Key(format!("two client keys have the kid {kid}")));
            }
            kids.push(kid);
        }
        Ok(KeyRing { keys })
    }

    /// One JWK, or a JSON array of them (the first signs).
    pub fn from_jwks_text(text: &str) -> Result<KeyRing> {
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| Error::Key(format!("the client key is not JSON: {e}")))?;
        let items = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        let keys = items
            .iter()
            .map(|jwk| Key::from_jwk(&jwk.to_string()))
            .collect::<Result<Vec<_>>>()?;
        KeyRing::new(keys)
    }

    /// The key new sign-ins use.
    pub fn signing(&self) -> &Key {
        &self.keys[0]
    }

    /// The key of this kid (`None`: the first, for sessions stored before kids were kept); an
    /// error when the ring no longer holds it: that session cannot be refreshed any more.
    pub fn for_kid(&self, kid: Option<&str>) -> Result<&Key> {
        let Some(kid) = kid else {
            return Ok(self.signing());
        };
        self.keys
            .iter()
            .find(|key| key.kid() == Some(kid))
            .ok_or_else(|| {
                Error::Denied(format!(
                    "this sign-in was made with a key this app has retired ({}). Please sign in again.",
                    bounded(kid)
                ))
            })
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// This app as an OAuth client.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub auth: ClientAuth,
    pub identity: IdentityConfig,
    /// The app's own URL: the metadata document's `client_uri`, and the base of its `jwks_uri`
    /// (configuration, never the request's origin).
    pub home: String,
}

impl Client {
    /// The loopback client of local development: its id is `http://localhost` with the redirect
    /// URI and scope in the query; no metadata document, no key. `redirect_uri` must be on
    /// `127.0.0.1` or `[::1]`.
    pub fn loopback(redirect_uri: &str, scope: &str, identity: IdentityConfig) -> Client {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .finish();
        Client {
            client_id: format!("http://localhost?{query}"),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            auth: ClientAuth::None,
            identity,
            home: "http://localhost".into(),
        }
    }

    /// The production client at `public_url` (https): its id is the URL of its metadata
    /// document, and it signs client assertions with the keys of `keys`.
    pub fn confidential(
        public_url: &str,
        keys: KeyRing,
        scope: &str,
        identity: IdentityConfig,
    ) -> Result<Client> {
        let base = public_url.trim_end_matches('/');
        Ok(Client {
            client_id: format!("{base}/oauth-client-metadata.json"),
            redirect_uri: format!("{base}/oauth/callback"),
            scope: scope.to_owned(),
            auth: ClientAuth::PrivateKeyJwt(keys),
            identity,
            home: base.to_owned(),
        })
    }

    /// The kid new sign-ins are signed with (`None` for a public client).
    fn signing_kid(&self) -> Option<String> {
        match &self.auth {
            ClientAuth::None => None,
            ClientAuth::PrivateKeyJwt(ring) => ring.signing().kid().map(str::to_owned),
        }
    }

    /// `none` or `private_key_jwt`.
    pub fn auth_method(&self) -> &'static str {
        match self.auth {
            ClientAuth::None => "none",
            ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
        }
    }

    /// The client metadata document (served at the client id of a confidential client).
    pub fn metadata_document(&self, client_name: &str) -> Value {
        let client_uri = self.home.as_str();
        let mut doc = json!({
            "client_id": self.client_id,
            "client_name": client_name,
            "client_uri": client_uri,
            "redirect_uris": [self.redirect_uri],
            "scope": self.scope,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "application_type": "web",
            "token_endpoint_auth_method": self.auth_method(),
            "dpop_bound_access_tokens": true,
        });
        if let ClientAuth::PrivateKeyJwt(_) = self.auth {
            doc["token_endpoint_auth_signing_alg"] = json!("ES256");
            doc["jwks_uri"] = json!(format!("{client_uri}/.well-known/jwks.json"));
        }
        doc
    }

    /// The public keys (`{"keys": [...]}`), empty for a public client.
    pub fn jwks(&self) -> Value {
        match &self.auth {
            ClientAuth::None => json!({ "keys": [] }),
            ClientAuth::PrivateKeyJwt(ring) => json!({
                "keys": ring.keys().iter().map(Key::public_jwk).collect::<Vec<_>>()
            }),
        }
    }
}

/// A sign-in between the PAR and the callback: kept server side, keyed by `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub server: AuthServer,
    pub verifier: String,
    pub dpop_key: Key,
    pub dpop_nonce: Option<String>,
    /// The account the person named (none when they named a server).
    pub expected: Option<Identity>,
    pub created_at_s: i64,
    /// The client key its PAR was signed with: the token exchange must use the same.
    #[serde(default)]
    pub client_kid: Option<String>,
}

/// A signed-in account's OAuth session: tokens, the DPoP key they are bound to, the latest
/// nonces. Kept server side only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub did: String,
    pub handle: Option<String>,
    pub pds: String,
    pub server: AuthServer,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds the access token expires, if the server said.
    pub expires_at_s: Option<i64>,
    pub scope: String,
    pub dpop_key: Key,
    pub as_nonce: Option<String>,
    pub pds_nonce: Option<String>,
    /// The client key the sign-in was made with: its refreshes and revocation use the same
    /// (`None` in sessions stored before kids were kept: the ring's first key).
    #[serde(default)]
    pub client_kid: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("Session")
            .field("did", &self.did)
            .field("handle", &self.handle)
            .field("pds", &self.pds)
            .field("issuer", &self.server.issuer)
            .field("expires_at_s", &self.expires_at_s)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Whether the access token is expired or about to be (within `margin_s`).
    pub fn expires_within(&self, now_s: i64, margin_s: i64) -> bool {
        self.expires_at_s.is_some_and(|at| now_s + margin_s >= at)
    }
}

/// What the authorization server sent back to the redirect URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl Callback {
    /// From the redirect's query string.
    pub fn from_query(query: &str) -> Callback {
        let mut callback = Callback::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "code" => &mut callback.code,
                "state" => &mut callback.state,
                "iss" => &mut callback.iss,
                "error" => &mut callback.error,
                "error_description" => &mut callback.error_description,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        callback
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: String,
    sub: String,
}

/// The flows, for one request: the transport, who we are, and the time.
pub struct OAuth<'a, T: HttpClient> {
    pub http: &'a T,
    pub client: &'a Client,
    /// Unix seconds.
    pub now_s: i64,
}

impl<T: HttpClient> OAuth<'_, T> {
    fn reach(&self) -> Reach {
        self.client.identity.reach
    }

    /// Starts a sign-in for what the person typed: returns the URL to send them to and what to
    /// keep until the callback.
    pub async fn authorize(&self, input: &str) -> Result<(String, Pending)> {
        let input = identity::parse_input(input, self.reach())?;
        let method = self.client.auth_method();
        let (server, expected, hint) = match &input {
            LoginInput::Server(url) => {
                // A PDS names its authorization server; an entryway is one.
                let server =
                    match metadata::authorization_server_of(self.http, url, method, self.reach())
                        .await
                    {
                        Ok(server) => server,
                        Err(_) => {
                            metadata::authorization_server(self.http, url, method, self.reach())
                                .await?
                        }
                    };
                (server, None, None)
            }
            named => {
                let identity = identity::resolve(self.http, &self.client.identity, named).await?;
                let server = metadata::authorization_server_of(
                    self.http,
                    &identity.pds,
                    method,
                    self.reach(),
                )
                .await?;
                let hint = identity
                    .handle
                    .clone()
                    .unwrap_or_else(|| identity.did.clone());
                (server, Some(identity), Some(hint))
            }
        };
        let state = random::token()?;
        let verifier = pkce::verifier()?;
        let challenge = pkce::challenge(&verifier);
        let dpop_key = Key::generate()?;
        let mut params = vec![
            ("response_type", "code"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
            ("redirect_uri", self.client.redirect_uri.as_str()),
            ("scope", self.client.scope.as_str()),
        ];
        if let Some(hint) = &hint {
            params.push(("login_hint", hint));
        }
        let par = server
            .pushed_authorization_request_endpoint
            .clone()
            .unwrap_or_default();
        let client_kid = self.client.signing_kid();
        let (body, nonce) = self
            .post_form(
                &server,
                &par,
                "PAR",
                &params,
                &dpop_key,
                None,
                client_kid.as_deref(),
            )
            .await?;
        let Some(request_uri) = body.get("request_uri").and_then(Value::as_str) else {
            return Err(Error::Protocol("the PAR answer has no request_uri".into()));
        };
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client.client_id)
            .append_pair("request_uri", request_uri)
            .finish();
        let url = format!("{}?{query}", server.authorization_endpoint);
        let pending = Pending {
            state,
            server,
            verifier,
            dpop_key,
            dpop_nonce: nonce,
            expected,
            created_at_s: self.now_s,
            client_kid,
        };
        Ok((url, pending))
    }

    /// Finishes a sign-in: `pending` is what [`authorize`](Self::authorize) returned for the
    /// callback's `state`. Checks the answer came from that server for that sign-in, exchanges
    /// the code, and checks the account the server signed in.
    pub async fn callback(&self, callback: &Callback, pending: Pending) -> Result<Session> {
        if callback.state.as_deref() != Some(pending.state.as_str()) {
            return Err(Error::Callback(
                "This sign-in answer belongs to another sign-in.".into(),
            ));
        }
        if self.now_s > pending.created_at_s + PENDING_TTL_S {
            return Err(Error::Callback(
                "This sign-in took too long; please start again.".into(),
            ));
        }
        if callback.iss.as_deref() != Some(pending.server.issuer.as_str()) {
            return Err(Error::Callback(
                "This sign-in answer did not come from the server the sign-in started at.".into(),
            ));
        }
        if let Some(error) = &callback.error {
            let why = callback.error_description.as_deref().unwrap_or(error);
            return Err(Error::Denied(bounded(why)));
        }
        let Some(code) = &callback.code else {
            return Err(Error::Callback("The sign-in answer has no code.".into()));
        };
        let params = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", self.client.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let server = pending.server;
        let token_endpoint = server.token_endpoint.clone();
        let (body, nonce) = self
            .post_form(
                &server,
                &token_endpoint,
                "token",
                &params,
                &pending.dpop_key,
                pending.dpop_nonce,
                pending.client_kid.as_deref(),
            )
            .await?;
        let tokens = self.tokens(body)?;
        let identity = match pending.expected {
            Some(expected) if expected.did == tokens.sub => expected,
            Some(_) => {
                return Err(Error::Callback(
                    "The server signed in a different account than the one named.".into(),
                ))
            }
            None => {
                // Signed in at a server: that server must be the one the account's PDS trusts.
                let identity =
                    identity::resolve_did_identity(self.http, &self.client.identity, &tokens.sub)
                        .await?;
                let authoritative = metadata::authorization_server_of(
                    self.http,
                    &identity.pds,
                    self.client.auth_method(),
                    self.reach(),
                )
                .await?;
                if authoritative.issuer != server.issuer {
                    return Err(Error::Callback(
                        "That server does not speak for this account.".into(),
                    ));
                }
                identity
            }
        };
        Ok(Session {
            did: identity.did,
            handle: identity.handle,
            pds: identity.pds,
            server,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at_s: tokens.expires_in.map(|s| self.now_s + s),
            scope: tokens.scope,
            dpop_key: pending.dpop_key,
            as_nonce: nonce,
            pds_nonce: None,
            client_kid: pending.client_kid,
        })
    }

    /// A new session from the refresh token (which the server then retires: call this under a
    /// lock, and store the result before anything else). First the account's identity is looked
    /// up again: if its PDS no longer names this authorization server, the session is over
    /// ([`Error::Denied`]); its PDS and handle are brought up to date.
    pub async fn refresh(&self, session: &Session) -> Result<Session> {
        let Some(refresh_token) = &session.refresh_token else {
            return Err(Error::Denied("the session cannot be refreshed".into()));
        };
        // The account may have moved since sign-in: its current PDS must still name this server
        // (checked before the token is spent). A failed lookup is an error to retry later.
        let identity =
            identity::resolve_did_identity(self.http, &self.client.identity, &session.did).await?;
        let authoritative = metadata::authorization_server_of(
            self.http,
            &identity.pds,
            self.client.auth_method(),
            self.reach(),
        )
        .await?;
        if authoritative.issuer != session.server.issuer {
            return Err(Error::Denied(
                "The account has moved to another server. Please sign in again.".into(),
            ));
        }
        let params = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ];
        let (body, nonce) = self
            .post_form(
                &session.server,
                &session.server.token_endpoint,
                "token refresh",
                &params,
                &session.dpop_key,
                session.as_nonce.clone(),
                session.client_kid.as_deref(),
            )
            .await?;
        let tokens = self.tokens(body)?;
        if tokens.sub != session.did {
            return Err(Error::Protocol(
                "the refreshed token is for another account".into(),
            ));
        }
        Ok(Session {
            handle: identity.handle,
            pds: identity.pds,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at_s: tokens.expires_in.map(|s| self.now_s + s),
            scope: tokens.scope,
            as_nonce: nonce,
            ..session.clone()
        })
    }

    /// Revokes the session's grant (the refresh token, or the access token if there is none).
    pub async fn revoke(&self, session: &Session) -> Result<()> {
        let Some(endpoint) = &session.server.revocation_endpoint else {
            return Ok(());
        };
        let (token, hint) = match &session.refresh_token {
            Some(token) => (token.as_str(), "refresh_token"),
            None => (session.access_token.as_str(), "access_token"),
        };
        let params = [("token", token), ("token_type_hint", hint)];
        self.post_form(
            &session.server,
            endpoint,
            "revocation",
            &params,
            &session.dpop_key,
            session.as_nonce.clone(),
            session.client_kid.as_deref(),
        )
        .await?;
        Ok(())
    }

    fn tokens(&self, body: Value) -> Result<TokenResponse> {
        let tokens: TokenResponse = serde_json::from_value(body)
            .map_err(|e| Error::Protocol(format!("unreadable token answer: {e}")))?;
        if !tokens.token_type.eq_ignore_ascii_case("DPoP") {
            return Err(Error::Protocol(format!(
                "token type {} is not DPoP",
                bounded(&tokens.token_type)
            )));
        }
        if !identity::is_did(&tokens.sub) {
            return Err(Error::Protocol(format!(
                "sub {} is not a DID",
                bounded(&tokens.sub)
            )));
        }
        if !tokens.scope.split_whitespace().any(|s| s == "atproto") {
            return Err(Error::Protocol("the token lacks the atproto scope".into()));
        }
        Ok(tokens)
    }

    /// POSTs a form to one of the server's endpoints with a DPoP proof (and the client's
    /// authentication, by the client key `client_kid`), retrying once with the server's nonce
    /// when it asks for one. Returns the JSON answer and the latest nonce.
    #[allow(clippy::too_many_arguments)] // each is one part of the request
    async fn post_form(
        &self,
        server: &AuthServer,
        endpoint: &str,
        what: &'static str,
        params: &[(&str, &str)],
        key: &Key,
        mut nonce: Option<String>,
        client_kid: Option<&str>,
    ) -> Result<(Value, Option<String>)> {
        let mut retried = false;
        loop {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(params.iter().copied());
            match &self.client.auth {
                ClientAuth::None => {
                    form.append_pair("client_id", &self.client.client_id);
                }
                ClientAuth::PrivateKeyJwt(ring) => {
                    let client_key = ring.for_kid(client_kid)?;
                    let assertion = self.client_assertion(client_key, &server.issuer)?;
                    form.append_pair("client_id", &self.client.client_id)
                        .append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion);
                }
            }
            let proof = dpop::proof(key, "POST", endpoint, nonce.as_deref(), None, self.now_s)?;
            let request = Request::post(endpoint)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(http::header::ACCEPT, "application/json")
                .header("DPoP", proof)
                .body(form.finish().into_bytes())
                .map_err(|e| Error::Protocol(format!("bad {what} request: {e}")))?;
            let response = fetch::send(self.http, request, MAX_BODY).await?;
            let fresh = dpop::nonce_of(response.headers());
            let status = response.status();
            let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok((body, fresh.or(nonce)));
            }
            let error = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            if !retried && error == "use_dpop_nonce" && fresh.is_some() && fresh != nonce {
                retried = true;
                nonce = fresh;
                continue;
            }
            let description = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(Error::Server {
                endpoint: what,
                status: status.as_u16(),
                error: bounded(error),
                description: bounded(description),
            });
        }
    }

    /// A `private_key_jwt` client assertion for the server `audience`.
    fn client_assertion(&self, key: &Key, audience: &str) -> Result<String> {
        let header = json!({ "alg": "ES256", "kid": key.kid() });
        let claims = json!({
            "iss": self.client.client_id,
            "sub": self.client.client_id,
            "aud": audience,
            "jti": random::short_token()?,
            "iat": self.now_s,
            "exp": self.now_s + 60,
        });
        Ok(key.sign(&header, &claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::HandleResolution;

    fn identity() -> IdentityConfig {
        IdentityConfig {
            plc_url: "https://plc.directory".into(),
            handles: HandleResolution::Dns {
                doh_url: "https://cloudflare-dns.com/dns-query".into(),
            },
            reach: Reach::Public,
        }
    }

    #[test]
    fn loopback_client_id_carries_redirect_and_scope() {
        let client = Client::loopback(
            "http://127.0.0.1:8787/oauth/callback",
            "atproto repo:xyz.statusphere.status",
            identity(),
        );
        assert_eq!(
            client.client_id,
            "http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A8787%2Foauth%2Fcallback&scope=atproto+repo%3Axyz.statusphere.status"
        );
        assert_eq!(client.auth_method(), "none");
        assert_eq!(client.jwks(), json!({"keys": []}));
    }

    #[test]
    fn confidential_client_documents() {
        assert!(
            KeyRing::new(vec![Key::generate().unwrap()]).is_err(),
            "no kid"
        );
        assert!(KeyRing::new(vec![]).is_err());
        let key = Key::generate().unwrap().with_kid("2026-11");
        let next = Key::generate().unwrap().with_kid("2027-01");
        assert!(
            KeyRing::new(vec![key.clone(), key.clone()]).is_err(),
            "one kid twice"
        );
        let ring = KeyRing::new(vec![key.clone(), next.clone()]).unwrap();
        let client =
            Client::confidential("https://app.example/", ring, "atproto", identity()).unwrap();
        assert_eq!(
            client.client_id,
            "https://app.example/oauth-client-metadata.json"
        );
        assert_eq!(client.redirect_uri, "https://app.example/oauth/callback");
        let doc = client.metadata_document("Statusphere");
        assert_eq!(doc["client_uri"], "https://app.example");
        assert_eq!(doc["token_endpoint_auth_method"], "private_key_jwt");
        assert_eq!(doc["jwks_uri"], "https://app.example/.well-known/jwks.json");
        assert_eq!(doc["dpop_bound_access_tokens"], true);
        assert_eq!(
            doc["redirect_uris"],
            json!(["https://app.example/oauth/callback"])
        );
        let jwks = client.jwks();
        assert_eq!(jwks["keys"][0], key.public_jwk());
        assert_eq!(jwks["keys"][1], next.public_jwk(), "every key of the ring");
        assert_eq!(client.signing_kid().as_deref(), Some("2026-11"));
        assert!(
            jwks.to_string().find("\"d\"").is_none(),
            "never the private part"
        );
    }

    #[test]
    fn key_rings_from_text_and_by_kid() {
        let a = Key::generate().unwrap().with_kid("a");
        let b = Key::generate().unwrap().with_kid("b");
        let one = KeyRing::from_jwks_text(&a.to_jwk()).unwrap();
        assert_eq!(one.keys().len(), 1);
        let text = format!("[{},{}]", b.to_jwk(), a.to_jwk());
        let ring = KeyRing::from_jwks_text(&text).unwrap();
        assert_eq!(ring.signing().kid(), Some("b"));
        assert_eq!(ring.for_kid(Some("a")).unwrap().kid(), Some("a"));
        assert_eq!(ring.for_kid(None).unwrap().kid(), Some("b"));
        let retired = ring.for_kid(Some("old")).unwrap_err();
        assert!(
            retired.ends_grant(),
            "a retired key's session is over: {retired}"
        );
        assert!(KeyRing::from_jwks_text("not json").is_err());
    }

    #[test]
    fn callback_query() {
        let c = Callback::from_query(
            "code=abc&state=s1&iss=http%3A%2F%2Flocalhost%3A2583&state=other&x=1",
        );
        assert_eq!(c.code.as_deref(), Some("abc"));
        assert_eq!(c.state.as_deref(), Some("s1"), "the first value wins");
        assert_eq!(c.iss.as_deref(), Some("http://localhost:2583"));
        let denied =
            Callback::from_query("error=access_denied&error_description=Access+denied&state=s");
        assert_eq!(denied.error.as_deref(), Some("access_denied"));
        assert_eq!(Callback::from_query(""), Callback::default());
    }
}
