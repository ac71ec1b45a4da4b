use crate::{LedgerError, SessionRecord};
use rusqlite::{params, Connection};
use std::net::IpAddr;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER NOT NULL,
    network TEXT NOT NULL,
    decoy_id INTEGER NOT NULL,
    info_hash BLOB NOT NULL,
    remote_ip TEXT NOT NULL,
    remote_port INTEGER NOT NULL,
    peer_id BLOB,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL,
    pieces_sent INTEGER NOT NULL,
    piece_count INTEGER NOT NULL,
    peer_pieces_initial INTEGER,
    peer_pieces_final INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    close_reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at_ms);
CREATE INDEX IF NOT EXISTS sessions_ip ON sessions(remote_ip);
";

/// A session as stored, for reports and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredSession {
    pub id: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: String,
    pub decoy_id: i64,
    pub info_hash: String,
    pub remote_ip: String,
    pub remote_port: u16,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: String,
    pub bytes_sent: u64,
    pub pieces_sent: u32,
    pub piece_count: u32,
    pub peer_pieces_initial: Option<u32>,
    pub peer_pieces_final: u32,
    pub completed: bool,
    pub close_reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerSummary {
    pub sessions: u64,
    pub completed: u64,
    pub unique_ips: u64,
    pub bytes_sent: u64,
    pub first_session_ms: Option<i64>,
    pub last_session_ms: Option<i64>,
}

pub struct LedgerStore {
    conn: Connection,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl LedgerStore {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed batch survives power loss, not just a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    pub fn append(&mut self, batch: &[SessionRecord]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sessions (started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip,
                 remote_port, peer_id, client_name, client_version, transport, bytes_sent, pieces_sent,
                 piece_count, peer_pieces_initial, peer_pieces_final, completed, close_reason)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)",
            )?;
            for r in batch {
                stmt.execute(params![
                    r.started_at_ms,
                    r.ended_at_ms,
                    r.network,
                    r.decoy_id,
                    &r.info_hash[..],
                    canonical_ip(r.remote_ip),
                    r.remote_port,
                    r.peer_id.as_ref().map(|p| &p[..]),
                    r.client_name,
                    r.client_version,
                    r.transport.as_str(),
                    r.bytes_sent as i64,
                    r.pieces_sent,
                    r.piece_count,
                    r.peer_pieces_initial,
                    r.peer_pieces_final,
                    r.completed,
                    r.close_reason,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn summary(&self) -> Result<LedgerSummary, LedgerError> {
        Ok(self.conn.query_row(
            "SELECT count(*), coalesce(sum(completed),0), count(DISTINCT remote_ip), coalesce(sum(bytes_sent),0),
                    min(started_at_ms), max(started_at_ms) FROM sessions",
            [],
            |r| {
                Ok(LedgerSummary {
                    sessions: r.get::<_, i64>(0)? as u64,
                    completed: r.get::<_, i64>(1)? as u64,
                    unique_ips: r.get::<_, i64>(2)? as u64,
                    bytes_sent: r.get::<_, i64>(3)? as u64,
                    first_session_ms: r.get(4)?,
                    last_session_ms: r.get(5)?,
                })
            },
        )?)
    }

    pub fn sessions(&self) -> Result<Vec<StoredSession>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip, remote_port,
                    client_name, client_version, transport, bytes_sent, pieces_sent, piece_count,
                    peer_pieces_initial, peer_pieces_final, completed, close_reason
             FROM sessions ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredSession {
                id: r.get(0)?,
                started_at_ms: r.get(1)?,
                ended_at_ms: r.get(2)?,
                network: r.get(3)?,
                decoy_id: r.get(4)?,
                info_hash: hex(&r.get::<_, Vec<u8>>(5)?),
                remote_ip: r.get(6)?,
                remote_port: r.get(7)?,
                client_name: r.get(8)?,
                client_version: r.get(9)?,
                transport: r.get(10)?,
                bytes_sent: r.get::<_, i64>(11)? as u64,
                pieces_sent: r.get(12)?,
                piece_count: r.get(13)?,
                peer_pieces_initial: r.get(14)?,
                peer_pieces_final: r.get(15)?,
                completed: r.get(16)?,
                close_reason: r.get(17)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// IPv4-mapped IPv6 addresses are stored as plain IPv4 so one downloader
/// is one address whichever socket family accepted it.
fn canonical_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}
