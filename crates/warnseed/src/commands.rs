//! The subcommands: wiring between crates, progress bars, shutdown.

use crate::{ExportFormat, RunArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use warnseed::config::DataDir;
use warnseed_bittorrent::metainfo::hex;
use warnseed_bittorrent::session::{LocalIdentity, SeedContent};
use warnseed_catalog::{CatalogError, CatalogStore};
use warnseed_ledger::{LedgerStore, LedgerWriter, WriterConfig};
use warnseed_payload::{FillMode, PayloadSet};
use warnseed_seeder::{
    AnnounceSettings, DecoyTable, LiveTable, LoadProgress, PeerServer, ServerConfig, StatusBoard, TrackerUrl,
};

/// Held by `warnseed run` for as long as it runs.
const NODE_LOCK_FILE: &str = "node.lock";

/// Files smaller than this import too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 256 * 1024;
/// How many invalid rows are printed before the rest are only counted.
const MAX_ROW_ERRORS_SHOWN: usize = 50;

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

pub fn init(data: &Path) -> Result<()> {
    let (dir, created) = DataDir::init(data)?;
    CatalogStore::open(&dir.catalog_path())?;
    LedgerStore::open(&dir.ledger_path())?;
    if created {
        println!("initialised {}", data.display());
    } else {
        println!("{} is already initialised", data.display());
    }
    Ok(())
}

pub fn catalog_import(data: &Path, files: &[PathBuf]) -> Result<()> {
    let dir = DataDir::open(data)?;
    let mut store = CatalogStore::open(&dir.catalog_path())?;
    for (i, file) in files.iter().enumerate() {
        // Each file is its own transaction: say what stays imported.
        import_one(&mut store, file).with_context(|| match i {
            0 => String::from("catalogue import stopped"),
            _ => format!(
                "catalogue import stopped; imported before it: {}",
                files[..i]
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    }
    drop(store);
    // Compute the new titles' info hashes now (cached in the catalogue), so
    // `run` and `decoys export` start warm.
    load_table(&dir, load_payload(&dir)?)?;
    if node_running(&dir) {
        eprintln!(
            "the node running on {} loads the new titles within a few seconds; the schedule releases them",
            data.display()
        );
    }
    Ok(())
}

/// Whether a `warnseed run` is running on this data directory, by its
/// status file and its process. (Probing the node lock would take it for
/// a moment, and a node starting just then would refuse to.)
fn node_running(dir: &DataDir) -> bool {
    let Ok(text) = std::fs::read(dir.root.join(STATUS_FILE)) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    v["state"] == "running"
        && v["pid"]
            .as_u64()
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

fn import_one(store: &mut CatalogStore, file: &Path) -> Result<()> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let pb = if size >= PROGRESS_MIN_BYTES {
        bar(size, "importing {msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    } else {
        ProgressBar::hidden()
    };
    pb.set_message(file.display().to_string());
    let result = warnseed_catalog::import_file(store, file, |read| pb.set_position(read));
    pb.finish_and_clear();
    match result {
        Ok(out) => {
            println!(
                "{}: {} rows, {} added, {} already present",
                file.display(),
                out.rows,
                out.added,
                out.unchanged
            );
            Ok(())
        }
        Err(CatalogError::Invalid {
            path,
            invalid,
            errors,
        }) => {
            for e in errors.iter().take(MAX_ROW_ERRORS_SHOWN) {
                eprintln!("{e}");
            }
            if invalid > MAX_ROW_ERRORS_SHOWN {
                eprintln!("… and {} more invalid rows", invalid - MAX_ROW_ERRORS_SHOWN);
            }
            bail!("{path}: {invalid} invalid row(s); nothing of this file was imported")
        }
        Err(e) => Err(e.into()),
    }
}

fn load_payload(dir: &DataDir) -> Result<Arc<PayloadSet>> {
    Ok(Arc::new(warnseed::payloads::node_payload_set(dir)?))
}

struct BarProgress {
    bar: Option<ProgressBar>,
    /// Unique fill hashes whole decoys: worth a bar for a handful.
    slow: bool,
}

impl LoadProgress for BarProgress {
    fn hashing(&mut self, total: u64) {
        let pb = if total >= 10_000 || self.slow {
            bar(
                total,
                "computing piece and info hashes [{bar:40}] {pos}/{len} ({eta})",
            )
        } else {
            ProgressBar::hidden()
        };
        self.bar = Some(pb);
    }
    fn hashed(&mut self, done: u64) {
        if let Some(pb) = &self.bar {
            pb.set_position(done);
        }
    }
}

fn load_table(dir: &DataDir, payloads: Arc<PayloadSet>) -> Result<Arc<DecoyTable>> {
    let mut store = CatalogStore::open(&dir.catalog_path())?;
    let mut progress = BarProgress {
        bar: None,
        slow: payloads.fill_mode() == FillMode::Unique,
    };
    let piece_file = dir.piece_file_path();
    let table = DecoyTable::load(&mut store, payloads, Some(&piece_file), &mut progress)?;
    if let Some(pb) = progress.bar {
        pb.finish_and_clear();
    }
    Ok(Arc::new(table))
}

pub fn export(
    data: &Path,
    format: ExportFormat,
    out: &Path,
    trackers: Vec<String>,
    peers: &[String],
    whitelist: Option<&Path>,
) -> Result<()> {
    let dir = DataDir::open(data)?;
    // Torrent files get every URL as a tier of its own.
    let trackers = if trackers.is_empty() {
        dir.config.node.trackers.urls()
    } else {
        trackers
    };
    let table = load_table(&dir, load_payload(&dir)?)?;
    let pb = if table.len() >= 10_000 {
        bar(table.len() as u64, "exporting [{bar:40}] {pos}/{len} ({eta})")
    } else {
        ProgressBar::hidden()
    };
    let open_out = |path: &Path| -> Result<Box<dyn Write>> {
        if path == Path::new("-") {
            Ok(Box::new(std::io::stdout().lock()))
        } else {
            let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Ok(Box::new(std::io::BufWriter::new(f)))
        }
    };
    match format {
        ExportFormat::Torrent => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let index_path = out.join("index.tsv");
            let mut index = std::io::BufWriter::new(
                std::fs::File::create(&index_path)
                    .with_context(|| format!("creating {}", index_path.display()))?,
            );
            writeln!(index, "info_hash\tdecoy_id\tsize_bytes\ttitle")?;
            for decoy in table.iter() {
                let name = format!("{}.torrent", hex(decoy.info_hash()));
                let path = out.join(&name);
                std::fs::write(&path, decoy.torrent_file(&trackers))
                    .with_context(|| format!("writing {}", path.display()))?;
                writeln!(
                    index,
                    "{}\t{}\t{}\t{}",
                    hex(decoy.info_hash()),
                    decoy.id(),
                    decoy.size(),
                    decoy.title()
                )?;
                pb.inc(1);
            }
            index.flush()?;
        }
        ExportFormat::Magnet => {
            let mut w = open_out(out)?;
            for decoy in table.iter() {
                writeln!(w, "{}", decoy.magnet(&trackers, peers))?;
                pb.inc(1);
            }
            w.flush()?;
        }
        ExportFormat::Whitelist => write_whitelist(&table, &mut *open_out(out)?)?,
        ExportFormat::Files => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            for decoy in table.iter() {
                // Titles are file names as seen in the networks: keep only
                // the last path component, never a path of their own.
                let name = Path::new(decoy.title())
                    .file_name()
                    .map(|n| n.to_owned())
                    .unwrap_or_else(|| hex(decoy.info_hash()).into());
                let path = out.join(name);
                let mut f =
                    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                decoy
                    .layout()
                    .write_all(&mut f, true)
                    .with_context(|| format!("writing {}", path.display()))?;
                pb.inc(1);
            }
        }
    }
    if let Some(path) = whitelist {
        write_whitelist(&table, &mut *open_out(path)?)?;
    }
    pb.finish_and_clear();
    eprintln!("exported {} decoys", table.len());
    Ok(())
}

fn write_whitelist(table: &Arc<DecoyTable>, w: &mut dyn Write) -> Result<()> {
    for decoy in table.iter() {
        writeln!(w, "{}", hex(decoy.info_hash()))?;
    }
    w.flush()?;
    Ok(())
}

fn bind_listener(addr: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("listen address {addr:?} is not IP:PORT"))?;
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        // Separate listeners per family, so 0.0.0.0:P and [::]:P can coexist.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(1024)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

/// A UDP socket on `addr`; an IPv6 one takes IPv6 only, so `0.0.0.0:P`
/// and `[::]:P` can both be bound.
fn bind_udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Replies to a burst of announces arrive together: with the default
    // buffer (about 200 KiB) some were dropped at a million decoys
    // (BENCHMARKS.md §4). The kernel may cap it (net.core.rmem_max).
    if let Err(e) = socket.set_recv_buffer_size(4 << 20) {
        tracing::warn!(error = %e, "cannot enlarge the DHT socket's receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(tokio::net::UdpSocket::from_std(socket.into())?)
}

pub fn run(args: RunArgs) -> Result<()> {
    let (dir, created) = DataDir::init(&args.data)?;
    if created {
        eprintln!("initialised {}", args.data.display());
    }
    // One node per data directory: two would interleave one ledger chain
    // and overwrite each other's status. The lock goes with the process.
    let lock_path = dir.root.join(NODE_LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another warnseed is already running on {} (lock {})",
            args.data.display(),
            lock_path.display()
        ),
        // Some network filesystems have no locks at all: say so, rather
        // than blame a node that does not exist.
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot lock {} (a data directory needs a filesystem with file locks)",
                    lock_path.display()
                )
            })
        }
    }
    CatalogStore::open(&dir.catalog_path())?;
    if let Some(catalog) = &args.catalog {
        let mut store = CatalogStore::open(&dir.catalog_path())?;
        import_one(&mut store, catalog)?;
    }
    let listen = if args.listen.is_empty() {
        dir.config.node.listen.clone()
    } else {
        args.listen.clone()
    };
    if listen.is_empty() {
        bail!("no listen address: give --listen or set node.listen in warnseed.toml");
    }
    let prefix = &dir.config.peer.peer_id_prefix;
    if prefix.is_empty() || prefix.len() > 12 || !prefix.is_ascii() {
        bail!("peer.peer_id_prefix must be 1 to 12 ASCII characters (e.g. \"-WS0100-\"), not {prefix:?}");
    }
    if dir.config.peer.upload_slots == 0 {
        bail!("peer.upload_slots is 0: no peer could ever be unchoked");
    }
    // Catch SIGINT/SIGTERM from here on, so a stop during loading is a
    // graceful stop too (the default action would kill the process).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _guard = runtime.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    // BEP 12 tiers; each --tracker is a tier of its own.
    let tiers = if args.trackers.is_empty() {
        dir.config.node.trackers.clone()
    } else {
        warnseed::config::TrackerTiers::one_per_tier(&args.trackers).map_err(anyhow::Error::msg)?
    };
    let tiers = tiers
        .tiers()
        .iter()
        .map(|tier| {
            tier.iter()
                .map(|t| TrackerUrl::parse(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dht = dir.config.node.dht && !args.no_dht;
    let policy = dir.config.schedule.policy()?;

    let payload = load_payload(&dir)?;
    let started = std::time::Instant::now();
    let table = load_table(&dir, Arc::clone(&payload))?;
    // Titles imported while the node runs are loaded into a new table,
    // which replaces this one everywhere it is served.
    let live = LiveTable::new(Arc::clone(&table));
    let reload: warnseed::schedule::Reload = {
        let payload = Arc::clone(&payload);
        let piece_file = dir.piece_file_path();
        Box::new(move |store: &mut CatalogStore| {
            Ok(DecoyTable::load(
                store,
                Arc::clone(&payload),
                Some(&piece_file),
                &mut (),
            )?)
        })
    };
    let (schedule, first_step) =
        warnseed::schedule::ScheduleRunner::start(&dir.catalog_path(), policy, live.clone(), Some(reload))?;
    tracing::info!(
        released = first_step.released.len(),
        retired = first_step.retired.len(),
        active = table.active_len(),
        "campaign schedule brought up to date"
    );
    tracing::info!(
        decoys = table.len(),
        variants = payload.variants().len(),
        fill = payload.fill_mode().as_str(),
        load_ms = started.elapsed().as_millis() as u64,
        "decoys loaded"
    );

    // A configured database that cannot be read is an error at start, so a
    // campaign does not run for weeks with every address "unknown".
    let geo = match dir.geo_path() {
        Some(path) => Some(Arc::new(warnseed_geo::Geo::open(&path).with_context(|| {
            format!(
                "geo.mmdb {}: cannot open the geolocation database",
                path.display()
            )
        })?)),
        None => None,
    };
    if let Some(g) = &geo {
        tracing::info!(database = %g.describe(), credit = g.attribution().unwrap_or(""), "geolocation on");
    }
    let clock = warnseed_ledger::clock::read();
    tracing::info!(clock = %clock.describe(), "clock state (recorded in every ledger seal)");
    if clock.synced == Some(false) {
        tracing::warn!(
            "the system clock is not synchronised (NTP): ledger times may be off; seals record this"
        );
    }
    let writer = LedgerWriter::open_with(
        &dir.ledger_path(),
        WriterConfig {
            max_delay: Duration::from_millis(dir.config.ledger.batch_window_ms),
            seal_every: Duration::from_secs(dir.config.ledger.seal_interval_secs.max(1)),
            ..WriterConfig::default()
        },
        geo.map(|g| Box::new(warnseed::geo::GeoEnricher(g)) as Box<dyn warnseed_ledger::Enricher>),
    )?;

    let registered = runtime.block_on(async {
        let listeners = listen
            .iter()
            .map(|a| bind_listener(a))
            .collect::<Result<Vec<_>>>()?;
        let bound: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let port = bound[0].port();
        let peer_id = warnseed_seeder::new_peer_id(&dir.config.peer.peer_id_prefix);
        let mut server_config = ServerConfig::new(LocalIdentity {
            peer_id,
            client_version: dir.config.peer.client_version.clone(),
            listen_port: port,
        });
        server_config.upload_slots = dir.config.peer.upload_slots;
        server_config.max_connections = dir.config.peer.max_connections;
        server_config.max_connections_per_ip = dir.config.peer.max_connections_per_ip;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let fleet = start_fleet_forwarder(&dir, stop_rx.clone())?;
        let server = PeerServer::new(live.clone(), server_config, writer.sender());
        let serving = tokio::spawn(server.serve(listeners, stop_rx.clone()));
        let scheduling = tokio::spawn(schedule.run(stop_rx.clone()));
        let retaining = tokio::spawn(retain_periodically(dir.root.clone(), stop_rx.clone()));
        let board = Arc::new(StatusBoard::new());
        let mut announcers = Vec::new();
        let announcing = AnnounceSettings::new(Some(bound[0].ip()), peer_id, port);
        for (i, tier) in tiers.into_iter().enumerate() {
            for url in &tier {
                board.tracker_pending(i + 1, &url.raw);
            }
            announcers.push(tokio::spawn(warnseed_seeder::announce_loop(
                i + 1,
                tier,
                live.clone(),
                announcing.clone(),
                Arc::clone(&board),
                stop_rx.clone(),
            )));
        }
        let mut dht_tasks = Vec::new();
        if dht {
            let node = &dir.config.node;
            // BEP 32: IPv6 runs a second node on its own socket, with its
            // own routing table and saved nodes.
            let families = [
                (node.dht_listen.as_str(), "node.dht_listen", "dht-nodes.txt"),
                (node.dht_listen6.as_str(), "node.dht_listen6", "dht-nodes6.txt"),
            ];
            for (listen, key, nodes_file) in families {
                if listen.is_empty() {
                    continue;
                }
                let listen: SocketAddr = listen
                    .parse()
                    .with_context(|| format!("{key} {listen:?} is not an address"))?;
                let socket = match bind_udp(listen) {
                    Ok(s) => s,
                    // A host without IPv6 still runs the IPv4 node.
                    Err(e) if listen.is_ipv6() && key == "node.dht_listen6" => {
                        tracing::warn!(listen = %listen, error = %e, "no IPv6 DHT node (set node.dht_listen6 = \"\" to silence)");
                        continue;
                    }
                    Err(e) => return Err(e.context(format!("binding the DHT node to UDP {listen}"))),
                };
                // Peers learn our address per family: a v6 listener for the
                // v6 DHT if there is one, else only our port.
                let peer_addr = bound
                    .iter()
                    .find(|a| a.is_ipv6() == listen.is_ipv6())
                    .copied()
                    .unwrap_or_else(|| SocketAddr::new(listen.ip(), port));
                let settings = warnseed_seeder::DhtSettings {
                    bootstrap: node.dht_bootstrap.clone(),
                    peer_addr,
                    announce_interval: Duration::from_secs(node.dht_announce_interval_secs.max(1)),
                    nodes_file: Some(dir.root.join(nodes_file)),
                    ledger: Some(dir.ledger_path()),
                };
                dht_tasks.push(tokio::spawn(warnseed_seeder::run_dht(
                    live.clone(),
                    socket,
                    settings,
                    stop_rx.clone(),
                )));
            }
        }
        let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
        let status = NodeStatusWriter {
            path: dir.root.join(STATUS_FILE),
            pid: std::process::id(),
            started_at_ms: now_ms(),
            listen: addrs.clone(),
            table: live.clone(),
            board: Arc::clone(&board),
        };
        status.write("running")?;
        let publisher = tokio::spawn(status.clone().publish(stop_rx.clone()));
        println!(
            "ready listen={} decoys={} active={}",
            addrs.join(","),
            table.len(),
            table.active_len()
        );
        std::io::stdout().flush()?;

        // A node that cannot register downloads must not go on serving
        // decoys: a ledger writer that stopped on its own stops the node,
        // and `writer.close()` below makes the exit status say why.
        let writer_stopped = async {
            while !writer.has_stopped() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            _ = wait_for_signal(signals) => {}
            _ = writer_stopped => tracing::error!(
                "the ledger writer stopped on an error it cannot retry; stopping the node"
            ),
        }
        tracing::info!("stopping: closing sessions and flushing the ledger");
        let _ = stop_tx.send(true);
        serving.await?;
        let _ = scheduling.await;
        let _ = retaining.await;
        for a in announcers {
            let _ = a.await;
        }
        for task in dht_tasks {
            match task.await {
                Ok(Err(e)) => tracing::error!(error = %e, "DHT node failed"),
                Err(e) => tracing::error!(error = %e, "DHT task failed"),
                Ok(Ok(())) => {}
            }
        }
        let _ = publisher.await;
        stop_fleet_forwarder(fleet).await;
        status.write("stopped")?;
        anyhow::Ok(())
    });
    // Every sender is gone once the server has returned; drain the queue.
    let written = writer
        .close()
        .context("the ledger writer failed; sessions after the error were not registered")?;
    fleet_push_on_stop(&dir, &runtime);
    // A catalogue reload still running in the blocking pool is not waited
    // for (its table would never be served; what it cached is atomic).
    runtime.shutdown_timeout(Duration::from_secs(1));
    registered?;
    println!("stopped: {written} ledger records written");
    Ok(())
}

async fn wait_for_signal(signals: (tokio::signal::unix::Signal, tokio::signal::unix::Signal)) {
    let (mut term, mut int) = signals;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

const STATUS_FILE: &str = "status.json";
/// A running node rewrites its status this often; older means it is gone.
const STATUS_PERIOD: Duration = Duration::from_secs(2);

use warnseed_ledger::unix_ms as now_ms;

/// Publishes the running node's state to `status.json` in its data
/// directory, for `warnseed status`.
#[derive(Clone)]
struct NodeStatusWriter {
    path: PathBuf,
    pid: u32,
    started_at_ms: i64,
    listen: Vec<String>,
    table: LiveTable,
    board: Arc<StatusBoard>,
}

impl NodeStatusWriter {
    fn write(&self, state: &str) -> Result<()> {
        let v = serde_json::json!({
            "state": state,
            "pid": self.pid,
            "started_at_ms": self.started_at_ms,
            "updated_at_ms": now_ms(),
            "listen": self.listen,
            "decoys_loaded": self.table.current().len(),
            "decoys_active": self.table.current().active_len(),
            "trackers": self.board.trackers(),
        });
        // Write then rename, so a reader never sees half a file.
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }

    async fn publish(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(STATUS_PERIOD) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.write("running") {
                tracing::warn!(error = %e, "cannot publish status");
            }
        }
    }
}

pub fn status(data: &Path, json: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    let path = dir.root.join(STATUS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            println!("{}: no node has run here yet", data.display());
            return Ok(());
        }
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let updated = v["updated_at_ms"].as_i64().unwrap_or(0);
    let pid = v["pid"].as_u64().unwrap_or(0);
    let alive = Path::new(&format!("/proc/{pid}")).exists();
    // A status left by a node that died without stopping is stale.
    if v["state"] == "running" && (!alive || now_ms() - updated > 5 * STATUS_PERIOD.as_millis() as i64) {
        v["state"] = "gone".into();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node          {} (pid {pid})", v["state"].as_str().unwrap_or("?"));
    let listen: Vec<&str> = v["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    println!("listen        {}", listen.join(", "));
    println!(
        "decoys active {} of {} loaded",
        v["decoys_active"], v["decoys_loaded"]
    );
    let trackers = v["trackers"].as_array().cloned().unwrap_or_default();
    if trackers.is_empty() {
        println!("trackers      none");
    }
    for t in trackers {
        let next = t["next_round_at_ms"]
            .as_i64()
            .map(|at| (at - now_ms()).max(0) / 1000);
        println!(
            "tracker       {}  {}  tier {}  announced {} failed {} rounds {}  tracked {} (started {}, stopped {}){}{}",
            t["url"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            t["tier"],
            t["announced"],
            t["failed"],
            t["rounds"],
            t["tracked"],
            t["started"],
            t["stopped"],
            next.map(|s| format!("  next round in {s} s")).unwrap_or_default(),
            t["last_error"]
                .as_str()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default(),
        );
        println!("              scrape: {}", scrape_line(&t["scrape"]));
    }
    Ok(())
}

/// A tracker's scrape totals, for `warnseed status`.
fn scrape_line(s: &serde_json::Value) -> String {
    if s["supported"] == false {
        return "not supported (the URL's last path segment is not announce…)".into();
    }
    let Some(at) = s["at_ms"].as_i64() else {
        return "after the first successful round".into();
    };
    let mut line = format!(
        "{} of {} decoys listed, {} seeders, {} leechers, {} downloaded ({} s ago)",
        s["listed"],
        s["decoys"],
        s["seeders"],
        s["leechers"],
        s["downloaded"],
        (now_ms() - at).max(0) / 1000
    );
    if s["failed"].as_u64().unwrap_or(0) > 0 {
        line.push_str(&format!(
            "; {} requests failed, last: {}",
            s["failed"],
            s["last_error"].as_str().unwrap_or("?")
        ));
    }
    line
}

pub fn ledger_verify(data: &Path, json: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    // Read-only: checking a ledger must not change it.
    let v = LedgerStore::open_read_only(&dir.ledger_path())?.verify()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.first_bad.is_none() {
        println!(
            "ledger ok: {} records, last record {}, hash {}",
            v.records, v.last_seq, v.last_hash
        );
        println!(
            "seals: {}{}; {} record(s) not yet sealed; node {}",
            v.seals,
            v.last_seal_hash
                .as_deref()
                .map(|h| format!(", last seal hash {h}"))
                .unwrap_or_default(),
            v.unsealed,
            v.node_id
        );
    }
    if let Some(bad) = v.first_bad {
        bail!(
            "ledger verification failed at record {}: {} ({} records before it verified)",
            bad.seq,
            bad.reason,
            // A bad seal is reported at the first record it covers, which
            // the walk may have passed.
            bad.seq.saturating_sub(1).clamp(0, v.records as i64)
        );
    }
    Ok(())
}

pub fn report_summary(data: &Path, json: bool, from: Option<&str>) -> Result<()> {
    let dir = DataDir::open(data)?;
    let catalog = CatalogStore::open(&dir.catalog_path())?;
    let titles = catalog.count()?;
    let (released, decoys) = catalog.release_counts()?;
    let mut store = LedgerStore::open(&dir.ledger_path())?;
    let s = store.summary()?;
    let (dht_queries, dht_ips, dht_decoys) = store.interest_totals()?;
    let (from_day, to_day) = warnseed::reports::window(from, None, store.first_day()?, now_ms())?;
    let campaign = warnseed_ledger::report::campaign_summary(&mut store, from_day, to_day, KOMMUNER_TOTAL)
        .map_err(|e| anyhow::anyhow!("report: {e}"))?;
    if json {
        let v = serde_json::json!({
            "titles": titles,
            "decoys_released": released,
            "decoys_active": decoys,
            "sessions": s.sessions,
            "unterminated": s.unterminated,
            "completed": s.completed,
            "unique_ips": campaign.unique_ips,
            "repeat_ips": campaign.repeat_ips,
            "bytes_sent": s.bytes_sent,
            "first_session_ms": s.first_session_ms,
            "last_session_ms": s.last_session_ms,
            "dht_interest": {"queries": dht_queries, "addresses": dht_ips, "decoys": dht_decoys},
            "campaign": campaign,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("catalogue titles    {titles}");
        println!("decoys released     {released}");
        println!("decoys active       {decoys}");
        println!("sessions, all time  {}", s.sessions);
        if s.unterminated > 0 {
            println!(
                "  unterminated      {} (the node stopped without a graceful shutdown)",
                s.unterminated
            );
        }
        // Everything below is the window's (UTC days), as the sentence.
        println!("{} to {} (UTC days):", campaign.from, campaign.to);
        println!("  downloads started {}", campaign.downloads_started);
        println!("  files delivered   {}", campaign.files_delivered);
        println!("  bytes sent        {}", campaign.bytes_sent);
        println!("  unique IPs        {}", campaign.unique_ips);
        println!("  repeat downloaders {}", campaign.repeat_ips);
        println!(
            "DHT interest        {dht_queries} queries from {dht_ips} addresses for {dht_decoys} decoys"
        );
        println!("{}", campaign.sentence);
    }
    Ok(())
}

/// Norwegian municipalities since 1 January 2024.
const KOMMUNER_TOTAL: i64 = 357;

pub fn report_figures(
    data: &Path,
    dim: &str,
    from: Option<&str>,
    to: Option<&str>,
    by: &str,
    format: &str,
    store: &str,
) -> Result<()> {
    let store: warnseed::config::ReportStore = store
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--store: {e}"))?;
    let by: warnseed_ledger::report::Granularity =
        by.parse().map_err(|e: String| anyhow::anyhow!("--by: {e}"))?;
    let format: warnseed::reports::Format = format
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--format: {e}"))?;
    let dir = DataDir::open(data)?;
    let catalog = CatalogStore::open(&dir.catalog_path())?;
    let mut source = warnseed::config::open_report_source(&dir, store)?;
    let first = source.first_day().map_err(|e| anyhow::anyhow!("report: {e}"))?;
    let (from_day, to_day) = warnseed::reports::window(from, to, first, now_ms())?;
    let rows = warnseed::reports::rows(
        source.as_mut(),
        Some(&catalog),
        dim,
        from_day,
        to_day,
        by,
        &warnseed::geo::kommune_name,
    )?;
    let mut footer = Vec::new();
    if dim == "kommune" {
        let placed: std::collections::BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.figures.downloads_started > 0)
            .map(|r| r.figures.key.as_str())
            .collect();
        footer.push(format!(
            "{} of {KOMMUNER_TOTAL} Norwegian municipalities had at least one download",
            placed.len()
        ));
    }
    if matches!(dim, "country" | "kommune") && dir.config.geo.mmdb.is_some() {
        footer.push(format!(
            "Locations: {}; {}",
            warnseed_geo::DBIP_ATTRIBUTION,
            warnseed_geo::KOMMUNE_DATA_ATTRIBUTION
        ));
    }
    print!("{}", warnseed::reports::render(dim, &rows, format, &footer)?);
    Ok(())
}

pub fn payload_build(data: &Path, languages: Option<Vec<String>>, out: Option<PathBuf>) -> Result<()> {
    // Without a data directory (and with --out), build from the defaults;
    // a configuration that exists but does not parse is an error.
    let has_config = DataDir::config_path(data).exists();
    let (root, cfg) = match DataDir::open(data) {
        Ok(dir) => (dir.root.clone(), dir.config.payload.clone()),
        Err(_) if out.is_some() && !has_config => {
            (PathBuf::from("."), warnseed::config::PayloadConfig::default())
        }
        Err(e) => return Err(e),
    };
    let out = out.unwrap_or_else(|| root.join(warnseed::payloads::PAYLOAD_DIR));
    let pb = ProgressBar::new_spinner();
    pb.set_message("rendering and encoding the warning");
    pb.enable_steady_tick(Duration::from_millis(120));
    let written = warnseed::payloads::build_into(&root, &cfg, languages.as_deref(), &out);
    pb.finish_and_clear();
    let written = written?;
    println!("{:<10} {:>12}  file", "variant", "bytes");
    for (name, path, bytes) in &written {
        println!("{name:<10} {bytes:>12}  {}", path.display());
    }
    println!("{} variants in {}", written.len(), out.display());
    Ok(())
}

pub fn payload_list(data: &Path, json: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    let set = load_payload(&dir)?;
    let mut per_variant = vec![0u64; set.variants().len()];
    let store = CatalogStore::open(&dir.catalog_path())?;
    store.for_each(|r| {
        per_variant[usize::from(set.variant_for_title(&r.title, r.language.as_deref()))] += 1
    })?;
    let rows: Vec<serde_json::Value> = set
        .variants()
        .iter()
        .zip(&per_variant)
        .enumerate()
        .map(|(i, (v, titles))| {
            let extensions = warnseed_payload::EXTENSIONS
                .iter()
                .find(|(n, _)| *n == v.name())
                .map(|(_, e)| e.join(","))
                .unwrap_or_default();
            serde_json::json!({
                "variant": v.name(),
                "language": set.variant_language(i as u8),
                "min_size": v.min_size(),
                "sha256": hex(v.sha256()),
                "titles": titles,
                "extensions": if v.name() == warnseed_payload::FALLBACK_VARIANT { "(any other)".to_owned() } else { extensions },
            })
        })
        .collect();
    if json {
        let out = serde_json::json!({
            "fill": set.fill_mode().as_str(),
            "languages": dir.config.payload.languages,
            "single_file": dir.payload_path(),
            "variants": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "fill: {}   languages: {}",
        set.fill_mode().as_str(),
        dir.config.payload.languages.join(",")
    );
    if let Some(p) = dir.payload_path() {
        println!("single file for every title: {}", p.display());
    }
    println!(
        "{:<7} {:<8} {:>10} {:>7}  {:<16} extensions",
        "variant", "language", "min bytes", "titles", "sha256"
    );
    for r in rows {
        println!(
            "{:<7} {:<8} {:>10} {:>7}  {:<16} {}",
            r["variant"].as_str().unwrap_or_default(),
            r["language"].as_str().unwrap_or("-"),
            r["min_size"].as_u64().unwrap_or_default(),
            r["titles"].as_u64().unwrap_or_default(),
            &r["sha256"].as_str().unwrap_or_default()[..16],
            r["extensions"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub fn schedule_status(data: &Path, json: bool, next: usize) -> Result<()> {
    use warnseed_catalog::utc::{format_date, format_time};
    let dir = DataDir::open(data)?;
    let cfg = &dir.config.schedule;
    let policy = cfg.policy()?;
    let mut store = CatalogStore::open(&dir.catalog_path())?;
    let s = store.schedule_status(&policy, now_ms(), next)?;
    let next_list: Vec<serde_json::Value> = s
        .next
        .iter()
        .map(|n| serde_json::json!({"at": format_time(n.at_ms), "at_ms": n.at_ms, "id": n.id, "title": n.title}))
        .collect();
    if json {
        let v = serde_json::json!({
            "state": s.state,
            "now": format_time(s.now_ms),
            "daily_quota": policy.daily_quota,
            "lifetime": cfg.lifetime,
            "order": policy.order.as_str(),
            "start": policy.start_ms.map(format_time),
            "stop": policy.stop_ms.map(format_time),
            "released_today": s.released_today,
            "released_total": s.released_total,
            "active": s.active,
            "retired": s.retired,
            "unreleased": s.unreleased,
            "next_retirement": s.next_retirement_ms.map(format_time),
            "next": next_list,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let or_none = |t: Option<i64>| t.map(format_time).unwrap_or_else(|| "-".into());
    println!("campaign        {} (times in UTC)", s.state);
    println!(
        "policy          {} a day, lifetime {}, order {}, start {}, stop {}",
        policy.daily_quota,
        cfg.lifetime,
        policy.order.as_str(),
        or_none(policy.start_ms),
        or_none(policy.stop_ms)
    );
    println!("released today  {} ({})", s.released_today, format_date(s.now_ms));
    println!("released        {}", s.released_total);
    println!("active          {}", s.active);
    println!("retired         {}", s.retired);
    println!("unreleased      {}", s.unreleased);
    println!("next retirement {}", or_none(s.next_retirement_ms));
    if s.next.is_empty() {
        println!("next releases   none");
    } else {
        println!("next releases");
        for n in &s.next {
            // Due now means: the running node releases it at its next check.
            let at = if n.at_ms <= s.now_ms {
                "now".to_string()
            } else {
                format_time(n.at_ms)
            };
            println!("  {at:<20}  {:>8}  {}", n.id, n.title);
        }
    }
    Ok(())
}

pub fn ledger_export(data: &Path, ip: &str, from: Option<&str>, to: Option<&str>, out: &Path) -> Result<()> {
    use warnseed_catalog::utc::parse_time;
    let dir = DataDir::open(data)?;
    let range: warnseed_ledger::IpRange = ip.parse().map_err(|e: String| anyhow::anyhow!("--ip: {e}"))?;
    let from_ms = from
        .map(|t| parse_time(t).map_err(|e| anyhow::anyhow!("--from: {e}")))
        .transpose()?
        .unwrap_or(0);
    // Inclusive: a date is the whole day, `T23:59Z` the whole minute.
    let to_ms = to
        .map(|t| warnseed_catalog::utc::parse_time_end(t).map_err(|e| anyhow::anyhow!("--to: {e}")))
        .transpose()?
        .unwrap_or(i64::MAX);
    if to_ms < from_ms {
        bail!("--to is before --from");
    }
    let mut store = LedgerStore::open(&dir.ledger_path())?;
    let clock = warnseed_ledger::clock::read();
    let evidence = store.evidence(range, from_ms, to_ms, &clock, now_ms())?;
    // Checked before it leaves: an export that does not verify is a bug.
    let check = warnseed_ledger::verify_evidence(&evidence)
        .map_err(|e| anyhow::anyhow!("the export does not verify: {e}"))?;
    let catalog = CatalogStore::open(&dir.catalog_path())?;
    let mut titles = std::collections::HashMap::new();
    for r in &evidence.records {
        if let std::collections::hash_map::Entry::Vacant(slot) = titles.entry(r.decoy_id) {
            if let Some(t) = catalog.title_of(r.decoy_id)? {
                slot.insert(t);
            }
        }
    }
    let files = warnseed::evidence::write(out, &evidence, &check, &titles)?;
    println!(
        "{} records for {} written to {}",
        evidence.records.len(),
        evidence.ip,
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(h) = &check.newest_seal_hash {
        println!("newest seal hash {h}");
    }
    Ok(())
}

pub fn ledger_verify_export(file: &Path, json: bool, anchor: Option<&str>) -> Result<()> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let evidence: warnseed_ledger::Evidence = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an evidence export", file.display()))?;
    let checked = match anchor {
        Some(a) => warnseed_ledger::verify_evidence_anchored(&evidence, a),
        None => warnseed_ledger::verify_evidence(&evidence),
    };
    match checked {
        Ok(check) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"ok": true, "check": check}))?
                );
            } else {
                println!(
                    "export ok: {} records for {} from node {}, {} seal(s); newest seal hash {}",
                    check.records,
                    evidence.ip,
                    evidence.node_id,
                    check.seals,
                    check.newest_seal_hash.as_deref().unwrap_or("(none)")
                );
                if let Some(n) = check.anchored_records {
                    println!(
                        "anchor ok: {n} of the {} records are sealed under the anchor seal",
                        check.records
                    );
                }
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"ok": false, "error": e}))?
                );
            }
            bail!("export does not verify: {e}")
        }
    }
}

pub fn ledger_retain(data: &Path, older_than: Option<&str>, mode: Option<&str>) -> Result<()> {
    let mut dir = DataDir::open(data)?;
    if let Some(age) = older_than {
        warnseed_catalog::utc::parse_duration(age).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
        dir.config.ledger.ip_retention = age.to_string();
    }
    if let Some(mode) = mode {
        dir.config.ledger.ip_retention_mode = mode.to_string();
    }
    let Some(age_ms) = dir.config.ledger.retention_ms()? else {
        bail!("no retention age: give --older-than or set ledger.ip_retention in warnseed.toml");
    };
    let how = dir.retention()?;
    let cutoff = now_ms() - age_ms;
    let out = LedgerStore::open(&dir.ledger_path())?.retain(cutoff, &how)?;
    println!(
        "addresses before {} replaced ({}): {} session records, {} DHT interest rows",
        warnseed::evidence::format_time_ms(cutoff),
        dir.config.ledger.ip_retention_mode,
        out.sessions,
        out.interest_rows
    );
    if !out.wal_emptied {
        eprintln!(
            "warning: the ledger's write-ahead log could not be emptied (another process kept reading it); \
             older copies of replaced addresses stay in it until the next retention run"
        );
    }
    if let Some(n) = mirror_retention(&dir, cutoff)? {
        println!("fleet store: {n} records' addresses replaced the same way");
    }
    // Everything else is done; a scheduled run must still not pass for
    // a success while raw addresses are left.
    if let Some(first) = out.unreadable_blocks.first() {
        bail!(
            "{} block(s) of records could not be read (the first holds records from {first}) and keep their \
             addresses; run `warnseed ledger verify`",
            out.unreadable_blocks.len()
        );
    }
    Ok(())
}

/// In fleet mode, gives PostgreSQL's copies of this node's records the
/// addresses the node now holds for them (erased or pseudonyms), so
/// retention reaches every copy. `None` when fleet mode is off.
fn mirror_retention(dir: &DataDir, cutoff: i64) -> Result<Option<u64>> {
    let Some(pg) = dir.fleet_pg()? else {
        return Ok(None);
    };
    let store = LedgerStore::open(&dir.ledger_path())?;
    let node_id = store.node_id()?;
    let mut fleet = warnseed_fleet::PgStore::connect(&pg).context("fleet store (retention)")?;
    let pending = fleet.unretained(&node_id, cutoff)?;
    let rows: Vec<(i64, String)> = store
        .addresses(&pending)?
        .into_iter()
        // Only replacements: a record the node has not retained yet stays.
        .filter(|(_, ip)| warnseed_ledger::chain::is_erased_ip(ip))
        .collect();
    Ok(Some(fleet.mirror_retention(&node_id, &rows)?))
}

/// Applies the configured retention every hour while the node runs.
async fn retain_periodically(dir_root: PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let root = dir_root.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
            let dir = DataDir::open(&root)?;
            let Some(age) = dir.config.ledger.retention_ms()? else {
                return Ok(None);
            };
            let how = dir.retention()?;
            let cutoff = now_ms() - age;
            let out = LedgerStore::open(&dir.ledger_path())?.retain(cutoff, &how)?;
            // The fleet's copies follow (records forwarded since the last
            // hour included); a failure is retried next hour.
            if let Err(e) = mirror_retention(&dir, cutoff) {
                tracing::error!(error = %e, "retention: cannot reach the fleet store; retrying in an hour");
            }
            Ok(Some(out.sessions))
        })
        .await;
        match result {
            Ok(Ok(Some(n))) if n > 0 => tracing::info!(records = n, "retention: old addresses replaced"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed; retrying in an hour"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

use warnseed::evidence::csv_field;

pub fn ledger_export_pseudonymised(
    data: &Path,
    out: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<()> {
    let dir = DataDir::open(data)?;
    let key = dir.pseudonym_key()?;
    let store = LedgerStore::open(&dir.ledger_path())?;
    let (from_day, to_day) = warnseed::reports::window(from, to, Some(0), now_ms())?;
    let (from_ms, to_ms) = (from_day * 86_400_000, (to_day + 1) * 86_400_000);
    let tmp = warnseed::evidence::temp_path_for(out);
    let mut n = 0u64;
    let written = (|| -> Result<()> {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        writeln!(
        w,
        "started_at_utc,ended_at_utc,pseudonym,network,decoy_id,info_hash,client,transport,bytes_sent,completed,close_reason,country,kommune"
    )?;
        store.for_each_closed(from_ms, to_ms, |s, geo| {
            // Stored pseudonyms were made with the same key: keep them as they
            // are; erased addresses stay erased.
            let pseudonym = if warnseed_ledger::chain::is_erased_ip(&s.remote_ip) {
                s.remote_ip.clone()
            } else {
                warnseed_ledger::pseudonym(&key, &s.remote_ip)
            };
            n += 1;
            writeln!(
                w,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                warnseed::evidence::format_time_ms(s.started_at_ms),
                warnseed::evidence::format_time_ms(s.ended_at_ms),
                pseudonym,
                s.network,
                s.decoy_id,
                s.info_hash,
                csv_field(&warnseed_ledger::rollup::client_family(s.client_name.as_deref())),
                s.transport,
                s.bytes_sent,
                s.completed,
                csv_field(&s.close_reason),
                csv_field(&geo.0.unwrap_or_default()),
                csv_field(&geo.1.unwrap_or_default()),
            )
        })?;
        w.flush()?;
        drop(w);
        warnseed::evidence::commit_temp(&tmp, out)
    })();
    // Nothing half-written is left beside the output.
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written?;
    println!(
        "{n} sessions written to {} with pseudonymised addresses",
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Fleet mode: the ledger forwarded to the fleet's PostgreSQL.

type FleetTask = tokio::task::JoinHandle<Result<(), warnseed_fleet::FleetError>>;

/// Starts forwarding the ledger to the fleet's PostgreSQL if `[fleet]
/// postgres` is set. The node never waits for it: records stay in the
/// SQLite ledger until PostgreSQL has them.
fn start_fleet_forwarder(
    dir: &DataDir,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<FleetTask>> {
    let Some(config) = dir.fleet_forwarder()? else {
        return Ok(None);
    };
    let schema = config.pg.schema.clone();
    let shared = config.ip_key_secret.is_some();
    let forwarder = warnseed_fleet::Forwarder::new(config)?;
    tracing::info!(
        node = forwarder.node_id(),
        schema = %schema,
        shared_ip_key_secret = shared,
        "fleet mode: forwarding the ledger to PostgreSQL"
    );
    Ok(Some(tokio::spawn(forwarder.run(stop))))
}

async fn stop_fleet_forwarder(task: Option<FleetTask>) {
    let Some(task) = task else {
        return;
    };
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "fleet forwarding had stopped"),
        Err(e) => tracing::error!(error = %e, "fleet forwarder task failed"),
    }
}

/// After the last records are flushed: hands them to PostgreSQL too, if it
/// answers within a few seconds (else the next start or `fleet push` does).
fn fleet_push_on_stop(dir: &DataDir, runtime: &tokio::runtime::Runtime) {
    let Ok(Some(mut config)) = dir.fleet_forwarder() else {
        return;
    };
    config.timeout = Duration::from_secs(5);
    let pushed = runtime.block_on(async {
        let mut forwarder = warnseed_fleet::Forwarder::new(config)?;
        match tokio::time::timeout(Duration::from_secs(10), forwarder.forward_available()).await {
            Ok(r) => r,
            Err(_) => Err(warnseed_fleet::FleetError::Timeout(10)),
        }
    });
    match pushed {
        Ok(s) => tracing::info!(
            forwarded_seq = s.forwarded_seq,
            "fleet PostgreSQL has every record"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the newest records reach the fleet's PostgreSQL at the next start")
        }
    }
    // The push left its own state in the status file; the node has stopped.
    let path = dir.root.join(warnseed::config::FLEET_STATUS_FILE);
    if let Some(mut s) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<warnseed_fleet::ForwarderStatus>(&b).ok())
    {
        s.state = "stopped".into();
        s.updated_at_ms = now_ms();
        if let Ok(bytes) = serde_json::to_vec_pretty(&s) {
            let _ = std::fs::write(&path, bytes);
        }
    }
}

/// `warnseed fleet status`.
pub fn fleet_status(data: &Path, json: bool) -> Result<()> {
    let dir = DataDir::open(data)?;
    let spool = warnseed_fleet::Spool::open(&dir.ledger_path(), None)?;
    let node_id = spool.node_id().to_string();
    let local_head = spool.head()?;
    drop(spool);
    let forwarder: Option<warnseed_fleet::ForwarderStatus> =
        std::fs::read(dir.root.join(warnseed::config::FLEET_STATUS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    let pg = dir.fleet_pg()?;
    let remote = pg.as_ref().map(|pg| {
        warnseed_fleet::PgStore::connect(pg)
            // A pooler may not show pg_stat_ssl: the head still counts.
            .and_then(|mut s| Ok((s.head(&node_id)?, s.tls_version().map_err(|e| e.to_string()))))
            .map_err(|e| e.to_string())
    });
    let tls_mode = pg.as_ref().and_then(|pg| pg.tls_mode().ok()).map(|m| m.as_str());
    if json {
        let postgres = match (&pg, &remote) {
            (Some(pg), Some(Ok((h, tls)))) => serde_json::json!({
                "schema": pg.schema,
                "forwarded_seq": h.seq,
                "forwarded_seal": h.seal_id,
                "lag": (local_head - h.seq).max(0),
                "sslmode": tls_mode,
                "tls_version": tls.as_ref().ok().cloned().flatten(),
                "tls_error": tls.as_ref().err(),
            }),
            (Some(pg), Some(Err(e))) => {
                serde_json::json!({ "schema": pg.schema, "sslmode": tls_mode, "error": e })
            }
            _ => serde_json::Value::Null,
        };
        let v = serde_json::json!({
            "node_id": node_id,
            "local_head": local_head,
            "postgres": postgres,
            "forwarder": forwarder,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node              {node_id}");
    println!("local ledger      {local_head} records");
    match (&pg, &remote) {
        (None, _) => println!("fleet mode        off (set [fleet] postgres in warnseed.toml)"),
        (Some(pg), Some(Ok((h, tls)))) => println!(
            "postgres          {} records, {} seals in schema {} (lag {}); {}",
            h.seq,
            h.seal_id,
            pg.schema,
            (local_head - h.seq).max(0),
            match tls {
                Ok(Some(version)) => format!("{version}, sslmode {}", tls_mode.unwrap_or("?")),
                Ok(None) => "plain text (sslmode disable)".into(),
                Err(e) => format!("sslmode {}, TLS version unknown: {e}", tls_mode.unwrap_or("?")),
            }
        ),
        (Some(pg), _) => println!(
            "postgres          unreachable (schema {}): {}",
            pg.schema,
            remote.and_then(|r| r.err()).unwrap_or_default()
        ),
    }
    if let Some(f) = forwarder {
        let age_s = (now_ms() - f.updated_at_ms).max(0) / 1000;
        println!(
            "forwarder         {} as of {age_s} s ago: forwarded through {}, lag {}",
            f.state, f.forwarded_seq, f.lag
        );
        if let Some(e) = &f.last_error {
            let ago = f.last_error_at_ms.map_or(0, |t| (now_ms() - t).max(0) / 1000);
            println!("  last error      {e} ({ago} s ago)");
        }
    }
    Ok(())
}

/// `warnseed fleet push`.
pub fn fleet_push(data: &Path) -> Result<()> {
    let dir = DataDir::open(data)?;
    let mut config = dir
        .fleet_forwarder()?
        .context("fleet mode is off: set [fleet] postgres in warnseed.toml")?;
    // The running node's forwarder owns the status file.
    config.status_file = None;
    let schema = config.pg.schema.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        let mut forwarder = warnseed_fleet::Forwarder::new(config)?;
        forwarder.forward_available().await
    })?;
    println!(
        "forwarded {} records to PostgreSQL (schema {schema}): node {} is there through record {} of {}",
        status.records_forwarded, status.node_id, status.forwarded_seq, status.local_head
    );
    Ok(())
}
