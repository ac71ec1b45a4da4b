//! The HTTP side of a tracker: one request at a time per lane, over a
//! connection the lane keeps while the tracker allows it (it answers our
//! `Connection: keep-alive` in kind, with a `Content-Length`); otherwise a
//! connection per request. Many lanes run at once.

use super::{
    announce_body, announce_request, check_head, parse_http_head, scrape_body, scrape_request, AnnounceError,
    AnnounceEvent, Announced, Failure, HttpHead, ScrapeCounts, TrackerUrl, MAX_RESPONSE,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request, connecting included, must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP tracker, resolved.
#[derive(Debug)]
pub(crate) struct HttpTracker {
    url: TrackerUrl,
    addr: SocketAddr,
    bind: Option<IpAddr>,
    scrape_path: Option<String>,
}

/// A lane's kept-alive connection, if any.
#[derive(Debug, Default)]
pub(crate) struct HttpLane {
    conn: Option<TcpStream>,
}

/// Why an exchange failed, and whether any of the response had arrived
/// (a kept-alive connection the server has meanwhile closed fails with
/// nothing received, and the request is then sent again on a new one).
struct ExchangeError {
    error: AnnounceError,
    received: bool,
}

impl HttpTracker {
    pub async fn resolve(url: &TrackerUrl, bind: Option<IpAddr>) -> Result<Self, Failure> {
        let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| Failure::Unreachable(format!("resolving {}: {e}", url.host)))?
            .next()
            .ok_or_else(|| Failure::Unreachable(format!("{} resolves to no address", url.host)))?;
        Ok(Self {
            url: url.clone(),
            addr,
            bind,
            scrape_path: url.scrape_path(),
        })
    }

    pub fn can_scrape(&self) -> bool {
        self.scrape_path.is_some()
    }

    pub async fn announce(
        &self,
        lane: &mut HttpLane,
        info_hash: &[u8; 20],
        peer_id: &[u8; 20],
        port: u16,
        event: AnnounceEvent,
    ) -> Result<Announced, Failure> {
        let request = announce_request(&self.url, info_hash, peer_id, port, event.http());
        let body = self.get(lane, &request).await?;
        Ok(announce_body(&self.url.raw, &body)?)
    }

    pub async fn scrape(
        &self,
        lane: &mut HttpLane,
        info_hashes: &[[u8; 20]],
    ) -> Result<Vec<ScrapeCounts>, Failure> {
        let Some(path) = &self.scrape_path else {
            return Err(Failure::Unreachable(
                "this tracker's URL does not allow scraping".into(),
            ));
        };
        let body = self
            .get(lane, &scrape_request(&self.url, path, info_hashes))
            .await?;
        Ok(scrape_body(&self.url.raw, &body, info_hashes)?)
    }

    /// Sends `request` and returns the body of a `200` answer.
    async fn get(&self, lane: &mut HttpLane, request: &[u8]) -> Result<Vec<u8>, AnnounceError> {
        let work = async {
            loop {
                let reused = lane.conn.is_some();
                let mut stream = match lane.conn.take() {
                    Some(s) => s,
                    None => self.connect().await?,
                };
                match self.exchange(&mut stream, request).await {
                    Ok((head, body)) => {
                        if head.keep_alive {
                            lane.conn = Some(stream);
                        }
                        check_head(&self.url.raw, &head)?;
                        return Ok(body);
                    }
                    // The server closed the idle connection: once more on a
                    // fresh one.
                    Err(e) if reused && !e.received => continue,
                    Err(e) => return Err(e.error),
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| AnnounceError::Timeout {
                url: self.url.raw.clone(),
            })?
    }

    async fn connect(&self) -> Result<TcpStream, AnnounceError> {
        let io = |source| AnnounceError::Io {
            url: self.url.raw.clone(),
            source,
        };
        let socket = if self.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(io)?;
        // Trackers list the address an announce comes from, so it must
        // come from the address we listen on.
        if let Some(ip) = self
            .bind
            .filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == self.addr.is_ipv4())
        {
            socket.bind(SocketAddr::new(ip, 0)).map_err(io)?;
        }
        let stream = socket.connect(self.addr).await.map_err(io)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Writes the request and reads one response: the head, then the body
    /// by `Content-Length` or to the end of the stream; never more than
    /// [`MAX_RESPONSE`] bytes.
    async fn exchange(
        &self,
        stream: &mut TcpStream,
        request: &[u8],
    ) -> Result<(HttpHead, Vec<u8>), ExchangeError> {
        let fail = |error, received| ExchangeError { error, received };
        let io = |source| AnnounceError::Io {
            url: self.url.raw.clone(),
            source,
        };
        let bad = |detail: String| AnnounceError::BadResponse {
            url: self.url.raw.clone(),
            detail,
        };
        stream.write_all(request).await.map_err(|e| fail(io(e), false))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 8192];
        let mut head: Option<HttpHead> = None;
        loop {
            if let Some(h) = &head {
                if let Some(n) = h.content_length {
                    if buf.len() >= h.len + n {
                        let mut h = h.clone();
                        // Bytes past the body: the stream is out of step.
                        h.keep_alive &= buf.len() == h.len + n;
                        let body = buf[h.len..h.len + n].to_vec();
                        return Ok((h, body));
                    }
                }
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| fail(io(e), !buf.is_empty()))?;
            if n == 0 {
                return match head {
                    Some(h) if h.content_length.is_none() => {
                        let body = buf[h.len..].to_vec();
                        Ok((h, body))
                    }
                    Some(_) => Err(fail(bad("connection closed inside the body".into()), true)),
                    None if buf.is_empty() => {
                        Err(fail(bad("connection closed without a response".into()), false))
                    }
                    None => Err(fail(bad("connection closed inside the headers".into()), true)),
                };
            }
            buf.extend_from_slice(&chunk[..n]);
            if head.is_none() {
                head = parse_http_head(&buf).map_err(|d| fail(bad(d), true))?;
                if let Some(h) = &head {
                    if h.content_length.is_some_and(|n| n > MAX_RESPONSE) {
                        return Err(fail(bad(format!("body longer than {MAX_RESPONSE} bytes")), true));
                    }
                }
            }
            if buf.len() > MAX_RESPONSE + head.as_ref().map_or(0, |h| h.len) {
                return Err(fail(bad(format!("longer than {MAX_RESPONSE} bytes")), true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A tracker on loopback that answers every announce with `interval`
    /// = the number of requests it has answered, keeps each connection for
    /// `per_connection` responses (saying `keep-alive` when `keep_alive`)
    /// and then closes it without notice. Returns its URL and a count of
    /// the connections it accepted.
    async fn fake_tracker(per_connection: usize, keep_alive: bool) -> (TrackerUrl, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = TrackerUrl::parse(&format!("http://{}/announce", listener.local_addr().unwrap())).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let answered = Arc::clone(&answered);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("d8:intervali{}ee", 1000 + n);
                        let connection = if keep_alive { "keep-alive" } else { "close" };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        if s.write_all((head + &body).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    // Closed without notice: the client finds out on its next request.
                });
            }
        });
        (url, connections)
    }

    async fn announce_five(url: &TrackerUrl) -> Vec<u64> {
        let tracker = HttpTracker::resolve(url, None).await.unwrap();
        let mut lane = HttpLane::default();
        let mut intervals = Vec::new();
        for i in 0..5u8 {
            let a = tracker
                .announce(&mut lane, &[i; 20], &[b'p'; 20], 6881, AnnounceEvent::None)
                .await
                .unwrap();
            intervals.push(a.interval.as_secs());
        }
        intervals
    }

    #[tokio::test]
    async fn kept_alive_connections_are_reused_and_replaced_when_closed() {
        let (url, connections) = fake_tracker(2, true).await;
        assert_eq!(announce_five(&url).await, vec![1001, 1002, 1003, 1004, 1005]);
        // Two requests per connection; each close is noticed by the next
        // request, which is sent again on a fresh connection.
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn without_keep_alive_each_request_has_its_connection() {
        let (url, connections) = fake_tracker(5, false).await;
        assert_eq!(announce_five(&url).await, vec![1001, 1002, 1003, 1004, 1005]);
        assert_eq!(connections.load(Ordering::SeqCst), 5);
    }
}
