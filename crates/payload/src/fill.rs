//! Where padding bytes come from: a content source, never a file.

use serde::{Deserialize, Serialize};

/// How a node fills the space between the warning and a decoy's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// Zero bytes: every decoy shares its padding pieces, so piece hashes
    /// cost O(1) per decoy and nothing is stored.
    #[default]
    Zeros,
    /// Keyed pseudo-random bytes, different for every decoy, so no two
    /// decoys share a piece. Costs a SHA-1 pass over each decoy once, and its
    /// piece hashes are kept on disk.
    Unique,
}

impl FillMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FillMode::Zeros => "zeros",
            FillMode::Unique => "unique",
        }
    }
}

/// The padding bytes of one decoy, addressed by absolute file offset so any
/// range can be produced without producing what comes before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    Zeros,
    /// A counter-based generator evaluated at word `offset / 8`, keyed. It
    /// is not a cipher: its job is that no two decoys share bytes, cheaply
    /// and seekably (several GB/s a core, well below SHA-1's cost).
    Keyed(u64),
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const WY_SECRET: u64 = 0xE703_7ED1_A0B4_28DB;

/// Word `index` of keyed fill: the index is spread by an odd multiplier (a
/// bijection, so words of one key never repeat their input), then mixed by
/// one 64×64→128-bit multiply folded to 64 bits (wyrand's output step).
fn keyed_word(key: u64, index: u64) -> u64 {
    let a = key ^ index.wrapping_mul(GOLDEN_GAMMA);
    let t = u128::from(a).wrapping_mul(u128::from(a ^ WY_SECRET));
    (t as u64) ^ ((t >> 64) as u64)
}

impl Fill {
    /// Derives a decoy's fill from the mode and a per-decoy key (the layout
    /// names no key for zeros).
    pub fn new(mode: FillMode, key: u64) -> Self {
        match mode {
            FillMode::Zeros => Fill::Zeros,
            FillMode::Unique => Fill::Keyed(key),
        }
    }

    pub fn is_zeros(&self) -> bool {
        matches!(self, Fill::Zeros)
    }

    /// Appends the fill bytes at file offsets `offset..offset + len`.
    pub fn extend(&self, out: &mut Vec<u8>, offset: u64, len: u64) {
        let at = out.len();
        out.resize(at + len as usize, 0);
        if !self.is_zeros() {
            self.write(offset, &mut out[at..]);
        }
    }

    /// Writes the fill bytes at file offsets `offset..offset + out.len()`.
    pub fn write(&self, offset: u64, out: &mut [u8]) {
        let key = match *self {
            Fill::Zeros => {
                out.fill(0);
                return;
            }
            Fill::Keyed(key) => key,
        };
        let mut pos = offset;
        let mut rest = out;
        // Unaligned head: part of one word.
        let skip = (pos % 8) as usize;
        if skip != 0 {
            let word = keyed_word(key, pos / 8).to_le_bytes();
            let n = (8 - skip).min(rest.len());
            rest[..n].copy_from_slice(&word[skip..skip + n]);
            rest = &mut rest[n..];
            pos += n as u64;
        }
        let mut index = pos / 8;
        let mut chunks = rest.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&keyed_word(key, index).to_le_bytes());
            index += 1;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let word = keyed_word(key, index).to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&word[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_window_equals_the_same_window_of_the_whole() {
        let fill = Fill::Keyed(0x1234_5678_9abc_def0);
        let mut whole = vec![0u8; 300];
        fill.write(1000, &mut whole);
        for start in [0usize, 1, 7, 8, 9, 63, 100] {
            for len in [0usize, 1, 5, 8, 17, 150] {
                let mut part = vec![0u8; len];
                fill.write(1000 + start as u64, &mut part);
                assert_eq!(part, whole[start..start + len], "start {start} len {len}");
            }
        }
    }

    #[test]
    fn keys_give_different_bytes_and_zeros_are_zero() {
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        Fill::Keyed(1).write(0, &mut a);
        Fill::Keyed(2).write(0, &mut b);
        assert_ne!(a, b);
        Fill::Zeros.write(5, &mut a);
        assert!(a.iter().all(|&x| x == 0));
    }
}
