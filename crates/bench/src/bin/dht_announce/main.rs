//! DHT announcing benchmark: how many decoys warnseed's DHT node announces
//! per 30 minutes, at how many packets each, without breaking any node's
//! pace; against libtorrent seeding many torrents, on the same simulated
//! DHT in the same run.
//!
//! ```text
//! cargo build --release -j2 -p warnseed-bench
//! target/release/dht_announce                                  # 10,000 nodes; 100k, then 1M decoys; libtorrent
//! target/release/dht_announce --decoys 20000 --seconds 30 --lt-profiles default   # quick check
//! ```
//!
//! The simulated DHT runs in a child process (this binary with
//! `--simulate`, see `sim.rs`) on 127.20.0.0/14. The node under test is
//! `warnseed_seeder::run_dht`, the driver `warnseed run` uses, with a
//! synthetic `DecoyTable` of one-piece decoys, on 127.0.9.1, 127.0.9.3, ...
//! (one address per run, so the simulator's counts stay apart); libtorrent
//! (`bench/lt_dht_announce.py`) on 127.0.9.2, 127.0.9.4. Nothing leaves
//! loopback: every DHT node any side knows is a simulated one.

mod sim;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use warnseed_bench::{
    clock_ticks, cpu_seconds, machine, script, title, wait_for_idle, Proc, RunArgs, PYTHON,
};
use warnseed_payload::{FillMode, PayloadSet, BUILTIN_WARNING};
use warnseed_seeder::{run_dht, DecoyTable, DhtSettings};

/// What the target asks for: a million decoys every 30 minutes.
const TARGET_DECOYS: f64 = 1_000_000.0;
const HALF_HOUR: f64 = 1800.0;
const TARGET_PACKETS: f64 = 20.0;

#[derive(Parser)]
#[command(about = "DHT announcing of warnseed against libtorrent on a simulated DHT")]
struct Args {
    /// Simulated DHT nodes.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// UDP port every simulated node listens on (each has its own address).
    #[arg(long, default_value_t = 6881)]
    sim_port: u16,
    /// Active decoys of each warnseed run, comma-separated.
    #[arg(long, default_value = "100000,1000000", value_delimiter = ',')]
    decoys: Vec<usize>,
    /// Measuring time of each run.
    #[arg(long, default_value_t = 120.0)]
    seconds: f64,
    /// warnseed's announce interval (every active decoy once per interval).
    #[arg(long, default_value_t = 1800)]
    interval_secs: u64,
    /// libtorrent runs, by settings preset, comma-separated (empty: none).
    #[arg(long, default_value = "default,high_performance_seed", value_delimiter = ',')]
    lt_profiles: Vec<String>,
    /// Torrents libtorrent seeds (its announce rate does not grow past
    /// dht_announce_interval seconds' worth, 900 by default).
    #[arg(long, default_value_t = 10_000)]
    lt_torrents: usize,
    /// Receive buffer of the node's UDP socket, KiB (0: the system default,
    /// which is what `warnseed run` gets today). Replies to a burst of
    /// queries arrive at once; a node that is descheduled for a few tens
    /// of milliseconds at 9,000 replies a second needs more than the
    /// default 208 KiB (about 200 small datagrams).
    #[arg(long, default_value_t = 0)]
    rcvbuf_kib: usize,
    /// Seed of the simulated node ids.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Internal: run the simulated DHT (see sim.rs).
    #[arg(long, hide = true)]
    simulate: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// Log events of the DHT driver, as field maps (the driver logs its
/// totals when it stops; that is how this benchmark reads them).
/// One log event: its message and its other fields.
type LogEvent = (String, Map<String, Value>);

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<LogEvent>>>);

struct FieldsToJson(Map<String, Value>);

impl tracing::field::Visit for FieldsToJson {
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        self.0.insert(f.name().into(), json!(v));
    }
    fn record_i64(&mut self, f: &tracing::field::Field, v: i64) {
        self.0.insert(f.name().into(), json!(v));
    }
    fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
        self.0.insert(f.name().into(), json!(v));
    }
    fn record_bool(&mut self, f: &tracing::field::Field, v: bool) {
        self.0.insert(f.name().into(), json!(v));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().into(), json!(v));
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().into(), json!(format!("{v:?}")));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = FieldsToJson(Map::new());
        event.record(&mut fields);
        let message = match fields.0.remove("message") {
            Some(Value::String(s)) => s,
            _ => return,
        };
        if message.starts_with("DHT announce") || message.starts_with("DHT node") {
            eprintln!("    [{message}] {}", Value::Object(fields.0.clone()));
        }
        self.0.lock().expect("capture").push((message, fields.0));
    }
}

impl Captured {
    fn take(&self) -> Vec<LogEvent> {
        std::mem::take(&mut *self.0.lock().expect("capture"))
    }
}

/// The simulator child: commands on stdin, one line per answer on stdout.
struct Simulator {
    proc: Proc,
    lines: mpsc::Receiver<String>,
    bootstrap: Vec<SocketAddr>,
}

impl Simulator {
    fn start(nodes: usize, port: u16, seed: u64) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut proc = Proc::spawn(
            "simulated DHT",
            Command::new(exe)
                .args([
                    "--simulate",
                    "--nodes",
                    &nodes.to_string(),
                    "--sim-port",
                    &port.to_string(),
                ])
                .args(["--seed", &seed.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )?;
        let stdout = proc.child.stdout.take().context("piped stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(300))
            .context("the simulated DHT did not start")?;
        let mut words = ready.split_whitespace();
        if words.next() != Some("ready") {
            bail!("simulated DHT: {ready}");
        }
        let _count = words.next();
        let bootstrap = words
            .next()
            .context("no bootstrap nodes")?
            .split(',')
            .map(|a| a.parse())
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        println!("simulated DHT: {ready}");
        Ok(Self {
            proc,
            lines,
            bootstrap,
        })
    }

    fn report(&mut self, source: Ipv4Addr) -> Result<Value> {
        self.command(&format!("report {source}"))
    }

    /// Marks the start of a run (stalls are counted from here).
    fn mark(&mut self) -> Result<()> {
        self.command("mark").map(|_| ())
    }

    fn command(&mut self, command: &str) -> Result<Value> {
        let stdin = self.proc.child.stdin.as_mut().context("piped stdin")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(300))
            .context("no report from the simulated DHT")?;
        Ok(serde_json::from_str(&line)?)
    }

    fn cpu(&self, ticks: f64) -> f64 {
        cpu_seconds(self.proc.pid(), ticks).unwrap_or(0.0)
    }
}

/// UDP datagrams the kernel dropped because a socket's receive buffer was
/// full, machine-wide (`RcvbufErrors` in /proc/net/snmp).
fn udp_receive_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// One warnseed run: `decoys` active decoys, the real driver, `seconds`.
fn run_warnseed(
    args: &Args,
    sim: &mut Simulator,
    capture: &Captured,
    decoys: usize,
    bind: Ipv4Addr,
    ticks: f64,
) -> Result<Value> {
    println!("\nwarnseed, {decoys} active decoys, on {bind}:");
    let t = Instant::now();
    let payloads = Arc::new(PayloadSet::single(
        BUILTIN_WARNING.as_bytes().to_vec(),
        "benchmark payload",
        FillMode::Zeros,
        Vec::new(),
    )?);
    let titles: Vec<String> = (0..decoys as u64).map(title).collect();
    let table = Arc::new(DecoyTable::from_titles(
        payloads,
        titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, t.as_str(), None)),
    ));
    drop(titles);
    println!(
        "  decoy table built in {:.1} s ({} active)",
        t.elapsed().as_secs_f64(),
        table.active_len()
    );
    if args.run.wait_idle > 0 {
        let share = wait_for_idle(args.run.idle_below, Duration::from_secs(args.run.wait_idle));
        println!("  machine busy share before the run: {:.0} %", share * 100.0);
    }
    capture.take();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = DhtSettings {
        bootstrap: sim.bootstrap.iter().map(|a| a.to_string()).collect(),
        peer_addr: SocketAddr::from((bind, 6881)),
        announce_interval: Duration::from_secs(args.interval_secs),
        nodes_file: None,
        ledger: None,
    };
    let cpu0 = cpu_seconds(std::process::id(), ticks)?;
    let sim_cpu0 = sim.cpu(ticks);
    let drops0 = udp_receive_drops();
    sim.mark()?;
    let started = Instant::now();
    let seconds = args.seconds;
    let rcvbuf = args.rcvbuf_kib * 1024;
    rt.block_on(async {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        if rcvbuf > 0 {
            socket.set_recv_buffer_size(rcvbuf)?;
        }
        socket.bind(&SocketAddr::from((bind, 0)).into())?;
        socket.set_nonblocking(true)?;
        println!(
            "  node socket receive buffer: {} KiB (kernel value, twice what was asked)",
            socket.recv_buffer_size()? / 1024
        );
        let socket = tokio::net::UdpSocket::from_std(socket.into())?;
        let task = tokio::spawn(run_dht(Arc::clone(&table), socket, settings, stop_rx));
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        let _ = stop_tx.send(true);
        task.await??;
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let node_cpu = cpu_seconds(std::process::id(), ticks)? - cpu0;
    let sim_cpu = sim.cpu(ticks) - sim_cpu0;
    let drops = udp_receive_drops() - drops0;
    let totals = capture
        .take()
        .into_iter()
        .rev()
        .find(|(m, _)| m == "DHT node stopped")
        .map(|(_, fields)| Value::Object(fields))
        .context("the driver logged no totals")?;
    std::thread::sleep(Duration::from_millis(500));
    let seen = sim.report(bind)?;
    Ok(summarise(
        "warnseed",
        &seen,
        elapsed,
        node_cpu,
        sim_cpu,
        drops,
        json!({"decoys": decoys, "node": totals}),
    ))
}

/// Turns the simulator's counts for one source into the reported figures.
fn summarise(
    side: &str,
    seen: &Value,
    elapsed: f64,
    cpu: f64,
    sim_cpu: f64,
    drops: u64,
    extra: Value,
) -> Value {
    let announced = f(seen, "info_hashes");
    let rate = announced / elapsed;
    let packets_per = if announced > 0.0 {
        f(seen, "packets") / announced
    } else {
        f64::NAN
    };
    let on_all = if announced > 0.0 {
        f(seen, "on_all_true_k") / announced
    } else {
        f64::NAN
    };
    let hits = if announced > 0.0 {
        f(seen, "true_k_hits") / (announced * sim::K as f64)
    } else {
        f64::NAN
    };
    let settled = f(seen, "settled_info_hashes");
    let settled_on_all = f(seen, "settled_on_all_true_k") / settled;
    let settled_hits = f(seen, "settled_true_k_hits") / (settled * sim::K as f64);
    // Steady rate: between the first and the last announce_peer, without
    // the start (bootstrap, first lookups) and the announces cut off by
    // the stop.
    let store_span = f(seen, "last_store_s") - f(seen, "first_store_s");
    let steady = if store_span > 0.0 {
        announced / store_span
    } else {
        f64::NAN
    };
    println!(
        "  {side}: {announced:.0} info hashes announced in {elapsed:.1} s = {rate:.1}/s, {:.0} per 30 min; \
         steady (first to last store, {store_span:.1} s): {steady:.1}/s, {:.0} per 30 min",
        rate * HALF_HOUR,
        steady * HALF_HOUR
    );
    println!(
        "  packets {:.0} ({:.2} per announce: get_peers {:.0}, announce_peer {:.0}, find_node {:.0}, ping {:.0}); {:.0} destinations",
        f(seen, "packets"),
        packets_per,
        f(seen, "get_peers"),
        f(seen, "announce_peer"),
        f(seen, "find_node"),
        f(seen, "ping"),
        f(seen, "destinations"),
    );
    println!(
        "  pace: at most {:.0} packets to one node in any 1 s; {:.0} packets over {}/s; {:.0} libtorrent bans; {:.0} bad tokens",
        f(seen, "max_per_node_per_second"),
        f(seen, "over_pace_packets"),
        sim::MAX_PER_SECOND,
        f(seen, "dos_bans"),
        f(seen, "bad_tokens"),
    );
    println!(
        "  simulator's worst scheduling stall {:.0} ms ({:.0} over 100 ms): arrival times bunch by up to that",
        f(seen, "simulator_worst_stall_ms"),
        f(seen, "simulator_stalls_over_100ms"),
    );
    println!(
        "  stored on all {} true closest nodes: {:.2} % (settled: {:.2} % of {settled:.0}); true closest nodes reached: {:.2} % (settled: {:.2} %)",
        sim::K,
        on_all * 100.0,
        settled_on_all * 100.0,
        hits * 100.0,
        settled_hits * 100.0,
    );
    println!(
        "  CPU: {cpu:.1} s ({:.1} ms per 1000 announces); simulator {sim_cpu:.1} s; \
         UDP datagrams dropped by full receive buffers (whole machine): {drops}",
        if announced > 0.0 {
            cpu / announced * 1e6
        } else {
            f64::NAN
        }
    );
    json!({
        "side": side,
        "seconds": elapsed,
        "announced": announced,
        "announces_per_sec": rate,
        "announces_per_30min": rate * HALF_HOUR,
        "steady_announces_per_sec": steady,
        "steady_announces_per_30min": steady * HALF_HOUR,
        "packets_per_announce": packets_per,
        "on_all_true_k": on_all,
        "settled_on_all_true_k": settled_on_all,
        "true_k_reached": hits,
        "cpu_seconds": cpu,
        "simulator_cpu_seconds": sim_cpu,
        "udp_receive_drops": drops,
        "simulator": seen,
        "extra": extra,
    })
}

fn run_libtorrent(
    args: &Args,
    sim: &mut Simulator,
    profile: &str,
    bind: Ipv4Addr,
    ticks: f64,
) -> Result<Value> {
    println!(
        "\nlibtorrent ({profile}), {} torrents, on {bind}:",
        args.lt_torrents
    );
    if args.run.wait_idle > 0 {
        let share = wait_for_idle(args.run.idle_below, Duration::from_secs(args.run.wait_idle));
        println!("  machine busy share before the run: {:.0} %", share * 100.0);
    }
    let bootstrap: Vec<String> = sim.bootstrap.iter().map(|a| a.to_string()).collect();
    let sim_cpu0 = sim.cpu(ticks);
    let drops0 = udp_receive_drops();
    sim.mark()?;
    let mut proc = Proc::spawn(
        "lt_dht_announce.py",
        Command::new(PYTHON)
            .arg(script("lt_dht_announce.py"))
            .args(["--bind", &bind.to_string(), "--bootstrap", &bootstrap.join(",")])
            .args(["--torrents", &args.lt_torrents.to_string()])
            .args(["--seconds", &args.seconds.to_string(), "--profile", profile])
            .stdout(Stdio::piped()),
    )?;
    let stdout = proc.child.stdout.take().context("piped stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with('{') {
            result = Some(serde_json::from_str::<Value>(&line)?);
        } else {
            println!("  {line}");
        }
    }
    let cpu = cpu_seconds(proc.pid(), ticks).unwrap_or(0.0);
    let status = proc.child.wait()?;
    let result = result.context("lt_dht_announce.py printed no result")?;
    if !status.success() || result["ok"] != json!(true) {
        bail!("lt_dht_announce.py failed ({status}): {result}");
    }
    let sim_cpu = sim.cpu(ticks) - sim_cpu0;
    let drops = udp_receive_drops() - drops0;
    std::thread::sleep(Duration::from_millis(500));
    let seen = sim.report(bind)?;
    // libtorrent's window is its whole session: adding the torrents too.
    let elapsed = f(&result, "seconds");
    Ok(summarise(
        &format!("libtorrent {profile}"),
        &seen,
        elapsed,
        cpu,
        sim_cpu,
        drops,
        result,
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.simulate {
        return sim::run(args.nodes, args.sim_port, args.seed);
    }
    let capture = Captured::default();
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(capture.clone())
        .init();
    let ticks = clock_ticks();
    println!("machine: {}", machine());
    let settings = warnseed_bench::run_json(
        "lt_dht_announce.py --print-settings",
        Command::new(PYTHON)
            .arg(script("lt_dht_announce.py"))
            .arg("--print-settings"),
        None,
    )?;
    for profile in ["default", "high_performance_seed"] {
        println!("libtorrent {profile}: {}", settings[profile]);
    }
    let t = Instant::now();
    let mut sim = Simulator::start(args.nodes, args.sim_port, args.seed)?;
    println!(
        "  {} nodes bound in {:.1} s; they accept at most {:.1} M packets per 30 min at {} packets/s each",
        args.nodes,
        t.elapsed().as_secs_f64(),
        args.nodes as f64 * 5.0 * HALF_HOUR / 1e6,
        sim::MAX_PER_SECOND
    );
    let mut results = Vec::new();
    for (k, &decoys) in args.decoys.iter().enumerate() {
        let bind = Ipv4Addr::new(127, 0, 9, 1 + 2 * k as u8);
        results.push(run_warnseed(&args, &mut sim, &capture, decoys, bind, ticks)?);
    }
    for (k, profile) in args.lt_profiles.iter().filter(|p| !p.is_empty()).enumerate() {
        let bind = Ipv4Addr::new(127, 0, 9, 2 + 2 * k as u8);
        results.push(run_libtorrent(&args, &mut sim, profile, bind, ticks)?);
    }

    println!(
        "\nsummary ({} simulated nodes, {} s per run):",
        args.nodes, args.seconds
    );
    println!(
        "  {:<34} {:>12} {:>14} {:>14} {:>10} {:>8} {:>10}",
        "run", "announces/s", "per 30 min", "steady/30 min", "pkts/ann", "pace>5", "on true K"
    );
    for r in &results {
        let name = match r["extra"].get("decoys") {
            Some(d) => format!("warnseed {d} decoys"),
            None => r["side"].as_str().unwrap_or("").to_string(),
        };
        println!(
            "  {:<34} {:>12.1} {:>14.0} {:>14.0} {:>10.2} {:>8} {:>9.1}%",
            name,
            f(r, "announces_per_sec"),
            f(r, "announces_per_30min"),
            f(r, "steady_announces_per_30min"),
            f(r, "packets_per_announce"),
            f(&r["simulator"], "over_pace_packets") + f(&r["simulator"], "dos_bans"),
            f(r, "settled_on_all_true_k") * 100.0
        );
    }
    let best_ws = results
        .iter()
        .filter(|r| r["side"] == "warnseed")
        .map(|r| f(r, "announces_per_30min"))
        .fold(0.0, f64::max);
    for r in results.iter().filter(|r| r["side"] != "warnseed") {
        let lt = f(r, "announces_per_30min");
        println!(
            "  ratio warnseed ÷ {}: {:.0}× announces per 30 min",
            r["side"].as_str().unwrap_or(""),
            best_ws / lt.max(1e-9)
        );
    }
    if let Some(r) = results.iter().rev().find(|r| r["side"] == "warnseed") {
        println!(
            "  target: ≥ {TARGET_DECOYS:.0} per 30 min at ≤ {TARGET_PACKETS} packets each, 0 pace violations; \
             largest run: {:.0} per 30 min ({:.0} steady) at {:.2} packets; \
             the driver aims at decoys ÷ --interval-secs a second, no more",
            f(r, "announces_per_30min"),
            f(r, "steady_announces_per_30min"),
            f(r, "packets_per_announce")
        );
    }
    if args.run.json {
        println!(
            "{}",
            json!({"nodes": args.nodes, "seconds": args.seconds, "results": results})
        );
    }
    let _ = sim.proc.child.stdin.as_mut().map(|s| writeln!(s, "quit"));
    sim.proc.terminate(Duration::from_secs(5))?;
    Ok(())
}
