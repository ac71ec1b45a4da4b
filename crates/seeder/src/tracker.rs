//! Announcing decoys to HTTP trackers (BEP 3, compact BEP 23) and UDP
//! trackers (BEP 15, in `udp_tracker`).
//!
//! Request building and response parsing are pure functions; the loop does
//! the I/O. A seed announces `left=0` and `numwant=0`: it wants no peers,
//! only to be listed. Scrape and per-tracker status arrive with the
//! publishing work.

use crate::decoys::DecoyTable;
use crate::status::StatusBoard;
use crate::udp_tracker::{UdpEvent, UdpTrackerClient};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use warnseed_bittorrent::bencode;
use warnseed_bittorrent::metainfo::percent_encode;
use warnseed_bittorrent::session::SeedContent;

/// Longest tracker response we read; real ones are a few hundred bytes.
const MAX_RESPONSE: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const MIN_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerUrl {
    pub raw: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and any query, e.g. `/announce` or `/a?key=1`.
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Udp,
}

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("tracker URL {0:?}: only http:// and udp:// trackers are supported in this version")]
    UnsupportedScheme(String),
    #[error("tracker URL {0:?} is malformed")]
    BadUrl(String),
    #[error("tracker {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tracker {url}: timed out")]
    Timeout { url: String },
    #[error("tracker {url}: bad response: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("tracker {url} refused: {reason}")]
    Failure { url: String, reason: String },
}

impl TrackerUrl {
    pub fn parse(raw: &str) -> Result<Self, AnnounceError> {
        let (scheme, rest) = if let Some(rest) = raw.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = raw.strip_prefix("udp://") {
            (Scheme::Udp, rest)
        } else {
            return Err(AnnounceError::UnsupportedScheme(raw.to_string()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| AnnounceError::BadUrl(raw.into()))?;
            let port = match p {
                "" => "80",
                _ => p
                    .strip_prefix(':')
                    .ok_or_else(|| AnnounceError::BadUrl(raw.into()))?,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), "80"),
            }
        };
        let port = port.parse().map_err(|_| AnnounceError::BadUrl(raw.into()))?;
        // Host and path go into the request line: no spaces or controls.
        let unsafe_char = |c: char| c.is_whitespace() || c.is_control();
        if host.is_empty() || host.chars().any(unsafe_char) || path.chars().any(unsafe_char) {
            return Err(AnnounceError::BadUrl(raw.into()));
        }
        let explicit_port = if authority.starts_with('[') {
            authority.contains("]:")
        } else {
            authority.contains(':')
        };
        // UDP trackers have no conventional port to assume.
        if scheme == Scheme::Udp && (!explicit_port || port == 0) {
            return Err(AnnounceError::BadUrl(raw.into()));
        }
        Ok(Self {
            raw: raw.to_string(),
            scheme,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// The HTTP/1.0 request announcing one seeded torrent.
pub fn announce_request(
    url: &TrackerUrl,
    info_hash: &[u8; 20],
    peer_id: &[u8; 20],
    port: u16,
    event: Option<&str>,
) -> Vec<u8> {
    let sep = if url.path.contains('?') { '&' } else { '?' };
    let mut target = format!(
        "{}{sep}info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=0&compact=1&numwant=0",
        url.path,
        percent_encode(info_hash),
        percent_encode(peer_id),
    );
    if let Some(e) = event {
        target.push_str("&event=");
        target.push_str(e);
    }
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    format!(
        "GET {target} HTTP/1.0\r\nHost: {host}:{}\r\nUser-Agent: {}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.port,
        crate::DEFAULT_CLIENT_VERSION
    )
    .into_bytes()
}

/// Parses an HTTP tracker response; returns the re-announce interval.
pub fn parse_announce_response(url: &str, raw: &[u8]) -> Result<Duration, AnnounceError> {
    let bad = |detail: &str| AnnounceError::BadResponse {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not text"))?;
    let status = head.lines().next().unwrap_or("");
    let mut words = status.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    if !version_ok || words.next() != Some("200") {
        return Err(bad(&format!("status line {status:?}")));
    }
    let body = &raw[split + 4..];
    let dict = bencode::decode(body).map_err(|e| bad(&e.to_string()))?;
    if dict.as_dict().is_none() {
        return Err(bad("body is not a bencoded dictionary"));
    }
    if let Some(reason) = dict.get(b"failure reason").and_then(|v| v.as_bytes()) {
        return Err(AnnounceError::Failure {
            url: url.to_string(),
            reason: String::from_utf8_lossy(reason).into_owned(),
        });
    }
    let interval = dict
        .get(b"interval")
        .and_then(|v| v.as_int())
        .filter(|&n| n > 0)
        .map(|n| Duration::from_secs(n as u64))
        .unwrap_or(DEFAULT_INTERVAL);
    Ok(interval.max(MIN_INTERVAL))
}

/// Announces one torrent and returns the interval the tracker asked for.
pub async fn announce_once(
    url: &TrackerUrl,
    bind: Option<std::net::IpAddr>,
    info_hash: &[u8; 20],
    peer_id: &[u8; 20],
    port: u16,
    event: Option<&str>,
) -> Result<Duration, AnnounceError> {
    let io = |source| AnnounceError::Io {
        url: url.raw.clone(),
        source,
    };
    let work = async {
        let addr: SocketAddr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(io)?
            .next()
            .ok_or_else(|| AnnounceError::BadUrl(url.raw.clone()))?;
        // Trackers list the address the announce came from, so it must come
        // from the address we listen on.
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(io)?;
        if let Some(ip) = bind.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
        }
        let mut stream = socket.connect(addr).await.map_err(io)?;
        stream
            .write_all(&announce_request(url, info_hash, peer_id, port, event))
            .await
            .map_err(io)?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            if response.len() + n > MAX_RESPONSE {
                return Err(AnnounceError::BadResponse {
                    url: url.raw.clone(),
                    detail: format!("longer than {MAX_RESPONSE} bytes"),
                });
            }
            response.extend_from_slice(&chunk[..n]);
        }
        parse_announce_response(&url.raw, &response)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| AnnounceError::Timeout { url: url.raw.clone() })?
}

/// Announces every decoy to `url` in rounds, waiting the tracker's interval
/// between rounds, until `shutdown`. Failures back off exponentially.
pub async fn announce_loop(
    url: TrackerUrl,
    table: Arc<DecoyTable>,
    bind: Option<std::net::IpAddr>,
    peer_id: [u8; 20],
    port: u16,
    status: Arc<StatusBoard>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first_round = true;
    let mut backoff = Duration::from_secs(15);
    let mut udp: Option<UdpTrackerClient> = None;
    loop {
        let mut interval = DEFAULT_INTERVAL;
        let mut failures = 0u64;
        let mut consecutive_failures = 0u32;
        let mut ok = 0u64;
        let mut last_error = None;
        for decoy in table.iter() {
            // An unreachable tracker would otherwise cost a full timeout per
            // decoy: give up on the round and back off.
            if consecutive_failures >= 3 {
                tracing::warn!(tracker = %url.raw, "tracker unreachable; ending this round early");
                break;
            }
            if *shutdown.borrow() {
                return;
            }
            let announce = async {
                match url.scheme {
                    Scheme::Http => {
                        let event = first_round.then_some("started");
                        announce_once(&url, bind, decoy.info_hash(), &peer_id, port, event)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Scheme::Udp => {
                        let event = if first_round {
                            UdpEvent::Started
                        } else {
                            UdpEvent::None
                        };
                        match udp_client(&mut udp, &url, bind).await {
                            Ok(client) => client.announce(decoy.info_hash(), &peer_id, port, event).await,
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            // A stop does not wait for a slow tracker.
            let result = tokio::select! {
                r = announce => r,
                _ = crate::server::stopped(&mut shutdown) => return,
            };
            match result {
                Ok(i) => {
                    ok += 1;
                    consecutive_failures = 0;
                    interval = interval.min(i.max(MIN_INTERVAL));
                }
                Err(e) => {
                    failures += 1;
                    consecutive_failures += 1;
                    tracing::warn!(tracker = %url.raw, decoy_id = decoy.id(), error = %e, "announce failed");
                    last_error = Some(e);
                }
            }
        }
        tracing::info!(tracker = %url.raw, announced = ok, failed = failures, next_in_s = interval.as_secs(), "tracker round done");
        first_round = false;
        let wait = if ok == 0 && failures > 0 {
            backoff = (backoff * 2).min(DEFAULT_INTERVAL);
            backoff
        } else {
            backoff = Duration::from_secs(15);
            interval
        };
        status.tracker_round(&url.raw, ok, failures, last_error, wait.as_millis() as i64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::server::stopped(&mut shutdown) => return,
        }
    }
}

/// The loop's UDP client, created on first use.
async fn udp_client<'a>(
    slot: &'a mut Option<UdpTrackerClient>,
    url: &TrackerUrl,
    bind: Option<std::net::IpAddr>,
) -> Result<&'a mut UdpTrackerClient, String> {
    if slot.is_none() {
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", url.host))?;
        *slot = Some(
            UdpTrackerClient::new(addr, bind)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(slot.as_mut().expect("just set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = TrackerUrl::parse("http://127.0.0.1:6969/announce").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 6969, "/announce")
        );
        let u = TrackerUrl::parse("http://[::1]:7000/a?k=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 7000, "/a?k=1")
        );
        let u = TrackerUrl::parse("udp://127.0.0.1:6969/announce").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Udp, 6969));
        assert!(TrackerUrl::parse("udp://127.0.0.1").is_err(), "udp needs a port");
        assert!(TrackerUrl::parse("https://127.0.0.1:1/").is_err());
        assert!(TrackerUrl::parse("http://:1/").is_err());
        assert!(TrackerUrl::parse("http://[::1]junk/").is_err());
        assert!(TrackerUrl::parse("http://127.0.0.1:1/a b").is_err());
        assert!(TrackerUrl::parse("http://127.0.0.1:1/a\r\nX: y").is_err());
    }

    #[test]
    fn request_escapes_binary_fields() {
        let u = TrackerUrl::parse("http://127.0.0.1:6969/announce").unwrap();
        let req = String::from_utf8(announce_request(
            &u,
            &[0xff; 20],
            b"-WS0100-abcdefghijkl",
            6881,
            Some("started"),
        ))
        .unwrap();
        assert!(req.starts_with("GET /announce?info_hash=%FF%FF"));
        assert!(req.contains(
            "&port=6881&uploaded=0&downloaded=0&left=0&compact=1&numwant=0&event=started HTTP/1.0\r\n"
        ));
    }

    #[test]
    fn parses_responses() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nd8:intervali900e5:peers0:e";
        assert_eq!(
            parse_announce_response("t", ok).unwrap(),
            Duration::from_secs(900)
        );
        let fail = b"HTTP/1.0 200 OK\r\n\r\nd14:failure reason10:not listede";
        assert!(matches!(
            parse_announce_response("t", fail),
            Err(AnnounceError::Failure { .. })
        ));
        assert!(parse_announce_response("t", b"HTTP/1.0 404 Not Found\r\n\r\n").is_err());
        assert!(parse_announce_response("t", b"garbage").is_err());
        assert!(parse_announce_response("t", b"HTTP/1.0 200 OK\r\n\r\nle").is_err());
        assert!(parse_announce_response("t", b"garbage 200\r\n\r\nd8:intervali900ee").is_err());
    }
}
