use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    /// Message Stream Encryption handshake, then plaintext.
    TcpMsePlain,
    /// Message Stream Encryption with RC4 for the whole stream.
    TcpMseRc4,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::TcpMsePlain => "tcp+mse-plain",
            Transport::TcpMseRc4 => "tcp+mse-rc4",
        }
    }
}

/// A session is registered twice: when it names a decoy (`Open`, so a
/// crash loses at most the commit window) and when it ends (`Close`, with
/// everything the session did). Both share the session's key.
///
/// A session that ends before its open record was committed (a DHT
/// indexer's metadata fetch takes milliseconds) is written once, as
/// `Session`: both records would land in the same transaction, so the open
/// one would add nothing a crash could save, and the close record already
/// holds every field. It counts as both ([`coalesce_short_sessions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Open,
    Close,
    Session,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Open => "open",
            RecordKind::Close => "close",
            RecordKind::Session => "session",
        }
    }

    /// A record of the session's start (it counts the address).
    pub fn opens(self) -> bool {
        self != RecordKind::Close
    }

    /// A record of the session's end (it counts what the session did).
    pub fn closes(self) -> bool {
        self != RecordKind::Open
    }
}

/// [`RecordKind::opens`] and [`RecordKind::closes`] of a stored kind.
pub fn kind_opens_closes(kind: &str) -> (bool, bool) {
    (kind != "close", kind != "open")
}

/// Writes each session whose open and close records are both in `batch`
/// as one `Session` record, in the close record's place. Returns how many
/// open records it folded. The pair is matched on everything the two share
/// (key, network, address, port, start), so records from different sources
/// that happen to share a key are left alone.
pub fn coalesce_short_sessions(batch: &mut Vec<SessionRecord>) -> usize {
    use std::collections::HashMap;
    type Pair = (i64, &'static str, std::net::IpAddr, u16, i64);
    let key = |r: &SessionRecord| -> Pair {
        (
            r.session_key,
            r.network,
            r.remote_ip,
            r.remote_port,
            r.started_at_ms,
        )
    };
    let mut opens: HashMap<Pair, usize> = HashMap::new();
    let mut folded = vec![false; batch.len()];
    let mut closes = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        match r.kind {
            RecordKind::Open => {
                opens.insert(key(r), i);
            }
            RecordKind::Close => {
                if let Some(&o) = opens.get(&key(r)) {
                    folded[o] = true;
                    closes.push(i);
                }
            }
            RecordKind::Session => {}
        }
    }
    drop(opens);
    for i in closes {
        batch[i].kind = RecordKind::Session;
    }
    let n = folded.iter().filter(|f| **f).count();
    if n > 0 {
        let mut i = 0;
        batch.retain(|_| {
            let keep = !folded[i];
            i += 1;
            keep
        });
    }
    n
}

/// One peer session with one decoy, as the adapter saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub kind: RecordKind,
    /// Random per session; ties its open and close records together.
    pub session_key: i64,
    /// UTC milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// `bittorrent` today; `ed2k` later.
    pub network: &'static str,
    pub decoy_id: i64,
    pub info_hash: [u8; 20],
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    pub peer_id: Option<[u8; 20]>,
    /// Decoded from the peer id, e.g. `libtorrent 2.0.8.0`.
    pub client_name: Option<String>,
    /// The client's own BEP 10 `v` string.
    pub client_version: Option<String>,
    pub transport: Transport,
    pub bytes_sent: u64,
    pub pieces_sent: u32,
    pub piece_count: u32,
    /// The peer's pieces when it first told us, if it did.
    pub peer_pieces_initial: Option<u32>,
    pub peer_pieces_final: u32,
    /// The peer had every piece when the session ended.
    pub completed: bool,
    pub close_reason: String,
}

impl SessionRecord {
    /// What the chain hashes of this record as record `seq`, its address
    /// entering only through `commitment` ([`crate::chain::ip_commitment`]).
    pub fn chained_fields<'a>(
        &'a self,
        seq: i64,
        commitment: &'a [u8; 32],
    ) -> crate::chain::ChainedFields<'a> {
        let r = self;
        crate::chain::ChainedFields {
            seq,
            kind: r.kind.as_str(),
            session_key: r.session_key,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            network: r.network,
            decoy_id: r.decoy_id,
            info_hash: &r.info_hash,
            ip_commitment: commitment,
            remote_port: r.remote_port,
            peer_id: r.peer_id.as_ref().map(|p| &p[..]),
            client_name: r.client_name.as_deref(),
            client_version: r.client_version.as_deref(),
            transport: r.transport.as_str(),
            bytes_sent: r.bytes_sent as i64,
            pieces_sent: i64::from(r.pieces_sent),
            piece_count: i64::from(r.piece_count),
            peer_pieces_initial: r.peer_pieces_initial.map(i64::from),
            peer_pieces_final: i64::from(r.peer_pieces_final),
            completed: r.completed,
            close_reason: &r.close_reason,
        }
    }
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    fn record(kind: RecordKind, key: i64, port: u16) -> SessionRecord {
        SessionRecord {
            kind,
            session_key: key,
            started_at_ms: 1_790_000_000_000 + key,
            ended_at_ms: 1_790_000_000_900 + key,
            network: "bittorrent",
            decoy_id: 3,
            info_hash: [7; 20],
            remote_ip: "198.51.100.4".parse().unwrap(),
            remote_port: port,
            peer_id: None,
            client_name: Some("libtorrent 2.0.8.0".into()),
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: if kind == RecordKind::Open { 0 } else { 52_000 },
            pieces_sent: 0,
            piece_count: 9,
            peer_pieces_initial: None,
            peer_pieces_final: 0,
            completed: false,
            close_reason: if kind == RecordKind::Open {
                String::new()
            } else {
                "peer_closed".into()
            },
        }
    }

    #[test]
    fn a_session_opened_and_closed_in_one_batch_becomes_one_record() {
        use RecordKind::*;
        let mut batch = vec![
            record(Open, 1, 6881),  // closes below: folded
            record(Open, 2, 6882),  // still open at the batch's end
            record(Close, 3, 6883), // opened in an earlier batch
            record(Close, 1, 6881),
            record(Open, 4, 6884),
            record(Close, 4, 9999), // same key, another port: not the same session
        ];
        let close_1 = batch[3].clone();
        assert_eq!(coalesce_short_sessions(&mut batch), 1);
        let kinds: Vec<(i64, RecordKind)> = batch.iter().map(|r| (r.session_key, r.kind)).collect();
        assert_eq!(
            kinds,
            vec![(2, Open), (3, Close), (1, Session), (4, Open), (4, Close)]
        );
        // The one record is the close record, every field kept.
        assert_eq!(
            SessionRecord {
                kind: Close,
                ..batch[2].clone()
            },
            close_1
        );
        assert!(Session.opens() && Session.closes() && Open.opens() && !Open.closes());
        assert_eq!(kind_opens_closes("session"), (true, true));
        assert_eq!(kind_opens_closes("close"), (false, true));
        // Nothing to fold: unchanged.
        let mut again = batch.clone();
        assert_eq!(coalesce_short_sessions(&mut again), 0);
        assert_eq!(again, batch);
    }
}
