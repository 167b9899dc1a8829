//! ES256 keys as JWKs and compact JWS signing: all the JOSE that DPoP proofs and
//! `private_key_jwt` client assertions need. Signatures are deterministic (RFC 6979), so
//! randomness is needed only to make keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{random, Error, Result};

/// A P-256 private key. Serialises as a private JWK (it is stored server side only).
#[derive(Clone)]
pub struct Key {
    signing: SigningKey,
    kid: Option<String>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private part.
        write!(f, "Key({})", self.public_jwk())
    }
}

/// The JSON form of a private EC key (RFC 7517/7518).
#[derive(Serialize, Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
    d: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

impl Key {
    /// A fresh key.
    pub fn generate() -> Result<Key> {
        // A random scalar is out of range with probability ~2^-32; try again then.
        for _ in 0..8 {
            if let Ok(signing) = SigningKey::from_slice(&random::bytes::<32>()?) {
                return Ok(Key { signing, kid: None });
            }
        }
        Err(Error::Key("could not draw a P-256 scalar".into()))
    }

    /// Reads a private JWK (`{"kty":"EC","crv":"P-256","x","y","d","kid"?}`), checking that its
    /// public part matches the private one.
    pub fn from_jwk(json: &str) -> Result<Key> {
        let jwk: PrivateJwk = serde_json::from_str(json)
            .map_err(|e| Error::Key(format!("not a private JWK: {e}")))?;
        Key::try_from(jwk)
    }

    /// The same key with a key id (for a JWKS and the `kid` header of client assertions).
    pub fn with_kid(mut self, kid: &str) -> Key {
        self.kid = Some(kid.to_owned());
        self
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The private JWK, as JSON text.
    pub fn to_jwk(&self) -> String {
        serde_json::to_string(&PrivateJwk::from(self)).expect("a JWK serialises")
    }

    /// The public JWK (with `kid`, `use` and `alg` when the key has a kid).
    pub fn public_jwk(&self) -> Value {
        let (x, y) = self.coordinates();
        let mut jwk = json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y });
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
            jwk["use"] = json!("sig");
            jwk["alg"] = json!("ES256");
        }
        jwk
    }

    /// A compact JWS (`alg` ES256) of `claims` under `header` (which must name `alg`).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    fn coordinates(&self) -> (String, String) {
        let point = self.signing.verifying_key().to_encoded_point(false);
        let x = point.x().map(|x| URL_SAFE_NO_PAD.encode(x));
        let y = point.y().map(|y| URL_SAFE_NO_PAD.encode(y));
        // An uncompressed point of a valid key always has both.
        (x.unwrap_or_default(), y.unwrap_or_default())
    }
}

impl From<&Key> for PrivateJwk {
    fn from(key: &Key) -> PrivateJwk {
        let (x, y) = key.coordinates();
        PrivateJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x,
            y,
            d: URL_SAFE_NO_PAD.encode(key.signing.to_bytes()),
            kid: key.kid.clone(),
        }
    }
}

impl TryFrom<PrivateJwk> for Key {
    type Error = Error;

    fn try_from(jwk: PrivateJwk) -> Result<Key> {
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(Error::Key(format!(
                "only EC P-256 keys are supported, not {} {}",
                jwk.kty, jwk.crv
            )));
        }
        let d = URL_SAFE_NO_PAD
            .decode(jwk.d.as_bytes())
            .map_err(|_| Error::Key("d is not base64url".into()))?;
        let signing =
            SigningKey::from_slice(&d).map_err(|_| Error::Key("d is not a P-256 scalar".into()))?;
        let key = Key {
            signing,
            kid: jwk.kid,
        };
        if key.coordinates() != (jwk.x, jwk.y) {
            return Err(Error::Key("x/y do not match d".into()));
        }
        Ok(key)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        PrivateJwk::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Key, D::Error> {
        let jwk = PrivateJwk::deserialize(deserializer)?;
        Key::try_from(jwk).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::VerifyingKey;

    #[test]
    fn jws_verifies_with_the_public_jwk() {
        let key = Key::generate().unwrap();
        let jws = key.sign(&json!({"alg": "ES256", "typ": "JWT"}), &json!({"sub": "x"}));
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        // Rebuild the verifying key from the public JWK alone.
        let jwk = key.public_jwk();
        let mut sec1 = vec![4u8];
        sec1.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        sec1.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        let verifying = VerifyingKey::from_sec1_bytes(&sec1).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(signature.len(), 64, "r||s, not DER");
        let signature = Signature::from_slice(&signature).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        verifying.verify(input.as_bytes(), &signature).unwrap();
        assert!(verifying.verify(b"other", &signature).is_err());
    }

    #[test]
    fn private_jwk_round_trips_and_is_checked() {
        let key = Key::generate().unwrap().with_kid("k1");
        let text = key.to_jwk();
        let back = Key::from_jwk(&text).unwrap();
        assert_eq!(back.public_jwk(), key.public_jwk());
        assert_eq!(back.kid(), Some("k1"));
        // serde form is the same JWK
        let via_serde: Key = serde_json::from_str(&serde_json::to_string(&key).unwrap()).unwrap();
        assert_eq!(via_serde.public_jwk(), key.public_jwk());
        assert!(!format!("{key:?}").contains("\"d\""), "Debug never shows d");

        let other = Key::generate().unwrap();
        let mut mixed: Value = serde_json::from_str(&text).unwrap();
        mixed["x"] = other.public_jwk()["x"].clone();
        assert!(matches!(
            Key::from_jwk(&mixed.to_string()),
            Err(Error::Key(_))
        ));
        for bad in [
            "{}",
            "not json",
            r#"{"kty":"RSA","crv":"P-256","x":"","y":"","d":""}"#,
            r#"{"kty":"EC","crv":"P-256","x":"","y":"","d":"%%%"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"","y":"","d":"AAAA"}"#,
        ] {
            assert!(Key::from_jwk(bad).is_err(), "{bad}");
        }
    }
}
