//! Drives `warnseed_bittorrent::session::PeerSession` the way the seeder's
//! tokio driver does, with the peer's bytes, the split into reads, the
//! driver's write speed and the clock all taken from the fuzz input.
//!
//! Input layout (missing header bytes read as 0):
//!   byte 0  flags: bit 0 peer sets the fast bit, bit 1 the extension bit,
//!           bits 2-3 which of four synthetic torrents, bits 4-5 how much
//!           output the driver writes per round (all / 1500 bytes / nothing /
//!           a varying amount), bit 6 tight `SessionLimits`, bit 7 choke
//!           idle unchoked peers (as the driver does with upload slots)
//!   bytes 1-3  read sizes: the stream is fed in chunks of byte[k] + 1 bytes,
//!           cycling k = 1, 2, 3; the low bit of byte 3 also makes the peer's
//!           address IPv6 (it shows in our extension handshake's `yourip`)
//!   byte 4  clock step per read, in units of 500 ms (0 = time stands still)
//!   rest    what the peer sends after its (valid) 68-byte handshake
//!
//! Asserted:
//! * no panic anywhere (handle_input, attach, poll_transmit,
//!   consume_transmit, handle_timeout, poll_timeout, summary);
//! * the unsent output never exceeds
//!   `max_send_buffer + METADATA_PIECE + 16 KiB`;
//! * `SeedContent::read` is only asked for bytes inside the file;
//! * what the session writes is a well-formed stream: our handshake for the
//!   same info hash, then frames that parse, each one a message a seed may
//!   send; piece messages carry in-range, correctly sized blocks with the
//!   right bytes; ut_metadata data carries the right slice of the info dict;
//! * a closed session stays closed, has a reason and asks for no timer;
//! * the summary's counters stay within the piece count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use warnseed_bittorrent::bencode::{self, Value};
use warnseed_bittorrent::metainfo::{piece_count, piece_size, InfoFields};
use warnseed_bittorrent::session::{LocalIdentity, PeerSession, SeedContent, SessionLimits};
use warnseed_bittorrent::wire::{
    Handshake, Message, HANDSHAKE_LEN, MAX_BLOCK, METADATA_PIECE, OUR_UT_METADATA, PROTOCOL_HEADER,
};
use warnseed_bittorrent::InfoHash;

const OUR_PEER_ID: [u8; 20] = *b"-WS0100-fuzzfuzzfuzz";
const PEER_ID: [u8; 20] = *b"-XX0000-synthetic001";

/// A synthetic single-file torrent whose bytes are a function of the offset.
struct Torrent {
    name: &'static str,
    total: u64,
    piece_length: u32,
    metadata: Vec<u8>,
    info_hash: InfoHash,
}

fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Stand-in piece hashes: distinct per piece, no SHA-1 work per input.
fn fake_hash(i: u32) -> [u8; 20] {
    let mut h = [0xA5u8; 20];
    h[..4].copy_from_slice(&i.to_be_bytes());
    h
}

impl Torrent {
    fn new(name: &'static str, total: u64, piece_length: u32) -> Self {
        let fields = InfoFields { name, length: total, piece_length };
        let metadata = fields.to_bytes(fake_hash);
        assert_eq!(metadata.len(), fields.encoded_len(), "encoded_len disagrees with to_bytes");
        let info_hash = fields.info_hash(fake_hash);
        Self { name, total, piece_length, metadata, info_hash }
    }
    fn fields(&self) -> InfoFields<'_> {
        InfoFields { name: self.name, length: self.total, piece_length: self.piece_length }
    }
}

impl SeedContent for &'static Torrent {
    fn info_hash(&self) -> &InfoHash {
        &self.info_hash
    }
    fn total_length(&self) -> u64 {
        self.total
    }
    fn piece_length(&self) -> u32 {
        self.piece_length
    }
    fn piece_count(&self) -> u32 {
        piece_count(self.total, self.piece_length)
    }
    fn metadata_len(&self) -> usize {
        self.fields().encoded_len()
    }
    fn metadata_range(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        assert!(start <= end && end <= self.metadata.len(), "metadata range {start}..{end} out of bounds");
        out.extend_from_slice(&self.metadata[start..end]);
    }
    fn read(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        let end = offset.checked_add(u64::from(len)).expect("read range overflows");
        assert!(end <= self.total, "read {offset}..{end} past the end of a {}-byte file", self.total);
        out.extend((offset..end).map(byte_at));
    }
}

fn torrents() -> &'static [Torrent; 4] {
    static T: OnceLock<[Torrent; 4]> = OnceLock::new();
    T.get_or_init(|| {
        [
            // Three pieces, the last one short.
            Torrent::new("sample-title-000101.mp4", 40_000, 16 * 1024),
            // One byte: one tiny piece.
            Torrent::new("sample-title-000102.mp4", 1, 16 * 1024),
            // 2,000 pieces: 40,000 bytes of hashes, three metadata pieces.
            Torrent::new("sample-title-000103.mp4", 2_000 * 16 * 1024, 16 * 1024),
            // 31 pieces of 32 KiB (two blocks each), the last one short.
            Torrent::new("sample-title-000104.mp4", 1_000_003, 32 * 1024),
        ]
    })
}

/// `WARNSEED_FUZZ_DEBUG=1` prints what each input did (for checking seeds).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WARNSEED_FUZZ_DEBUG").is_some())
}

fn tight_limits() -> SessionLimits {
    SessionLimits {
        max_message_len: 32 * 1024,
        max_queued_requests: 8,
        send_watermark: 16 * 1024,
        max_send_buffer: 48 * 1024,
        ..SessionLimits::default()
    }
}

/// Checks the byte stream the driver wrote, as the peer would read it.
struct OutputChecker {
    torrent: &'static Torrent,
    fast: bool,
    ext: bool,
    buf: Vec<u8>,
    handshake_seen: bool,
    ext_handshake_seen: bool,
    frames: u64,
    piece_bytes: u64,
}

/// Largest frame a seed sends: a 16 KiB block or a 16 KiB metadata piece
/// plus its small bencoded header.
const MAX_OUT_FRAME: usize = 16 * 1024 + 256;

impl OutputChecker {
    fn feed(&mut self, bytes: &[u8], peer_ut_ids: &[bool; 256]) {
        self.buf.extend_from_slice(bytes);
        if !self.handshake_seen {
            if self.buf.len() < HANDSHAKE_LEN {
                return;
            }
            let hs: [u8; HANDSHAKE_LEN] = self.buf[..HANDSHAKE_LEN].try_into().unwrap();
            let hs = Handshake::decode(&hs).expect("our handshake starts with the protocol header");
            assert_eq!(hs.info_hash, self.torrent.info_hash);
            assert_eq!(hs.peer_id, OUR_PEER_ID);
            assert_eq!(hs.reserved, Handshake::our_reserved());
            self.buf.drain(..HANDSHAKE_LEN);
            self.handshake_seen = true;
        }
        let mut used = 0;
        loop {
            let rest = &self.buf[used..];
            if rest.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len <= MAX_OUT_FRAME, "we sent a {len}-byte frame");
            if rest.len() < 4 + len {
                break;
            }
            let body = rest[4..4 + len].to_vec();
            used += 4 + len;
            self.check_frame(&body, peer_ut_ids);
        }
        self.buf.drain(..used);
    }

    fn check_frame(&mut self, body: &[u8], peer_ut_ids: &[bool; 256]) {
        let t = self.torrent;
        let n = piece_count(t.total, t.piece_length);
        let m = Message::parse(body).unwrap_or_else(|e| panic!("we sent a malformed frame: {e} {body:?}"));
        self.frames += 1;
        match m {
            Message::KeepAlive | Message::Choke | Message::Unchoke => {}
            Message::HaveAll => assert!(self.fast, "have_all to a peer without BEP 6"),
            Message::Bitfield(bits) => {
                assert!(!self.fast, "bitfield to a BEP 6 peer (we send have_all)");
                assert_eq!(bits.len(), n.div_ceil(8) as usize);
                for i in 0..bits.len() as u32 * 8 {
                    let set = bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0;
                    assert_eq!(set, i < n, "bitfield bit {i} of {n} pieces");
                }
            }
            Message::Reject { .. } => assert!(self.fast, "reject to a peer without BEP 6"),
            Message::Piece { index, begin, block } => {
                assert!(index < n, "piece {index} of {n}");
                assert!(!block.is_empty() && block.len() <= MAX_BLOCK as usize);
                let size = piece_size(t.total, t.piece_length, index);
                assert!(u64::from(begin) + block.len() as u64 <= u64::from(size), "block past the piece end");
                let offset = u64::from(index) * u64::from(t.piece_length) + u64::from(begin);
                for (k, &b) in block.iter().enumerate() {
                    assert_eq!(b, byte_at(offset + k as u64), "wrong byte at file offset {}", offset + k as u64);
                }
                self.piece_bytes += block.len() as u64;
            }
            Message::Extended { id: 0, payload } => {
                assert!(self.ext, "extension handshake to a peer without BEP 10");
                assert!(!self.ext_handshake_seen, "two extension handshakes");
                self.ext_handshake_seen = true;
                let d = bencode::decode(payload).expect("our extension handshake is bencode");
                let ut = d.get(b"m").and_then(|m| m.get(b"ut_metadata")).and_then(Value::as_int);
                assert_eq!(ut, Some(i64::from(OUR_UT_METADATA)));
                let size = d.get(b"metadata_size").and_then(Value::as_int);
                assert_eq!(size, Some(t.metadata.len() as i64));
            }
            Message::Extended { id, payload } => {
                // The session answers ut_metadata requests even from a peer
                // that did not set the BEP 10 bit, so that is not asserted;
                // the id must be one the peer announced for ut_metadata.
                assert!(peer_ut_ids[usize::from(id)], "ut_metadata sent under id {id}, never announced");
                let (d, used) = bencode::decode_prefix(payload).expect("ut_metadata header is bencode");
                let piece = d.get(b"piece").and_then(Value::as_int).expect("piece");
                match d.get(b"msg_type").and_then(Value::as_int) {
                    Some(1) => {
                        assert_eq!(d.get(b"total_size").and_then(Value::as_int), Some(t.metadata.len() as i64));
                        let start = usize::try_from(piece).expect("piece >= 0") * METADATA_PIECE;
                        assert!(start < t.metadata.len());
                        let end = (start + METADATA_PIECE).min(t.metadata.len());
                        assert!(payload[used..] == t.metadata[start..end], "wrong metadata piece {piece}");
                    }
                    Some(2) => assert_eq!(used, payload.len()),
                    other => panic!("we sent ut_metadata msg_type {other:?}"),
                }
            }
            other => panic!("a seed never sends {other:?}"),
        }
    }
}

struct Driver {
    s: PeerSession<&'static Torrent>,
    now: Instant,
    bound: usize,
    write_mode: u8,
    choke_idle: bool,
    checker: OutputChecker,
    /// Every non-zero id the peer announced for ut_metadata so far.
    peer_ut_ids: [bool; 256],
    round: usize,
}

impl Driver {
    fn check_state(&self) {
        if self.s.is_closed() {
            assert!(self.s.close_reason().is_some(), "closed without a reason");
            assert!(self.s.poll_timeout().is_none(), "a closed session wants a timer");
            assert!(!self.s.wants_unchoke() && !self.s.holds_idle_slot());
        } else {
            assert!(self.s.poll_timeout().is_some(), "an open session has no timer");
        }
    }

    /// One turn of the driver loop: slots, then write what it can.
    fn pump(&mut self, hint: usize) {
        if self.s.wants_unchoke() {
            self.s.unchoke(self.now);
        }
        if self.choke_idle && self.s.holds_idle_slot() {
            self.s.choke();
        }
        // A fast writer loops a few times, as the driver does on successive
        // select! turns while the socket stays writable.
        let turns = if self.write_mode == 0 { 4 } else { 1 };
        for _ in 0..turns {
            let out = self.s.poll_transmit();
            let unsent = out.len();
            assert!(
                unsent <= self.bound,
                "unsent output {unsent} bytes exceeds the bound {} (close reason {:?})",
                self.bound,
                self.s.close_reason()
            );
            let n = match self.write_mode {
                0 => unsent,
                1 => unsent.min(1500),
                2 => 0,
                _ => unsent.min((hint + self.round) * 97 % 20_000),
            };
            let written = out[..n].to_vec();
            self.checker.feed(&written, &self.peer_ut_ids);
            self.s.consume_transmit(n, self.now);
            if n == 0 {
                break;
            }
        }
        self.round += 1;
        self.check_state();
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        if self.s.poll_timeout().is_some_and(|t| t <= self.now) || self.round % 3 == 0 {
            self.s.handle_timeout(self.now);
        }
        self.check_state();
    }
}

/// Records the ut_metadata ids a peer announces in its extension
/// handshakes (the session keeps the latest one that fits a u8), so the
/// checker can tell which ids our ut_metadata replies may use.
fn note_ext_handshake(stream: &[u8], seen: &mut Vec<u8>, ids: &mut [bool; 256]) {
    seen.extend_from_slice(stream);
    let mut used = 0;
    while seen.len() - used >= 4 {
        let len = u32::from_be_bytes(seen[used..used + 4].try_into().unwrap()) as usize;
        if seen.len() - used - 4 < len {
            break;
        }
        let body = &seen[used + 4..used + 4 + len];
        used += 4 + len;
        if let Ok(Message::Extended { id: 0, payload }) = Message::parse(body) {
            if let Ok(d) = bencode::decode(payload) {
                if let Some(v) = d.get(b"m").and_then(|m| m.get(b"ut_metadata")).and_then(Value::as_int) {
                    if let Ok(id) = u8::try_from(v) {
                        ids[usize::from(id)] = true;
                    }
                }
            }
        }
    }
    seen.drain(..used);
}

fuzz_target!(|data: &[u8]| {
    let header = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = header(0);
    let fast = flags & 0x01 != 0;
    let ext = flags & 0x02 != 0;
    let torrent: &'static Torrent = &torrents()[usize::from((flags >> 2) & 3)];
    let write_mode = (flags >> 4) & 3;
    let limits = if flags & 0x40 != 0 { tight_limits() } else { SessionLimits::default() };
    let choke_idle = flags & 0x80 != 0;
    let chunk_sizes = [usize::from(header(1)) + 1, usize::from(header(2)) + 1, usize::from(header(3)) + 1];
    let step = Duration::from_millis(u64::from(header(4)) * 500);
    let stream = data.get(5..).unwrap_or(&[]);

    let bound = limits.max_send_buffer + METADATA_PIECE + 16 * 1024;
    let local = LocalIdentity {
        peer_id: OUR_PEER_ID,
        client_version: "warnseed/fuzz".into(),
        listen_port: 6881,
    };
    let ip: IpAddr = if header(3) & 1 != 0 { "::1".parse().unwrap() } else { "127.0.0.1".parse().unwrap() };
    let start = Instant::now();
    let mut s = PeerSession::new(limits.clone(), local, ip, start);

    // The peer's handshake, plus its first read's worth of messages in the
    // same segment (pipelined before we answer).
    let mut reserved = [0u8; 8];
    if ext {
        reserved[5] |= 0x10;
    }
    if fast {
        reserved[7] |= 0x04;
    }
    let hs = Handshake { reserved, info_hash: torrent.info_hash, peer_id: PEER_ID }.encode();
    assert_eq!(&hs[..20], PROTOCOL_HEADER);
    let first = stream.len().min(chunk_sizes[0]);
    let mut opening = hs.to_vec();
    opening.extend_from_slice(&stream[..first]);
    s.handle_input(&opening, start);
    assert_eq!(s.pending_lookup(), Some(&torrent.info_hash), "a valid handshake asks for a lookup");
    assert!(!s.is_closed());
    s.attach(torrent, start);
    assert!(s.pending_lookup().is_none());

    let mut seen = Vec::new();
    let mut peer_ut_ids = [false; 256];
    note_ext_handshake(&stream[..first], &mut seen, &mut peer_ut_ids);

    let mut d = Driver {
        s,
        now: start,
        bound,
        write_mode,
        choke_idle,
        checker: OutputChecker {
            torrent,
            fast,
            ext,
            buf: Vec::new(),
            handshake_seen: false,
            ext_handshake_seen: false,
            frames: 0,
            piece_bytes: 0,
        },
        peer_ut_ids,
        round: 0,
    };
    d.pump(first);

    let mut pos = first;
    let mut k = 1;
    while pos < stream.len() {
        let len = chunk_sizes[k % 3].min(stream.len() - pos);
        k += 1;
        let chunk = &stream[pos..pos + len];
        pos += len;
        let was_closed = d.s.is_closed();
        let reason = d.s.close_reason().cloned();
        note_ext_handshake(chunk, &mut seen, &mut d.peer_ut_ids);
        d.s.handle_input(chunk, d.now);
        if was_closed {
            assert!(d.s.is_closed());
            assert_eq!(d.s.close_reason().cloned(), reason, "the first close reason wins");
        }
        d.pump(len);
        d.tick(step);
        d.pump(len);
    }

    // Let the clocks run out: keep-alives, then idle/uninterested closes.
    for _ in 0..4 {
        d.tick(Duration::from_secs(100));
        d.pump(0);
    }
    d.s.handle_timeout(d.now + Duration::from_secs(3600));
    assert!(d.s.is_closed(), "an hour of silence closes every session");
    d.pump(0);

    let n = piece_count(torrent.total, torrent.piece_length);
    let summary = d.s.summary();
    assert_eq!(summary.info_hash, Some(torrent.info_hash));
    assert_eq!(summary.peer_id, Some(PEER_ID));
    assert_eq!(summary.supports_fast, fast);
    assert_eq!(summary.supports_extensions, ext);
    assert_eq!(summary.piece_count, n);
    assert!(summary.pieces_complete <= n && summary.pieces_sent <= n && summary.peer_pieces <= n);
    assert!(summary.peer_pieces_initial.is_none_or(|p| p <= n));
    assert!(summary.bytes_sent >= d.checker.piece_bytes, "we wrote more piece bytes than we counted");
    if let Some(v) = &summary.client_version {
        assert!(v.chars().count() <= 64 && !v.chars().any(char::is_control));
    }
    let reason = d.s.close_reason().map(|r| r.to_string());
    if debug() {
        eprintln!(
            "close: {reason:?}; frames out: {}; piece bytes out: {}; {summary:?}; completed: {}",
            d.checker.frames,
            d.checker.piece_bytes,
            summary.completed()
        );
    }
});
