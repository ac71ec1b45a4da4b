use super::*;
use crate::metainfo::{piece_count, InfoFields};
use sha1::{Digest, Sha1};

/// A torrent held in a Vec, with real piece hashes.
struct Bytes {
    data: Vec<u8>,
    piece_length: u32,
    info_hash: InfoHash,
}

impl Bytes {
    fn new(len: usize, piece_length: u32) -> Self {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut b = Self {
            data,
            piece_length,
            info_hash: [0; 20],
        };
        b.info_hash = Sha1::digest(b.metadata()).into();
        b
    }
    fn metadata(&self) -> Vec<u8> {
        let pl = self.piece_length as usize;
        self.fields().to_bytes(|i| {
            Sha1::digest(&self.data[i as usize * pl..((i as usize + 1) * pl).min(self.data.len())]).into()
        })
    }
    fn fields(&self) -> InfoFields<'_> {
        InfoFields {
            name: "sample-title-000001.mp4",
            length: self.data.len() as u64,
            piece_length: self.piece_length,
        }
    }
}

impl SeedContent for &Bytes {
    fn info_hash(&self) -> &InfoHash {
        &self.info_hash
    }
    fn total_length(&self) -> u64 {
        self.data.len() as u64
    }
    fn piece_length(&self) -> u32 {
        self.piece_length
    }
    fn piece_count(&self) -> u32 {
        piece_count(self.data.len() as u64, self.piece_length)
    }
    fn metadata_len(&self) -> usize {
        self.fields().encoded_len()
    }
    fn metadata_range(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.metadata()[start..end]);
    }
    fn read(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data[offset as usize..offset as usize + len as usize]);
    }
}

fn ip() -> IpAddr {
    "127.0.0.9".parse().unwrap()
}

fn local() -> LocalIdentity {
    LocalIdentity {
        peer_id: *b"-WS0100-testtesttest",
        client_version: "warnseed/test".into(),
        listen_port: 6881,
    }
}

fn handshake(info_hash: InfoHash, fast: bool, ext: bool) -> Vec<u8> {
    let mut reserved = [0u8; 8];
    if ext {
        reserved[5] |= 0x10;
    }
    if fast {
        reserved[7] |= 0x04;
    }
    Handshake {
        reserved,
        info_hash,
        peer_id: *b"-LT2080-abcdefghijkl",
    }
    .encode()
    .to_vec()
}

fn frame(id: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(body);
    v
}

fn request(index: u32, begin: u32, length: u32) -> Vec<u8> {
    let mut body = Vec::new();
    for x in [index, begin, length] {
        body.extend_from_slice(&x.to_be_bytes());
    }
    frame(msg::REQUEST, &body)
}

/// Splits a transmit buffer into messages (after the 68-byte handshake).
fn messages(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    let mut rest = out;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if len == 0 {
            v.push((255, Vec::new()));
        } else {
            v.push((rest[4], rest[5..4 + len].to_vec()));
        }
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "trailing partial message");
    v
}

struct Harness<'a> {
    s: PeerSession<&'a Bytes>,
    now: Instant,
}

impl<'a> Harness<'a> {
    fn new(t: &'a Bytes, fast: bool, ext: bool) -> Self {
        let now = Instant::now();
        let mut s = PeerSession::new(SessionLimits::default(), local(), ip(), now);
        s.handle_input(&handshake(t.info_hash, fast, ext), now);
        assert_eq!(s.pending_lookup(), Some(&t.info_hash));
        s.attach(t, now);
        let mut h = Self { s, now };
        let opening = h.drain();
        assert_eq!(&opening[..20], crate::wire::PROTOCOL_HEADER);
        h
    }
    fn feed(&mut self, bytes: &[u8]) {
        self.s.handle_input(bytes, self.now);
    }
    fn drain(&mut self) -> Vec<u8> {
        let out = self.s.poll_transmit().to_vec();
        self.s.consume_transmit(out.len(), self.now);
        out
    }
    fn drain_messages(&mut self) -> Vec<(u8, Vec<u8>)> {
        messages(&self.drain())
    }
    fn interested_and_unchoked(&mut self) {
        self.feed(&frame(msg::INTERESTED, &[]));
        assert!(self.s.wants_unchoke());
        self.s.unchoke(self.now);
        assert_eq!(self.drain_messages(), vec![(msg::UNCHOKE, vec![])]);
    }
}

#[test]
fn opening_is_handshake_ext_handshake_and_have_all() {
    let t = Bytes::new(40_000, 16384);
    let now = Instant::now();
    let mut s: PeerSession<&Bytes> = PeerSession::new(SessionLimits::default(), local(), ip(), now);
    s.handle_input(&handshake(t.info_hash, true, true), now);
    s.attach(&t, now);
    let out = s.poll_transmit().to_vec();
    let hs = Handshake::decode(out[..68].try_into().unwrap()).unwrap();
    assert_eq!(hs.info_hash, t.info_hash);
    assert!(hs.supports_fast() && hs.supports_extensions());
    let msgs = messages(&out[68..]);
    assert_eq!(msgs[0].0, msg::EXTENDED);
    let ext = bencode::decode(&msgs[0].1[1..]).unwrap();
    assert_eq!(
        ext.get(b"metadata_size").unwrap().as_int(),
        Some((&t).metadata_len() as i64)
    );
    assert_eq!(
        ext.get(b"m").unwrap().get(b"ut_metadata").unwrap().as_int(),
        Some(1)
    );
    assert_eq!(ext.get(b"yourip").unwrap().as_bytes(), Some(&[127, 0, 0, 9][..]));
    assert_eq!(ext.get(b"p").unwrap().as_int(), Some(6881));
    assert_eq!(msgs[1], (msg::HAVE_ALL, vec![]));
}

#[test]
fn peers_without_fast_get_a_bitfield() {
    let t = Bytes::new(40_000, 16384);
    let now = Instant::now();
    let mut s: PeerSession<&Bytes> = PeerSession::new(SessionLimits::default(), local(), ip(), now);
    s.handle_input(&handshake(t.info_hash, false, false), now);
    s.attach(&t, now);
    let out = s.poll_transmit().to_vec();
    assert_eq!(messages(&out[68..]), vec![(msg::BITFIELD, vec![0b1110_0000])]);
}

#[test]
fn handshake_split_across_reads_and_pipelined_messages() {
    let t = Bytes::new(40_000, 16384);
    let now = Instant::now();
    let mut s: PeerSession<&Bytes> = PeerSession::new(SessionLimits::default(), local(), ip(), now);
    let mut bytes = handshake(t.info_hash, true, true);
    bytes.extend(frame(msg::INTERESTED, &[]));
    for chunk in bytes.chunks(7) {
        s.handle_input(chunk, now);
        if let Some(h) = s.pending_lookup().copied() {
            assert_eq!(h, t.info_hash);
            s.attach(&t, now);
        }
    }
    assert!(
        s.wants_unchoke(),
        "interested message after the handshake was kept"
    );
}

#[test]
fn serves_blocks_with_the_right_bytes_and_counts_them() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.interested_and_unchoked();
    h.feed(&request(0, 0, 16384));
    h.feed(&request(2, 0, 40_000 - 32768));
    h.feed(&request(1, 100, 50));
    let msgs = h.drain_messages();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].0, msg::PIECE);
    assert_eq!(&msgs[0].1[8..], &t.data[..16384]);
    assert_eq!(&msgs[1].1[8..], &t.data[32768..]);
    assert_eq!(&msgs[2].1[8..], &t.data[16384 + 100..16384 + 150]);
    let s = h.s.summary();
    assert_eq!(s.bytes_sent, 16384 + (40_000 - 32768) + 50);
    assert_eq!(s.pieces_sent, 2);
    assert_eq!(s.pieces_complete, 2);
    assert!(!s.completed());
}

#[test]
fn invalid_requests_are_rejected_then_closed_for_fast_peers() {
    let t = Bytes::new(40_000, 16384);
    for (i, b, l) in [
        (3, 0, 16384),
        (0, 0, 16385),
        (0, 16000, 1000),
        (2, 0, 16384),
        (0, 0, 0),
        (u32::MAX, u32::MAX, u32::MAX),
    ] {
        let mut h = Harness::new(&t, true, true);
        h.interested_and_unchoked();
        h.feed(&request(i, b, l));
        let msgs = h.drain_messages();
        let mut want = Vec::new();
        for x in [i, b, l] {
            want.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(msgs, vec![(msg::REJECT, want)], "request {i} {b} {l}");
        let reason = CloseReason::InvalidRequest {
            index: i,
            begin: b,
            length: l,
        };
        assert_eq!(h.s.close_reason(), Some(&reason));
        assert_eq!(h.s.summary().bytes_sent, 0);
    }
}

#[test]
fn invalid_request_closes_a_peer_without_fast() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, false, false);
    h.interested_and_unchoked();
    h.feed(&request(0, 0, 32 * 1024));
    assert_eq!(
        h.s.close_reason(),
        Some(&CloseReason::InvalidRequest {
            index: 0,
            begin: 0,
            length: 32 * 1024
        })
    );
}

#[test]
fn requests_while_choked_are_rejected_not_served() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&request(0, 0, 16384));
    assert_eq!(h.drain_messages()[0].0, msg::REJECT);
    assert_eq!(h.s.summary().bytes_sent, 0);
}

#[test]
fn choking_rejects_the_queue_for_fast_peers() {
    let t = Bytes::new(1 << 20, 16384);
    let limits = SessionLimits {
        send_watermark: 1,
        ..SessionLimits::default()
    };
    let now = Instant::now();
    let mut s: PeerSession<&Bytes> = PeerSession::new(limits, local(), ip(), now);
    s.handle_input(&handshake(t.info_hash, true, false), now);
    s.attach(&t, now);
    s.handle_input(&frame(msg::INTERESTED, &[]), now);
    s.unchoke(now);
    let n = s.poll_transmit().len();
    s.consume_transmit(n, now);
    for i in 0..4 {
        s.handle_input(&request(i, 0, 16384), now);
    }
    let n = s.poll_transmit().len();
    s.consume_transmit(n, now);
    s.choke();
    let msgs = messages(s.poll_transmit());
    assert_eq!(msgs[0].0, msg::CHOKE);
    assert_eq!(msgs[1..].iter().filter(|m| m.0 == msg::REJECT).count(), 3);
}

#[test]
fn a_cancelled_request_is_rejected_for_fast_peers_and_dropped_for_others() {
    let t = Bytes::new(1 << 20, 16384);
    for fast in [true, false] {
        // A one-byte watermark keeps requests queued behind the first.
        let limits = SessionLimits {
            send_watermark: 1,
            ..SessionLimits::default()
        };
        let now = Instant::now();
        let mut s: PeerSession<&Bytes> = PeerSession::new(limits, local(), ip(), now);
        s.handle_input(&handshake(t.info_hash, fast, false), now);
        s.attach(&t, now);
        s.handle_input(&frame(msg::INTERESTED, &[]), now);
        s.unchoke(now);
        let n = s.poll_transmit().len();
        s.consume_transmit(n, now);
        for i in 0..3 {
            s.handle_input(&request(i, 0, 16384), now);
        }
        let mut cancel = Vec::new();
        for x in [2u32, 0, 16384] {
            cancel.extend_from_slice(&x.to_be_bytes());
        }
        s.handle_input(&frame(msg::CANCEL, &cancel), now);
        let msgs = messages(s.poll_transmit());
        let rejects: Vec<_> = msgs.iter().filter(|m| m.0 == msg::REJECT).collect();
        if fast {
            assert_eq!(rejects.len(), 1, "one answer for the cancelled request");
            assert_eq!(rejects[0].1, cancel);
        } else {
            assert!(rejects.is_empty());
        }
        assert!(!s.is_closed());
    }
}

#[test]
fn a_peer_that_skips_its_bitfield_started_with_nothing() {
    let t = Bytes::new(1 << 20, 16384);
    let mut h = Harness::new(&t, false, false);
    h.feed(&frame(msg::HAVE, &3u32.to_be_bytes()));
    h.feed(&frame(msg::HAVE, &4u32.to_be_bytes()));
    assert_eq!(h.s.summary().peer_pieces_initial, Some(0));
    assert_eq!(h.s.summary().peer_pieces, 2);
}

#[test]
fn queue_is_bounded() {
    let t = Bytes::new(1 << 20, 16384);
    let limits = SessionLimits {
        max_queued_requests: 4,
        send_watermark: 1,
        ..SessionLimits::default()
    };
    let now = Instant::now();
    let mut s: PeerSession<&Bytes> = PeerSession::new(limits, local(), ip(), now);
    s.handle_input(&handshake(t.info_hash, false, false), now);
    s.attach(&t, now);
    s.handle_input(&frame(msg::INTERESTED, &[]), now);
    s.unchoke(now);
    for i in 0..10 {
        s.handle_input(&request(i, 0, 16384), now);
    }
    assert_eq!(s.close_reason(), Some(&CloseReason::TooManyRequests));
}

#[test]
fn peer_progress_and_completion() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::BITFIELD, &[0b1000_0000]));
    assert_eq!(h.s.summary().peer_pieces_initial, Some(1));
    h.feed(&frame(msg::HAVE, &1u32.to_be_bytes()));
    assert_eq!(h.s.summary().peer_pieces, 2);
    assert!(!h.s.is_closed());
    h.feed(&frame(msg::HAVE, &2u32.to_be_bytes()));
    assert!(h.s.summary().completed());
    assert_eq!(h.s.close_reason(), Some(&CloseReason::PeerComplete));
}

#[test]
fn completion_counts_pieces_delivered_in_full() {
    let t = Bytes::new(20_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::HAVE_NONE, &[]));
    h.interested_and_unchoked();
    h.feed(&request(0, 0, 16384));
    h.feed(&request(1, 0, 20_000 - 16384));
    h.drain();
    // The client closed before its last HAVE reached us.
    h.s.close(CloseReason::PeerClosed);
    let s = h.s.summary();
    assert_eq!((s.peer_pieces, s.pieces_sent, s.pieces_complete), (0, 2, 2));
    assert!(s.completed());
}

#[test]
fn bad_bitfield_and_have_close() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::BITFIELD, &[0xff, 0xff]));
    assert_eq!(
        h.s.close_reason(),
        Some(&CloseReason::Malformed("bitfield length"))
    );
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::HAVE, &3u32.to_be_bytes()));
    assert_eq!(
        h.s.close_reason(),
        Some(&CloseReason::Malformed("have index out of range"))
    );
}

#[test]
fn oversized_length_prefix_closes_before_buffering() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&0x7fff_ffffu32.to_be_bytes());
    assert_eq!(
        h.s.close_reason(),
        Some(&CloseReason::MessageTooLong(0x7fff_ffff))
    );
}

/// The session sees plaintext only (the driver's framing routes MSE): any
/// opener that is not a BitTorrent handshake closes it at once.
#[test]
fn plaintext_that_is_not_a_handshake_closes_at_once() {
    let now = Instant::now();
    for opener in [
        &b"GET /announce HTTP/1.1\r\n"[..],
        &[0x13, b'B', b'i', b't', b'X'],
        &[0xde, 0xad],
    ] {
        let mut s: PeerSession<&Bytes> = PeerSession::new(SessionLimits::default(), local(), ip(), now);
        s.handle_input(opener, now);
        assert_eq!(s.close_reason(), Some(&CloseReason::NotBitTorrent), "{opener:?}");
    }
}

#[test]
fn piece_messages_from_the_peer_close() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::PIECE, &[0; 12]));
    assert!(matches!(
        h.s.close_reason(),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

#[test]
fn fast_messages_without_fast_close() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, false, true);
    h.feed(&frame(msg::HAVE_ALL, &[]));
    assert!(matches!(
        h.s.close_reason(),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

fn ext_handshake_with_metadata(id: i64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.begin_dict()
        .bytes(b"m")
        .begin_dict()
        .bytes(b"ut_metadata")
        .int(id)
        .end()
        .bytes(b"v")
        .bytes(b"libtorrent\x00 2.0\n")
        .end();
    let mut body = vec![0u8];
    body.extend(e.finish());
    frame(msg::EXTENDED, &body)
}

fn metadata_request(piece: i64) -> Vec<u8> {
    let mut e = Encoder::new();
    e.begin_dict()
        .bytes(b"msg_type")
        .int(0)
        .bytes(b"piece")
        .int(piece)
        .end();
    let mut body = vec![crate::wire::OUR_UT_METADATA];
    body.extend(e.finish());
    frame(msg::EXTENDED, &body)
}

#[test]
fn serves_metadata_that_hashes_to_the_info_hash() {
    // 2,000 pieces: 40,000 bytes of hashes, three metadata pieces.
    let t = Bytes::new(2000 * 16384, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&ext_handshake_with_metadata(3));
    assert_eq!(h.s.summary().client_version.as_deref(), Some("libtorrent 2.0"));
    let mut metadata = Vec::new();
    for piece in 0..3 {
        h.feed(&metadata_request(piece));
        let msgs = h.drain_messages();
        assert_eq!(msgs.len(), 1);
        let (id, body) = &msgs[0];
        assert_eq!((*id, body[0]), (msg::EXTENDED, 3), "sent with the peer's id");
        let (dict, used) = bencode::decode_prefix(&body[1..]).unwrap();
        assert_eq!(dict.get(b"msg_type").unwrap().as_int(), Some(1));
        assert_eq!(
            dict.get(b"total_size").unwrap().as_int(),
            Some((&t).metadata_len() as i64)
        );
        metadata.extend_from_slice(&body[1 + used..]);
    }
    let digest: [u8; 20] = Sha1::digest(&metadata).into();
    assert_eq!(digest, t.info_hash);
    assert!(!h.s.is_closed());
    for bad in [3, -1, i64::MAX] {
        let mut h = Harness::new(&t, true, true);
        h.feed(&ext_handshake_with_metadata(3));
        h.feed(&metadata_request(bad));
        let msgs = h.drain_messages();
        let dict = bencode::decode(&msgs[0].1[1..]).unwrap();
        assert_eq!(dict.get(b"msg_type").unwrap().as_int(), Some(2));
        let reason = CloseReason::InvalidMetadataRequest(bad);
        assert_eq!(h.s.close_reason(), Some(&reason));
    }
}

#[test]
fn metadata_request_without_extension_handshake_closes() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&metadata_request(0));
    assert!(matches!(
        h.s.close_reason(),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

#[test]
fn timeouts_for_every_state() {
    let t = Bytes::new(40_000, 16384);
    let limits = SessionLimits::default();
    let start = Instant::now();
    // Half-open: a few bytes of handshake, then nothing.
    let mut s: PeerSession<&Bytes> = PeerSession::new(limits.clone(), local(), ip(), start);
    s.handle_input(&[0x13, b'B'], start);
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, start + limits.handshake_timeout);
    s.handle_timeout(deadline);
    assert_eq!(s.close_reason(), Some(&CloseReason::HandshakeTimeout));

    // Established: keep-alives go out, silence from the peer ends it.
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::INTERESTED, &[]));
    let mut now = h.now;
    let mut keepalives = 0;
    while !h.s.is_closed() {
        now = h.s.poll_timeout().unwrap();
        h.s.handle_timeout(now);
        let out = h.s.poll_transmit().to_vec();
        if out == [0, 0, 0, 0] {
            keepalives += 1;
        }
        h.s.consume_transmit(out.len(), now);
    }
    assert_eq!(h.s.close_reason(), Some(&CloseReason::IdleTimeout));
    assert!(keepalives >= 2);
    assert!(now >= h.now + limits.idle_timeout);

    // Connected but wanting nothing, while sending keep-alives.
    let mut h = Harness::new(&t, true, true);
    let mut now = h.now;
    while !h.s.is_closed() {
        now += Duration::from_secs(60);
        h.s.handle_input(&[0, 0, 0, 0], now);
        h.s.handle_timeout(now);
    }
    assert_eq!(h.s.close_reason(), Some(&CloseReason::Uninterested));
}

#[test]
fn a_peer_that_stops_reading_is_dropped_without_busy_waking() {
    let t = Bytes::new(1 << 20, 16384);
    let mut h = Harness::new(&t, true, true);
    h.interested_and_unchoked();
    for i in 0..8 {
        h.feed(&request(i, 0, 16384));
    }
    // The driver could write nothing: output stays pending.
    assert!(!h.s.poll_transmit().is_empty());
    let mut now = h.now;
    let mut wakeups = 0;
    while !h.s.is_closed() {
        let next = h.s.poll_timeout().unwrap();
        assert!(next > now || wakeups == 0, "timer must move forward");
        now = next;
        // The peer keeps sending keep-alives, so only the send side stalls.
        h.s.handle_input(&[0, 0, 0, 0], now);
        h.s.handle_timeout(now);
        wakeups += 1;
        assert!(wakeups < 100, "woke {wakeups} times");
    }
    assert_eq!(h.s.close_reason(), Some(&CloseReason::SendStalled));
}

#[test]
fn rejects_for_a_peer_that_never_reads_are_capped() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    // Choked: every request earns a 17-byte reject that nobody reads.
    let flood: Vec<u8> = (0..300_000).flat_map(|_| request(0, 0, 16384)).collect();
    h.feed(&flood);
    assert_eq!(h.s.close_reason(), Some(&CloseReason::SendBufferFull));
    assert!(h.s.poll_transmit().len() <= SessionLimits::default().max_send_buffer + 17);
}

#[test]
fn metadata_for_a_peer_that_never_reads_is_capped_near_the_metadata_size() {
    // 2,000 pieces: 40,000 bytes of metadata, three pieces.
    let t = Bytes::new(2000 * 16384, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&ext_handshake_with_metadata(3));
    // Every piece, as crawlers ask: served.
    for piece in 0..3 {
        h.feed(&metadata_request(piece));
    }
    assert!(!h.s.is_closed());
    // The same piece again and again, reading nothing.
    let flood: Vec<u8> = (0..256).flat_map(|_| metadata_request(0)).collect();
    h.feed(&flood);
    assert_eq!(h.s.close_reason(), Some(&CloseReason::SendBufferFull));
    let held = h.s.poll_transmit().len();
    let cap = (&t).metadata_len() + SessionLimits::default().send_watermark + 16_384 + 64;
    assert!(held <= cap, "{held} bytes held, cap {cap}");
}

#[test]
fn extended_messages_need_the_bep10_bit() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, false);
    h.feed(&ext_handshake_with_metadata(3));
    assert!(matches!(
        h.s.close_reason(),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

#[test]
fn only_written_unique_blocks_count() {
    // 32 KiB pieces: two blocks each.
    let t = Bytes::new(100_000, 32768);
    let mut h = Harness::new(&t, true, true);
    h.interested_and_unchoked();
    for _ in 0..3 {
        h.feed(&request(0, 0, 16384));
    }
    h.drain();
    let s = h.s.summary();
    assert_eq!(s.bytes_sent, 3 * 16384, "bytes served, duplicates included");
    assert_eq!(
        (s.pieces_sent, s.pieces_complete),
        (0, 0),
        "one block of piece 0 is not the piece"
    );
    h.feed(&request(0, 16384, 16384));
    h.drain();
    assert_eq!(h.s.summary().pieces_sent, 1);
    // Queued but never written: not sent.
    h.feed(&request(1, 0, 16384));
    assert!(!h.s.poll_transmit().is_empty());
    h.s.close(CloseReason::PeerClosed);
    assert_eq!(h.s.summary().bytes_sent, 4 * 16384);
}

#[test]
fn partly_written_messages_are_credited_when_finished() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.interested_and_unchoked();
    h.feed(&request(0, 0, 16384));
    let n = h.s.poll_transmit().len();
    h.s.consume_transmit(n - 1, h.now);
    assert_eq!(h.s.summary().bytes_sent, 0);
    h.s.consume_transmit(1, h.now);
    assert_eq!(h.s.summary().bytes_sent, 16384);
}

#[test]
fn an_unchoked_peer_that_asks_for_nothing_gives_its_slot_back() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.interested_and_unchoked();
    let limits = SessionLimits::default();
    let mut now = h.now;
    // Keep-alives keep the connection, but not the slot.
    while h.s.is_unchoked() {
        now = h.s.poll_timeout().unwrap();
        h.s.handle_input(&[0, 0, 0, 0], now);
        h.s.handle_timeout(now);
    }
    assert_eq!(now, h.now + limits.unchoked_idle_timeout);
    assert!(h.drain_messages().contains(&(msg::CHOKE, vec![])));
    assert!(!h.s.wants_unchoke(), "cooling down");
    let later = now + limits.unchoked_idle_timeout;
    h.s.handle_input(&[0, 0, 0, 0], later);
    h.s.handle_timeout(later);
    assert!(h.s.wants_unchoke(), "may have a slot again");
}

#[test]
fn a_peer_dribbling_partial_frames_still_times_out() {
    let t = Bytes::new(40_000, 16384);
    let mut h = Harness::new(&t, true, true);
    h.feed(&frame(msg::INTERESTED, &[]));
    let limits = SessionLimits::default();
    // A frame that announces 100 bytes, delivered one byte a minute.
    let mut now = h.now;
    h.s.handle_input(&100u32.to_be_bytes(), now);
    while !h.s.is_closed() {
        now += Duration::from_secs(60);
        h.s.handle_input(&[1], now);
        h.s.handle_timeout(now);
    }
    assert_eq!(h.s.close_reason(), Some(&CloseReason::IdleTimeout));
    assert!(now <= h.now + limits.idle_timeout + Duration::from_secs(60));
}

#[test]
fn random_input_never_panics() {
    // A cheap deterministic fuzz pass; the cargo-fuzz targets go further.
    let t = Bytes::new(100_000, 16384);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2_000 {
        let mut h = Harness::new(&t, next() % 2 == 0, next() % 2 == 0);
        h.feed(&frame(msg::INTERESTED, &[]));
        h.s.unchoke(h.now);
        for _ in 0..20 {
            let len = (next() % 40) as usize;
            let id = (next() % 24) as u8;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 3 == 0 && len >= 12 {
                body.truncate(12);
            }
            h.feed(&frame(id, &body));
            h.drain();
            if h.s.is_closed() {
                break;
            }
        }
    }
}
