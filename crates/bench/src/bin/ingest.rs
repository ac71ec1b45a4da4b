//! Durable ingest benchmark: session records per second through the
//! ledger's real write path (`LedgerWriter`: batches on its own thread,
//! hash chain, geolocation, records packed in blocks and aggregates in the
//! same transaction, WAL with `synchronous = FULL`), against "the limit": a
//! plain prepared-insert loop into a table of a row per record (the
//! ledger's first layout: same columns and indexes; same pragmas,
//! durability and batch size; no hashing, no geolocation, no aggregates),
//! measured in the same run on the same disk.
//!
//! ```text
//! cargo build --release -p warnseed-bench -j2
//! target/release/ingest                               # 1,000,000 sessions = 2,000,000 records, 3 rounds
//! target/release/ingest --sessions 200000 --rounds 1  # quick check
//! ```

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_bench::traffic::{Model, ModelGeo, Stream};
use warnseed_bench::{clock_ticks, cpu_seconds, machine, median, wait_for_idle, RunArgs};
use warnseed_ledger::{LedgerStore, LedgerWriter, SessionRecord, WriterConfig};

const TARGET_EVENTS_PER_SECOND: f64 = 500_000.0;
const TARGET_SHARE_OF_LIMIT: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WritePath {
    /// `LedgerWriter` fed from another thread (what a node does).
    Writer,
    /// `LedgerStore::append` of `--batch` records at a time, one thread.
    Append,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Geo {
    /// Every record's address looked up (country, city, coordinates;
    /// kommune for Norway), stored with each placed record.
    Model,
    /// No enricher: no geolocation rows, every address "unknown".
    None,
}

#[derive(Parser)]
#[command(about = "Durable ledger ingest (records/s) against a raw SQLite insert loop")]
struct Args {
    /// Sessions; each writes two records (open and close).
    #[arg(long, default_value_t = 1_000_000)]
    sessions: u64,
    /// Distinct downloader addresses.
    #[arg(long, default_value_t = 400_000)]
    addresses: u64,
    /// New decoys per day.
    #[arg(long, default_value_t = 20_000)]
    decoys_per_day: u64,
    /// Days the sessions are spread over.
    #[arg(long, default_value_t = 1)]
    days: u64,
    /// Records per transaction, both sides (the writer's `max_batch`;
    /// default: the writer's default).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, value_enum, default_value_t = WritePath::Writer)]
    path: WritePath,
    /// The writer's `rollup_delay`, ms: how long aggregates may trail the
    /// records under load (default: the writer's; 0 adds them with every
    /// batch).
    #[arg(long)]
    rollup_delay_ms: Option<u64>,
    #[arg(long, value_enum, default_value_t = Geo::Model)]
    geo: Geo,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run only one side (for profiling): `ledger` or `raw`. (`packed`,
    /// session 7's preview of the blocks' write path, went when the ledger
    /// itself began to store blocks.)
    #[arg(long)]
    only: Option<String>,
    /// Also walk the chain (`LedgerStore::verify`) after each round.
    #[arg(long)]
    verify: bool,
    /// The raw loop's table without its three indexes: the ceiling of a
    /// bare append into a rowid table of this width (not the limit the
    /// ledger is compared with).
    #[arg(long)]
    raw_without_indexes: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// The `sessions` table and indexes of the ledger's first layout (a row
/// per record, before blocks): the raw limit's table.
const RAW_SCHEMA: &str = "
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER NOT NULL,
    network TEXT NOT NULL,
    decoy_id INTEGER NOT NULL,
    info_hash BLOB NOT NULL,
    remote_ip TEXT NOT NULL,
    remote_port INTEGER NOT NULL,
    peer_id BLOB,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL,
    pieces_sent INTEGER NOT NULL,
    piece_count INTEGER NOT NULL,
    peer_pieces_initial INTEGER,
    peer_pieces_final INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    close_reason TEXT NOT NULL,
    ip_salt BLOB,
    ip_commitment BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    record_hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    session_key INTEGER NOT NULL
);
";
const RAW_INDEXES: &str = "
CREATE INDEX sessions_started ON sessions(started_at_ms);
CREATE INDEX sessions_ip ON sessions(remote_ip);
CREATE INDEX sessions_key ON sessions(session_key, kind);
";

/// The ledger's page size, read from a ledger the store created, so the
/// raw table is laid out alike.
fn ledger_page_size(path: &Path) -> Result<i64> {
    drop(LedgerStore::open(path)?);
    let conn = rusqlite::Connection::open(path)?;
    Ok(conn.query_row("PRAGMA page_size", [], |r| r.get(0))?)
}

/// The raw loop's page cache (KiB) and checkpoint interval (pages): what
/// `LedgerStore::open` sets (`crates/ledger/src/store.rs`); both are per
/// connection, so they cannot be read back from the file.
const CACHE_KIB: i64 = 65_536;
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_000;

/// One side's run: wall seconds and CPU seconds of this process (all
/// threads; the other engineers' load on the machine is not in it).
struct Timing {
    wall: f64,
    cpu: f64,
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Timing> {
    let ticks = clock_ticks();
    let pid = std::process::id();
    let cpu0 = cpu_seconds(pid, ticks)?;
    let start = Instant::now();
    f()?;
    let wall = start.elapsed().as_secs_f64();
    Ok(Timing {
        wall,
        cpu: cpu_seconds(pid, ticks)? - cpu0,
    })
}

/// The limit: records into an identical table, `batch` per transaction,
/// with the store's pragmas and durability.
fn raw_insert(
    path: &Path,
    records: &[SessionRecord],
    batch: usize,
    page_size: i64,
    indexes: bool,
) -> Result<Timing> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "page_size", page_size)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.execute_batch(RAW_SCHEMA)?;
    if indexes {
        conn.execute_batch(RAW_INDEXES)?;
    }
    // Fixed stand-ins of the right sizes for the salt and the three digests.
    let salt = [0x5au8; 16];
    let digest = [0xa5u8; 32];
    let mut ip = String::with_capacity(48);
    timed(|| {
        for chunk in records.chunks(batch) {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO sessions (id, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip,
                     remote_port, peer_id, client_name, client_version, transport, bytes_sent, pieces_sent,
                     piece_count, peer_pieces_initial, peer_pieces_final, completed, close_reason,
                     ip_salt, ip_commitment, prev_hash, record_hash, kind, session_key)
                     VALUES (NULL,?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24)",
                )?;
                for r in chunk {
                    // The stored form, as the ledger stores it (IPv4-mapped
                    // IPv6 as IPv4).
                    let canonical = canonical(r.remote_ip);
                    ip.clear();
                    write!(ip, "{canonical}").expect("writing to a String");
                    stmt.execute(rusqlite::params![
                        r.started_at_ms,
                        r.ended_at_ms,
                        r.network,
                        r.decoy_id,
                        &r.info_hash[..],
                        ip,
                        r.remote_port,
                        r.peer_id.as_ref().map(|p| &p[..]),
                        r.client_name,
                        r.client_version,
                        r.transport.as_str(),
                        r.bytes_sent as i64,
                        r.pieces_sent,
                        r.piece_count,
                        r.peer_pieces_initial,
                        r.peer_pieces_final,
                        r.completed,
                        r.close_reason,
                        &salt[..],
                        &digest[..],
                        &digest[..],
                        &digest[..],
                        r.kind.as_str(),
                        r.session_key,
                    ])?;
                }
            }
            tx.commit()?;
        }
        Ok(())
    })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The real path. Returns the timing and the records committed.
fn ledger_ingest(
    path: &Path,
    records: Vec<SessionRecord>,
    args: &Args,
    batch: usize,
    model: &Arc<Model>,
) -> Result<(Timing, u64)> {
    let enricher: Option<Box<dyn warnseed_ledger::Enricher>> = match args.geo {
        Geo::Model => Some(Box::new(ModelGeo(model.clone()))),
        Geo::None => None,
    };
    let mut committed = 0;
    let timing = match args.path {
        WritePath::Writer => {
            let config = WriterConfig {
                max_batch: batch,
                // Replayed far faster than real time: a batch spans half an
                // hour of sessions, whose open and close records a node
                // would commit apart. Every record is written, as the raw
                // loop writes them.
                coalesce_short_sessions: false,
                rollup_delay: args.rollup_delay_ms.map_or(
                    WriterConfig::default().rollup_delay,
                    std::time::Duration::from_millis,
                ),
                ..WriterConfig::default()
            };
            // Opening seals nothing (the ledger is new); the clock starts
            // with the first record and stops when `close` has committed
            // everything and sealed it.
            let writer = LedgerWriter::open_with(path, config, enricher)?;
            let tx = writer.sender();
            let mut writer = Some(writer);
            timed(|| {
                for r in records {
                    tx.send(r).context("writer gone")?;
                }
                drop(tx);
                committed = writer.take().expect("once").close()?;
                Ok(())
            })?
        }
        WritePath::Append => {
            let mut store = LedgerStore::open(path)?;
            if let Some(e) = enricher {
                store.set_enricher(e);
            }
            timed(|| {
                for chunk in records.chunks(batch) {
                    store.append(chunk)?;
                    committed += chunk.len() as u64;
                }
                Ok(())
            })?
        }
    };
    Ok((timing, committed))
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("median {:.0}, min {min:.0}, max {max:.0}", median(v))
}

fn ratios(v: &[f64]) -> String {
    v.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
}

fn remove_db(path: &Path) {
    for ext in ["sqlite", "sqlite-wal", "sqlite-shm"] {
        std::fs::remove_file(path.with_extension(ext)).ok();
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let batch = args.batch.unwrap_or(WriterConfig::default().max_batch);
    println!("machine: {}", machine());
    let model = Arc::new(Model::new(args.seed, args.addresses, args.decoys_per_day));
    let first_day = 20_454; // 2026-01-01
    let t = Instant::now();
    let records: Vec<SessionRecord> = Stream::new(&model, first_day, args.days, args.sessions)
        .map(|(s, kind)| model.record(&s, kind))
        .collect();
    let distinct: std::collections::HashSet<IpAddr> = records.iter().map(|r| r.remote_ip).collect();
    println!(
        "traffic: {} records ({} sessions, open and close) from {} distinct addresses over {} day(s), \
         generated in {:.1} s (not timed)",
        records.len(),
        args.sessions,
        distinct.len(),
        args.days,
        t.elapsed().as_secs_f64()
    );
    drop(distinct);
    let work = tempfile::Builder::new()
        .prefix("warnseed-ingest-")
        .tempdir_in(&args.run.workdir)
        .with_context(|| format!("work directory under {}", args.run.workdir.display()))?;
    let page_size = ledger_page_size(&work.path().join("probe.sqlite"))?;
    println!(
        "both sides: WAL, synchronous=FULL, page_size={page_size}, cache_size={CACHE_KIB} KiB, \
         wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}, {batch} records per transaction"
    );
    println!("warnseed side: {:?}, geolocation {:?}", args.path, args.geo);
    let quiet = || {
        if args.run.wait_idle > 0 {
            wait_for_idle(args.run.idle_below, Duration::from_secs(args.run.wait_idle));
        }
    };
    let n = records.len() as f64;
    let run_ledger = |round: usize| -> Result<Timing> {
        quiet();
        let path = work.path().join(format!("ledger-{round}.sqlite"));
        let (t, committed) = ledger_ingest(&path, records.clone(), &args, batch, &model)?;
        if committed != records.len() as u64 {
            bail!("the ledger committed {committed} of {} records", records.len());
        }
        println!(
            "  round {round}: warnseed ledger  {:>9.0} records/s ({:.2} s wall, {:.2} CPU s = {:.0} records per CPU s)",
            n / t.wall,
            t.wall,
            t.cpu,
            n / t.cpu
        );
        if args.verify {
            let t = Instant::now();
            let v = LedgerStore::open(&path)?.verify()?;
            if v.first_bad.is_some() || v.records != committed {
                bail!("verify: {v:?}");
            }
            println!(
                "  round {round}: chain verified: {} records, {} seal(s), in {:.2} s",
                v.records,
                v.seals,
                t.elapsed().as_secs_f64()
            );
        }
        if !args.run.keep {
            remove_db(&path);
        }
        Ok(t)
    };
    let run_raw = |round: usize| -> Result<Timing> {
        quiet();
        let path = work.path().join(format!("raw-{round}.sqlite"));
        let t = raw_insert(&path, &records, batch, page_size, !args.raw_without_indexes)?;
        println!(
            "  round {round}: raw SQLite insert {:>9.0} records/s ({:.2} s wall, {:.2} CPU s = {:.0} records per CPU s)",
            n / t.wall,
            t.wall,
            t.cpu,
            n / t.cpu
        );
        if !args.run.keep {
            remove_db(&path);
        }
        Ok(t)
    };
    let (mut raw, mut ledger) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        match args.only.as_deref() {
            Some("ledger") => {
                ledger.push(run_ledger(round)?);
                continue;
            }
            Some("raw") => {
                raw.push(run_raw(round)?);
                continue;
            }
            Some(other) => bail!("--only {other:?}: use ledger or raw"),
            None => {}
        }
        // Alternate which side goes first.
        if round % 2 == 0 {
            raw.push(run_raw(round)?);
            ledger.push(run_ledger(round)?);
        } else {
            ledger.push(run_ledger(round)?);
            raw.push(run_raw(round)?);
        }
        let (r, l) = (&raw[round], &ledger[round]);
        println!(
            "  round {round}: ratio {:.2} wall, {:.2} CPU",
            r.wall / l.wall,
            r.cpu / l.cpu
        );
    }
    let rate = |v: &[Timing], cpu: bool| -> Vec<f64> {
        v.iter().map(|t| n / if cpu { t.cpu } else { t.wall }).collect()
    };
    println!();
    println!("raw SQLite limit : {} records/s", spread(&rate(&raw, false)));
    println!("warnseed ledger  : {} records/s", spread(&rate(&ledger, false)));
    println!(
        "  per CPU second : raw {}; ledger {}",
        spread(&rate(&raw, true)),
        spread(&rate(&ledger, true))
    );
    let wall_ratios: Vec<f64> = raw.iter().zip(&ledger).map(|(r, l)| r.wall / l.wall).collect();
    let cpu_ratios: Vec<f64> = raw.iter().zip(&ledger).map(|(r, l)| r.cpu / l.cpu).collect();
    if !wall_ratios.is_empty() {
        println!(
            "ratio ledger/raw : median {:.2} wall (rounds {}), {:.2} CPU (rounds {})",
            median(&wall_ratios),
            ratios(&wall_ratios),
            median(&cpu_ratios),
            ratios(&cpu_ratios)
        );
    }
    if !ledger.is_empty() {
        let best = median(&rate(&ledger, false));
        println!(
            "targets          : >= {TARGET_EVENTS_PER_SECOND:.0} records/s: {}; >= {:.0} % of the limit: {}",
            if best >= TARGET_EVENTS_PER_SECOND {
                "meets"
            } else {
                "misses"
            },
            TARGET_SHARE_OF_LIMIT * 100.0,
            if wall_ratios.is_empty() {
                "not measured"
            } else if median(&wall_ratios) >= TARGET_SHARE_OF_LIMIT {
                "meets"
            } else {
                "misses"
            }
        );
    }
    if args.run.json {
        println!(
            "{}",
            json!({
                "records": records.len(), "sessions": args.sessions, "addresses": args.addresses,
                "days": args.days, "batch": batch, "path": format!("{:?}", args.path),
                "geo": format!("{:?}", args.geo),
                "raw_wall_s": raw.iter().map(|t| t.wall).collect::<Vec<_>>(),
                "raw_cpu_s": raw.iter().map(|t| t.cpu).collect::<Vec<_>>(),
                "ledger_wall_s": ledger.iter().map(|t| t.wall).collect::<Vec<_>>(),
                "ledger_cpu_s": ledger.iter().map(|t| t.cpu).collect::<Vec<_>>(),
            })
        );
    }
    if args.run.keep {
        let kept = work.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
