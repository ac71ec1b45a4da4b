//! A PostgreSQL outage while the node keeps recording: a TCP proxy the
//! test controls stands between the forwarder and the server; the test cuts
//! it (every connection closed, new ones refused) for 20 s while records
//! are appended, restores it, and checks that every record arrived exactly
//! once and that the aggregates equal the local ledger's.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use warnseed_fleet::{Forwarder, ForwarderConfig, ForwarderStatus};
use warnseed_ledger::report::day_of;

/// A loopback TCP proxy to one upstream that can be cut and restored.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    rt: tokio::runtime::Handle,
    accept: Mutex<Option<AbortHandle>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> Self {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            upstream,
            rt: rt.handle().clone(),
            accept: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, conns) = (self.upstream, Arc::clone(&self.conns));
        let task = self.rt.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        *self.accept.lock().unwrap() = Some(task.abort_handle());
    }

    /// Closes every connection and the listener: new connections are refused.
    fn cut(&self) {
        if let Some(a) = self.accept.lock().unwrap().take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match self.rt.block_on(TcpListener::bind(&addr)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        self.serve(listener);
    }
}

fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_outage_loses_nothing_and_counts_nothing_twice() {
    let schema = TestSchema::new("outage");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut local = ledger(&path);
    let mut sessions = Sessions::new(9, START_MS, 60_000, 400);
    append(&mut local, &sessions.records(1_000), 500);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = Proxy::start(&rt, "127.0.0.1:5432".parse().unwrap());
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=test", proxy.port);
    let mut config = ForwarderConfig::new(schema.via(&conninfo), path.clone());
    config.batch_size = 300;
    config.poll = Duration::from_millis(100);
    config.max_backoff = Duration::from_secs(4);
    config.timeout = Duration::from_secs(10);
    config.status_file = Some(dir.path().join("fleet-status.json"));
    let forwarder = Forwarder::new(config).unwrap();
    let status = forwarder.status();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let forwarding = rt.spawn(forwarder.run(stop_rx));

    // The node keeps recording throughout: 60 records every 50 ms.
    let recording = Arc::new(AtomicBool::new(true));
    let recorder = {
        let recording = Arc::clone(&recording);
        std::thread::spawn(move || {
            let mut n = 0;
            while recording.load(Ordering::Relaxed) {
                local.append(&sessions.records(30)).unwrap();
                n += 1;
                if n % 20 == 0 {
                    local
                        .seal(&warnseed_ledger::clock::read(), warnseed_ledger::unix_ms())
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            local
                .seal(&warnseed_ledger::clock::read(), warnseed_ledger::unix_ms())
                .unwrap();
            local
        })
    };
    wait_for("the first records to arrive", Duration::from_secs(60), || {
        status.get().forwarded_seq >= 2_000
    });

    proxy.cut();
    let cut_at = status.get();
    wait_for(
        "the forwarder to notice the outage",
        Duration::from_secs(60),
        || {
            let s = status.get();
            s.state == "backing_off" && s.last_error.is_some()
        },
    );
    std::thread::sleep(Duration::from_secs(20));
    let during: ForwarderStatus = status.get();
    assert_eq!(during.state, "backing_off", "{during:?}");
    assert!(
        during.local_head > cut_at.local_head,
        "records kept coming: {during:?}"
    );
    let written: ForwarderStatus =
        serde_json::from_slice(&std::fs::read(dir.path().join("fleet-status.json")).unwrap()).unwrap();
    assert!(written.last_error.is_some(), "{written:?}");

    proxy.restore();
    wait_for("forwarding to resume", Duration::from_secs(60), || {
        status.get().forwarded_seq > during.forwarded_seq
    });
    std::thread::sleep(Duration::from_secs(2));
    recording.store(false, Ordering::Relaxed);
    let mut local = recorder.join().unwrap();
    let head = local.verify().unwrap().last_seq;
    let sealed = local.seals().unwrap().last().unwrap().id;
    wait_for(
        "every record and seal to arrive",
        Duration::from_secs(120),
        || {
            let s = status.get();
            s.forwarded_seq == head && s.forwarded_seal == sealed
        },
    );
    let _ = stop_tx.send(true);
    rt.block_on(forwarding).unwrap().unwrap();
    let end = status.get();
    assert_eq!(end.state, "stopped");
    // Each record was inserted once: retries after the cut skipped what
    // had committed.
    assert_eq!(end.records_forwarded, head as u64, "{end:?}");
    proxy.cut();
    drop(rt);

    let mut pg = schema.store();
    let node = local.node_id().unwrap();
    assert_eq!(pg_counts(&mut pg, &node), (head, head, head));
    assert_eq!(pg.head(&node).unwrap().seal_id, sealed);
    let (from, to) = (
        day_of(START_MS),
        day_of(START_MS) + 2 + (head / 2 * 60_000) / 86_400_000,
    );
    assert_same_reports(&mut local, &mut pg, from, to);
}
