//! Shared by the fleet tests: a schema of their own in the machine's
//! PostgreSQL, synthetic ledgers, and report comparisons.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use warnseed_fleet::{PgConfig, PgStore};
use warnseed_ledger::report::{self, Granularity};
use warnseed_ledger::{Enricher, GeoFields, LedgerStore, RecordKind, SessionRecord, Transport};

/// The PostgreSQL the tests use: `WARNSEED_TEST_PG`, else the machine's own.
pub fn conninfo() -> String {
    std::env::var("WARNSEED_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// A schema of the test's own, dropped at the end.
pub struct TestSchema {
    pub config: PgConfig,
}

impl TestSchema {
    pub fn new(tag: &str) -> Self {
        Self::with_conninfo(tag, &conninfo())
    }

    pub fn with_conninfo(tag: &str, conninfo: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("ws_test_{tag}_{}_{nanos}", std::process::id());
        Self {
            config: PgConfig::new(conninfo, name).unwrap(),
        }
    }

    pub fn store(&self) -> PgStore {
        PgStore::connect(&self.config).unwrap()
    }

    /// The same schema reached through another connection string (a proxy).
    pub fn via(&self, conninfo: &str) -> PgConfig {
        PgConfig::new(conninfo, self.config.schema.clone()).unwrap()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut s) = PgStore::connect(&self.config) {
            let _ = s.drop_schema();
        }
    }
}

/// Countries and Norwegian municipalities by the address's last octet.
pub struct TestGeo;

impl Enricher for TestGeo {
    fn enrich(&self, ip: IpAddr) -> GeoFields {
        let octet = match ip {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(v6) => v6.octets()[15],
        };
        match octet % 5 {
            0 => GeoFields::default(),
            1 => GeoFields {
                country: Some("NO".into()),
                country_name: Some("Norway".into()),
                city: Some("Oslo".into()),
                latitude: Some(59.91),
                longitude: Some(10.75),
                accuracy_km: Some(20),
                kommune: Some("0301".into()),
                kommune_name: Some("Oslo".into()),
                kommune_confidence: Some("city".into()),
                ..GeoFields::default()
            },
            2 => GeoFields {
                country: Some("NO".into()),
                country_name: Some("Norway".into()),
                kommune: Some("4601".into()),
                kommune_name: Some("Bergen".into()),
                kommune_confidence: Some("coordinates".into()),
                ..GeoFields::default()
            },
            3 => GeoFields {
                country: Some("SE".into()),
                country_name: Some("Sweden".into()),
                ..GeoFields::default()
            },
            _ => GeoFields {
                country: Some("DE".into()),
                ..GeoFields::default()
            },
        }
    }
}

/// A small deterministic generator (xorshift).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Synthetic sessions as open/close record pairs, started from `start_ms`
/// on, `step_ms` apart: addresses from a pool of `ips` (so some download
/// again after they completed), four clients, 20 decoys.
pub struct Sessions {
    rng: Rng,
    pub now_ms: i64,
    step_ms: i64,
    ips: u64,
    pub ip_base: u8,
}

impl Sessions {
    pub fn new(seed: u64, start_ms: i64, step_ms: i64, ips: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            now_ms: start_ms,
            step_ms,
            ips,
            ip_base: 10,
        }
    }

    /// The next session's two records.
    pub fn pair(&mut self) -> [SessionRecord; 2] {
        let r = &mut self.rng;
        let ip_n = r.below(self.ips);
        let ip: IpAddr = if ip_n.is_multiple_of(7) {
            format!("2001:db8:{:x}::{:x}", self.ip_base, ip_n + 1)
                .parse()
                .unwrap()
        } else {
            format!("198.51.{}.{}", self.ip_base as u64 + ip_n / 250, ip_n % 250 + 1)
                .parse()
                .unwrap()
        };
        let started = self.now_ms;
        self.now_ms += self.step_ms;
        let ended = started + 1 + r.below(self.step_ms as u64) as i64 / 2;
        let completed = r.below(3) != 0;
        let client = [
            "libtorrent 2.0.8.0",
            "Transmission 3.00",
            "Deluge",
            "qBittorrent 4.6.2",
        ][r.below(4) as usize];
        let decoy = r.below(20) as i64 + 1;
        let key = r.next() as i64;
        let open = SessionRecord {
            kind: RecordKind::Open,
            session_key: key,
            started_at_ms: started,
            ended_at_ms: started,
            network: "bittorrent",
            decoy_id: decoy,
            info_hash: [decoy as u8; 20],
            remote_ip: ip,
            remote_port: 6881 + (r.below(1000) as u16),
            peer_id: Some(*b"-LT2080-aaaaaaaaaaaa"),
            client_name: Some(client.into()),
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: 0,
            pieces_sent: 0,
            piece_count: 4,
            peer_pieces_initial: Some(0),
            peer_pieces_final: 0,
            completed: false,
            close_reason: String::new(),
        };
        let close = SessionRecord {
            kind: RecordKind::Close,
            ended_at_ms: ended,
            bytes_sent: if completed { 65_536 } else { r.below(65_536) },
            pieces_sent: if completed { 4 } else { 1 },
            peer_pieces_final: if completed { 4 } else { 1 },
            completed,
            close_reason: if completed { "peer_complete" } else { "peer_closed" }.into(),
            ..open.clone()
        };
        [open, close]
    }

    /// `n` sessions (2n records).
    pub fn records(&mut self, n: usize) -> Vec<SessionRecord> {
        (0..n).flat_map(|_| self.pair()).collect()
    }
}

/// 2026-11-20 00:00 UTC.
pub const START_MS: i64 = 20_777 * 86_400_000;

/// Opens a ledger with the test geolocation.
pub fn ledger(path: &Path) -> LedgerStore {
    let mut store = LedgerStore::open(path).unwrap();
    store.set_enricher(Box::new(TestGeo));
    store
}

/// Appends `records` in batches of `chunk`, sealing after each batch.
pub fn append(store: &mut LedgerStore, records: &[SessionRecord], chunk: usize) {
    for c in records.chunks(chunk) {
        store.append(c).unwrap();
        store
            .seal(&warnseed_ledger::clock::read(), warnseed_ledger::unix_ms())
            .unwrap();
    }
}

/// Asserts that both sources give the same reports: every dimension, every
/// granularity, the whole window and a cut one, and the campaign summary.
pub fn assert_same_reports(
    sqlite: &mut dyn report::RollupSource,
    pg: &mut dyn report::RollupSource,
    from_day: i64,
    to_day: i64,
) {
    let windows = [
        (from_day, to_day),
        (from_day + 1, to_day - 1),
        (from_day - 40, to_day + 400),
    ];
    let mut rows = 0;
    for (from, to) in windows {
        for dim in warnseed_ledger::rollup::DIMENSIONS {
            for by in [
                Granularity::Day,
                Granularity::Week,
                Granularity::Month,
                Granularity::Year,
                Granularity::Total,
            ] {
                let a = report::report(sqlite, dim, from, to, by).unwrap();
                let b = report::report(pg, dim, from, to, by).unwrap();
                assert_eq!(a, b, "dimension {dim}, {by:?}, days {from}..={to}");
                rows += a.len();
            }
        }
        let a = report::campaign_summary(sqlite, from, to, 357).unwrap();
        let b = report::campaign_summary(pg, from, to, 357).unwrap();
        assert_eq!(a, b, "campaign summary, days {from}..={to}");
    }
    assert!(rows > 100, "the reports compared have rows ({rows})");
}

/// Sessions and distinct records of one node in PostgreSQL: (rows, distinct
/// seqs, max seq).
pub fn pg_counts(store: &mut PgStore, node_id: &str) -> (i64, i64, i64) {
    store.run(async |c| {
        let row = c
            .raw()
            .query_one(
                "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM sessions WHERE node_id = $1",
                &[&node_id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    })
}
