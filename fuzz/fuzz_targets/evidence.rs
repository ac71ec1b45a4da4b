//! Fuzzes the offline check of evidence exports (`warnseed ledger
//! verify-export`): the file comes from outside the node (a court, a
//! defence expert, anyone) and is hostile like network bytes.
//!
//! The input is the export's JSON as the CLI reads it.
//!
//! Asserted:
//! * parsing and `verify_evidence` never panic, and the verdict does not
//!   change when the export is written back to JSON and read again;
//! * a verified export counts every record and every seal it carries;
//! * anchoring on any of its seals either verifies with at most as many
//!   records as the export holds, or fails (never panics); anchoring on a
//!   hash that is none of its seals fails;
//! * tampering is caught: in a verified export that holds a record, adding
//!   one to that record's `bytes_sent`, moving its start by a millisecond,
//!   or changing its port makes the export fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_ledger::{verify_evidence, verify_evidence_anchored, Evidence};

fuzz_target!(|data: &[u8]| {
    // The CLI reads the whole file; bound it like any input here.
    if data.len() > 1 << 20 {
        return;
    }
    let Ok(e) = serde_json::from_slice::<Evidence>(data) else {
        return;
    };
    let verdict = verify_evidence(&e);
    let again: Evidence = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(verify_evidence(&again), verdict, "the verdict changed after a JSON round trip");

    for seal in e.seals.iter().take(4) {
        if let Ok(check) = verify_evidence_anchored(&e, &seal.seal_hash) {
            assert!(verdict.is_ok(), "anchored verified what the plain check refused");
            assert!(check.anchored_records.unwrap() <= e.records.len());
        }
    }
    assert!(verify_evidence_anchored(&e, "not-a-seal-hash").is_err());

    let Ok(check) = verdict else {
        return;
    };
    assert_eq!(check.records, e.records.len());
    assert_eq!(check.seals, e.seals.len());
    if e.records.is_empty() {
        return;
    }
    let i = data.len() % e.records.len();
    let mut bytes = e.clone();
    bytes.records[i].bytes_sent = bytes.records[i].bytes_sent.wrapping_add(1);
    assert!(verify_evidence(&bytes).is_err(), "a changed bytes_sent verified");
    let mut start = e.clone();
    start.records[i].started_at_ms = start.records[i].started_at_ms.wrapping_add(1);
    assert!(verify_evidence(&start).is_err(), "a changed start verified");
    let mut port = e.clone();
    port.records[i].remote_port = port.records[i].remote_port.wrapping_add(1);
    assert!(verify_evidence(&port).is_err(), "a changed port verified");
});
