//! The aggregates and reports: counts per period and dimension, distinct
//! addresses, repeat downloaders, and the campaign's sentence, checked
//! against what was written.

use std::net::IpAddr;
use warnseed_ledger::report::{campaign_summary, report, Granularity};
use warnseed_ledger::{Enricher, GeoFields, LedgerStore, RecordKind, Retention, SessionRecord, Transport};

/// Places 198.51.100.x in Norway (kommune 0301 for even x, 4601 for odd),
/// 203.0.113.x in Germany, anything else nowhere.
struct TestGeo;

impl Enricher for TestGeo {
    fn enrich(&self, ip: IpAddr) -> GeoFields {
        let s = ip.to_string();
        let last: u32 = s.rsplit('.').next().and_then(|l| l.parse().ok()).unwrap_or(0);
        if s.starts_with("198.51.100.") {
            GeoFields {
                country: Some("NO".into()),
                kommune: Some(if last.is_multiple_of(2) { "0301" } else { "4601" }.into()),
                ..Default::default()
            }
        } else if s.starts_with("203.0.113.") {
            GeoFields {
                country: Some("DE".into()),
                ..Default::default()
            }
        } else {
            GeoFields::default()
        }
    }
}

const DAY: i64 = 86_400_000;
/// 2026-11-23, a Monday.
const MONDAY: i64 = 20_780 * DAY;

fn session(key: i64, ip: &str, start: i64, completed: bool, client: &str) -> [SessionRecord; 2] {
    let open = SessionRecord {
        kind: RecordKind::Open,
        session_key: key,
        started_at_ms: start,
        ended_at_ms: start,
        network: "bittorrent",
        decoy_id: key % 3,
        info_hash: [key as u8; 20],
        remote_ip: ip.parse().unwrap(),
        remote_port: 51_000,
        peer_id: None,
        client_name: Some(client.into()),
        client_version: None,
        transport: Transport::Tcp,
        bytes_sent: 0,
        pieces_sent: 0,
        piece_count: 4,
        peer_pieces_initial: None,
        peer_pieces_final: 0,
        completed: false,
        close_reason: String::new(),
    };
    let mut close = open.clone();
    close.kind = RecordKind::Close;
    close.ended_at_ms = start + 60_000;
    close.bytes_sent = if completed { 1000 } else { 10 };
    close.completed = completed;
    close.close_reason = "peer_complete".into();
    [open, close]
}

fn store(dir: &std::path::Path) -> LedgerStore {
    let mut store = LedgerStore::open(&dir.join("ledger.sqlite")).unwrap();
    store.set_enricher(Box::new(TestGeo));
    let mut records = Vec::new();
    // Monday: .2 (Oslo) completes; .3 (Bergen) does not; 203.0.113.1 completes.
    records.extend(session(
        1,
        "198.51.100.2",
        MONDAY + 3_600_000,
        true,
        "libtorrent 2.0.8.0",
    ));
    records.extend(session(
        2,
        "198.51.100.3",
        MONDAY + 7_200_000,
        false,
        "Transmission 3.00",
    ));
    records.extend(session(
        3,
        "203.0.113.1",
        MONDAY + 9_000_000,
        true,
        "aria2 1.36.0",
    ));
    // Wednesday: .2 comes back after its warning (a repeat), 192.0.2.1 is nowhere.
    records.extend(session(
        4,
        "198.51.100.2",
        MONDAY + 2 * DAY,
        true,
        "libtorrent 2.0.8.0",
    ));
    records.extend(session(
        5,
        "192.0.2.1",
        MONDAY + 2 * DAY + 1,
        true,
        "libtorrent 2.0.9.0",
    ));
    // Next Monday: .3 again, still without having completed: no repeat.
    records.extend(session(
        6,
        "198.51.100.3",
        MONDAY + 7 * DAY,
        true,
        "Transmission 3.00",
    ));
    for chunk in records.chunks(3) {
        store.append(chunk).unwrap();
    }
    store
}

#[test]
fn reports_count_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path());
    let (from, to) = (MONDAY / DAY, MONDAY / DAY + 13);
    let total = report(&mut s, "all", from, to, Granularity::Total).unwrap();
    assert_eq!(total.len(), 1);
    let t = &total[0];
    assert_eq!(
        (
            t.downloads_started,
            t.files_delivered,
            t.bytes_sent,
            t.unique_ips,
            t.repeat_ips
        ),
        (6, 5, 5010, Some(4), Some(1))
    );
    let by_week = report(&mut s, "all", from, to, Granularity::Week).unwrap();
    let weeks: Vec<(&str, i64, Option<i64>)> = by_week
        .iter()
        .map(|r| (r.period.as_str(), r.files_delivered, r.unique_ips))
        .collect();
    assert_eq!(weeks, vec![("2026-W48", 4, Some(4)), ("2026-W49", 1, Some(1))]);
    let by_day = report(&mut s, "all", from, to, Granularity::Day).unwrap();
    assert_eq!(
        by_day.iter().map(|r| r.period.as_str()).collect::<Vec<_>>(),
        ["2026-11-23", "2026-11-25", "2026-11-30"]
    );
    let countries = report(&mut s, "country", from, to, Granularity::Total).unwrap();
    let c: Vec<(&str, i64, Option<i64>)> = countries
        .iter()
        .map(|r| (r.key.as_str(), r.downloads_started, r.unique_ips))
        .collect();
    assert_eq!(
        c,
        vec![("DE", 1, Some(1)), ("NO", 4, Some(2)), ("unknown", 1, Some(1))]
    );
    let kommuner = report(&mut s, "kommune", from, to, Granularity::Total).unwrap();
    let k: Vec<(&str, i64)> = kommuner
        .iter()
        .map(|r| (r.key.as_str(), r.files_delivered))
        .collect();
    assert_eq!(k, vec![("0301", 2), ("4601", 1)]);
    let clients = report(&mut s, "client", from, to, Granularity::Total).unwrap();
    let c: Vec<(&str, i64)> = clients
        .iter()
        .map(|r| (r.key.as_str(), r.downloads_started))
        .collect();
    assert_eq!(c, vec![("Transmission", 2), ("aria2", 1), ("libtorrent", 3)]);
    // A window that cuts the first week counts its days only.
    let cut = report(&mut s, "all", from + 2, to, Granularity::Week).unwrap();
    assert_eq!((cut[0].files_delivered, cut[0].unique_ips), (2, Some(2)));
    assert!(report(&mut s, "planet", from, to, Granularity::Total).is_err());

    let summary = campaign_summary(&mut s, from, to, 357).unwrap();
    assert_eq!(
        summary.sentence,
        "Since 2026-11-23: 5 files delivered to 4 IP addresses in 2 countries, incl. 2 of 357 Norwegian municipalities."
    );
}

#[test]
fn aggregates_survive_erasure_and_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path());
    let (from, to) = (MONDAY / DAY, MONDAY / DAY + 13);
    let before = report(&mut s, "all", from, to, Granularity::Day).unwrap();
    s.retain(i64::MAX, &Retention::Erase).unwrap();
    assert_eq!(report(&mut s, "all", from, to, Granularity::Day).unwrap(), before);
    assert_eq!(s.verify().unwrap().first_bad, None);
    drop(s);
    // A ledger whose aggregates are gone (written by an older version)
    // gets them back from its records on open; erased addresses are then
    // unknown: the files delivered count, no distinct-address figure does
    // (not one address shared by all of them).
    let conn = rusqlite::Connection::open(dir.path().join("ledger.sqlite")).unwrap();
    conn.execute_batch(
        "DELETE FROM rollup_daily; DELETE FROM rollup_runs; DELETE FROM rollup_state; DELETE FROM rollup_ip; DELETE FROM rollup_repeat;
         DELETE FROM ledger_meta WHERE key = 'rollups_through';",
    )
    .unwrap();
    drop(conn);
    let mut s = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    let rebuilt = report(&mut s, "all", from, to, Granularity::Total).unwrap();
    assert_eq!((rebuilt[0].files_delivered, rebuilt[0].unique_ips), (5, None));
}

#[test]
fn a_seed_that_reconnects_is_neither_a_download_nor_a_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    let mut records = Vec::new();
    records.extend(session(1, "198.51.100.2", MONDAY, true, "libtorrent 2.0.8.0"));
    // The next day it comes back already holding every piece, and leaves
    // "complete": a seed, not a second download.
    let mut seed = session(2, "198.51.100.2", MONDAY + DAY, true, "libtorrent 2.0.8.0");
    seed[1].peer_pieces_initial = Some(4);
    seed[1].peer_pieces_final = 4;
    records.extend(seed);
    s.append(&records).unwrap();
    let t = report(&mut s, "all", MONDAY / DAY, MONDAY / DAY + 1, Granularity::Total).unwrap();
    assert_eq!(
        (
            t[0].downloads_started,
            t[0].sessions_closed,
            t[0].files_delivered,
            t[0].repeat_ips,
            t[0].delivered_ips
        ),
        (1, 2, 1, Some(0), Some(1))
    );
    // The ledger's own summary agrees: one file delivered, two sessions.
    let summary = s.summary().unwrap();
    assert_eq!((summary.sessions, summary.completed), (2, 1));
}

#[test]
fn a_move_of_rows_into_runs_cut_short_still_counts_every_address_once() {
    // A ledger whose distinct addresses were partly still rows when the
    // move stopped: the year's `all` members as rows, the rest as runs.
    let dir = tempfile::tempdir().unwrap();
    let mut s = store(dir.path());
    let (from, to) = (MONDAY / DAY - 40, MONDAY / DAY + 400);
    let figures = |s: &mut LedgerStore| {
        ["all", "country", "kommune"].map(|dim| {
            let mut out = String::new();
            for by in [Granularity::Total, Granularity::Month, Granularity::Year] {
                out += &format!("{:?}\n", report(s, dim, from, to, by).unwrap());
            }
            out
        })
    };
    let before = figures(&mut s);
    assert!(before[0].contains("unique_ips: Some("), "{}", before[0]);
    drop(s);
    let conn = rusqlite::Connection::open(dir.path().join("ledger.sqlite")).unwrap();
    let moved: Vec<_> = warnseed_ledger::uniques::rows(&conn)
        .unwrap()
        .into_iter()
        .filter(|(period, dim, _, _)| period.starts_with('y') && dim == "all")
        .collect();
    assert!(!moved.is_empty());
    conn.execute_batch(
        "CREATE TABLE rollup_uniques (period TEXT NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL,
             ip_key BLOB NOT NULL, PRIMARY KEY (period, dim, key, ip_key)) WITHOUT ROWID;
         DELETE FROM rollup_runs WHERE period LIKE 'y%' AND dim = 'all';",
    )
    .unwrap();
    for (period, dim, key, ip) in &moved {
        conn.execute(
            "INSERT INTO rollup_uniques (period, dim, key, ip_key) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![period, dim, key, ip],
        )
        .unwrap();
    }
    drop(conn);
    // Read-only, as found: both kinds counted.
    let mut old = LedgerStore::open_read_only(&dir.path().join("ledger.sqlite")).unwrap();
    assert_eq!(figures(&mut old), before);
    drop(old);
    // Writable: the move finishes, the same figures.
    let mut s = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    assert_eq!(figures(&mut s), before);
}
