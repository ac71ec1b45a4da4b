//! Metadata service benchmark (BENCHMARKS.md section 5): BEP 9 metadata
//! fetches per second, each on a fresh TCP connection, as DHT indexers
//! (bitmagnet, magnetico-style crawlers) make them, against warnseed's real
//! `PeerServer` over a million decoys, and against libtorrent seeding a
//! thousand of the same torrents. Loopback only:
//!
//! - `metadata_load serve`: the warnseed side, in its own process. A
//!   synthetic decoy table (titles `sample-title-NNNNNN.{mp4,mkv,avi}`, the
//!   capacity benchmark's size mix, 100 MiB–4 GiB), a ledger writer on a
//!   fresh SQLite ledger (every session is registered, as in `warnseed run`),
//!   `PeerServer` on 127.0.0.1. Writes every info hash to `hashes.bin` and
//!   the first `--lt-export` decoys as `.torrent` files for libtorrent.
//! - `metadata_load load`: the load generator, in another process. Open
//!   loop: fetch `i` is due at `t0 + i / rate` whatever happened to the ones
//!   before, so a slow server cannot slow the generator down and hide its
//!   latency (coordinated omission). Each fetch connects from one of many
//!   loopback source addresses (127.1.x.y), sends the handshake with the
//!   extension bit and the BEP 10 handshake, reads the server's, requests
//!   every metadata piece at once, checks that the SHA-1 of the assembled
//!   info dictionary is the info hash, and closes. Latency runs from the
//!   time the fetch was due to the last metadata byte.
//! - `metadata_load` with no subcommand: the driver. Starts both seeders,
//!   steps through `--rates`, runs one generator process per step and side,
//!   and prints a table with the ratio against the target (10,000 fetches/s,
//!   p99 ≤ 50 ms).
//!
//! ```text
//! cargo build --release -p warnseed-bench -j2
//! target/release/metadata_load                                  # 2k, 5k, 10k, 15k/s, 20 s each
//! target/release/metadata_load --decoys 20000 --lt-torrents 200 --rates 1000,3000 --duration 5   # quick check
//! ```
//!
//! Nothing here asserts on time: it measures and prints.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warnseed_bench::{
    clock_ticks, cpu_seconds, machine, machine_jiffies, mix64, run_json, script, size_for, title,
    wait_for_idle, Proc, RunArgs, PYTHON,
};
use warnseed_bittorrent::bencode;
use warnseed_bittorrent::metainfo::hex;
use warnseed_bittorrent::session::{LocalIdentity, SeedContent};
use warnseed_bittorrent::wire::{Handshake, HANDSHAKE_LEN, METADATA_PIECE, PROTOCOL_HEADER};
use warnseed_ledger::{LedgerStore, LedgerWriter, WriterConfig};
use warnseed_payload::{FillMode, PayloadSet, BUILTIN_WARNING};
use warnseed_seeder::{DecoyTable, PeerServer, ServerConfig};

/// The target of issue #4.
const TARGET_RATE: f64 = 10_000.0;
const TARGET_P99_MS: f64 = 50.0;

const WARNSEED_ADDR: &str = "127.0.0.1";
const LT_SEEDER_ADDR: &str = "127.0.0.3";

/// Our id for `ut_metadata` in the BEP 10 handshake we send; the seeder
/// sends its answers under it.
const OUR_UT_METADATA: u8 = 3;
/// Largest info dictionary the generator accepts (the decoys' are < 100 KB).
const MAX_METADATA: usize = 8 << 20;

#[derive(Parser)]
#[command(
    about = "BEP 9 metadata fetches per second on fresh connections: warnseed against libtorrent",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    drive: DriveArgs,
}

#[derive(Subcommand)]
enum Mode {
    /// The warnseed seeder: prints `ready listen=ADDR ...`, serves until
    /// SIGTERM, then writes `serve-summary.json` (ledger counts) in --dir.
    Serve(ServeArgs),
    /// The load generator: prints one JSON line of results.
    Load(LoadArgs),
}

#[derive(clap::Args)]
struct DriveArgs {
    /// Target rates in fetches per second, one step each.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000.0, 5_000.0, 10_000.0, 15_000.0])]
    rates: Vec<f64>,
    /// Seconds of load per step.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Decoys warnseed serves (fetches pick among all of them uniformly).
    #[arg(long, default_value_t = 1_000_000)]
    decoys: u64,
    /// Seed of the deterministic size mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Torrents libtorrent seeds (the first ones of warnseed's table).
    #[arg(long, default_value_t = 1_000)]
    lt_torrents: u64,
    /// libtorrent settings: `default` or `high_performance_seed`.
    #[arg(long, default_value = "default")]
    lt_profile: String,
    /// Measure warnseed only.
    #[arg(long)]
    skip_lt: bool,
    /// Also load warnseed with libtorrent's set of torrents (same info
    /// hashes on both sides), to separate table size from server cost.
    #[arg(long)]
    warnseed_small_set: bool,
    /// Generator threads (each a single-threaded event loop).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Loopback source addresses the generator spreads connections over
    /// (127.1.0.0 and up). With 16,384, even 15,000 fetches/s that each
    /// hang for the whole 6 s budget keep under 6 connections per address,
    /// well inside warnseed's per-IP cap of 16.
    #[arg(long, default_value_t = 16_384)]
    sources: u32,
    /// Per-IP connection cap of the warnseed server (warnseed's default: 16).
    #[arg(long, default_value_t = 16)]
    max_connections_per_ip: usize,
    /// warnseed's log filter (`warnseed run` logs at `info`: one line per session).
    #[arg(long, default_value = "info")]
    log: String,
    /// Keep the million-title catalogue here and load it warm on later runs
    /// (otherwise the table is built with every info hash computed, ~30 s).
    #[arg(long)]
    catalogue_cache: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Work directory: hashes.bin, ledger.sqlite, lt-torrents/, serve-summary.json.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    decoys: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 16)]
    max_connections_per_ip: usize,
    /// Write the first N decoys (info-hash order) as .torrent files and
    /// their hashes as lt-hashes.bin.
    #[arg(long, default_value_t = 0)]
    lt_export: u64,
    /// Log filter; logs go to stderr.
    #[arg(long, default_value = "info")]
    log: String,
    #[arg(long)]
    catalogue_cache: Option<PathBuf>,
    /// Time building the metadata of this many decoys, as served, and check
    /// it hashes to their info hashes, before serving (0: skip).
    #[arg(long, default_value_t = 20_000)]
    probe: usize,
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// The seeder (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// Info hashes to pick from uniformly: 20 bytes each.
    #[arg(long)]
    hashes: PathBuf,
    /// Fetches per second (open loop).
    #[arg(long)]
    rate: f64,
    /// Seconds over which fetches are started.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// A fetch still running this long after it was due fails (crawlers
    /// give up after about 6 s).
    #[arg(long, default_value_t = 6.0)]
    timeout: f64,
    /// Source addresses 127.1.0.0 + 0..N, round robin.
    #[arg(long, default_value_t = 16_384)]
    sources: u32,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Most fetches in flight per thread; a fetch due beyond it is counted
    /// as an error (`generator_full`), not delayed.
    #[arg(long, default_value_t = 8_000)]
    max_in_flight: usize,
    /// Seed of the info-hash picks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn is_loopback(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::Serve(a)) => serve(a),
        Some(Mode::Load(a)) => {
            let v = load(&a)?;
            println!("{v}");
            Ok(())
        }
        None => drive(cli.drive),
    }
}

// ---------------------------------------------------------------------------
// The warnseed side.

fn build_table(a: &ServeArgs, payload: Arc<PayloadSet>) -> Result<DecoyTable> {
    let Some(cache) = &a.catalogue_cache else {
        let titles: Vec<String> = (0..a.decoys).map(title).collect();
        let rows = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, t.as_str(), Some(size_for(a.seed, i as u64))));
        return Ok(DecoyTable::from_titles(payload, rows));
    };
    std::fs::create_dir_all(cache)?;
    let db = cache.join(format!("catalog-{}-{}.sqlite", a.decoys, a.seed));
    let mut store = warnseed_catalog::CatalogStore::open(&db)?;
    if store.count()? != a.decoys {
        drop(store);
        std::fs::remove_file(&db)?;
        let csv = cache.join("catalogue.csv");
        warnseed_bench::write_catalogue_csv(&csv, a.decoys, a.seed, true)?;
        store = warnseed_catalog::CatalogStore::open(&db)?;
        warnseed_catalog::import_file(&mut store, &csv, |_| {})?;
        std::fs::remove_file(&csv)?;
    }
    Ok(DecoyTable::load(&mut store, payload, None, &mut ())?)
}

fn write_hashes(path: &Path, hashes: impl Iterator<Item = [u8; 20]>) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for h in hashes {
        w.write_all(&h)?;
    }
    w.flush()?;
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    if !is_loopback(a.listen.ip()) {
        bail!("refusing to listen on {}: loopback (127.0.0.0/8) only", a.listen);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&a.log))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    std::fs::create_dir_all(&a.dir)?;
    let payload = Arc::new(PayloadSet::single(
        BUILTIN_WARNING.as_bytes().to_vec(),
        "benchmark payload",
        FillMode::Zeros,
        Vec::new(),
    )?);
    let started = Instant::now();
    let table = Arc::new(build_table(&a, payload)?);
    let build_s = started.elapsed().as_secs_f64();
    write_hashes(&a.dir.join("hashes.bin"), table.iter().map(|d| *d.info_hash()))?;
    let meta_bytes: u64 = table.iter().map(|d| d.metadata_len() as u64).sum();
    if a.probe > 0 {
        let p = metadata_probe(&table, a.probe);
        let line = format!(
            "probe: building the metadata of {} decoys on one thread: {:.1} µs per fetch as served (hash to their info hashes: {})\n",
            a.probe,
            p.served_us,
            if p.checked { "yes" } else { "NO" }
        );
        print!("{line}");
        std::fs::write(a.dir.join("probe.txt"), line)?;
    }
    if a.lt_export > 0 {
        let out = a.dir.join("lt-torrents");
        std::fs::create_dir_all(&out)?;
        for d in table.iter().take(a.lt_export as usize) {
            std::fs::write(
                out.join(format!("{}.torrent", hex(d.info_hash()))),
                d.torrent_file(&[]),
            )?;
        }
        write_hashes(
            &a.dir.join("lt-hashes.bin"),
            table.iter().take(a.lt_export as usize).map(|d| *d.info_hash()),
        )?;
    }
    let ledger_path = a.dir.join("ledger.sqlite");
    // As `warnseed run` with the default configuration (100 ms batches).
    let writer = LedgerWriter::open(&ledger_path, WriterConfig::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        let addr = listener.local_addr()?;
        let mut config = ServerConfig::new(LocalIdentity {
            peer_id: warnseed_seeder::new_peer_id(warnseed_seeder::DEFAULT_PEER_ID_PREFIX),
            client_version: warnseed_seeder::DEFAULT_CLIENT_VERSION.into(),
            listen_port: addr.port(),
        });
        config.max_connections_per_ip = a.max_connections_per_ip;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = PeerServer::new(Arc::clone(&table), config, writer.sender());
        let serving = tokio::spawn(server.serve(vec![listener], stop_rx));
        println!(
            "ready listen={addr} decoys={} build_seconds={build_s:.2} mean_metadata_bytes={:.0}",
            table.len(),
            meta_bytes as f64 / table.len().max(1) as f64
        );
        std::io::stdout().flush()?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
        serving.await?;
        anyhow::Ok(())
    });
    drop(runtime);
    served?;
    let records = writer.close()?;
    let store = LedgerStore::open(&ledger_path)?;
    let summary = store.summary()?;
    std::fs::write(
        a.dir.join("serve-summary.json"),
        json!({
            "ok": true,
            "records": records,
            "sessions": summary.sessions,
            "unterminated": summary.unterminated,
            "decoys": table.len(),
            "build_seconds": build_s,
        })
        .to_string(),
    )?;
    Ok(())
}

/// What [`metadata_probe`] measured.
struct Probe {
    served_us: f64,
    /// Every probed decoy's windows, joined, hash to its info hash.
    checked: bool,
}

/// Server-side CPU of building every metadata piece of one decoy (what one
/// fetch costs besides the network and the ledger), over `n` decoys picked
/// uniformly, as `PeerServer` serves it (`SeedContent::metadata_range`).
/// One thread, before any load; the bytes are checked apart from the timing.
fn metadata_probe(table: &Arc<DecoyTable>, n: usize) -> Probe {
    let decoys: Vec<_> = (0..n as u64)
        .filter_map(|i| table.info_hash_at((mix64(i ^ 0x5EED) % table.len() as u64) as usize))
        .filter_map(|h| table.lookup(&h))
        .collect();
    let mut out = Vec::with_capacity(METADATA_PIECE);
    let mut sink = 0usize;
    let t = Instant::now();
    for d in &decoys {
        let total = d.metadata_len();
        for start in (0..total).step_by(METADATA_PIECE) {
            out.clear();
            d.metadata_range(start, (start + METADATA_PIECE).min(total), &mut out);
            sink += out.len();
        }
    }
    let served = t.elapsed().as_secs_f64();
    let expected: usize = decoys.iter().map(|d| d.metadata_len()).sum();
    let checked = sink == expected
        && decoys.iter().take(2_000).all(|d| {
            let total = d.metadata_len();
            let mut hasher = Sha1::new();
            for start in (0..total).step_by(METADATA_PIECE) {
                out.clear();
                d.metadata_range(start, (start + METADATA_PIECE).min(total), &mut out);
                hasher.update(&out);
            }
            <[u8; 20]>::from(hasher.finalize()) == *d.info_hash()
        });
    Probe {
        served_us: served * 1e6 / decoys.len().max(1) as f64,
        checked,
    }
}

// ---------------------------------------------------------------------------
// The load generator.

/// Latency histogram: exact below 1,024 µs, then 64 buckets per power of
/// two (under 1.6 % error) up to u64::MAX µs. Quantiles report the bucket's
/// upper bound, so they never flatter.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    const LINEAR: u64 = 1024;
    const SUB_BITS: u32 = 6;

    fn new() -> Self {
        Self {
            counts: vec![0; Self::LINEAR as usize + (64 - 10) * 64],
            total: 0,
            max: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < Self::LINEAR {
            return us as usize;
        }
        let e = 63 - us.leading_zeros();
        let sub = (us >> (e - Self::SUB_BITS)) & 63;
        Self::LINEAR as usize + (e as usize - 10) * 64 + sub as usize
    }

    fn upper(index: usize) -> u64 {
        if (index as u64) < Self::LINEAR {
            return index as u64;
        }
        let i = index - Self::LINEAR as usize;
        let e = (i / 64) as u32 + 10;
        let sub = (i % 64) as u64;
        let shift = e - Self::SUB_BITS;
        ((64 + sub) << shift) + ((1u64 << shift) - 1)
    }

    fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[Self::index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Quantile `q` (0..=1) in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// connect() failed (refused, no ports, ...).
    Connect,
    /// The seeder closed before its handshake: a connection cap or an
    /// unknown info hash.
    ClosedBeforeHandshake,
    /// The seeder closed or reset after its handshake.
    Closed,
    Io,
    Timeout,
    /// A message we could not make sense of.
    Protocol,
    /// A `ut_metadata` reject.
    Rejected,
    /// The assembled info dictionary does not hash to the info hash.
    BadHash,
    /// Due while `--max-in-flight` fetches were running: not started.
    GeneratorFull,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::ClosedBeforeHandshake => "closed_before_handshake",
            Failure::Closed => "closed",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
            Failure::Protocol => "protocol",
            Failure::Rejected => "rejected",
            Failure::BadHash => "bad_hash",
            Failure::GeneratorFull => "generator_full",
        }
    }
}

#[derive(Clone)]
struct ThreadStats {
    latency: Histogram,
    /// How late the generator started fetches (its own health).
    lag: Histogram,
    ok: u64,
    failures: BTreeMap<Failure, u64>,
    bytes: u64,
    metadata_bytes: u64,
    in_flight: usize,
    max_in_flight: usize,
}

impl ThreadStats {
    fn new() -> Self {
        Self {
            latency: Histogram::new(),
            lag: Histogram::new(),
            ok: 0,
            failures: BTreeMap::new(),
            bytes: 0,
            metadata_bytes: 0,
            in_flight: 0,
            max_in_flight: 0,
        }
    }
    fn fail(&mut self, f: Failure) {
        *self.failures.entry(f).or_insert(0) += 1;
    }
}

/// What one fetch sends first: the handshake (extension bit set) and our
/// BEP 10 handshake, in one write, as crawlers do.
fn opening(info_hash: &[u8; 20], peer_id: [u8; 20]) -> Vec<u8> {
    let mut reserved = [0u8; 8];
    reserved[5] |= 0x10;
    let mut out = Handshake {
        reserved,
        info_hash: *info_hash,
        peer_id,
    }
    .encode()
    .to_vec();
    const CLIENT: &str = "warnseed-metadata-load";
    let ext = format!(
        "d1:md11:ut_metadatai{OUR_UT_METADATA}ee1:v{}:{CLIENT}e",
        CLIENT.len()
    );
    out.extend_from_slice(&((ext.len() + 2) as u32).to_be_bytes());
    out.extend_from_slice(&[20, 0]);
    out.extend_from_slice(ext.as_bytes());
    out
}

fn metadata_request(out: &mut Vec<u8>, their_id: u8, piece: usize) {
    let body = format!("d8:msg_typei0e5:piecei{piece}ee");
    out.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    out.extend_from_slice(&[20, their_id]);
    out.extend_from_slice(body.as_bytes());
}

/// The metadata being checked. Pieces are hashed as they arrive, in order,
/// straight from the read buffer; only a piece that arrives ahead of its
/// turn is copied aside (seeders answer in order, so that is rare).
struct Assembly {
    size: usize,
    pieces: usize,
    /// The next piece to hash.
    next: usize,
    hasher: Sha1,
    ahead: BTreeMap<usize, Vec<u8>>,
}

impl Assembly {
    fn piece_len(&self, piece: usize) -> usize {
        (self.size - piece * METADATA_PIECE).min(METADATA_PIECE)
    }

    fn add(&mut self, piece: usize, data: &[u8]) -> Result<(), Failure> {
        if piece >= self.pieces || data.len() != self.piece_len(piece) {
            return Err(Failure::Protocol);
        }
        if piece < self.next {
            return Ok(()); // a duplicate
        }
        if piece > self.next {
            self.ahead.entry(piece).or_insert_with(|| data.to_vec());
            return Ok(());
        }
        self.hasher.update(data);
        self.next += 1;
        while let Some(d) = self.ahead.remove(&self.next) {
            self.hasher.update(&d);
            self.next += 1;
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.next == self.pieces
    }
}

/// One fetch: connect, handshakes, every metadata piece, SHA-1 check.
/// Returns the bytes read and the size of the info dictionary.
async fn fetch(
    target: SocketAddr,
    source: IpAddr,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
) -> Result<(u64, usize), Failure> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|_| Failure::Connect)?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|_| Failure::Connect)?;
    let mut stream = socket.connect(target).await.map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&opening(&info_hash, peer_id))
        .await
        .map_err(|_| Failure::Io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut pos = 0usize;
    let mut shook = false;
    let mut assembly: Option<Assembly> = None;
    let mut bytes = 0u64;
    let mut requests = Vec::new();
    loop {
        // Parse everything complete in the buffer.
        if !shook && buf.len() - pos >= HANDSHAKE_LEN {
            let hs = &buf[pos..pos + HANDSHAKE_LEN];
            if hs[..20] != PROTOCOL_HEADER[..] || hs[28..48] != info_hash {
                return Err(Failure::Protocol);
            }
            shook = true;
            pos += HANDSHAKE_LEN;
        }
        while shook && buf.len() - pos >= 4 {
            let len = u32::from_be_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            if len > METADATA_PIECE + 1024 {
                // Bitfields of the decoys are < 1 KiB; metadata pieces 16 KiB.
                return Err(Failure::Protocol);
            }
            if buf.len() - pos < 4 + len {
                break;
            }
            let body = &buf[pos + 4..pos + 4 + len];
            pos += 4 + len;
            if len < 2 || body[0] != 20 {
                continue; // keep-alive, bitfield, have_all, ...
            }
            let payload = &body[2..];
            if body[1] == 0 {
                if assembly.is_some() {
                    continue; // a second BEP 10 handshake changes nothing here
                }
                let dict = bencode::decode(payload).map_err(|_| Failure::Protocol)?;
                let their_id = dict
                    .get(b"m")
                    .and_then(|m| m.get(b"ut_metadata"))
                    .and_then(|v| v.as_int())
                    .filter(|&v| (1..=255).contains(&v))
                    .ok_or(Failure::Protocol)? as u8;
                let size = dict
                    .get(b"metadata_size")
                    .and_then(|v| v.as_int())
                    .filter(|&v| v > 0 && v as usize <= MAX_METADATA)
                    .ok_or(Failure::Protocol)? as usize;
                let pieces = size.div_ceil(METADATA_PIECE);
                for p in 0..pieces {
                    metadata_request(&mut requests, their_id, p);
                }
                assembly = Some(Assembly {
                    size,
                    pieces,
                    next: 0,
                    hasher: Sha1::new(),
                    ahead: BTreeMap::new(),
                });
            } else if body[1] == OUR_UT_METADATA {
                let a = assembly.as_mut().ok_or(Failure::Protocol)?;
                let (dict, used) = bencode::decode_prefix(payload).map_err(|_| Failure::Protocol)?;
                match dict.get(b"msg_type").and_then(|v| v.as_int()) {
                    Some(1) => {}
                    Some(2) => return Err(Failure::Rejected),
                    _ => return Err(Failure::Protocol),
                }
                let piece = dict
                    .get(b"piece")
                    .and_then(|v| v.as_int())
                    .and_then(|p| usize::try_from(p).ok())
                    .ok_or(Failure::Protocol)?;
                a.add(piece, &payload[used..])?;
            }
        }
        if let Some(a) = assembly.take_if(|a| a.complete()) {
            let size = a.size;
            let digest: [u8; 20] = a.hasher.finalize().into();
            if digest != info_hash {
                return Err(Failure::BadHash);
            }
            return Ok((bytes, size));
        }
        if !requests.is_empty() {
            stream.write_all(&requests).await.map_err(|_| Failure::Io)?;
            requests.clear();
        }
        // Keep at most one message's worth of unparsed bytes at the front.
        if pos > 0 && (pos == buf.len() || buf.capacity() - buf.len() < 8 * 1024) {
            buf.drain(..pos);
            pos = 0;
        }
        buf.reserve(32 * 1024);
        match stream.read_buf(&mut buf).await {
            Ok(0) if !shook => return Err(Failure::ClosedBeforeHandshake),
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => bytes += n as u64,
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::ConnectionReset if !shook => Failure::ClosedBeforeHandshake,
                    std::io::ErrorKind::ConnectionReset => Failure::Closed,
                    _ => Failure::Io,
                })
            }
        }
    }
}

fn read_hashes(path: &Path) -> Result<Vec<[u8; 20]>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.is_empty() || !raw.len().is_multiple_of(20) {
        bail!("{}: not a list of 20-byte info hashes", path.display());
    }
    Ok(raw
        .chunks_exact(20)
        .map(|c| c.try_into().expect("20 bytes"))
        .collect())
}

/// One generator thread: fetches `k, k + threads, k + 2·threads, ...` of
/// the global schedule, on a single-threaded event loop.
fn generator_thread(a: &LoadArgs, hashes: &[[u8; 20]], k: usize, t0: Instant) -> Result<ThreadStats> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let stats = Rc::new(RefCell::new(ThreadStats::new()));
    let total = (a.rate * a.duration).round() as u64;
    let timeout = Duration::from_secs_f64(a.timeout);
    let hashes: Rc<[[u8; 20]]> = hashes.into();
    local.block_on(&runtime, async {
        let mut i = k as u64;
        while i < total {
            let due = t0 + Duration::from_secs_f64(i as f64 / a.rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
                continue;
            }
            let n = mix64(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i);
            let info_hash = hashes[(n % hashes.len() as u64) as usize];
            let s = (i % u64::from(a.sources)) as u32;
            let source = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + s));
            let mut peer_id = *b"-WL0001-000000000000";
            peer_id[8..].copy_from_slice(format!("{:012x}", i & 0xffff_ffff_ffff).as_bytes());
            i += a.threads as u64;
            {
                let mut st = stats.borrow_mut();
                if st.in_flight >= a.max_in_flight {
                    st.fail(Failure::GeneratorFull);
                    continue;
                }
                st.in_flight += 1;
                st.max_in_flight = st.max_in_flight.max(st.in_flight);
                st.lag.record(now - due);
            }
            let stats = Rc::clone(&stats);
            let target = a.target;
            tokio::task::spawn_local(async move {
                let outcome = tokio::time::timeout_at(
                    (due + timeout).into(),
                    fetch(target, source, info_hash, peer_id),
                )
                .await;
                let elapsed = due.elapsed();
                let mut st = stats.borrow_mut();
                st.in_flight -= 1;
                match outcome {
                    Ok(Ok((bytes, meta))) => {
                        st.ok += 1;
                        st.bytes += bytes;
                        st.metadata_bytes += meta as u64;
                        st.latency.record(elapsed);
                    }
                    Ok(Err(f)) => st.fail(f),
                    Err(_) => st.fail(Failure::Timeout),
                }
            });
        }
        while stats.borrow().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let st = stats.borrow().clone();
    Ok(st)
}

fn load(a: &LoadArgs) -> Result<Value> {
    if !is_loopback(a.target.ip()) {
        bail!("refusing to connect to {}: loopback (127.0.0.0/8) only", a.target);
    }
    if a.sources == 0 || a.sources > 65_536 || a.threads == 0 || a.rate <= 0.0 {
        bail!("--sources must be 1..=65536 (127.1.0.0/16), --threads ≥ 1, --rate > 0");
    }
    let hashes = read_hashes(&a.hashes)?;
    let ticks = clock_ticks();
    let cpu0 = cpu_seconds(std::process::id(), ticks)?;
    let t0 = Instant::now() + Duration::from_millis(50);
    let results: Vec<Result<ThreadStats>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..a.threads)
            .map(|k| {
                let hashes = &hashes;
                scope.spawn(move || generator_thread(a, hashes, k, t0))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("generator thread panicked")))
            })
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id(), ticks)? - cpu0;
    let mut all = ThreadStats::new();
    for r in results {
        let r = r?;
        all.latency.merge(&r.latency);
        all.lag.merge(&r.lag);
        all.ok += r.ok;
        all.bytes += r.bytes;
        all.metadata_bytes += r.metadata_bytes;
        all.max_in_flight += r.max_in_flight;
        for (f, n) in r.failures {
            *all.failures.entry(f).or_insert(0) += n;
        }
    }
    let scheduled = (a.rate * a.duration).round() as u64;
    let errors: u64 = all.failures.values().sum();
    let failures: serde_json::Map<String, Value> = all
        .failures
        .iter()
        .map(|(f, n)| (f.name().to_string(), json!(n)))
        .collect();
    let h = &all.latency;
    Ok(json!({
        "ok": true,
        "target": a.target.to_string(),
        "distinct_hashes": hashes.len(),
        "rate": a.rate,
        "duration": a.duration,
        "scheduled": scheduled,
        "fetched": all.ok,
        "errors": errors,
        "failures": failures,
        "achieved_rate": all.ok as f64 / a.duration,
        "p50_ms": h.quantile_ms(0.50),
        "p90_ms": h.quantile_ms(0.90),
        "p99_ms": h.quantile_ms(0.99),
        "p999_ms": h.quantile_ms(0.999),
        "max_ms": h.max as f64 / 1000.0,
        "lag_p99_ms": all.lag.quantile_ms(0.99),
        "lag_max_ms": all.lag.max as f64 / 1000.0,
        "max_in_flight": all.max_in_flight,
        "mean_metadata_bytes": all.metadata_bytes as f64 / all.ok.max(1) as f64,
        "bytes_read": all.bytes,
        "generator_cpu_seconds": cpu,
        "wall_seconds": wall,
    }))
}

// ---------------------------------------------------------------------------
// The driver.

struct Step {
    side: &'static str,
    rate: f64,
    v: Value,
    server_cpu: f64,
    /// The part of `server_cpu` spent on the ledger writer's thread.
    ledger_cpu: f64,
    generator_cpu: f64,
    other_cpu: f64,
    wall: f64,
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// CPU seconds (utime + stime) of the threads of `pid` named `name`.
fn thread_cpu(pid: u32, name: &str, ticks: f64) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut total = 0.0;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        total += (field(11) + field(12)) / ticks;
    }
    total
}

impl Step {
    /// Microseconds of `cpu` seconds per successful fetch.
    fn per_fetch(&self, cpu: f64) -> f64 {
        cpu * 1e6 / f(&self.v, "fetched").max(1.0)
    }
}

fn drive(a: DriveArgs) -> Result<()> {
    let ticks = clock_ticks();
    let me = std::env::current_exe()?;
    println!("# warnseed metadata service benchmark");
    println!("machine: {}", machine());
    println!(
        "warnseed: {} decoys, per-IP cap {}, log {}; libtorrent: {} torrents ({}); generator: {} thread(s), {} source addresses; rates {:?}/s × {} s",
        a.decoys,
        a.max_connections_per_ip,
        a.log,
        if a.skip_lt { 0 } else { a.lt_torrents },
        a.lt_profile,
        a.threads,
        a.sources,
        a.rates,
        a.duration
    );
    let tmp = tempfile::Builder::new()
        .prefix("warnseed-bench-metadata-")
        .tempdir_in(&a.run.workdir)?;
    let dir = tmp.path().to_path_buf();

    // warnseed.
    let mut cmd = Command::new(&me);
    cmd.arg("serve")
        .arg("--dir")
        .arg(&dir)
        .arg("--decoys")
        .arg(a.decoys.to_string())
        .arg("--seed")
        .arg(a.seed.to_string())
        .arg("--listen")
        .arg(format!("{WARNSEED_ADDR}:0"))
        .arg("--max-connections-per-ip")
        .arg(a.max_connections_per_ip.to_string())
        .arg("--lt-export")
        .arg(if a.skip_lt { 0 } else { a.lt_torrents }.to_string())
        .arg("--log")
        .arg(&a.log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log"))?);
    if let Some(c) = &a.catalogue_cache {
        cmd.arg("--catalogue-cache").arg(c);
    }
    let t = Instant::now();
    let mut ws = Proc::spawn("metadata_load serve", &mut cmd)?;
    let ready = ws.wait_for_line("ready ", Duration::from_secs(900))?;
    if let Ok(text) = std::fs::read_to_string(dir.join("probe.txt")) {
        print!("warnseed {text}");
    }
    println!(
        "warnseed: {ready} (started in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let ws_addr = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .context("no listen= in the ready line")?
        .to_string();

    // libtorrent.
    let mut lt = None;
    if !a.skip_lt {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("lt_metadata_seed.py"))
            .arg("--torrents")
            .arg(dir.join("lt-torrents"))
            .arg("--bind")
            .arg(LT_SEEDER_ADDR)
            .arg("--profile")
            .arg(&a.lt_profile)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("lt.log"))?);
        let mut p = Proc::spawn("lt_metadata_seed.py", &mut cmd)?;
        let line = p.wait_for_line("{", Duration::from_secs(300))?;
        let v: Value = serde_json::from_str(&line)?;
        if v["ok"] != json!(true) {
            bail!("libtorrent seeder failed: {line}");
        }
        println!("libtorrent: {line}");
        let addr = format!("{LT_SEEDER_ADDR}:{}", v["port"]);
        lt = Some((p, addr));
    }

    let mut sides: Vec<(&'static str, u32, String, PathBuf)> =
        vec![("warnseed", ws.pid(), ws_addr.clone(), dir.join("hashes.bin"))];
    if let Some((p, addr)) = &lt {
        sides.push(("libtorrent", p.pid(), addr.clone(), dir.join("lt-hashes.bin")));
        if a.warnseed_small_set {
            sides.push((
                "warnseed-1k",
                ws.pid(),
                ws_addr.clone(),
                dir.join("lt-hashes.bin"),
            ));
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    for (round, &rate) in a.rates.iter().enumerate() {
        // Alternate which side goes first.
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if !round.is_multiple_of(2) {
            order.reverse();
        }
        for &s in &order {
            let (side, pid, addr, hashes) = &sides[s];
            if a.run.wait_idle > 0 {
                let share = wait_for_idle(a.run.idle_below, Duration::from_secs(a.run.wait_idle));
                println!("machine busy before {side} at {rate}/s: {:.0}%", share * 100.0);
            }
            let mut cmd = Command::new(&me);
            cmd.arg("load")
                .arg("--target")
                .arg(addr)
                .arg("--hashes")
                .arg(hashes)
                .arg("--rate")
                .arg(rate.to_string())
                .arg("--duration")
                .arg(a.duration.to_string())
                .arg("--sources")
                .arg(a.sources.to_string())
                .arg("--threads")
                .arg(a.threads.to_string())
                .arg("--seed")
                .arg((round as u64 + 1).to_string());
            let (busy0, _) = machine_jiffies();
            let cpu0 = cpu_seconds(*pid, ticks)?;
            let ledger0 = thread_cpu(*pid, "ledger-writer", ticks);
            let t = Instant::now();
            let v = run_json("metadata_load load", &mut cmd, Some(&dir.join("load.log")))?;
            // Let the ledger writer commit the last batches.
            std::thread::sleep(Duration::from_millis(500));
            let wall = t.elapsed().as_secs_f64();
            let cpu1 = cpu_seconds(*pid, ticks)?;
            let ledger1 = thread_cpu(*pid, "ledger-writer", ticks);
            let (busy1, _) = machine_jiffies();
            let server_cpu = cpu1 - cpu0;
            let generator_cpu = f(&v, "generator_cpu_seconds");
            let busy = (busy1 - busy0) as f64 / ticks;
            let step = Step {
                side,
                rate,
                server_cpu,
                ledger_cpu: ledger1 - ledger0,
                generator_cpu,
                other_cpu: (busy - server_cpu - generator_cpu).max(0.0),
                wall,
                v,
            };
            println!(
                "{side:<11} {rate:>6}/s: {:>8.0}/s fetched, {} errors {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.1} ms; seeder CPU {:.2} cores ({:.0} µs/fetch, ledger writer {:.0}), generator {:.2} cores ({:.0} µs/fetch), rest {:.2}; start lag p99 {:.2} ms",
                f(&step.v, "achieved_rate"),
                step.v["errors"],
                step.v["failures"],
                f(&step.v, "p50_ms"),
                f(&step.v, "p90_ms"),
                f(&step.v, "p99_ms"),
                f(&step.v, "max_ms"),
                step.server_cpu / step.wall,
                step.per_fetch(step.server_cpu),
                step.per_fetch(step.ledger_cpu),
                step.generator_cpu / step.wall,
                step.per_fetch(step.generator_cpu),
                step.other_cpu / step.wall,
                f(&step.v, "lag_p99_ms"),
            );
            steps.push(step);
        }
    }

    if let Some((mut p, _)) = lt {
        p.terminate(Duration::from_secs(10))?;
    }
    let graceful = ws.terminate(Duration::from_secs(120))?;
    let summary: Value = std::fs::read_to_string(dir.join("serve-summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);

    println!();
    println!("| side | target /s | achieved /s | errors | p50 ms | p90 ms | p99 ms | max ms | seeder cores | seeder µs/fetch (ledger writer) | generator cores | rest of machine cores |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &steps {
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} ({:.0}) | {:.2} | {:.2} |",
            s.side,
            s.rate,
            f(&s.v, "achieved_rate"),
            s.v["errors"],
            f(&s.v, "p50_ms"),
            f(&s.v, "p90_ms"),
            f(&s.v, "p99_ms"),
            f(&s.v, "max_ms"),
            s.server_cpu / s.wall,
            s.per_fetch(s.server_cpu),
            s.per_fetch(s.ledger_cpu),
            s.generator_cpu / s.wall,
            s.other_cpu / s.wall,
        );
    }
    println!();
    let met = |s: &Step| {
        f(&s.v, "achieved_rate") >= 0.99 * s.rate
            && s.v["errors"].as_u64() == Some(0)
            && f(&s.v, "p99_ms") <= TARGET_P99_MS
    };
    let best = steps
        .iter()
        .filter(|s| s.side == "warnseed" && met(s))
        .map(|s| s.rate)
        .fold(0.0, f64::max);
    println!(
        "warnseed: highest rate with every fetch served and p99 ≤ {TARGET_P99_MS} ms: {best:.0}/s = {:.2}× the target of {TARGET_RATE:.0}/s",
        best / TARGET_RATE
    );
    if !a.skip_lt {
        let lt_best = steps
            .iter()
            .filter(|s| s.side == "libtorrent" && met(s))
            .map(|s| s.rate)
            .fold(0.0, f64::max);
        println!(
            "libtorrent ({} torrents): highest such rate {lt_best:.0}/s",
            a.lt_torrents
        );
        for s in steps.iter().filter(|s| s.side == "warnseed") {
            if let Some(l) = steps.iter().find(|l| l.side == "libtorrent" && l.rate == s.rate) {
                println!(
                    "at {:.0}/s: achieved warnseed ÷ libtorrent {:.2}, p99 warnseed ÷ libtorrent {:.2}, seeder CPU per fetch warnseed ÷ libtorrent {:.2}",
                    s.rate,
                    f(&s.v, "achieved_rate") / f(&l.v, "achieved_rate"),
                    f(&s.v, "p99_ms") / f(&l.v, "p99_ms"),
                    (s.server_cpu / f(&s.v, "fetched").max(1.0)) / (l.server_cpu / f(&l.v, "fetched").max(1.0)),
                );
            }
        }
    }
    let attempts: u64 = steps
        .iter()
        .filter(|s| s.side.starts_with("warnseed"))
        .map(|s| s.v["fetched"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "ledger: {} sessions registered ({} unterminated) for {attempts} successful warnseed fetches; graceful stop: {graceful}",
        summary["sessions"], summary["unterminated"]
    );
    if a.run.json {
        let rows: Vec<Value> = steps
            .iter()
            .map(|s| {
                json!({
                    "side": s.side,
                    "rate": s.rate,
                    "result": s.v,
                    "seeder_cpu_seconds": s.server_cpu,
                    "ledger_writer_cpu_seconds": s.ledger_cpu,
                    "other_cpu_seconds": s.other_cpu,
                    "wall_seconds": s.wall,
                })
            })
            .collect();
        println!("{}", json!({"ok": true, "steps": rows, "ledger": summary}));
    }
    if a.run.keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
