//! How the SQLite store keeps bodies on disk: LZ4-compressed when that saves space, as received otherwise.
//!
//! A webhook body is written to the WAL, fsynced and later copied into the database file; JSON shrinks four-
//! to sixfold, so compressing it (on the request's own thread, before the single writer sees it) cuts the
//! bytes every commit must sync. Each row records its codec, so rows written before compression existed
//! (and bodies that do not shrink) are read back unchanged.

use bytes::Bytes;

use super::StoreError;

/// The codec of a stored body, as kept in `deliveries.body_codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCodec {
    /// The bytes as received.
    Identity = 0,
    /// An LZ4 block with the original length in front (`lz4_flex::compress_prepend_size`).
    Lz4 = 1,
}

/// Bodies smaller than this are stored as received: there is little to save and a page holds them anyway.
const COMPRESS_FROM: usize = 512;

/// The bytes to store for `body` and how to read them back.
pub fn encode(body: &Bytes) -> (BodyCodec, Bytes) {
    if body.len() >= COMPRESS_FROM {
        let packed = lz4_flex::compress_prepend_size(body);
        if packed.len() < body.len() {
            return (BodyCodec::Lz4, Bytes::from(packed));
        }
    }
    (BodyCodec::Identity, body.clone())
}

/// The body as received, from its stored bytes and codec number.
pub fn decode(codec: i64, stored: Vec<u8>) -> Result<Bytes, StoreError> {
    match codec {
        c if c == BodyCodec::Identity as i64 => Ok(Bytes::from(stored)),
        c if c == BodyCodec::Lz4 as i64 => lz4_flex::decompress_size_prepended(&stored)
            .map(Bytes::from)
            .map_err(|e| StoreError::Internal(format!("a stored body does not decompress: {e}"))),
        other => Err(StoreError::Internal(format!("unknown body codec {other}"))),
    }
}

/// `len` bytes that LZ4 cannot shrink (xorshift noise from `seed`), for tests.
#[cfg(test)]
pub fn incompressible(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_shrink_and_round_trip() {
        let body = Bytes::from(std::fs::read("bench/push.json").expect("bench/push.json"));
        let (codec, stored) = encode(&body);
        assert_eq!(codec, BodyCodec::Lz4);
        assert!(stored.len() * 3 < body.len(), "{} bytes stored for {}", stored.len(), body.len());
        assert_eq!(decode(codec as i64, stored.to_vec()).unwrap(), body);
    }

    #[test]
    fn small_or_incompressible_bodies_are_stored_as_received() {
        let small = Bytes::from_static(b"{\"ref\":\"refs/heads/main\"}");
        assert_eq!(encode(&small), (BodyCodec::Identity, small.clone()));
        let noise = incompressible(4096, 1);
        assert_eq!(encode(&noise), (BodyCodec::Identity, noise.clone()));
        assert_eq!(decode(0, noise.to_vec()).unwrap(), noise);
    }

    #[test]
    fn a_damaged_or_unknown_stored_body_is_an_error_not_a_panic() {
        assert!(matches!(decode(1, vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3]), Err(StoreError::Internal(_))));
        assert!(matches!(decode(7, b"x".to_vec()), Err(StoreError::Internal(_))));
    }
}
