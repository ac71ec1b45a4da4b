//! Reports benchmark: how long the campaign reports take over a year of
//! synthetic traffic (100,000,000 sessions by default), on SQLite.
//!
//! ```text
//! cargo build --release -p warnseed-bench -j2
//! # a year's aggregates from 100M sessions, through rollup::Plan (no sessions table)
//! target/release/reports generate --out /work/tmp-bench/year.sqlite
//! # a full chained ledger of 5M sessions through LedgerWriter (hash chain, geolocation, aggregates)
//! target/release/reports generate --mode chained --sessions 5000000 --out /work/tmp-bench/chained.sqlite
//! target/release/reports time --ledger /work/tmp-bench/year.sqlite
//! target/release/reports selfcheck          # both paths agree on a small campaign
//! ```
//!
//! A chained ledger of 100M sessions (200M records, open and close) would
//! take over 100 GB and hours on this machine, so `generate` has two modes:
//!
//! - `aggregates`: the year's records are made in memory and fed, a day
//!   at a time, through the same code the ledger runs for every batch it
//!   commits (`rollup::Plan::new`, then `rollup::apply_sqlite` in one
//!   transaction), into a ledger file the store created. The sessions
//!   table stays empty; the aggregate tables are what the ledger would
//!   hold after those records. Address keys are the ledger's own HMAC
//!   (`LedgerStore::ip_key`), places come from the same model as the
//!   chained mode's enricher.
//! - `chained`: every record goes through `LedgerWriter` (hash chain,
//!   salts and commitments, geolocation rows, aggregates), as in a node.
//!
//! `selfcheck` runs both modes on a small campaign and checks that every
//! report agrees, so the aggregate-only year stands for a chained one.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_bench::traffic::{Model, ModelGeo, Stream};
use warnseed_bench::{machine, median, wait_for_idle};
use warnseed_ledger::report::{campaign_summary, report, Granularity, PeriodSelection, RollupSource};
use warnseed_ledger::rollup::{apply_sqlite_sets, periods, Plan, RollupRow};
use warnseed_ledger::{LedgerStore, LedgerWriter, RecordKind, WriterConfig};

const TARGET_SECONDS: f64 = 2.0;
const KOMMUNER_TOTAL: i64 = 357;
/// 2026-01-01.
const FIRST_DAY: i64 = 20_454;

#[derive(Parser)]
#[command(about = "Campaign reports over a year of synthetic sessions")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Aggregates only, through rollup::Plan (no sessions table).
    Aggregates,
    /// Every record through LedgerWriter: chain, geolocation, aggregates.
    Chained,
}

#[derive(clap::Args, Clone, Debug)]
struct Campaign {
    /// Sessions (each two records: open and close).
    #[arg(long, default_value_t = 100_000_000)]
    sessions: u64,
    /// UTC days from 2026-01-01.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Distinct downloader addresses.
    #[arg(long, default_value_t = 1_000_000)]
    addresses: u64,
    /// New decoys released per day.
    #[arg(long, default_value_t = 20_000)]
    decoys_per_day: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic year into a new ledger file.
    Generate {
        /// The ledger file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Mode::Aggregates)]
        mode: Mode,
        #[command(flatten)]
        campaign: Campaign,
    },
    /// Time the reports on a ledger file.
    Time {
        #[arg(long)]
        ledger: PathBuf,
        /// Runs of each report (each on a freshly opened store).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// First and last UTC day of the year reported (default 2026).
        #[arg(long, default_value_t = FIRST_DAY)]
        first_day: i64,
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Wait up to this many seconds for a quiet machine before each report.
        #[arg(long, default_value_t = 0)]
        wait_idle: u64,
        /// Also time `LedgerStore::summary` (reads every record).
        #[arg(long)]
        summary: bool,
        #[arg(long)]
        json: bool,
    },
    /// Generate a small campaign both ways and check the reports agree.
    Selfcheck {
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        #[arg(long, default_value_t = 40)]
        days: u64,
        #[arg(long, default_value_t = 20_000)]
        addresses: u64,
        #[arg(long, default_value = "/tmp")]
        workdir: PathBuf,
    },
}

/// Per address: its aggregate key under this ledger's secret, and place.
struct Population {
    keys: Vec<[u8; 16]>,
    places: Vec<Option<(usize, Option<usize>)>>,
}

fn population(model: &Model, store: &LedgerStore) -> Population {
    let (keys, places) = (0..model.addresses)
        .map(|a| {
            let ip = model.address(a);
            (store.ip_key(&ip.to_string()), model.place(ip))
        })
        .unzip();
    Population { keys, places }
}

fn file_size(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|ext| std::fs::metadata(format!("{}{ext}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn progress(done: u64, total: u64, start: Instant, what: &str) {
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "  {done} / {total} sessions ({:.1} %), {secs:.0} s, {:.0} sessions/s {what}",
        100.0 * done as f64 / total as f64,
        done as f64 / secs
    );
}

/// The aggregate-only year: records in memory, a day per plan.
fn generate_aggregates(out: &Path, c: &Campaign) -> Result<()> {
    let model = Arc::new(Model::new(c.seed, c.addresses, c.decoys_per_day));
    let store = LedgerStore::open(out)?;
    let t = Instant::now();
    let pop = Arc::new(population(&model, &store));
    drop(store);
    println!(
        "population: {} addresses keyed and placed in {:.1} s",
        c.addresses,
        t.elapsed().as_secs_f64()
    );
    let mut conn = rusqlite::Connection::open(out)?;
    // A synthetic file: no need to survive power loss while it is made.
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -2_000_000)?;
    // Plans are made on one thread while the other applies the last one.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Plan, u64, u64)>(2);
    let producer = {
        let (model, pop, c) = (model.clone(), pop.clone(), c.clone());
        std::thread::spawn(move || -> Result<(u64, f64)> {
            let mut stream = Stream::new(&model, FIRST_DAY, c.days, c.sessions);
            let mut rows: Vec<RollupRow<'_>> = Vec::with_capacity(1 << 20);
            let mut records = 0u64;
            let mut opened = 0u64;
            let mut day = 0;
            let mut plan_secs = 0.0;
            loop {
                let next = stream.next_event();
                // One plan per day of opens (the closes that came meanwhile
                // go with it), as a node commits batches in time order.
                if next.is_none() || stream.day() != day {
                    let t = Instant::now();
                    let plan = Plan::new(&rows);
                    plan_secs += t.elapsed().as_secs_f64();
                    records += rows.len() as u64;
                    rows.clear();
                    if tx.send((plan, records, opened)).is_err() {
                        break;
                    }
                    day = stream.day();
                }
                let Some((s, kind)) = next else { break };
                opened += u64::from(kind == RecordKind::Open);
                let a = s.address as usize;
                rows.push(model.rollup_row(&s, kind, pop.keys[a], pop.places[a]));
            }
            Ok((records, plan_secs))
        })
    };
    let start = Instant::now();
    let mut apply_secs = 0.0;
    let mut last_report = Instant::now();
    // Kept from commit to commit, as the ledger's writer keeps them.
    let mut sets = warnseed_ledger::uniques::UniqueSets::default();
    for (plan, _, opened) in rx {
        let t = Instant::now();
        let txn = conn.transaction()?;
        apply_sqlite_sets(&txn, &plan, &mut sets)?;
        txn.commit()?;
        apply_secs += t.elapsed().as_secs_f64();
        if last_report.elapsed() > Duration::from_secs(60) {
            progress(opened, c.sessions, start, "");
            last_report = Instant::now();
        }
    }
    let (records, plan_secs) = producer.join().expect("producer thread")?;
    let secs = start.elapsed().as_secs_f64();
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    println!(
        "generated: {} sessions = {records} records in {secs:.0} s ({:.0} records/s); \
         plans {plan_secs:.0} s on one thread, applying {apply_secs:.0} s on the other",
        c.sessions,
        records as f64 / secs
    );
    Ok(())
}

/// The chained ledger: every record through `LedgerWriter`.
fn generate_chained(out: &Path, c: &Campaign) -> Result<()> {
    let model = Arc::new(Model::new(c.seed, c.addresses, c.decoys_per_day));
    // Replayed far faster than real time: every record is written, as a
    // node writes sessions that outlast its commit window.
    let config = WriterConfig {
        coalesce_short_sessions: false,
        ..WriterConfig::default()
    };
    let writer = LedgerWriter::open_with(out, config, Some(Box::new(ModelGeo(model.clone()))))?;
    let tx = writer.sender();
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut records = 0u64;
    let mut opened = 0u64;
    for (s, kind) in Stream::new(&model, FIRST_DAY, c.days, c.sessions) {
        opened += u64::from(kind == RecordKind::Open);
        records += 1;
        tx.send(model.record(&s, kind)).context("writer gone")?;
        if last_report.elapsed() > Duration::from_secs(60) {
            progress(opened, c.sessions, start, "");
            last_report = Instant::now();
        }
    }
    drop(tx);
    let committed = writer.close()?;
    let secs = start.elapsed().as_secs_f64();
    if committed != records {
        bail!("the writer committed {committed} of {records} records");
    }
    println!(
        "generated: {} sessions = {records} records in {secs:.0} s ({:.0} records/s) through LedgerWriter",
        c.sessions,
        records as f64 / secs
    );
    Ok(())
}

fn table_rows(path: &Path) -> Result<Vec<(String, i64)>> {
    let conn = rusqlite::Connection::open(path)?;
    let mut out = Vec::new();
    for t in [
        "record_blocks",
        "rollup_daily",
        "rollup_runs",
        "rollup_ip",
        "rollup_repeat",
    ] {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
        out.push((t.to_string(), n));
    }
    Ok(out)
}

/// One timed report: a fresh store each round; returns the seconds of
/// each round and the last result as text.
fn time_one(
    ledger: &Path,
    rounds: usize,
    wait_idle: u64,
    f: &dyn Fn(&mut LedgerStore) -> Result<String>,
) -> Result<(Vec<f64>, String)> {
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..rounds {
        if wait_idle > 0 {
            wait_for_idle(0.15, Duration::from_secs(wait_idle));
        }
        let mut store = LedgerStore::open(ledger)?;
        let t = Instant::now();
        text = f(&mut store)?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((times, text))
}

type Report = (&'static str, Box<dyn Fn(&mut LedgerStore) -> Result<String>>);

/// The reports timed, over the days first..=last.
fn reports(first: i64, last: i64) -> Vec<Report> {
    let year = periods(first)[3].clone();
    vec![
        (
            "yearly summary: report(all, year)",
            Box::new(move |s: &mut LedgerStore| {
                let rows = report(s, "all", first, last, Granularity::Year).map_err(anyhow::Error::msg)?;
                Ok(serde_json::to_string(&rows)?)
            }),
        ),
        (
            "campaign_summary",
            Box::new(move |s: &mut LedgerStore| {
                let c = campaign_summary(s, first, last, KOMMUNER_TOTAL).map_err(anyhow::Error::msg)?;
                Ok(c.sentence)
            }),
        ),
        (
            "per country for the year: report(country, year)",
            Box::new(move |s: &mut LedgerStore| {
                let rows =
                    report(s, "country", first, last, Granularity::Year).map_err(anyhow::Error::msg)?;
                Ok(format!("{} countries", rows.len()))
            }),
        ),
        (
            "unique IPs per year: uniques(all, year)",
            Box::new(move |s: &mut LedgerStore| {
                let n = s
                    .uniques("all", &PeriodSelection::Exact(year.clone()))
                    .map_err(anyhow::Error::msg)?;
                Ok(format!("{:?}", n))
            }),
        ),
        (
            "repeat downloaders per year: repeats(year)",
            Box::new(move |s: &mut LedgerStore| {
                Ok(format!("{}", s.repeats(first, last).map_err(anyhow::Error::msg)?))
            }),
        ),
        (
            "per month: report(all, month)",
            Box::new(move |s: &mut LedgerStore| {
                let rows = report(s, "all", first, last, Granularity::Month).map_err(anyhow::Error::msg)?;
                Ok(format!("{} months", rows.len()))
            }),
        ),
        (
            "per kommune for the year: report(kommune, year)",
            Box::new(move |s: &mut LedgerStore| {
                let rows =
                    report(s, "kommune", first, last, Granularity::Year).map_err(anyhow::Error::msg)?;
                Ok(format!("{} kommuner", rows.len()))
            }),
        ),
    ]
}

fn time_reports(
    ledger: &Path,
    rounds: usize,
    first: i64,
    days: i64,
    wait_idle: u64,
    summary: bool,
    json_out: bool,
) -> Result<()> {
    println!("machine: {}", machine());
    let size = file_size(ledger);
    println!("ledger: {} ({:.2} GB)", ledger.display(), size as f64 / 1e9);
    for (t, n) in table_rows(ledger)? {
        println!("  {t:<15} {n:>13} rows");
    }
    let last = first + days - 1;
    let mut results = Vec::new();
    for (name, f) in reports(first, last) {
        let (times, text) = time_one(ledger, rounds, wait_idle, &*f)?;
        let med = median(&times);
        let max = times.iter().copied().fold(0.0, f64::max);
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{name:<50} median {med:>7.3} s (min {min:.3}, max {max:.3}; first {:.3})  {}",
            times[0],
            if max <= TARGET_SECONDS {
                "<= 2 s: meets"
            } else {
                "> 2 s: misses"
            }
        );
        let short: String = text.chars().take(300).collect();
        println!("    {short}");
        results.push(json!({"report": name, "seconds": times}));
    }
    if summary {
        let (times, text) = time_one(ledger, 1, wait_idle, &|s: &mut LedgerStore| {
            Ok(format!("{:?}", s.summary()?))
        })?;
        println!(
            "LedgerStore::summary (every record)             {:.3} s  {text}",
            times[0]
        );
        results.push(json!({"report": "summary", "seconds": times}));
    }
    if json_out {
        println!("{}", json!({"ledger": ledger, "bytes": size, "results": results}));
    }
    Ok(())
}

fn selfcheck(sessions: u64, days: u64, addresses: u64, workdir: &Path) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("warnseed-reports-")
        .tempdir_in(workdir)?;
    let c = Campaign {
        sessions,
        days,
        addresses,
        decoys_per_day: 500,
        seed: 7,
    };
    let (a, b) = (
        dir.path().join("aggregates.sqlite"),
        dir.path().join("chained.sqlite"),
    );
    generate_aggregates(&a, &c)?;
    generate_chained(&b, &c)?;
    let (first, last) = (FIRST_DAY, FIRST_DAY + days as i64 - 1);
    let mut checked = 0;
    for by in [
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
        Granularity::Total,
    ] {
        for dim in warnseed_ledger::rollup::DIMENSIONS {
            let run = |p: &Path| -> Result<String> {
                let mut s = LedgerStore::open(p)?;
                let rows = report(&mut s, dim, first, last, by).map_err(anyhow::Error::msg)?;
                Ok(serde_json::to_string(&rows)?)
            };
            let (x, y) = (run(&a)?, run(&b)?);
            if x != y {
                bail!("{dim} by {by:?} differs:\naggregates {x}\nchained    {y}");
            }
            checked += 1;
        }
    }
    let sum = |p: &Path| -> Result<String> {
        let mut s = LedgerStore::open(p)?;
        Ok(format!(
            "{:?}",
            campaign_summary(&mut s, first, last, KOMMUNER_TOTAL).map_err(anyhow::Error::msg)?
        ))
    };
    let (x, y) = (sum(&a)?, sum(&b)?);
    if x != y {
        bail!("campaign summaries differ:\n{x}\n{y}");
    }
    println!("selfcheck: {checked} reports and the campaign summary agree between the two modes");
    println!("  {y}");
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Generate { out, mode, campaign } => {
            if out.exists() {
                bail!("{} exists: generate writes a new file", out.display());
            }
            println!("machine: {}", machine());
            println!(
                "campaign: {} sessions over {} days from 2026-01-01, {} addresses, {} new decoys a day; mode {mode:?}",
                campaign.sessions, campaign.days, campaign.addresses, campaign.decoys_per_day
            );
            match mode {
                Mode::Aggregates => generate_aggregates(&out, &campaign)?,
                Mode::Chained => generate_chained(&out, &campaign)?,
            }
            println!("file: {:.2} GB", file_size(&out) as f64 / 1e9);
            Ok(())
        }
        Command::Time {
            ledger,
            rounds,
            first_day,
            days,
            wait_idle,
            summary,
            json,
        } => time_reports(&ledger, rounds, first_day, days, wait_idle, summary, json),
        Command::Selfcheck {
            sessions,
            days,
            addresses,
            workdir,
        } => selfcheck(sessions, days, addresses, &workdir),
    }
}
