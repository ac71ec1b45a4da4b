//! Piece hashes of decoys, computed with sharing.
//!
//! With zero fill, a piece is one of three kinds:
//! * a head piece (it holds media): the same in every decoy of the variant
//!   and piece length, unless a size-dependent byte falls in it; hashed
//!   once and cached on the variant;
//! * a piece that starts with a run of zeros and ends with a few bytes of
//!   header or tail: its hash starts from a precomputed SHA-1 state after
//!   the zero run ([`ZeroHasher`]), so it costs O(1);
//! * anything else (small decoys): hashed directly, at most one piece.
//!
//! With keyed fill every byte differs, so every piece is hashed in full.

use crate::fill::Fill;
use crate::layout::{DecoyLayout, Segment};
use sha1::digest::generic_array::GenericArray;
use sha1::{Digest, Sha1};
use std::sync::OnceLock;

type Sha1State = [u32; 5];
const SHA1_INIT: Sha1State = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
/// The largest piece length (libtorrent's table, capped).
pub const MAX_PIECE_LENGTH: u32 = 8 << 20;

/// SHA-1 compression states after every whole 64-byte block of zeros, up to
/// `max_len`: the state after a zero run of any length is a table lookup.
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

    /// One table for every piece length, built on first use (2.6 MB).
    pub fn shared() -> &'static ZeroHasher {
        static SHARED: OnceLock<ZeroHasher> = OnceLock::new();
        SHARED.get_or_init(|| ZeroHasher::new(MAX_PIECE_LENGTH))
    }

    fn max_blocks(&self) -> u64 {
        (self.states.len() - 1) as u64
    }

    /// SHA-1 of `len` zero bytes.
    pub fn hash(&self, len: u32) -> [u8; 20] {
        let mut s = MidstateSha1::after_zeros(self, u64::from(len));
        s.update_zeros(u64::from(len) - s.total);
        s.finish()
    }
}

/// SHA-1 that can start from a state after a zero run. Used for the short
/// remainder of a piece after its zeros, so per-block calls are fine.
struct MidstateSha1 {
    state: Sha1State,
    buf: [u8; 64],
    buf_len: usize,
    total: u64,
}

impl MidstateSha1 {
    /// Starts after as many whole zero blocks of `len` as the table holds;
    /// the caller feeds the rest (`len - total`).
    fn after_zeros(z: &ZeroHasher, len: u64) -> Self {
        let blocks = (len / 64).min(z.max_blocks());
        Self {
            state: z.states[blocks as usize],
            buf: [0; 64],
            buf_len: 0,
            total: blocks * 64,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let n = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len == 64 {
                sha1::compress(&mut self.state, &[GenericArray::from(self.buf)]);
                self.buf_len = 0;
            }
        }
    }

    fn update_zeros(&mut self, mut n: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.update(&ZEROS[..k]);
            n -= k as u64;
        }
    }

    fn finish(mut self) -> [u8; 20] {
        let bit_len = self.total * 8;
        self.update(&[0x80]);
        while self.buf_len != 56 {
            self.update(&[0]);
        }
        let mut block = self.buf;
        block[56..].copy_from_slice(&bit_len.to_be_bytes());
        sha1::compress(&mut self.state, &[GenericArray::from(block)]);
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Hashes a piece by streaming its segments through SHA-1.
fn hash_streaming(layout: &DecoyLayout<'_>, start: u64, end: u64) -> [u8; 20] {
    let fill = layout.fill();
    // A piece that opens with zeros starts from the zero-run table.
    let mut first_zero_run = 0;
    if fill.is_zeros() {
        let mut first = true;
        layout.visit(start, end, |seg| {
            if std::mem::take(&mut first) {
                if let Segment::Fill { len, .. } = seg {
                    first_zero_run = len;
                }
            }
        });
    }
    if first_zero_run >= 64 {
        let mut s = MidstateSha1::after_zeros(ZeroHasher::shared(), first_zero_run);
        let skip_to = start + s.total;
        layout.visit(skip_to, end, |seg| match seg {
            Segment::Bytes(b) => s.update(b),
            Segment::Fill { len, .. } => s.update_zeros(len),
        });
        return s.finish();
    }
    let mut h = Sha1::new();
    let mut scratch = Vec::new();
    layout.visit(start, end, |seg| match seg {
        Segment::Bytes(b) => h.update(b),
        Segment::Fill { offset, len } => {
            let mut pos = offset;
            let stop = offset + len;
            while pos < stop {
                let n = (stop - pos).min(1 << 16) as usize;
                scratch.resize(n, 0);
                fill.write(pos, &mut scratch);
                h.update(&scratch);
                pos += n as u64;
            }
        }
    });
    h.finalize().into()
}

fn length_slot(piece_length: u32) -> usize {
    assert!(
        piece_length.is_power_of_two() && (16 * 1024..=MAX_PIECE_LENGTH).contains(&piece_length),
        "piece length {piece_length} is not a power of two in 16 KiB..8 MiB"
    );
    (piece_length.trailing_zeros() - 14) as usize
}

/// Hashes a variant's zero-fill decoys share, per piece length: the head
/// pieces (those holding media) and the one repeating padding piece.
#[derive(Debug, Default)]
pub struct HeadHashes {
    per_length: [OnceLock<Vec<[u8; 20]>>; 10],
    repeating: [OnceLock<[u8; 20]>; 10],
}

/// SHA-1 of piece `index` of the decoy `layout` describes.
pub fn piece_hash(layout: &DecoyLayout<'_>, index: u32) -> [u8; 20] {
    let pl = layout.piece_length();
    let piece_length = pl as u32;
    let start = u64::from(index) * pl;
    let end = (start + pl).min(layout.size());
    assert!(
        start < end,
        "piece {index} is past the end of a {}-byte decoy",
        layout.size()
    );
    let variant = layout.variant();
    let zeros = layout.fill() == Fill::Zeros;
    let shared = zeros && end - start == pl && end <= layout.size_dependent_from();
    if shared && start >= layout.repeating_from() {
        // Most pieces of a large decoy: the same bytes in every decoy of
        // this variant and piece length.
        return *variant.head_hashes().repeating[length_slot(piece_length)]
            .get_or_init(|| hash_streaming(layout, start, end));
    }
    if !shared {
        return hash_streaming(layout, start, end);
    }
    // A head piece: media, or the padding before the first repeating piece.
    let heads = variant.head_hashes().per_length[length_slot(piece_length)].get_or_init(|| {
        // A reference decoy large enough that its padding has aligned cells
        // and no size-dependent byte falls in a head piece; `shared`
        // checked the real decoy agrees. (Built from the variant alone: the
        // first caller may be a small decoy whose layout differs.)
        let reference_size = (variant.media_len().div_ceil(pl) + 6) * pl + variant.min_size();
        let reference = variant.layout(reference_size, piece_length, Fill::Zeros, None);
        let head_pieces = reference.repeating_from().div_ceil(pl);
        (0..head_pieces)
            .map(|i| hash_streaming(&reference, i * pl, (i + 1) * pl))
            .collect()
    });
    heads[index as usize]
}

/// Piece hashes of one decoy, with what is the same for every piece worked
/// out once: building an info hash asks for thousands of pieces in a row.
pub struct DecoyPieceHashes<'l> {
    layout: DecoyLayout<'l>,
    /// First and last+1 index of the pieces that repeat, and their hash.
    repeating: Option<(u32, u32, [u8; 20])>,
}

impl<'l> DecoyPieceHashes<'l> {
    pub fn new(layout: DecoyLayout<'l>) -> Self {
        let pl = layout.piece_length();
        let first = layout.repeating_from().div_ceil(pl);
        let end = layout.size_dependent_from() / pl;
        let repeating = (layout.fill() == Fill::Zeros && first < end).then(|| {
            let hash = piece_hash(&layout, first as u32);
            (first as u32, end as u32, hash)
        });
        Self { layout, repeating }
    }

    pub fn get(&self, index: u32) -> [u8; 20] {
        match self.repeating {
            Some((first, end, hash)) if (first..end).contains(&index) => hash,
            _ => piece_hash(&self.layout, index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_hasher_matches_sha1_for_every_tail_length() {
        let z = ZeroHasher::new(16 * 1024);
        for len in (0..300).chain([16 * 1024 - 1, 16 * 1024, 1000, 4096 + 55, 4096 + 56]) {
            let want: [u8; 20] = Sha1::digest(vec![0u8; len as usize]).into();
            assert_eq!(z.hash(len), want, "len {len}");
        }
    }
}
