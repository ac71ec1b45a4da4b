//! v1 single-file metainfo: piece length choice, the info dictionary, info
//! hashes, `.torrent` files and magnet links.
//!
//! The info dictionary is written through [`InfoSink`] so the same code either
//! hashes it in a streaming SHA-1 (computing an info hash touches no heap) or
//! builds the bytes for `ut_metadata`. Both paths are byte-identical by
//! construction, which is what keeps a decoy's info hash stable.

use crate::bencode::Encoder;
use sha1::{Digest, Sha1};

pub type InfoHash = [u8; 20];
pub type PieceHash = [u8; 20];

/// Smallest piece length any client accepts well; BEP 3 blocks are 16 KiB.
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;
/// Largest piece length we choose (libtorrent's table stops at 8 MiB too).
pub const MAX_PIECE_LENGTH: u32 = 8 * 1024 * 1024;

/// Picks a piece length the way libtorrent 2.0's `create_torrent` does for a
/// file of `total` bytes: the list of piece hashes grows with the square root
/// of the size, so a 4 GiB file gets 1 MiB pieces (4,096 of them). Using the
/// same rule as the most common creator keeps decoys unremarkable.
pub fn piece_length_for(total: u64) -> u32 {
    // Size thresholds at which the target piece length doubles, from
    // target_list_size = 2 * sqrt(total) (20-byte hashes).
    const THRESHOLDS: [u64; 9] = [
        2_684_355,
        10_737_418,
        42_949_673,
        171_798_692,
        687_194_767,
        2_748_779_069,
        10_995_116_278,
        43_980_465_111,
        175_921_860_444,
    ];
    let mut length = MIN_PIECE_LENGTH;
    for threshold in THRESHOLDS {
        if total <= threshold {
            return length;
        }
        length *= 2;
    }
    MAX_PIECE_LENGTH
}

/// Number of pieces of `piece_length` covering `total` bytes (at least one).
pub fn piece_count(total: u64, piece_length: u32) -> u32 {
    let n = total.div_ceil(u64::from(piece_length)).max(1);
    u32::try_from(n).expect("piece count fits in u32 for any file under 32 PiB")
}

/// Length of piece `index` (the last one may be short).
pub fn piece_size(total: u64, piece_length: u32, index: u32) -> u32 {
    let start = u64::from(index) * u64::from(piece_length);
    let end = (start + u64::from(piece_length)).min(total);
    (end.saturating_sub(start)) as u32
}

/// Where the bytes of an info dictionary go.
pub trait InfoSink {
    fn put(&mut self, bytes: &[u8]);
}

impl InfoSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl InfoSink for Sha1 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Keeps only bytes `start..end` of what is written through it: serves one
/// ut_metadata piece without building the whole dictionary.
pub struct WindowSink<'a> {
    pub start: usize,
    pub end: usize,
    pub pos: usize,
    pub out: &'a mut Vec<u8>,
}

impl InfoSink for WindowSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let from = self.pos;
        let to = self.pos + bytes.len();
        self.pos = to;
        let lo = from.max(self.start);
        let hi = to.min(self.end);
        if lo < hi {
            self.out.extend_from_slice(&bytes[lo - from..hi - from]);
        }
    }
}

/// The fields of a v1 single-file info dictionary, minus the piece hashes,
/// which the caller supplies piece by piece.
#[derive(Clone, Copy, Debug)]
pub struct InfoFields<'a> {
    pub name: &'a str,
    pub length: u64,
    pub piece_length: u32,
}

impl InfoFields<'_> {
    pub fn piece_count(&self) -> u32 {
        piece_count(self.length, self.piece_length)
    }

    /// Everything before the piece hashes.
    fn head(&self) -> Vec<u8> {
        let mut head = Encoder::with_capacity(64 + self.name.len());
        head.begin_dict()
            .bytes(b"length")
            .int(self.length as i64)
            .bytes(b"name")
            .bytes(self.name.as_bytes())
            .bytes(b"piece length")
            .int(i64::from(self.piece_length))
            .bytes(b"pieces")
            .bytes_header(self.piece_count() as usize * 20);
        head.buf
    }

    /// The pieces whose hashes lie in bytes `start..end` of the dictionary.
    pub fn pieces_in(&self, start: usize, end: usize) -> std::ops::Range<u32> {
        let head = self.encoded_len() - 1 - self.piece_count() as usize * 20;
        let first = start.saturating_sub(head) / 20;
        let last = end.saturating_sub(head).div_ceil(20);
        let n = self.piece_count() as usize;
        (first.min(n) as u32)..(last.min(n) as u32)
    }

    /// Bytes `start..end` of the dictionary (one ut_metadata piece), asking
    /// `hash_of` only for the pieces in that window ([`InfoFields::pieces_in`]).
    pub fn write_range(
        &self,
        start: usize,
        end: usize,
        out: &mut Vec<u8>,
        mut hash_of: impl FnMut(u32) -> PieceHash,
    ) {
        let mut sink = WindowSink {
            start,
            end,
            pos: 0,
            out,
        };
        let head = self.head();
        sink.put(&head);
        let pieces = self.pieces_in(start, end);
        sink.pos = head.len() + pieces.start as usize * 20;
        // Hashes go into the window 64 at a time: one append per hash made
        // building a crawler's metadata the seeder's largest cost after TCP.
        let mut batch = [0u8; 20 * 64];
        let mut i = pieces.start;
        while i < pieces.end {
            let k = (pieces.end - i).min(64);
            for (j, slot) in batch.chunks_exact_mut(20).take(k as usize).enumerate() {
                slot.copy_from_slice(&hash_of(i + j as u32));
            }
            sink.put(&batch[..k as usize * 20]);
            i += k;
        }
        sink.pos = head.len() + self.piece_count() as usize * 20;
        sink.put(b"e");
    }

    /// Writes `d6:length…4:name…12:piece length…6:pieces…e` with keys in the
    /// sorted order BEP 3 requires. `hash_of(i)` returns piece `i`'s SHA-1.
    pub fn write(&self, sink: &mut impl InfoSink, mut hash_of: impl FnMut(u32) -> PieceHash) {
        let n = self.piece_count();
        sink.put(&self.head());
        // Batch hashes so the SHA-1 sink sees large updates.
        let mut batch = [0u8; 20 * 64];
        let mut filled = 0;
        for i in 0..n {
            batch[filled..filled + 20].copy_from_slice(&hash_of(i));
            filled += 20;
            if filled == batch.len() {
                sink.put(&batch);
                filled = 0;
            }
        }
        sink.put(&batch[..filled]);
        sink.put(b"e");
    }

    /// Byte length of the info dictionary, computed without building it
    /// (advertised as `metadata_size` in the BEP 10 handshake).
    pub fn encoded_len(&self) -> usize {
        // Digit counts without formatting: this runs for every metadata
        // window a crawler asks for.
        fn digits(n: u64) -> usize {
            n.checked_ilog10().map_or(1, |d| d as usize + 1)
        }
        fn int_len(n: u64) -> usize {
            digits(n) + 2
        }
        fn str_len(n: usize) -> usize {
            digits(n as u64) + 1 + n
        }
        let pieces = self.piece_count() as usize * 20;
        2 + str_len(6)
            + int_len(self.length)
            + str_len(4)
            + str_len(self.name.len())
            + str_len(12)
            + int_len(u64::from(self.piece_length))
            + str_len(6)
            + str_len(pieces)
    }

    pub fn info_hash(&self, hash_of: impl FnMut(u32) -> PieceHash) -> InfoHash {
        let mut hasher = Sha1::new();
        self.write(&mut hasher, hash_of);
        hasher.finalize().into()
    }

    pub fn to_bytes(&self, hash_of: impl FnMut(u32) -> PieceHash) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut out, hash_of);
        out
    }
}

/// A `.torrent` file around an already-encoded info dictionary. Tracker URLs
/// become `announce` (first) and a one-tier-per-URL `announce-list` (BEP 12).
/// No creation date: the file must be identical on every node and every run.
pub fn torrent_file(info: &[u8], trackers: &[String], created_by: &str) -> Vec<u8> {
    let mut e = Encoder::with_capacity(info.len() + 256);
    e.begin_dict();
    if let Some(first) = trackers.first() {
        e.bytes(b"announce").bytes(first.as_bytes());
        e.bytes(b"announce-list").begin_list();
        for t in trackers {
            e.begin_list().bytes(t.as_bytes()).end();
        }
        e.end();
    }
    e.bytes(b"created by").bytes(created_by.as_bytes());
    e.bytes(b"info");
    e.buf.extend_from_slice(info);
    e.end();
    e.finish()
}

/// Lower-case hex, as magnet links and tracker whitelists write info hashes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub fn parse_hex20(s: &str) -> Option<[u8; 20]> {
    let s = s.as_bytes();
    if s.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Percent-encodes everything outside RFC 3986's unreserved set.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A BEP 9 magnet link: `xt`, `dn`, `xl`, one `tr` per tracker and one
/// `x.pe` per known peer address (so a client can reach us with no tracker
/// and no DHT).
pub fn magnet(
    info_hash: &InfoHash,
    name: &str,
    length: u64,
    trackers: &[String],
    peers: &[String],
) -> String {
    let mut m = format!(
        "magnet:?xt=urn:btih:{}&dn={}&xl={}",
        hex(info_hash),
        percent_encode(name.as_bytes()),
        length
    );
    for t in trackers {
        m.push_str("&tr=");
        m.push_str(&percent_encode(t.as_bytes()));
    }
    for p in peers {
        m.push_str("&x.pe=");
        m.push_str(&percent_encode(p.as_bytes()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;

    #[test]
    fn piece_length_follows_the_libtorrent_table() {
        assert_eq!(piece_length_for(1), 16 * 1024);
        assert_eq!(piece_length_for(2_684_355), 16 * 1024);
        assert_eq!(piece_length_for(2_684_356), 32 * 1024);
        assert_eq!(piece_length_for(100 << 20), 128 * 1024);
        assert_eq!(piece_length_for(4 << 30), 1 << 20);
        assert_eq!(piece_length_for(u64::MAX), 8 << 20);
        for size in [1u64, 1 << 20, 1 << 30, 4 << 30, 64 << 30] {
            let n = piece_count(size, piece_length_for(size));
            assert!(n <= 16_384, "{size} -> {n}");
        }
    }

    #[test]
    fn piece_sizes_cover_the_file() {
        assert_eq!(piece_count(16385, 16384), 2);
        assert_eq!(piece_size(16385, 16384, 1), 1);
        assert_eq!(piece_size(16384, 16384, 0), 16384);
        assert_eq!(piece_count(1, 16384), 1);
        assert_eq!(piece_size(1, 16384, 0), 1);
    }

    #[test]
    fn info_dict_is_valid_sorted_bencode_and_length_is_exact() {
        let fields = InfoFields {
            name: "sample-title-000001.mp4",
            length: 100_000,
            piece_length: 16384,
        };
        let bytes = fields.to_bytes(|i| [i as u8; 20]);
        assert_eq!(bytes.len(), fields.encoded_len());
        let v = bencode::decode(&bytes).unwrap();
        assert_eq!(v.get(b"length").unwrap().as_int(), Some(100_000));
        assert_eq!(v.get(b"pieces").unwrap().as_bytes().unwrap().len(), 7 * 20);
        let keys: Vec<_> = v.as_dict().unwrap().iter().map(|(k, _)| *k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let digest: [u8; 20] = Sha1::digest(&bytes).into();
        assert_eq!(fields.info_hash(|i| [i as u8; 20]), digest);
        for (start, end) in [(0, 10), (5, 100), (90, bytes.len()), (0, bytes.len())] {
            let mut out = Vec::new();
            let mut sink = WindowSink {
                start,
                end,
                pos: 0,
                out: &mut out,
            };
            fields.write(&mut sink, |i| [i as u8; 20]);
            assert_eq!(out, &bytes[start..end]);
        }
    }

    #[test]
    fn magnet_escapes_names() {
        let m = magnet(
            &[0xab; 20],
            "a b/ø",
            5,
            &["http://127.0.0.1:1/announce".into()],
            &[],
        );
        assert!(m.starts_with("magnet:?xt=urn:btih:abab"));
        assert!(m.contains("&dn=a%20b%2F%C3%B8&xl=5&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce"));
    }

    #[test]
    fn hex_round_trips() {
        let h = [
            0x01, 0xfe, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        assert_eq!(parse_hex20(&hex(&h)), Some(h));
        assert_eq!(parse_hex20("zz"), None);
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_window_equals_the_slice_of_the_whole_and_asks_only_for_its_pieces() {
        let f = InfoFields {
            name: "sample-title-000001.mkv",
            length: 5 * 16384 + 3,
            piece_length: 16384,
        };
        let hash = |i: u32| [i as u8 + 1; 20];
        let whole = f.to_bytes(hash);
        for (start, end) in [
            (0, 10),
            (0, whole.len()),
            (40, 61),
            (60, 100),
            (whole.len() - 3, whole.len()),
            (5, 5),
        ] {
            let mut asked = Vec::new();
            let mut out = Vec::new();
            f.write_range(start, end, &mut out, |i| {
                asked.push(i);
                hash(i)
            });
            assert_eq!(out, whole[start..end], "{start}..{end}");
            let want: Vec<u32> = f.pieces_in(start, end).collect();
            assert_eq!(asked, want);
            assert!(asked.len() <= (end - start) / 20 + 2);
        }
    }

    /// Windows that span more than one batch of hashes, and lengths on
    /// both sides of a digit boundary (`encoded_len` counts digits).
    #[test]
    fn every_16_kib_window_of_large_dictionaries_matches_the_whole() {
        for (length, piece_length) in [
            (9_999_999_999u64, 4 << 20),
            (10_000_000_000, 4 << 20),
            (99 * 16384 + 1, 16384),
            (4000 * 65536, 65536),
        ] {
            let f = InfoFields {
                name: "sample-title-000002.mp4",
                length,
                piece_length,
            };
            let hash = |i: u32| {
                let mut h = [0u8; 20];
                h[..4].copy_from_slice(&i.to_le_bytes());
                h[19] = 0xa5;
                h
            };
            let whole = f.to_bytes(hash);
            assert_eq!(whole.len(), f.encoded_len(), "{length}");
            for start in (0..whole.len()).step_by(16384).chain([7, 1283]) {
                let end = (start + 16384).min(whole.len());
                let mut out = Vec::new();
                f.write_range(start, end, &mut out, hash);
                assert_eq!(out, whole[start..end], "{length} {start}..{end}");
            }
        }
    }
}
