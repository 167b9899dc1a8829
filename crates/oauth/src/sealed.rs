//! Secrets at rest: OAuth sessions and sign-ins in progress hold tokens and DPoP private keys, and
//! D1 is not the place to keep those readable (a leaked export or backup, a mistaken query, a
//! console). So each is sealed with AES-256-GCM under a key from a `wrangler secret`
//! (`SESSION_KEYS`), with the row's own key (a DID, a `state`) as associated data, so that a
//! sealed value cannot be moved to another row.
//!
//! A sealed value reads `v1.<kid>.<nonce>.<ciphertext>` (base64url): the key id travels with it, so
//! keys can rotate. The key ring is `kid:key,kid:key,…` (32-byte keys, base64url), the first one
//! current: new values are sealed with it, older ones still open with theirs until they are
//! rewritten (sessions are rewritten at every refresh) or expire.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{random, Error, Result};

const VERSION: &str = "v1";

/// The keys values are sealed and opened with.
#[derive(Clone)]
pub struct Keyring {
    /// `(kid, cipher)`, the current one first.
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("Keyring").field("kids", &kids).finish()
    }
}

impl Keyring {
    /// Reads `kid:key,kid:key,…` (the current key first).
    pub fn parse(spec: &str) -> Result<Keyring> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, key) = entry
                .split_once(':')
                .ok_or_else(|| Error::Key("a session key is not kid:key".into()))?;
            if kid.is_empty()
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Error::Key(
                    "a session key id must be letters, digits, - or _".into(),
                ));
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(key)
                .map_err(|_| Error::Key(format!("session key {kid} is not base64url")))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| Error::Key(format!("session key {kid} is not 32 bytes")))?;
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(Error::Key(format!("session key {kid} is named twice")));
            }
            keys.push((kid.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(Error::Key("no session key".into()));
        }
        Ok(Keyring { keys })
    }

    /// A new key ring entry `kid:key` with a random key.
    pub fn generate_entry(kid: &str) -> Result<String> {
        Ok(format!(
            "{kid}:{}",
            URL_SAFE_NO_PAD.encode(random::bytes::<32>()?)
        ))
    }

    /// Seals `plaintext` for the row `row` with the current key.
    pub fn seal(&self, plaintext: &[u8], row: &str) -> Result<String> {
        let (kid, cipher) = &self.keys[0];
        let nonce = random::bytes::<12>()?;
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: row.as_bytes(),
                },
            )
            .map_err(|_| Error::Key("sealing failed".into()))?;
        Ok(format!(
            "{VERSION}.{kid}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// Opens a value sealed for the row `row`, with whichever key of the ring sealed it.
    pub fn open(&self, sealed: &str, row: &str) -> Result<Vec<u8>> {
        let unreadable = |why: &str| Error::Key(format!("a sealed value {why}"));
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(kid), Some(nonce), Some(body), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(unreadable("is not sealed"));
        };
        let Some((_, cipher)) = self.keys.iter().find(|(k, _)| k == kid) else {
            return Err(unreadable("names a key this ring does not have"));
        };
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .filter(|n| n.len() == 12)
            .ok_or_else(|| unreadable("has a bad nonce"))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| unreadable("is not base64url"))?;
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &body,
                    aad: row.as_bytes(),
                },
            )
            .map_err(|_| unreadable("does not open (another row's, or altered)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_row_and_hide_what_they_hold() {
        let keys = ring(&Keyring::generate_entry("k1").unwrap());
        let secret = br#"{"access_token":"abc","refresh_token":"def"}"#;
        let sealed = keys.seal(secret, "did:plc:alice").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("access_token"));
        assert_eq!(keys.open(&sealed, "did:plc:alice").unwrap(), secret);
        assert!(
            keys.open(&sealed, "did:plc:bob").is_err(),
            "moved to another row"
        );
        assert_ne!(
            sealed,
            keys.seal(secret, "did:plc:alice").unwrap(),
            "a fresh nonce"
        );
        // Any altered byte is refused.
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(keys.open(&altered, "did:plc:alice").is_err());
        for junk in [
            "",
            "{\"access_token\":\"x\"}",
            "v1.k1.x",
            "v2.k1.AAAA.AAAA",
            "v1.k1.AAAA.AAAA.x",
        ] {
            assert!(keys.open(junk, "did:plc:alice").is_err(), "{junk}");
        }
    }

    #[test]
    fn keys_rotate_old_values_still_open() {
        let old = Keyring::generate_entry("old").unwrap();
        let new = Keyring::generate_entry("new").unwrap();
        let before = ring(&old).seal(b"session", "s").unwrap();
        let rotated = ring(&format!("{new},{old}"));
        assert_eq!(rotated.open(&before, "s").unwrap(), b"session");
        let after = rotated.seal(b"session", "s").unwrap();
        assert!(after.starts_with("v1.new."), "sealed with the current key");
        assert!(
            ring(&old).open(&after, "s").is_err(),
            "the old ring lacks the new key"
        );
        assert!(
            ring(&new).open(&before, "s").is_err(),
            "a retired key opens nothing"
        );
    }

    #[test]
    fn bad_key_rings_are_refused() {
        let good = Keyring::generate_entry("k").unwrap();
        for bad in [
            "".to_owned(),
            "nokid".to_owned(),
            "k:notbase64!".to_owned(),
            "k:AAAA".to_owned(),
            format!("{good},{good}"),
            format!("bad kid:{}", good.split_once(':').unwrap().1),
        ] {
            assert!(Keyring::parse(&bad).is_err(), "{bad}");
        }
        assert!(format!("{:?}", ring(&good)).contains("\"k\""));
        assert!(!format!("{:?}", ring(&good)).contains(good.split_once(':').unwrap().1));
    }
}
