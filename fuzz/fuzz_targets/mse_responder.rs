//! Fuzzes the Message Stream Encryption responder
//! (`warnseed_bittorrent::mse::MseResponder`) with an arbitrary peer stream.
//!
//! Input layout: byte 0 chooses the read size (byte + 1) and, in its top
//! bit, whether the driver's req2 lookup finds a torrent; the rest is what
//! the peer sends, delivered in reads of that size.
//!
//! Asserted:
//! * no panic, whatever the bytes;
//! * once failed, the responder stays failed (further input is ignored);
//! * its reply stays small: Yb and at most 63 bytes of padding, plus the
//!   14-byte step-4 answer;
//! * plaintext handed to the session never exceeds what the peer sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_bittorrent::mse::MseResponder;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let read = usize::from(mode & 0x7f) + 1;
    let finds_torrent = mode & 0x80 != 0;
    let mut r = MseResponder::with_private_key(&[0x5a; 20]);
    let mut out = 0usize;
    let mut plain = 0usize;
    let mut failed = false;
    for chunk in stream.chunks(read) {
        let mut result = r.handle_input(chunk);
        if failed {
            assert!(result.is_ok(), "a failed responder ignores input");
            assert!(r.take_plain().is_empty());
            continue;
        }
        if result.is_ok() {
            if let Some(req2) = r.pending_lookup() {
                let info_hash = finds_torrent.then_some([req2[0]; 20]);
                result = r.resolve(info_hash);
            }
        }
        out += r.take_output().len();
        plain += r.take_plain().len();
        if result.is_err() {
            failed = true;
        }
    }
    assert!(out <= 96 + 63 + 14, "reply of {out} bytes");
    assert!(plain <= stream.len(), "{plain} plaintext bytes from {} sent", stream.len());
});
