//! What sits between the socket and the peer session: plain BitTorrent, or
//! Message Stream Encryption in front of it.
//!
//! The first bytes decide. A plain handshake starts with
//! `\x13BitTorrent protocol`; anything that departs from that prefix is
//! taken as an MSE opener (a Diffie-Hellman key). Under MSE the session's
//! output is copied, encrypted, into a buffer of our own, one batch at a
//! time, so the session's send watermark still bounds what is in flight.

use crate::decoys::{Decoy, DecoyTable};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_bittorrent::mse::{Method, MseResponder};
use warnseed_bittorrent::session::{CloseReason, PeerSession};
use warnseed_bittorrent::wire::PROTOCOL_HEADER;
use warnseed_ledger::Transport;

enum Kind {
    Undecided,
    Plain,
    Mse(Box<MseResponder>),
}

pub(crate) struct Framing {
    kind: Kind,
    /// Opening bytes while undecided (at most 20).
    sniff: Vec<u8>,
    /// Encrypted bytes waiting for the socket (MSE only).
    wire: Vec<u8>,
    wire_pos: usize,
    last_progress: Instant,
}

impl Framing {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            kind: Kind::Undecided,
            sniff: Vec::new(),
            wire: Vec::new(),
            wire_pos: 0,
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
        table: &Arc<DecoyTable>,
        now: Instant,
    ) {
        if let Kind::Undecided = self.kind {
            let take = data.len().min(PROTOCOL_HEADER.len() - self.sniff.len());
            self.sniff.extend_from_slice(&data[..take]);
            let n = self.sniff.len();
            if self.sniff[..] != PROTOCOL_HEADER[..n] {
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

    fn route(
        &mut self,
        data: &[u8],
        session: &mut PeerSession<Decoy>,
        table: &Arc<DecoyTable>,
        now: Instant,
    ) {
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
                            .lookup_req2(&req2)
                            .map(|d| *warnseed_bittorrent::session::SeedContent::info_hash(&d));
                        result = r.resolve(info_hash);
                    }
                }
                self.wire.extend_from_slice(&r.take_output());
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
    pub(crate) fn transmit<'a>(&'a mut self, session: &'a mut PeerSession<Decoy>, now: Instant) -> &'a [u8] {
        match &mut self.kind {
            Kind::Mse(r) => {
                if self.wire_pos == self.wire.len() {
                    self.wire.clear();
                    self.wire_pos = 0;
                    if r.method().is_some() {
                        let pending = session.poll_transmit();
                        let n = pending.len();
                        if n > 0 {
                            self.wire.extend_from_slice(pending);
                            session.consume_transmit(n, now);
                            r.encrypt_outgoing(&mut self.wire);
                        }
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
            Kind::Mse(_) => self.wire_pos += n,
            _ => session.consume_transmit(n, now),
        }
    }

    /// Under MSE the session sees its output as sent once it is copied
    /// here, so stalls on this buffer are ours to detect.
    pub(crate) fn stall_deadline(&self, idle: Duration) -> Option<Instant> {
        (self.wire_pos < self.wire.len()).then(|| self.last_progress + idle)
    }
}
