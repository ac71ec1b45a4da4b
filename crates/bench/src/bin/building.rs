//! Building benchmark: how long a day's release of decoys takes to build
//! (metainfo and piece hashes) with the rendered warning payloads, in each
//! fill mode, against the machine's SHA-1 limit measured in the same run by
//! `openssl speed sha1` on every core.
//!
//! ```text
//! cargo run --release -j2 -p warnseed-bench --bin building                       # 20,000 decoys
//! cargo run --release -j2 -p warnseed-bench --bin building -- --unique-decoys 8   # quicker
//! ```
//!
//! Zero fill shares every padding piece, so building costs a few SHA-1
//! blocks per decoy. Unique fill hashes every byte of every decoy: the
//! figure that matters is its throughput against the SHA-1 limit, and the
//! time a day's release would take at that rate.

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use warnseed_bench::{machine, wait_for_idle, write_catalogue_csv, RunArgs, GIB};
use warnseed_bittorrent::session::SeedContent;
use warnseed_catalog::{import_file, CatalogStore};
use warnseed_payload::FillMode;
use warnseed_seeder::{DecoyTable, LoadProgress};

const TARGET_ZEROS_SECONDS: f64 = 10.0;
const TARGET_UNIQUE_SHARE: f64 = 0.80;

#[derive(Parser)]
#[command(about = "Time to build decoys with rendered payloads, zeros and unique fill")]
struct Args {
    /// Decoys built with zero fill (a day's release).
    #[arg(long, default_value_t = 20_000)]
    decoys: u64,
    /// Decoys built with unique fill (every byte hashed: keep it small).
    #[arg(long, default_value_t = 16)]
    unique_decoys: u64,
    /// Seed of the deterministic size mix (100 MiB–4 GiB, see SIZE_MIX).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seconds per `openssl speed` run.
    #[arg(long, default_value_t = 3)]
    openssl_seconds: u32,
    #[command(flatten)]
    run: RunArgs,
}

/// SHA-1 bytes per second from `openssl speed` at 16 KiB blocks (a BitTorrent
/// block; larger buffers hash no faster), on `threads` processes.
fn openssl_sha1(threads: usize, seconds: u32) -> Result<f64> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", &seconds.to_string(), "-bytes", "16384"]);
    if threads > 1 {
        cmd.args(["-multi", &threads.to_string()]);
    }
    cmd.arg("sha1");
    let out = cmd
        .output()
        .context("running openssl speed (Debian package openssl)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line naming sha1 ends with the rate in thousands of bytes/s.
    let line = text
        .lines()
        .rfind(|l| l.trim_start().starts_with("sha1"))
        .with_context(|| format!("no sha1 line in openssl output: {text}"))?;
    let rate = line
        .split_whitespace()
        .last()
        .and_then(|f| f.strip_suffix('k'))
        .and_then(|f| f.parse::<f64>().ok())
        .with_context(|| format!("cannot read a rate from {line:?}"))?;
    Ok(rate * 1000.0)
}

struct Bar(Option<ProgressBar>);

impl LoadProgress for Bar {
    fn hashing(&mut self, total: u64) {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template("  hashing [{bar:40}] {pos}/{len} decoys ({elapsed}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.0 = Some(pb);
    }
    fn hashed(&mut self, done: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(done);
        }
    }
}

/// Builds `n` decoys in `fill` mode through the node's own load path
/// (catalogue → info hashes, piece-hash file for unique fill), then every
/// decoy's metainfo. Returns (seconds to load, seconds for metainfo, bytes
/// of decoys, decoys).
fn build(dir: &Path, n: u64, seed: u64, fill: FillMode) -> Result<(f64, f64, u64, usize)> {
    std::fs::create_dir_all(dir)?;
    let csv = dir.join("catalogue.csv");
    let total = write_catalogue_csv(&csv, n, seed, true)?;
    let mut store = CatalogStore::open(&dir.join("catalog.sqlite"))?;
    import_file(&mut store, &csv, |_| {})?;
    let cfg = warnseed::config::PayloadConfig {
        fill,
        ..Default::default()
    };
    let set = Arc::new(warnseed::payloads::rendered_payload_set(dir, &cfg)?);
    let started = Instant::now();
    let mut bar = Bar(None);
    let table = DecoyTable::load(&mut store, set, Some(&dir.join("piece-hashes.bin")), &mut bar)?;
    if let Some(pb) = bar.0 {
        pb.finish_and_clear();
    }
    let load = started.elapsed().as_secs_f64();
    let table = Arc::new(table);
    let started = Instant::now();
    let mut meta_bytes = 0usize;
    for d in table.iter() {
        meta_bytes += d.metadata().len();
        debug_assert_eq!(d.metadata_len(), d.metadata().len());
    }
    let meta = started.elapsed().as_secs_f64();
    if meta_bytes == 0 {
        bail!("no metainfo built");
    }
    Ok((load, meta, total, table.len()))
}

/// Bytes per second of the sha1 crate over 16 KiB buffers, and of keyed
/// fill generation, on one core (256 MiB each).
fn component_rates() -> (f64, f64) {
    use sha1::{Digest, Sha1};
    const TOTAL: usize = 256 << 20;
    let mut buf = vec![0u8; 16 * 1024];
    let fill = warnseed_payload::Fill::Keyed(0x1234_5678);
    fill.write(0, &mut buf);
    let started = Instant::now();
    let mut h = Sha1::new();
    for _ in 0..TOTAL / buf.len() {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    let sha = TOTAL as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..(TOTAL / buf.len()) as u64 {
        fill.write(i * buf.len() as u64, &mut buf);
        std::hint::black_box(&buf);
    }
    let gen = TOTAL as f64 / started.elapsed().as_secs_f64();
    (sha, gen)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("# warnseed building benchmark");
    println!("machine: {}", machine());
    let tmp = tempfile::Builder::new()
        .prefix("warnseed-bench-building-")
        .tempdir_in(&args.run.workdir)?;
    let dir = tmp.path().to_path_buf();

    if args.run.wait_idle > 0 {
        wait_for_idle(
            args.run.idle_below,
            std::time::Duration::from_secs(args.run.wait_idle),
        );
    }
    let one = openssl_sha1(1, args.openssl_seconds)?;
    let all = openssl_sha1(threads, args.openssl_seconds)?;
    println!(
        "SHA-1 limit (openssl speed sha1, 16 KiB blocks): {:.0} MB/s on 1 core, {:.0} MB/s on {threads} cores",
        one / 1e6,
        all / 1e6
    );

    // The two parts of unique fill's cost, on one core: what our SHA-1
    // does against openssl's, and what generating keyed bytes adds.
    let (ours, fill_rate) = component_rates();
    println!(
        "one core: SHA-1 (sha1 crate) {:.0} MB/s = {:.0}% of openssl's; keyed fill generation {:.0} MB/s",
        ours / 1e6,
        ours / one * 100.0,
        fill_rate / 1e6
    );

    let started = Instant::now();
    let cfg = warnseed::config::PayloadConfig::default();
    let set = warnseed::payloads::rendered_payload_set(&dir, &cfg)?;
    let render = started.elapsed().as_secs_f64();
    println!(
        "rendering the payload set ({} variants, en+nb): {render:.2} s",
        set.variants().len()
    );

    println!("zero fill: {} decoys, sizes 100 MiB–4 GiB ...", args.decoys);
    let (z_load, z_meta, z_bytes, z_n) = build(&dir.join("zeros"), args.decoys, args.seed, FillMode::Zeros)?;
    let naive = z_bytes as f64 / all;
    println!(
        "  info hashes {z_load:.2} s + metainfo {z_meta:.2} s = {:.2} s for {z_n} decoys ({:.1} TB of decoys; \
         hashing every byte at the SHA-1 limit would take {:.0} s, {:.0}× longer); target ≤ {TARGET_ZEROS_SECONDS} s: {}",
        z_load + z_meta,
        z_bytes as f64 / 1e12,
        naive,
        naive / (z_load + z_meta),
        if z_load + z_meta <= TARGET_ZEROS_SECONDS { "met" } else { "NOT met" }
    );

    println!("unique fill: {} decoys, same size mix ...", args.unique_decoys);
    let (u_load, u_meta, u_bytes, u_n) = build(
        &dir.join("unique"),
        args.unique_decoys,
        args.seed,
        FillMode::Unique,
    )?;
    // The limit is measured again after the run, and the higher of the two
    // is used: on a shared machine that is the conservative choice.
    let all_after = openssl_sha1(threads, args.openssl_seconds)?;
    println!(
        "  SHA-1 limit again after the run: {:.0} MB/s on {threads} cores",
        all_after / 1e6
    );
    let all = all.max(all_after);
    let rate = u_bytes as f64 / u_load;
    let share = rate / all;
    let per_day = z_bytes as f64 / z_n as f64 * args.decoys as f64 / rate;
    println!(
        "  {u_n} decoys, {:.1} GiB hashed in {u_load:.1} s (+ metainfo {u_meta:.2} s): {:.0} MB/s = {:.0}% of the SHA-1 limit \
         on {threads} cores; target ≥ {:.0}%: {}",
        u_bytes as f64 / GIB as f64,
        rate / 1e6,
        share * 100.0,
        TARGET_UNIQUE_SHARE * 100.0,
        if share >= TARGET_UNIQUE_SHARE { "met" } else { "NOT met" }
    );
    println!(
        "  → {} decoys of this mix with unique fill: {:.1} h on this machine",
        args.decoys,
        per_day / 3600.0
    );
    if args.run.json {
        println!(
            "{}",
            json!({
                "threads": threads,
                "openssl_sha1_one_core": one,
                "openssl_sha1_all_cores": all,
                "render_seconds": render,
                "zeros": {"decoys": z_n, "bytes": z_bytes, "info_hash_seconds": z_load, "metainfo_seconds": z_meta},
                "unique": {"decoys": u_n, "bytes": u_bytes, "seconds": u_load, "metainfo_seconds": u_meta,
                           "bytes_per_second": rate, "share_of_sha1_limit": share},
            })
        );
    }
    if args.run.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
