//! Randomness from the platform (`crypto.getRandomValues` in a Worker, the OS natively), and the
//! random tokens built from it: `state`, PKCE verifiers, `jti`s, session ids.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{Error, Result};

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
    Ok(buf)
}

/// 32 random bytes, base64url without padding (43 characters, 256 bits).
pub fn token() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<32>()?))
}

/// 16 random bytes, base64url (for `jti`s: unique, not secret).
pub fn short_token() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_distinct() {
        let a = super::token().unwrap();
        let b = super::token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
