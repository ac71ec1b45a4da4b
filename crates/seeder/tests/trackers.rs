//! Tracker publishing against the real opentracker (Debian package
//! `opentracker`) on 127.0.0.1, in process: rounds over HTTP and UDP in
//! tiers, the schedule's releases and retirements reaching the tracker on
//! reconcile ticks, scrape totals in the status, and a dead tracker giving
//! way to the next of its tier. What the tracker lists is checked with our
//! own raw scrape, not only with what the announcer reports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use warnseed_bittorrent::bencode;
use warnseed_bittorrent::metainfo::{hex, percent_encode};
use warnseed_bittorrent::session::SeedContent;
use warnseed_payload::{FillMode, PayloadSet};
use warnseed_seeder::{announce_loop, AnnounceSettings, DecoyTable, StatusBoard, TrackerStatus, TrackerUrl};

const PEER_ID: [u8; 20] = *b"-WS0100-trackertests";
const PEER_PORT: u16 = 6881;

fn table(n: usize) -> Arc<DecoyTable> {
    let payload = Arc::new(
        PayloadSet::single(
            b"WARNING: test payload for tracker tests".repeat(20),
            "test",
            FillMode::Zeros,
            Vec::new(),
        )
        .unwrap(),
    );
    let titles: Vec<String> = (1..=n).map(|i| format!("sample-title-{i:06}.mp4")).collect();
    Arc::new(DecoyTable::from_titles(
        payload,
        titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, t.as_str(), Some(100_000 + i as u64))),
    ))
}

fn info_hashes(table: &Arc<DecoyTable>) -> Vec<[u8; 20]> {
    table.iter_all().map(|d| *d.info_hash()).collect()
}

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// opentracker on 127.0.0.1 (HTTP and UDP on one port), whitelisting
/// `hashes`; killed on drop.
struct Opentracker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Opentracker {
    fn start(hashes: &[[u8; 20]]) -> Self {
        let found = Command::new("sh")
            .args(["-c", "command -v opentracker"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "opentracker is missing: install the Debian package opentracker (`apt-get install opentracker`, or run .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let whitelist = dir.path().join("whitelist.txt");
        let lines: String = hashes.iter().map(|h| hex(h) + "\n").collect();
        std::fs::write(&whitelist, lines).unwrap();
        let conf = dir.path().join("opentracker.conf");
        std::fs::write(
            &conf,
            format!(
                "listen.tcp_udp 127.0.0.1:{port}\naccess.whitelist {}\n",
                whitelist.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("opentracker.log")).unwrap();
        let child = Command::new("opentracker")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start opentracker");
        let t = Self {
            child,
            port,
            _dir: dir,
        };
        wait_until("opentracker to accept", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // opentracker reads its whitelist on a thread of its own after it
        // starts listening, and until then refuses announces over HTTP and
        // drops them over UDP. Wait until it takes the last hash, as a
        // leecher on port 1 that leaves at once (so no seeder is added).
        if let Some(last) = hashes.last() {
            wait_until(
                "opentracker to load its whitelist",
                Duration::from_secs(60),
                || {
                    let accepted = !t
                        .get(&format!(
                            "/announce?info_hash={}&peer_id=-XX0000-probeprobepr&port=1&left=1",
                            percent_encode(last)
                        ))
                        .contains("failure reason");
                    if !accepted {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    accepted
                },
            );
            t.get(&format!(
                "/announce?info_hash={}&peer_id=-XX0000-probeprobepr&port=1&left=1&event=stopped",
                percent_encode(last)
            ));
        }
        t
    }

    /// A plain HTTP/1.0 GET of `target`; the whole response, lossily as text.
    fn get(&self, target: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {target} HTTP/1.0\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }

    /// Seeders per info hash, by our own scrape (a plain HTTP/1.0 GET and
    /// a bencode decode); 0 for torrents the tracker does not list.
    fn seeders(&self, hashes: &[[u8; 20]]) -> Vec<i64> {
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(40) {
            let query: Vec<String> = chunk
                .iter()
                .map(|h| format!("info_hash={}", percent_encode(h)))
                .collect();
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
            write!(s, "GET /scrape?{} HTTP/1.0\r\n\r\n", query.join("&")).unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response") + 4;
            let body = bencode::decode(&raw[split..]).expect("bencoded scrape");
            let files = body.get(b"files").expect("files");
            for h in chunk {
                out.push(
                    files
                        .get(h)
                        .and_then(|f| f.get(b"complete"))
                        .and_then(|c| c.as_int())
                        .unwrap_or(0),
                );
            }
        }
        out
    }
}

impl Drop for Opentracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Seeders for `hashes` by our own scrape, off the runtime's threads.
async fn seeders(tracker: &Arc<Opentracker>, hashes: &[[u8; 20]]) -> Vec<i64> {
    let (t, h) = (Arc::clone(tracker), hashes.to_vec());
    tokio::task::spawn_blocking(move || t.seeders(&h)).await.unwrap()
}

fn tracker(board: &StatusBoard, url: &str) -> TrackerStatus {
    board
        .trackers()
        .into_iter()
        .find(|t| t.url == url)
        .unwrap_or_else(|| panic!("{url} in {:?}", board.trackers()))
}

struct Announcers {
    board: Arc<StatusBoard>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Announcers {
    fn start(tiers: &[&[String]], table: &Arc<DecoyTable>, tune: impl Fn(&mut AnnounceSettings)) -> Self {
        let board = Arc::new(StatusBoard::new());
        let (stop, stop_rx) = watch::channel(false);
        let mut settings = AnnounceSettings::new(Some([127, 0, 0, 1].into()), PEER_ID, PEER_PORT);
        settings.reconcile_every = Duration::from_millis(200);
        tune(&mut settings);
        let mut tasks = Vec::new();
        for (i, tier) in tiers.iter().enumerate() {
            let urls: Vec<TrackerUrl> = tier.iter().map(|u| TrackerUrl::parse(u).unwrap()).collect();
            for u in *tier {
                board.tracker_pending(i + 1, u);
            }
            tasks.push(tokio::spawn(announce_loop(
                i + 1,
                urls,
                Arc::clone(table),
                settings.clone(),
                Arc::clone(&board),
                stop_rx.clone(),
            )));
        }
        Self { board, stop, tasks }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_decoys_leave_opentracker_and_released_ones_join_over_http_and_udp() {
    const N: usize = 120;
    let table = table(N);
    let hashes = info_hashes(&table);
    let ot = Arc::new(Opentracker::start(&hashes));
    let (http, udp) = (ot.http(), ot.udp());
    // Two tiers, one per protocol, on the same tracker: both announce the
    // same peer, and opentracker lists it once.
    let run = Announcers::start(
        &[std::slice::from_ref(&http), std::slice::from_ref(&udp)],
        &table,
        |_| {},
    );

    wait_for("both rounds and scrapes", Duration::from_secs(60), || {
        [&http, &udp]
            .iter()
            .all(|u| tracker(&run.board, u).scrape.at_ms.is_some())
    })
    .await;
    for url in [&http, &udp] {
        let t = tracker(&run.board, url);
        assert_eq!(t.state, "ok", "{t:?}");
        assert_eq!((t.announced, t.failed, t.rounds), (N as u64, 0, 1), "{t:?}");
        assert_eq!(
            (t.tracked, t.started, t.stopped),
            (N as u64, N as u64, 0),
            "{t:?}"
        );
        assert!(
            t.next_round_at_ms.unwrap() > t.last_round_at_ms.unwrap() + 60_000,
            "{t:?}"
        );
        let s = &t.scrape;
        assert!(s.supported);
        assert_eq!(
            (s.decoys, s.listed, s.seeders, s.failed),
            (N as u64, N as u64, N as u64, 0),
            "{t:?}"
        );
    }
    assert_eq!(seeders(&ot, &hashes).await, vec![1; N]);

    // The schedule retires every fourth decoy: reconcile ticks stop them.
    for id in (1..=N as i64).filter(|id| id % 4 == 0) {
        assert!(table.set_active(id, false));
    }
    let retired: Vec<bool> = table.iter_all().map(|d| !d.is_active()).collect();
    let want: Vec<i64> = retired.iter().map(|&r| i64::from(!r)).collect();
    let mut listed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        listed = seeders(&ot, &hashes).await;
        if listed == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed, want, "retired decoys leave the tracker, the others stay");
    wait_for(
        "both tiers to record their stops",
        Duration::from_secs(30),
        || {
            [&http, &udp].iter().all(|u| {
                let t = tracker(&run.board, u);
                t.tracked == (N - N / 4) as u64 && t.stopped == (N / 4) as u64
            })
        },
    )
    .await;

    // Released again: started again.
    for id in (1..=N as i64).filter(|id| id % 4 == 0) {
        table.set_active(id, true);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        listed = seeders(&ot, &hashes).await;
        if listed == vec![1; N] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed, vec![1; N]);
    wait_for(
        "both tiers to track every decoy again",
        Duration::from_secs(30),
        || {
            [&http, &udp].iter().all(|u| {
                let t = tracker(&run.board, u);
                t.tracked == N as u64 && t.started == (N + N / 4) as u64
            })
        },
    )
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_trackers_first_in_their_tier_give_way_to_opentracker() {
    const N: usize = 40;
    let table = table(N);
    let hashes = info_hashes(&table);
    let ot = Arc::new(Opentracker::start(&hashes));
    // Loopback ports nobody listens on: refused at once (TCP RST, ICMP).
    let dead_http = format!("http://127.0.0.1:{}/announce", free_port());
    let dead_udp = format!("udp://127.0.0.1:{}/announce", free_port());
    let tier = [dead_http.clone(), dead_udp.clone(), ot.udp()];
    // In the configured order, so the dead ones are tried first.
    let run = Announcers::start(&[&tier], &table, |s| s.shuffle = false);
    wait_for("opentracker's scrape", Duration::from_secs(60), || {
        tracker(&run.board, &ot.udp()).scrape.at_ms.is_some()
    })
    .await;
    for dead in [&dead_http, &dead_udp] {
        let t = tracker(&run.board, dead);
        assert_eq!(
            (t.tier, t.state.as_str(), t.rounds, t.announced),
            (1, "failing", 1, 0),
            "{t:?}"
        );
        assert!(t.last_error.as_deref().unwrap_or("").contains("refused"), "{t:?}");
        assert_eq!((t.tracked, t.next_round_at_ms), (0, None), "{t:?}");
    }
    let t = tracker(&run.board, &ot.udp());
    assert_eq!(
        (t.state.as_str(), t.announced, t.tracked),
        ("ok", N as u64, N as u64),
        "{t:?}"
    );
    assert_eq!((t.scrape.listed, t.scrape.seeders), (N as u64, N as u64), "{t:?}");
    assert_eq!(seeders(&ot, &hashes).await, vec![1; N]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_that_stops_answering_fails_the_next_tick_and_backs_off() {
    const N: usize = 10;
    let table = table(N);
    let ot = Opentracker::start(&info_hashes(&table));
    let url = ot.http();
    let run = Announcers::start(&[std::slice::from_ref(&url)], &table, |_| {});
    wait_for("the first scrape", Duration::from_secs(60), || {
        tracker(&run.board, &url).scrape.at_ms.is_some()
    })
    .await;
    drop(ot);
    // A retirement needs a stop, which now finds nobody.
    table.set_active(1, false);
    wait_for("the tick to fail", Duration::from_secs(60), || {
        tracker(&run.board, &url).state == "failing"
    })
    .await;
    let t = tracker(&run.board, &url);
    assert!(t.last_error.as_deref().unwrap_or("").contains("refused"), "{t:?}");
    assert_eq!((t.rounds, t.stopped), (1, 0), "{t:?}");
    // Still listed as far as we know: the stop is sent again later.
    assert_eq!(t.tracked, N as u64, "{t:?}");
    // The next round waits out the first backoff (15 s), not the
    // tracker's interval (opentracker: half an hour and more).
    let next_in = t.next_round_at_ms.unwrap() - t.last_round_at_ms.unwrap();
    assert!(next_in < 10 * 60_000, "{t:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_that_cannot_scrape_says_so() {
    let table = table(3);
    let ot = Arc::new(Opentracker::start(&info_hashes(&table)));
    // opentracker takes announces on `/a` too, which has no `announce`
    // segment to turn into `scrape`.
    let url = format!("http://127.0.0.1:{}/a", ot.port);
    let run = Announcers::start(&[std::slice::from_ref(&url)], &table, |_| {});
    wait_for("the first round", Duration::from_secs(60), || {
        tracker(&run.board, &url).rounds == 1
    })
    .await;
    let t = tracker(&run.board, &url);
    assert_eq!((t.state.as_str(), t.announced), ("ok", 3), "{t:?}");
    assert!(!t.scrape.supported && t.scrape.at_ms.is_none(), "{t:?}");
    run.stop().await;
}

/// The round time of 20,000 decoys over HTTP and over UDP, for the
/// record (`cargo test --release -p warnseed-seeder --test trackers --
/// --ignored --nocapture`). Prints; asserts only that every decoy made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn round_of_20000_decoys() {
    const N: usize = 20_000;
    let table = table(N);
    let hashes = info_hashes(&table);
    for (name, lanes) in [("http", 32), ("udp", 64), ("http", 1), ("udp", 1)] {
        let ot = Opentracker::start(&hashes);
        let url = if name == "http" { ot.http() } else { ot.udp() };
        let run = Announcers::start(&[std::slice::from_ref(&url)], &table, |s| {
            s.http_in_flight = lanes;
            s.udp_in_flight = lanes;
        });
        wait_for("the round and its scrape", Duration::from_secs(1200), || {
            tracker(&run.board, &url).scrape.at_ms.is_some()
        })
        .await;
        let t = tracker(&run.board, &url);
        assert_eq!((t.announced, t.scrape.listed), (N as u64, N as u64), "{t:?}");
        println!(
            "{name} with {lanes} in flight: round of {N} announces {} ms, scrape {} ms",
            t.last_round_took_ms.unwrap(),
            t.scrape.took_ms.unwrap()
        );
        run.stop().await;
        drop(ot);
    }
}
