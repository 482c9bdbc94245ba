//! How the SQLite store keeps bodies on disk: zstd-compressed when that saves space, as received otherwise.
//!
//! A webhook body is written to the WAL, fsynced and later copied into the database file; JSON shrinks about
//! sixfold, so compressing it (on the request's own thread, before the single writer sees it) cuts the bytes
//! every commit must sync. Each row records its codec, so rows written before compression existed, or with
//! LZ4 before zstd (until 2026-12), and bodies that do not shrink are read back unchanged.

use bytes::Bytes;

use super::StoreError;

/// The codec of a stored body, as kept in `deliveries.body_codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCodec {
    /// The bytes as received.
    Identity = 0,
    /// An LZ4 block with the original length in front (`lz4_flex::compress_prepend_size`): what was written
    /// before zstd; still read.
    Lz4 = 1,
    /// A zstd frame, which records the original length. A GitHub push of 7.5 KB takes 1,246 bytes (LZ4: 1,745),
    /// so a row fits in under half a 4 KiB page and two share one.
    Zstd = 2,
}

/// Bodies smaller than this are stored as received: there is little to save and a page holds them anyway.
const COMPRESS_FROM: usize = 512;

/// zstd's fastest level: JSON shrinks about sixfold (LZ4: fourfold) at ~650 MB/s.
const ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One compression context per thread (the tokio workers), made on first use: a context per call
    /// would allocate and initialise zstd's tables for every request.
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// The bytes to store for `body` and how to read them back.
pub fn encode(body: &Bytes) -> (BodyCodec, Bytes) {
    if body.len() >= COMPRESS_FROM {
        let packed = ZSTD.with(|cell| {
            let mut compressor = cell.borrow_mut();
            if compressor.is_none() {
                *compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            compressor.as_mut()?.compress(body).ok()
        });
        if let Some(packed) = packed.filter(|p| p.len() < body.len()) {
            return (BodyCodec::Zstd, Bytes::from(packed));
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
        c if c == BodyCodec::Zstd as i64 => zstd::stream::decode_all(&stored[..])
            .map(Bytes::from)
            .map_err(|e| StoreError::Internal(format!("a stored body does not decompress: {e}"))),
        other => Err(StoreError::Internal(format!("unknown body codec {other}"))),
    }
}

/// `len` bytes that no codec can shrink (xorshift noise from `seed`), for tests.
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
        assert_eq!(codec, BodyCodec::Zstd);
        assert!(stored.len() * 5 < body.len(), "{} bytes stored for {}", stored.len(), body.len());
        assert_eq!(decode(codec as i64, stored.to_vec()).unwrap(), body);
        // The thread's compressor is reused: a second body, smaller than the first, round-trips too.
        let small = body.slice(..body.len() / 3);
        let (codec, stored) = encode(&small);
        assert_eq!(decode(codec as i64, stored.to_vec()).unwrap(), small);
    }

    #[test]
    fn bodies_stored_with_lz4_before_zstd_are_read_back() {
        let body = Bytes::from(std::fs::read("bench/push.json").expect("bench/push.json"));
        let stored = lz4_flex::compress_prepend_size(&body);
        assert_eq!(decode(BodyCodec::Lz4 as i64, stored).unwrap(), body);
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
        let (codec, stored) = encode(&Bytes::from(std::fs::read("bench/push.json").expect("bench/push.json")));
        let cut = stored[..stored.len() / 2].to_vec();
        assert!(matches!(decode(codec as i64, cut), Err(StoreError::Internal(_))));
    }
}
