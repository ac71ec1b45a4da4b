//! Capacity benchmark: how many decoys one node holds, what each costs in
//! memory, and how long loading them takes; against a libtorrent session
//! holding the same torrents (bench/lt_capacity.py), measured in the same run.
//!
//! ```text
//! cargo run --release -j1 -p warnseed-bench --bin capacity               # full: 1,000,000 titles
//! cargo run --release -j1 -p warnseed-bench --bin capacity -- --titles 100000 --lt-seconds 20
//! ```
//!
//! Each load runs in a fresh child process (this binary with `--child-load`)
//! so its RSS baseline is clean and the warm load is what a restarted
//! `warnseed run` sees.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_bench::RunArgs;
use warnseed_bench::{
    machine, run_json, script, self_rss, size_for, status_bytes, title, wait_for_idle, write_catalogue_csv,
    PYTHON,
};
use warnseed_bittorrent::metainfo::hex;
use warnseed_bittorrent::metainfo::{piece_length_for, InfoFields};
use warnseed_bittorrent::session::SeedContent;
use warnseed_catalog::{import_file, CatalogStore};
use warnseed_payload::{piece_hash, FillMode, PayloadSet, BUILTIN_WARNING};
use warnseed_seeder::DecoyTable;

const TARGET_BYTES_PER_DECOY: f64 = 256.0;
const TARGET_LOAD_SECONDS: f64 = 5.0;

#[derive(Parser)]
#[command(about = "Decoy-table capacity of warnseed against libtorrent")]
struct Args {
    /// Titles to generate and import.
    #[arg(long, default_value_t = 1_000_000)]
    titles: u64,
    /// Seed of the deterministic size mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Leave size_bytes empty: every decoy is payload-sized (one piece).
    #[arg(long)]
    no_sizes: bool,
    /// Warning payload (default: the built-in text warning).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// How long libtorrent may spend adding torrents.
    #[arg(long, default_value_t = 120.0)]
    lt_seconds: f64,
    /// Stop libtorrent when its RSS grew by this much (the machine is shared).
    #[arg(long, default_value_t = 6144.0)]
    lt_max_rss_mib: f64,
    /// Most torrents to give libtorrent (default: --titles).
    #[arg(long)]
    lt_titles: Option<u64>,
    /// Measure warnseed only.
    #[arg(long)]
    skip_lt: bool,
    /// Single-thread probe of the info-hash cost on this many titles, as
    /// computed today and with the all-zero piece's hash memoised (0: skip).
    #[arg(long, default_value_t = 20_000)]
    hash_probe: u64,
    /// Internal: load the decoy table from this catalogue, print JSON, exit.
    #[arg(long, hide = true)]
    child_load: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

fn payload_bytes(path: Option<&Path>) -> Result<Vec<u8>> {
    Ok(match path {
        Some(p) => std::fs::read(p)?,
        None => BUILTIN_WARNING.as_bytes().to_vec(),
    })
}

/// The node serves one payload file for every title here (`payload.file`),
/// so the capacity figures are about the table, not the rendered variants.
fn load_payload(path: Option<&Path>) -> Result<Arc<PayloadSet>> {
    Ok(Arc::new(PayloadSet::single(
        payload_bytes(path)?,
        "benchmark payload",
        FillMode::Zeros,
        Vec::new(),
    )?))
}

/// One load in this (fresh) process: RSS before and after, the table's own
/// count of heap bytes, and the info hashes of the first three titles.
fn child_load(catalogue: &Path, payload: Option<&Path>) -> Result<()> {
    let payload = load_payload(payload)?;
    let mut store = CatalogStore::open(catalogue)?;
    let count = store.count()?;
    let rss_before = self_rss()?;
    let started = Instant::now();
    let table = DecoyTable::load(&mut store, payload, None, &mut ())?;
    let seconds = started.elapsed().as_secs_f64();
    let rss_after = self_rss()?;
    let hwm = status_bytes("self", "VmHWM")?;
    let table = Arc::new(table);
    let mut samples = serde_json::Map::new();
    for d in table.iter() {
        if d.id() <= 3 {
            samples.insert(d.id().to_string(), json!(hex(d.info_hash())));
        }
    }
    println!(
        "{}",
        json!({
            "ok": true,
            "catalogue_rows": count,
            "decoys": table.len(),
            "seconds": seconds,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "vm_hwm": hwm,
            "heap_bytes": table.heap_bytes(),
            "samples": samples,
        })
    );
    Ok(())
}

/// Microseconds per decoy to compute info hashes of titles `0..n` on one
/// thread, and the first three hashes (checked against the table's).
fn hash_probe(payloads: Arc<PayloadSet>, n: u64, seed: u64, sizes: bool) -> (f64, Vec<String>) {
    let v = payloads.variant(0);
    let rows: Vec<(String, u64)> = (0..n)
        .map(|i| (title(i), v.nearest_size(sizes.then(|| size_for(seed, i)))))
        .collect();
    let t = Instant::now();
    let hashes: Vec<[u8; 20]> = rows
        .iter()
        .map(|r| {
            let f = InfoFields {
                name: &r.0,
                length: r.1,
                piece_length: piece_length_for(r.1),
            };
            let layout = payloads.layout(0, r.1, f.piece_length, payloads.fill_for_title(&r.0), None);
            f.info_hash(|i| piece_hash(&layout, i))
        })
        .collect();
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (us, hashes.iter().take(3).map(|h| hex(h)).collect())
}

fn mib(b: f64) -> f64 {
    b / (1 << 20) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(cat) = &args.child_load {
        return child_load(cat, args.payload.as_deref());
    }
    println!("# warnseed capacity benchmark");
    println!("machine: {}", machine());
    println!(
        "titles: {}, seed {}, sizes: {}",
        args.titles,
        args.seed,
        if args.no_sizes {
            "none (payload-sized)"
        } else {
            "100 MiB–4 GiB mix"
        }
    );

    let tmp = tempfile::Builder::new()
        .prefix("warnseed-bench-capacity-")
        .tempdir_in(&args.run.workdir)?;
    let dir = tmp.path().to_path_buf();
    let csv = dir.join("catalogue.csv");
    let db = dir.join("catalog.sqlite");

    let quiet = |what: &str| {
        if args.run.wait_idle > 0 {
            let share = wait_for_idle(args.run.idle_below, Duration::from_secs(args.run.wait_idle));
            println!("machine busy before {what}: {:.0}% of all CPUs", share * 100.0);
        }
    };

    let t = Instant::now();
    let total_bytes = write_catalogue_csv(&csv, args.titles, args.seed, !args.no_sizes)?;
    let gen_s = t.elapsed().as_secs_f64();
    let csv_bytes = std::fs::metadata(&csv)?.len();
    println!(
        "generated {} ({:.1} MiB, {:.2} TiB of decoys) in {gen_s:.2} s",
        csv.display(),
        mib(csv_bytes as f64),
        total_bytes as f64 / (1u64 << 40) as f64
    );

    quiet("the import");
    let t = Instant::now();
    {
        let mut store = CatalogStore::open(&db)?;
        let out = import_file(&mut store, &csv, |_| {})?;
        if out.added != args.titles {
            bail!("imported {} of {} titles", out.added, args.titles);
        }
    }
    let import_s = t.elapsed().as_secs_f64();
    println!(
        "import: {import_s:.2} s ({:.0} titles/s)",
        args.titles as f64 / import_s
    );

    let me = std::env::current_exe()?;
    let load = |label: &str| -> Result<Value> {
        quiet(label);
        let mut cmd = Command::new(&me);
        cmd.arg("--child-load").arg(&db);
        if let Some(p) = &args.payload {
            cmd.arg("--payload").arg(p);
        }
        let v = run_json(label, &mut cmd, None)?;
        let rss_delta = v["rss_after"].as_f64().unwrap_or(0.0) - v["rss_before"].as_f64().unwrap_or(0.0);
        let n = v["decoys"].as_f64().unwrap_or(1.0).max(1.0);
        println!(
            "{label}: {} decoys in {:.2} s, RSS {:.1} → {:.1} MiB (peak {:.1} MiB), {:.1} B/decoy RSS, {:.1} B/decoy heap_bytes()",
            v["decoys"],
            v["seconds"].as_f64().unwrap_or(0.0),
            mib(v["rss_before"].as_f64().unwrap_or(0.0)),
            mib(v["rss_after"].as_f64().unwrap_or(0.0)),
            mib(v["vm_hwm"].as_f64().unwrap_or(0.0)),
            rss_delta / n,
            v["heap_bytes"].as_f64().unwrap_or(0.0) / n,
        );
        Ok(v)
    };
    let cold = load("cold load (info hashes computed)")?;
    let warm = load("warm load (info hashes cached)")?;
    if cold["samples"] != warm["samples"] {
        bail!("cold and warm loads disagree on info hashes");
    }

    let probe = if args.hash_probe > 0 {
        let n = args.hash_probe.min(args.titles);
        quiet("the info-hash probe");
        let (us, first) = hash_probe(
            load_payload(args.payload.as_deref())?,
            n,
            args.seed,
            !args.no_sizes,
        );
        let agrees = first
            .iter()
            .enumerate()
            .all(|(i, h)| warm["samples"].get((i + 1).to_string()) == Some(&json!(h)));
        println!(
            "info-hash probe, 1 thread, {n} titles: {us:.1} µs/decoy (same as the table: {})",
            if agrees { "yes" } else { "NO" },
        );
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        println!(
            "  → hashing alone for {} decoys on {threads} threads: {:.1} s",
            args.titles,
            us * args.titles as f64 / 1e6 / threads,
        );
        Some(json!({"titles": n, "us_per_decoy": us, "agrees_with_table": agrees}))
    } else {
        None
    };

    let lt = if args.skip_lt {
        None
    } else {
        let payload_file = dir.join("payload.bin");
        std::fs::write(&payload_file, payload_bytes(args.payload.as_deref())?)?;
        let lt_titles = args.lt_titles.unwrap_or(args.titles);
        println!(
            "libtorrent: adding up to {lt_titles} torrents for up to {} s (RSS growth cap {} MiB) ...",
            args.lt_seconds, args.lt_max_rss_mib
        );
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("lt_capacity.py"))
            .arg("--payload")
            .arg(&payload_file)
            .arg("--titles")
            .arg(lt_titles.to_string())
            .arg("--seconds")
            .arg(args.lt_seconds.to_string())
            .arg("--max-rss-mib")
            .arg(args.lt_max_rss_mib.to_string())
            .arg("--seed")
            .arg(args.seed.to_string());
        if args.no_sizes {
            cmd.arg("--no-sizes");
        }
        quiet("libtorrent");
        let v = run_json("lt_capacity.py", &mut cmd, None)?;
        println!(
            "libtorrent {}: {} torrents added in {:.1} s (stopped by {}), RSS +{:.1} MiB, {:.0} B/torrent",
            v["libtorrent"].as_str().unwrap_or("?"),
            v["torrents_added"],
            v["add_seconds"].as_f64().unwrap_or(0.0),
            v["stop_reason"].as_str().unwrap_or("?"),
            mib(v["rss_delta"].as_f64().unwrap_or(0.0)),
            v["bytes_per_torrent"].as_f64().unwrap_or(f64::NAN),
        );
        let matches = v["samples"]
            .as_object()
            .map(|m| m.iter().all(|(k, h)| warm["samples"].get(k) == Some(h)) && !m.is_empty())
            .unwrap_or(false);
        println!(
            "info hashes of the first titles identical in warnseed and libtorrent: {}",
            if matches { "yes" } else { "NO" }
        );
        Some((v, matches))
    };

    // Summary.
    let n = warm["decoys"].as_f64().context("decoys")?;
    let rss_bpd =
        (warm["rss_after"].as_f64().unwrap_or(0.0) - warm["rss_before"].as_f64().unwrap_or(0.0)) / n;
    let heap_bpd = warm["heap_bytes"].as_f64().unwrap_or(0.0) / n;
    let cold_s = cold["seconds"].as_f64().unwrap_or(0.0);
    let warm_s = warm["seconds"].as_f64().unwrap_or(0.0);
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!();
    println!("| measure | warnseed | target | libtorrent |");
    println!("|---|---:|---:|---:|");
    println!("| titles imported | {} | | |", args.titles);
    println!("| import time | {import_s:.2} s | | |");
    println!(
        "| cold load (hashes computed) | {cold_s:.2} s | ≤ {TARGET_LOAD_SECONDS} s ({}) | |",
        verdict(cold_s <= TARGET_LOAD_SECONDS)
    );
    println!(
        "| warm load (hashes cached) | {warm_s:.2} s | ≤ {TARGET_LOAD_SECONDS} s ({}) | |",
        verdict(warm_s <= TARGET_LOAD_SECONDS)
    );
    let (lt_bpt, lt_added, lt_secs) = match &lt {
        Some((v, _)) => (
            v["bytes_per_torrent"].as_f64().unwrap_or(f64::NAN),
            v["torrents_added"].as_u64().unwrap_or(0),
            v["add_seconds"].as_f64().unwrap_or(f64::NAN),
        ),
        None => (f64::NAN, 0, f64::NAN),
    };
    println!(
        "| decoys / torrents held | {} | | {lt_added} in {lt_secs:.1} s |",
        n as u64
    );
    println!(
        "| bytes per decoy, RSS delta | {rss_bpd:.1} | ≤ {TARGET_BYTES_PER_DECOY} ({}) | {lt_bpt:.0} |",
        verdict(rss_bpd <= TARGET_BYTES_PER_DECOY)
    );
    println!(
        "| bytes per decoy, heap_bytes() | {heap_bpd:.1} | ≤ {TARGET_BYTES_PER_DECOY} ({}) | |",
        verdict(heap_bpd <= TARGET_BYTES_PER_DECOY)
    );
    if lt.is_some() {
        println!();
        println!(
            "ratio libtorrent bytes/torrent ÷ warnseed bytes/decoy (RSS): {:.0}×",
            lt_bpt / rss_bpd
        );
        println!(
            "ratio libtorrent bytes/torrent ÷ warnseed bytes/decoy (heap_bytes): {:.0}×",
            lt_bpt / heap_bpd
        );
        println!(
            "projected libtorrent RSS for {} torrents: {:.1} GiB",
            n as u64,
            lt_bpt * n / (1u64 << 30) as f64
        );
    }
    if args.run.json {
        println!(
            "{}",
            json!({
                "titles": args.titles,
                "import_seconds": import_s,
                "cold": cold,
                "warm": warm,
                "libtorrent": lt.as_ref().map(|(v, _)| v.clone()),
                "info_hashes_match": lt.as_ref().map(|(_, m)| *m),
                "hash_probe": probe,
            })
        );
    }
    if args.run.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
