//! A crawler's metadata fetch, as DHT indexers make them by the thousand a
//! second: handshake, BEP 10 handshake and a request for every `ut_metadata`
//! piece arrive in one read. Every answer must come back framed on its own,
//! in order, and the pieces must hash to the info hash.

use sha1::{Digest, Sha1};
use std::net::IpAddr;
use std::time::Instant;
use warnseed_bittorrent::bencode::{self, Encoder};
use warnseed_bittorrent::metainfo::{piece_count, InfoFields, InfoHash};
use warnseed_bittorrent::session::{LocalIdentity, PeerSession, SeedContent, SessionLimits};
use warnseed_bittorrent::wire::{msg, Handshake, HANDSHAKE_LEN};

struct Torrent {
    length: u64,
    piece_length: u32,
    info_hash: InfoHash,
}

impl Torrent {
    fn new(length: u64, piece_length: u32) -> Self {
        let mut t = Self {
            length,
            piece_length,
            info_hash: [0; 20],
        };
        t.info_hash = Sha1::digest(t.metadata()).into();
        t
    }
    fn fields(&self) -> InfoFields<'_> {
        InfoFields {
            name: "sample-title-000042.mkv",
            length: self.length,
            piece_length: self.piece_length,
        }
    }
    /// Made-up piece hashes: the session never checks them.
    fn metadata(&self) -> Vec<u8> {
        self.fields().to_bytes(|i| Sha1::digest(i.to_be_bytes()).into())
    }
}

impl SeedContent for &Torrent {
    fn info_hash(&self) -> &InfoHash {
        &self.info_hash
    }
    fn total_length(&self) -> u64 {
        self.length
    }
    fn piece_length(&self) -> u32 {
        self.piece_length
    }
    fn piece_count(&self) -> u32 {
        piece_count(self.length, self.piece_length)
    }
    fn metadata_len(&self) -> usize {
        self.fields().encoded_len()
    }
    fn metadata_range(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.metadata()[start..end]);
    }
    fn read(&self, _offset: u64, len: u32, out: &mut Vec<u8>) {
        out.resize(out.len() + len as usize, 0);
    }
}

fn extended(ext_id: u8, dict: Encoder) -> Vec<u8> {
    let body = dict.finish();
    let mut v = ((body.len() + 2) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&[msg::EXTENDED, ext_id]);
    v.extend_from_slice(&body);
    v
}

#[test]
fn every_piece_asked_at_once_comes_back_framed_and_hashes_to_the_info_hash() {
    // 4,000 pieces: 80,000 bytes of hashes, five metadata pieces.
    let t = Torrent::new(4_000 * 1024 * 1024, 1024 * 1024);
    let total = (&t).metadata_len();
    let pieces = total.div_ceil(16 * 1024);
    assert_eq!(pieces, 5);
    let now = Instant::now();
    let ip: IpAddr = "127.1.2.3".parse().unwrap();
    let local = LocalIdentity {
        peer_id: *b"-WS0100-testtesttest",
        client_version: "warnseed/test".into(),
        listen_port: 6881,
    };
    let mut s: PeerSession<&Torrent> = PeerSession::new(SessionLimits::default(), local, ip, now);

    let mut reserved = [0u8; 8];
    reserved[5] |= 0x10;
    let mut input = Handshake {
        reserved,
        info_hash: t.info_hash,
        peer_id: *b"-WL0001-000000000001",
    }
    .encode()
    .to_vec();
    let mut hs = Encoder::new();
    hs.begin_dict()
        .bytes(b"m")
        .begin_dict()
        .bytes(b"ut_metadata")
        .int(7)
        .end()
        .end();
    input.extend(extended(0, hs));
    for piece in 0..pieces as i64 {
        let mut r = Encoder::new();
        r.begin_dict()
            .bytes(b"msg_type")
            .int(0)
            .bytes(b"piece")
            .int(piece)
            .end();
        input.extend(extended(warnseed_bittorrent::wire::OUR_UT_METADATA, r));
    }
    s.handle_input(&input, now);
    assert_eq!(s.pending_lookup(), Some(&t.info_hash));
    s.attach(&t, now);

    let out = s.poll_transmit().to_vec();
    let mut rest = &out[HANDSHAKE_LEN..];
    let mut metadata = Vec::new();
    let mut next = 0i64;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        if body[0] != msg::EXTENDED || body[1] != 7 {
            continue; // our BEP 10 handshake, bitfield
        }
        let (dict, used) = bencode::decode_prefix(&body[2..]).unwrap();
        assert_eq!(dict.get(b"msg_type").unwrap().as_int(), Some(1));
        assert_eq!(dict.get(b"piece").unwrap().as_int(), Some(next), "in order");
        assert_eq!(dict.get(b"total_size").unwrap().as_int(), Some(total as i64));
        let data = &body[2 + used..];
        assert_eq!(data.len(), (total - next as usize * 16 * 1024).min(16 * 1024));
        metadata.extend_from_slice(data);
        next += 1;
    }
    assert_eq!(next, pieces as i64);
    let digest: [u8; 20] = Sha1::digest(&metadata).into();
    assert_eq!(digest, t.info_hash);
    let summary = s.summary();
    assert_eq!(summary.metadata_pieces_sent, pieces as u32);
    assert_eq!((summary.pieces_sent, summary.pieces_complete), (0, 0));
    assert!(!s.is_closed());
}
