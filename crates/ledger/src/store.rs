use crate::block::{PackedAddress, PackedGeo, PackedRecord};
use crate::blockstore;
use crate::chain::{self, GENESIS};
use crate::clock::ClockState;
use crate::geo::{Enricher, GeoFields};
use crate::merkle::Hash;
use crate::rollup::{Plan, RollupRow};
use crate::seal::{row_to_seal, Seal, StreamingRoot, SEAL_COLUMNS};
use crate::{LedgerError, SessionRecord};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// The page cache of a store's connection, KiB.
const CACHE_KIB: i64 = 65_536;
/// WAL pages after which a commit checkpoints (SQLite's default: 1000).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_000;

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
    /// Sessions opened but never closed: the node stopped without a
    /// graceful shutdown while they ran.
    pub unterminated: u64,
    /// Files delivered: downloads (not seeds reconnecting) that ended with
    /// every piece.
    pub completed: u64,
    /// Distinct stored addresses (raw or pseudonym); erased ones are not
    /// counted.
    pub unique_ips: u64,
    pub bytes_sent: u64,
    pub first_session_ms: Option<i64>,
    pub last_session_ms: Option<i64>,
}

pub struct LedgerStore {
    pub(crate) conn: Connection,
    /// Keys addresses in the aggregates (HMAC, first 16 bytes).
    ip_key_secret: Vec<u8>,
    /// The same HMAC with its key blocks hashed once.
    ip_keyer: IpKeyer,
    enricher: Option<Box<dyn Enricher>>,
    /// Aggregate rows this store has seen committed (a cache).
    /// The distinct-address members this store's writes go by.
    unique_sets: crate::uniques::UniqueSets,
}

/// The first record that fails verification, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BadRecord {
    pub seq: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    pub node_id: String,
    pub records: u64,
    pub last_seq: i64,
    pub last_hash: String,
    pub seals: u64,
    /// The newest seal's hash: keep it elsewhere to anchor the ledger.
    pub last_seal_hash: Option<String>,
    /// Records after the newest seal (sealed within a minute by a running
    /// node, or at its next start).
    pub unsealed: u64,
    pub first_bad: Option<BadRecord>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl LedgerStore {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        // A ledger of the first layout (a row per record) is converted to
        // blocks ([`crate::legacy`]), but only once it verifies and every
        // record can be converted: one that cannot is refused before
        // anything is written to it, and stays as found for whoever
        // examines it. Checked read-only: a read-write connection would
        // copy a leftover write-ahead log into the file when it closes.
        let first_layout = match Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            // No file yet: a new ledger. Any other failure is one the
            // read-write open must not go past (it would skip converting).
            Err(_) if !path.exists() => false,
            Err(e) => return Err(e.into()),
            Ok(read_only) => {
                read_only.busy_timeout(std::time::Duration::from_secs(10))?;
                let check = Self::unkeyed(read_only);
                let first_layout = check.is_first_layout()?;
                if first_layout {
                    // CREATE TABLE IF NOT EXISTS would keep an even older
                    // table as it is.
                    crate::legacy::check_columns(&check.conn)?;
                    if let Some(bad) = check.verify()?.first_bad {
                        return Err(crate::legacy::refusal(&bad));
                    }
                    crate::legacy::check_convertible(&check.conn)?;
                }
                first_layout
            }
        };
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed batch survives power loss, not just a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Every batch inserts at random places in the address and session
        // key indexes and the aggregates; with SQLite's default 2 MiB page
        // cache those pages are read back from the OS and spilled to the
        // WAL mid-transaction. 64 MiB (allocated only as pages are used)
        // keeps the hot pages, and checkpointing every 64 MiB of WAL instead
        // of 4 MiB copies a page rewritten by several commits to the
        // database once. Neither changes what a commit guarantees.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        // Retention replaces addresses in place; without this SQLite leaves
        // the old bytes in the page's free space and in freed pages, where
        // anyone holding the file could read an erased address back.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(blockstore::SCHEMA)?;
        conn.execute_batch(crate::interest::SCHEMA)?;
        conn.execute_batch(crate::seal::SCHEMA)?;
        conn.execute_batch(crate::rollup::SQLITE_SCHEMA)?;
        conn.execute_batch(crate::uniques::SCHEMA)?;
        // The node's identity in seals, exports and a fleet's store: drawn
        // once, with the ledger.
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the operating system provides randomness");
        conn.execute(
            "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('node_id', ?1)",
            [hex(&id)],
        )?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system provides randomness");
        conn.execute(
            "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('ip_key_secret', ?1)",
            [hex(&secret)],
        )?;
        let secret: String = conn.query_row(
            "SELECT value FROM ledger_meta WHERE key = 'ip_key_secret'",
            [],
            |r| r.get(0),
        )?;
        let mut store = Self {
            conn,
            ip_keyer: IpKeyer::new(secret.as_bytes()),
            ip_key_secret: secret.into_bytes(),
            enricher: None,
            unique_sets: Default::default(),
        };
        if first_layout {
            let converted = crate::legacy::convert(&mut store.conn)?;
            tracing::info!(records = converted, "ledger converted to blocks");
        }
        // An older warnseed opening this ledger would make a `sessions`
        // table and start a second chain beside the blocks; with this view
        // in the way it refuses the file instead.
        store.conn.execute_batch(
            "CREATE VIEW IF NOT EXISTS sessions AS SELECT 'records are in record_blocks' AS layout_of_a_newer_warnseed",
        )?;
        let moved = crate::uniques::move_rows_to_runs(&mut store.conn)?;
        if moved > 0 {
            tracing::info!(members = moved, "distinct-address aggregates moved into runs");
        }
        store.catch_up_rollups()?;
        store.backfill_repeat_periods()?;
        Ok(store)
    }

    /// A store on `conn` for DHT interest rows only.
    pub(crate) fn unkeyed_for_interest(conn: Connection) -> Self {
        Self::unkeyed(conn)
    }

    /// A store on `conn` with no key for the aggregates (reading only).
    fn unkeyed(conn: Connection) -> Self {
        Self {
            conn,
            ip_key_secret: Vec::new(),
            ip_keyer: IpKeyer::new(&[]),
            enricher: None,
            unique_sets: Default::default(),
        }
    }

    /// Whether the records are still in the first layout's `sessions`
    /// table (a ledger opened read-only, or being converted).
    fn is_first_layout(&self) -> Result<bool, LedgerError> {
        self.has_table("sessions")
    }

    /// Refuses what only the block layout can do, for a ledger of the
    /// first layout opened read-only.
    pub(crate) fn require_blocks(&self) -> Result<(), LedgerError> {
        if self.is_first_layout()? {
            return Err(LedgerError::Io(
                "this ledger has the layout of an older warnseed: `warnseed ledger verify` reads it as it is; \
                 anything else needs it converted first, which any command that opens it writable does \
                 (e.g. `warnseed init --data DIR`, which changes nothing else)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Once per ledger: repeat downloaders kept per period
    /// ([`crate::rollup::backfill_repeat_periods`]) for a ledger that kept
    /// them per day only. Marked done in `ledger_meta`.
    fn backfill_repeat_periods(&mut self) -> Result<(), LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool = tx.query_row(
            "SELECT count(*) > 0 FROM ledger_meta WHERE key = 'repeat_periods'",
            [],
            |r| r.get(0),
        )?;
        if !done {
            let added = crate::rollup::backfill_repeat_periods(&tx, &mut self.unique_sets)?;
            tx.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('repeat_periods', 'kept')",
                [],
            )?;
            if added > 0 {
                tracing::info!(rows = added, "repeat downloaders now kept per period");
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether repeat downloaders are kept per period here (a ledger from
    /// before that, opened read-only, has them per day only).
    pub(crate) fn has_repeat_periods(&self) -> Result<bool, LedgerError> {
        if !self.has_table("ledger_meta")? {
            return Ok(false);
        }
        Ok(self.conn.query_row(
            "SELECT count(*) > 0 FROM ledger_meta WHERE key = 'repeat_periods'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Keys addresses in the aggregates with `secret` instead of this
    /// ledger's own (nodes of a fleet share one, so a downloader seen by
    /// two nodes counts once). Aggregates already written keep their keys.
    pub fn set_ip_key_secret(&mut self, secret: &[u8]) {
        self.ip_key_secret = secret.to_vec();
        self.ip_keyer = IpKeyer::new(secret);
    }

    /// Looks up every new record's address (geolocation) as it is written.
    pub fn set_enricher(&mut self, enricher: Box<dyn Enricher>) {
        self.enricher = Some(enricher);
    }

    /// The aggregates' key of an address.
    pub fn ip_key(&self, ip: &str) -> [u8; 16] {
        ip_key(&self.ip_key_secret, ip)
    }

    /// Brings the aggregates up to the newest record: they are written with
    /// each batch, so this only runs for a ledger written before they
    /// existed (records with erased addresses count in sessions and
    /// downloads, not as addresses: [`RollupRow::address_known`]).
    fn catch_up_rollups(&mut self) -> Result<(), LedgerError> {
        loop {
            // Read and advance the mark inside one write transaction, so a
            // writer (or another reader catching up) cannot slip records
            // in between and have them counted twice.
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let through = rollups_through(&tx)?;
            let last = match blockstore::head(&tx) {
                Ok(head) => head.last_seq,
                // Reports still read what is there; appending is refused
                // (the writer stops with the same error).
                Err(e) => {
                    tracing::warn!(error = %e, "aggregates not brought up to date");
                    return Ok(());
                }
            };
            // The next stored record after the mark: deleted blocks leave
            // gaps, and rolling up empty ranges 50,000 at a time across
            // one could take for ever.
            let next: Option<i64> = tx.query_row(
                "SELECT min(first_seq) FROM record_blocks WHERE last_seq > ?1",
                [through],
                |r| r.get(0),
            )?;
            let Some(from) = next.map(|n| n.max(through + 1)).filter(|&f| f <= last) else {
                return Ok(());
            };
            let to = from.saturating_add(49_999).min(last);
            roll_up_range(&tx, &self.ip_key_secret, &mut self.unique_sets, from, to)?;
            tx.commit()?;
        }
    }

    /// Opens a ledger without writing anything to it (no schema, no
    /// aggregates, WAL mode as found), for checking a copy handed over as
    /// evidence: `verify` and the read-only reports work.
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self::unkeyed(conn))
    }

    fn has_table(&self, name: &str) -> Result<bool, LedgerError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?)
    }

    /// This ledger's node id (32 hex digits); `unknown` for a ledger from
    /// before node ids, opened read-only.
    pub fn node_id(&self) -> Result<String, LedgerError> {
        if !self.has_table("ledger_meta")? {
            return Ok("unknown".into());
        }
        Ok(self
            .conn
            .query_row("SELECT value FROM ledger_meta WHERE key = 'node_id'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_else(|| "unknown".into()))
    }

    /// The stored address of records `seqs` (erased, a pseudonym or raw).
    pub fn addresses(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>, LedgerError> {
        self.require_blocks()?;
        let mut wanted: Vec<i64> = seqs.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = std::collections::HashMap::with_capacity(wanted.len());
        // Seqs close together are read in one pass, so each block is
        // decoded once.
        let mut i = 0;
        while i < wanted.len() {
            let mut j = i + 1;
            while j < wanted.len() && wanted[j] - wanted[j - 1] < crate::block::MAX_BLOCK_RECORDS as i64 {
                j += 1;
            }
            let run = &wanted[i..j];
            blockstore::for_each_seq(&self.conn, run[0], run[run.len() - 1], |seq, _, r| {
                if run.binary_search(&seq).is_ok() {
                    found.insert(seq, blockstore::address_text(&r.address));
                }
                Ok(())
            })?;
            i = j;
        }
        Ok(seqs
            .iter()
            .filter_map(|seq| found.get(seq).map(|ip| (*seq, ip.clone())))
            .collect())
    }

    /// Whether any address was replaced by a pseudonym (the key that made
    /// it must then not be replaced silently).
    pub fn has_pseudonyms(&self) -> Result<bool, LedgerError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM ledger_meta WHERE key = 'pseudonyms')",
            [],
            |r| r.get(0),
        )?)
    }

    /// Seals the records since the last seal, if there are any, and returns
    /// the new seal.
    pub fn seal(&mut self, clock: &ClockState, now_ms: i64) -> Result<Option<Seal>, LedgerError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last = tx
            .query_row(
                &format!("SELECT {SEAL_COLUMNS} FROM seals ORDER BY id DESC LIMIT 1"),
                [],
                row_to_seal,
            )
            .optional()?;
        let first_seq = last.as_ref().map_or(1, |s| s.last_seq + 1);
        let mut root = StreamingRoot::default();
        let mut head = None;
        blockstore::for_each_seq(&tx, first_seq, i64::MAX, |seq, _, r| {
            root.push(&r.record_hash);
            head = Some((seq, r.record_hash));
            Ok(())
        })?;
        let Some((last_seq, head_hash)) = head else {
            return Ok(None);
        };
        let node_id: String =
            tx.query_row("SELECT value FROM ledger_meta WHERE key = 'node_id'", [], |r| {
                r.get(0)
            })?;
        let mut seal = Seal {
            id: last.as_ref().map_or(1, |s| s.id + 1),
            sealed_at_ms: now_ms,
            first_seq,
            last_seq,
            head_hash,
            merkle_root: root.finish(),
            node_id,
            clock: clock.clone(),
            prev_seal_hash: last.map_or(GENESIS, |s| s.seal_hash),
            seal_hash: [0; 32],
        };
        seal.seal_hash = seal.compute_hash();
        tx.execute(
            &format!(
                "INSERT INTO seals ({SEAL_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
            ),
            params![
                seal.id,
                seal.sealed_at_ms,
                seal.first_seq,
                seal.last_seq,
                &seal.head_hash[..],
                &seal.merkle_root[..],
                seal.node_id,
                seal.clock.source,
                seal.clock.synced,
                seal.clock.max_error_us,
                seal.clock.est_error_us,
                &seal.prev_seal_hash[..],
                &seal.seal_hash[..],
            ],
        )?;
        tx.commit()?;
        Ok(Some(seal))
    }

    /// The seals up to the first row that cannot be read as one, and that
    /// row as a bad seal at the first record after the seals before it.
    fn seals_as_found(&self) -> Result<(Vec<Seal>, Option<BadRecord>), LedgerError> {
        if !self.has_table("seals")? {
            return Ok((Vec::new(), None));
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SEAL_COLUMNS} FROM seals ORDER BY id"))?;
        let mut rows = stmt.query([])?;
        let mut seals: Vec<Seal> = Vec::new();
        while let Some(r) = rows.next()? {
            match row_to_seal(r) {
                Ok(s) => seals.push(s),
                Err(e) => {
                    let id: rusqlite::types::Value = r.get(0)?;
                    let seq = seals.last().map_or(1, |s| s.last_seq.saturating_add(1));
                    let reason = format!("seal row {id:?} unreadable ({e}): altered");
                    return Ok((seals, Some(BadRecord { seq, reason })));
                }
            }
        }
        Ok((seals, None))
    }

    /// Every seal, oldest first.
    pub fn seals(&self) -> Result<Vec<Seal>, LedgerError> {
        if !self.has_table("seals")? {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SEAL_COLUMNS} FROM seals ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_seal)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends records in one transaction, each chained to the one before.
    pub fn append(&mut self, batch: &[SessionRecord]) -> Result<(), LedgerError> {
        self.commit_batch(batch, &UnrolledRecords::default(), true)
            .map(|_| ())
    }

    /// Commits `batch` as [`LedgerStore::append`] does, but leaves its
    /// aggregates for later unless `roll_up`: the records are added to
    /// `unrolled`, and a later call with `roll_up` (or
    /// [`LedgerStore::roll_up`]) adds them all in one go. The writer uses
    /// this under load: each commit rewrites every aggregate page it
    /// touches (a row per title a day, an address's distinct rows), so
    /// rolling up a second of commits at once writes those pages once
    /// instead of ten times. Until then the records are in the chain and
    /// the aggregates lag; a crash loses nothing, since any writable open
    /// rolls up what the mark has not reached.
    pub fn append_deferring(
        &mut self,
        batch: &mut Vec<SessionRecord>,
        unrolled: &mut UnrolledRecords,
        roll_up: bool,
    ) -> Result<(), LedgerError> {
        let (first_seq, keys, rolled_up) = self.commit_batch(batch, unrolled, roll_up)?;
        if rolled_up {
            unrolled.clear();
            batch.clear();
        } else {
            if unrolled.records.is_empty() {
                unrolled.first_seq = first_seq;
                unrolled.since = Some(std::time::Instant::now());
            }
            unrolled.records.append(batch);
            unrolled.keys.extend(keys);
        }
        Ok(())
    }

    /// Adds the aggregates of `unrolled` (see
    /// [`LedgerStore::append_deferring`]) and empties it.
    pub fn roll_up(&mut self, unrolled: &mut UnrolledRecords) -> Result<(), LedgerError> {
        self.append_deferring(&mut Vec::new(), unrolled, true)
    }

    /// One transaction: `batch` appended to the chain, and with `roll_up`
    /// the aggregates of `unrolled` and `batch` added. Returns the batch's
    /// first sequence number, each record's address key and place, and
    /// whether the aggregates were added (also without `roll_up`, when
    /// another process's records follow `unrolled`).
    fn commit_batch(
        &mut self,
        batch: &[SessionRecord],
        unrolled: &UnrolledRecords,
        roll_up: bool,
    ) -> Result<(i64, Vec<AddressFacts>, bool), LedgerError> {
        // IMMEDIATE takes the write lock first, so the head read below is
        // the true end of the chain even if another process appended.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let through = rollups_through(&tx)?;
        let chain_end = blockstore::head(&tx)?;
        let mut head = (chain_end.last_seq, chain_end.last_hash);
        let first_seq = head.0 + 1;
        // Records the mark has not reached and `unrolled` does not hold
        // (another process's, or an older version's) are rolled up first,
        // so the mark never skips any. Records of `unrolled` that another
        // process already rolled up (any writable open catches up) are
        // skipped below, so none counts twice.
        let unrolled_from = if unrolled.records.is_empty() {
            first_seq
        } else {
            unrolled.first_seq
        };
        if through + 1 < unrolled_from {
            roll_up_range(
                &tx,
                &self.ip_key_secret,
                &mut self.unique_sets,
                through + 1,
                unrolled_from - 1,
            )?;
        }
        let through = through.max(unrolled_from - 1);
        // Another process appended after `unrolled` (a second writer on the
        // same file): everything is rolled up now, so the mark never jumps
        // over its records.
        let unrolled_end = unrolled_from + unrolled.records.len() as i64;
        let gap = !unrolled.records.is_empty() && unrolled_end != first_seq;
        let roll_up = roll_up || gap;
        let keys = {
            let mut keys: Vec<AddressFacts> = Vec::with_capacity(batch.len());
            // Every record's own random salt, drawn in one call.
            let mut salts = vec![0u8; 16 * batch.len()];
            getrandom::fill(&mut salts).expect("the operating system provides randomness");
            // (address, commitment, record hash) of each record.
            let mut chained: Vec<(IpAddr, [u8; 32], Hash)> = Vec::with_capacity(batch.len());
            let mut ip = String::with_capacity(48);
            for (r, salt) in batch.iter().zip(salts.chunks_exact(16)) {
                let seq = head.0 + 1;
                let address = canonical_ip(r.remote_ip);
                ip.clear();
                write!(ip, "{address}").expect("writing to a String");
                let geo = match &self.enricher {
                    Some(e) => e.enrich(address),
                    None => GeoFields::default(),
                };
                keys.push((self.ip_keyer.key(&ip), geo));
                let commitment = chain::ip_commitment(salt, &ip);
                let hash = chain::record_hash(&head.1, &r.chained_fields(seq, &commitment));
                chained.push((address, commitment, hash));
                head = (seq, hash);
            }
            let packed: Vec<PackedRecord<'_>> = batch
                .iter()
                .zip(&chained)
                .zip(salts.chunks_exact(16))
                .zip(&keys)
                .map(|(((r, (ip, commitment, hash)), salt), (_, geo))| PackedRecord {
                    kind: r.kind,
                    session_key: r.session_key,
                    started_at_ms: r.started_at_ms,
                    ended_at_ms: r.ended_at_ms,
                    network: r.network,
                    decoy_id: r.decoy_id,
                    info_hash: r.info_hash,
                    address: PackedAddress::Raw {
                        ip: *ip,
                        salt: salt.try_into().expect("16 bytes"),
                    },
                    ip_commitment: *commitment,
                    remote_port: r.remote_port,
                    peer_id: r.peer_id,
                    client_name: r.client_name.as_deref(),
                    client_version: r.client_version.as_deref(),
                    transport: r.transport.as_str(),
                    bytes_sent: r.bytes_sent,
                    pieces_sent: r.pieces_sent,
                    piece_count: r.piece_count,
                    peer_pieces_initial: r.peer_pieces_initial,
                    peer_pieces_final: r.peer_pieces_final,
                    completed: r.completed,
                    close_reason: &r.close_reason,
                    record_hash: *hash,
                    geo: PackedGeo::from_fields(geo),
                })
                .collect();
            blockstore::append(&tx, &chain_end, &packed)?;
            drop(packed);
            if roll_up {
                let skip = usize::try_from(through + 1 - unrolled_from).unwrap_or(0);
                let pending = unrolled.records.iter().zip(&unrolled.keys).skip(skip);
                if gap {
                    // In sequence order: ours, the other process's, ours.
                    let inputs: Vec<RollupRow<'_>> = pending
                        .map(|(r, (ip_key, geo))| rollup_row(r, *ip_key, geo))
                        .collect();
                    crate::rollup::apply_sqlite_sets(&tx, &Plan::new(&inputs), &mut self.unique_sets)?;
                    let from = unrolled_end.max(through + 1);
                    if from < first_seq {
                        roll_up_range(
                            &tx,
                            &self.ip_key_secret,
                            &mut self.unique_sets,
                            from,
                            first_seq - 1,
                        )?;
                    }
                    let inputs: Vec<RollupRow<'_>> = batch
                        .iter()
                        .zip(&keys)
                        .map(|(r, (ip_key, geo))| rollup_row(r, *ip_key, geo))
                        .collect();
                    crate::rollup::apply_sqlite_sets(&tx, &Plan::new(&inputs), &mut self.unique_sets)?;
                } else {
                    let inputs: Vec<RollupRow<'_>> = pending
                        .chain(batch.iter().zip(&keys))
                        .map(|(r, (ip_key, geo))| rollup_row(r, *ip_key, geo))
                        .collect();
                    crate::rollup::apply_sqlite_sets(&tx, &Plan::new(&inputs), &mut self.unique_sets)?;
                }
                tx.execute(
                    "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('rollups_through', ?1)",
                    [head.0.to_string()],
                )?;
            }
            keys
        };
        tx.commit()?;
        Ok((first_seq, keys, roll_up))
    }

    /// Walks the whole chain in order and reports the first record that is
    /// missing, out of place, altered or inserted.
    pub fn verify(&self) -> Result<Verification, LedgerError> {
        // A seal row whose values are not what a seal holds (text in a
        // number column, say) was altered: it is reported as a bad seal,
        // not as an error reading the database.
        let (seals, unreadable) = self.seals_as_found()?;
        let node_id = self.node_id()?;
        let (mut sealing, mut bad_seal) = SealCheck::new(&seals, &node_id);
        if bad_seal.is_none() {
            bad_seal = unreadable;
        }
        let walk = if self.is_first_layout()? {
            crate::legacy::walk(&self.conn, &mut sealing)?
        } else {
            self.walk_blocks(&mut sealing)?
        };
        let last_seq = walk.last_seq;
        let mut first_bad = walk.first_bad;
        if first_bad.is_none() {
            first_bad = sealing.finish(last_seq);
        }
        // The earliest problem wins: a bad seal is reported at the first
        // record of its range.
        if let Some(seal) = bad_seal {
            if first_bad.as_ref().is_none_or(|b| seal.seq <= b.seq) {
                first_bad = Some(seal);
            }
        }
        let sealed_to = seals.last().map_or(0, |s| s.last_seq);
        Ok(Verification {
            node_id,
            records: walk.records,
            last_seq,
            last_hash: hex(&walk.last_hash),
            seals: seals.len() as u64,
            last_seal_hash: seals.last().map(|s| hex(&s.seal_hash)),
            unsealed: last_seq.saturating_sub(sealed_to).max(0) as u64,
            first_bad,
        })
    }

    /// The walk of [`LedgerStore::verify`] over blocks: each block's place,
    /// its bytes, its row's index columns, then each record's hash (from
    /// the one before) and address commitment.
    fn walk_blocks(&self, sealing: &mut SealCheck<'_>) -> Result<crate::legacy::Walk, LedgerError> {
        if !self.has_table("record_blocks")? {
            return Ok(crate::legacy::Walk {
                records: 0,
                last_seq: 0,
                last_hash: GENESIS,
                first_bad: None,
            });
        }
        walk_blocks(&self.conn, sealing)
    }

    pub fn summary(&self) -> Result<LedgerSummary, LedgerError> {
        if self.is_first_layout()? {
            return crate::legacy::summary(&self.conn);
        }
        // A session is its close record (or its one `session` record), or
        // its open record alone when the node died before the session
        // ended (`unterminated`).
        #[derive(PartialEq, Eq, Hash)]
        enum Address {
            Ip(IpAddr),
            Pseudonym([u8; 32]),
        }
        let mut s = LedgerSummary::default();
        let mut opened: std::collections::HashSet<i64> = Default::default();
        let mut closed: std::collections::HashSet<i64> = Default::default();
        let mut addresses: std::collections::HashSet<Address> = Default::default();
        blockstore::for_each_seq(&self.conn, 1, i64::MAX, |_, _, r| {
            match r.kind {
                crate::RecordKind::Open => {
                    opened.insert(r.session_key);
                }
                crate::RecordKind::Close => {
                    closed.insert(r.session_key);
                }
                crate::RecordKind::Session => {}
            }
            if r.kind.closes() {
                s.sessions += 1;
                // Files delivered: downloads that ended complete. A seed
                // reconnecting (it had every piece at the start) is none,
                // as in the aggregates (`is_download`).
                let download = is_download(r.peer_pieces_initial.map(i64::from), i64::from(r.piece_count));
                s.completed += u64::from(r.completed && download);
                s.bytes_sent = s.bytes_sent.saturating_add(r.bytes_sent);
            }
            // An erased address is no address (pseudonyms still tell
            // downloaders apart).
            match r.address {
                PackedAddress::Raw { ip, .. } => {
                    addresses.insert(Address::Ip(ip));
                }
                PackedAddress::Pseudonym(p) => {
                    addresses.insert(Address::Pseudonym(p));
                }
                PackedAddress::Erased => {}
            }
            s.first_session_ms = Some(
                s.first_session_ms
                    .map_or(r.started_at_ms, |m| m.min(r.started_at_ms)),
            );
            s.last_session_ms = Some(
                s.last_session_ms
                    .map_or(r.started_at_ms, |m| m.max(r.started_at_ms)),
            );
            Ok(())
        })?;
        s.unterminated = opened.difference(&closed).count() as u64;
        s.sessions += s.unterminated;
        s.unique_ips = addresses.len() as u64;
        Ok(s)
    }

    /// Calls `f` with every ended session (close record) that started in
    /// `[from_ms, to_ms)`, and its (country, kommune), in order, streaming.
    pub fn for_each_closed<E>(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut f: impl FnMut(StoredSession, (Option<String>, Option<String>)) -> Result<(), E>,
    ) -> Result<(), LedgerError>
    where
        E: std::fmt::Display,
    {
        self.require_blocks()?;
        if from_ms >= to_ms {
            return Ok(());
        }
        blockstore::for_each_started(&self.conn, from_ms, to_ms - 1, i64::MAX, None, |seq, _, r| {
            if !r.kind.closes() || r.started_at_ms < from_ms || r.started_at_ms >= to_ms {
                return Ok(());
            }
            let geo = (
                r.geo.country.map(str::to_string),
                r.geo.kommune.map(str::to_string),
            );
            f(stored_session(seq, r), geo).map_err(|e| LedgerError::Io(e.to_string()))
        })
    }

    /// Every ended session (close records), in order.
    pub fn sessions(&self) -> Result<Vec<StoredSession>, LedgerError> {
        self.require_blocks()?;
        let mut out = Vec::new();
        blockstore::for_each_seq(&self.conn, 1, i64::MAX, |seq, _, r| {
            if r.kind.closes() {
                out.push(stored_session(seq, r));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The walk of [`LedgerStore::verify`] over blocks: each block's place,
/// its bytes, its row's index columns, then each record's hash (from the
/// one before) and address commitment.
pub(crate) fn walk_blocks(
    conn: &Connection,
    sealing: &mut SealCheck<'_>,
) -> Result<crate::legacy::Walk, LedgerError> {
    let mut walk = crate::legacy::Walk {
        records: 0,
        last_seq: 0,
        last_hash: GENESIS,
        first_bad: None,
    };
    let mut ip = String::with_capacity(48);
    blockstore::for_each_row(conn, |row| {
        let expected = walk.last_seq + 1;
        let bad = |seq: i64, reason: String| Some(BadRecord { seq, reason });
        let first = row.first_seq;
        walk.first_bad = if first != expected {
            bad(
                first.max(1),
                format!("expected record {expected} here, found {first}: records deleted or inserted"),
            )
        } else {
            match crate::block::decode(&row.data) {
                    Err(e) => bad(first, format!("the block from record {first} is unreadable ({e}): altered")),
                    Ok(b) if b.first_seq != first || b.records.is_empty() => bad(
                        first,
                        format!("the block from record {first} does not hold the records its row says: altered"),
                    ),
                    Ok(b) => match row.index_mismatch(&b.records) {
                        Some(column) => bad(
                            first,
                            format!(
                                "the {column} of the block from record {first} does not match its records: altered"
                            ),
                        ),
                        None => {
                            let mut problem = None;
                            for (i, r) in b.records.iter().enumerate() {
                                let seq = first + i as i64;
                                let hash = chain::record_hash(&walk.last_hash, &blockstore::chained_fields(seq, r));
                                let reason = if hash != r.record_hash {
                                    // Its hash, or the one before it that
                                    // a forger recomputed to match.
                                    Some("record_hash does not match the record's fields and the record before: altered".to_string())
                                } else if let PackedAddress::Raw { ip: address, salt } = r.address {
                                    ip.clear();
                                    write!(ip, "{address}").expect("writing to a String");
                                    (chain::ip_commitment(&salt, &ip) != r.ip_commitment)
                                        .then(|| "remote_ip does not match its commitment: altered".to_string())
                                } else {
                                    None
                                };
                                let reason = reason.or_else(|| sealing.record(seq, &hash));
                                if let Some(reason) = reason {
                                    problem = bad(seq, reason);
                                    break;
                                }
                                walk.last_hash = hash;
                                walk.last_seq = seq;
                                walk.records += 1;
                            }
                            problem
                        }
                    },
                }
        };
        walk.first_bad.is_none()
    })?;
    Ok(walk)
}

/// A stored record as [`StoredSession`].
fn stored_session(seq: i64, r: &PackedRecord<'_>) -> StoredSession {
    StoredSession {
        id: seq,
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        network: r.network.to_string(),
        decoy_id: r.decoy_id,
        info_hash: hex(&r.info_hash),
        remote_ip: blockstore::address_text(&r.address),
        remote_port: r.remote_port,
        client_name: r.client_name.map(str::to_string),
        client_version: r.client_version.map(str::to_string),
        transport: r.transport.to_string(),
        bytes_sent: r.bytes_sent,
        pieces_sent: r.pieces_sent,
        piece_count: r.piece_count,
        peer_pieces_initial: r.peer_pieces_initial,
        peer_pieces_final: r.peer_pieces_final,
        completed: r.completed,
        close_reason: r.close_reason.to_string(),
    }
}

/// Notes that some address was replaced by a pseudonym
/// ([`LedgerStore::has_pseudonyms`]).
pub(crate) fn mark_pseudonyms(conn: &Connection) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT OR IGNORE INTO ledger_meta (key, value) VALUES ('pseudonyms', 'kept')",
        [],
    )?;
    Ok(())
}

/// Checks seals against the records as `verify` walks them. Every seal's
/// own fields and links are checked before the walk ([`SealCheck::new`]),
/// so the ranges the walk relies on are known to be contiguous from 1.
pub(crate) struct SealCheck<'a> {
    seals: &'a [Seal],
    /// The seal whose range the walk is in.
    current: usize,
    root: StreamingRoot,
}

impl<'a> SealCheck<'a> {
    /// Checks every seal's id, link, hash, range and node; the first bad
    /// seal, if any, as the record where its range starts.
    pub(crate) fn new(seals: &'a [Seal], node_id: &str) -> (Self, Option<BadRecord>) {
        let mut bad = None;
        let mut expected_first = 1i64;
        let mut prev_hash = GENESIS;
        for (i, s) in seals.iter().enumerate() {
            let reason = if s.id != i as i64 + 1 {
                Some(format!(
                    "seal {} found where seal {} belongs: seals deleted or inserted",
                    s.id,
                    i + 1
                ))
            } else if s.prev_seal_hash != prev_hash {
                Some(format!(
                    "seal {}: prev_seal_hash does not match the seal before",
                    s.id
                ))
            } else if s.compute_hash() != s.seal_hash {
                Some(format!(
                    "seal {}: seal_hash does not match its fields: altered",
                    s.id
                ))
            } else if s.first_seq != expected_first || s.last_seq < s.first_seq {
                Some(format!(
                    "seal {} covers records {}..={}, expected to start at {expected_first}: altered",
                    s.id, s.first_seq, s.last_seq
                ))
            } else if s.node_id != node_id {
                Some(format!(
                    "seal {} names node {}, not this ledger's {node_id}",
                    s.id, s.node_id
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                bad = Some(BadRecord {
                    seq: expected_first,
                    reason,
                });
                break;
            }
            prev_hash = s.seal_hash;
            expected_first = match s.last_seq.checked_add(1) {
                Some(n) => n,
                None => {
                    bad = Some(BadRecord {
                        seq: s.first_seq,
                        reason: format!("seal {} ends at an impossible record", s.id),
                    });
                    break;
                }
            };
        }
        let checked = match &bad {
            // Only the seals before the bad one are walked.
            Some(_) => &seals[..seals.iter().take_while(|s| s.last_seq < expected_first).count()],
            None => seals,
        };
        (
            Self {
                seals: checked,
                current: 0,
                root: StreamingRoot::default(),
            },
            bad,
        )
    }

    /// Feeds the next verified record; a reason if a seal ends here and
    /// disagrees.
    pub(crate) fn record(&mut self, seq: i64, hash: &Hash) -> Option<String> {
        let s = self.seals.get(self.current)?;
        if seq < s.first_seq || seq > s.last_seq {
            return Some(format!("record {seq} is outside seal {}'s range", s.id));
        }
        self.root.push(hash);
        if seq < s.last_seq {
            return None;
        }
        let root = std::mem::take(&mut self.root).finish();
        self.current += 1;
        if *hash != s.head_hash {
            Some(format!(
                "seal {}: the record it ends with has another hash: altered",
                s.id
            ))
        } else if root != s.merkle_root {
            Some(format!(
                "seal {}: Merkle root does not match records {}..={}",
                s.id, s.first_seq, s.last_seq
            ))
        } else {
            None
        }
    }

    /// After the walk: seals that name records past the end mean the
    /// newest records were deleted.
    pub(crate) fn finish(self, last_seq: i64) -> Option<BadRecord> {
        let s = self.seals.get(self.current)?;
        let newest = self.seals.last().expect("non-empty");
        Some(BadRecord {
            seq: last_seq + 1,
            reason: format!(
                "records {}..={} are sealed (seal {}) but missing: deleted",
                last_seq + 1,
                newest.last_seq,
                s.id
            ),
        })
    }
}

fn rollups_through(tx: &rusqlite::Transaction<'_>) -> Result<i64, LedgerError> {
    Ok(tx
        .query_row(
            "SELECT value FROM ledger_meta WHERE key = 'rollups_through'",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Whether a session downloaded: the peer did not have every piece when it
/// first said (a seed that reconnects is no download, and receives nothing).
pub(crate) fn is_download(peer_pieces_initial: Option<i64>, piece_count: i64) -> bool {
    peer_pieces_initial.is_none_or(|p| p < piece_count)
}

/// Adds records `from..=to` (already in the table) to the aggregates, and
/// moves the mark to `to`, inside `tx`.
fn roll_up_range(
    tx: &rusqlite::Transaction<'_>,
    secret: &[u8],
    sets: &mut crate::uniques::UniqueSets,
    from: i64,
    to: i64,
) -> Result<(), LedgerError> {
    struct Row {
        id: i64,
        kind: String,
        started: i64,
        ended: i64,
        network: String,
        decoy_id: i64,
        ip: String,
        client: Option<String>,
        completed: bool,
        bytes: i64,
        initial: Option<i64>,
        piece_count: i64,
        country: Option<String>,
        kommune: Option<String>,
    }
    let mut rows: Vec<Row> = Vec::new();
    blockstore::for_each_seq(tx, from, to, |seq, _, r| {
        rows.push(Row {
            id: seq,
            kind: r.kind.as_str().to_string(),
            started: r.started_at_ms,
            ended: r.ended_at_ms,
            network: r.network.to_string(),
            decoy_id: r.decoy_id,
            ip: blockstore::address_text(&r.address),
            client: r.client_name.map(str::to_string),
            completed: r.completed,
            bytes: r.bytes_sent as i64,
            initial: r.peer_pieces_initial.map(i64::from),
            piece_count: i64::from(r.piece_count),
            country: r.geo.country.map(str::to_string),
            kommune: r.geo.kommune.map(str::to_string),
        });
        Ok(())
    })?;
    let inputs: Vec<RollupRow<'_>> = rows
        .iter()
        .map(|r| {
            debug_assert!(r.id >= from && r.id <= to);
            RollupRow {
                is_open: crate::kind_opens_closes(&r.kind).0,
                is_close: crate::kind_opens_closes(&r.kind).1,
                started_at_ms: r.started,
                ended_at_ms: r.ended,
                network: &r.network,
                decoy_id: r.decoy_id,
                ip_key: ip_key(secret, &r.ip),
                address_known: r.ip != chain::ERASED_IP,
                client: r.client.as_deref(),
                completed: r.completed,
                downloading: is_download(r.initial, r.piece_count),
                bytes_sent: r.bytes as u64,
                country: r.country.as_deref(),
                kommune: r.kommune.as_deref(),
            }
        })
        .collect();
    crate::rollup::apply_sqlite_sets(tx, &Plan::new(&inputs), sets)?;
    tx.execute(
        "INSERT OR REPLACE INTO ledger_meta (key, value) VALUES ('rollups_through', ?1)",
        [to.to_string()],
    )?;
    Ok(())
}

/// A record's address key (HMAC) and place, as the aggregates need them.
type AddressFacts = ([u8; 16], GeoFields);

/// What a record adds to the aggregates.
fn rollup_row<'a>(r: &'a SessionRecord, ip_key: [u8; 16], geo: &'a GeoFields) -> RollupRow<'a> {
    RollupRow {
        is_open: r.kind.opens(),
        is_close: r.kind.closes(),
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        network: r.network,
        decoy_id: r.decoy_id,
        ip_key,
        address_known: true,
        client: r.client_name.as_deref(),
        completed: r.completed,
        downloading: is_download(r.peer_pieces_initial.map(i64::from), i64::from(r.piece_count)),
        bytes_sent: r.bytes_sent,
        country: geo.country.as_deref(),
        kommune: geo.kommune.as_deref(),
    }
}

/// Records committed without their aggregates, in sequence order from
/// `first_seq` ([`LedgerStore::append_deferring`]).
#[derive(Default)]
pub struct UnrolledRecords {
    first_seq: i64,
    records: Vec<SessionRecord>,
    keys: Vec<AddressFacts>,
    since: Option<std::time::Instant>,
}

impl UnrolledRecords {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When the oldest of them committed.
    pub fn since(&self) -> Option<std::time::Instant> {
        self.since
    }

    fn clear(&mut self) {
        self.records.clear();
        self.keys.clear();
        self.since = None;
    }
}

fn ip_key(secret: &[u8], ip: &str) -> [u8; 16] {
    crate::retention::hmac_sha256(secret, ip.as_bytes())[..16]
        .try_into()
        .expect("16 bytes")
}

/// [`ip_key`] with the HMAC's two padded key blocks hashed once, not for
/// every record: two SHA-256 compressions per address instead of four.
#[derive(Clone)]
struct IpKeyer {
    inner: Sha256,
    outer: Sha256,
}

impl IpKeyer {
    fn new(secret: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if secret.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        Self {
            inner: Sha256::new().chain_update(block.map(|k| k ^ 0x36)),
            outer: Sha256::new().chain_update(block.map(|k| k ^ 0x5c)),
        }
    }

    fn key(&self, ip: &str) -> [u8; 16] {
        let inner = self.inner.clone().chain_update(ip.as_bytes()).finalize();
        let mac = self.outer.clone().chain_update(inner).finalize();
        mac[..16].try_into().expect("16 bytes")
    }
}

/// IPv4-mapped IPv6 addresses are stored as plain IPv4 so one downloader
/// is one address whichever socket family accepted it.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_keyer_gives_the_hmac_keys() {
        for secret in [&b""[..], b"short", &[7u8; 64][..], &[9u8; 100][..]] {
            let keyer = IpKeyer::new(secret);
            for ip in ["192.0.2.1", "2001:db8::1", ""] {
                assert_eq!(keyer.key(ip), ip_key(secret, ip), "{secret:?} {ip}");
            }
        }
    }
}
