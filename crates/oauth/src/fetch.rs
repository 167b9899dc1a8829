//! Outbound requests: which URLs may be fetched at all, and size-bounded reads.
//!
//! Every URL this crate fetches comes from the network (DID documents, metadata, what the person
//! typed), so each one passes [`check_url`] first. In production ([`Reach::Public`]) only https
//! to a DNS name is allowed: no IP literals, no `localhost`, no `.local`/`.internal` names (SSRF).
//! A Worker cannot see what a name resolves to; Cloudflare's fetch does not reach private networks,
//! which covers the rest. Locally ([`Reach::Local`]) plain http and loopback are allowed, because
//! the local PDS is `http://localhost:<port>`.

use atrium_xrpc::HttpClient;
use http::{Request, Response, Uri};
use serde::de::DeserializeOwned;

use crate::cache::CacheFor;
use crate::{bounded, Error, Result};

/// Which hosts this crate may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// https to public DNS names only: production.
    Public,
    /// Also plain http, loopback and private hosts, and `.test` handles: a local network only.
    Local,
}

/// The most any identity or metadata document may weigh. Real ones are a few KB.
pub const MAX_BODY: usize = 64 * 1024;

/// Parses `url` and refuses what must not be fetched (see the module docs).
///
/// The parse is `http::Uri`'s, stricter than the WHATWG parser the runtime's fetch uses: it
/// refuses spaces, backslashes and anything not ASCII, so what passes reads the same to both. The
/// host is further held to lowercase-able DNS characters (no percent-encoding, which WHATWG would
/// decode), and a name whose last label is a number (`127.1`, `0x7f.1`, `2130706433`), which
/// WHATWG reads as an IPv4 address, is an address here too.
pub fn check_url(url: &str, reach: Reach) -> Result<Uri> {
    let not_a_url = || Error::Protocol(format!("not a URL: {}", bounded(url)));
    let parsed: Uri = url.parse().map_err(|_| not_a_url())?;
    let refuse = |why: &str| Err(Error::Protocol(format!("refusing {}: {why}", bounded(url))));
    let authority = parsed.authority().ok_or_else(not_a_url)?;
    if authority.as_str().contains('@') {
        return refuse("credentials in the URL");
    }
    match parsed.scheme_str() {
        Some("https") => {}
        Some("http") if reach == Reach::Local => {}
        _ => return refuse("only https is allowed"),
    }
    let host = authority.host();
    if host.is_empty() {
        return refuse("no host");
    }
    if reach == Reach::Local {
        return Ok(parsed);
    }
    if host.starts_with('[') {
        return refuse("an IP address, not a name");
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return refuse("not a DNS name");
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = |label: &str| {
        !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
            || label
                .strip_prefix("0x")
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if numeric(last) {
        return refuse("an IP address, not a name");
    }
    let private = name == "localhost"
        || !name.contains('.')
        || [
            ".localhost",
            ".local",
            ".internal",
            ".arpa",
            ".home",
            ".lan",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    if private {
        return refuse("a private name");
    }
    Ok(parsed)
}

/// The origin of a checked URL: its scheme, host and port (a default port left out), as the
/// WHATWG URL standard serialises one.
pub fn origin(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("https");
    let host = url.host().unwrap_or_default().to_ascii_lowercase();
    match (scheme, url.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) | (_, None) => format!("{scheme}://{host}"),
        (_, Some(port)) => format!("{scheme}://{host}:{port}"),
    }
}

/// The most bytes an answer to this request may have: set by [`send`] as a request extension,
/// so that a transport can stop reading there (a transport that ignores it still gets the answer
/// refused after reading). Edge's transport streams and aborts at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// Sends `request`, mapping transport failures and refusing bodies over `max` bytes.
pub async fn send<T: HttpClient>(
    http: &T,
    mut request: Request<Vec<u8>>,
    max: usize,
) -> Result<Response<Vec<u8>>> {
    request.extensions_mut().insert(BodyLimit(max));
    let target = format!(
        "{}{}",
        request.uri().host().unwrap_or(""),
        request.uri().path()
    );
    let response = http.send_http(request).await.map_err(|e| {
        Error::Transport(format!("{target} unreachable: {}", bounded(&e.to_string())))
    })?;
    if response.body().len() > max {
        return Err(Error::Transport(format!(
            "{target} answered more than {max} bytes"
        )));
    }
    Ok(response)
}

/// GETs `url` (after [`check_url`]) and reads a JSON document of at most [`MAX_BODY`] bytes.
pub async fn get_json<T: HttpClient, D: DeserializeOwned>(
    http: &T,
    url: &str,
    reach: Reach,
    what: &str,
) -> Result<D> {
    get_json_cached(http, url, reach, what, None).await
}

/// [`get_json`], whose answer a caching transport may keep for `cache`
/// ([`crate::cache::Cached`]).
pub async fn get_json_cached<T: HttpClient, D: DeserializeOwned>(
    http: &T,
    url: &str,
    reach: Reach,
    what: &str,
    cache: Option<CacheFor>,
) -> Result<D> {
    let body = get_cached(http, url, reach, "application/json", what, cache).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("{what} from {} is not valid: {e}", bounded(url))))
}

/// GETs `url` (after [`check_url`]) and returns its body when the answer is 200.
pub async fn get<T: HttpClient>(
    http: &T,
    url: &str,
    reach: Reach,
    accept: &str,
    what: &str,
) -> Result<Vec<u8>> {
    get_cached(http, url, reach, accept, what, None).await
}

/// [`get`], whose answer a caching transport may keep for `cache`.
pub async fn get_cached<T: HttpClient>(
    http: &T,
    url: &str,
    reach: Reach,
    accept: &str,
    what: &str,
    cache: Option<CacheFor>,
) -> Result<Vec<u8>> {
    let parsed = check_url(url, reach)?;
    let mut request = Request::get(parsed)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())
        .map_err(|e| Error::Protocol(format!("bad request to {}: {e}", bounded(url))))?;
    if let Some(cache) = cache {
        request.extensions_mut().insert(cache);
    }
    let response = send(http, request, MAX_BODY).await?;
    if response.status() != http::StatusCode::OK {
        return Err(Error::Transport(format!(
            "{what} at {} answered {}",
            bounded(url),
            response.status().as_u16()
        )));
    }
    Ok(response.into_body())
}

#[cfg(test)]
mod tests {
    use super::{check_url, origin, Reach};

    #[test]
    fn origins_leave_out_default_ports() {
        for (url, expected) in [
            (
                "https://PDS.example.com/xrpc/x?y=1",
                "https://pds.example.com",
            ),
            ("https://pds.example.com:443/", "https://pds.example.com"),
            (
                "https://pds.example.com:8443/a",
                "https://pds.example.com:8443",
            ),
        ] {
            let checked = check_url(url, Reach::Public).unwrap();
            assert_eq!(origin(&checked), expected, "{url}");
        }
        let local = check_url("http://localhost:2583/", Reach::Local).unwrap();
        assert_eq!(origin(&local), "http://localhost:2583");
    }

    #[test]
    fn production_fetches_only_public_https_names() {
        for ok in [
            "https://bsky.social/xrpc/x",
            "https://plc.directory/did:plc:abc",
            "https://pds.example.com:8443/",
            "https://bsky.social",
            "https://xn--bcher-kva.example/",
        ] {
            assert!(check_url(ok, Reach::Public).is_ok(), "{ok}");
        }
        for bad in [
            "http://bsky.social/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/",
            "https://foo.localhost/",
            "https://printer.local/",
            "https://metadata.google.internal/",
            "https://intranet/",
            "https://user:pw@bsky.social/",
            "https://127.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://%6c%6fcalhost/",
            "https://bsky.social\\@evil.example/",
            "https://exa mple.com/",
            "https://bücher.example/",
            "ftp://bsky.social/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_url(bad, Reach::Public).is_err(), "{bad}");
        }
        assert!(check_url("http://localhost:2583/", Reach::Local).is_ok());
        assert!(check_url("http://127.0.0.1:2582/did:plc:x", Reach::Local).is_ok());
        assert!(check_url("ftp://localhost/", Reach::Local).is_err());
    }
}
