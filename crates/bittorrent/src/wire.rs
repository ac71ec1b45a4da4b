//! Peer wire framing (BEP 3), fast extension (BEP 6) and extension protocol
//! (BEP 10) message layouts. Pure functions over byte slices.

use crate::metainfo::InfoHash;

/// `\x13BitTorrent protocol`: the first 20 bytes of every plain handshake.
pub const PROTOCOL_HEADER: &[u8; 20] = b"\x13BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Largest block a peer may request; every client uses 16 KiB.
pub const MAX_BLOCK: u32 = 16 * 1024;
/// ut_metadata transfers the info dictionary in 16 KiB pieces (BEP 9).
pub const METADATA_PIECE: usize = 16 * 1024;

pub mod msg {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0D;
    pub const HAVE_ALL: u8 = 0x0E;
    pub const HAVE_NONE: u8 = 0x0F;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

/// Our extension ids as advertised in our BEP 10 `m` dictionary; peers use
/// these when they send to us.
pub const OUR_UT_METADATA: u8 = 1;
pub const OUR_UT_PEX: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// Reserved bits we advertise: extension protocol and fast extension.
    pub fn our_reserved() -> [u8; 8] {
        let mut r = [0u8; 8];
        r[5] |= 0x10;
        r[7] |= 0x04;
        r
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..20].copy_from_slice(PROTOCOL_HEADER);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Parses a full 68-byte handshake. Callers check the header prefix
    /// incrementally with [`header_prefix_ok`] first.
    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Option<Self> {
        if &b[..20] != PROTOCOL_HEADER {
            return None;
        }
        let mut h = Handshake {
            reserved: [0; 8],
            info_hash: [0; 20],
            peer_id: [0; 20],
        };
        h.reserved.copy_from_slice(&b[20..28]);
        h.info_hash.copy_from_slice(&b[28..48]);
        h.peer_id.copy_from_slice(&b[48..68]);
        Some(h)
    }
}

/// True while the bytes seen so far could still be a plain BitTorrent
/// handshake. An encrypted (MSE) or non-BitTorrent opener fails within its
/// first bytes, and we close at once so the peer falls back to plain.
pub fn header_prefix_ok(seen: &[u8]) -> bool {
    let n = seen.len().min(20);
    seen[..n] == PROTOCOL_HEADER[..n]
}

/// One framed message, borrowed from the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(&'a [u8]),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        block: &'a [u8],
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    Port(u16),
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    AllowedFast(u32),
    Extended {
        id: u8,
        payload: &'a [u8],
    },
    /// An id we do not know; BEP 3 says to ignore it.
    Unknown(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0} message")]
pub struct MalformedMessage(pub &'static str);

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl<'a> Message<'a> {
    /// Parses the body of a frame (everything after the 4-byte length).
    pub fn parse(body: &'a [u8]) -> Result<Self, MalformedMessage> {
        let Some((&id, rest)) = body.split_first() else {
            return Ok(Message::KeepAlive);
        };
        let fixed = |n: usize, name: &'static str| {
            if rest.len() == n {
                Ok(())
            } else {
                Err(MalformedMessage(name))
            }
        };
        let triple = |name| -> Result<(u32, u32, u32), MalformedMessage> {
            fixed(12, name)?;
            Ok((be32(rest), be32(&rest[4..]), be32(&rest[8..])))
        };
        Ok(match id {
            msg::CHOKE => fixed(0, "choke").map(|_| Message::Choke)?,
            msg::UNCHOKE => fixed(0, "unchoke").map(|_| Message::Unchoke)?,
            msg::INTERESTED => fixed(0, "interested").map(|_| Message::Interested)?,
            msg::NOT_INTERESTED => fixed(0, "not interested").map(|_| Message::NotInterested)?,
            msg::HAVE => fixed(4, "have").map(|_| Message::Have(be32(rest)))?,
            msg::BITFIELD => Message::Bitfield(rest),
            msg::REQUEST => {
                let (index, begin, length) = triple("request")?;
                Message::Request { index, begin, length }
            }
            msg::PIECE => {
                if rest.len() < 8 {
                    return Err(MalformedMessage("piece"));
                }
                Message::Piece {
                    index: be32(rest),
                    begin: be32(&rest[4..]),
                    block: &rest[8..],
                }
            }
            msg::CANCEL => {
                let (index, begin, length) = triple("cancel")?;
                Message::Cancel { index, begin, length }
            }
            msg::PORT => {
                fixed(2, "port")?;
                Message::Port(u16::from_be_bytes([rest[0], rest[1]]))
            }
            msg::SUGGEST => fixed(4, "suggest").map(|_| Message::Suggest(be32(rest)))?,
            msg::HAVE_ALL => fixed(0, "have all").map(|_| Message::HaveAll)?,
            msg::HAVE_NONE => fixed(0, "have none").map(|_| Message::HaveNone)?,
            msg::REJECT => {
                let (index, begin, length) = triple("reject")?;
                Message::Reject { index, begin, length }
            }
            msg::ALLOWED_FAST => fixed(4, "allowed fast").map(|_| Message::AllowedFast(be32(rest)))?,
            msg::EXTENDED => {
                let (&id, payload) = rest.split_first().ok_or(MalformedMessage("extended"))?;
                Message::Extended { id, payload }
            }
            other => Message::Unknown(other),
        })
    }
}

/// Writers for the messages a seed sends.
pub mod write {
    use super::msg;

    pub fn keep_alive(out: &mut Vec<u8>) {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    pub fn simple(out: &mut Vec<u8>, id: u8) {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.push(id);
    }
    pub fn bitfield_all(out: &mut Vec<u8>, pieces: u32) {
        let bytes = pieces.div_ceil(8) as usize;
        out.extend_from_slice(&(bytes as u32 + 1).to_be_bytes());
        out.push(msg::BITFIELD);
        out.extend(std::iter::repeat_n(0xffu8, bytes));
        // Spare bits at the end must be zero (libtorrent disconnects otherwise).
        let spare = bytes as u32 * 8 - pieces;
        if spare > 0 {
            let last = out.len() - 1;
            out[last] = 0xffu8 << spare;
        }
    }
    pub fn triple(out: &mut Vec<u8>, id: u8, index: u32, begin: u32, length: u32) {
        out.extend_from_slice(&13u32.to_be_bytes());
        out.push(id);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&begin.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
    }
    /// Header of a piece message; the caller appends `block_len` bytes.
    pub fn piece_header(out: &mut Vec<u8>, index: u32, begin: u32, block_len: u32) {
        out.extend_from_slice(&(9 + block_len).to_be_bytes());
        out.push(msg::PIECE);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&begin.to_be_bytes());
    }
    pub fn extended(out: &mut Vec<u8>, ext_id: u8, payload: &[u8], trailer: &[u8]) {
        let len = 2 + payload.len() + trailer.len();
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(msg::EXTENDED);
        out.push(ext_id);
        out.extend_from_slice(payload);
        out.extend_from_slice(trailer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trips() {
        let h = Handshake {
            reserved: Handshake::our_reserved(),
            info_hash: [7; 20],
            peer_id: *b"-WS0001-abcdefghijkl",
        };
        let bytes = h.encode();
        assert!(header_prefix_ok(&bytes[..5]));
        let back = Handshake::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert!(back.supports_extensions() && back.supports_fast() && !back.supports_dht());
    }

    #[test]
    fn rejects_mse_and_http_openers() {
        assert!(!header_prefix_ok(b"GET / HTTP/1.1"));
        assert!(!header_prefix_ok(&[0x13, b'B', b'x']));
        assert!(header_prefix_ok(&[0x13, b'B']));
    }

    #[test]
    fn fixed_size_messages_check_their_length() {
        assert_eq!(Message::parse(&[msg::HAVE, 0, 0, 0, 5]), Ok(Message::Have(5)));
        assert!(Message::parse(&[msg::HAVE, 0, 0]).is_err());
        assert!(Message::parse(&[msg::REQUEST, 0, 0, 0, 1]).is_err());
        assert!(Message::parse(&[msg::INTERESTED, 1]).is_err());
        assert_eq!(Message::parse(&[]), Ok(Message::KeepAlive));
        assert_eq!(Message::parse(&[99, 1, 2]), Ok(Message::Unknown(99)));
    }

    #[test]
    fn full_bitfield_has_zero_spare_bits() {
        let mut out = Vec::new();
        write::bitfield_all(&mut out, 10);
        assert_eq!(out, vec![0, 0, 0, 3, msg::BITFIELD, 0xff, 0xc0]);
    }
}
