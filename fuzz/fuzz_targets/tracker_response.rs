//! Fuzzes the HTTP tracker code of `warnseed-seeder`.
//!
//! Asserted:
//! * `parse_udp_response` (BEP 15 datagrams) never panics, answers only for
//!   the transaction the packet names, and bounds error text;
//! * `parse_announce_response` never panics on arbitrary bytes, and an Ok
//!   interval is never under the 60 s floor;
//! * on a `200` response whose body is the fuzz input it follows its
//!   contract exactly: malformed bencode or a body that is not a dictionary
//!   is `BadResponse`, a byte-string `failure reason` is `Failure` carrying
//!   that reason, otherwise the interval is the positive `interval` (floored
//!   at 60 s) or the 1800 s default;
//! * `TrackerUrl::parse` never panics; on Ok it keeps the raw text, has a
//!   non-empty host and a path starting with `/`, host and path hold no
//!   whitespace or control characters, and `announce_request` on it never
//!   panics and starts with the request line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use warnseed_bittorrent::bencode::{self, Value};
use warnseed_seeder::{announce_request, parse_announce_response, parse_udp_response, AnnounceError, TrackerUrl, UdpResponse};

const URL: &str = "http://127.0.0.1:6969/announce";

fn check_raw(raw: &[u8]) {
    match parse_announce_response(URL, raw) {
        Ok(interval) => assert!(interval >= Duration::from_secs(60), "interval {interval:?} under the floor"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn check_ok_body(body: &[u8]) {
    let mut raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend_from_slice(body);
    let got = parse_announce_response(URL, &raw);
    match bencode::decode(body) {
        Err(_) => assert!(matches!(got, Err(AnnounceError::BadResponse { .. })), "{got:?}"),
        Ok(dict) if dict.as_dict().is_none() => {
            assert!(matches!(got, Err(AnnounceError::BadResponse { .. })), "{got:?}")
        }
        Ok(dict) => {
            if let Some(reason) = dict.get(b"failure reason").and_then(Value::as_bytes) {
                match got {
                    Err(AnnounceError::Failure { url, reason: r }) => {
                        assert_eq!(url, URL);
                        assert_eq!(r, String::from_utf8_lossy(reason));
                    }
                    other => panic!("failure reason ignored: {other:?}"),
                }
                return;
            }
            let want = match dict.get(b"interval").and_then(Value::as_int) {
                Some(n) if n > 0 => Duration::from_secs(n as u64).max(Duration::from_secs(60)),
                _ => Duration::from_secs(1800),
            };
            assert_eq!(got.as_ref().ok(), Some(&want), "{got:?}");
        }
    }
}

fn check_url(text: &str) {
    if let Ok(u) = TrackerUrl::parse(text) {
        assert_eq!(u.raw, text);
        assert!(text.starts_with("http://") || text.starts_with("udp://"));
        assert!(!u.host.is_empty(), "empty host accepted");
        assert!(u.path.starts_with('/'), "path {:?}", u.path);
        let unsafe_char = |c: char| c.is_whitespace() || c.is_control();
        assert!(!u.host.chars().any(unsafe_char) && !u.path.chars().any(unsafe_char));
        let req = announce_request(&u, &[0xAB; 20], b"-WS0100-synthetic001", 6881, Some("started"));
        let expected = format!("GET {}", u.path);
        assert!(req.starts_with(expected.as_bytes()));
        assert!(req.ends_with(b"\r\n\r\n"));
    }
}

/// A UDP tracker datagram (BEP 15): never panics, answers only for the
/// transaction it names, and error text is bounded.
fn check_udp(packet: &[u8]) {
    let transaction = packet.get(4..8).map(|t| u32::from_be_bytes(t.try_into().unwrap())).unwrap_or(0);
    match parse_udp_response(packet, transaction) {
        Some(UdpResponse::Error(text)) => assert!(text.len() <= 3 * 256, "error text of {} bytes", text.len()),
        Some(_) | None => {}
    }
    assert!(parse_udp_response(packet, transaction.wrapping_add(1)).is_none());
}

fuzz_target!(|data: &[u8]| {
    check_udp(data);
    check_raw(data);
    check_ok_body(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_url(text);
        if !text.starts_with("http://") {
            check_url(&format!("http://{text}"));
        }
    }
});
