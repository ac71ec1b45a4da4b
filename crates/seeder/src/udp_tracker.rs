//! UDP tracker protocol (BEP 15): packet building and parsing (pure), and a
//! small client that keeps a connection id for its minute of validity.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// BEP 15: a connection id may be used for one minute. We stop using one
/// after 45 s, so a request and its retries (15 s) stay inside the minute.
const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(45);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpEvent {
    None = 0,
    Started = 2,
}

pub fn connect_request(transaction: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    p[12..].copy_from_slice(&transaction.to_be_bytes());
    p
}

#[derive(Clone, Copy, Debug)]
pub struct AnnounceFields<'a> {
    pub info_hash: &'a [u8; 20],
    pub peer_id: &'a [u8; 20],
    pub port: u16,
    pub event: UdpEvent,
    pub key: u32,
}

/// A seed's announce: left = 0, and no peers wanted.
pub fn announce_request(connection_id: u64, transaction: u32, f: &AnnounceFields<'_>) -> [u8; 98] {
    let mut p = [0u8; 98];
    p[..8].copy_from_slice(&connection_id.to_be_bytes());
    p[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    p[12..16].copy_from_slice(&transaction.to_be_bytes());
    p[16..36].copy_from_slice(f.info_hash);
    p[36..56].copy_from_slice(f.peer_id);
    // downloaded, left, uploaded: all zero for a seed that never downloads.
    p[80..84].copy_from_slice(&(f.event as u32).to_be_bytes());
    // ip 0: the tracker uses the packet's source address.
    p[88..92].copy_from_slice(&f.key.to_be_bytes());
    p[92..96].copy_from_slice(&0i32.to_be_bytes()); // num_want
    p[96..98].copy_from_slice(&f.port.to_be_bytes());
    p
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpResponse {
    Connected { connection_id: u64 },
    Announced { interval: Duration },
    Error(String),
}

/// Parses a response to `transaction`; anything else (a stray or forged
/// packet) is `None`.
pub fn parse_response(packet: &[u8], transaction: u32) -> Option<UdpResponse> {
    if packet.len() < 8 {
        return None;
    }
    let action = u32::from_be_bytes(packet[..4].try_into().ok()?);
    if u32::from_be_bytes(packet[4..8].try_into().ok()?) != transaction {
        return None;
    }
    match action {
        ACTION_CONNECT if packet.len() >= 16 => Some(UdpResponse::Connected {
            connection_id: u64::from_be_bytes(packet[8..16].try_into().ok()?),
        }),
        ACTION_ANNOUNCE if packet.len() >= 20 => Some(UdpResponse::Announced {
            interval: Duration::from_secs(u64::from(u32::from_be_bytes(packet[8..12].try_into().ok()?))),
        }),
        ACTION_ERROR => Some(UdpResponse::Error(
            String::from_utf8_lossy(&packet[8..packet.len().min(8 + 256)]).into_owned(),
        )),
        _ => None,
    }
}

fn transaction_id() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("randomness");
    u32::from_be_bytes(b)
}

/// One tracker's UDP client: a socket bound to our listen address and the
/// current connection id.
pub struct UdpTrackerClient {
    socket: UdpSocket,
    tracker: SocketAddr,
    connection: Option<(u64, Instant)>,
    key: u32,
}

impl UdpTrackerClient {
    pub async fn new(tracker: SocketAddr, bind: Option<std::net::IpAddr>) -> std::io::Result<Self> {
        let local = match bind.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == tracker.is_ipv4()) {
            Some(ip) => SocketAddr::new(ip, 0),
            None if tracker.is_ipv4() => "0.0.0.0:0".parse().expect("valid"),
            None => "[::]:0".parse().expect("valid"),
        };
        let socket = UdpSocket::bind(local).await?;
        Ok(Self {
            socket,
            tracker,
            connection: None,
            key: transaction_id(),
        })
    }

    /// Sends `packet` and waits for the matching reply, retrying on timeout.
    async fn exchange(&self, packet: &[u8], transaction: u32) -> Result<UdpResponse, String> {
        let mut buf = [0u8; 2048];
        for _ in 0..ATTEMPTS {
            self.socket
                .send_to(packet, self.tracker)
                .await
                .map_err(|e| e.to_string())?;
            let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Ok(Ok((n, from))) => {
                        if from != self.tracker {
                            continue;
                        }
                        if let Some(r) = parse_response(&buf[..n], transaction) {
                            return Ok(r);
                        }
                    }
                }
            }
        }
        Err(format!("no answer after {ATTEMPTS} attempts"))
    }

    async fn connection_id(&mut self) -> Result<u64, String> {
        if let Some((id, at)) = self.connection {
            if at.elapsed() < CONNECTION_ID_LIFETIME {
                return Ok(id);
            }
        }
        let t = transaction_id();
        match self.exchange(&connect_request(t), t).await? {
            UdpResponse::Connected { connection_id } => {
                self.connection = Some((connection_id, Instant::now()));
                Ok(connection_id)
            }
            UdpResponse::Error(e) => Err(format!("tracker error: {e}")),
            other => Err(format!("unexpected answer to connect: {other:?}")),
        }
    }

    /// Announces one torrent; returns the interval the tracker asked for.
    pub async fn announce(
        &mut self,
        info_hash: &[u8; 20],
        peer_id: &[u8; 20],
        port: u16,
        event: UdpEvent,
    ) -> Result<Duration, String> {
        let id = self.connection_id().await?;
        let t = transaction_id();
        let fields = AnnounceFields {
            info_hash,
            peer_id,
            port,
            event,
            key: self.key,
        };
        let answer = self.exchange(&announce_request(id, t, &fields), t).await;
        if answer.is_err() {
            // The tracker may have forgotten our id: connect afresh.
            self.connection = None;
        }
        match answer? {
            UdpResponse::Announced { interval } => Ok(interval),
            UdpResponse::Error(e) => {
                // The id may have expired on the tracker's side.
                self.connection = None;
                Err(format!("tracker error: {e}"))
            }
            other => Err(format!("unexpected answer to announce: {other:?}")),
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
            event: UdpEvent::Started,
            key: 7,
        };
        let a = announce_request(0x0102_0304_0506_0708, 9, &f);
        assert_eq!(&a[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(u32::from_be_bytes(a[8..12].try_into().unwrap()), 1);
        assert_eq!(&a[16..36], &[1; 20]);
        assert_eq!(&a[64..72], &[0; 8], "left = 0");
        assert_eq!(u32::from_be_bytes(a[80..84].try_into().unwrap()), 2);
        assert_eq!(u16::from_be_bytes(a[96..98].try_into().unwrap()), 6881);
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
        assert_eq!(parse_response(&[0xff; 3], 5), None);
    }
}
