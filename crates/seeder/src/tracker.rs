//! Publishing decoys to trackers: HTTP (BEP 3, compact BEP 23, scrape by
//! the BEP 48 convention) and UDP (BEP 15, in `udp_tracker`), in BEP 12
//! tiers.
//!
//! Request building and response parsing here are pure functions, and so
//! is the bookkeeping in `sweep` (which decoys a tracker has from us, what a
//! round must send, tier order, backoff); `tier` does the I/O. A seed
//! announces `left=0` and `numwant=0`: it wants no peers, only to be listed.

mod http_client;
mod sweep;
mod tier;

pub use tier::{announce_loop, AnnounceSettings};

use std::time::Duration;
use warnseed_bittorrent::bencode;
use warnseed_bittorrent::metainfo::percent_encode;

/// Longest tracker response we read; real ones are a few hundred bytes
/// (an announce) or about 80 bytes per info hash (a scrape).
pub(crate) const MAX_RESPONSE: usize = 64 * 1024;
/// Longest response head (status line and headers) we read.
const MAX_HEAD: usize = 16 * 1024;
/// Re-announce intervals below this are raised to it.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The interval when a tracker names none.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);
/// Longest wait a tracker's `interval` or `min interval` can ask for.
/// Trackers ask for 15-60 minutes; a larger value (hostile, or a bug on
/// their side) would let listings expire and, near `i64::MAX` seconds,
/// overflow the clock's arithmetic.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(2 * 3600);

/// A tracker's interval in seconds, floored at [`MIN_INTERVAL`] and capped
/// at [`MAX_INTERVAL`].
pub(crate) fn bounded_interval(seconds: u64) -> Duration {
    Duration::from_secs(seconds).clamp(MIN_INTERVAL, MAX_INTERVAL)
}
/// Info hashes per HTTP scrape request. opentracker answers up to 64.
pub(crate) const HTTP_SCRAPE_BATCH: usize = 50;

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

/// How one request to a tracker went wrong, as the round sees it: a
/// tracker that answers "no" is alive; one that does not answer, or answers
/// garbage, is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The tracker answered with a refusal (`failure reason`, BEP 15 error).
    Refused(String),
    /// No usable answer: connection refused, timeout, malformed response.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(r) => write!(f, "refused: {r}"),
            Failure::Unreachable(e) => f.write_str(e),
        }
    }
}

impl From<AnnounceError> for Failure {
    fn from(e: AnnounceError) -> Self {
        match e {
            AnnounceError::Failure { reason, .. } => Failure::Refused(reason),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

/// The BEP 3 `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnnounceEvent {
    /// A regular re-announce.
    None,
    /// First announce of a decoy to this tracker.
    Started,
    /// The decoy was retired: the tracker should drop us from its swarm.
    Stopped,
}

impl AnnounceEvent {
    pub(crate) fn http(self) -> Option<&'static str> {
        match self {
            AnnounceEvent::None => None,
            AnnounceEvent::Started => Some("started"),
            AnnounceEvent::Stopped => Some("stopped"),
        }
    }

    /// BEP 15 event codes.
    pub(crate) fn udp(self) -> u32 {
        match self {
            AnnounceEvent::None => 0,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        }
    }
}

/// What a successful announce tells us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Announced {
    /// Re-announce after this long (floored at [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// BEP 3 `min interval`: never re-announce sooner.
    pub min_interval: Option<Duration>,
}

/// One torrent's counts in a scrape answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    /// Seeders (`complete`).
    pub complete: u64,
    /// Leechers (`incomplete`).
    pub incomplete: u64,
    /// Completed downloads the tracker has seen (`downloaded`).
    pub downloaded: u64,
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

    /// The HTTP scrape path and query by the BEP 48 convention: the last
    /// path segment must begin with `announce`, which becomes `scrape`
    /// (`/announce` → `/scrape`, `/x/announce.php?k=1` → `/x/scrape.php?k=1`).
    /// `None`: this tracker cannot be scraped. UDP trackers always can (BEP 15
    /// action 2), whatever their path.
    pub fn scrape_path(&self) -> Option<String> {
        let (path, query) = match self.path.find('?') {
            Some(i) => self.path.split_at(i),
            None => (self.path.as_str(), ""),
        };
        let slash = path.rfind('/')?;
        let rest = path[slash + 1..].strip_prefix("announce")?;
        Some(format!("{}scrape{rest}{query}", &path[..=slash]))
    }
}

fn host_header(url: &TrackerUrl) -> String {
    if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    }
}

/// A GET of `target`. HTTP/1.0 with `Connection: keep-alive`: a tracker
/// that keeps the connection says so and gives a `Content-Length`, and one
/// that does not closes it after the response; no server may answer an
/// HTTP/1.0 request with a chunked body.
fn get_request(url: &TrackerUrl, target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.0\r\nHost: {}\r\nUser-Agent: {}\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n",
        host_header(url),
        crate::DEFAULT_CLIENT_VERSION
    )
    .into_bytes()
}

/// The HTTP request announcing one seeded torrent.
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
    get_request(url, &target)
}

/// The HTTP request scraping `info_hashes` at `scrape_path` (see
/// [`TrackerUrl::scrape_path`]): one `info_hash` parameter each.
pub fn scrape_request(url: &TrackerUrl, scrape_path: &str, info_hashes: &[[u8; 20]]) -> Vec<u8> {
    let mut target = String::with_capacity(scrape_path.len() + info_hashes.len() * 71);
    target.push_str(scrape_path);
    let mut sep = if scrape_path.contains('?') { '&' } else { '?' };
    for h in info_hashes {
        target.push(sep);
        target.push_str("info_hash=");
        target.push_str(&percent_encode(h));
        sep = '&';
    }
    get_request(url, &target)
}

/// A response's status line and the headers that frame its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpHead {
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub content_length: Option<usize>,
    /// The server keeps the connection open after this response (it said
    /// `Connection: keep-alive` and framed the body with `Content-Length`).
    pub keep_alive: bool,
    pub chunked: bool,
}

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet.
pub(crate) fn parse_http_head(buf: &[u8]) -> Result<Option<HttpHead>, String> {
    let scan = &buf[..buf.len().min(MAX_HEAD + 4)];
    let Some(end) = scan.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(format!("headers longer than {MAX_HEAD} bytes"))
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let status = words
        .next()
        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u16>().ok());
    let (true, Some(status)) = (version_ok, status) else {
        return Err(format!("status line {:?}", truncate(status_line, 80)));
    };
    let mut content_length = None;
    let (mut keep_alive, mut close, mut chunked) = (false, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| format!("Content-Length {:?}", truncate(value, 40)))?;
            if content_length.is_some_and(|m| m != n) {
                return Err("two different Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                close |= token.eq_ignore_ascii_case("close");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(Some(HttpHead {
        status,
        len: end + 4,
        content_length,
        keep_alive: keep_alive && !close && !chunked && content_length.is_some(),
        chunked,
    }))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits a whole response into its head and body; the body is the rest,
/// cut at `Content-Length` when that is shorter.
fn split_response<'a>(url: &str, raw: &'a [u8]) -> Result<(HttpHead, &'a [u8]), AnnounceError> {
    let bad = |detail: String| AnnounceError::BadResponse {
        url: url.to_string(),
        detail,
    };
    let head = parse_http_head(raw)
        .map_err(bad)?
        .ok_or_else(|| bad("no end of headers".into()))?;
    let mut body = &raw[head.len..];
    if let Some(n) = head.content_length {
        body = &body[..n.min(body.len())];
    }
    check_head(url, &head)?;
    Ok((head, body))
}

/// A response we can read the body of: `200` and not chunked.
pub(crate) fn check_head(url: &str, head: &HttpHead) -> Result<(), AnnounceError> {
    let bad = |detail: String| AnnounceError::BadResponse {
        url: url.to_string(),
        detail,
    };
    if head.status != 200 {
        return Err(bad(format!("HTTP status {}", head.status)));
    }
    if head.chunked {
        return Err(bad("chunked body in answer to an HTTP/1.0 request".into()));
    }
    Ok(())
}

/// Parses an HTTP tracker response; returns the re-announce interval.
pub fn parse_announce_response(url: &str, raw: &[u8]) -> Result<Duration, AnnounceError> {
    parse_announce_reply(url, raw).map(|a| a.interval)
}

pub(crate) fn parse_announce_reply(url: &str, raw: &[u8]) -> Result<Announced, AnnounceError> {
    let (_, body) = split_response(url, raw)?;
    announce_body(url, body)
}

fn decode_dict<'a>(url: &str, body: &'a [u8]) -> Result<bencode::Value<'a>, AnnounceError> {
    let bad = |detail: String| AnnounceError::BadResponse {
        url: url.to_string(),
        detail,
    };
    let dict = bencode::decode(body).map_err(|e| bad(e.to_string()))?;
    if dict.as_dict().is_none() {
        return Err(bad("body is not a bencoded dictionary".into()));
    }
    if let Some(reason) = dict.get(b"failure reason").and_then(|v| v.as_bytes()) {
        return Err(AnnounceError::Failure {
            url: url.to_string(),
            reason: String::from_utf8_lossy(reason).into_owned(),
        });
    }
    Ok(dict)
}

/// An announce response's body.
pub(crate) fn announce_body(url: &str, body: &[u8]) -> Result<Announced, AnnounceError> {
    let dict = decode_dict(url, body)?;
    let seconds = |key: &[u8]| {
        dict.get(key)
            .and_then(|v| v.as_int())
            .filter(|&n| n > 0)
            .map(|n| bounded_interval(n as u64))
    };
    Ok(Announced {
        interval: seconds(b"interval").unwrap_or(DEFAULT_INTERVAL),
        min_interval: seconds(b"min interval"),
    })
}

/// Parses an HTTP scrape response for `info_hashes` (the request's, in
/// order): their counts, zero for a torrent the tracker does not list.
/// Entries for torrents we did not ask about are ignored, so a hostile
/// tracker cannot make the totals exceed one entry per asked hash.
pub fn parse_scrape_response(
    url: &str,
    raw: &[u8],
    info_hashes: &[[u8; 20]],
) -> Result<Vec<ScrapeCounts>, AnnounceError> {
    let (_, body) = split_response(url, raw)?;
    scrape_body(url, body, info_hashes)
}

/// A scrape response's body (`d5:filesd<20-byte hash>d8:completei1e…eee`).
pub(crate) fn scrape_body(
    url: &str,
    body: &[u8],
    info_hashes: &[[u8; 20]],
) -> Result<Vec<ScrapeCounts>, AnnounceError> {
    let dict = decode_dict(url, body)?;
    let files = dict
        .get(b"files")
        .and_then(|f| f.as_dict())
        .ok_or_else(|| AnnounceError::BadResponse {
            url: url.to_string(),
            detail: "no files dictionary".into(),
        })?;
    let mut wanted: Vec<(&[u8; 20], usize)> = info_hashes.iter().zip(0..).collect();
    wanted.sort_unstable();
    let mut counts = vec![ScrapeCounts::default(); info_hashes.len()];
    let count = |entry: &bencode::Value<'_>, key: &[u8]| {
        entry
            .get(key)
            .and_then(|v| v.as_int())
            .map_or(0, |n| n.max(0) as u64)
    };
    for (key, entry) in files {
        let Ok(hash) = <&[u8; 20]>::try_from(*key) else {
            continue;
        };
        if entry.as_dict().is_none() {
            continue;
        }
        // Every position that asked for this hash (a request may repeat one).
        let first = wanted.partition_point(|(h, _)| *h < hash);
        for &(_, at) in wanted[first..].iter().take_while(|(h, _)| *h == hash) {
            counts[at] = ScrapeCounts {
                complete: count(entry, b"complete"),
                incomplete: count(entry, b"incomplete"),
                downloaded: count(entry, b"downloaded"),
            };
        }
    }
    Ok(counts)
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
    fn scrape_paths_follow_the_convention() {
        let path = |u: &str| TrackerUrl::parse(u).unwrap().scrape_path();
        assert_eq!(path("http://t:1/announce").as_deref(), Some("/scrape"));
        assert_eq!(
            path("http://t:1/x/announce.php").as_deref(),
            Some("/x/scrape.php")
        );
        assert_eq!(
            path("http://t:1/announce?passkey=ab/announce").as_deref(),
            Some("/scrape?passkey=ab/announce"),
            "the query is not the path"
        );
        assert_eq!(path("http://t:1/a/announce/x"), None, "not the last segment");
        assert_eq!(path("http://t:1/tracker"), None);
        assert_eq!(path("http://t:1/"), None);
        assert_eq!(path("http://t:1"), None);
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
        assert!(req.contains("\r\nHost: 127.0.0.1:6969\r\n"));
        assert!(req.contains("\r\nConnection: keep-alive\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        let u = TrackerUrl::parse("http://[::1]:7000/a?k=1").unwrap();
        let req = String::from_utf8(announce_request(&u, &[0; 20], &[b'p'; 20], 1, None)).unwrap();
        assert!(req.starts_with("GET /a?k=1&info_hash=%00"), "{req}");
        assert!(req.contains("\r\nHost: [::1]:7000\r\n"));
        assert!(!req.contains("event="));
    }

    #[test]
    fn scrape_requests_repeat_info_hash() {
        let u = TrackerUrl::parse("http://127.0.0.1:6969/announce?k=1").unwrap();
        let path = u.scrape_path().unwrap();
        let req = String::from_utf8(scrape_request(&u, &path, &[[0xab; 20], [b'a'; 20]])).unwrap();
        let line = req.lines().next().unwrap();
        assert_eq!(
            line,
            format!(
                "GET /scrape?k=1&info_hash={}&info_hash={} HTTP/1.0",
                "%AB".repeat(20),
                "a".repeat(20)
            )
        );
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

    #[test]
    fn reads_intervals_with_floor_and_default() {
        let reply =
            |body: &str| parse_announce_reply("t", format!("HTTP/1.1 200 OK\r\n\r\n{body}").as_bytes());
        let a = reply("d8:intervali1933e12:min intervali966e5:peers0:e").unwrap();
        assert_eq!(a.interval, Duration::from_secs(1933));
        assert_eq!(a.min_interval, Some(Duration::from_secs(966)));
        let a = reply("d8:intervali5ee").unwrap();
        assert_eq!((a.interval, a.min_interval), (MIN_INTERVAL, None));
        let a = reply("d8:intervali-5e12:min intervali0ee").unwrap();
        assert_eq!((a.interval, a.min_interval), (DEFAULT_INTERVAL, None));
        // Too long to honour (or to add to a clock): capped.
        let a = reply("d8:intervali9223372036854775807e12:min intervali9223372036854775807ee").unwrap();
        assert_eq!((a.interval, a.min_interval), (MAX_INTERVAL, Some(MAX_INTERVAL)));
        // Content-Length cuts the body: the rest is the next response's.
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nd8:intervali99eeXYZ";
        assert_eq!(
            parse_announce_response("t", raw).unwrap(),
            Duration::from_secs(99)
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\nd8:intervali99ee\r\n0\r\n\r\n";
        assert!(parse_announce_response("t", chunked).is_err());
    }

    #[test]
    fn frames_response_heads() {
        assert_eq!(parse_http_head(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let h =
            parse_http_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nConnection: Keep-Alive\r\n\r\nbody")
                .unwrap()
                .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.keep_alive, h.len),
            (200, Some(12), true, 63)
        );
        // opentracker: HTTP/1.1, a length, no Connection header; it closes.
        let h = parse_http_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 85\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_http_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "no length: the body ends at close");
        let h =
            parse_http_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.keep_alive);
        assert!(parse_http_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(
            parse_http_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err()
        );
        assert!(parse_http_head(b"HTTP/1.1 20 OK\r\n\r\n").is_err());
        assert!(parse_http_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_http_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_http_head(b"HTTP/1.1 200 \xff\xfe\r\n\r\n")
            .unwrap()
            .is_some());
        let endless = [b'a'; MAX_HEAD + 10];
        assert!(parse_http_head(&endless).is_err(), "headers are bounded");
        assert_eq!(parse_http_head(&endless[..MAX_HEAD]), Ok(None));
    }

    fn scrape_entry(hash: &[u8; 20], complete: i64, downloaded: i64, incomplete: i64) -> Vec<u8> {
        let mut e = b"20:".to_vec();
        e.extend_from_slice(hash);
        e.extend_from_slice(
            format!("d8:completei{complete}e10:downloadedi{downloaded}e10:incompletei{incomplete}ee")
                .as_bytes(),
        );
        e
    }

    #[test]
    fn parses_scrapes() {
        let (a, b, c) = ([1u8; 20], [2u8; 20], [3u8; 20]);
        let mut body = b"d5:filesd".to_vec();
        body.extend(scrape_entry(&a, 1, 7, 2));
        body.extend(scrape_entry(&c, -4, 0, 0));
        body.extend(scrape_entry(&[9; 20], 100, 100, 100));
        body.extend_from_slice(b"ee");
        let mut raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(&body);
        let got = parse_scrape_response("t", &raw, &[a, b, c, a]).unwrap();
        let one = ScrapeCounts {
            complete: 1,
            incomplete: 2,
            downloaded: 7,
        };
        assert_eq!(
            got,
            vec![one, ScrapeCounts::default(), ScrapeCounts::default(), one]
        );

        let empty = b"HTTP/1.1 200 OK\r\n\r\nd5:filesdee";
        assert_eq!(
            parse_scrape_response("t", empty, &[a]).unwrap(),
            vec![ScrapeCounts::default()]
        );
        let refused = b"HTTP/1.1 200 OK\r\n\r\nd14:failure reason4:nopee";
        assert!(matches!(
            parse_scrape_response("t", refused, &[a]),
            Err(AnnounceError::Failure { .. })
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\nd5:filesle"[..],
            b"HTTP/1.1 200 OK\r\n\r\nde",
            b"HTTP/1.1 200 OK\r\n\r\nd5:filesd20:aaaa",
            b"HTTP/1.1 404 Not Found\r\n\r\nd5:filesdee",
        ] {
            assert!(
                parse_scrape_response("t", bad, &[a]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Keys that are not 20 bytes and values that are not dictionaries
        // are skipped, not trusted.
        let mut odd = b"HTTP/1.1 200 OK\r\n\r\nd5:filesd3:abcd8:completei5ee20:".to_vec();
        odd.extend_from_slice(&a);
        odd.extend_from_slice(b"i5eee");
        assert_eq!(
            parse_scrape_response("t", &odd, &[a]).unwrap(),
            vec![ScrapeCounts::default()]
        );
    }
}
