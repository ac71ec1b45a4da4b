//! Fleet ingest benchmark: durable records per second from a node's SQLite
//! spool into PostgreSQL through the forwarder (batched `unnest` inserts
//! with `ON CONFLICT DO NOTHING ... RETURNING`, and the aggregates of the
//! inserted rows, one transaction per batch, committed with the server's
//! `synchronous_commit`), against the rate the same machine appends those
//! records to the SQLite ledger (`LedgerStore::append`, `synchronous =
//! FULL`) in the same run: a ratio above 1 means the forwarder outruns the
//! ledger it drains.
//!
//! ```text
//! cargo run --release -j2 -p warnseed-bench --bin ingest_pg                      # 1,000,000 records
//! cargo run --release -j2 -p warnseed-bench --bin ingest_pg -- --records 200000  # quicker
//! ```
//!
//! Runs in a schema of its own (`ws_bench_…`), dropped at the end, in the
//! database of `--postgres` (default: the machine's own, database `test`).

use anyhow::{Context, Result};
use clap::Parser;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use warnseed_bench::{machine, mix64};
use warnseed_fleet::{Forwarder, ForwarderConfig, PgConfig, PgStore, Spool};
use warnseed_ledger::{Enricher, GeoFields, LedgerStore, RecordKind, SessionRecord, Transport};

const TARGET_EVENTS_PER_SECOND: f64 = 200_000.0;

#[derive(Parser)]
#[command(about = "Durable ingest into PostgreSQL through the fleet forwarder")]
struct Args {
    /// Records (each session is two: open and close).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records per PostgreSQL transaction.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Distinct downloader addresses.
    #[arg(long, default_value_t = 200_000)]
    ips: u64,
    /// Days the sessions span.
    #[arg(long, default_value_t = 30)]
    days: u64,
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres dbname=test")]
    postgres: String,
    /// Keep the schema afterwards (to look at it).
    #[arg(long)]
    keep: bool,
}

struct CountryByOctet;

impl Enricher for CountryByOctet {
    fn enrich(&self, ip: IpAddr) -> GeoFields {
        let IpAddr::V4(v4) = ip else {
            return GeoFields::default();
        };
        let [_, _, c, d] = v4.octets();
        match d % 4 {
            0 => GeoFields::default(),
            1 => GeoFields {
                country: Some("NO".into()),
                kommune: Some(format!("{:04}", 301 + u16::from(c % 50))),
                ..GeoFields::default()
            },
            2 => GeoFields {
                country: Some("SE".into()),
                ..GeoFields::default()
            },
            _ => GeoFields {
                country: Some(["DE", "NL", "PL", "US"][usize::from(c % 4)].into()),
                ..GeoFields::default()
            },
        }
    }
}

/// Session `i`'s two records.
fn session(i: u64, args: &Args, start_ms: i64) -> [SessionRecord; 2] {
    let h = mix64(i);
    let ip_n = mix64(h) % args.ips;
    let ip: IpAddr = format!("10.{}.{}.{}", ip_n >> 16 & 0xff, ip_n >> 8 & 0xff, ip_n & 0xff)
        .parse()
        .expect("address");
    let sessions = args.records / 2;
    let started = start_ms + (i as i64) * (args.days as i64 * 86_400_000) / sessions.max(1) as i64;
    let completed = !h.is_multiple_of(3);
    let decoy = (h >> 8) % 20_000 + 1;
    let open = SessionRecord {
        kind: RecordKind::Open,
        session_key: h as i64,
        started_at_ms: started,
        ended_at_ms: started,
        network: "bittorrent",
        decoy_id: decoy as i64,
        info_hash: [(decoy % 251) as u8; 20],
        remote_ip: ip,
        remote_port: 6881 + (h >> 40) as u16 % 1000,
        peer_id: Some(*b"-LT2080-aaaaaaaaaaaa"),
        client_name: Some(
            ["libtorrent 2.0.8.0", "Transmission 3.00", "qBittorrent 4.6.2"][(h % 3) as usize].into(),
        ),
        client_version: None,
        transport: Transport::Tcp,
        bytes_sent: 0,
        pieces_sent: 0,
        piece_count: 400,
        peer_pieces_initial: Some(0),
        peer_pieces_final: 0,
        completed: false,
        close_reason: String::new(),
    };
    let close = SessionRecord {
        kind: RecordKind::Close,
        ended_at_ms: started + 30_000,
        bytes_sent: if completed {
            100 << 20
        } else {
            (h >> 20) % (100 << 20)
        },
        pieces_sent: 400,
        peer_pieces_final: if completed { 400 } else { 12 },
        completed,
        close_reason: if completed { "peer_complete" } else { "peer_closed" }.into(),
        ..open.clone()
    };
    [open, close]
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("machine: {}", machine());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.sqlite");

    // The spool, written as a node writes it (10,000-record commits).
    let mut ledger = LedgerStore::open(&path)?;
    ledger.set_enricher(Box::new(CountryByOctet));
    let start_ms = 20_770 * 86_400_000;
    let mut chunk = Vec::with_capacity(10_000);
    let t = Instant::now();
    for i in 0..args.records / 2 {
        chunk.extend(session(i, &args, start_ms));
        if chunk.len() >= 10_000 {
            ledger.append(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        ledger.append(&chunk)?;
    }
    ledger.seal(&warnseed_ledger::clock::read(), warnseed_ledger::unix_ms())?;
    let sqlite_s = t.elapsed().as_secs_f64();
    let records = ledger.verify()?.last_seq;
    let sqlite_rate = records as f64 / sqlite_s;
    println!("spool: {records} records appended to SQLite in {sqlite_s:.2} s = {sqlite_rate:.0} records/s");

    let schema = format!("ws_bench_{}", std::process::id());
    let pg = PgConfig::new(args.postgres.clone(), schema.clone())?;
    let mut store = PgStore::connect(&pg).context("connecting to PostgreSQL")?;
    let settings: Vec<String> = store.run(async |c| {
        let mut out = Vec::new();
        for name in ["server_version", "synchronous_commit", "fsync", "shared_buffers"] {
            let v: String = c
                .raw()
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or_default();
            out.push(format!("{name}={v}"));
        }
        out
    });
    println!("postgres: {}", settings.join(" "));

    let mut config = ForwarderConfig::new(pg.clone(), path.clone());
    config.batch_size = args.batch;
    config.timeout = Duration::from_secs(600);
    let mut forwarder = Forwarder::new(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = Instant::now();
    let status = rt.block_on(forwarder.forward_available())?;
    let pg_s = t.elapsed().as_secs_f64();
    let rate = status.records_forwarded as f64 / pg_s;
    let node = ledger.node_id()?;
    let stored = store.head(&node)?.seq;
    anyhow::ensure!(
        stored == records,
        "PostgreSQL holds {stored} of {records} records"
    );
    let (uniques, daily): (i64, i64) = store.run(async |c| {
        let r = c
            .raw()
            .query_one(
                "SELECT (SELECT count(*) FROM rollup_uniques), (SELECT count(*) FROM rollup_daily)",
                &[],
            )
            .await
            .expect("counts");
        (r.get(0), r.get(1))
    });
    println!(
        "forwarded: {} records in {pg_s:.2} s = {rate:.0} records/s durable into PostgreSQL \
         (batch {}, {} distinct addresses, {} days: {daily} daily aggregate rows, {uniques} distinct-address rows)",
        status.records_forwarded, args.batch, args.ips, args.days
    );
    println!(
        "ratio forwarder / SQLite spool append: {:.2}; target {TARGET_EVENTS_PER_SECOND:.0} records/s: {}",
        rate / sqlite_rate,
        if rate >= TARGET_EVENTS_PER_SECOND {
            "met"
        } else {
            "NOT met"
        }
    );
    if !args.keep {
        store.drop_schema()?;
    }

    // What the records alone cost (same statements, no aggregates), from
    // batches read beforehand: the share of the time the aggregates take.
    let bare = PgConfig::new(args.postgres.clone(), format!("{schema}_bare"))?;
    let mut bare_store = PgStore::connect(&bare)?;
    let mut spool = Spool::open(&path, None)?;
    let mut batches = Vec::new();
    let mut after = 0;
    loop {
        let b = spool.read(after, args.batch, i64::MAX)?;
        let Some(last) = b.last_seq() else { break };
        after = last;
        batches.push(b);
    }
    let t = Instant::now();
    for b in &batches {
        bare_store.run(async |c| c.forward_without_aggregates(&node, b).await)?;
    }
    let bare_s = t.elapsed().as_secs_f64();
    let bare_rate = records as f64 / bare_s;
    println!(
        "records alone (no aggregates): {records} in {bare_s:.2} s = {bare_rate:.0} records/s; \
         the aggregates take {:.0}% of the forwarder's time",
        100.0 * ((pg_s - bare_s) / pg_s).max(0.0)
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "ingest_pg",
            "records": records,
            "batch": args.batch,
            "ips": args.ips,
            "sqlite_append_per_s": sqlite_rate.round(),
            "pg_forward_per_s": rate.round(),
            "pg_records_only_per_s": bare_rate.round(),
            "ratio_forward_to_sqlite": rate / sqlite_rate,
        })
    );
    if !args.keep {
        bare_store.drop_schema()?;
    }
    Ok(())
}
