//! Serving benchmark: throughput and seeder CPU per GiB of `warnseed run`
//! against a libtorrent seeder serving byte-identical files, each downloaded
//! by a fresh libtorrent downloader, in the same run. Loopback only:
//!
//! - warnseed listens on 127.0.0.1, the libtorrent seeder (bench/lt_seed.py)
//!   on 127.0.0.3, the downloader (bench/lt_fetch.py) binds 127.0.0.2.
//!
//! ```text
//! cargo build --release -j1 && target/release/serving              # 20 × 64 MiB, 3 rounds
//! target/release/serving --decoys 4 --size-mib 16 --rounds 1       # quick check
//! ```
//!
//! Seeder CPU is utime + stime of the seeder process (all threads) from
//! /proc/PID/stat, read just before the downloader starts and 1 s after it
//! exits. Nothing here asserts on time.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_bench::RunArgs;
use warnseed_bench::{
    clock_ticks, cpu_seconds, loadavg, machine, machine_jiffies, median, run_json, script, wait_for_idle,
    workspace_root, Proc, GIB, MIB, PYTHON,
};
use warnseed_catalog::CatalogStore;
use warnseed_ledger::LedgerStore;
use warnseed_payload::{FillMode, PayloadSet, BUILTIN_WARNING};
use warnseed_seeder::DecoyTable;

const WARNSEED_ADDR: &str = "127.0.0.1";
const DOWNLOADER_ADDR: &str = "127.0.0.2";
const LT_SEEDER_ADDR: &str = "127.0.0.3";

#[derive(Parser)]
#[command(about = "Serving throughput and CPU of warnseed against libtorrent")]
struct Args {
    /// Number of decoys (each downloaded once per round).
    #[arg(long, default_value_t = 20)]
    decoys: u64,
    /// Size of each decoy in MiB.
    #[arg(long, default_value_t = 64)]
    size_mib: u64,
    /// Rounds; each downloads everything from both seeders, alternating
    /// which goes first.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// libtorrent seeder settings: `default` or `high_performance_seed`.
    #[arg(long, default_value = "default")]
    lt_profile: String,
    /// Warning payload (default: warnseed's built-in text warning).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// The warnseed binary (default: target/release/warnseed of this workspace).
    #[arg(long)]
    warnseed: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

struct Run {
    side: &'static str,
    round: u32,
    seconds: f64,
    bytes: u64,
    seeder_cpu: f64,
    downloader_cpu: f64,
    other_cpu: f64,
    hash_failures: u64,
}

impl Run {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.seconds
    }
    fn cpu_per_gib(&self) -> f64 {
        self.seeder_cpu / (self.bytes as f64 / GIB as f64)
    }
}

/// Where a download run reads and writes.
struct Paths<'a> {
    torrents: &'a Path,
    out: &'a Path,
    log: &'a Path,
}

fn download(
    paths: &Paths<'_>,
    side: &'static str,
    round: u32,
    (seeder_pid, peer): (u32, &str),
    ticks: f64,
) -> Result<Run> {
    let Paths { torrents, out, log } = *paths;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script("lt_fetch.py"))
        .arg("--torrents")
        .arg(torrents)
        .arg("--peer")
        .arg(peer)
        .arg("--bind")
        .arg(DOWNLOADER_ADDR)
        .arg("--out")
        .arg(out);
    let (busy0, _) = machine_jiffies();
    let cpu0 = cpu_seconds(seeder_pid, ticks)?;
    let v = run_json("lt_fetch.py", &mut cmd, Some(log))?;
    // Let the seeder see the connections close (warnseed registers them).
    std::thread::sleep(Duration::from_secs(1));
    let cpu1 = cpu_seconds(seeder_pid, ticks)?;
    let (busy1, _) = machine_jiffies();
    std::fs::remove_dir_all(out)?;
    let seeder_cpu = cpu1 - cpu0;
    let downloader_cpu = v["downloader_cpu_seconds"].as_f64().unwrap_or(0.0);
    let busy = (busy1 - busy0) as f64 / ticks;
    let run = Run {
        side,
        round,
        seconds: v["seconds"].as_f64().context("seconds")?,
        bytes: v["bytes"].as_u64().context("bytes")?,
        seeder_cpu,
        downloader_cpu,
        other_cpu: (busy - seeder_cpu - downloader_cpu).max(0.0),
        hash_failures: v["hash_failures"].as_u64().unwrap_or(0),
    };
    println!(
        "round {round} {side:<10}: {:.2} s, {:.1} MiB/s, seeder CPU {:.2} s ({:.2} s/GiB), downloader CPU {:.2} s, rest of machine {:.2} s, hash failures {}",
        run.seconds,
        run.mib_s(),
        run.seeder_cpu,
        run.cpu_per_gib(),
        run.downloader_cpu,
        run.other_cpu,
        run.hash_failures
    );
    Ok(run)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let warnseed = args
        .warnseed
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/warnseed"));
    if !warnseed.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -j1`",
            warnseed.display()
        );
    }
    let ticks = clock_ticks();
    println!("# warnseed serving benchmark");
    println!("machine: {}", machine());
    println!(
        "{} decoys × {} MiB, {} round(s), libtorrent seeder profile {}",
        args.decoys, args.size_mib, args.rounds, args.lt_profile
    );

    let tmp = tempfile::Builder::new()
        .prefix("warnseed-bench-serving-")
        .tempdir_in(&args.run.workdir)?;
    let dir = tmp.path().to_path_buf();
    let node = dir.join("node");
    let torrents = dir.join("torrents");
    let files = dir.join("files");
    let log = dir.join("bench.log");
    std::fs::create_dir_all(&files)?;

    // Catalogue, node, exported .torrent files.
    let csv = dir.join("catalogue.csv");
    let size = args.size_mib * MIB;
    let mut text = String::from("title,size_bytes,campaign,language\n");
    for i in 0..args.decoys {
        text.push_str(&format!("sample-title-{:06}.mp4,{size},bench,en\n", i + 1));
    }
    std::fs::write(&csv, text)?;
    let ws = |a: &[&std::ffi::OsStr]| -> Result<()> {
        let out = Command::new(&warnseed)
            .args(a)
            .arg("--log")
            .arg("warn")
            .output()
            .with_context(|| format!("running {}", warnseed.display()))?;
        if !out.status.success() {
            bail!(
                "warnseed {:?} failed: {}",
                a,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    ws(&["init".as_ref(), "--data".as_ref(), node.as_os_str()])?;
    // One downloader opens one connection per decoy from one address;
    // the default per-IP cap (16) would refuse the rest.
    let cfg_path = node.join("warnseed.toml");
    let cfg = std::fs::read_to_string(&cfg_path)?;
    let cap = args.decoys.max(16) * 4;
    let patched = cfg.replace(
        "max_connections_per_ip = 16",
        &format!("max_connections_per_ip = {cap}"),
    );
    if patched == cfg {
        bail!("could not raise max_connections_per_ip in {}", cfg_path.display());
    }
    std::fs::write(&cfg_path, patched)?;
    ws(&[
        "catalog".as_ref(),
        "import".as_ref(),
        csv.as_os_str(),
        "--data".as_ref(),
        node.as_os_str(),
    ])?;
    let export: Vec<&std::ffi::OsStr> = vec![
        "decoys".as_ref(),
        "export".as_ref(),
        "--format".as_ref(),
        "torrent".as_ref(),
        "--out".as_ref(),
        torrents.as_os_str(),
        "--data".as_ref(),
        node.as_os_str(),
    ];
    // The payload is configured per node: point the configuration at the
    // file when one is given (export and run both read it).
    // Without --payload, the built-in text warning is that file: the
    // benchmark is about serving, not about the rendered variants.
    let payload_path = match &args.payload {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("payload.txt");
            std::fs::write(&p, BUILTIN_WARNING)?;
            p
        }
    };
    {
        let p = &payload_path;
        let cfg = std::fs::read_to_string(&cfg_path)?;
        let abs = p.canonicalize()?;
        let line = format!("file = {:?}", abs.display().to_string());
        let patched = if cfg.contains("[payload]") {
            cfg.replacen("[payload]", &format!("[payload]\n{line}"), 1)
        } else {
            format!("{cfg}\n[payload]\n{line}\n")
        };
        std::fs::write(&cfg_path, patched)?;
    }
    ws(&export)?;

    // The same bytes on disk for libtorrent: payload then zeros.
    let t = Instant::now();
    let payload = Arc::new(PayloadSet::single(
        std::fs::read(&payload_path)?,
        "benchmark payload",
        FillMode::Zeros,
        Vec::new(),
    )?);
    let table = {
        let mut store = CatalogStore::open(&node.join("catalog.sqlite"))?;
        Arc::new(DecoyTable::load(&mut store, payload, None, &mut ())?)
    };
    for d in table.iter() {
        let mut f = std::fs::File::create(files.join(d.title()))?;
        d.layout().write_all(&mut f, false)?;
    }
    println!(
        "materialised {} files ({:.0} MiB) for libtorrent in {:.1} s",
        table.len(),
        (table.len() as u64 * size) as f64 / MIB as f64,
        t.elapsed().as_secs_f64()
    );
    drop(table);

    // Seeders.
    let ws_log = std::fs::File::create(dir.join("warnseed.log"))?;
    let mut ws_cmd = Command::new(&warnseed);
    ws_cmd
        .arg("run")
        .arg("--data")
        .arg(&node)
        .arg("--listen")
        .arg(format!("{WARNSEED_ADDR}:0"))
        .stdout(Stdio::piped())
        .stderr(ws_log);
    let mut ws_proc = Proc::spawn("warnseed run", &mut ws_cmd)?;
    let ready = ws_proc.wait_for_line("ready ", Duration::from_secs(120))?;
    let ws_peer = ready
        .split_whitespace()
        .find_map(|f| f.strip_prefix("listen="))
        .and_then(|l| l.split(',').next())
        .context("no listen= in ready line")?
        .to_string();
    println!("warnseed: {ready}");

    let mut lt_cmd = Command::new(PYTHON);
    lt_cmd
        .arg(script("lt_seed.py"))
        .arg("--torrents")
        .arg(&torrents)
        .arg("--files")
        .arg(&files)
        .arg("--bind")
        .arg(LT_SEEDER_ADDR)
        .arg("--profile")
        .arg(&args.lt_profile)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("lt_seed.log"))?);
    let mut lt_proc = Proc::spawn("lt_seed.py", &mut lt_cmd)?;
    let lt_ready: Value = serde_json::from_str(&lt_proc.wait_for_line("{", Duration::from_secs(600))?)?;
    if lt_ready["ok"] != json!(true) {
        bail!("libtorrent seeder failed: {lt_ready}");
    }
    let lt_peer = format!("{LT_SEEDER_ADDR}:{}", lt_ready["port"]);
    println!("libtorrent seeder: {lt_ready}");
    println!("load average before the runs: {}", loadavg());

    let mut runs = Vec::new();
    let dl = dir.join("download");
    let paths = Paths {
        torrents: &torrents,
        out: &dl,
        log: &log,
    };
    for round in 1..=args.rounds {
        let ws_first = round % 2 == 1;
        for first in [true, false] {
            if args.run.wait_idle > 0 {
                let share = wait_for_idle(args.run.idle_below, Duration::from_secs(args.run.wait_idle));
                println!(
                    "machine busy before the next run: {:.0}% of all CPUs",
                    share * 100.0
                );
            }
            if first == ws_first {
                runs.push(download(
                    &paths,
                    "warnseed",
                    round,
                    (ws_proc.pid(), &ws_peer),
                    ticks,
                )?);
            } else {
                runs.push(download(
                    &paths,
                    "libtorrent",
                    round,
                    (lt_proc.pid(), &lt_peer),
                    ticks,
                )?);
            }
        }
    }
    println!("load average after the runs: {}", loadavg());

    // Stop both seeders; warnseed flushes its ledger on SIGTERM.
    let clean = ws_proc.terminate(Duration::from_secs(30))?;
    lt_proc.terminate(Duration::from_secs(10))?;
    let summary = LedgerStore::open(&node.join("ledger.sqlite"))?.summary()?;
    let expected = u64::from(args.rounds) * args.decoys;
    println!(
        "warnseed ledger: {} sessions, {} completed downloads (expected {expected}), {:.0} MiB sent; graceful stop: {}",
        summary.sessions,
        summary.completed,
        summary.bytes_sent as f64 / MIB as f64,
        if clean { "yes" } else { "NO" }
    );

    // Summary.
    let side = |name: &str| runs.iter().filter(|r| r.side == name).collect::<Vec<_>>();
    let (w, l) = (side("warnseed"), side("libtorrent"));
    let med = |v: &[&Run], f: fn(&Run) -> f64| median(&v.iter().map(|r| f(r)).collect::<Vec<_>>());
    let w_tp = med(&w, Run::mib_s);
    let l_tp = med(&l, Run::mib_s);
    let w_cpu = med(&w, Run::cpu_per_gib);
    let l_cpu = med(&l, Run::cpu_per_gib);
    println!();
    println!(
        "medians over {} round(s), {} × {} MiB per run:",
        args.rounds, args.decoys, args.size_mib
    );
    println!("| seeder | wall s | MiB/s | seeder CPU s | seeder CPU s/GiB | downloader CPU s | rest of machine CPU s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [("warnseed", &w), ("libtorrent", &l)] {
        println!(
            "| {name} | {:.2} | {:.1} | {:.2} | {:.3} | {:.2} | {:.2} |",
            med(v, |r| r.seconds),
            med(v, Run::mib_s),
            med(v, |r| r.seeder_cpu),
            med(v, Run::cpu_per_gib),
            med(v, |r| r.downloader_cpu),
            med(v, |r| r.other_cpu),
        );
    }
    let tp_ratio = w_tp / l_tp;
    let cpu_ratio = w_cpu / l_cpu;
    println!();
    println!(
        "throughput ratio warnseed ÷ libtorrent: {tp_ratio:.2} (target ≥ 1: {})",
        if tp_ratio >= 1.0 { "meets" } else { "MISSES" }
    );
    println!(
        "CPU per GiB ratio warnseed ÷ libtorrent: {cpu_ratio:.2} (target ≤ 0.5: {})",
        if cpu_ratio <= 0.5 { "meets" } else { "MISSES" }
    );
    if args.run.json {
        let rows: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({"side": r.side, "round": r.round, "seconds": r.seconds, "bytes": r.bytes,
                       "seeder_cpu": r.seeder_cpu, "downloader_cpu": r.downloader_cpu,
                       "other_cpu": r.other_cpu, "hash_failures": r.hash_failures})
            })
            .collect();
        println!(
            "{}",
            json!({"runs": rows, "throughput_ratio": tp_ratio, "cpu_per_gib_ratio": cpu_ratio,
                   "ledger_completed": summary.completed, "lt_seeder": lt_ready})
        );
    }
    if summary.completed != expected {
        eprintln!(
            "warning: the ledger has {} completed downloads, expected {expected}",
            summary.completed
        );
    }
    if args.run.keep {
        println!("kept {}", tmp.keep().display());
    }
    Ok(())
}
