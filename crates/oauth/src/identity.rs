//! atproto identity: what a person types (handle, DID or server URL), handle -> DID (DNS TXT
//! `_atproto` over DNS-over-HTTPS, then `https://<handle>/.well-known/atproto-did`; or a service's
//! `com.atproto.identity.resolveHandle` on a local network), DID -> document (PLC directory or
//! did:web), and the checks that make the result trustworthy: the document's handle must resolve
//! back to the DID (bidirectional verification), and its PDS must be a fetchable URL.

use atrium_xrpc::HttpClient;
use lexicon::syntax::{Did, Handle};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheFor, DNS_TTL_S, DOCUMENT_TTL_S};
use crate::fetch::{self, check_url, Reach};
use crate::{bounded, Error, Result};

/// Where identities are looked up. Configuration, not code, decides (docs/auth.md).
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The PLC directory, e.g. `https://plc.directory`.
    pub plc_url: String,
    pub handles: HandleResolution,
    /// Allow plain http and private hosts (a local network only; never in production).
    pub reach: Reach,
}

/// How handles become DIDs.
#[derive(Debug, Clone)]
pub enum HandleResolution {
    /// DNS TXT `_atproto.<handle>` through a DNS-over-HTTPS JSON API (e.g.
    /// `https://cloudflare-dns.com/dns-query`), then the handle's `.well-known/atproto-did`.
    Dns { doh_url: String },
    /// `com.atproto.identity.resolveHandle` on this service (the local PDS: `.test` handles
    /// exist nowhere else).
    Service { url: String },
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub did: String,
    /// The handle, only if it resolves back to the DID.
    pub handle: Option<String>,
    /// The PDS's base URL, without a trailing slash.
    pub pds: String,
}

/// What a person typed into the sign-in box, parsed once ([`parse_input`]): a handle or DID
/// of atproto syntax (and of a method we resolve), or a fetchable server origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginInput {
    /// Lowercased.
    Handle(Handle),
    Did(Did),
    /// A PDS (or entryway) URL: the account is chosen on the server's own page.
    Server(String),
}

/// Reads the sign-in box: `@alice.example.com`, `did:plc:…`, or `https://pds.example.com`.
pub fn parse_input(text: &str, reach: Reach) -> Result<LoginInput> {
    let text = text.trim();
    let text = text.strip_prefix('@').unwrap_or(text);
    if text.is_empty() {
        return Err(Error::Input(
            "Enter your handle, for example alice.bsky.social.".into(),
        ));
    }
    if text.starts_with("did:") {
        return match Did::new(text.to_owned()) {
            Ok(did) if is_did(text) => Ok(LoginInput::Did(did)),
            _ => Err(Error::Input("That is not a valid DID.".into())),
        };
    }
    if text.starts_with("https://") || text.starts_with("http://") {
        let url = check_url(text, reach)
            .map_err(|_| Error::Input("That server address cannot be used.".into()))?;
        return Ok(LoginInput::Server(fetch::origin(&url)));
    }
    let handle = text.to_ascii_lowercase();
    match Handle::new(handle.clone()) {
        Ok(parsed) if is_handle(&handle, reach) => Ok(LoginInput::Handle(parsed)),
        _ => Err(Error::Input(
            "That is not a valid handle (like alice.bsky.social).".into(),
        )),
    }
}

/// atproto handle syntax: ASCII labels of letters, digits and inner hyphens, at least two labels,
/// at most 253 characters, a last label not starting with a digit, and not a reserved TLD
/// (`.test` only on a local network).
pub fn is_handle(handle: &str, reach: Reach) -> bool {
    if !lexicon::syntax::is_handle(handle) {
        return false;
    }
    let tld = handle
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let reserved = [
        "alt",
        "arpa",
        "example",
        "internal",
        "invalid",
        "local",
        "localhost",
        "onion",
    ];
    if reserved.contains(&tld.as_str()) {
        return false;
    }
    tld != "test" || reach == Reach::Local
}

/// DID syntax, for the methods atproto supports (`plc`, `web`).
pub use lexicon::syntax::is_supported_did as is_did;

/// The parts of a DID document atproto uses.
#[derive(Debug, Clone, Deserialize)]
pub struct DidDocument {
    pub id: String,
    #[serde(default, rename = "alsoKnownAs")]
    pub also_known_as: Vec<String>,
    #[serde(default)]
    pub service: Vec<DidService>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DidService {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "serviceEndpoint")]
    pub endpoint: serde_json::Value,
}

impl DidDocument {
    /// The first `at://` handle the document claims (unverified).
    pub fn handle(&self) -> Option<String> {
        self.also_known_as
            .iter()
            .find_map(|aka| aka.strip_prefix("at://"))
            .map(str::to_ascii_lowercase)
    }

    /// The `#atproto_pds` service's endpoint, without a trailing slash.
    pub fn pds(&self) -> Option<String> {
        self.service
            .iter()
            .find(|s| {
                (s.id == "#atproto_pds" || s.id == format!("{}#atproto_pds", self.id))
                    && s.kind == "AtprotoPersonalDataServer"
            })
            .and_then(|s| s.endpoint.as_str())
            .map(|url| url.trim_end_matches('/').to_owned())
    }
}

/// Handle -> DID.
pub async fn resolve_handle<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    handle: &str,
) -> Result<String> {
    let not_found = || {
        Error::Identity(format!(
            "The handle {handle} does not resolve to an account."
        ))
    };
    let did = match &config.handles {
        HandleResolution::Service { url } => {
            #[derive(Deserialize)]
            struct Resolved {
                did: String,
            }
            let url = format!(
                "{}/xrpc/com.atproto.identity.resolveHandle?handle={handle}",
                url.trim_end_matches('/')
            );
            let resolved: Resolved = fetch::get_json(http, &url, config.reach, "resolveHandle")
                .await
                .map_err(|_| not_found())?;
            resolved.did
        }
        HandleResolution::Dns { doh_url } => match dns_txt(http, config, doh_url, handle).await? {
            Some(did) => did,
            None => well_known(http, config, handle)
                .await
                .map_err(|_| not_found())?,
        },
    };
    if is_did(&did) {
        Ok(did)
    } else {
        Err(Error::Identity(format!(
            "The handle {handle} points at something that is not a DID."
        )))
    }
}

/// `_atproto.<handle>` TXT records through a DNS-over-HTTPS JSON API: the one `did=` value, if
/// there is exactly one. `None` when the name has none (or the lookup failed: the well-known path
/// is tried next); conflicting values are an error.
async fn dns_txt<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    doh_url: &str,
    handle: &str,
) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "type")]
        kind: u16,
        data: String,
    }
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "Status")]
        status: u16,
        #[serde(rename = "Answer", default)]
        answer: Vec<Answer>,
    }
    let url = format!("{doh_url}?name=_atproto.{handle}&type=TXT");
    let cache = Some(CacheFor(DNS_TTL_S));
    let body = match fetch::get_cached(
        http,
        &url,
        config.reach,
        "application/dns-json",
        "DNS",
        cache,
    )
    .await
    {
        Ok(body) => body,
        Err(_) => return Ok(None),
    };
    let Ok(reply) = serde_json::from_slice::<Reply>(&body) else {
        return Ok(None);
    };
    if reply.status != 0 {
        return Ok(None);
    }
    let mut dids: Vec<String> = reply
        .answer
        .iter()
        .filter(|a| a.kind == 16)
        // TXT data arrives quoted, possibly split into several quoted strings.
        .map(|a| a.data.split('"').collect::<String>())
        .filter_map(|txt| txt.trim().strip_prefix("did=").map(str::to_owned))
        .collect();
    dids.sort();
    dids.dedup();
    match dids.len() {
        0 => Ok(None),
        1 => Ok(dids.pop()),
        _ => Err(Error::Identity(format!(
            "The handle {handle} has conflicting DNS records."
        ))),
    }
}

/// `https://<handle>/.well-known/atproto-did`: the DID as the whole (trimmed) body.
async fn well_known<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    handle: &str,
) -> Result<String> {
    let url = format!("https://{handle}/.well-known/atproto-did");
    let cache = Some(CacheFor(DOCUMENT_TTL_S));
    let body = fetch::get_cached(
        http,
        &url,
        config.reach,
        "text/plain",
        "well-known DID",
        cache,
    )
    .await?;
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if text.len() > 2048 {
        return Err(Error::Identity("well-known DID too long".into()));
    }
    Ok(text)
}

/// DID -> document, checking that it is the document of that DID.
pub async fn resolve_did<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    did: &str,
) -> Result<DidDocument> {
    if !is_did(did) {
        return Err(Error::Identity(format!(
            "{} is not a supported DID.",
            bounded(did)
        )));
    }
    let url = if let Some(id) = did.strip_prefix("did:web:") {
        // atproto supports hostname-level did:web only (no paths).
        if id.contains(':') {
            return Err(Error::Identity(
                "did:web with a path is not supported.".into(),
            ));
        }
        let host = id.replace("%3A", ":").replace("%3a", ":");
        let scheme = if config.reach == Reach::Local && host.starts_with("localhost") {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/.well-known/did.json")
    } else {
        format!("{}/{did}", config.plc_url.trim_end_matches('/'))
    };
    let cache = Some(CacheFor(DOCUMENT_TTL_S));
    let doc: DidDocument = fetch::get_json_cached(http, &url, config.reach, "DID document", cache)
        .await
        .map_err(|e| Error::Identity(format!("The identity {did} could not be found: {e}")))?;
    if doc.id != did {
        return Err(Error::Identity(format!(
            "The document for {did} names another DID."
        )));
    }
    Ok(doc)
}

/// The verified identity behind a handle or a DID.
pub async fn resolve<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    input: &LoginInput,
) -> Result<Identity> {
    let (did, doc, handle) = match input {
        LoginInput::Handle(handle) => {
            let handle = handle.as_str();
            let did = resolve_handle(http, config, handle).await?;
            let doc = resolve_did(http, config, &did).await?;
            if doc.handle().as_deref() != Some(handle) {
                return Err(Error::Identity(format!(
                    "The handle {handle} and its account do not confirm each other."
                )));
            }
            (did, doc, Some(handle.to_owned()))
        }
        LoginInput::Did(did) => {
            let doc = resolve_did(http, config, did.as_str()).await?;
            let handle = verified_handle(http, config, &doc).await;
            (did.to_string(), doc, handle)
        }
        LoginInput::Server(_) => {
            return Err(Error::Input(
                "A server URL has no identity to resolve.".into(),
            ))
        }
    };
    identity_of(config, did, &doc, handle)
}

/// The verified identity of a DID (used after the callback, when sign-in began at a server URL).
pub async fn resolve_did_identity<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    did: &str,
) -> Result<Identity> {
    let doc = resolve_did(http, config, did).await?;
    let handle = verified_handle(http, config, &doc).await;
    identity_of(config, did.to_owned(), &doc, handle)
}

/// A DID's handle, verified both ways (the document names it, and it resolves back to the DID);
/// `None` if the document names none or it does not resolve back. For showing authors, where no
/// PDS is needed.
pub async fn resolve_did_handle<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    did: &str,
) -> Result<Option<String>> {
    let doc = resolve_did(http, config, did).await?;
    Ok(verified_handle(http, config, &doc).await)
}

/// The document's handle if it resolves back to the document's DID.
async fn verified_handle<T: HttpClient>(
    http: &T,
    config: &IdentityConfig,
    doc: &DidDocument,
) -> Option<String> {
    let handle = doc.handle()?;
    if !is_handle(&handle, config.reach) {
        return None;
    }
    match resolve_handle(http, config, &handle).await {
        Ok(did) if did == doc.id => Some(handle),
        _ => None,
    }
}

fn identity_of(
    config: &IdentityConfig,
    did: String,
    doc: &DidDocument,
    handle: Option<String>,
) -> Result<Identity> {
    let pds = doc
        .pds()
        .ok_or_else(|| Error::Identity(format!("The account {did} names no PDS.")))?;
    check_url(&pds, config.reach)?;
    Ok(Identity { did, handle, pds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        for ok in ["alice.bsky.social", "a.co", "x-y.example.org", "john.test"] {
            assert!(is_handle(ok, Reach::Local), "{ok}");
        }
        assert!(!is_handle("john.test", Reach::Public), ".test only locally");
        for bad in [
            "",
            "alice",
            "alice.",
            ".alice.com",
            "-a.com",
            "a-.com",
            "a.1com",
            "a..com",
            "al ice.com",
            "alice.local",
            "alice.onion",
            "<script>.com",
            "ünicode.com",
        ] {
            assert!(!is_handle(bad, Reach::Local), "{bad}");
        }
        assert!(!is_handle(&format!("{}.com", "a".repeat(64)), Reach::Local));
    }

    #[test]
    fn dids() {
        assert!(is_did("did:plc:ewvi7nxzyoun6zhxrhs64oiz"));
        assert!(is_did("did:web:example.com"));
        assert!(!is_did("did:key:zQ3sh"));
        assert!(!is_did("did:plc:"));
        assert!(!is_did("did:plc:a b"));
        assert!(!is_did("plc:abc"));
    }

    #[test]
    fn login_inputs() {
        assert_eq!(
            parse_input("  @Alice.BSKY.social ", Reach::Public).unwrap(),
            LoginInput::Handle(Handle::new("alice.bsky.social".into()).unwrap())
        );
        assert_eq!(
            parse_input("did:plc:abc", Reach::Public).unwrap(),
            LoginInput::Did(Did::new("did:plc:abc".into()).unwrap())
        );
        assert_eq!(
            parse_input("https://bsky.social/path", Reach::Public).unwrap(),
            LoginInput::Server("https://bsky.social".into())
        );
        assert!(parse_input("http://localhost:2583", Reach::Public).is_err());
        assert_eq!(
            parse_input("http://localhost:2583", Reach::Local).unwrap(),
            LoginInput::Server("http://localhost:2583".into())
        );
        for bad in ["", "@", "did:key:x", "not a handle", "<b>x</b>.com"] {
            assert!(
                matches!(parse_input(bad, Reach::Local), Err(Error::Input(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn documents() {
        let doc: DidDocument = serde_json::from_str(
            r##"{"id":"did:plc:abc","alsoKnownAs":["at://Alice.test"],
                "service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer",
                            "serviceEndpoint":"http://localhost:2583/"}]}"##,
        )
        .unwrap();
        assert_eq!(doc.handle().as_deref(), Some("alice.test"));
        assert_eq!(doc.pds().as_deref(), Some("http://localhost:2583"));
        let empty: DidDocument = serde_json::from_str(r#"{"id":"did:plc:abc"}"#).unwrap();
        assert_eq!(empty.handle(), None);
        assert_eq!(empty.pds(), None);
    }
}
