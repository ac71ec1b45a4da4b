//! UDP tracker protocol (BEP 15): packet building and parsing (pure), and a
//! client that pipelines many transactions on one socket.
//!
//! The client's socket is connected to the tracker, so the kernel drops
//! datagrams from anyone else and reports an ICMP "port unreachable" as an
//! error (a dead tracker fails at once instead of after every timeout). A
//! receiving task hands each answer to the request waiting on its
//! transaction id; answers nobody waits for are dropped.

use crate::tracker::{AnnounceEvent, Announced, Failure, ScrapeCounts};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;
/// BEP 15: a connection id may be used for one minute. We send with one
/// for 45 s only, so a request always reaches the tracker inside its minute
/// (every attempt of a request takes the id current when it is sent).
const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(45);
/// BEP 15 waits 15 · 2ⁿ s for an answer, up to n = 8 (over an hour). A seed
/// with a million decoys cannot wait that long per request: ours are
/// 5 · 2ⁿ s, three attempts, 35 s in all.
const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;
/// After a connect that got no answer, requests fail at once for this long
/// rather than each waiting out its own connect.
const FAILED_CONNECT_REMEMBERED: Duration = Duration::from_secs(30);
/// Info hashes per scrape: BEP 15 allows about 74 in one datagram.
pub(crate) const SCRAPE_BATCH: usize = 70;
/// Entries of a scrape answer we read; the rest are ignored.
const MAX_SCRAPE_ENTRIES: usize = 128;
/// Bytes of a tracker's error text we keep.
const MAX_ERROR_TEXT: usize = 256;

pub fn connect_request(transaction: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    p[12..].copy_from_slice(&transaction.to_be_bytes());
    p
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct AnnounceFields<'a> {
    pub info_hash: &'a [u8; 20],
    pub peer_id: &'a [u8; 20],
    pub port: u16,
    pub event: AnnounceEvent,
    pub key: u32,
}

/// A seed's announce: left = 0, and no peers wanted.
pub(crate) fn announce_request(connection_id: u64, transaction: u32, f: &AnnounceFields<'_>) -> [u8; 98] {
    let mut p = [0u8; 98];
    p[..8].copy_from_slice(&connection_id.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    p[12..16].copy_from_slice(&transaction.to_be_bytes());
    p[16..36].copy_from_slice(f.info_hash);
    p[36..56].copy_from_slice(f.peer_id);
    // downloaded, left, uploaded: all zero for a seed that never downloads.
    p[80..84].copy_from_slice(&f.event.udp().to_be_bytes());
    // ip 0: the tracker uses the packet's source address.
    p[88..92].copy_from_slice(&f.key.to_be_bytes());
    p[92..96].copy_from_slice(&0i32.to_be_bytes()); // num_want
    p[96..98].copy_from_slice(&f.port.to_be_bytes());
    p
}

/// A scrape of `info_hashes` (at most [`SCRAPE_BATCH`] are sent).
pub fn scrape_request(connection_id: u64, transaction: u32, info_hashes: &[[u8; 20]]) -> Vec<u8> {
    let hashes = &info_hashes[..info_hashes.len().min(SCRAPE_BATCH)];
    let mut p = Vec::with_capacity(16 + 20 * hashes.len());
    p.extend_from_slice(&connection_id.to_be_bytes());
    p.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    p.extend_from_slice(&transaction.to_be_bytes());
    for h in hashes {
        p.extend_from_slice(h);
    }
    p
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpResponse {
    Connected {
        connection_id: u64,
    },
    Announced {
        interval: Duration,
    },
    /// Counts in the order the scrape asked (at most 128 entries are read;
    /// a short answer has fewer).
    Scraped(Vec<ScrapeCounts>),
    Error(String),
}

/// Parses a response to `transaction`; anything else (a stray or forged
/// packet) is `None`.
pub fn parse_response(packet: &[u8], transaction: u32) -> Option<UdpResponse> {
    if packet.len() < 8 {
        return None;
    }
    let word =
        |at: usize| -> Option<u32> { Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?)) };
    let action = word(0)?;
    if word(4)? != transaction {
        return None;
    }
    match action {
        ACTION_CONNECT if packet.len() >= 16 => Some(UdpResponse::Connected {
            connection_id: u64::from_be_bytes(packet[8..16].try_into().ok()?),
        }),
        ACTION_ANNOUNCE if packet.len() >= 20 => Some(UdpResponse::Announced {
            interval: Duration::from_secs(u64::from(word(8)?)),
        }),
        ACTION_SCRAPE => Some(UdpResponse::Scraped(
            packet[8..]
                .chunks_exact(12)
                .take(MAX_SCRAPE_ENTRIES)
                .map(|e| {
                    let n = |i: usize| u64::from(u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]));
                    ScrapeCounts {
                        complete: n(0),
                        downloaded: n(4),
                        incomplete: n(8),
                    }
                })
                .collect(),
        )),
        ACTION_ERROR => Some(UdpResponse::Error(
            String::from_utf8_lossy(&packet[8..packet.len().min(8 + MAX_ERROR_TEXT)]).into_owned(),
        )),
        _ => None,
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    u32::from_be_bytes(b)
}

type Answer = Result<UdpResponse, String>;
type Waiting = Arc<Mutex<HashMap<u32, oneshot::Sender<Answer>>>>;

#[derive(Debug, Default)]
struct ConnectionState {
    id: Option<(u64, Instant)>,
    failed: Option<(Instant, String)>,
}

/// One tracker's UDP client: a socket connected to the tracker from our
/// listen address, the transactions in flight, and the connection id.
/// Requests take `&self`: many run at once.
pub(crate) struct UdpTrackerClient {
    socket: Arc<UdpSocket>,
    waiting: Waiting,
    connection: tokio::sync::Mutex<ConnectionState>,
    key: u32,
    receiver: tokio::task::JoinHandle<()>,
}

impl Drop for UdpTrackerClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

fn attempt_timeout(attempt: u32) -> Duration {
    FIRST_ATTEMPT_TIMEOUT * 2u32.pow(attempt)
}

/// Whether a tracker's error text says our connection id is no good
/// (trackers word it differently; all say "connection").
fn about_connection_id(text: &str) -> bool {
    text.to_ascii_lowercase().contains("connection")
}

impl UdpTrackerClient {
    pub async fn new(tracker: SocketAddr, bind: Option<std::net::IpAddr>) -> std::io::Result<Self> {
        let local = match bind.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == tracker.is_ipv4()) {
            Some(ip) => SocketAddr::new(ip, 0),
            None if tracker.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
            None => SocketAddr::from(([0u16; 8], 0)),
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(tracker).await?;
        let socket = Arc::new(socket);
        let waiting: Waiting = Arc::default();
        let receiver = tokio::spawn(receive(Arc::clone(&socket), Arc::clone(&waiting)));
        Ok(Self {
            socket,
            waiting,
            connection: tokio::sync::Mutex::default(),
            key: random_u32(),
            receiver,
        })
    }

    /// Sends `packet` (built for a fresh transaction id) and waits up to
    /// `wait` for its answer. `Ok(None)`: no answer in time.
    async fn round_trip(
        &self,
        packet: impl FnOnce(u32) -> Vec<u8>,
        wait: Duration,
    ) -> Result<Option<UdpResponse>, String> {
        let (tx, rx) = oneshot::channel();
        let transaction = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let mut t = random_u32();
            while waiting.contains_key(&t) {
                t = random_u32();
            }
            waiting.insert(t, tx);
            t
        };
        let forget = || {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&transaction);
        };
        if let Err(e) = self.socket.send(&packet(transaction)).await {
            forget();
            return Err(e.to_string());
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(answer)) => answer.map(Some),
            Ok(Err(_)) => Err("the receiving task stopped".into()),
            Err(_) => {
                forget();
                Ok(None)
            }
        }
    }

    /// The current connection id, connecting if there is none. One connect
    /// runs at a time; the other requests wait for its id.
    async fn connection_id(&self) -> Result<u64, Failure> {
        let mut c = self.connection.lock().await;
        if let Some((id, at)) = c.id {
            if at.elapsed() < CONNECTION_ID_LIFETIME {
                return Ok(id);
            }
        }
        if let Some((at, e)) = &c.failed {
            if at.elapsed() < FAILED_CONNECT_REMEMBERED {
                return Err(Failure::Unreachable(e.clone()));
            }
        }
        let mut error = format!("no answer to connect after {ATTEMPTS} attempts");
        for attempt in 0..ATTEMPTS {
            let sent = Instant::now();
            match self
                .round_trip(|t| connect_request(t).to_vec(), attempt_timeout(attempt))
                .await
            {
                Ok(Some(UdpResponse::Connected { connection_id })) => {
                    *c = ConnectionState {
                        id: Some((connection_id, sent)),
                        failed: None,
                    };
                    return Ok(connection_id);
                }
                Ok(None) => continue,
                Ok(Some(UdpResponse::Error(e))) => error = format!("tracker error on connect: {e}"),
                Ok(Some(_)) => error = "unexpected answer to connect".into(),
                Err(e) => error = e,
            }
            break;
        }
        c.failed = Some((Instant::now(), error.clone()));
        Err(Failure::Unreachable(error))
    }

    async fn forget_connection(&self, id: u64) {
        let mut c = self.connection.lock().await;
        if c.id.is_some_and(|(current, _)| current == id) {
            c.id = None;
        }
    }

    /// One request that needs a connection id: retried on timeout (with
    /// the id current at each attempt) and when the tracker says the id is
    /// no good. A tracker's other errors are refusals.
    async fn request(&self, packet: impl Fn(u64, u32) -> Vec<u8>) -> Result<UdpResponse, Failure> {
        for attempt in 0..ATTEMPTS {
            let id = self.connection_id().await?;
            match self
                .round_trip(|t| packet(id, t), attempt_timeout(attempt))
                .await
                .map_err(Failure::Unreachable)?
            {
                None => self.forget_connection(id).await,
                Some(UdpResponse::Error(e)) if about_connection_id(&e) => self.forget_connection(id).await,
                Some(UdpResponse::Error(e)) => return Err(Failure::Refused(e)),
                Some(answer) => return Ok(answer),
            }
        }
        Err(Failure::Unreachable(format!(
            "no answer after {ATTEMPTS} attempts"
        )))
    }

    /// Announces one torrent.
    pub async fn announce(
        &self,
        info_hash: &[u8; 20],
        peer_id: &[u8; 20],
        port: u16,
        event: AnnounceEvent,
    ) -> Result<Announced, Failure> {
        let fields = AnnounceFields {
            info_hash,
            peer_id,
            port,
            event,
            key: self.key,
        };
        match self
            .request(|id, t| announce_request(id, t, &fields).to_vec())
            .await?
        {
            UdpResponse::Announced { interval } => Ok(Announced {
                interval: crate::tracker::bounded_interval(interval.as_secs()),
                min_interval: None,
            }),
            _ => Err(Failure::Unreachable("unexpected answer to announce".into())),
        }
    }

    /// Scrapes up to [`SCRAPE_BATCH`] torrents; counts in their order, zero
    /// for any the answer leaves out.
    pub async fn scrape(&self, info_hashes: &[[u8; 20]]) -> Result<Vec<ScrapeCounts>, Failure> {
        let hashes = &info_hashes[..info_hashes.len().min(SCRAPE_BATCH)];
        match self.request(|id, t| scrape_request(id, t, hashes)).await? {
            UdpResponse::Scraped(mut counts) => {
                counts.resize(hashes.len(), ScrapeCounts::default());
                Ok(counts)
            }
            _ => Err(Failure::Unreachable("unexpected answer to scrape".into())),
        }
    }
}

/// Hands every answer to the request waiting on its transaction id.
async fn receive(socket: Arc<UdpSocket>, waiting: Waiting) {
    let mut buf = vec![0u8; 4096];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let packet = &buf[..n];
                let Some(t) = packet
                    .get(4..8)
                    .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
                else {
                    continue;
                };
                // Junk that happens to carry a waiting id does not use it up.
                let Some(answer) = parse_response(packet, t) else {
                    continue;
                };
                let waiter = waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&t);
                if let Some(w) = waiter {
                    let _ = w.send(Ok(answer));
                }
            }
            Err(e) => {
                // An ICMP error (port unreachable) on the connected socket:
                // nobody will answer what is in flight.
                let waiters: Vec<_> = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                    .collect();
                let quiet = waiters.is_empty();
                for (_, w) in waiters {
                    let _ = w.send(Err(e.to_string()));
                }
                if quiet {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_have_the_bep15_layout() {
        let c = connect_request(0xdead_beef);
        assert_eq!(&c[..8], &[0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        assert_eq!(&c[12..], &[0xde, 0xad, 0xbe, 0xef]);
        let f = AnnounceFields {
            info_hash: &[1; 20],
            peer_id: b"-WS0100-abcdefghijkl",
            port: 6881,
            event: AnnounceEvent::Started,
            key: 7,
        };
        let a = announce_request(0x0102_0304_0506_0708, 9, &f);
        assert_eq!(&a[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(u32::from_be_bytes(a[8..12].try_into().unwrap()), 1);
        assert_eq!(&a[16..36], &[1; 20]);
        assert_eq!(&a[64..72], &[0; 8], "left = 0");
        assert_eq!(u32::from_be_bytes(a[80..84].try_into().unwrap()), 2);
        assert_eq!(u16::from_be_bytes(a[96..98].try_into().unwrap()), 6881);
        let stop = announce_request(
            1,
            9,
            &AnnounceFields {
                event: AnnounceEvent::Stopped,
                ..f
            },
        );
        assert_eq!(u32::from_be_bytes(stop[80..84].try_into().unwrap()), 3);
        let s = scrape_request(0x0102_0304_0506_0708, 5, &[[7; 20], [8; 20]]);
        assert_eq!(s.len(), 16 + 40);
        assert_eq!(u32::from_be_bytes(s[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_be_bytes(s[12..16].try_into().unwrap()), 5);
        assert_eq!((&s[16..36], &s[36..]), (&[7; 20][..], &[8; 20][..]));
        let many = vec![[0u8; 20]; 200];
        assert_eq!(scrape_request(1, 1, &many).len(), 16 + 20 * SCRAPE_BATCH);
    }

    #[test]
    fn parses_responses_and_ignores_strays() {
        let mut p = vec![0, 0, 0, 0, 0, 0, 0, 5];
        p.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(
            parse_response(&p, 5),
            Some(UdpResponse::Connected { connection_id: 42 })
        );
        assert_eq!(parse_response(&p, 6), None, "other transaction");
        assert_eq!(parse_response(&p[..12], 5), None, "short");
        let mut a = vec![0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 7, 8];
        a.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_response(&a, 5),
            Some(UdpResponse::Announced {
                interval: Duration::from_secs(1800)
            })
        );
        let e = [0, 0, 0, 3, 0, 0, 0, 5, b'n', b'o'];
        assert_eq!(parse_response(&e, 5), Some(UdpResponse::Error("no".into())));
        let long_error = [&[0, 0, 0, 3, 0, 0, 0, 5][..], &[b'x'; 5000]].concat();
        match parse_response(&long_error, 5) {
            Some(UdpResponse::Error(text)) => assert_eq!(text.len(), MAX_ERROR_TEXT),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_response(&[0xff; 3], 5), None);
        assert_eq!(
            parse_response(&[0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 0], 5),
            None,
            "unknown action"
        );
    }

    #[test]
    fn parses_scrapes_with_bounds() {
        let mut s = vec![0, 0, 0, 2, 0, 0, 0, 5];
        for (seeders, completed, leechers) in [(1u32, 2u32, 3u32), (0, 0, 0), (u32::MAX, 0, 1)] {
            s.extend_from_slice(&seeders.to_be_bytes());
            s.extend_from_slice(&completed.to_be_bytes());
            s.extend_from_slice(&leechers.to_be_bytes());
        }
        s.extend_from_slice(&[9; 7]); // a torn entry is ignored
        let Some(UdpResponse::Scraped(counts)) = parse_response(&s, 5) else {
            panic!()
        };
        assert_eq!(
            counts,
            vec![
                ScrapeCounts {
                    complete: 1,
                    downloaded: 2,
                    incomplete: 3
                },
                ScrapeCounts::default(),
                ScrapeCounts {
                    complete: u64::from(u32::MAX),
                    downloaded: 0,
                    incomplete: 1
                },
            ]
        );
        assert_eq!(parse_response(&s[..8], 5), Some(UdpResponse::Scraped(Vec::new())));
        let huge = [&[0, 0, 0, 2, 0, 0, 0, 5][..], &[1; 12 * 1000]].concat();
        let Some(UdpResponse::Scraped(counts)) = parse_response(&huge, 5) else {
            panic!()
        };
        assert_eq!(counts.len(), MAX_SCRAPE_ENTRIES);
    }

    #[test]
    fn connection_errors_are_recognised() {
        assert!(about_connection_id("Connection ID missmatch."));
        assert!(about_connection_id("invalid connection id"));
        assert!(!about_connection_id(
            "Requested download is not authorized for use with this tracker."
        ));
        assert_eq!(attempt_timeout(0), Duration::from_secs(5));
        assert_eq!(attempt_timeout(2), Duration::from_secs(20));
    }

    /// A tracker on loopback that answers connects, drops the first
    /// announce it sees (so one request must retry), and answers the rest
    /// out of order (in batches of four, or whatever it holds after a
    /// quiet 200 ms): the client must match each answer to its request.
    #[tokio::test]
    async fn pipelined_requests_are_matched_by_transaction_id() {
        let tracker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = tracker.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut dropped = false;
            let mut held: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
            loop {
                let (n, from) =
                    match tokio::time::timeout(Duration::from_millis(200), tracker.recv_from(&mut buf)).await
                    {
                        Ok(r) => r.unwrap(),
                        Err(_) => {
                            for (a, to) in held.drain(..).rev() {
                                tracker.send_to(&a, to).await.unwrap();
                            }
                            continue;
                        }
                    };
                let p = &buf[..n];
                let action = u32::from_be_bytes(p[8..12].try_into().unwrap());
                let t = &p[12..16];
                let mut answer = Vec::new();
                match action {
                    ACTION_CONNECT => {
                        answer.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                        answer.extend_from_slice(t);
                        answer.extend_from_slice(&99u64.to_be_bytes());
                        tracker.send_to(&answer, from).await.unwrap();
                        continue;
                    }
                    ACTION_ANNOUNCE if !dropped => {
                        dropped = true;
                        continue;
                    }
                    ACTION_ANNOUNCE => {
                        // interval = the info hash's first byte × 100.
                        answer.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                        answer.extend_from_slice(t);
                        answer.extend_from_slice(&(u32::from(p[16]) * 100).to_be_bytes());
                        answer.extend_from_slice(&[0; 8]);
                    }
                    _ => {
                        answer.extend_from_slice(&ACTION_ERROR.to_be_bytes());
                        answer.extend_from_slice(t);
                        answer.extend_from_slice(b"scrape refused");
                    }
                }
                held.push((answer, from));
                if held.len() == 4 {
                    for (a, to) in held.drain(..).rev() {
                        tracker.send_to(&a, to).await.unwrap();
                    }
                }
            }
        });
        let client = Arc::new(UdpTrackerClient::new(addr, None).await.unwrap());
        let peer_id = [b'p'; 20];
        let mut tasks = Vec::new();
        for i in 1..=8u8 {
            let c = Arc::clone(&client);
            tasks.push(tokio::spawn(async move {
                c.announce(&[i; 20], &peer_id, 6881, AnnounceEvent::Started).await
            }));
        }
        let mut intervals = Vec::new();
        for t in tasks {
            intervals.push(t.await.unwrap().unwrap().interval.as_secs());
        }
        assert_eq!(intervals, (1..=8).map(|i| i * 100).collect::<Vec<u64>>());
        // Four scrapes make the server's next batch: each gets its own
        // refusal, out of order.
        let mut scrapes = Vec::new();
        for _ in 0..4 {
            let c = Arc::clone(&client);
            scrapes.push(tokio::spawn(async move { c.scrape(&[[1; 20]]).await }));
        }
        for s in scrapes {
            assert_eq!(s.await.unwrap(), Err(Failure::Refused("scrape refused".into())));
        }
        server.abort();
    }

    /// Nobody listens: the ICMP error fails the connect at once, and the
    /// failure is remembered for the requests that follow.
    #[tokio::test]
    async fn a_closed_port_fails_fast() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = UdpTrackerClient::new(port, None).await.unwrap();
        let err = client
            .announce(&[1; 20], &[b'p'; 20], 6881, AnnounceEvent::Started)
            .await
            .unwrap_err();
        // The socket's error, not "no answer after 3 attempts".
        assert!(
            matches!(&err, Failure::Unreachable(e) if e.to_lowercase().contains("refused")),
            "{err:?}"
        );
        let again = client.scrape(&[[1; 20]]).await.unwrap_err();
        assert_eq!(again, err, "remembered");
    }
}
