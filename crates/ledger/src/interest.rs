//! DHT interest: queries other nodes send us that name one of our decoys
//! (get_peers, announce_peer, samples that include it). They are not
//! downloads, so they are not in the hash chain; they are counted, one row
//! per UTC minute, info hash, address and query, so a flood costs rows per
//! distinct querier, not per packet. [`InterestAggregator`] folds events in
//! memory for a minute, with a cap on distinct keys (the rest are counted
//! in one overflow row per minute and info hash, address `*`).

use crate::{LedgerError, LedgerStore};
use rusqlite::params;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dht_interest (
    minute INTEGER NOT NULL,      -- UTC minutes since the Unix epoch
    info_hash BLOB NOT NULL,
    remote_ip TEXT NOT NULL,      -- '*' for the overflow row
    query TEXT NOT NULL,
    remote_port INTEGER NOT NULL, -- the last one seen
    node_id BLOB,                 -- the last one seen
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, info_hash, remote_ip, query)
) WITHOUT ROWID;
";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterestRow {
    pub minute: i64,
    pub info_hash: [u8; 20],
    /// `None` for the overflow row.
    pub remote: Option<SocketAddr>,
    pub query: &'static str,
    pub node_id: Option<[u8; 20]>,
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u64,
}

type Key = (i64, [u8; 20], Option<IpAddr>, &'static str);

/// Folds interest events into per-minute rows, bounded.
pub struct InterestAggregator {
    rows: HashMap<Key, InterestRow>,
    max_keys: usize,
}

impl InterestAggregator {
    pub fn new(max_keys: usize) -> Self {
        Self {
            rows: HashMap::new(),
            max_keys,
        }
    }

    pub fn record(
        &mut self,
        at_ms: i64,
        info_hash: [u8; 20],
        from: SocketAddr,
        node_id: [u8; 20],
        query: &'static str,
    ) {
        let minute = at_ms.div_euclid(60_000);
        let ip = crate::store::canonical_ip(from.ip());
        let full = self.rows.len() >= self.max_keys;
        let key: Key = (minute, info_hash, Some(ip), query);
        let key = if full && !self.rows.contains_key(&key) {
            (minute, info_hash, None, query)
        } else {
            key
        };
        let overflow = key.2.is_none();
        let row = self.rows.entry(key).or_insert(InterestRow {
            minute,
            info_hash,
            remote: (!overflow).then_some(SocketAddr::new(ip, from.port())),
            query,
            node_id: (!overflow).then_some(node_id),
            first_ms: at_ms,
            last_ms: at_ms,
            count: 0,
        });
        row.count += 1;
        row.first_ms = row.first_ms.min(at_ms);
        row.last_ms = row.last_ms.max(at_ms);
        if !overflow {
            row.remote = Some(SocketAddr::new(ip, from.port()));
            row.node_id = Some(node_id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Everything gathered so far, leaving the aggregator empty.
    pub fn take(&mut self) -> Vec<InterestRow> {
        self.rows.drain().map(|(_, r)| r).collect()
    }
}

impl LedgerStore {
    /// Adds interest rows (counts add up with rows already stored for the
    /// same minute, info hash, address and query), in one transaction.
    /// Adds `rows` to the ledger at `path` beside a running node's writer:
    /// the file is opened only for this (no conversion, no aggregates
    /// brought up to date: the writer keeps those, and a catch-up here
    /// would read the year's distinct addresses every minute and make the
    /// writer read them again).
    pub fn add_interest_at(path: &std::path::Path, rows: &[InterestRow]) -> Result<(), LedgerError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(SCHEMA)?;
        LedgerStore::unkeyed_for_interest(conn).add_interest(rows)
    }

    pub fn add_interest(&mut self, rows: &[InterestRow]) -> Result<(), LedgerError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO dht_interest
                    (minute, info_hash, remote_ip, query, remote_port, node_id, first_ms, last_ms, count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (minute, info_hash, remote_ip, query) DO UPDATE SET
                    remote_port = excluded.remote_port,
                    node_id = excluded.node_id,
                    first_ms = min(first_ms, excluded.first_ms),
                    last_ms = max(last_ms, excluded.last_ms),
                    count = count + excluded.count",
            )?;
            for r in rows {
                stmt.execute(params![
                    r.minute,
                    &r.info_hash[..],
                    r.remote.map_or("*".to_owned(), |a| a.ip().to_string()),
                    r.query,
                    r.remote.map_or(0, |a| a.port()),
                    r.node_id.as_ref().map(|n| &n[..]),
                    r.first_ms,
                    r.last_ms,
                    r.count as i64,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Interest totals: (queries, distinct addresses, distinct info hashes).
    pub fn interest_totals(&self) -> Result<(u64, u64, u64), LedgerError> {
        Ok(self.conn.query_row(
            "SELECT coalesce(sum(count), 0),
                    (SELECT count(DISTINCT remote_ip) FROM dht_interest WHERE remote_ip != '*'),
                    count(DISTINCT info_hash)
             FROM dht_interest",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_folds_into_rows_per_minute_and_querier_and_overflows_past_the_cap() {
        let mut agg = InterestAggregator::new(3);
        let t = 1_800_000_000_000i64;
        let from = |i: u8| SocketAddr::from(([10, 77, 0, i], 6881));
        for _ in 0..1000 {
            agg.record(t, [1; 20], from(1), [9; 20], "get_peers");
        }
        agg.record(t + 61_000, [1; 20], from(1), [9; 20], "get_peers");
        agg.record(t, [1; 20], from(2), [9; 20], "announce_peer");
        for i in 3..50 {
            agg.record(t, [1; 20], from(i), [9; 20], "get_peers");
        }
        let rows = agg.take();
        assert!(agg.is_empty());
        assert_eq!(rows.len(), 4, "three keys and one overflow row: {rows:?}");
        let total: u64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(total, 1000 + 1 + 1 + 47);
        let overflow = rows.iter().find(|r| r.remote.is_none()).unwrap();
        assert_eq!(overflow.count, 47);

        let dir = tempfile::tempdir().unwrap();
        let mut store = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
        store.add_interest(&rows).unwrap();
        store.add_interest(&rows).unwrap();
        assert_eq!(store.interest_totals().unwrap(), (2 * total, 2, 1));
        // Interest is beside the chain: the chain still verifies.
        assert!(store.verify().unwrap().first_bad.is_none());
    }
}
