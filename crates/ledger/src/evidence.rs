//! Evidence exports: every record of one address (or range) in a time
//! window, each with what proves it part of the ledger, checkable offline.
//!
//! A record's proof is: its fields and `prev_hash`, which give its
//! `record_hash` by the chain's rule; its salt, which ties the address to
//! the hashed commitment; and a Merkle path from the record hash to the root
//! of the seal that covers it. Seals are chained, so the export carries every
//! seal from the first that covers an exported record to the newest; a
//! reader who holds a seal hash from elsewhere (a printout, a hash handed to
//! the court earlier) compares it with the one in the export.

use crate::chain::{self, ChainedFields};
use crate::clock::ClockState;
use crate::merkle::{self, Hash};
use crate::seal::{row_to_seal, Seal, SEAL_COLUMNS};
use crate::{LedgerError, LedgerStore};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const EVIDENCE_FORMAT: &str = "warnseed-evidence-1";

/// An address or a CIDR range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn base(&self) -> IpAddr {
        self.base
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = crate::store::canonical_ip(ip);
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// The first and last address of the range, in the 16-byte form of a
    /// block's address list.
    pub(crate) fn bounds(&self) -> crate::blockstore::AddressBounds {
        let (lo, hi) = match self.base {
            IpAddr::V4(b) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                let lo = u32::from(b) & mask;
                (IpAddr::V4(lo.into()), IpAddr::V4((lo | !mask).into()))
            }
            IpAddr::V6(b) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                let lo = u128::from(b) & mask;
                (IpAddr::V6(lo.into()), IpAddr::V6((lo | !mask).into()))
            }
        };
        crate::blockstore::AddressBounds {
            lo: crate::blockstore::address_bytes(lo),
            hi: crate::blockstore::address_bytes(hi),
        }
    }

    pub fn is_single(&self) -> bool {
        self.prefix == if self.base.is_ipv4() { 32 } else { 128 }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR range like 203.0.113.0/24");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let base: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let base = crate::store::canonical_ip(base);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { base, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.base)
        } else {
            write!(f, "{}/{}", self.base, self.prefix)
        }
    }
}

/// A Merkle path from a record to its seal's root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub seal: i64,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<String>,
}

/// One record, every field the chain covers, and its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub seq: i64,
    pub kind: String,
    pub session_key: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: String,
    pub decoy_id: i64,
    pub info_hash: String,
    pub remote_ip: Option<String>,
    pub ip_salt: Option<String>,
    pub ip_commitment: String,
    pub remote_port: u16,
    pub peer_id: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub transport: String,
    pub bytes_sent: i64,
    pub pieces_sent: i64,
    pub piece_count: i64,
    pub peer_pieces_initial: Option<i64>,
    pub peer_pieces_final: i64,
    pub completed: bool,
    pub close_reason: String,
    pub prev_hash: String,
    pub record_hash: String,
    pub proof: InclusionProof,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceSeal {
    pub id: i64,
    pub sealed_at_ms: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: String,
    pub merkle_root: String,
    pub node_id: String,
    pub clock_source: String,
    pub clock_synced: Option<bool>,
    pub clock_max_error_us: Option<i64>,
    pub clock_est_error_us: Option<i64>,
    pub prev_seal_hash: String,
    pub seal_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub format: String,
    pub node_id: String,
    pub generated_at_ms: i64,
    pub ip: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub records: Vec<EvidenceRecord>,
    /// From the first seal an exported record needs to the newest.
    pub seals: Vec<EvidenceSeal>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = unhex_vec(s, what)?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} is not {N} bytes of hex"))
}

fn unhex_vec(s: &str, what: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} is not hex"));
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| format!("{what} is not hex")))
        .collect()
}

impl From<&Seal> for EvidenceSeal {
    fn from(s: &Seal) -> Self {
        Self {
            id: s.id,
            sealed_at_ms: s.sealed_at_ms,
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            head_hash: hex(&s.head_hash),
            merkle_root: hex(&s.merkle_root),
            node_id: s.node_id.clone(),
            clock_source: s.clock.source.clone(),
            clock_synced: s.clock.synced,
            clock_max_error_us: s.clock.max_error_us,
            clock_est_error_us: s.clock.est_error_us,
            prev_seal_hash: hex(&s.prev_seal_hash),
            seal_hash: hex(&s.seal_hash),
        }
    }
}

impl EvidenceSeal {
    fn to_seal(&self) -> Result<Seal, String> {
        let what = |f: &str| format!("seal {} {f}", self.id);
        Ok(Seal {
            id: self.id,
            sealed_at_ms: self.sealed_at_ms,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            head_hash: unhex(&self.head_hash, &what("head_hash"))?,
            merkle_root: unhex(&self.merkle_root, &what("merkle_root"))?,
            node_id: self.node_id.clone(),
            clock: ClockState {
                source: self.clock_source.clone(),
                synced: self.clock_synced,
                max_error_us: self.clock_max_error_us,
                est_error_us: self.clock_est_error_us,
            },
            prev_seal_hash: unhex(&self.prev_seal_hash, &what("prev_seal_hash"))?,
            seal_hash: unhex(&self.seal_hash, &what("seal_hash"))?,
        })
    }
}

impl LedgerStore {
    /// Every record from `ip` that started in `[from_ms, to_ms]`, with
    /// proofs. Unsealed records are sealed first (with `clock`), so every
    /// record exported has a proof.
    pub fn evidence(
        &mut self,
        ip: IpRange,
        from_ms: i64,
        to_ms: i64,
        clock: &ClockState,
        now_ms: i64,
    ) -> Result<Evidence, LedgerError> {
        self.seal(clock, now_ms)?;
        // Records a running node commits after this seal are not in this
        // export (they would have no proof yet): it covers the ledger as
        // sealed now.
        let sealed_to: i64 =
            self.conn
                .query_row("SELECT coalesce(max(last_seq), 0) FROM seals", [], |r| r.get(0))?;
        self.evidence_through(ip, from_ms, to_ms, sealed_to, now_ms)
    }

    /// [`LedgerStore::evidence`] of the records up to `sealed_to`, which a
    /// seal covers.
    fn evidence_through(
        &self,
        ip: IpRange,
        from_ms: i64,
        to_ms: i64,
        sealed_to: i64,
        now_ms: i64,
    ) -> Result<Evidence, LedgerError> {
        let node_id = self.node_id()?;
        self.require_blocks()?;
        let mut records = Vec::new();
        // Blocks without an address of the range are skipped unread.
        crate::blockstore::for_each_started(
            &self.conn,
            from_ms,
            to_ms,
            sealed_to,
            Some(ip.bounds()),
            |seq, prev, r| {
                let crate::block::PackedAddress::Raw { ip: address, salt } = r.address else {
                    return Ok(());
                };
                if !ip.contains(address) || r.started_at_ms < from_ms || r.started_at_ms > to_ms {
                    return Ok(());
                }
                records.push(EvidenceRecord {
                    seq,
                    kind: r.kind.as_str().to_string(),
                    session_key: r.session_key,
                    started_at_ms: r.started_at_ms,
                    ended_at_ms: r.ended_at_ms,
                    network: r.network.to_string(),
                    decoy_id: r.decoy_id,
                    info_hash: hex(&r.info_hash),
                    remote_ip: Some(address.to_string()),
                    ip_salt: Some(hex(&salt)),
                    ip_commitment: hex(&r.ip_commitment),
                    remote_port: r.remote_port,
                    peer_id: r.peer_id.map(|p| hex(&p)),
                    client_name: r.client_name.map(str::to_string),
                    client_version: r.client_version.map(str::to_string),
                    transport: r.transport.to_string(),
                    bytes_sent: r.bytes_sent as i64,
                    pieces_sent: i64::from(r.pieces_sent),
                    piece_count: i64::from(r.piece_count),
                    peer_pieces_initial: r.peer_pieces_initial.map(i64::from),
                    peer_pieces_final: i64::from(r.peer_pieces_final),
                    completed: r.completed,
                    close_reason: r.close_reason.to_string(),
                    prev_hash: hex(prev),
                    record_hash: hex(&r.record_hash),
                    proof: InclusionProof {
                        seal: 0,
                        leaf_index: 0,
                        tree_size: 0,
                        path: Vec::new(),
                    },
                });
                Ok(())
            },
        )?;
        // Seals made since `sealed_to` (a running node seals every minute)
        // cover records this export left out: the export's newest seal must
        // be one whose records of the address it holds in full.
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {SEAL_COLUMNS} FROM seals WHERE last_seq <= ?1 ORDER BY id"
        ))?;
        let all_seals: Vec<Seal> = stmt
            .query_map([sealed_to], row_to_seal)?
            .collect::<Result<_, _>>()?;
        // Proofs, one seal's tree at a time.
        let mut first_needed = None;
        let mut i = 0;
        while i < records.len() {
            let seq = records[i].seq;
            let Some(seal) = all_seals.iter().find(|s| s.first_seq <= seq && seq <= s.last_seq) else {
                // Sealed just above: only records a running node wrote
                // since (sessions that started in the window and closed
                // just now) can be past the newest seal.
                return Err(LedgerError::Unsealed(seq));
            };
            first_needed.get_or_insert(seal.id);
            let mut leaves: Vec<Hash> = Vec::new();
            crate::blockstore::for_each_seq(&self.conn, seal.first_seq, seal.last_seq, |_, _, r| {
                leaves.push(r.record_hash);
                Ok(())
            })?;
            if leaves.len() as u64 != seal.len() {
                // A record under the seal is gone: `ledger verify` says where.
                return Err(LedgerError::Io(format!(
                    "seal {} covers {} records but {} are in the ledger: run `ledger verify`",
                    seal.id,
                    seal.len(),
                    leaves.len()
                )));
            }
            let mut mine = Vec::new();
            while i < records.len() && records[i].seq <= seal.last_seq {
                mine.push(i);
                i += 1;
            }
            let indices: Vec<usize> = mine
                .iter()
                .map(|&r| (records[r].seq - seal.first_seq) as usize)
                .collect();
            for ((&r, &index), path) in mine.iter().zip(&indices).zip(merkle::proofs(&leaves, &indices)) {
                records[r].proof = InclusionProof {
                    seal: seal.id,
                    leaf_index: index as u64,
                    tree_size: leaves.len() as u64,
                    path: path.iter().map(|h| hex(h)).collect(),
                };
            }
        }
        let seals = match first_needed {
            Some(first) => all_seals
                .iter()
                .filter(|s| s.id >= first)
                .map(EvidenceSeal::from)
                .collect(),
            // No record: the newest seal still shows the ledger's state.
            None => all_seals.last().map(EvidenceSeal::from).into_iter().collect(),
        };
        Ok(Evidence {
            format: EVIDENCE_FORMAT.into(),
            node_id,
            generated_at_ms: now_ms,
            ip: ip.to_string(),
            from_ms,
            to_ms,
            records,
            seals,
        })
    }
}

/// What an offline check of an export established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvidenceCheck {
    pub records: usize,
    pub seals: usize,
    /// With an anchor (a seal hash held independently): the records that
    /// seal commits to (every seal before it is chained into it).
    pub anchored_records: Option<usize>,
    /// The newest seal's hash: compare it with one held elsewhere.
    pub newest_seal_hash: Option<String>,
    pub newest_seal_at_ms: Option<i64>,
}

/// Checks an export without the database: every record's hash, address
/// commitment and Merkle path, and the seals' own hashes and links.
pub fn verify_evidence(e: &Evidence) -> Result<EvidenceCheck, String> {
    if e.format != EVIDENCE_FORMAT {
        return Err(format!("format {:?} is not {EVIDENCE_FORMAT}", e.format));
    }
    let range: IpRange =
        e.ip.parse()
            .map_err(|err| format!("the export's address: {err}"))?;
    let seals: Vec<Seal> = e.seals.iter().map(|s| s.to_seal()).collect::<Result<_, _>>()?;
    for s in &seals {
        if s.last_seq < s.first_seq || s.first_seq < 1 {
            return Err(format!("seal {} has an impossible range", s.id));
        }
    }
    for (i, s) in seals.iter().enumerate() {
        if s.compute_hash() != s.seal_hash {
            return Err(format!("seal {}: seal_hash does not match its fields", s.id));
        }
        if s.node_id != e.node_id {
            return Err(format!(
                "seal {} is from node {}, not {}",
                s.id, s.node_id, e.node_id
            ));
        }
        if i > 0 {
            let prev = &seals[i - 1];
            if Some(s.id) != prev.id.checked_add(1)
                || s.prev_seal_hash != prev.seal_hash
                || Some(s.first_seq) != prev.last_seq.checked_add(1)
            {
                return Err(format!("seal {} does not follow seal {}", s.id, prev.id));
            }
        }
    }
    let mut last_seq = 0i64;
    for r in &e.records {
        let at = |what: &str| format!("record {}: {what}", r.seq);
        // The header says what was asked for: every record must fit it.
        if r.seq <= last_seq {
            return Err(at("out of order or repeated"));
        }
        last_seq = r.seq;
        let in_range = r
            .remote_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .is_some_and(|ip| range.contains(ip));
        if !in_range {
            return Err(at(&format!("its address is not in {}", e.ip)));
        }
        if r.started_at_ms < e.from_ms || r.started_at_ms > e.to_ms {
            return Err(at("it started outside the export's window"));
        }
        let prev: Hash = unhex(&r.prev_hash, &at("prev_hash"))?;
        let info_hash = unhex_vec(&r.info_hash, &at("info_hash"))?;
        let commitment = unhex_vec(&r.ip_commitment, &at("ip_commitment"))?;
        let peer_id = r
            .peer_id
            .as_deref()
            .map(|p| unhex_vec(p, &at("peer_id")))
            .transpose()?;
        let fields = ChainedFields {
            seq: r.seq,
            kind: &r.kind,
            session_key: r.session_key,
            started_at_ms: r.started_at_ms,
            ended_at_ms: r.ended_at_ms,
            network: &r.network,
            decoy_id: r.decoy_id,
            info_hash: &info_hash,
            ip_commitment: &commitment,
            remote_port: r.remote_port,
            peer_id: peer_id.as_deref(),
            client_name: r.client_name.as_deref(),
            client_version: r.client_version.as_deref(),
            transport: &r.transport,
            bytes_sent: r.bytes_sent,
            pieces_sent: r.pieces_sent,
            piece_count: r.piece_count,
            peer_pieces_initial: r.peer_pieces_initial,
            peer_pieces_final: r.peer_pieces_final,
            completed: r.completed,
            close_reason: &r.close_reason,
        };
        let hash = chain::record_hash(&prev, &fields);
        if hex(&hash) != r.record_hash {
            return Err(at("its fields do not give its record_hash: altered"));
        }
        match (&r.remote_ip, &r.ip_salt) {
            (Some(ip), Some(salt)) => {
                let salt = unhex_vec(salt, &at("ip_salt"))?;
                if chain::ip_commitment(&salt, ip)[..] != commitment[..] {
                    return Err(at("remote_ip does not match its commitment: altered"));
                }
            }
            _ => return Err(at("the address cannot be checked (no salt)")),
        }
        let seal = seals
            .iter()
            .find(|s| s.id == r.proof.seal)
            .ok_or_else(|| at(&format!("seal {} is not in the export", r.proof.seal)))?;
        if r.seq < seal.first_seq
            || r.seq > seal.last_seq
            || Some(r.proof.leaf_index) != r.seq.checked_sub(seal.first_seq).map(|n| n as u64)
            || r.proof.tree_size != seal.len()
        {
            return Err(at(&format!("its position does not fit seal {}", seal.id)));
        }
        let path: Vec<Hash> = r
            .proof
            .path
            .iter()
            .map(|h| unhex(h, &at("proof path")))
            .collect::<Result<_, _>>()?;
        if merkle::root_from_proof(&hash, r.proof.leaf_index, r.proof.tree_size, &path)
            != Some(seal.merkle_root)
        {
            return Err(at(&format!(
                "its Merkle path does not lead to seal {}'s root",
                seal.id
            )));
        }
    }
    Ok(EvidenceCheck {
        records: e.records.len(),
        seals: seals.len(),
        anchored_records: None,
        newest_seal_hash: seals.last().map(|s| hex(&s.seal_hash)),
        newest_seal_at_ms: seals.last().map(|s| s.sealed_at_ms),
    })
}

/// As [`verify_evidence`], and checks the export against `anchor`, a seal
/// hash obtained independently (e.g. logged by the node and handed over
/// earlier): it must be one of the export's seals, and the records it
/// covers are counted. Records sealed after the anchor are verified against
/// the export's own seals only.
pub fn verify_evidence_anchored(e: &Evidence, anchor: &str) -> Result<EvidenceCheck, String> {
    let mut check = verify_evidence(e)?;
    let anchor = anchor.trim().to_ascii_lowercase();
    let seal = e
        .seals
        .iter()
        .find(|s| s.seal_hash == anchor)
        .ok_or_else(|| format!("the anchor {anchor} is not one of the export's seals"))?;
    check.anchored_records = Some(e.records.iter().filter(|r| r.seq <= seal.last_seq).count());
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RecordKind, SessionRecord, Transport};

    #[test]
    fn records_committed_after_the_exports_seal_are_left_to_the_next_export() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
        let record = |i: i64| SessionRecord {
            kind: RecordKind::Session,
            session_key: i,
            started_at_ms: 1_790_000_000_000 + i,
            ended_at_ms: 1_790_000_001_000 + i,
            network: "bittorrent",
            decoy_id: 1,
            info_hash: [1; 20],
            remote_ip: "198.51.100.7".parse().unwrap(),
            remote_port: 6881,
            peer_id: None,
            client_name: None,
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: 0,
            pieces_sent: 0,
            piece_count: 1,
            peer_pieces_initial: None,
            peer_pieces_final: 0,
            completed: false,
            close_reason: "peer_closed".into(),
        };
        let clock = crate::clock::read();
        store.append(&[record(1), record(2)]).unwrap();
        let seal = store.seal(&clock, 1_790_000_100_000).unwrap().unwrap();
        // A running node commits between the export's seal and its query.
        store.append(&[record(3)]).unwrap();
        let ip: IpRange = "198.51.100.7".parse().unwrap();
        let e = store
            .evidence_through(ip, 0, i64::MAX, seal.last_seq, 1_790_000_200_000)
            .unwrap();
        assert_eq!(e.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        verify_evidence(&e).unwrap();
        // The node seals record 3 before the export reads the seals: the
        // export still ends at its own seal, which covers all it holds.
        store.seal(&clock, 1_790_000_150_000).unwrap().unwrap();
        let e = store
            .evidence_through(ip, 0, i64::MAX, seal.last_seq, 1_790_000_200_000)
            .unwrap();
        assert_eq!(e.seals.last().unwrap().last_seq, seal.last_seq);
        verify_evidence(&e).unwrap();
        // The next export seals and covers it.
        let e = store
            .evidence(ip, 0, i64::MAX, &clock, 1_790_000_300_000)
            .unwrap();
        assert_eq!(e.records.len(), 3);
    }
}
