//! Fuzzes `warnseed_bittorrent::wire::Message::parse` (one frame body, i.e.
//! what follows the 4-byte length prefix) and the 68-byte handshake codec.
//!
//! Asserted:
//! * `Message::parse` never panics;
//! * every successfully parsed message except `Unknown` re-encodes to exactly
//!   the bytes it was parsed from (parse checks fixed lengths exactly, so the
//!   layout is unambiguous). Where the crate has a writer for the message
//!   (`wire::write::{keep_alive, simple, triple, extended, piece_header}`),
//!   that writer is the encoder, which also checks the writers agree with
//!   the parser;
//! * `Unknown(id)` is only produced for ids the crate does not know;
//! * fixed-size messages with the wrong length are errors (a frame of a known
//!   fixed-size id that parsed must have had the right length, which the
//!   byte-exact round trip covers);
//! * `Handshake::decode` accepts the first 68 bytes exactly when they start
//!   with the protocol header, and then re-encodes to them; and
//!   `header_prefix_ok` agrees with the header on every prefix length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_bittorrent::wire::{header_prefix_ok, msg, write, Handshake, Message, HANDSHAKE_LEN, PROTOCOL_HEADER};

const KNOWN_IDS: [u8; 16] = [
    msg::CHOKE,
    msg::UNCHOKE,
    msg::INTERESTED,
    msg::NOT_INTERESTED,
    msg::HAVE,
    msg::BITFIELD,
    msg::REQUEST,
    msg::PIECE,
    msg::CANCEL,
    msg::PORT,
    msg::SUGGEST,
    msg::HAVE_ALL,
    msg::HAVE_NONE,
    msg::REJECT,
    msg::ALLOWED_FAST,
    msg::EXTENDED,
];

/// Frames `id` + `payload` with a length prefix (for the messages that
/// `wire::write` has no writer for).
fn frame(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.push(id);
    out.extend_from_slice(payload);
}

/// Encodes a parsed message as a full frame (length prefix included), or
/// `None` for `Unknown`, whose payload `parse` drops.
fn encode(m: &Message<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match *m {
        Message::KeepAlive => write::keep_alive(&mut out),
        Message::Choke => write::simple(&mut out, msg::CHOKE),
        Message::Unchoke => write::simple(&mut out, msg::UNCHOKE),
        Message::Interested => write::simple(&mut out, msg::INTERESTED),
        Message::NotInterested => write::simple(&mut out, msg::NOT_INTERESTED),
        Message::HaveAll => write::simple(&mut out, msg::HAVE_ALL),
        Message::HaveNone => write::simple(&mut out, msg::HAVE_NONE),
        Message::Have(i) => frame(&mut out, msg::HAVE, &i.to_be_bytes()),
        Message::Suggest(i) => frame(&mut out, msg::SUGGEST, &i.to_be_bytes()),
        Message::AllowedFast(i) => frame(&mut out, msg::ALLOWED_FAST, &i.to_be_bytes()),
        Message::Port(p) => frame(&mut out, msg::PORT, &p.to_be_bytes()),
        Message::Bitfield(bits) => frame(&mut out, msg::BITFIELD, bits),
        Message::Request { index, begin, length } => write::triple(&mut out, msg::REQUEST, index, begin, length),
        Message::Cancel { index, begin, length } => write::triple(&mut out, msg::CANCEL, index, begin, length),
        Message::Reject { index, begin, length } => write::triple(&mut out, msg::REJECT, index, begin, length),
        Message::Piece { index, begin, block } => {
            write::piece_header(&mut out, index, begin, block.len() as u32);
            out.extend_from_slice(block);
        }
        Message::Extended { id, payload } => write::extended(&mut out, id, payload, &[]),
        Message::Unknown(_) => return None,
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    // 1. The frame body parser.
    match Message::parse(data) {
        Ok(Message::Unknown(id)) => {
            assert_eq!(data.first(), Some(&id));
            assert!(!KNOWN_IDS.contains(&id), "known id {id} parsed as Unknown");
        }
        Ok(m) => {
            let framed = encode(&m).expect("not Unknown");
            let len = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
            assert_eq!(len, framed.len() - 4, "writer's length prefix is wrong for {m:?}");
            assert_eq!(&framed[4..], data, "{m:?} does not re-encode to its bytes");
            assert_eq!(Message::parse(&framed[4..]).as_ref(), Ok(&m));
        }
        Err(e) => {
            let _ = e.to_string();
            // Only known ids can be malformed.
            let id = data[0];
            assert!(KNOWN_IDS.contains(&id), "unknown id {id} reported malformed");
        }
    }

    // 2. The handshake codec on the same bytes.
    for n in 0..=data.len().min(PROTOCOL_HEADER.len() + 1) {
        let k = n.min(20);
        assert_eq!(header_prefix_ok(&data[..n]), data[..k] == PROTOCOL_HEADER[..k]);
    }
    if data.len() >= HANDSHAKE_LEN {
        let bytes: &[u8; HANDSHAKE_LEN] = data[..HANDSHAKE_LEN].try_into().unwrap();
        match Handshake::decode(bytes) {
            Some(h) => {
                assert!(data.starts_with(PROTOCOL_HEADER));
                assert_eq!(&h.encode(), bytes);
                let _ = (h.supports_extensions(), h.supports_fast(), h.supports_dht());
            }
            None => assert!(!data.starts_with(PROTOCOL_HEADER)),
        }
    }
});
