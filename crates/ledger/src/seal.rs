//! Seals: periodic records that summarise the chain.
//!
//! A seal covers the records since the previous seal: their range, the last
//! record's hash (the chain head), and the Merkle root of their hashes, plus
//! when it was made, the clock's state and the node. Seals are chained to
//! each other by hash like records are. So:
//! - deleting the newest records is detected while a seal names them (a
//!   bare chain cannot tell a truncated ledger from a young one);
//! - one record can be proven part of the ledger to someone who has only
//!   the seal, by a short Merkle path ([`crate::merkle`]): the evidence
//!   export carries such proofs;
//! - a seal hash published or handed over elsewhere anchors everything
//!   before it.

use crate::clock::ClockState;
use crate::merkle::{self, Hash};
use sha2::{Digest, Sha256};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seals (
    -- 1, 2, 3, ... with no gaps, like records.
    id INTEGER PRIMARY KEY,
    sealed_at_ms INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    head_hash BLOB NOT NULL,
    merkle_root BLOB NOT NULL,
    node_id TEXT NOT NULL,
    clock_source TEXT NOT NULL,
    clock_synced INTEGER,
    clock_max_error_us INTEGER,
    clock_est_error_us INTEGER,
    prev_seal_hash BLOB NOT NULL,
    seal_hash BLOB NOT NULL
);
";

const SEAL_TAG: &[u8] = b"warnseed ledger seal v1\0";

/// A seal as stored (and as exported: hashes in hex there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    pub id: i64,
    pub sealed_at_ms: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: Hash,
    pub merkle_root: Hash,
    pub node_id: String,
    pub clock: ClockState,
    pub prev_seal_hash: Hash,
    pub seal_hash: Hash,
}

impl Seal {
    /// The hash this seal must carry, from its other fields.
    pub fn compute_hash(&self) -> Hash {
        let mut h = Sha256::new();
        let mut bytes = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        bytes(SEAL_TAG);
        bytes(&self.prev_seal_hash);
        bytes(&self.id.to_be_bytes());
        bytes(&self.sealed_at_ms.to_be_bytes());
        bytes(&self.first_seq.to_be_bytes());
        bytes(&self.last_seq.to_be_bytes());
        bytes(&self.head_hash);
        bytes(&self.merkle_root);
        bytes(self.node_id.as_bytes());
        bytes(self.clock.source.as_bytes());
        let opt = |v: Option<i64>| {
            v.map_or([0xff; 9], |n| {
                let mut b = [0u8; 9];
                b[1..].copy_from_slice(&n.to_be_bytes());
                b
            })
        };
        bytes(&opt(self.clock.synced.map(i64::from)));
        bytes(&opt(self.clock.max_error_us));
        bytes(&opt(self.clock.est_error_us));
        h.finalize().into()
    }

    /// Records this seal covers.
    pub fn len(&self) -> u64 {
        // i128: an altered seal may hold any two i64s.
        (i128::from(self.last_seq) - i128::from(self.first_seq) + 1).clamp(0, i128::from(u64::MAX)) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn row_to_seal(r: &rusqlite::Row<'_>) -> rusqlite::Result<Seal> {
    let hash = |i: usize| -> rusqlite::Result<Hash> {
        let v: Vec<u8> = r.get(i)?;
        Ok(v.try_into().unwrap_or([0xff; 32]))
    };
    Ok(Seal {
        id: r.get(0)?,
        sealed_at_ms: r.get(1)?,
        first_seq: r.get(2)?,
        last_seq: r.get(3)?,
        head_hash: hash(4)?,
        merkle_root: hash(5)?,
        node_id: r.get(6)?,
        clock: ClockState {
            source: r.get(7)?,
            synced: r.get::<_, Option<i64>>(8)?.map(|v| v != 0),
            max_error_us: r.get(9)?,
            est_error_us: r.get(10)?,
        },
        prev_seal_hash: hash(11)?,
        seal_hash: hash(12)?,
    })
}

pub(crate) const SEAL_COLUMNS: &str =
    "id, sealed_at_ms, first_seq, last_seq, head_hash, merkle_root, node_id,
    clock_source, clock_synced, clock_max_error_us, clock_est_error_us, prev_seal_hash, seal_hash";

/// Builds a Merkle root from record hashes streamed in order, in O(log n)
/// memory: the tree of n leaves is the perfect subtrees of n's binary
/// digits, merged right to left.
#[derive(Default)]
pub(crate) struct StreamingRoot {
    /// (height, root) of complete subtrees, left to right.
    stack: Vec<(u32, Hash)>,
    count: u64,
}

impl StreamingRoot {
    pub fn push(&mut self, record_hash: &Hash) {
        let mut cur = (0u32, merkle::root(std::slice::from_ref(record_hash)));
        while let Some(&(h, left)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, merkle_node(&left, &cur.1));
        }
        self.stack.push(cur);
        self.count += 1;
    }

    pub fn finish(mut self) -> Hash {
        let Some((_, mut r)) = self.stack.pop() else {
            return merkle::root(&[]);
        };
        while let Some((_, l)) = self.stack.pop() {
            r = merkle_node(&l, &r);
        }
        r
    }
}

fn merkle_node(l: &Hash, r: &Hash) -> Hash {
    // Same as merkle::root of two subtrees: 0x01 ‖ left ‖ right.
    let mut s = Sha256::new();
    s.update([1u8]);
    s.update(l);
    s.update(r);
    s.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_root_equals_the_recursive_one() {
        for n in 0..70usize {
            let leaves: Vec<Hash> = (0..n).map(|i| Sha256::digest(i.to_be_bytes()).into()).collect();
            let mut s = StreamingRoot::default();
            leaves.iter().for_each(|l| s.push(l));
            assert_eq!(s.finish(), merkle::root(&leaves), "n={n}");
        }
    }
}
