//! The real server on loopback, in process: hostile input (each bad
//! connection is closed with its reason while a well-behaved downloader,
//! running at the same time, still gets every byte), connection caps,
//! upload slots, IPv6 and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use warnseed_bittorrent::session::{CloseReason, LocalIdentity, SeedContent};
use warnseed_bittorrent::wire::Handshake;
use warnseed_ledger::{LedgerStore, LedgerWriter, WriterConfig};
use warnseed_payload::{FillMode, PayloadSet};
use warnseed_seeder::{ConnectionClosed, DecoyTable, PeerServer, ServerConfig};

const SIZE: u64 = 300_000;

struct Node {
    addr: std::net::SocketAddr,
    table: Arc<DecoyTable>,
    closed: mpsc::UnboundedReceiver<ConnectionClosed>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    writer: LedgerWriter,
    ledger_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Node {
    start_on("127.0.0.1:0", configure).await
}

async fn start_on(bind: &str, configure: impl FnOnce(&mut ServerConfig)) -> Node {
    let payload = Arc::new(
        PayloadSet::single(
            b"WARNING: test payload".repeat(100),
            "test",
            FillMode::Zeros,
            Vec::new(),
        )
        .unwrap(),
    );
    let table = Arc::new(DecoyTable::from_titles(
        payload,
        [
            (1, "sample-title-000001.mp4", Some(SIZE)),
            (2, "sample-title-000002.mkv", None),
        ],
    ));
    let mut config = ServerConfig::new(LocalIdentity {
        peer_id: *b"-WS0100-testtesttest",
        client_version: "warnseed/test".into(),
        listen_port: 0,
    });
    config.limits.handshake_timeout = Duration::from_millis(500);
    config.limits.idle_timeout = Duration::from_millis(1500);
    config.limits.keepalive_interval = Duration::from_millis(400);
    configure(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.sqlite");
    let writer = LedgerWriter::open(&ledger_path, WriterConfig::default()).unwrap();
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, closed) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let server = PeerServer::new(Arc::clone(&table), config, writer.sender()).with_observer(tx);
    let server = tokio::spawn(server.serve(vec![listener], stop_rx));
    Node {
        addr,
        table,
        closed,
        stop,
        server,
        writer,
        ledger_path,
        _dir: dir,
    }
}

impl Node {
    fn decoy_hash(&self) -> [u8; 20] {
        *self.table.iter().find(|d| d.id() == 1).unwrap().info_hash()
    }
    /// The close event of the connection from `local` (other connections'
    /// events, such as the concurrent good download's, are skipped).
    async fn close_of(&mut self, local: std::net::SocketAddr) -> ConnectionClosed {
        loop {
            let c = tokio::time::timeout(Duration::from_secs(10), self.closed.recv())
                .await
                .expect("a connection closed within 10 s")
                .expect("server alive");
            if c.remote == local {
                return c;
            }
        }
    }
    async fn stop(self) -> Vec<warnseed_ledger::StoredSession> {
        self.stop.send(true).unwrap();
        self.server.await.unwrap();
        self.writer.close().unwrap();
        LedgerStore::open(&self.ledger_path).unwrap().sessions().unwrap()
    }
}

fn handshake(info_hash: [u8; 20], fast: bool) -> Vec<u8> {
    let mut reserved = [0u8; 8];
    reserved[5] |= 0x10;
    if fast {
        reserved[7] |= 0x04;
    }
    Handshake {
        reserved,
        info_hash,
        peer_id: *b"-qB4620-abcdefghijkl",
    }
    .encode()
    .to_vec()
}

/// Reads until EOF or reset; panics if the socket stays open for 10 s.
async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("server kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            continue;
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.unwrap();
        return (body[0], body[1..].to_vec());
    }
}

fn msg(id: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(id);
    v.extend_from_slice(body);
    v
}

fn request(index: u32, begin: u32, length: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for x in [index, begin, length] {
        b.extend_from_slice(&x.to_be_bytes());
    }
    msg(6, &b)
}

/// A well-behaved downloader: fetches the whole decoy and returns its bytes.
async fn download(addr: std::net::SocketAddr, info_hash: [u8; 20], size: u64, piece_length: u32) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&handshake(info_hash, true)).await.unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    assert_eq!(&hs[28..48], &info_hash);
    s.write_all(&msg(2, &[])).await.unwrap();
    loop {
        if read_msg(&mut s).await.0 == 1 {
            break;
        }
    }
    let mut reqs = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let len = (size - offset).min(16384) as u32;
        let index = (offset / u64::from(piece_length)) as u32;
        let begin = (offset % u64::from(piece_length)) as u32;
        reqs.extend(request(index, begin, len));
        offset += u64::from(len);
    }
    s.write_all(&reqs).await.unwrap();
    let mut data = vec![0u8; size as usize];
    let mut got = 0u64;
    while got < size {
        let (id, body) = read_msg(&mut s).await;
        if id != 7 {
            continue;
        }
        let index = u32::from_be_bytes(body[..4].try_into().unwrap());
        let begin = u32::from_be_bytes(body[4..8].try_into().unwrap());
        let at = u64::from(index) * u64::from(piece_length) + u64::from(begin);
        data[at as usize..at as usize + body.len() - 8].copy_from_slice(&body[8..]);
        got += (body.len() - 8) as u64;
    }
    data
}

fn expected_bytes(node: &Node) -> Vec<u8> {
    let decoy = node.table.iter().find(|d| d.id() == 1).unwrap();
    let mut v = Vec::new();
    decoy.layout().read_into(0, decoy.size() as u32, &mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_connection_is_closed_with_its_reason_while_a_good_peer_downloads() {
    let mut node = start(|_| {}).await;
    let ih = node.decoy_hash();
    let piece_length = node.table.lookup(&ih).unwrap().piece_length();
    // A well-behaved peer downloads again and again for as long as the bad
    // connections are being tried.
    let bad_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let (addr, bad_done) = (node.addr, Arc::clone(&bad_done));
        tokio::spawn(async move {
            let mut downloads = Vec::new();
            while !bad_done.load(std::sync::atomic::Ordering::SeqCst) {
                downloads.push(download(addr, ih, SIZE, piece_length).await);
            }
            downloads
        })
    };

    // Each case: bytes to send, the reason the server must give.
    let mut oversized_prefix = handshake(ih, true);
    oversized_prefix.extend(0xffff_fff0u32.to_be_bytes());
    let mut out_of_range = handshake(ih, false);
    out_of_range.extend(msg(2, &[]));
    out_of_range.extend(request(1000, 0, 16384));
    let mut oversized_request = handshake(ih, false);
    oversized_request.extend(msg(2, &[]));
    oversized_request.extend(request(0, 0, 1 << 20));
    let mut metadata_past_end = handshake(ih, true);
    metadata_past_end.extend(msg(20, b"\x00d1:md11:ut_metadatai3eee"));
    metadata_past_end.extend(msg(20, b"\x01d8:msg_typei0e5:piecei99ee"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // HTTP or TLS: closed at once. Other non-handshakes are read as MSE
        // openers: short ones wait for a key that never comes, long ones
        // never show the req1 marker.
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "not_bittorrent",
        ),
        (
            "TLS hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            "not_bittorrent",
        ),
        ("short garbage", vec![0x33; 40], "handshake_timeout"),
        ("MSE key then noise", vec![0x5a; 96 + 532], "encryption_failed"),
        (
            "almost a plain handshake (read as an MSE key, which never completes)",
            b"\x13BitTorrent protocoX".to_vec(),
            "handshake_timeout",
        ),
        (
            "unknown info hash",
            handshake([0xab; 20], true),
            "unknown_info_hash",
        ),
        ("length prefix over limit", oversized_prefix, "message_too_long"),
        ("request out of range", out_of_range, "invalid_request"),
        ("oversized request", oversized_request, "invalid_request"),
        (
            "metadata piece past the end",
            metadata_past_end,
            "invalid_metadata_request",
        ),
        (
            "half-open handshake",
            handshake(ih, true)[..30].to_vec(),
            "handshake_timeout",
        ),
        ("idle after handshake", handshake(ih, true), "idle_timeout"),
    ];
    for (name, bytes, want) in &cases {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        assert_closed_by_server(&mut s).await;
        let closed = node.close_of(s.local_addr().unwrap()).await;
        assert_eq!(closed.reason.code(), *want, "{name}: {:?}", closed.reason);
    }
    bad_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let downloads = good.await.unwrap();
    assert!(
        downloads.len() >= 3,
        "the good peer kept downloading ({})",
        downloads.len()
    );
    let want = expected_bytes(&node);
    assert!(downloads.iter().all(|d| *d == want), "every good download intact");

    let sessions = node.stop().await;
    // Only connections that named a decoy are registered.
    let reasons: Vec<&str> = sessions.iter().map(|s| s.close_reason.as_str()).collect();
    for want in [
        "message_too_long",
        "invalid_request",
        "invalid_metadata_request",
        "idle_timeout",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(want)),
            "{want} registered in {reasons:?}"
        );
    }
    assert!(!reasons
        .iter()
        .any(|r| r.starts_with("not_bittorrent") || r.starts_with("unknown")));
    let good_row = sessions
        .iter()
        .find(|s| s.bytes_sent == SIZE)
        .expect("the good sessions are registered");
    assert!(good_row.completed);
    assert_eq!(good_row.client_name.as_deref(), Some("qBittorrent 4.6.2.0"));
    assert_eq!(good_row.remote_ip, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_refused() {
    let mut node = start(|c| c.max_connections_per_ip = 2).await;
    let ih = node.decoy_hash();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        s.write_all(&handshake(ih, true)).await.unwrap();
        let mut hs = [0u8; 68];
        s.read_exact(&mut hs).await.unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(node.addr).await.unwrap();
    assert_closed_by_server(&mut third).await;
    let closed = node.close_of(third.local_addr().unwrap()).await;
    assert_eq!(closed.reason, CloseReason::ConnectionLimit);
    drop(held);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_registers_open_sessions() {
    let node = start(|c| c.limits.idle_timeout = Duration::from_secs(60)).await;
    let ih = node.decoy_hash();
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    s.write_all(&handshake(ih, true)).await.unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    let sessions = node.stop().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].close_reason, "shutdown");
    assert!(!sessions[0].completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_ipv6() {
    let node = start_on("[::1]:0", |_| {}).await;
    let ih = node.decoy_hash();
    let piece_length = node.table.lookup(&ih).unwrap().piece_length();
    let data = download(node.addr, ih, SIZE, piece_length).await;
    assert_eq!(data, expected_bytes(&node));
    let sessions = node.stop().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].remote_ip, "::1");
    assert!(sessions[0].completed);
}

/// A peer that has shaken hands (with the fast extension) and said it is
/// interested.
async fn interested_peer(addr: std::net::SocketAddr, info_hash: [u8; 20]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&handshake(info_hash, true)).await.unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    s.write_all(&msg(2, &[])).await.unwrap();
    s
}

async fn unchoked_within(s: &mut TcpStream, limit: Duration) -> bool {
    let wait = async { while read_msg(s).await.0 != 1 {} };
    tokio::time::timeout(limit, wait).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_slots_cap_how_many_peers_are_unchoked() {
    let node = start(|c| {
        c.upload_slots = 1;
        c.limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let ih = node.decoy_hash();
    let mut peers = Vec::new();
    for _ in 0..2 {
        peers.push(interested_peer(node.addr, ih).await);
    }
    // Exactly one of the two interested peers is unchoked.
    let first = unchoked_within(&mut peers[0], Duration::from_millis(1500)).await;
    let second = unchoked_within(&mut peers[1], Duration::from_millis(1500)).await;
    assert!(
        first ^ second,
        "one slot, one unchoked peer (got {first}, {second})"
    );
    // When the unchoked peer leaves, the waiting one gets the slot.
    let (gone, waiting) = if first { (0, 1) } else { (1, 0) };
    let leaving = peers.remove(gone);
    drop(leaving);
    let waiting = if waiting > gone { waiting - 1 } else { waiting };
    assert!(
        unchoked_within(&mut peers[waiting], Duration::from_secs(5)).await,
        "the freed slot goes to the waiting peer"
    );
    drop(peers);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_is_taken_back_and_given_to_a_waiting_peer() {
    let node = start(|c| {
        c.upload_slots = 1;
        c.limits.idle_timeout = Duration::from_secs(60);
        c.limits.unchoked_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let ih = node.decoy_hash();
    let mut first = interested_peer(node.addr, ih).await;
    assert!(unchoked_within(&mut first, Duration::from_secs(5)).await);
    // A second interested peer waits for the only slot, which the first
    // holds without asking for anything.
    let mut second = interested_peer(node.addr, ih).await;
    let wait = async { while read_msg(&mut first).await.0 != 0 {} };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the idle peer is choked");
    assert!(
        unchoked_within(&mut second, Duration::from_secs(5)).await,
        "the slot went to the waiting peer"
    );
    drop((first, second));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_past_its_tenure_goes_to_a_waiting_peer_in_turn() {
    let node = start(|c| {
        c.upload_slots = 1;
        c.slot_tenure = Duration::from_secs(1);
        c.limits.idle_timeout = Duration::from_secs(60);
        // Not idle-slot reclaiming: the slot must move by rotation.
        c.limits.unchoked_idle_timeout = Duration::from_secs(60);
    })
    .await;
    let ih = node.decoy_hash();
    let mut first = interested_peer(node.addr, ih).await;
    assert!(unchoked_within(&mut first, Duration::from_secs(5)).await);
    let mut second = interested_peer(node.addr, ih).await;
    // The first keeps asking (one block every half second: never idle),
    // yet after its tenure the slot goes to the second...
    let keep_asking = async {
        loop {
            first.write_all(&request(0, 0, 16384)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        _ = keep_asking => unreachable!(),
        unchoked = unchoked_within(&mut second, Duration::from_secs(10)) => {
            assert!(unchoked, "the waiting peer got the slot");
        }
    }
    // ...and, once the second's tenure is over and the first has rested,
    // back to the first.
    let wait = async { while read_msg(&mut first).await.0 != 1 {} };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the slot came back in turn");
    drop((first, second));
    node.stop().await;
}
