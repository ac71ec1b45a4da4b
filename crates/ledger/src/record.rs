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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Open,
    Close,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Open => "open",
            RecordKind::Close => "close",
        }
    }
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
