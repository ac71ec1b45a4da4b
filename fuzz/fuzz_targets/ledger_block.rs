//! Fuzzes the packed record block decoder (`warnseed_ledger::block`): the
//! bytes come from a ledger file, which whoever holds it can alter.
//!
//! For every input:
//! - `decode` returns Ok or Err, never panics, and never holds more
//!   records than a block may;
//! - what decodes re-encodes, and that encoding decodes to the same
//!   records (compared by their encoding, so NaN coordinates compare too):
//!   the format has one meaning per block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_ledger::block::{decode, encode, MAX_BLOCK_RECORDS};

fuzz_target!(|data: &[u8]| {
    let Ok(block) = decode(data) else {
        return;
    };
    assert!(block.records.len() <= MAX_BLOCK_RECORDS);
    let mut once = Vec::new();
    encode(block.first_seq, &block.records, &mut once);
    let again = decode(&once).expect("an encoded block decodes");
    assert_eq!(again.first_seq, block.first_seq);
    assert_eq!(again.records.len(), block.records.len());
    let mut twice = Vec::new();
    encode(again.first_seq, &again.records, &mut twice);
    assert_eq!(once, twice, "re-encoding changed the block");
});
