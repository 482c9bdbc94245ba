//! HMAC computation, signature encodings and constant-time comparison shared by every scheme.

use base64::Engine;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{Algorithm, Encoding};

/// HMAC of the concatenation of `parts` (no copy of the body is made).
pub fn compute(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// Constant-time equality; different lengths (a truncated or empty signature) are never equal.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn decode(encoding: Encoding, text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .ok(),
    }
}

pub fn encode(encoding: Encoding, bytes: &[u8]) -> String {
    match encoding {
        Encoding::Hex => hex::encode(bytes),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// Does `presented` (encoded) match the HMAC of `parts` under any of `keys`?
pub fn matches_any<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    algorithm: Algorithm,
    encoding: Encoding,
    presented: &str,
    parts: &[&[u8]],
) -> bool {
    let Some(presented) = decode(encoding, presented) else { return false };
    let mut ok = false;
    for key in keys {
        // Every key is tried (no early exit) so timing does not tell which one matched.
        ok |= equal(&compute(algorithm, key, parts), &presented);
    }
    ok
}

/// Is `presented` equal to any of `keys`, for shared tokens? SHA-256 digests are compared rather than the
/// values themselves, so neither the comparison time nor an early length check tells how long a token is.
pub fn token_matches_any<'k>(keys: impl IntoIterator<Item = &'k [u8]>, presented: &[u8]) -> bool {
    use sha2::Digest;
    if presented.is_empty() {
        return false;
    }
    let presented = sha2::Sha256::digest(presented);
    let mut ok = false;
    for key in keys {
        ok |= !key.is_empty() && bool::from(sha2::Sha256::digest(key).ct_eq(&presented));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_empty_signatures_are_not_equal() {
        assert!(!equal(b"abcd", b"abc"));
        assert!(!equal(b"", b""));
        assert!(equal(b"abcd", b"abcd"));
    }

    #[test]
    fn tokens_match_only_exactly_and_never_when_empty() {
        let keys: [&[u8]; 2] = [b"old", b"t0k3n"];
        assert!(token_matches_any(keys, b"t0k3n"));
        assert!(!token_matches_any(keys, b"t0k3"));
        assert!(!token_matches_any(keys, b"t0k3n2"));
        assert!(!token_matches_any(keys, b""));
        assert!(!token_matches_any([&b""[..]], b""));
    }

    #[test]
    fn rfc_4231_test_case_2_matches() {
        let mac = compute(Algorithm::Sha256, b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
