//! Shared harness for end-to-end tests: a warnseed node run from the built
//! binary, real clients and services as child processes, and the ledger
//! read back with SQLite. Everything listens on loopback addresses.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_warnseed")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fails (never skips) when a real client is missing, naming its package.
pub fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is missing: install the Debian package {package} (`apt-get install {package}`, or run .ci/run)"
    );
}

/// Fails when `/usr/bin/python3` cannot import `module`, naming the
/// Debian package that provides it.
pub fn require_python_module(module: &str, package: &str) {
    require("/usr/bin/python3", "python3");
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python module {module} is missing: install the Debian package {package}"
    );
}

pub fn require_libtorrent() {
    require_python_module("libtorrent", "python3-libtorrent");
}

/// `warnseed decoys export --format files` of a node into `out`.
pub fn export_files(data: &Path, out: &Path) {
    warnseed(&[
        "decoys",
        "export",
        "--format",
        "files",
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
}

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn warnseed(args: &[&str]) -> String {
    run_ok(Command::new(bin()).args(args))
}

/// SHA-256 of `payload` followed by zeros up to `size` bytes: what a decoy
/// must be, computed here independently of warnseed's own code.
pub fn expected_sha256(payload: &[u8], size: u64) -> String {
    let mut h = Sha256::new();
    let size = size.max(payload.len() as u64);
    h.update(payload);
    let mut left = size - payload.len() as u64;
    let zeros = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    hex(&h.finalize())
}

pub fn file_sha256(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Kills the child with SIGTERM (or SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            name: name.into(),
        }
    }
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
    /// SIGTERM, then wait up to `grace` before SIGKILL.
    pub fn stop(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal("-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn wait_for_port(addr: SocketAddr) {
    wait_until(&format!("{addr} to accept"), Duration::from_secs(20), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// Adds `lines` to the `[payload]` table of a node's warnseed.toml.
pub fn set_payload_config(data: &Path, lines: &str) {
    set_config(data, "payload", lines)
}

/// Adds `lines` to table `[table]` of a node's warnseed.toml, replacing the
/// keys they set.
pub fn set_config(data: &Path, table: &str, lines: &str) {
    let cfg = data.join("warnseed.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let header = format!("[{table}]");
    assert!(text.contains(&header), "{text}");
    let mut out = String::new();
    let mut skip = Vec::new();
    for l in lines.lines() {
        if let Some((k, _)) = l.split_once('=') {
            skip.push(format!("{} =", k.trim()));
        }
    }
    // Drop the defaults these lines replace (TOML forbids a key twice).
    for l in text.lines() {
        if !skip.iter().any(|k| l.trim_start().starts_with(k.as_str())) {
            out.push_str(l);
            out.push('\n');
        }
    }
    std::fs::write(&cfg, out.replace(&header, &format!("{header}\n{lines}"))).unwrap();
}

/// A warnseed node: its data directory and, while running, its process.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub proc: Option<Proc>,
    pub addr: Option<SocketAddr>,
}

impl Node {
    /// A data directory with `titles` imported (CSV body after the header)
    /// and an optional payload file.
    pub fn new(csv_rows: &str, payload: Option<&[u8]>) -> Self {
        Self::with_payload_config(csv_rows, payload, "")
    }

    /// As [`Node::new`], with `payload_lines` added to `[payload]` in
    /// warnseed.toml before the catalogue is imported.
    pub fn with_payload_config(csv_rows: &str, payload: Option<&[u8]>, payload_lines: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        warnseed(&["init", "--data", data.to_str().unwrap()]);
        if !payload_lines.is_empty() {
            set_payload_config(&data, payload_lines);
        }
        if let Some(p) = payload {
            std::fs::write(data.join("payload.bin"), p).unwrap();
            let cfg = data.join("warnseed.toml");
            let text = std::fs::read_to_string(&cfg).unwrap();
            std::fs::write(
                &cfg,
                text.replace("[payload]", "[payload]\nfile = \"payload.bin\""),
            )
            .unwrap();
        }
        let csv = dir.path().join("catalog.csv");
        std::fs::write(&csv, format!("title,size_bytes\n{csv_rows}")).unwrap();
        warnseed(&[
            "catalog",
            "import",
            csv.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        Self {
            dir,
            data,
            proc: None,
            addr: None,
        }
    }

    pub fn data_arg(&self) -> &str {
        self.data.to_str().unwrap()
    }

    pub fn export_torrents(&self, trackers: &[String]) -> PathBuf {
        let out = self.dir.path().join("torrents");
        let mut args = vec![
            "decoys",
            "export",
            "--format",
            "torrent",
            "--out",
            out.to_str().unwrap(),
            "--data",
            self.data_arg(),
        ];
        for t in trackers {
            args.extend(["--tracker", t.as_str()]);
        }
        warnseed(&args);
        out
    }

    /// (info hash, decoy id, size, title) per decoy, from index.tsv.
    pub fn index(torrents: &Path) -> Vec<(String, i64, u64, String)> {
        std::fs::read_to_string(torrents.join("index.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].to_string(),
                )
            })
            .collect()
    }

    pub fn start(&mut self, listen: SocketAddr, extra: &[&str]) {
        self.start_in(None, listen, extra)
    }

    /// Starts `warnseed run`, inside `netns` when given.
    pub fn start_in(&mut self, netns: Option<&Netns>, listen: SocketAddr, extra: &[&str]) {
        let log = self.dir.path().join("node.log");
        let mut cmd = match netns {
            Some(ns) => ns.command(bin()),
            None => Command::new(bin()),
        };
        cmd.args(["run", "--data", self.data_arg(), "--listen", &listen.to_string()])
            .args(extra)
            .env("RUST_LOG", "info");
        let out_path = self.dir.path().join("node.out");
        let out = std::fs::File::create(&out_path).unwrap();
        let err = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start warnseed run");
        self.proc = Some(Proc {
            child,
            name: "warnseed".into(),
        });
        wait_until("warnseed to print ready", Duration::from_secs(60), || {
            std::fs::read_to_string(&out_path)
                .map(|s| s.contains("ready listen="))
                .unwrap_or(false)
        });
        self.addr = Some(listen);
    }

    /// Graceful stop; returns stdout.
    pub fn stop(&mut self) -> String {
        if let Some(p) = self.proc.take() {
            let status = p
                .stop(Duration::from_secs(20))
                .expect("warnseed stops on SIGTERM");
            assert!(status.success(), "warnseed exited with {status}: {}", self.log());
        }
        std::fs::read_to_string(self.dir.path().join("node.out")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    pub fn sessions(&self) -> Vec<Session> {
        ledger_rows(&self.data.join("ledger.sqlite"))
            .into_iter()
            .filter(|r| r.kind != "open")
            .map(|r| r.session)
            .collect()
    }

    /// Every ledger record (open and close records).
    pub fn ledger_records(&self) -> usize {
        ledger_rows(&self.data.join("ledger.sqlite")).len()
    }

    /// Open records (sessions that named a decoy) from `ip`.
    pub fn open_records(&self, ip: &str) -> usize {
        ledger_rows(&self.data.join("ledger.sqlite"))
            .iter()
            .filter(|r| r.kind == "open" && r.session.ip == ip)
            .count()
    }

    /// Waits until the ledger holds a completed session for `ip` and
    /// `info_hash`, then returns every session of that pair.
    pub fn wait_for_completed(&self, ip: &str, info_hash: &str) -> Vec<Session> {
        let mut found = Vec::new();
        wait_until(
            &format!("a completed ledger session from {ip} for {info_hash}"),
            Duration::from_secs(30),
            || {
                found = self
                    .sessions()
                    .into_iter()
                    .filter(|s| s.ip == ip && s.info_hash == info_hash)
                    .collect();
                found.iter().any(|s| s.completed)
            },
        );
        found
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- warnseed log ---\n{}", self.log());
        }
    }
}

/// One record of a ledger as stored, read straight from its blocks.
pub struct LedgerRow {
    pub seq: i64,
    pub kind: String,
    /// The record's fields; `ip` is the address, `erased` or a pseudonym.
    pub session: Session,
    pub country: Option<String>,
    pub city: Option<String>,
}

/// Every record of the ledger at `path`, read without warnseed's store
/// (read-only, beside a running node).
pub fn ledger_rows(path: &Path) -> Vec<LedgerRow> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut out = Vec::new();
    warnseed_ledger::blockstore::for_each_seq(&conn, 1, i64::MAX, |seq, _, r| {
        out.push(LedgerRow {
            seq,
            kind: r.kind.as_str().to_string(),
            session: Session {
                ip: warnseed_ledger::blockstore::address_text(&r.address),
                port: r.remote_port,
                client: r.client_name.map(str::to_string),
                version: r.client_version.map(str::to_string),
                bytes_sent: r.bytes_sent,
                completed: r.completed,
                info_hash: r.info_hash.iter().map(|b| format!("{b:02x}")).collect(),
                close_reason: r.close_reason.to_string(),
                started_at_ms: r.started_at_ms,
                ended_at_ms: r.ended_at_ms,
                decoy_id: r.decoy_id,
                transport: r.transport.to_string(),
            },
            country: r.geo.country.map(str::to_string),
            city: r.geo.city.map(str::to_string),
        });
        Ok(())
    })
    .unwrap();
    out
}

#[derive(Clone, Debug)]
pub struct Session {
    pub ip: String,
    pub port: u16,
    pub client: Option<String>,
    pub version: Option<String>,
    pub bytes_sent: u64,
    pub completed: bool,
    pub info_hash: String,
    pub close_reason: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub decoy_id: i64,
    pub transport: String,
}

/// A network namespace the test creates for itself, with test addresses
/// on its own loopback interface. Transmission (like some other clients)
/// refuses peers on 127.0.0.0/8, so tests that need it run inside one.
/// Nothing in it can reach any other network.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace holding `addrs` (e.g. 10.77.0.1) on `lo`.
    pub fn new(tag: &str, addrs: &[Ipv4Addr]) -> Self {
        require("ip", "iproute2");
        let name = format!("warnseed-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Self { name };
        run_ok(Command::new("ip").args(["netns", "add", &ns.name]));
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        for a in addrs {
            run_ok(Command::new("ip").args(["-n", &ns.name, "addr", "add", &format!("{a}/32"), "dev", "lo"]));
        }
        ns
    }

    /// `program` run inside the namespace (`ip netns exec` execs it, so the
    /// child's pid is the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn wait_for_port(&self, addr: SocketAddr) {
        wait_until(
            &format!("{addr} to accept in {}", self.name),
            Duration::from_secs(20),
            || {
                self.command("bash")
                    .args(["-c", &format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port())])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
        );
    }
}

/// Watches, from inside a namespace, the TCP connections that reach
/// `server`, and collects their source ports: the client-side view that a
/// ledger row's `remote_port` must match.
pub struct PortWatcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::collections::BTreeSet<u16>>>,
}

impl PortWatcher {
    pub fn start(ns: &Netns, server: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let name = ns.name.clone();
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut ports = std::collections::BTreeSet::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &name, "ss", "-tnH", "state", "established"])
                    .arg(format!("dst {server}"))
                    .output();
                if let Ok(out) = out {
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        // Recv-Q Send-Q Local:Port Peer:Port
                        let local = line.split_whitespace().nth(2).unwrap_or("");
                        if let Some(port) = local.rsplit(':').next().and_then(|p| p.parse().ok()) {
                            ports.insert(port);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ports
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> std::collections::BTreeSet<u16> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// opentracker with a whitelist of our info hashes, on TCP and UDP.
pub struct Opentracker {
    pub proc: Proc,
    pub url: String,
    pub udp_url: String,
    pub addr: SocketAddr,
}

/// `%xx` for every byte of a hex info hash, as a query parameter.
pub fn percent_hex(info_hash_hex: &str) -> String {
    info_hash_hex
        .as_bytes()
        .chunks(2)
        .map(|p| format!("%{}", std::str::from_utf8(p).unwrap()))
        .collect()
}

/// A plain HTTP/1.0 GET of `target` from inside the namespace (bash's
/// /dev/tcp); the whole response.
pub fn http_get_in(ns: &Netns, addr: SocketAddr, target: &str) -> Vec<u8> {
    assert!(!target.contains('\''), "{target}");
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && printf 'GET %s HTTP/1.0\\r\\n\\r\\n' '{target}' >&3 && cat <&3",
        addr.ip(),
        addr.port()
    );
    ns.command("bash")
        .args(["-c", &script])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default()
}

impl Opentracker {
    pub fn start_in(ns: &Netns, dir: &Path, ip: Ipv4Addr, whitelist: &[String]) -> Self {
        require("opentracker", "opentracker");
        let port = 6969;
        let wl = dir.join("whitelist.txt");
        std::fs::write(&wl, whitelist.join("\n") + "\n").unwrap();
        let conf = dir.join("opentracker.conf");
        std::fs::write(
            &conf,
            format!("listen.tcp_udp {ip}:{port}\naccess.whitelist {}\n", wl.display()),
        )
        .unwrap();
        let proc = Proc::spawn(
            "opentracker",
            ns.command("opentracker").arg("-f").arg(&conf),
            &dir.join("opentracker.log"),
        );
        let addr = SocketAddr::from((ip, port));
        ns.wait_for_port(addr);
        // opentracker reads its whitelist on a thread of its own once it
        // listens, refusing (HTTP) or dropping (UDP) announces until then.
        // Wait until it takes the last hash, as a leecher on port 1 that
        // leaves at once (so no seeder is added).
        if let Some(last) = whitelist.last() {
            let probe = format!(
                "/announce?info_hash={}&peer_id=-XX0000-probeprobepr&port=1&left=1",
                percent_hex(last)
            );
            wait_until(
                "opentracker to load its whitelist",
                Duration::from_secs(60),
                || {
                    let r = http_get_in(ns, addr, &probe);
                    let ok = r.starts_with(b"HTTP/1.1 200") && !r.windows(14).any(|w| w == b"failure reason");
                    if !ok {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    ok
                },
            );
            http_get_in(ns, addr, &format!("{probe}&event=stopped"));
        }
        Self {
            proc,
            url: format!("http://{ip}:{port}/announce"),
            udp_url: format!("udp://{ip}:{port}/announce"),
            addr,
        }
    }

    /// Seeders (`complete`) per hex info hash by our own scrape, read with
    /// a bencode decoder; 0 for a torrent the tracker does not list.
    pub fn seeders(&self, ns: &Netns, info_hashes_hex: &[String]) -> Vec<i64> {
        let query: Vec<String> = info_hashes_hex
            .iter()
            .map(|h| format!("info_hash={}", percent_hex(h)))
            .collect();
        let raw = http_get_in(ns, self.addr, &format!("/scrape?{}", query.join("&")));
        let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return vec![0; info_hashes_hex.len()];
        };
        let body = warnseed_bittorrent::bencode::decode(&raw[split + 4..]).expect("a bencoded scrape");
        let files = body.get(b"files").expect("files");
        info_hashes_hex
            .iter()
            .map(|h| {
                let key = warnseed_bittorrent::metainfo::parse_hex20(h).expect("hex info hash");
                files
                    .get(&key)
                    .and_then(|f| f.get(b"complete"))
                    .and_then(|c| c.as_int())
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Runs tests/clients/lt_download.py; returns its JSON result.
pub fn libtorrent_download(
    source: (&str, &str),
    peer: Option<SocketAddr>,
    bind: impl Into<std::net::IpAddr>,
    out: &Path,
) -> serde_json::Value {
    libtorrent_download_with(source, peer, bind, out, "default")
}

/// As [`libtorrent_download`], with an encryption mode of lt_download.py
/// (`default`, `forced-rc4`, `disabled`).
pub fn libtorrent_download_with(
    source: (&str, &str),
    peer: Option<SocketAddr>,
    bind: impl Into<std::net::IpAddr>,
    out: &Path,
    encryption: &str,
) -> serde_json::Value {
    libtorrent_download_args(source, peer, bind, out, &["--encryption", encryption])
}

/// As [`libtorrent_download`], with more lt_download.py arguments.
pub fn libtorrent_download_args(
    source: (&str, &str),
    peer: Option<SocketAddr>,
    bind: impl Into<std::net::IpAddr>,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    require_libtorrent();
    std::fs::create_dir_all(out).unwrap();
    let script = repo_root().join("tests/clients/lt_download.py");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).args([source.0, source.1]).args([
        "--bind",
        &bind.into().to_string(),
        "--out",
        out.to_str().unwrap(),
        "--timeout",
        "120",
    ]);
    cmd.args(extra);
    if let Some(p) = peer {
        cmd.args(["--peer", &p.to_string()]);
    }
    let stdout = run_ok(&mut cmd);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["ok"], true, "libtorrent download failed: {v}");
    v
}

/// A libtorrent session that is only a DHT node (tests/clients/lt_dht_node.py)
/// on `ip` (IPv4 or IPv6) and `port`, joined to `bootstrap` (`host:port,…`).
pub fn lt_dht_node(dir: &Path, ip: std::net::IpAddr, port: u16, bootstrap: &str) -> Proc {
    let log = dir.join(format!("lt-dht-{ip}-{port}.log"));
    let script = repo_root().join("tests/clients/lt_dht_node.py");
    let proc = Proc::spawn(
        "lt_dht_node.py",
        Command::new("/usr/bin/python3").arg(script).args([
            "--bind",
            &ip.to_string(),
            "--port",
            &port.to_string(),
            "--bootstrap",
            bootstrap,
        ]),
        &log,
    );
    wait_until(
        &format!("libtorrent DHT node on {ip}"),
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
        },
    );
    proc
}
