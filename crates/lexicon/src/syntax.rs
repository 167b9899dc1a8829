//! atproto's string formats that the app reads from the network: [`Did`], [`Handle`], [`Nsid`],
//! [`RecordKey`] and [`Tid`], each a checked `String`, and [`is_cid`].
//!
//! The rules are the atproto specifications' (atproto.com/specs), the same as atrium's validated
//! string types accept, written as plain byte checks: atrium checks them with regular
//! expressions, and the `regex` crate with its Unicode tables was most of the listener's wasm
//! (docs/benchmarks.md, "Bundles"). Types from here cross into atrium's only at edge's XRPC calls.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a checked string type: `new`, `FromStr`, `as_str`, `Deref` to `str`, `Display`, serde
/// as a string.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Checks `text` as ", $what, ".")]
            pub fn new(text: String) -> Result<$name, &'static str> {
                if $check(&text) {
                    Ok($name(text))
                } else {
                    Err(concat!("not ", $what))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = &'static str;
            fn from_str(text: &str) -> Result<$name, &'static str> {
                $name::new(text.to_owned())
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

checked_string!(
    /// A DID: `did:<method>:<identifier>`, at most 2,048 bytes.
    Did,
    is_did,
    "a DID"
);
checked_string!(
    /// A handle as written (callers lowercase it when they compare or store it).
    Handle,
    is_handle,
    "a handle"
);
checked_string!(
    /// A namespaced identifier (a collection such as `xyz.statusphere.status`).
    Nsid,
    is_nsid,
    "an NSID"
);
checked_string!(
    /// A record key.
    RecordKey,
    is_record_key,
    "a record key"
);
checked_string!(
    /// A timestamp identifier: 13 characters of base32-sortable.
    Tid,
    is_tid,
    "a TID"
);

/// The base32-sortable alphabet of TIDs.
pub const TID_ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// `did:` + a method of lowercase letters + `:` + an identifier of `[a-zA-Z0-9._:%-]` that does
/// not end in `:` or `%`; at most 2,048 bytes.
pub fn is_did(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    text.len() <= 2048
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
        && id
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A DID of a method atproto supports (`plc`, `web`), of valid syntax.
pub fn is_supported_did(text: &str) -> bool {
    (text.starts_with("did:plc:") || text.starts_with("did:web:")) && is_did(text)
}

/// One DNS label: 1 to 63 of `[a-zA-Z0-9-]`, not starting or ending with `-`.
fn is_label(label: &str) -> bool {
    let b = label.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// At least two labels, the last starting with a letter; at most 253 bytes.
pub fn is_handle(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    text.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| is_label(label))
        && labels
            .last()
            .is_some_and(|tld| tld.as_bytes()[0].is_ascii_alphabetic())
}

/// A reversed domain (its first label starting with a letter, at least two labels) and a name of
/// letters and digits starting with a letter; at most 317 bytes.
pub fn is_nsid(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    let Some((name, authority)) = labels.split_last() else {
        return false;
    };
    let n = name.as_bytes();
    text.len() <= 317
        && authority.len() >= 2
        && authority.iter().all(|label| is_label(label))
        && authority[0].as_bytes()[0].is_ascii_alphabetic()
        && (1..=63).contains(&n.len())
        && n[0].is_ascii_alphabetic()
        && n.iter().all(u8::is_ascii_alphanumeric)
}

/// 1 to 512 of `[a-zA-Z0-9._:~-]`, and not `.` or `..`.
pub fn is_record_key(text: &str) -> bool {
    (1..=512).contains(&text.len())
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// 13 characters of [`TID_ALPHABET`], the first of its first half (the top bit is 0).
pub fn is_tid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 13
        && TID_ALPHABET[..16].contains(&b[0])
        && b.iter().all(|c| TID_ALPHABET.contains(c))
}

/// A CID as atproto writes it in strings: version 1, base32 (lowercase, no padding, `b`
/// multibase prefix), a codec, and a multihash whose stated length is the digest's. At most 256
/// bytes. CIDv0 (`Qm…`) is not an atproto string format.
pub fn is_cid(text: &str) -> bool {
    let Some(body) = text.strip_prefix('b') else {
        return false;
    };
    let Some(bytes) = base32(body).filter(|_| text.len() <= 256) else {
        return false;
    };
    let mut rest = bytes.as_slice();
    let version = varint(&mut rest);
    let codec = varint(&mut rest);
    let hash = varint(&mut rest);
    let length = varint(&mut rest);
    version == Some(1)
        && codec.is_some()
        && hash.is_some()
        && length.is_some_and(|n| n > 0 && n == rest.len() as u64)
}

/// RFC 4648 base32, lowercase, without padding; the bits left over at the end must be zero.
fn base32(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    (buffer == 0 && bits < 5).then_some(out)
}

/// An unsigned LEB128 varint of at most 9 bytes (multiformats' limit), taken off the front.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dids() {
        for ok in [
            "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "did:web:example.com",
            "did:web:localhost%3A3000",
            "did:method:val:two",
            "did:m:v",
            "did:key:zQ3shunBKsXixLxKtC5qeSG9E4J5RkGN57im31pcTzbNQnm5w",
        ] {
            assert!(is_did(ok), "{ok}");
            assert_eq!(ok.parse::<Did>().unwrap().as_str(), ok);
        }
        let long = format!("did:plc:{}", "a".repeat(2040));
        assert_eq!(long.len(), 2048);
        assert!(is_did(&long));
        for bad in [
            "",
            "did",
            "did:",
            "did:plc",
            "did:plc:",
            "did::abc",
            "did:PLC:abc",
            "did:pl2:abc",
            "DID:plc:abc",
            "did:plc:abc:",
            "did:plc:abc%",
            "did:plc:a b",
            "did:plc:ab/c",
            "did:plc:abç",
            " did:plc:abc",
        ] {
            assert!(!is_did(bad), "{bad:?}");
            assert!(bad.parse::<Did>().is_err(), "{bad:?}");
        }
        assert!(is_supported_did("did:web:example.com"));
        assert!(
            !is_supported_did("did:key:zQ3sh"),
            "a method atproto does not use"
        );
        assert!(!is_did(&format!("{long}a")), "over 2,048 bytes");
    }

    #[test]
    fn handles() {
        for ok in [
            "alice.test",
            "alice.bsky.social",
            "A-b.C9.example",
            "xn--ls8h.test",
            "a.co",
            "1.2.3.example",
        ] {
            assert!(is_handle(ok), "{ok}");
        }
        let label = "a".repeat(63);
        let long = format!("{label}.{label}.{label}.{}.com", "a".repeat(57));
        assert_eq!(long.len(), 253);
        assert!(is_handle(&long));
        for bad in [
            "",
            "alice",
            ".alice.test",
            "alice.test.",
            "alice..test",
            "-alice.test",
            "alice-.test",
            "alice.9test",
            "alice.te_st",
            "al ice.test",
            "alicé.test",
            "did:plc:abc",
        ] {
            assert!(!is_handle(bad), "{bad:?}");
        }
        assert!(!is_handle(&format!("a{long}")), "over 253 bytes");
        assert!(
            !is_handle(&format!("{}.test", "a".repeat(64))),
            "a label over 63"
        );
    }

    #[test]
    fn nsids() {
        for ok in [
            "xyz.statusphere.status",
            "app.bsky.feed.post",
            "com.example.fooBar",
            "net.users.bob.ping",
            "a-0.b-1.c",
            "cn.8.lex.stuff",
        ] {
            assert!(is_nsid(ok), "{ok}");
        }
        for bad in [
            "",
            "xyz",
            "xyz.status",
            "xyz.statusphere.",
            ".xyz.statusphere.status",
            "9xyz.statusphere.status",
            "xyz.statusphere.9status",
            "xyz.statusphere.sta-tus",
            "xyz.-statusphere.status",
            "xyz.statusphere.sta_tus",
            "xyz..status",
        ] {
            assert!(!is_nsid(bad), "{bad:?}");
        }
        let long = format!(
            "{}.{}.{}.name",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63)
        );
        assert!(is_nsid(&long));
    }

    #[test]
    fn record_keys() {
        for ok in ["3l3qo2vutsw2b", "self", "a:b~c-d_e.f", "..a", "~"] {
            assert!(is_record_key(ok), "{ok}");
        }
        assert!(is_record_key(&"k".repeat(512)));
        for bad in ["", ".", "..", "a/b", "a b", "a#b", "ké"] {
            assert!(!is_record_key(bad), "{bad:?}");
        }
        assert!(!is_record_key(&"k".repeat(513)));
    }

    #[test]
    fn tids() {
        for ok in ["3l3qo2vutsw2b", "2222222222222", "jzzzzzzzzzzzz"] {
            assert!(is_tid(ok), "{ok}");
        }
        for bad in [
            "",
            "3l3qo2vutsw2",
            "3l3qo2vutsw2bb",
            "kl3qo2vutsw2b",
            "3L3QO2VUTSW2B",
            "3l3qo2vutsw21",
            "3l3qo2vutsw2!",
        ] {
            assert!(!is_tid(bad), "{bad:?}");
        }
    }

    #[test]
    fn cids() {
        for ok in [
            // dag-cbor and raw, sha2-256.
            "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
            "bafyreie4ie2kkyvc7icx24giwd5szt6m6jtvkduxsn2qvpp5ilh7q72yzm",
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
        ] {
            assert!(is_cid(ok), "{ok}");
        }
        for bad in [
            "",
            "b",
            "bafyrei",
            "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52z",
            "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zya",
            "BAFYREIGH2AKISCAILDCQABSYG3DFR6CHU3FGPREGIYMSCK7E7AQA4S52ZY",
            "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52z1",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",
            "not a cid",
        ] {
            assert!(!is_cid(bad), "{bad:?}");
        }
        assert!(!is_cid(&format!("b{}", "a".repeat(300))));
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let did: Did = serde_json::from_str(r#""did:plc:abc""#).unwrap();
        assert_eq!(serde_json::to_string(&did).unwrap(), r#""did:plc:abc""#);
        assert!(serde_json::from_str::<Did>(r#""did:plc:""#).is_err());
        assert!(serde_json::from_str::<Tid>(r#""nope""#).is_err());
    }
}
