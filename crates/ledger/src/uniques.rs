//! Distinct addresses per period, dimension and key (how many addresses
//! asked for a decoy on a day, in a week, month or year; per country and
//! kommune; how many received a file; how many came back), stored as
//! sorted runs of address keys.
//!
//! Why runs: a row per (period, dimension, key, address) costs a B-tree
//! insert per row, about eight per new address a day (four periods, two
//! or three dimensions), and those inserts were most of what the ledger's
//! writer did (BENCHMARKS §6). Here the writer keeps the members of the
//! periods it is writing in memory ([`UniqueSets`]) and stores only the
//! addresses new to a period, sorted, as one `rollup_runs` row per
//! (period, dimension, key) per commit: a period's runs never share an
//! address, so its count is the sum of its runs' sizes, and the union of
//! several periods is the union of their runs.
//!
//! Runs are merged as they pile up (size-tiered: four runs of about the
//! same size become one), so a key holds a few dozen runs at most whatever
//! its size, and each address is rewritten a few times in all.
//!
//! The sets in memory must always be what the file holds, or a writer
//! would store an address twice (a count too high) or skip one. Every
//! write of runs sets a new random version in `rollup_state`, and a writer
//! that finds another version there than the one it last wrote or read
//! (another process wrote runs, or its own transaction was rolled back
//! with the members it had added) forgets what it held and reads the
//! periods again. Whoever changes `rollup_runs` by hand (a rebuild:
//! deleting runs so that the next open makes them again from the records)
//! deletes or changes that version too.
//!
//! Limits: the members of a period in memory take 24–48 bytes each (one
//! per address and dimension), so a year of a million distinct addresses
//! holds some 50–100 MB; one run is one SQLite value, at most 1 GB, so a
//! single period, dimension and key holds at most about 60 million keys.

use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollup_runs (
    period TEXT NOT NULL,          -- d2026-11-29, w2026-48, m2026-11, y2026
    dim TEXT NOT NULL,             -- all, country, kommune, delivered, repeat
    key TEXT NOT NULL,
    run INTEGER NOT NULL,          -- 1, 2, 3, ... within (period, dim, key)
    members INTEGER NOT NULL,      -- address keys in the run
    -- 16-byte address keys, sorted; none is in another run of the same
    -- (period, dim, key).
    ip_keys BLOB NOT NULL,
    PRIMARY KEY (period, dim, key, run)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_state (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Runs merged at once: four of a size become one of four times it.
const FANOUT: usize = 4;
/// Periods whose members a writer keeps in memory at most (the current
/// day, week, month and year, and sessions that started before midnight).
const MAX_LOADED_PERIODS: usize = 12;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;
pub(crate) type FxSet<K> = std::collections::HashSet<K, FxBuild>;

/// A (dimension, key) pair, numbered by [`UniqueSets`].
type Group = u32;

/// The members of one period, every dimension and key, as stored.
struct Loaded {
    members: FxSet<(Group, [u8; 16])>,
    /// When it was last used, for dropping the least recently used.
    used: u64,
}

/// The members of the periods a writer is writing, as the file holds
/// them (with what the writer's open transaction added).
#[derive(Default)]
pub struct UniqueSets {
    groups: FxMap<(String, String), Group>,
    names: Vec<(String, String)>,
    periods: HashMap<String, Loaded>,
    tick: u64,
    /// The version in `rollup_state` that these sets match.
    version: Option<i64>,
}

/// Members to add: (day, dimension, key, address key).
pub(crate) type Entry<'a> = (i64, &'a str, &'a str, [u8; 16]);

impl UniqueSets {
    fn group(&mut self, dim: &str, key: &str) -> Group {
        if let Some(&g) = self.groups.get(&(dim.to_string(), key.to_string())) {
            return g;
        }
        let g = self.names.len() as Group;
        self.names.push((dim.to_string(), key.to_string()));
        self.groups.insert((dim.to_string(), key.to_string()), g);
        g
    }

    /// Forgets every member (the store was emptied or replaced).
    pub fn clear(&mut self) {
        self.periods.clear();
        self.version = None;
    }

    /// Members held in memory, over all periods.
    pub fn len(&self) -> usize {
        self.periods.values().map(|p| p.members.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts work inside `tx`: sets that no longer match the file (see
    /// the module's documentation) are forgotten.
    fn begin(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let version: i64 = tx
            .query_row("SELECT value FROM rollup_state WHERE name = 'version'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        if self.version != Some(version) {
            self.periods.clear();
            self.version = Some(version);
        }
        Ok(())
    }

    /// Reads `period`'s stored members, unless held.
    fn load(&mut self, tx: &Transaction<'_>, period: &str) -> rusqlite::Result<()> {
        self.tick += 1;
        if let Some(p) = self.periods.get_mut(period) {
            p.used = self.tick;
            return Ok(());
        }
        let mut members = FxSet::default();
        let mut stmt = tx.prepare_cached("SELECT dim, key, ip_keys FROM rollup_runs WHERE period = ?1")?;
        let mut rows = stmt.query([period])?;
        while let Some(r) = rows.next()? {
            let g = self.group(r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?);
            for k in r.get_ref(2)?.as_blob()?.chunks_exact(16) {
                members.insert((g, k.try_into().expect("16 bytes")));
            }
        }
        self.periods.insert(
            period.to_string(),
            Loaded {
                members,
                used: self.tick,
            },
        );
        Ok(())
    }

    /// Drops the least recently used periods beyond the bound, except
    /// those `keep` names.
    fn evict(&mut self, keep: &[String]) {
        while self.periods.len() > MAX_LOADED_PERIODS {
            let Some(oldest) = self
                .periods
                .iter()
                .filter(|(label, _)| !keep.contains(label))
                .min_by_key(|(_, p)| p.used)
                .map(|(label, _)| label.clone())
            else {
                break;
            };
            self.periods.remove(&oldest);
        }
    }

    /// Stores, inside `tx`, every address of `entries` not yet counted in
    /// its day's four periods (day, week, month, year) under its dimension
    /// and key: a run per (period, dimension, key). Returns how many
    /// (period, dimension, key, address) it added.
    pub(crate) fn add<'a>(
        &mut self,
        tx: &Transaction<'_>,
        entries: impl IntoIterator<Item = Entry<'a>>,
    ) -> rusqlite::Result<usize> {
        self.begin(tx)?;
        // The days' period labels, and each label's new members by group.
        let mut labels: FxMap<i64, [usize; 4]> = FxMap::default();
        let mut names: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut groups: FxMap<(&str, &str), Group> = FxMap::default();
        // Labels and groups resolved first (loading periods as they come),
        // so the look-ups below borrow the sets without a name each time.
        let mut resolved: Vec<([usize; 4], Group, [u8; 16])> = Vec::new();
        for (day, dim, key, ip) in entries {
            let periods = match labels.get(&day) {
                Some(p) => *p,
                None => {
                    let mut p = [0; 4];
                    for (slot, label) in p.iter_mut().zip(crate::rollup::periods(day)) {
                        *slot = match index.get(&label) {
                            Some(&i) => i,
                            None => {
                                self.load(tx, &label)?;
                                names.push(label.clone());
                                index.insert(label, names.len() - 1);
                                names.len() - 1
                            }
                        };
                    }
                    labels.insert(day, p);
                    p
                }
            };
            let g = match groups.get(&(dim, key)) {
                Some(&g) => g,
                None => {
                    let g = self.group(dim, key);
                    groups.insert((dim, key), g);
                    g
                }
            };
            resolved.push((periods, g, ip));
        }
        let mut new: FxMap<(usize, Group), Vec<[u8; 16]>> = FxMap::default();
        let mut seen: FxSet<(usize, Group, [u8; 16])> = FxSet::default();
        {
            let held: Vec<&FxSet<(Group, [u8; 16])>> =
                names.iter().map(|n| &self.periods[n].members).collect();
            for (periods, g, ip) in resolved {
                // A member of the day is a member of its week, month and
                // year: the four are always stored together.
                if held[periods[0]].contains(&(g, ip)) {
                    continue;
                }
                for p in periods {
                    if !held[p].contains(&(g, ip)) && seen.insert((p, g, ip)) {
                        new.entry((p, g)).or_default().push(ip);
                    }
                }
            }
        }
        if new.is_empty() {
            self.evict(&names);
            return Ok(0);
        }
        // Set first: should anything below fail, the transaction is rolled
        // back and these sets no longer match the version in the file.
        let mut version = [0u8; 8];
        getrandom::fill(&mut version).expect("the operating system provides randomness");
        let version = i64::from_le_bytes(version);
        tx.execute(
            "INSERT INTO rollup_state (name, value) VALUES ('version', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [version],
        )?;
        self.version = Some(version);
        let mut added = 0;
        // In key order, so the runs' pages are visited in order.
        let mut runs: Vec<_> = new.into_iter().collect();
        runs.sort_unstable_by(|a, b| {
            let name = |(p, g): (usize, Group)| (&names[p], &self.names[g as usize]);
            name(a.0).cmp(&name(b.0))
        });
        for ((p, g), members) in runs {
            let held = &mut self.periods.get_mut(&names[p]).expect("loaded above").members;
            held.extend(members.iter().map(|ip| (g, *ip)));
            added += members.len();
            let (dim, key) = &self.names[g as usize];
            write_run(tx, &names[p], dim, key, members)?;
        }
        self.evict(&names);
        Ok(added)
    }
}

/// An address key as stored in a row: 16 bytes; any other length (only a
/// damaged file holds one) is cut or padded to 16.
pub(crate) fn key16(stored: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = stored.len().min(16);
    k[..n].copy_from_slice(&stored[..n]);
    k
}

/// The size class of a run: runs of one class are merged together.
fn class(members: i64) -> u32 {
    (members.max(1) as u64).ilog(FANOUT as u64)
}

/// Stores `members` (new to the period's dimension and key) as a run, then
/// merges runs while `FANOUT` of one size class pile up.
fn write_run(
    tx: &Transaction<'_>,
    period: &str,
    dim: &str,
    key: &str,
    mut members: Vec<[u8; 16]>,
) -> rusqlite::Result<()> {
    members.sort_unstable();
    let mut runs: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT run, members FROM rollup_runs WHERE period = ?1 AND dim = ?2 AND key = ?3 ORDER BY run",
        )?
        .query_map(params![period, dim, key], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut next = runs.last().map_or(1, |r| r.0 + 1);
    let mut insert = tx.prepare_cached(
        "INSERT INTO rollup_runs (period, dim, key, run, members, ip_keys) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    insert.execute(params![
        period,
        dim,
        key,
        next,
        members.len() as i64,
        members.concat()
    ])?;
    runs.push((next, members.len() as i64));
    loop {
        let mut by_class: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
        for &(run, n) in &runs {
            by_class.entry(class(n)).or_default().push(run);
        }
        let Some((_, merge)) = by_class.into_iter().find(|(_, r)| r.len() >= FANOUT) else {
            return Ok(());
        };
        let merge = &merge[..FANOUT];
        let mut all: Vec<u8> = Vec::new();
        {
            let mut read = tx.prepare_cached(
                "SELECT ip_keys FROM rollup_runs WHERE period = ?1 AND dim = ?2 AND key = ?3 AND run = ?4",
            )?;
            let mut delete = tx.prepare_cached(
                "DELETE FROM rollup_runs WHERE period = ?1 AND dim = ?2 AND key = ?3 AND run = ?4",
            )?;
            for &run in merge {
                read.query_row(params![period, dim, key, run], |r| {
                    all.extend_from_slice(r.get_ref(0)?.as_blob()?);
                    Ok(())
                })?;
                delete.execute(params![period, dim, key, run])?;
            }
        }
        let mut keys: Vec<[u8; 16]> = all
            .chunks_exact(16)
            .map(|k| k.try_into().expect("16 bytes"))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        next += 1;
        insert.execute(params![period, dim, key, next, keys.len() as i64, keys.concat()])?;
        runs.retain(|(run, _)| !merge.contains(run));
        runs.push((next, keys.len() as i64));
    }
}

/// Distinct addresses of `period` under `dim`, per key.
pub(crate) fn counts(
    conn: &rusqlite::Connection,
    period: &str,
    dim: &str,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, sum(members) FROM rollup_runs WHERE period = ?1 AND dim = ?2 GROUP BY key",
    )?;
    let rows = stmt.query_map([period, dim], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Calls `f(key, address key)` for every member of `period` under `dim`.
pub(crate) fn for_each_member(
    conn: &rusqlite::Connection,
    period: &str,
    dim: &str,
    mut f: impl FnMut(&str, &[u8]),
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT key, ip_keys FROM rollup_runs WHERE period = ?1 AND dim = ?2")?;
    let mut rows = stmt.query([period, dim])?;
    while let Some(r) = rows.next()? {
        let key = r.get_ref(0)?.as_str()?;
        for ip in r.get_ref(1)?.as_blob()?.chunks_exact(16) {
            f(key, ip);
        }
    }
    Ok(())
}

/// (period, dimension, key, address key).
pub type MemberRow = (String, String, String, Vec<u8>);

/// Every member as (period, dimension, key, address key), sorted: what a
/// row per member would hold (tests compare stores with it).
pub fn rows(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<MemberRow>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT period, dim, key, ip_keys FROM rollup_runs")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (period, dim, key): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        for ip in r.get_ref(3)?.as_blob()?.chunks_exact(16) {
            out.push((period.clone(), dim.clone(), key.clone(), ip.to_vec()));
        }
    }
    out.sort();
    Ok(out)
}

/// Moves a ledger's members from the first layout's `rollup_uniques` (a
/// row per member) into runs, a key at a time, then drops that table. An
/// interrupted move goes on at the next open (each key's rows go in the
/// transaction that writes its run). Returns the members moved.
pub(crate) fn move_rows_to_runs(conn: &mut rusqlite::Connection) -> rusqlite::Result<u64> {
    let has_rows_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rollup_uniques'",
        [],
        |r| r.get(0),
    )?;
    if !has_rows_table {
        return Ok(0);
    }
    const PER_TRANSACTION: usize = 500_000;
    let mut moved = 0u64;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have finished the move while this one
        // waited for the lock.
        let still: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rollup_uniques'",
            [],
            |r| r.get(0),
        )?;
        if !still {
            return Ok(moved);
        }
        // Writers holding sets read them again.
        let mut version = [0u8; 8];
        getrandom::fill(&mut version).expect("the operating system provides randomness");
        tx.execute(
            "INSERT INTO rollup_state (name, value) VALUES ('version', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [i64::from_le_bytes(version)],
        )?;
        let mut in_tx = 0usize;
        while in_tx < PER_TRANSACTION {
            let Some((period, dim, key)) = tx
                .query_row("SELECT period, dim, key FROM rollup_uniques LIMIT 1", [], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()?
            else {
                tx.execute_batch("DROP TABLE rollup_uniques")?;
                tx.commit()?;
                return Ok(moved);
            };
            let members: Vec<[u8; 16]> = tx
                .prepare_cached(
                    "SELECT ip_key FROM rollup_uniques WHERE period = ?1 AND dim = ?2 AND key = ?3",
                )?
                .query_map(params![period, dim, key], |r| Ok(key16(r.get_ref(0)?.as_blob()?)))?
                .collect::<Result<_, _>>()?;
            tx.execute(
                "DELETE FROM rollup_uniques WHERE period = ?1 AND dim = ?2 AND key = ?3",
                params![period, dim, key],
            )?;
            in_tx += members.len().max(1);
            moved += members.len() as u64;
            // A key already in a run of this group (rows written beside
            // runs by some other writer) is not stored twice.
            let mut present: FxSet<[u8; 16]> = FxSet::default();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT ip_keys FROM rollup_runs WHERE period = ?1 AND dim = ?2 AND key = ?3",
                )?;
                let mut rows = stmt.query(params![period, dim, key])?;
                while let Some(r) = rows.next()? {
                    for k in r.get_ref(0)?.as_blob()?.chunks_exact(16) {
                        present.insert(k.try_into().expect("16 bytes"));
                    }
                }
            }
            let mut members = members;
            members.sort_unstable();
            members.dedup();
            members.retain(|k| !present.contains(k));
            if !members.is_empty() {
                write_run(&tx, &period, &dim, &key, members)?;
            }
        }
        tx.commit()?;
        tracing::info!(members = moved, "moving distinct-address aggregates into runs");
    }
}
