//! A Merkle tree over record hashes (the RFC 6962 construction: domain-
//! separated leaves and nodes, the split at the largest power of two below
//! the size). A seal commits to the records it covers by their root, so one
//! record can be proven part of the ledger with a logarithmic path of
//! hashes and nothing about the other records.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

fn leaf(h: &Hash) -> Hash {
    let mut s = Sha256::new();
    s.update([0u8]);
    s.update(h);
    s.finalize().into()
}

fn node(l: &Hash, r: &Hash) -> Hash {
    let mut s = Sha256::new();
    s.update([1u8]);
    s.update(l);
    s.update(r);
    s.finalize().into()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root over `leaves` (record hashes, in order). The empty tree's root
/// is SHA-256 of nothing.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaf(&leaves[0]),
        n => {
            let k = split(n);
            node(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path proving `leaves[index]` is under `root(leaves)`, from the
/// leaf's sibling up.
pub fn proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    assert!(index < leaves.len(), "index inside the tree");
    let mut path = Vec::new();
    let (mut lo, mut hi, mut i) = (0usize, leaves.len(), index);
    // Walk down, remembering the sibling subtree at each level.
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if i < k {
            siblings.push(root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            siblings.push(root(&leaves[lo..lo + k]));
            lo += k;
            i -= k;
        }
    }
    while let Some(s) = siblings.pop() {
        path.push(s);
    }
    path
}

/// Audit paths for several leaves at once, each subtree hashed once:
/// O(n) for any number of leaves (one `proof` per leaf is O(n) each).
/// `indices` must be inside the tree; paths come back in their order.
pub fn proofs(leaves: &[Hash], indices: &[usize]) -> Vec<Vec<Hash>> {
    let mut paths: Vec<Vec<Hash>> = vec![Vec::new(); indices.len()];
    // Paths are built leaf-up, so collect siblings top-down, then reverse.
    fn walk(
        leaves: &[Hash],
        lo: usize,
        hi: usize,
        wanted: &[(usize, usize)],
        paths: &mut [Vec<Hash>],
    ) -> Hash {
        if wanted.is_empty() {
            return root(&leaves[lo..hi]);
        }
        if hi - lo == 1 {
            return root(&leaves[lo..hi]);
        }
        let k = lo + split(hi - lo);
        // (leaf index, slot in `paths`) on each side of the split.
        type Wanted = Vec<(usize, usize)>;
        let (left, right): (Wanted, Wanted) = wanted.iter().partition(|w| w.0 < k);
        let l = walk(leaves, lo, k, &left, paths);
        let r = walk(leaves, k, hi, &right, paths);
        for &(_, slot) in &left {
            paths[slot].push(r);
        }
        for &(_, slot) in &right {
            paths[slot].push(l);
        }
        node(&l, &r)
    }
    let wanted: Vec<(usize, usize)> = indices.iter().enumerate().map(|(slot, &i)| (i, slot)).collect();
    assert!(
        indices.iter().all(|&i| i < leaves.len()),
        "indices inside the tree"
    );
    if !leaves.is_empty() {
        walk(leaves, 0, leaves.len(), &wanted, &mut paths);
    }
    paths
}

/// Recomputes the root from one record hash, its index, the tree size and
/// its audit path (RFC 9162 §2.1.3.2), or `None` if the path does not fit.
pub fn root_from_proof(record_hash: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf(record_hash);
    for p in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| Sha256::digest(i.to_be_bytes()).into()).collect()
    }

    #[test]
    fn every_proof_leads_to_the_root_and_no_other_leaf_does() {
        for n in 1..=40 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = proof(&l, i);
                assert_eq!(
                    root_from_proof(&l[i], i as u64, n as u64, &p),
                    Some(r),
                    "n={n} i={i}"
                );
                // The same path does not prove another record or position.
                let other = Sha256::digest(b"x").into();
                assert_ne!(root_from_proof(&other, i as u64, n as u64, &p), Some(r));
                if n > 1 {
                    let j = (i + 1) % n;
                    assert_ne!(
                        root_from_proof(&l[i], j as u64, n as u64, &p),
                        Some(r),
                        "n={n} i={i}"
                    );
                }
            }
        }
    }

    #[test]
    fn batch_proofs_equal_single_proofs() {
        for n in [1usize, 2, 3, 7, 8, 9, 33] {
            let l = leaves(n);
            let all: Vec<usize> = (0..n).rev().collect();
            let batch = proofs(&l, &all);
            for (k, &i) in all.iter().enumerate() {
                assert_eq!(batch[k], proof(&l, i), "n={n} i={i}");
            }
        }
    }

    #[test]
    fn a_changed_leaf_changes_the_root() {
        let mut l = leaves(7);
        let r = root(&l);
        l[3][0] ^= 1;
        assert_ne!(root(&l), r);
    }
}
