//! Data protection: raw addresses are kept only as long as configured.
//! Older ones are erased or replaced by a keyed pseudonym, HMAC-SHA256 of
//! the address under a key the operator holds: the same address always
//! gets the same pseudonym (so counts of distinct downloaders and repeat
//! downloads survive), and without the key nobody can test a guess.
//!
//! The chain commits to an address only through its salted commitment
//! ([`crate::chain`]), so dropping the address and its salt leaves every
//! record verifiable.

use crate::block::PackedAddress;
use crate::{LedgerError, LedgerStore};
use sha2::{Digest, Sha256};

/// What replaces an address past its retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retention {
    Erase,
    Pseudonym { key: Vec<u8> },
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| block.map(|k| k ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `pseudonym:` and 64 hex digits.
pub fn pseudonym(key: &[u8], ip: &str) -> String {
    let mac = hmac_sha256(key, ip.as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("pseudonym:{hex}")
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionOutcome {
    pub sessions: u64,
    pub interest_rows: u64,
    /// Whether the write-ahead log was emptied, so no older copy of a
    /// replaced address is left in it. False when another connection kept
    /// reading for over a second; the next run tries again.
    pub wal_emptied: bool,
    /// Blocks of records that could not be read (damaged or altered: `ledger
    /// verify` names them), whose addresses are left as they are; every
    /// other block is done.
    pub unreadable_blocks: Vec<i64>,
}

impl LedgerStore {
    /// Copies every committed page into the database and empties the WAL
    /// file: its older frames still hold the pages as they were before
    /// retention, addresses and salts included. It waits at most a second
    /// for readers (a running node's writer waits as long); whether it
    /// succeeded is returned, not an error: the replacements themselves
    /// are committed, and the next run tries again.
    fn scrub_wal(&mut self) -> bool {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
        let checkpoint = self.conn.busy_timeout(WAIT).and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))
        });
        let _ = self.conn.busy_timeout(std::time::Duration::from_secs(10));
        match checkpoint {
            Ok(0) => true,
            Ok(_) => {
                tracing::warn!(
                    "retention: the WAL could not be emptied (a reader kept it); the next run tries again"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: the WAL could not be emptied; the next run tries again");
                false
            }
        }
    }

    /// Replaces every address of records that started before `before_ms`:
    /// in sessions (in batches, so the writer is never held up for long;
    /// their city and coordinates go too) and in DHT interest (with its
    /// port and node id: a BEP 42 node id is derived from the address).
    pub fn retain(&mut self, before_ms: i64, how: &Retention) -> Result<RetentionOutcome, LedgerError> {
        // A few blocks a transaction, so the writer is never held up long.
        const BLOCKS: usize = 4;
        self.require_blocks()?;
        let replacement = |ip: &str| match how {
            Retention::Erase => crate::chain::ERASED_IP.to_string(),
            Retention::Pseudonym { key } => pseudonym(key, ip),
        };
        let mut outcome = RetentionOutcome::default();
        let mut after = 0i64;
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut replaced = 0u64;
            let (last, unreadable) =
                crate::blockstore::rewrite_blocks_before(&tx, before_ms, after, BLOCKS, |records| {
                    let mut changed = false;
                    for r in records.iter_mut() {
                        let PackedAddress::Raw { ip, .. } = r.address else {
                            continue;
                        };
                        if r.started_at_ms >= before_ms {
                            continue;
                        }
                        r.address = match how {
                            Retention::Erase => PackedAddress::Erased,
                            Retention::Pseudonym { key } => {
                                PackedAddress::Pseudonym(hmac_sha256(key, ip.to_string().as_bytes()))
                            }
                        };
                        // The place goes down to country and kommune: a city
                        // and coordinates could point back to a subscriber.
                        r.geo.city = None;
                        r.geo.latitude = None;
                        r.geo.longitude = None;
                        r.geo.accuracy_km = None;
                        replaced += 1;
                        changed = true;
                    }
                    changed
                })?;
            if replaced > 0 && matches!(how, Retention::Pseudonym { .. }) {
                crate::store::mark_pseudonyms(&tx)?;
            }
            tx.commit()?;
            outcome.sessions += replaced;
            outcome.unreadable_blocks.extend(unreadable);
            match last {
                Some(seq) => after = seq,
                None => break,
            }
        }
        if let Some(first) = outcome.unreadable_blocks.first() {
            tracing::error!(
                blocks = outcome.unreadable_blocks.len(),
                first_seq = first,
                "retention: blocks of records could not be read and keep their addresses; run `warnseed ledger verify`"
            );
        }
        // Interest rows are statistics beside the chain: same rule. Erased
        // addresses of one minute, info hash and query fold into one row.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        type InterestKey = (i64, Vec<u8>, String, String);
        let rows: Vec<InterestKey> = tx
            .prepare(
                "SELECT minute, info_hash, remote_ip, query FROM dht_interest WHERE minute < ?1
                 AND remote_ip != '*' AND remote_ip != 'erased' AND remote_ip NOT LIKE 'pseudonym:%'",
            )?
            .query_map([before_ms.div_euclid(60_000)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        {
            let mut fold = tx.prepare(
                "INSERT INTO dht_interest (minute, info_hash, remote_ip, query, remote_port, node_id, first_ms, last_ms, count)
                 SELECT minute, info_hash, ?5, query, 0, NULL, first_ms, last_ms, count FROM dht_interest
                 WHERE minute = ?1 AND info_hash = ?2 AND remote_ip = ?3 AND query = ?4 AND true
                 ON CONFLICT (minute, info_hash, remote_ip, query) DO UPDATE SET
                    count = count + excluded.count,
                    first_ms = min(first_ms, excluded.first_ms),
                    last_ms = max(last_ms, excluded.last_ms)",
            )?;
            let mut delete = tx.prepare(
                "DELETE FROM dht_interest WHERE minute = ?1 AND info_hash = ?2 AND remote_ip = ?3 AND query = ?4",
            )?;
            for (minute, info_hash, ip, query) in &rows {
                fold.execute(rusqlite::params![minute, info_hash, ip, query, replacement(ip)])?;
                delete.execute(rusqlite::params![minute, info_hash, ip, query])?;
            }
        }
        tx.commit()?;
        outcome.interest_rows = rows.len() as u64;
        // Every run, not only those that replaced something: an earlier
        // run's checkpoint may have been kept from finishing.
        outcome.wal_emptied = self.scrub_wal();
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: key "Jefe", data "what do ya want for nothing?".
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
