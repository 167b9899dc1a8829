//! A hostile PDS and authorization server, for the attack tests: the server anyone on the open
//! network can run. It is one `did:web` identity (`did:web:localhost%3A<port>`, its document
//! naming this server as the PDS and claiming whatever handle it is told to), the OAuth
//! endpoints a sign-in needs (protected-resource and authorization-server metadata, PAR, the
//! authorization endpoint, token, revoke), `com.atproto.repo.createRecord`, the public reads of
//! its repository the backfill makes (`com.atproto.sync.getLatestCommit`,
//! `com.atproto.repo.listRecords`, `com.atproto.repo.getRecord`), and a relay's
//! `com.atproto.sync.listReposByCollection` answering whatever list it is given
//! ([`Hostile::list_repos`]).
//!
//! It speaks the wire formats of the reference PDS and checks what a real one checks (DPoP
//! proofs: signature, `htm`, `htu`, nonce, `ath` and the key the token is bound to; PKCE S256;
//! single-use codes), so that an honest run signs in and writes; then it lies where a test tells
//! it to ([`Hostile::answer_creates_with`], [`Hostile::misbehave`], [`Hostile::misbehave_times`],
//! [`Hostile::put_record`] with a record naming someone else). The authorization endpoint
//! consents at once (303 back to the client) instead of showing a page. The CIDs it mints hash the
//! record's JSON, not its DAG-CBOR: real CID syntax, which is all a client can check.
//!
//! HTTP/1.1 is hand-rolled on purpose: a test needs to send what no well-behaved server library
//! would (bodies without end, one byte a second, no answer at all).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a path misbehaves instead of answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A 200 with a chunked body that never ends (16 KiB chunks as fast as they are read).
    Endless,
    /// A 200 whose declared length is 100 MB, sent slowly.
    HugeLength,
    /// A 200 with a chunked body of one byte a second.
    Trickle,
    /// The request is read, and nothing is ever answered.
    Silent,
    /// A 302 to this URL.
    Redirect(String),
    /// An OAuth-style error answer with this status (429 with `Retry-After`).
    Status(u16),
    /// A 200 with this JSON in place of the honest answer (a lie in the protocol's own shape).
    Json(Value),
}

/// Entries per page of the relay's `listReposByCollection`, whatever the client asks (small,
/// so that a short list still spans pages).
pub const RELAY_PAGE: usize = 3;

type Edit = Box<dyn Fn(&mut Value) + Send + Sync>;

#[derive(Default)]
struct State {
    /// The handle the DID document claims.
    claimed_handle: String,
    /// PAR requests by `request_uri`: the form sent.
    requests: HashMap<String, HashMap<String, String>>,
    /// Codes issued: the PAR form they answer.
    codes: HashMap<String, HashMap<String, String>>,
    /// Live access tokens: the thumbprint of the DPoP key each is bound to.
    access: HashMap<String, String>,
    /// Live refresh tokens: the thumbprint of their DPoP key.
    refresh: HashMap<String, String>,
    /// How createRecord answers are changed before they are sent (honest when unset).
    create_edit: Option<Edit>,
    /// Paths that misbehave, and for how many more requests (`None`: until told otherwise).
    misbehaving: HashMap<String, (Misbehaviour, Option<u32>)>,
    /// Records written, `(collection, rkey, record)`.
    records: Vec<(String, String, Value)>,
    /// Records `listRecords` lists as they are, URI and all (lies about whose they are).
    listed_as: Vec<Value>,
    /// The repository's revision: a TID, moved on by each write.
    rev: String,
    /// What the relay's `listReposByCollection` lists, entry by entry, as sent.
    relay: Vec<Value>,
    nonce: String,
    /// The `expires_in` of the access tokens it issues.
    token_lifetime_s: i64,
    /// Refresh tokens spent for new tokens.
    refreshes: u32,
}

/// A running hostile server; dropping it stops it.
pub struct Hostile {
    pub url: String,
    pub did: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Starts on a free port of 127.0.0.1; its DID document claims `handle`.
    pub async fn start(handle: &str) -> Result<Hostile> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let url = format!("http://localhost:{port}");
        let did = format!("did:web:localhost%3A{port}");
        let state = Arc::new(Mutex::new(State {
            claimed_handle: handle.to_owned(),
            nonce: token(),
            token_lifetime_s: 3600,
            rev: tid(crate::now_ms() * 1000, 2),
            ..State::default()
        }));
        let server = Server {
            url: url.clone(),
            did: did.clone(),
            state: Arc::clone(&state),
        };
        let server = Arc::new(server);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    let _ = server.serve(stream).await;
                });
            }
        });
        Ok(Hostile {
            url,
            did,
            state,
            task,
        })
    }

    /// From now on, each honest createRecord answer is passed through `edit` before it is sent.
    pub fn answer_creates_with(&self, edit: impl Fn(&mut Value) + Send + Sync + 'static) {
        self.lock().create_edit = Some(Box::new(edit));
    }

    /// Answers createRecord honestly again.
    pub fn answer_creates_honestly(&self) {
        self.lock().create_edit = None;
    }

    /// Makes `path` (without query) misbehave, or behave again with `None`.
    pub fn misbehave(&self, path: &str, how: Option<Misbehaviour>) {
        let mut state = self.lock();
        match how {
            Some(how) => state.misbehaving.insert(path.to_owned(), (how, None)),
            None => state.misbehaving.remove(path),
        };
    }

    /// Makes `path` misbehave for its next `times` requests, then behave.
    pub fn misbehave_times(&self, path: &str, how: Misbehaviour, times: u32) {
        self.lock()
            .misbehaving
            .insert(path.to_owned(), (how, Some(times)));
    }

    /// Writes `record` at `collection`/`rkey` in this server's repository (a new revision),
    /// with the collection as its `$type` if it has none, as the reference PDS writes it.
    pub fn put_record(&self, collection: &str, rkey: &str, mut record: Value) {
        if let Some(fields) = record.as_object_mut() {
            fields
                .entry("$type")
                .or_insert_with(|| Value::from(collection));
        }
        let mut state = self.lock();
        state
            .records
            .retain(|(c, k, _)| !(c == collection && k == rkey));
        state
            .records
            .push((collection.to_owned(), rkey.to_owned(), record));
        state.rev = tid(crate::now_ms() * 1000, 3);
    }

    /// Has `listRecords` list `entry` (`{uri, cid, value}`) as it is, whatever its URI says.
    pub fn list_as_is(&self, entry: Value) {
        self.lock().listed_as.push(entry);
    }

    /// What `listReposByCollection` lists from now on (any JSON, each entry as sent; pages of
    /// [`RELAY_PAGE`]).
    pub fn list_repos(&self, entries: Vec<Value>) {
        self.lock().relay = entries;
    }

    /// Access tokens issued from now on say they expire after `seconds`.
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.lock().token_lifetime_s = seconds;
    }

    /// Forgets every refresh token it issued (as a server does when a grant is revoked).
    pub fn forget_refresh_tokens(&self) {
        self.lock().refresh.clear();
    }

    /// Forgets every access token it issued (as a server does when they expire early).
    pub fn forget_access_tokens(&self) {
        self.lock().access.clear();
    }

    /// How many refresh tokens were spent for new tokens.
    pub fn refreshes(&self) -> u32 {
        self.lock().refreshes
    }

    /// The records written to this server's repository: `(collection, rkey, record)`.
    pub fn records(&self) -> Vec<(String, String, Value)> {
        self.lock().records.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Server {
    url: String,
    did: String,
    state: Arc<Mutex<State>>,
}

/// One request, as read.
struct Incoming {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn error(status: u16, error: &str, description: &str) -> Answer {
        Answer::json(
            status,
            json!({ "error": error, "error_description": description, "message": description }),
        )
    }

    fn with(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl Server {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn serve(&self, mut stream: TcpStream) -> Result<()> {
        let incoming = read_request(&mut stream).await?;
        if let Some(how) = self.misbehaviour(&incoming.path) {
            return misbehave(stream, how).await;
        }
        let answer = self.route(&incoming);
        let mut head = format!("HTTP/1.1 {} X\r\n", answer.status);
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            answer.body.len()
        ));
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&answer.body).await?;
        stream.shutdown().await?;
        Ok(())
    }

    /// How `path` misbehaves this time, if it does (one of its counted times spent).
    fn misbehaviour(&self, path: &str) -> Option<Misbehaviour> {
        let mut state = self.lock();
        let (how, times) = state.misbehaving.get_mut(path)?;
        let how = how.clone();
        match times {
            Some(0) => {
                state.misbehaving.remove(path);
                return None;
            }
            Some(left) => *left -= 1,
            None => {}
        }
        Some(how)
    }

    fn route(&self, req: &Incoming) -> Answer {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/.well-known/did.json") => Answer::json(200, self.did_document()),
            ("GET", "/.well-known/oauth-protected-resource") => Answer::json(
                200,
                json!({ "resource": self.url, "authorization_servers": [self.url] }),
            ),
            ("GET", "/.well-known/oauth-authorization-server") => {
                Answer::json(200, self.metadata())
            }
            ("POST", "/oauth/par") => self.par(req),
            ("GET", "/oauth/authorize") => self.authorize(req),
            ("POST", "/oauth/token") => self.token(req),
            ("POST", "/oauth/revoke") => {
                let form = form(&req.body);
                let mut state = self.lock();
                if let Some(token) = form.get("token") {
                    state.refresh.remove(token);
                    state.access.remove(token);
                }
                Answer::json(200, json!({}))
            }
            ("POST", "/xrpc/com.atproto.repo.createRecord") => self.create_record(req),
            ("GET", "/xrpc/com.atproto.repo.getRecord") => self.get_record(req),
            ("GET", "/xrpc/com.atproto.repo.listRecords") => self.list_records(req),
            ("GET", "/xrpc/com.atproto.sync.getLatestCommit") => {
                let rev = self.lock().rev.clone();
                Answer::json(
                    200,
                    json!({ "cid": cid_of(&json!({ "rev": rev })), "rev": rev }),
                )
            }
            ("GET", "/xrpc/com.atproto.sync.listReposByCollection") => self.list_repos(req),
            _ => Answer::error(404, "NotFound", "no such route"),
        }
    }

    /// Whether a query's `repo` names this server's DID (a query decodes its `%3A`).
    fn is_me(&self, repo: Option<&String>) -> bool {
        repo.is_some_and(|r| *r == self.did || *r == self.did.replace("%3A", ":"))
    }

    fn get_record(&self, req: &Incoming) -> Answer {
        let query = form(req.query.as_bytes());
        let state = self.lock();
        let found = state.records.iter().find(|(c, k, _)| {
            self.is_me(query.get("repo"))
                && query.get("collection") == Some(c)
                && query.get("rkey") == Some(k)
        });
        match found {
            Some((collection, rkey, value)) => Answer::json(
                200,
                json!({
                    "uri": format!("at://{}/{collection}/{rkey}", self.did),
                    "cid": cid_of(value),
                    "value": value,
                }),
            ),
            None => Answer::error(400, "RecordNotFound", "Could not locate record"),
        }
    }

    /// The collection's records, newest (greatest key) first, a page of `limit` after `cursor`
    /// (the last key of the page before), then whatever [`Hostile::list_as_is`] was given.
    fn list_records(&self, req: &Incoming) -> Answer {
        let query = form(req.query.as_bytes());
        if !self.is_me(query.get("repo")) {
            return Answer::error(400, "InvalidRequest", "Could not find repo");
        }
        let collection = query.get("collection").cloned().unwrap_or_default();
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(50)
            .clamp(1, 100);
        let state = self.lock();
        let mut records: Vec<&(String, String, Value)> = state
            .records
            .iter()
            .filter(|(c, k, _)| {
                *c == collection && query.get("cursor").is_none_or(|after| k < after)
            })
            .collect();
        records.sort_by(|a, b| b.1.cmp(&a.1));
        let more = records.len() > limit;
        records.truncate(limit);
        let mut listed: Vec<Value> = records
            .iter()
            .map(|(c, k, v)| {
                json!({ "uri": format!("at://{}/{c}/{k}", self.did), "cid": cid_of(v), "value": v })
            })
            .collect();
        let mut answer = json!({ "records": [] });
        if more {
            answer["cursor"] = json!(records.last().map(|r| r.1.clone()));
        } else {
            listed.extend(state.listed_as.iter().cloned());
        }
        answer["records"] = Value::Array(listed);
        Answer::json(200, answer)
    }

    /// The relay: [`RELAY_PAGE`] entries after the offset in `cursor`; the last page's cursor is
    /// the one it was asked with (a relay that would loop on it).
    fn list_repos(&self, req: &Incoming) -> Answer {
        let query = form(req.query.as_bytes());
        let state = self.lock();
        let asked = query.get("cursor").cloned();
        let from: usize = asked.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
        let page: Vec<Value> = state
            .relay
            .iter()
            .skip(from)
            .take(RELAY_PAGE)
            .cloned()
            .collect();
        let next = if from + RELAY_PAGE < state.relay.len() {
            Some((from + RELAY_PAGE).to_string())
        } else {
            asked
        };
        Answer::json(200, json!({ "repos": page, "cursor": next }))
    }

    fn did_document(&self) -> Value {
        let handle = self.lock().claimed_handle.clone();
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": self.did,
            "alsoKnownAs": [format!("at://{handle}")],
            "verificationMethod": [],
            "service": [{
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": self.url,
            }],
        })
    }

    fn metadata(&self) -> Value {
        let url = &self.url;
        json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/oauth/authorize"),
            "token_endpoint": format!("{url}/oauth/token"),
            "pushed_authorization_request_endpoint": format!("{url}/oauth/par"),
            "revocation_endpoint": format!("{url}/oauth/revoke"),
            "require_pushed_authorization_requests": true,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "dpop_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "scopes_supported": ["atproto", "transition:generic", "repo:xyz.statusphere.status"],
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": true,
        })
    }

    /// Checks the request's DPoP proof for `endpoint`; `Err` is the answer to send.
    fn proof(
        &self,
        req: &Incoming,
        endpoint: &str,
        access_token: Option<&str>,
        resource: bool,
    ) -> std::result::Result<String, Answer> {
        let nonce = self.lock().nonce.clone();
        let bad = |why: &str| Answer::error(400, "invalid_dpop_proof", why);
        let Some(jwt) = req.headers.get("dpop") else {
            return Err(bad("missing DPoP proof"));
        };
        let (thumbprint, claims) = verify_proof(jwt).map_err(|e| bad(&e.to_string()))?;
        if claims["htm"] != req.method.as_str() || claims["htu"] != endpoint {
            return Err(bad("htm or htu does not match the request"));
        }
        if claims["nonce"] != nonce.as_str() {
            let answer = if resource {
                Answer::error(401, "use_dpop_nonce", "nonce required").with(
                    "www-authenticate",
                    "DPoP error=\"use_dpop_nonce\", error_description=\"nonce required\"",
                )
            } else {
                Answer::error(400, "use_dpop_nonce", "nonce required")
            };
            return Err(answer.with("dpop-nonce", &nonce));
        }
        if let Some(token) = access_token {
            let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if claims["ath"] != ath.as_str() {
                return Err(bad("ath does not match the access token"));
            }
        }
        Ok(thumbprint)
    }

    fn par(&self, req: &Incoming) -> Answer {
        if let Err(answer) = self.proof(req, &format!("{}/oauth/par", self.url), None, false) {
            return answer;
        }
        let form = form(&req.body);
        for field in [
            "client_id",
            "redirect_uri",
            "state",
            "code_challenge",
            "scope",
        ] {
            if form.get(field).is_none_or(String::is_empty) {
                return Answer::error(400, "invalid_request", &format!("{field} is required"));
            }
        }
        if form.get("code_challenge_method").map(String::as_str) != Some("S256") {
            return Answer::error(400, "invalid_request", "S256 is required");
        }
        let request_uri = format!("urn:ietf:params:oauth:request_uri:req-{}", token());
        self.lock().requests.insert(request_uri.clone(), form);
        Answer::json(
            201,
            json!({ "request_uri": request_uri, "expires_in": 300 }),
        )
    }

    /// Consents at once: back to the client with a code, the state and the issuer.
    fn authorize(&self, req: &Incoming) -> Answer {
        let query = form(req.query.as_bytes());
        let mut state = self.lock();
        let Some(request) = query
            .get("request_uri")
            .and_then(|uri| state.requests.remove(uri))
        else {
            return Answer::error(400, "invalid_request", "unknown request_uri");
        };
        if query.get("client_id") != request.get("client_id") {
            return Answer::error(400, "invalid_request", "client_id does not match");
        }
        let code = token();
        let redirect = format!(
            "{}?{}",
            request["redirect_uri"],
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("code", &code)
                .append_pair("state", &request["state"])
                .append_pair("iss", &self.url)
                .finish()
        );
        state.codes.insert(code, request);
        Answer {
            status: 303,
            headers: vec![("location".into(), redirect)],
            body: Vec::new(),
        }
    }

    fn token(&self, req: &Incoming) -> Answer {
        let thumbprint = match self.proof(req, &format!("{}/oauth/token", self.url), None, false) {
            Ok(thumbprint) => thumbprint,
            Err(answer) => return answer,
        };
        let form = form(&req.body);
        let mut state = self.lock();
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let Some(request) = form.get("code").and_then(|c| state.codes.remove(c)) else {
                    return Answer::error(400, "invalid_grant", "unknown or used code");
                };
                let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
                if request.get("code_challenge") != Some(&challenge)
                    || form.get("redirect_uri") != request.get("redirect_uri")
                {
                    return Answer::error(400, "invalid_grant", "PKCE or redirect_uri mismatch");
                }
            }
            Some("refresh_token") => {
                let bound = form
                    .get("refresh_token")
                    .and_then(|t| state.refresh.remove(t));
                if bound.as_deref() != Some(thumbprint.as_str()) {
                    return Answer::error(400, "invalid_grant", "unknown refresh token");
                }
                state.refreshes += 1;
            }
            _ => return Answer::error(400, "unsupported_grant_type", "unsupported grant"),
        }
        let (access, refresh) = (token(), token());
        state.access.insert(access.clone(), thumbprint.clone());
        state.refresh.insert(refresh.clone(), thumbprint);
        Answer::json(
            200,
            json!({
                "access_token": access,
                "token_type": "DPoP",
                "expires_in": state.token_lifetime_s,
                "refresh_token": refresh,
                "scope": "atproto repo:xyz.statusphere.status",
                "sub": self.did,
            }),
        )
    }

    fn create_record(&self, req: &Incoming) -> Answer {
        let endpoint = format!("{}/xrpc/com.atproto.repo.createRecord", self.url);
        let access = req
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("DPoP "))
            .unwrap_or_default()
            .to_owned();
        let thumbprint = match self.proof(req, &endpoint, Some(&access), true) {
            Ok(thumbprint) => thumbprint,
            Err(answer) => return answer,
        };
        let mut state = self.lock();
        if state.access.get(&access) != Some(&thumbprint) {
            return Answer::error(401, "invalid_token", "bad token").with(
                "www-authenticate",
                "DPoP error=\"invalid_token\", error_description=\"bad token\"",
            );
        }
        let Ok(input) = serde_json::from_slice::<Value>(&req.body) else {
            return Answer::error(400, "InvalidRequest", "body is not JSON");
        };
        if input["repo"] != self.did.as_str() {
            return Answer::error(400, "InvalidRequest", "not this server's repo");
        }
        let collection = input["collection"].as_str().unwrap_or_default().to_owned();
        let now_us = crate::now_ms() * 1000;
        let rkey = tid(now_us, 1);
        let rev = tid(now_us, 2);
        let record = input["record"].clone();
        let mut answer = json!({
            "uri": format!("at://{}/{collection}/{rkey}", self.did),
            "cid": cid_of(&record),
            "commit": { "cid": cid_of(&json!({ "rev": rev })), "rev": rev },
            "validationStatus": "unknown",
        });
        state.records.push((collection, rkey, record));
        state.rev = rev;
        if let Some(edit) = &state.create_edit {
            edit(&mut answer);
        }
        Answer::json(200, answer)
    }
}

async fn misbehave(mut stream: TcpStream, how: Misbehaviour) -> Result<()> {
    match how {
        Misbehaviour::Endless => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
            loop {
                stream.write_all(chunk.as_bytes()).await?;
            }
        }
        Misbehaviour::HugeLength => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n")
                .await?;
            loop {
                stream.write_all(&[b' '; 1024]).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Misbehaviour::Trickle => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            loop {
                stream.write_all(b"1\r\n \r\n").await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Misbehaviour::Silent => {
            // Hold the connection open, answering nothing, until the client gives up.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok(())
        }
        Misbehaviour::Status(status) => {
            let body =
                json!({ "error": "temporarily_unavailable", "error_description": "try later" })
                    .to_string();
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nretry-after: 30\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            Ok(())
        }
        Misbehaviour::Json(body) => {
            let body = body.to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            Ok(())
        }
        Misbehaviour::Redirect(to) => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            Ok(())
        }
    }
}

/// Reads one request: the head (at most 64 KiB) and a body of `content-length` (at most 1 MiB).
async fn read_request(stream: &mut TcpStream) -> Result<Incoming> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        anyhow::ensure!(buffer.len() < 64 * 1024, "request head too large");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-request");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().context("no request line")?.split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(length <= 1024 * 1024, "request body too large");
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Incoming {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

fn form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// Verifies a DPoP proof's ES256 signature by the key in its header; returns that key's JWK
/// thumbprint (RFC 7638) and the claims.
fn verify_proof(jwt: &str) -> Result<(String, Value)> {
    let parts: Vec<&str> = jwt.split('.').collect();
    anyhow::ensure!(parts.len() == 3, "not a JWT");
    let decode = |part: &str| -> Result<Value> {
        Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part)?)?)
    };
    let (header, claims) = (decode(parts[0])?, decode(parts[1])?);
    anyhow::ensure!(
        header["typ"] == "dpop+jwt" && header["alg"] == "ES256",
        "not an ES256 DPoP proof"
    );
    let jwk = &header["jwk"];
    let coordinate = |name: &str| -> Result<Vec<u8>> {
        Ok(URL_SAFE_NO_PAD.decode(jwk[name].as_str().context("jwk coordinate")?)?)
    };
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    anyhow::ensure!(x.len() == 32 && y.len() == 32, "not a P-256 key");
    let point = p256::EncodedPoint::from_affine_coordinates(
        p256::FieldBytes::from_slice(&x),
        p256::FieldBytes::from_slice(&y),
        false,
    );
    let key = VerifyingKey::from_encoded_point(&point)?;
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2])?)?;
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)?;
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap_or_default(),
        jwk["y"].as_str().unwrap_or_default()
    );
    let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    Ok((thumbprint, claims))
}

/// 256 random-enough bits for tokens and codes (a test server: the clock and a counter).
fn token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{}-{n}-{:?}", crate::now_ms(), std::thread::current().id());
    URL_SAFE_NO_PAD.encode(Sha256::digest(seed.as_bytes()))
}

/// A TID for `time_us` with `clock_id`.
pub fn tid(time_us: i64, clock_id: u64) -> String {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut value = ((time_us as u64) & ((1 << 53) - 1)) << 10 | (clock_id & 0x3FF);
    let mut out = [0u8; 13];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CIDv1 (dag-cbor, sha2-256) over the record's JSON, in base32: what a CID looks like.
pub fn cid_of(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    let mut bytes = vec![0x01, 0x71, 0x12, 0x20];
    bytes.extend_from_slice(&digest);
    format!("b{}", base32_lower(&bytes))
}

fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}
