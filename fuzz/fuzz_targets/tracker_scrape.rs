//! Fuzzes the scrape code of `warnseed-seeder` (BEP 48 over HTTP, BEP 15
//! action 2 over UDP).
//!
//! Input layout: the first byte's low two bits say how many info hashes
//! were asked (0–3); that many 20-byte hashes follow; the rest is the
//! response. (Asked hashes come from the input so the fuzzer can make a
//! body that names them.)
//!
//! Asserted:
//! * `parse_scrape_response` never panics on the rest as a whole HTTP
//!   response, and an Ok answer has one entry per asked hash;
//! * with the rest as the body of a `200` response it follows its contract
//!   exactly: malformed bencode, a body that is not a dictionary, or no
//!   `files` dictionary is `BadResponse`; a byte-string `failure reason` is
//!   `Failure` carrying that reason; otherwise each asked hash gets the
//!   counts of the last dictionary entry under its 20-byte key in `files`
//!   (negative counts read as 0), and zeros when there is none: entries for
//!   hashes nobody asked about never count;
//! * `parse_udp_response` on the rest as a scrape answer never panics,
//!   reads at most 128 entries, each entry being the packet's three
//!   big-endian words in order (seeders, completed, leechers);
//! * on a URL made of the rest, `TrackerUrl::scrape_path` never panics, and
//!   when it gives a path, it starts with `/` and `scrape_request` builds a
//!   GET of it carrying every asked hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_bittorrent::bencode::{self, Value};
use warnseed_seeder::{
    parse_scrape_response, parse_udp_response, scrape_request, AnnounceError, ScrapeCounts, TrackerUrl, UdpResponse,
};

const URL: &str = "http://127.0.0.1:6969/announce";

fn check_raw(raw: &[u8], asked: &[[u8; 20]]) {
    match parse_scrape_response(URL, raw, asked) {
        Ok(counts) => assert_eq!(counts.len(), asked.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// What the body must give, computed from the bencode tree directly.
fn expected(body: &[u8], asked: &[[u8; 20]]) -> Result<Vec<ScrapeCounts>, &'static str> {
    let Ok(dict) = bencode::decode(body) else {
        return Err("bad");
    };
    if dict.as_dict().is_none() {
        return Err("bad");
    }
    if dict.get(b"failure reason").and_then(Value::as_bytes).is_some() {
        return Err("failure");
    }
    let Some(files) = dict.get(b"files").and_then(Value::as_dict) else {
        return Err("bad");
    };
    let count = |e: &Value<'_>, key: &[u8]| e.get(key).and_then(Value::as_int).map_or(0, |n| n.max(0) as u64);
    Ok(asked
        .iter()
        .map(|h| {
            files
                .iter()
                .rev()
                .find(|(k, v)| *k == &h[..] && v.as_dict().is_some())
                .map(|(_, e)| ScrapeCounts {
                    complete: count(e, b"complete"),
                    incomplete: count(e, b"incomplete"),
                    downloaded: count(e, b"downloaded"),
                })
                .unwrap_or_default()
        })
        .collect())
}

fn check_ok_body(body: &[u8], asked: &[[u8; 20]]) {
    let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend_from_slice(body);
    let got = parse_scrape_response(URL, &raw, asked);
    match expected(body, asked) {
        Err("failure") => {
            let reason = bencode::decode(body).unwrap();
            let reason = reason.get(b"failure reason").and_then(Value::as_bytes).unwrap();
            match got {
                Err(AnnounceError::Failure { url, reason: r }) => {
                    assert_eq!(url, URL);
                    assert_eq!(r, String::from_utf8_lossy(reason));
                }
                other => panic!("failure reason ignored: {other:?}"),
            }
        }
        Err(_) => assert!(matches!(got, Err(AnnounceError::BadResponse { .. })), "{got:?}"),
        Ok(want) => assert_eq!(got.ok(), Some(want)),
    }
}

fn check_udp(rest: &[u8]) {
    // An answer to transaction 5, whatever the input's first 8 bytes.
    let mut packet = vec![0, 0, 0, 2, 0, 0, 0, 5];
    packet.extend_from_slice(rest);
    match parse_udp_response(&packet, 5) {
        Some(UdpResponse::Scraped(counts)) => {
            assert_eq!(counts.len(), (rest.len() / 12).min(128));
            for (c, e) in counts.iter().zip(rest.chunks_exact(12)) {
                let word = |i: usize| u64::from(u32::from_be_bytes(e[i..i + 4].try_into().unwrap()));
                assert_eq!((c.complete, c.downloaded, c.incomplete), (word(0), word(4), word(8)));
            }
        }
        other => panic!("a scrape answer read as {other:?}"),
    }
    assert!(parse_udp_response(&packet, 6).is_none());
}

fn check_url(text: &str, asked: &[[u8; 20]]) {
    let Ok(url) = TrackerUrl::parse(text) else {
        return;
    };
    if let Some(path) = url.scrape_path() {
        assert!(path.starts_with('/'), "{path:?}");
        let req = scrape_request(&url, &path, asked);
        assert!(req.starts_with(format!("GET {path}").as_bytes()));
        assert!(req.ends_with(b"\r\n\r\n"));
        let line_end = req.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = &req[..line_end];
        let params = line.windows(10).filter(|w| w == b"info_hash=").count();
        assert!(params >= asked.len(), "{}", String::from_utf8_lossy(line));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let n = usize::from(first & 3).min(data.len() / 20);
    let asked: Vec<[u8; 20]> = data[..n * 20]
        .chunks_exact(20)
        .map(|c| c.try_into().unwrap())
        .collect();
    let rest = &data[n * 20..];
    check_raw(rest, &asked);
    check_ok_body(rest, &asked);
    check_udp(rest);
    if let Ok(text) = std::str::from_utf8(rest) {
        check_url(text, &asked);
        if !text.starts_with("http://") {
            check_url(&format!("http://{text}"), &asked);
        }
    }
});
