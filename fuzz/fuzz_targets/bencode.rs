//! Fuzzes `warnseed_bittorrent::bencode::{decode, decode_prefix}`.
//!
//! What is asserted, and why it is guaranteed by bencode.rs:
//! * neither function panics, whatever the bytes;
//! * `decode` is `decode_prefix` plus a "whole input used" check: it succeeds
//!   exactly when `decode_prefix` uses every byte, and otherwise reports
//!   `Trailing(len - used)`;
//! * `decode_prefix` never claims more bytes than it was given, and decoding
//!   just those bytes gives the same value;
//! * the decoder only accepts canonical integers and string lengths (no
//!   leading zeros, no `-0`, no `+`), and keeps dict entries in input order,
//!   so re-encoding a decoded value with `Encoder`, entries in the order they
//!   were read, reproduces the consumed bytes exactly. For canonical input
//!   in the BEP 3 sense (dict keys strictly ascending) the same holds when
//!   the keys are written sorted, which is what callers that hash do;
//! * decoding the re-encoded bytes gives back an equal value.
//!
//! Not asserted: that decoded dicts are sorted or free of duplicate keys. The
//! decoder deliberately accepts both (lookups take the first match).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_bittorrent::bencode::{decode, decode_prefix, DecodeError, Encoder, Value, MAX_DEPTH};

/// Writes `v` with dict entries in the order they were decoded, or, with
/// `sort`, with every dict's keys sorted (stable, so duplicates keep their
/// relative order).
fn encode(e: &mut Encoder, v: &Value<'_>, sort: bool) {
    match v {
        Value::Int(i) => {
            e.int(*i);
        }
        Value::Bytes(b) => {
            e.bytes(b);
        }
        Value::List(items) => {
            e.begin_list();
            for item in items {
                encode(e, item, sort);
            }
            e.end();
        }
        Value::Dict(entries) => {
            let mut ordered: Vec<_> = entries.iter().collect();
            if sort {
                ordered.sort_by(|a, b| a.0.cmp(b.0));
            }
            e.begin_dict();
            for (k, item) in ordered {
                e.bytes(k);
                encode(e, item, sort);
            }
            e.end();
        }
    }
}

/// Every dict in `v` has strictly ascending keys (BEP 3 canonical form).
fn is_canonical(v: &Value<'_>) -> bool {
    match v {
        Value::Int(_) | Value::Bytes(_) => true,
        Value::List(items) => items.iter().all(is_canonical),
        Value::Dict(entries) => {
            entries.windows(2).all(|w| w[0].0 < w[1].0) && entries.iter().all(|(_, v)| is_canonical(v))
        }
    }
}

fn depth(v: &Value<'_>) -> usize {
    match v {
        Value::Int(_) | Value::Bytes(_) => 0,
        Value::List(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Dict(entries) => 1 + entries.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(data);
    let prefix = decode_prefix(data);

    match (&prefix, &whole) {
        (Ok((v, used)), _) => {
            assert!(*used <= data.len(), "decode_prefix used {used} of {} bytes", data.len());
            assert!(*used > 0, "a value is at least one byte");
            if *used == data.len() {
                assert_eq!(whole.as_ref(), Ok(v), "decode disagrees with decode_prefix");
            } else {
                assert_eq!(whole, Err(DecodeError::Trailing(data.len() - used)));
            }
            // Containers nest at most MAX_DEPTH + 1 levels (depth 0..=MAX_DEPTH
            // are accepted for the value being parsed).
            assert!(depth(v) <= MAX_DEPTH + 1, "nesting {} over the cap", depth(v));

            let consumed = &data[..*used];
            assert_eq!(decode(consumed).as_ref(), Ok(v), "the consumed prefix decodes alone");

            let mut e = Encoder::new();
            encode(&mut e, v, false);
            let again = e.finish();
            assert_eq!(
                again, consumed,
                "re-encoding in input order must reproduce the consumed bytes"
            );
            assert_eq!(decode(&again).as_ref(), Ok(v));

            if is_canonical(v) {
                let mut e = Encoder::new();
                encode(&mut e, v, true);
                assert_eq!(e.finish(), consumed, "canonical input re-encodes byte for byte");
            }

            // Display must not panic either (it is used in logs).
            if data.len() < 512 {
                let _ = v.to_string();
            }
        }
        (Err(e), _) => {
            assert_eq!(whole.as_ref().err(), Some(e), "decode and decode_prefix fail alike");
            let _ = e.to_string();
        }
    }
});
