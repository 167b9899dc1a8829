//! DPoP proofs (RFC 9449): a JWT signed by the session's own key for every request to the
//! authorization server and the PDS, carrying the method, the URL without query or fragment, the
//! time, a unique `jti`, the server's latest nonce, and (towards the PDS) `ath`, the hash of the
//! access token it accompanies.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::jose::Key;
use crate::{random, Result};

/// The header a server sends its nonce in (and where the next proof's `nonce` comes from).
pub const NONCE_HEADER: &str = "dpop-nonce";

/// A proof for `method url`, made at `now_s` (unix seconds).
pub fn proof(
    key: &Key,
    method: &str,
    url: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
    now_s: i64,
) -> Result<String> {
    let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk() });
    let mut claims = json!({
        "jti": random::short_token()?,
        "htm": method,
        "htu": htu(url),
        "iat": now_s,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    if let Some(token) = access_token {
        claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
    }
    Ok(key.sign(&header, &claims))
}

/// The URL without its query and fragment (RFC 9449 §4.2).
pub fn htu(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// The nonce a response carries, if any (servers may rotate it on any response).
pub fn nonce_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 512)
        .map(str::to_owned)
}

/// Whether a resource server's answer asks for the request again with its nonce: 401 with
/// `WWW-Authenticate: DPoP error="use_dpop_nonce"` (RFC 9449 §9).
pub fn resource_wants_nonce(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("use_dpop_nonce"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn claims(jwt: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        let decode = |p: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        (decode(parts[0]), decode(parts[1]))
    }

    #[test]
    fn proofs_carry_what_servers_check() {
        let key = Key::generate().unwrap();
        let token = "an-access-token";
        let jwt = proof(
            &key,
            "POST",
            "https://pds.example/xrpc/com.atproto.repo.createRecord?x=1#f",
            Some("n1"),
            Some(token),
            1_700_000_000,
        )
        .unwrap();
        let (header, body) = claims(&jwt);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"], key.public_jwk());
        assert!(header["jwk"].get("d").is_none(), "never the private part");
        assert_eq!(body["htm"], "POST");
        assert_eq!(
            body["htu"],
            "https://pds.example/xrpc/com.atproto.repo.createRecord"
        );
        assert_eq!(body["iat"], 1_700_000_000);
        assert_eq!(body["nonce"], "n1");
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        assert_eq!(body["ath"], ath);

        let again = proof(&key, "POST", "https://as.example/token", None, None, 1).unwrap();
        let (_, body2) = claims(&again);
        assert!(body2.get("nonce").is_none() && body2.get("ath").is_none());
        assert_ne!(body["jti"], body2["jti"], "a fresh jti per proof");
    }

    #[test]
    fn nonce_retry_signals() {
        let mut headers = HeaderMap::new();
        assert!(!resource_wants_nonce(StatusCode::UNAUTHORIZED, &headers));
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
        );
        headers.insert(NONCE_HEADER, "abc".parse().unwrap());
        assert!(resource_wants_nonce(StatusCode::UNAUTHORIZED, &headers));
        assert!(!resource_wants_nonce(StatusCode::BAD_REQUEST, &headers));
        assert_eq!(nonce_of(&headers).as_deref(), Some("abc"));
        headers.insert(NONCE_HEADER, "x".repeat(600).parse().unwrap());
        assert_eq!(nonce_of(&headers), None, "an absurd nonce is ignored");
    }
}
