//! The seeding side of one peer connection, as a sans-IO state machine.
//!
//! The driver feeds received bytes with [`PeerSession::handle_input`], writes
//! whatever [`PeerSession::poll_transmit`] returns, calls
//! [`PeerSession::handle_timeout`] when [`PeerSession::poll_timeout`] passes,
//! and resolves the info hash of the handshake ([`PeerSession::pending_lookup`])
//! against the decoys it seeds. The session never touches a socket or a clock,
//! so every case below is a unit test that feeds bytes and instants.
//!
//! Every length read from the peer is checked before it is used: frames over
//! [`SessionLimits::max_message_len`] close the connection before anything is
//! buffered for them, and requests are bounded in size, position and number.

use crate::bencode::{self, Encoder};
use crate::metainfo::{piece_size, InfoHash};
use crate::wire::{self, msg, write, Handshake, Message, HANDSHAKE_LEN, MAX_BLOCK, METADATA_PIECE};
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a seeded torrent must offer the session. Implementations serve bytes
/// from shared memory; `read` must append exactly `len` bytes.
pub trait SeedContent {
    fn info_hash(&self) -> &InfoHash;
    fn total_length(&self) -> u64;
    fn piece_length(&self) -> u32;
    fn piece_count(&self) -> u32;
    /// Length of the bencoded info dictionary (`metadata_size`).
    fn metadata_len(&self) -> usize;
    /// Appends bytes `start..end` of the bencoded info dictionary to `out`,
    /// built on demand (nothing per session is cached).
    fn metadata_range(&self, start: usize, end: usize, out: &mut Vec<u8>);
    /// Appends bytes `offset..offset + len` of the file to `out`.
    fn read(&self, offset: u64, len: u32, out: &mut Vec<u8>);
}

#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// From accept to a complete handshake.
    pub handshake_timeout: Duration,
    /// Longest silence from the peer (clients send keep-alives every ~2 min).
    pub idle_timeout: Duration,
    /// Longest time a peer may stay connected without wanting anything.
    pub uninterested_timeout: Duration,
    /// An unchoked peer that requests nothing for this long gives its
    /// upload slot back, and waits as long before it may have one again.
    pub unchoked_idle_timeout: Duration,
    /// We send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Frames longer than this close the connection (checked on the prefix).
    pub max_message_len: u32,
    /// Outstanding block requests per peer; more are rejected.
    pub max_queued_requests: usize,
    /// Piece data is generated only while less than this is waiting to go out.
    pub send_watermark: usize,
    /// A peer that lets more than this pile up unread is dropped.
    pub max_send_buffer: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(240),
            uninterested_timeout: Duration::from_secs(300),
            unchoked_idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(90),
            max_message_len: 256 * 1024,
            max_queued_requests: 512,
            send_watermark: 256 * 1024,
            max_send_buffer: 4 * 1024 * 1024,
        }
    }
}

/// How we present ourselves to peers.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    pub peer_id: [u8; 20],
    /// BEP 10 `v`.
    pub client_version: String,
    /// BEP 10 `p`: our listen port.
    pub listen_port: u16,
}

/// Why a session ended. `code()` is the stable string the ledger stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    NotBitTorrent,
    UnknownInfoHash,
    HandshakeTimeout,
    IdleTimeout,
    Uninterested,
    MessageTooLong(u32),
    Malformed(&'static str),
    InvalidRequest {
        index: u32,
        begin: u32,
        length: u32,
    },
    InvalidMetadataRequest(i64),
    TooManyRequests,
    UnexpectedMessage(&'static str),
    SendBufferFull,
    /// We had data to send and the peer read none of it for too long.
    SendStalled,
    /// The Message Stream Encryption handshake failed.
    Encryption(String),
    PeerComplete,
    /// The remote closed or reset the connection.
    PeerClosed,
    Io(String),
    Shutdown,
    /// Refused before the handshake by a connection cap.
    ConnectionLimit,
}

impl CloseReason {
    pub fn code(&self) -> &'static str {
        match self {
            CloseReason::NotBitTorrent => "not_bittorrent",
            CloseReason::UnknownInfoHash => "unknown_info_hash",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Uninterested => "uninterested",
            CloseReason::MessageTooLong(_) => "message_too_long",
            CloseReason::Malformed(_) => "malformed_message",
            CloseReason::InvalidRequest { .. } => "invalid_request",
            CloseReason::InvalidMetadataRequest(_) => "invalid_metadata_request",
            CloseReason::TooManyRequests => "too_many_requests",
            CloseReason::UnexpectedMessage(_) => "unexpected_message",
            CloseReason::SendBufferFull => "send_buffer_full",
            CloseReason::SendStalled => "send_stalled",
            CloseReason::Encryption(_) => "encryption_failed",
            CloseReason::PeerComplete => "peer_complete",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Io(_) => "io_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ConnectionLimit => "connection_limit",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::MessageTooLong(n) => write!(f, "message_too_long ({n} bytes)"),
            CloseReason::Malformed(what) => write!(f, "malformed_message ({what})"),
            CloseReason::InvalidRequest { index, begin, length } => {
                write!(
                    f,
                    "invalid_request (piece {index}, offset {begin}, length {length})"
                )
            }
            CloseReason::InvalidMetadataRequest(piece) => {
                write!(f, "invalid_metadata_request (piece {piece})")
            }
            CloseReason::UnexpectedMessage(what) => write!(f, "unexpected_message ({what})"),
            CloseReason::Io(e) => write!(f, "io_error ({e})"),
            CloseReason::Encryption(e) => write!(f, "encryption_failed ({e})"),
            other => f.write_str(other.code()),
        }
    }
}

/// What the session learned and did; the driver turns it into a ledger row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionSummary {
    pub info_hash: Option<InfoHash>,
    pub peer_id: Option<[u8; 20]>,
    /// BEP 10 `v`, sanitised and capped.
    pub client_version: Option<String>,
    pub supports_fast: bool,
    pub supports_extensions: bool,
    pub piece_count: u32,
    /// Payload bytes of piece messages written to the socket (a block sent
    /// twice counts twice; queued but unwritten bytes do not count).
    pub bytes_sent: u64,
    /// Distinct pieces every 16 KiB block of which was written to the socket.
    pub pieces_sent: u32,
    pub metadata_pieces_sent: u32,
    /// Pieces the peer said it had when it first told us (bitfield/have_*).
    pub peer_pieces_initial: Option<u32>,
    /// Pieces the peer has now, from bitfield, have and have_all.
    pub peer_pieces: u32,
    /// Pieces the peer holds by its own word or because we wrote every block
    /// of them to its socket in this session. Clients often close the moment they
    /// finish, before their last HAVE leaves, so the peer's word alone
    /// undercounts finished downloads.
    pub pieces_complete: u32,
}

impl SessionSummary {
    /// The peer has every piece of the decoy.
    pub fn completed(&self) -> bool {
        self.piece_count > 0 && self.pieces_complete == self.piece_count
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's 68-byte handshake.
    Handshake,
    /// Handshake read; the driver must look up the info hash.
    Lookup,
    Established,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockRequest {
    index: u32,
    begin: u32,
    length: u32,
}

/// Bits of the pieces the peer has.
#[derive(Default)]
struct PieceSet {
    words: Vec<u64>,
    count: u32,
}

impl PieceSet {
    fn new(n: u32) -> Self {
        Self {
            words: vec![0; n.div_ceil(64) as usize],
            count: 0,
        }
    }
    fn insert(&mut self, i: u32) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.count += 1;
        }
    }
    fn contains(&self, i: u32) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn fill(&mut self, n: u32) {
        for i in 0..n {
            self.insert(i);
        }
    }
    fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
}

pub struct PeerSession<T> {
    limits: SessionLimits,
    local: LocalIdentity,
    remote_ip: IpAddr,
    phase: Phase,
    close: Option<CloseReason>,
    torrent: Option<T>,
    handshake: Option<Handshake>,
    recv: Vec<u8>,
    send: Vec<u8>,
    send_pos: usize,
    am_choking: bool,
    peer_interested: bool,
    requests: VecDeque<BlockRequest>,
    peer_has: PieceSet,
    /// Aligned 16 KiB blocks of the torrent written to the socket, one bit
    /// each, allocated on the first delivery (at most 512 KiB at 64 GiB).
    delivered: Vec<u64>,
    /// Piece messages queued but not yet written: (end of the message in
    /// the stream of bytes we send, the request). Credited on write.
    in_flight: VecDeque<(u64, BlockRequest)>,
    /// Bytes handed to the driver and written, since the session began.
    written_total: u64,
    peer_ut_metadata: u8,
    summary: SessionSummary,
    started: Instant,
    /// Last complete message (or handshake) from the peer: a peer that
    /// dribbles partial frames does not look alive.
    last_recv: Instant,
    last_send: Instant,
    last_wanted: Instant,
    last_request: Instant,
    /// After giving an idle slot back, not unchoked again before this.
    unchoke_not_before: Option<Instant>,
}

impl<T: SeedContent> PeerSession<T> {
    pub fn new(limits: SessionLimits, local: LocalIdentity, remote_ip: IpAddr, now: Instant) -> Self {
        Self {
            limits,
            local,
            remote_ip,
            phase: Phase::Handshake,
            close: None,
            torrent: None,
            handshake: None,
            recv: Vec::new(),
            send: Vec::new(),
            send_pos: 0,
            am_choking: true,
            peer_interested: false,
            requests: VecDeque::new(),
            peer_has: PieceSet::default(),
            delivered: Vec::new(),
            in_flight: VecDeque::new(),
            written_total: 0,
            peer_ut_metadata: 0,
            summary: SessionSummary::default(),
            started: now,
            last_recv: now,
            last_send: now,
            last_wanted: now,
            last_request: now,
            unchoke_not_before: None,
        }
    }

    pub fn summary(&self) -> SessionSummary {
        let mut summary = self.summary.clone();
        if self.delivered.is_empty() {
            // Nothing delivered (metadata fetches, peers that only look):
            // complete pieces are the peer's own, and there is no need to
            // walk thousands of pieces for every crawler's ledger record.
            summary.pieces_sent = 0;
            summary.pieces_complete = self.peer_has.count;
        } else if let Some(t) = &self.torrent {
            let blocks_per_piece = t.piece_length() / MAX_BLOCK;
            let total_blocks = t.total_length().div_ceil(u64::from(MAX_BLOCK));
            let delivered = |i: u32| {
                let first = u64::from(i) * u64::from(blocks_per_piece);
                let last = (first + u64::from(blocks_per_piece)).min(total_blocks);
                (first..last).all(|b| self.delivered[(b / 64) as usize] & (1 << (b % 64)) != 0)
            };
            let (mut sent, mut complete) = (0u32, 0u32);
            for i in 0..summary.piece_count {
                let d = delivered(i);
                sent += u32::from(d);
                complete += u32::from(d || self.peer_has.contains(i));
            }
            summary.pieces_sent = sent;
            summary.pieces_complete = complete;
        }
        summary
    }

    /// Credits a piece message once all of it has reached the socket.
    fn credit(&mut self, r: BlockRequest) {
        self.summary.bytes_sent += u64::from(r.length);
        let Some(t) = &self.torrent else { return };
        let piece_length = t.piece_length();
        let size = piece_size(t.total_length(), piece_length, r.index);
        let whole_block = r.begin.is_multiple_of(MAX_BLOCK) && r.length == (size - r.begin).min(MAX_BLOCK);
        if !whole_block {
            return; // unaligned requests count as bytes, not as blocks
        }
        if self.delivered.is_empty() {
            let blocks = t.total_length().div_ceil(u64::from(MAX_BLOCK));
            self.delivered = vec![0; blocks.div_ceil(64) as usize];
        }
        let block =
            (u64::from(r.index) * u64::from(piece_length) + u64::from(r.begin)) / u64::from(MAX_BLOCK);
        self.delivered[(block / 64) as usize] |= 1 << (block % 64);
    }
    pub fn torrent(&self) -> Option<&T> {
        self.torrent.as_ref()
    }
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close.as_ref()
    }
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    /// The info hash the peer asked for, once its handshake is complete and
    /// until the driver calls [`attach`](Self::attach) or
    /// [`refuse`](Self::refuse).
    pub fn pending_lookup(&self) -> Option<&InfoHash> {
        match self.phase {
            Phase::Lookup => self.handshake.as_ref().map(|h| &h.info_hash),
            _ => None,
        }
    }

    /// Ends the session. The first reason wins. Output already queued (a
    /// reject explaining the close, say) stays available from
    /// [`poll_transmit`](Self::poll_transmit) for a best-effort flush.
    pub fn close(&mut self, reason: CloseReason) {
        if self.close.is_none() {
            self.close = Some(reason);
        }
        self.phase = Phase::Closed;
        self.requests.clear();
    }

    pub fn refuse(&mut self, reason: CloseReason) {
        self.close(reason);
    }

    /// Attaches the decoy the handshake named and queues our side of the
    /// opening: handshake, BEP 10 handshake, have_all (or a full bitfield).
    pub fn attach(&mut self, torrent: T, now: Instant) {
        let Some(hs) = self.handshake else { return };
        if self.phase != Phase::Lookup {
            return;
        }
        let n = torrent.piece_count();
        self.summary.piece_count = n;
        self.peer_has = PieceSet::new(n);
        let ours = Handshake {
            reserved: Handshake::our_reserved(),
            info_hash: hs.info_hash,
            peer_id: self.local.peer_id,
        };
        self.send.extend_from_slice(&ours.encode());
        if hs.supports_extensions() {
            let payload = self.extension_handshake(torrent.metadata_len());
            write::extended(&mut self.send, 0, &payload, &[]);
        }
        if hs.supports_fast() {
            write::simple(&mut self.send, msg::HAVE_ALL);
        } else {
            write::bitfield_all(&mut self.send, n);
        }
        self.torrent = Some(torrent);
        self.phase = Phase::Established;
        self.last_wanted = now;
        self.parse_messages(now);
    }

    fn extension_handshake(&self, metadata_size: usize) -> Vec<u8> {
        let mut e = Encoder::with_capacity(160);
        e.begin_dict();
        e.bytes(b"m")
            .begin_dict()
            .bytes(b"ut_metadata")
            .int(i64::from(wire::OUR_UT_METADATA))
            .bytes(b"ut_pex")
            .int(i64::from(wire::OUR_UT_PEX))
            .end();
        e.bytes(b"metadata_size").int(metadata_size as i64);
        e.bytes(b"p").int(i64::from(self.local.listen_port));
        e.bytes(b"reqq").int(self.limits.max_queued_requests as i64);
        e.bytes(b"v").bytes(self.local.client_version.as_bytes());
        match self.remote_ip {
            IpAddr::V4(ip) => e.bytes(b"yourip").bytes(&ip.octets()),
            IpAddr::V6(ip) => e.bytes(b"yourip").bytes(&ip.octets()),
        };
        e.end();
        e.finish()
    }

    /// The peer is interested and we still choke it: the driver should
    /// [`unchoke`](Self::unchoke) it when an upload slot is free.
    pub fn wants_unchoke(&self) -> bool {
        self.phase == Phase::Established
            && self.peer_interested
            && self.am_choking
            && self.unchoke_not_before.is_none()
    }

    /// We unchoke a peer that no longer wants anything: the driver should
    /// [`choke`](Self::choke) it and give its slot to another.
    pub fn holds_idle_slot(&self) -> bool {
        self.phase == Phase::Established
            && !self.am_choking
            && !self.peer_interested
            && self.requests.is_empty()
    }

    pub fn is_unchoked(&self) -> bool {
        !self.am_choking
    }

    pub fn unchoke(&mut self, now: Instant) {
        if self.phase == Phase::Established && self.am_choking {
            self.am_choking = false;
            self.last_request = now;
            write::simple(&mut self.send, msg::UNCHOKE);
        }
    }

    pub fn choke(&mut self) {
        if self.phase == Phase::Established && !self.am_choking {
            self.am_choking = true;
            write::simple(&mut self.send, msg::CHOKE);
            // Choking discards queued requests; fast peers are told so.
            let fast = self.summary.supports_fast;
            for r in std::mem::take(&mut self.requests) {
                if fast {
                    write::triple(&mut self.send, msg::REJECT, r.index, r.begin, r.length);
                }
            }
        }
    }

    /// Feeds bytes read from the socket.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.phase == Phase::Closed || data.is_empty() {
            return;
        }
        self.recv.extend_from_slice(data);
        match self.phase {
            Phase::Handshake => {
                if !wire::header_prefix_ok(&self.recv) {
                    self.close(CloseReason::NotBitTorrent);
                    return;
                }
                if self.recv.len() >= HANDSHAKE_LEN {
                    let bytes: [u8; HANDSHAKE_LEN] =
                        self.recv[..HANDSHAKE_LEN].try_into().expect("length checked");
                    let hs = Handshake::decode(&bytes).expect("prefix checked");
                    self.recv.drain(..HANDSHAKE_LEN);
                    self.summary.info_hash = Some(hs.info_hash);
                    self.summary.peer_id = Some(hs.peer_id);
                    self.summary.supports_fast = hs.supports_fast();
                    self.summary.supports_extensions = hs.supports_extensions();
                    self.handshake = Some(hs);
                    self.phase = Phase::Lookup;
                    self.last_recv = now;
                }
            }
            // Bytes after the handshake wait until the decoy is attached.
            Phase::Lookup => {
                if self.recv.len() > self.limits.max_message_len as usize + 4 {
                    self.close(CloseReason::MessageTooLong(self.recv.len() as u32));
                }
            }
            Phase::Established => self.parse_messages(now),
            Phase::Closed => {}
        }
    }

    fn parse_messages(&mut self, now: Instant) {
        // Frames are parsed in place: the buffer is taken out of `self` so
        // handlers may borrow `self` mutably without a copy per message.
        let mut recv = std::mem::take(&mut self.recv);
        let mut consumed = 0;
        while self.phase == Phase::Established {
            let rest = &recv[consumed..];
            if rest.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if len > self.limits.max_message_len {
                self.close(CloseReason::MessageTooLong(len));
                break;
            }
            let end = 4 + len as usize;
            if rest.len() < end {
                break;
            }
            consumed += end;
            self.last_recv = now;
            match Message::parse(&rest[4..end]) {
                Ok(m) => self.on_message(m, now),
                Err(e) => self.close(CloseReason::Malformed(e.0)),
            }
            // Rejects and metadata answers are queued without waiting for
            // the socket; a peer that sends requests but never reads must
            // not grow our buffer past the cap.
            if self.unsent() > self.limits.max_send_buffer {
                self.close(CloseReason::SendBufferFull);
            }
        }
        recv.drain(..consumed.min(recv.len()));
        self.recv = recv;
    }

    fn on_message(&mut self, m: Message<'_>, now: Instant) {
        let n = self.summary.piece_count;
        let fast = self.summary.supports_fast;
        match m {
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Port(_)
            | Message::Unknown(_) => {}
            Message::Interested => {
                self.peer_interested = true;
                self.last_wanted = now;
            }
            Message::NotInterested => self.peer_interested = false,
            Message::Have(i) => {
                if i >= n {
                    return self.close(CloseReason::Malformed("have index out of range"));
                }
                // BEP 3: a peer with nothing may skip its bitfield; a HAVE
                // before any says it started with none.
                if self.summary.peer_pieces_initial.is_none() {
                    self.summary.peer_pieces_initial = Some(0);
                }
                self.peer_has.insert(i);
                self.note_peer_progress();
            }
            Message::Bitfield(bits) => {
                if bits.len() != n.div_ceil(8) as usize {
                    return self.close(CloseReason::Malformed("bitfield length"));
                }
                self.peer_has.clear();
                for i in 0..n {
                    if bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0 {
                        self.peer_has.insert(i);
                    }
                }
                self.note_peer_progress();
            }
            Message::HaveAll
            | Message::HaveNone
            | Message::Suggest(_)
            | Message::Reject { .. }
            | Message::AllowedFast(_)
                if !fast =>
            {
                self.close(CloseReason::UnexpectedMessage(
                    "fast extension message without BEP 6",
                ))
            }
            Message::HaveAll => {
                self.peer_has.fill(n);
                self.note_peer_progress();
            }
            Message::HaveNone => {
                self.peer_has.clear();
                self.note_peer_progress();
            }
            Message::Suggest(_) | Message::Reject { .. } | Message::AllowedFast(_) => {}
            Message::Request { index, begin, length } => self.on_request(index, begin, length, now),
            Message::Cancel { index, begin, length } => {
                let r = BlockRequest { index, begin, length };
                if let Some(pos) = self.requests.iter().position(|q| *q == r) {
                    self.requests.remove(pos);
                    // BEP 6: every request gets exactly one answer, a
                    // piece or a reject, cancelled ones included.
                    if fast {
                        write::triple(&mut self.send, msg::REJECT, index, begin, length);
                    }
                }
            }
            Message::Piece { .. } => self.close(CloseReason::UnexpectedMessage("piece sent to a seed")),
            Message::Extended { .. } if !self.summary.supports_extensions => {
                self.close(CloseReason::UnexpectedMessage("extended message without BEP 10"))
            }
            Message::Extended { id, payload } => self.on_extended(id, payload, now),
        }
    }

    fn note_peer_progress(&mut self) {
        self.summary.peer_pieces = self.peer_has.count;
        if self.summary.peer_pieces_initial.is_none() {
            self.summary.peer_pieces_initial = Some(self.peer_has.count);
        }
        if self.summary.piece_count > 0 && self.peer_has.count == self.summary.piece_count {
            // Two seeds have nothing to say to each other.
            self.close(CloseReason::PeerComplete);
        }
    }

    fn on_request(&mut self, index: u32, begin: u32, length: u32, now: Instant) {
        let torrent = self
            .torrent
            .as_ref()
            .expect("established sessions have a torrent");
        let valid = index < self.summary.piece_count
            && length > 0
            && length <= MAX_BLOCK
            && u64::from(begin) + u64::from(length)
                <= u64::from(piece_size(torrent.total_length(), torrent.piece_length(), index));
        let fast = self.summary.supports_fast;
        if !valid {
            // No correct client asks for bytes outside the torrent or blocks
            // over 16 KiB: reject (BEP 6) so the peer sees why, then drop it.
            if fast {
                write::triple(&mut self.send, msg::REJECT, index, begin, length);
            }
            return self.close(CloseReason::InvalidRequest { index, begin, length });
        }
        if self.am_choking {
            // BEP 3: requests while choked are dropped; BEP 6: and rejected.
            if fast {
                write::triple(&mut self.send, msg::REJECT, index, begin, length);
            }
            return;
        }
        if self.requests.len() >= self.limits.max_queued_requests {
            if fast {
                write::triple(&mut self.send, msg::REJECT, index, begin, length);
                return;
            }
            return self.close(CloseReason::TooManyRequests);
        }
        self.last_wanted = now;
        self.last_request = now;
        self.requests.push_back(BlockRequest { index, begin, length });
    }

    fn on_extended(&mut self, id: u8, payload: &[u8], now: Instant) {
        match id {
            0 => {
                let Ok(dict) = bencode::decode(payload) else {
                    return self.close(CloseReason::Malformed("extension handshake"));
                };
                if let Some(m) = dict.get(b"m") {
                    if let Some(v) = m.get(b"ut_metadata").and_then(|v| v.as_int()) {
                        self.peer_ut_metadata = u8::try_from(v).unwrap_or(0);
                    }
                }
                if let Some(v) = dict.get(b"v").and_then(|v| v.as_bytes()) {
                    self.summary.client_version = Some(sanitize_client_version(v));
                }
            }
            wire::OUR_UT_METADATA => self.on_metadata_message(payload, now),
            // PEX from a downloader tells us nothing we need; ignore it.
            _ => {}
        }
    }

    fn on_metadata_message(&mut self, payload: &[u8], now: Instant) {
        let Ok((dict, _)) = bencode::decode_prefix(payload) else {
            return self.close(CloseReason::Malformed("ut_metadata"));
        };
        let msg_type = dict.get(b"msg_type").and_then(|v| v.as_int());
        let piece = dict.get(b"piece").and_then(|v| v.as_int());
        let (Some(msg_type), Some(piece)) = (msg_type, piece) else {
            return self.close(CloseReason::Malformed("ut_metadata fields"));
        };
        if msg_type != 0 {
            return; // data or reject sent to us: we never ask
        }
        if self.peer_ut_metadata == 0 {
            return self.close(CloseReason::UnexpectedMessage(
                "ut_metadata request without a handshake id",
            ));
        }
        self.last_wanted = now;
        let torrent = self.torrent.as_ref().expect("established");
        let total = torrent.metadata_len();
        let pieces = total.div_ceil(METADATA_PIECE) as i64;
        let mut head = Encoder::with_capacity(64);
        if piece < 0 || piece >= pieces {
            head.begin_dict()
                .bytes(b"msg_type")
                .int(2)
                .bytes(b"piece")
                .int(piece)
                .end();
            write::extended(&mut self.send, self.peer_ut_metadata, &head.buf, &[]);
            // The peer was told metadata_size: asking past it is an error.
            return self.close(CloseReason::InvalidMetadataRequest(piece));
        }
        // A crawler asks for every piece at once, so the whole metadata may
        // wait unsent; a peer that asks for more than that while reading
        // nothing is making us hold memory for it (16 KiB for a 45-byte
        // request), on as many connections as it can open.
        if self.unsent() > total + self.limits.send_watermark {
            return self.close(CloseReason::SendBufferFull);
        }
        let start = piece as usize * METADATA_PIECE;
        let end = (start + METADATA_PIECE).min(total);
        head.begin_dict()
            .bytes(b"msg_type")
            .int(1)
            .bytes(b"piece")
            .int(piece)
            .bytes(b"total_size")
            .int(total as i64)
            .end();
        // The piece goes straight into the send buffer behind its header:
        // crawlers fetch metadata on fresh connections by the thousand a
        // second, and a copy through a buffer of its own costs an
        // allocation and 16 KiB of memcpy per piece. They also ask for every
        // piece at once, so room is made for this piece and the ones after
        // it (64 bytes covers a piece's framing): growing the buffer one
        // piece at a time would copy what it holds again for each.
        let later = (pieces - piece) as usize;
        self.send.reserve((total - start) + later * 64);
        write::extended(&mut self.send, self.peer_ut_metadata, &head.buf, &[]);
        let frame = self.send.len() - (6 + head.buf.len());
        let body = self.send.len();
        torrent.metadata_range(start, end, &mut self.send);
        let appended = self.send.len() - body;
        debug_assert_eq!(
            appended,
            end - start,
            "metadata_range appends exactly end - start bytes"
        );
        // Keep the frame self-consistent whatever the content appended.
        self.send.resize(body + (end - start), 0);
        let len = (2 + head.buf.len() + (end - start)) as u32;
        self.send[frame..frame + 4].copy_from_slice(&len.to_be_bytes());
        self.summary.metadata_pieces_sent += 1;
        if self.unsent() > self.limits.max_send_buffer {
            self.close(CloseReason::SendBufferFull);
        }
    }

    /// Unchoked, and nothing asked for is queued or on its way.
    fn unchoked_and_idle(&self) -> bool {
        !self.am_choking && self.requests.is_empty() && self.in_flight.is_empty() && self.unsent() == 0
    }

    fn unsent(&self) -> usize {
        self.send.len() - self.send_pos
    }

    /// Bytes to write now. Piece data is generated here, lazily, so at most
    /// about `send_watermark` bytes are buffered per peer.
    pub fn poll_transmit(&mut self) -> &[u8] {
        if self.phase == Phase::Established && !self.am_choking {
            while self.unsent() < self.limits.send_watermark {
                let Some(r) = self.requests.pop_front() else {
                    break;
                };
                let torrent = self.torrent.as_ref().expect("established");
                let offset = u64::from(r.index) * u64::from(torrent.piece_length()) + u64::from(r.begin);
                write::piece_header(&mut self.send, r.index, r.begin, r.length);
                torrent.read(offset, r.length, &mut self.send);
                let end = self.written_total + self.unsent() as u64;
                self.in_flight.push_back((end, r));
            }
        }
        &self.send[self.send_pos..]
    }

    /// The driver wrote `n` bytes of what `poll_transmit` returned. Piece
    /// messages count as sent only now, once fully written.
    pub fn consume_transmit(&mut self, n: usize, now: Instant) {
        let n = n.min(self.unsent());
        self.send_pos += n;
        self.written_total += n as u64;
        if n > 0 {
            self.last_send = now;
        }
        while let Some(&(end, r)) = self.in_flight.front() {
            if end > self.written_total {
                break;
            }
            self.in_flight.pop_front();
            self.credit(r);
        }
        if self.send_pos == self.send.len() {
            self.send.clear();
            self.send_pos = 0;
        } else if self.send_pos > 1 << 20 {
            self.send.drain(..self.send_pos);
            self.send_pos = 0;
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Handshake | Phase::Lookup => Some(self.started + self.limits.handshake_timeout),
            Phase::Established => {
                // With output pending, the send-side deadline is a stall
                // check, not a keep-alive: a peer that stops reading must
                // not wake us in a loop.
                let send_deadline = if self.unsent() == 0 {
                    self.last_send + self.limits.keepalive_interval
                } else {
                    self.last_send + self.limits.idle_timeout
                };
                let mut next = (self.last_recv + self.limits.idle_timeout)
                    .min(self.last_wanted + self.limits.uninterested_timeout)
                    .min(send_deadline);
                if self.unchoked_and_idle() {
                    next = next.min(self.last_request + self.limits.unchoked_idle_timeout);
                }
                if let Some(t) = self.unchoke_not_before {
                    next = next.min(t);
                }
                Some(next)
            }
            Phase::Closed => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Handshake | Phase::Lookup => {
                if now >= self.started + self.limits.handshake_timeout {
                    self.close(CloseReason::HandshakeTimeout);
                }
            }
            Phase::Established => {
                if now >= self.last_recv + self.limits.idle_timeout {
                    return self.close(CloseReason::IdleTimeout);
                }
                if self.unsent() > 0 && now >= self.last_send + self.limits.idle_timeout {
                    return self.close(CloseReason::SendStalled);
                }
                if now >= self.last_wanted + self.limits.uninterested_timeout {
                    if !self.peer_interested && self.requests.is_empty() {
                        return self.close(CloseReason::Uninterested);
                    }
                    // Interested peers re-arm the timer.
                    self.last_wanted = now;
                }
                if self.unchoked_and_idle() && now >= self.last_request + self.limits.unchoked_idle_timeout {
                    // Interested but asking for nothing: the slot goes to
                    // someone else for a while.
                    self.choke();
                    self.unchoke_not_before = Some(now + self.limits.unchoked_idle_timeout);
                }
                if self.unchoke_not_before.is_some_and(|t| now >= t) {
                    self.unchoke_not_before = None;
                }
                if self.unsent() == 0 && now >= self.last_send + self.limits.keepalive_interval {
                    write::keep_alive(&mut self.send);
                    // Count the keep-alive as sent so the timer re-arms even
                    // before the driver writes it.
                    self.last_send = now;
                }
            }
            Phase::Closed => {}
        }
    }
}

/// Keeps `v` printable and short: it is stored in the ledger and shown in
/// reports, and it comes from an untrusted peer.
fn sanitize_client_version(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(64)])
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
