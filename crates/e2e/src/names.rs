//! The public network's names, locally, for the identity tests: a certificate authority made
//! for the run ([`TestCa`], for these names only), one server on 127.0.0.1 that answers HTTPS (a
//! certificate from that CA for `example.com` and `*.example.com`) and plain HTTP, and a client
//! ([`Names::client`]) that reaches the names it is told on that server and trusts the CA, as a
//! worker reaches the public network. The server speaks what the real services speak:
//! - DNS-over-HTTPS, Cloudflare's JSON API: `GET /dns-query?name=…&type=TXT` with
//!   `Accept: application/dns-json`, answered `{"Status":0,…,"Answer":[{"type":16,"data":"\"…\""}]}`,
//!   or `Status` 3 (NXDOMAIN) for a name without records;
//! - `GET /.well-known/atproto-did` (the handle's DID, as text) and `GET /.well-known/did.json`
//!   (a did:web document), per host.
//!
//! Each answer can be made a failure (an HTTP status), and every request is counted by host and
//! path, so a test sees what was asked and what a cache saved.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::pds::Reqwest;
use crate::tls::TestCa;

/// The names the certificate covers: any `*.example.com` (handles, did:web hosts, PDSes, the DoH
/// service), and `example.com` itself.
pub const DOMAIN: &str = "example.com";
/// The DNS-over-HTTPS service's name.
pub const DOH_HOST: &str = "dns.example.com";

/// What a path answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(String),
    /// This status, with an empty body.
    Status(u16),
}

#[derive(Default)]
struct State {
    /// TXT records by name (lowercase, no trailing dot).
    txt: HashMap<String, Vec<String>>,
    /// When set, every DNS query answers this HTTP status.
    dns_failure: Option<u16>,
    /// `(host, path)` -> reply.
    documents: HashMap<(String, String), Reply>,
    /// Requests by `host/path`.
    hits: HashMap<String, u64>,
}

/// The running server.
pub struct Names {
    pub ca: TestCa,
    https: SocketAddr,
    http: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Names {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Names {
    pub async fn start() -> Result<Names> {
        let ca = TestCa::new(&[DOMAIN])?;
        let wildcard = format!("*.{DOMAIN}");
        let tls =
            tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config(&[DOMAIN, &wildcard])?));
        let state = Arc::new(Mutex::new(State::default()));
        let https_listener = TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (https, http) = (https_listener.local_addr()?, http_listener.local_addr()?);
        let secure = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = https_listener.accept().await {
                    let (tls, state) = (tls.clone(), state.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = serve(stream, &state).await;
                        }
                    });
                }
            })
        };
        let plain = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = http_listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, &state).await;
                    });
                }
            })
        };
        Ok(Names {
            ca,
            https,
            http,
            state,
            tasks: vec![secure, plain],
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `name`'s TXT records (replacing any), e.g. `_atproto.carol.example.com` ->
    /// `["did=did:web:carol.example.com"]`; none makes the name NXDOMAIN.
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut state = self.state();
        if values.is_empty() {
            state.txt.remove(&name);
        } else {
            state.txt.insert(name, values);
        }
    }

    /// Every DNS query answers this HTTP status (`None`: answers again).
    pub fn fail_dns(&self, status: Option<u16>) {
        self.state().dns_failure = status;
    }

    /// What `https://<host><path>` answers.
    pub fn serve(&self, host: &str, path: &str, reply: Reply) {
        self.state()
            .documents
            .insert((host.to_ascii_lowercase(), path.to_owned()), reply);
    }

    /// Requests so far to `host` and `path` (e.g. `dns.example.com`, `/dns-query`).
    pub fn hits(&self, host: &str, path: &str) -> u64 {
        let key = format!("{}{path}", host.to_ascii_lowercase());
        self.state().hits.get(&key).copied().unwrap_or(0)
    }

    /// The DNS-over-HTTPS endpoint, by name (for [`Names::client`]).
    pub fn doh_url(&self) -> String {
        format!("https://{DOH_HOST}/dns-query")
    }

    /// The same endpoint over plain HTTP on its address (for a worker on a local network, which
    /// reaches no test name).
    pub fn doh_http_url(&self) -> String {
        format!("http://{}/dns-query", self.http)
    }

    /// A transport that reaches each of `hosts` (port 443) on this server and trusts only the
    /// test CA; every other name goes to the machine's resolver (and finds nothing offline).
    pub fn client(&self, hosts: &[&str]) -> Result<Reqwest> {
        let ca = self.ca.reqwest_root()?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(std::time::Duration::from_secs(5));
        for host in hosts.iter().copied().chain([DOH_HOST]) {
            builder = builder.resolve(host, self.https);
        }
        Ok(Reqwest::with(builder.build().context("a reqwest client")?))
    }
}

/// One HTTP/1.1 exchange per connection (`Connection: close`).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: &Mutex<State>,
) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0 && head.len() < 64 * 1024, "no request head");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| {
            v.trim()
                .split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, content_type, body) = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        *state.hits.entry(format!("{host}{path}")).or_default() += 1;
        answer(&state, &host, path, query)
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

fn answer(state: &State, host: &str, path: &str, query: &str) -> (u16, &'static str, String) {
    if path == "/dns-query" {
        if let Some(status) = state.dns_failure {
            return (status, "text/plain", String::new());
        }
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let (Some(name), Some("TXT" | "16")) =
            (params.get("name"), params.get("type").map(String::as_str))
        else {
            return (400, "text/plain", "name and type=TXT are required".into());
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let question = json!([{ "name": format!("{name}."), "type": 16 }]);
        let reply = match state.txt.get(&name) {
            Some(values) => json!({
                "Status": 0, "TC": false, "RD": true, "RA": true, "AD": false, "CD": false,
                "Question": question,
                // TXT data is quoted, as DNS-over-HTTPS services return it.
                "Answer": values.iter().map(|v| json!({
                    "name": format!("{name}."), "type": 16, "TTL": 300, "data": format!("\"{v}\"")
                })).collect::<Vec<_>>(),
            }),
            None => json!({
                "Status": 3, "TC": false, "RD": true, "RA": true, "AD": false, "CD": false,
                "Question": question,
            }),
        };
        return (200, "application/dns-json", reply.to_string());
    }
    match state.documents.get(&(host.to_owned(), path.to_owned())) {
        Some(Reply::Body(body)) => {
            let content_type = if path.ends_with(".json") {
                "application/json"
            } else {
                "text/plain"
            };
            (200, content_type, body.clone())
        }
        Some(Reply::Status(status)) => (*status, "text/plain", String::new()),
        None => (404, "text/plain", "not found".into()),
    }
}
