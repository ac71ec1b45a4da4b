//! What sits between the socket and the peer session: plain BitTorrent, or
//! Message Stream Encryption in front of it.
//!
//! The first bytes decide. A plain handshake starts with
//! `\x13BitTorrent protocol`; anything that departs from that prefix is
//! taken as an MSE opener (a Diffie-Hellman key). Under MSE the session's
//! output is copied, encrypted, into a buffer of our own; the session is
//! told its bytes are written only when the socket has taken them, so its
//! send watermark, stall timer and byte counts stay true.

use crate::decoys::{Decoy, LiveTable};
use std::time::{Duration, Instant};
use warnseed_bittorrent::metainfo::InfoHash;
use warnseed_bittorrent::mse::{Method, MseResponder};
use warnseed_bittorrent::session::{CloseReason, PeerSession};
use warnseed_bittorrent::wire::PROTOCOL_HEADER;
use warnseed_ledger::Transport;

/// Openers of protocols that are plainly not MSE: HTTP methods and a TLS
/// record header. (An MSE key is random; these prefixes are just as likely
/// in one as any other, 1 in 2^32 or less.)
const OTHER_PROTOCOLS: &[&[u8]] = &[
    b"GET ",
    b"POST",
    b"HEAD",
    b"PUT ",
    b"OPTI",
    b"CONN",
    b"\x16\x03\x01",
    b"\x16\x03\x03",
];

enum Kind {
    Undecided,
    Plain,
    Mse(Box<MseResponder>),
}

pub(crate) struct Framing {
    kind: Kind,
    /// Opening bytes while undecided (at most 20).
    sniff: Vec<u8>,
    /// Bytes waiting for the socket under MSE: first `handshake_left`
    /// bytes of MSE's own handshake, then encrypted session output.
    wire: Vec<u8>,
    wire_pos: usize,
    handshake_left: usize,
    /// Session bytes copied into `wire` but not yet written.
    owed: usize,
    last_progress: Instant,
}

impl Framing {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            kind: Kind::Undecided,
            sniff: Vec::new(),
            wire: Vec::new(),
            wire_pos: 0,
            handshake_left: 0,
            owed: 0,
            last_progress: now,
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        match &self.kind {
            Kind::Mse(r) => match r.method() {
                Some(Method::Rc4) => Transport::TcpMseRc4,
                _ => Transport::TcpMsePlain,
            },
            _ => Transport::Tcp,
        }
    }

    /// Routes bytes read from the socket to the session, through MSE when
    /// the peer opened with it.
    pub(crate) fn on_read(
        &mut self,
        data: &[u8],
        session: &mut PeerSession<Decoy>,
        table: &LiveTable,
        now: Instant,
    ) {
        if let Kind::Undecided = self.kind {
            let take = data.len().min(PROTOCOL_HEADER.len() - self.sniff.len());
            self.sniff.extend_from_slice(&data[..take]);
            let n = self.sniff.len();
            if self.sniff[..] != PROTOCOL_HEADER[..n] {
                if n < 4 && OTHER_PROTOCOLS.iter().any(|p| p.starts_with(&self.sniff)) {
                    return; // could still be HTTP or TLS: wait for more
                }
                if OTHER_PROTOCOLS.iter().any(|p| self.sniff.starts_with(p)) {
                    // Plainly not BitTorrent: no key exchange, close now.
                    session.close(CloseReason::NotBitTorrent);
                    return;
                }
                self.kind = Kind::Mse(Box::new(MseResponder::new()));
            } else if n == PROTOCOL_HEADER.len() {
                self.kind = Kind::Plain;
            } else {
                return; // need more bytes to tell
            }
            let opening = std::mem::take(&mut self.sniff);
            self.route(&opening, session, table, now);
            self.route(&data[take..], session, table, now);
            return;
        }
        self.route(data, session, table, now);
    }

    fn route(&mut self, data: &[u8], session: &mut PeerSession<Decoy>, table: &LiveTable, now: Instant) {
        if data.is_empty() {
            return;
        }
        match &mut self.kind {
            Kind::Undecided => unreachable!("decided before routing"),
            Kind::Plain => session.handle_input(data, now),
            Kind::Mse(r) => {
                let mut result = r.handle_input(data);
                if result.is_ok() {
                    if let Some(req2) = r.pending_lookup() {
                        let info_hash = table
                            .current()
                            .lookup_req2(&req2)
                            .map(|d| *warnseed_bittorrent::session::SeedContent::info_hash(&d));
                        result = r.resolve(info_hash);
                    }
                }
                let handshake = r.take_output();
                self.handshake_left += handshake.len();
                self.wire.extend_from_slice(&handshake);
                match result {
                    Err(warnseed_bittorrent::mse::MseError::UnknownTorrent) => {
                        session.close(CloseReason::UnknownInfoHash)
                    }
                    Err(e) => session.close(CloseReason::Encryption(e.to_string())),
                    Ok(()) => {
                        let plain = r.take_plain();
                        if !plain.is_empty() {
                            session.handle_input(&plain, now);
                        }
                    }
                }
            }
        }
    }

    /// Bytes to write to the socket now.
    pub(crate) fn transmit<'a>(&'a mut self, session: &'a mut PeerSession<Decoy>) -> &'a [u8] {
        match &mut self.kind {
            Kind::Mse(r) => {
                if r.method().is_some() {
                    let pending = session.poll_transmit();
                    if pending.len() > self.owed {
                        // Drop what is written before appending, so a slow
                        // reader's buffer stays near the session watermark.
                        if self.wire_pos > 0 {
                            self.wire.drain(..self.wire_pos);
                            self.wire_pos = 0;
                        }
                        let start = self.wire.len();
                        self.wire.extend_from_slice(&pending[self.owed..]);
                        self.owed = pending.len();
                        r.encrypt_outgoing(&mut self.wire[start..]);
                    }
                }
                &self.wire[self.wire_pos..]
            }
            _ => session.poll_transmit(),
        }
    }

    /// `n` bytes of what [`transmit`](Self::transmit) returned were written.
    pub(crate) fn wrote(&mut self, n: usize, session: &mut PeerSession<Decoy>, now: Instant) {
        if n > 0 {
            self.last_progress = now;
        }
        match self.kind {
            Kind::Mse(_) => {
                self.wire_pos += n;
                let handshake = n.min(self.handshake_left);
                self.handshake_left -= handshake;
                let from_session = n - handshake;
                self.owed -= from_session;
                session.consume_transmit(from_session, now);
            }
            _ => session.consume_transmit(n, now),
        }
    }

    /// The info hash an MSE peer named by req2, to check against the one in
    /// its BitTorrent handshake.
    pub(crate) fn mse_info_hash(&self) -> Option<&InfoHash> {
        match &self.kind {
            Kind::Mse(r) => r.info_hash(),
            _ => None,
        }
    }

    /// Under MSE the handshake bytes are ours to watch for a stall (the
    /// session watches its own output).
    pub(crate) fn stall_deadline(&self, idle: Duration) -> Option<Instant> {
        (self.handshake_left > 0).then(|| self.last_progress + idle)
    }
}
