//! Piece hashes of `payload ‖ zeros` decoys, computed with sharing.

use crate::Payload;
use sha1::digest::generic_array::GenericArray;
use sha1::{Digest, Sha1};
use std::sync::{Arc, OnceLock};

type Sha1State = [u32; 5];
const SHA1_INIT: Sha1State = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];

/// SHA-1 of any run of zero bytes up to `max_len`, in O(1) after an O(max_len)
/// set-up: it keeps the compression state after every whole 64-byte block of
/// zeros and only finishes the tail and padding per call. This is what makes
/// the short last piece of a zero-padded decoy cost nothing to hash.
pub struct ZeroHasher {
    states: Vec<Sha1State>,
}

impl ZeroHasher {
    pub fn new(max_len: u32) -> Self {
        let blocks = (max_len / 64) as usize;
        let mut states = Vec::with_capacity(blocks + 1);
        let mut state = SHA1_INIT;
        states.push(state);
        let zero = GenericArray::from([0u8; 64]);
        for _ in 0..blocks {
            sha1::compress(&mut state, std::slice::from_ref(&zero));
            states.push(state);
        }
        Self { states }
    }

    pub fn max_len(&self) -> u32 {
        ((self.states.len() - 1) * 64) as u32
    }

    pub fn hash(&self, len: u32) -> [u8; 20] {
        assert!(len <= self.max_len() + 63, "zero run longer than the table");
        let mut state = self.states[(len / 64) as usize];
        let tail = (len % 64) as usize;
        // Standard SHA-1 finishing: 0x80, zeros, 64-bit big-endian bit length.
        let mut block = [0u8; 64];
        block[tail] = 0x80;
        let bit_len = u64::from(len) * 8;
        if tail + 1 + 8 > 64 {
            sha1::compress(&mut state, &[GenericArray::from(block)]);
            block = [0u8; 64];
        }
        block[56..].copy_from_slice(&bit_len.to_be_bytes());
        sha1::compress(&mut state, &[GenericArray::from(block)]);
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Hashes every decoy of one payload with one piece length has in common.
struct SharedForLength {
    /// Pieces lying wholly inside the payload.
    payload_pieces: Vec<[u8; 20]>,
    /// The piece holding the payload's end, padded with zeros to a full piece
    /// (None when the payload ends on a piece boundary).
    boundary_full: Option<[u8; 20]>,
    /// A whole piece of zeros: most pieces of a large decoy.
    zero_piece: [u8; 20],
    zeros: ZeroHasher,
}

/// Piece hashes for every decoy of one payload. Shared state is built lazily
/// per piece length (16 KiB … 8 MiB) and then reused by all decoys.
pub struct PieceHashCache {
    payload: Arc<Payload>,
    per_length: [OnceLock<SharedForLength>; 10],
}

fn length_slot(piece_length: u32) -> usize {
    assert!(
        piece_length.is_power_of_two() && (16 * 1024..=8 * 1024 * 1024).contains(&piece_length),
        "piece length {piece_length} is not a power of two in 16 KiB..8 MiB"
    );
    (piece_length.trailing_zeros() - 14) as usize
}

impl PieceHashCache {
    pub fn new(payload: Arc<Payload>) -> Self {
        Self {
            payload,
            per_length: Default::default(),
        }
    }

    pub fn payload(&self) -> &Arc<Payload> {
        &self.payload
    }

    fn shared(&self, piece_length: u32) -> &SharedForLength {
        self.per_length[length_slot(piece_length)].get_or_init(|| {
            let p = self.payload.bytes();
            let pl = piece_length as usize;
            let payload_pieces = p.chunks_exact(pl).map(|c| Sha1::digest(c).into()).collect();
            let rem = p.len() % pl;
            let boundary_full = (rem != 0).then(|| {
                let mut h = Sha1::new();
                h.update(&p[p.len() - rem..]);
                h.update(vec![0u8; pl - rem]);
                h.finalize().into()
            });
            let zeros = ZeroHasher::new(piece_length);
            SharedForLength {
                payload_pieces,
                boundary_full,
                zero_piece: zeros.hash(piece_length),
                zeros,
            }
        })
    }

    /// SHA-1 of piece `index` of the decoy of `size` bytes.
    pub fn piece_hash(&self, size: u64, piece_length: u32, index: u32) -> [u8; 20] {
        let shared = self.shared(piece_length);
        let p = self.payload.bytes();
        let payload_len = p.len() as u64;
        let size = size.max(payload_len);
        let start = u64::from(index) * u64::from(piece_length);
        let end = (start + u64::from(piece_length)).min(size);
        assert!(
            start < end,
            "piece {index} is past the end of a {size}-byte decoy"
        );
        let full = end - start == u64::from(piece_length);
        if start >= payload_len {
            return if full {
                shared.zero_piece
            } else {
                shared.zeros.hash((end - start) as u32)
            };
        }
        if end <= payload_len && full {
            return shared.payload_pieces[index as usize];
        }
        if full {
            return shared
                .boundary_full
                .expect("a full piece across the payload end implies a remainder");
        }
        // The decoy ends inside the piece that holds the payload's end: this
        // happens only for decoys within one piece of the payload's size, so
        // hashing up to one piece here is cheap.
        let mut h = Sha1::new();
        let payload_end = end.min(payload_len);
        h.update(&p[start as usize..payload_end as usize]);
        h.update(vec![0u8; (end - payload_end) as usize]);
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecoyBytes;

    #[test]
    fn zero_hasher_matches_sha1_for_every_tail_length() {
        let z = ZeroHasher::new(16 * 1024);
        for len in (0..300).chain([16 * 1024 - 1, 16 * 1024, 1000, 4096 + 55, 4096 + 56]) {
            let want: [u8; 20] = Sha1::digest(vec![0u8; len as usize]).into();
            assert_eq!(z.hash(len), want, "len {len}");
        }
    }

    fn check_all_pieces(payload_len: usize, size: u64, piece_length: u32) {
        let bytes: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let payload = Arc::new(Payload::new(bytes, "t").unwrap());
        let cache = PieceHashCache::new(payload.clone());
        let decoy = DecoyBytes::new(payload, size);
        let n = decoy.size().div_ceil(u64::from(piece_length)) as u32;
        for i in 0..n {
            let mut buf = Vec::new();
            let start = u64::from(i) * u64::from(piece_length);
            let len = (decoy.size() - start).min(u64::from(piece_length)) as u32;
            decoy.read_into(start, len, &mut buf);
            let want: [u8; 20] = Sha1::digest(&buf).into();
            assert_eq!(
                cache.piece_hash(decoy.size(), piece_length, i),
                want,
                "payload {payload_len} size {size} piece {i}"
            );
        }
    }

    #[test]
    fn shared_hashes_equal_direct_hashes() {
        let pl = 16 * 1024;
        for (payload_len, size) in [
            (1, 1),
            (1, 16 * 1024 + 1),
            (100, 100),
            (16 * 1024, 16 * 1024),
            (16 * 1024, 16 * 1024 * 3 + 17),
            (40_000, 40_001),
            (40_000, 48_000),
            (40_000, 49_152),
            (40_000, 200_000),
            (49_152, 300_000),
        ] {
            check_all_pieces(payload_len, size, pl);
        }
        check_all_pieces(70_000, 3 << 20, 1 << 20);
    }
}
