//! Aggregates kept beside the chain, so reports over a hundred million
//! sessions read thousands of rows, and so they survive the erasure of raw
//! addresses (they never hold one: addresses enter as a keyed hash).
//!
//! Every committed batch of records updates, in the same transaction:
//! - `rollup_daily`: per UTC day (the session's start) and dimension key,
//!   downloads (sessions whose peer lacked pieces at the start; counted
//!   when they end), sessions ended, files delivered (downloads that ended
//!   complete) and bytes sent;
//! - distinct addresses: per period (day, ISO week, month, year) and
//!   dimension key, each distinct address key once: every address that
//!   asked for a decoy, and (dimension `delivered`) every address that
//!   received a whole file. SQLite keeps them as sorted runs
//!   ([`crate::uniques`]); a fleet's PostgreSQL as a row each in
//!   `rollup_uniques` ([`Plan::statements`]);
//! - `rollup_ip`: per address key, when it first received the whole file;
//! - `rollup_repeat`: per day, address keys whose download started after
//!   they had received the warning (the repeat downloaders); the same
//!   addresses are also kept per period with the distinct addresses under
//!   the dimension `repeat` (key ''), so a year's repeat downloaders are
//!   one period's members rather than every day's.
//!
//! Address keys are HMAC-SHA256 of the address under a secret kept in the
//! ledger: pseudonyms, not anonymous. Whoever holds the ledger file holds
//! the secret too.
//!
//! The statements are plain SQL that SQLite and PostgreSQL both run
//! (`$n` parameters, `ON CONFLICT`): a fleet's PostgreSQL store applies
//! them all ([`Plan::statements`]), SQLite all but the distinct addresses'
//! ([`apply_sqlite_sets`]).

use crate::uniques::UniqueSets;
use std::collections::HashMap;

/// Dimensions a record is counted under, beside the total (`all`).
pub const DIMENSIONS: [&str; 6] = ["all", "network", "country", "kommune", "title", "client"];
/// Dimensions distinct addresses are counted under.
pub const UNIQUE_DIMENSIONS: [&str; 3] = ["all", "country", "kommune"];

pub const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollup_daily (
    day INTEGER NOT NULL,          -- UTC days since 1970-01-01
    dim TEXT NOT NULL,
    key TEXT NOT NULL,
    started INTEGER NOT NULL,
    closed INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (day, dim, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_ip (
    ip_key BLOB PRIMARY KEY,
    first_completed_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_repeat (
    day INTEGER NOT NULL,
    ip_key BLOB NOT NULL,
    PRIMARY KEY (day, ip_key)
) WITHOUT ROWID;
";

const MS_PER_DAY: i64 = 86_400_000;

/// A value bound to a statement parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// What one record contributes.
#[derive(Clone, Debug)]
pub struct RollupRow<'a> {
    /// Counts the address (an open or a one-record session).
    pub is_open: bool,
    /// Counts what the session did (a close or a one-record session).
    pub is_close: bool,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: &'a str,
    pub decoy_id: i64,
    pub ip_key: [u8; 16],
    /// False when the address was erased before these aggregates were
    /// made (a fleet copy forwarded after retention, an old ledger caught
    /// up): the record counts in sessions, downloads and bytes, but not
    /// as a distinct address, a delivery to one or a repeat.
    pub address_known: bool,
    pub client: Option<&'a str>,
    pub completed: bool,
    /// (Close records) the peer lacked pieces when the session began: a
    /// download, not a seed reconnecting.
    pub downloading: bool,
    pub bytes_sent: u64,
    pub country: Option<&'a str>,
    /// Norwegian municipality number, for Norwegian addresses placed with
    /// confidence.
    pub kommune: Option<&'a str>,
}

/// A client name without its version: `libtorrent 2.0.8.0` → `libtorrent`.
pub fn client_family(name: Option<&str>) -> String {
    client_family_str(name).to_string()
}

pub(crate) fn civil(day: i64) -> (i64, u32, u32) {
    // Days since 1970-01-01 to a Gregorian date (H. Hinnant's algorithm).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// ISO 8601 week-numbering year and week of a day.
pub fn iso_week(day: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday; ISO weeks start on Monday.
    let weekday = (day + 3).rem_euclid(7); // Monday = 0
    let thursday = day - weekday + 3;
    let (year, _, _) = civil(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    (year, ((thursday - jan1) / 7 + 1) as u32)
}

pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The four period labels a day belongs to.
pub fn periods(day: i64) -> [String; 4] {
    let (y, m, d) = civil(day);
    let (wy, w) = iso_week(day);
    [
        format!("d{y:04}-{m:02}-{d:02}"),
        format!("w{wy:04}-{w:02}"),
        format!("m{y:04}-{m:02}"),
        format!("y{y:04}"),
    ]
}

/// The stored periods whose days are exactly `from..=to`: whole years,
/// then whole months in what is left, then whole ISO weeks, then days. The
/// distinct addresses of the window are the union of theirs, so reading
/// these reads far fewer rows than reading its days.
pub fn cover(from: i64, to: i64) -> Vec<String> {
    let mut out = Vec::new();
    cover_level(from, to, 0, &mut out);
    out
}

/// Level 0 years, 1 months, 2 weeks, 3 days.
fn cover_level(from: i64, to: i64, level: usize, out: &mut Vec<String>) {
    if from > to {
        return;
    }
    if level == 3 {
        out.extend((from..=to).map(|d| periods(d)[0].clone()));
        return;
    }
    // The unit starting on `day`, if one does: its last day.
    let unit = |day: i64| -> Option<i64> {
        let (y, m, d) = civil(day);
        match level {
            0 => (m == 1 && d == 1).then(|| days_from_civil(y + 1, 1, 1) - 1),
            1 => (d == 1).then(|| if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) } - 1),
            _ => ((day + 3).rem_euclid(7) == 0).then_some(day + 6),
        }
    };
    let Some(start) = (from..=to.min(from + 366)).find(|&d| unit(d).is_some_and(|end| end <= to)) else {
        cover_level(from, to, level + 1, out);
        return;
    };
    cover_level(from, start - 1, level + 1, out);
    let mut day = start;
    while let Some(end) = unit(day).filter(|&end| end <= to) {
        out.push(periods(day)[[3, 2, 1][level]].clone());
        day = end + 1;
    }
    cover_level(day, to, level + 1, out);
}

/// The day of a `dYYYY-MM-DD` label.
pub(crate) fn day_of_label(label: &str) -> Option<i64> {
    let rest = label.strip_prefix('d')?;
    let mut parts = rest.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    let day = days_from_civil(y, m, d);
    (periods(day)[0] == label).then_some(day)
}

/// The family part of [`client_family`], borrowed from the name.
fn client_family_str(name: Option<&str>) -> &str {
    // An unrecognised peer id is named `unknown` plus its first bytes:
    // one key for all of them, so made-up ids cannot add keys without end.
    let Some(name) = name
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "unknown" && !n.starts_with("unknown "))
    else {
        return "unknown";
    };
    match name.rsplit_once(' ') {
        Some((family, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => family,
        _ => name,
    }
}

// FxHash (rustc's hasher): the plan's maps are keyed by small integers,
// interned ids and address keys (HMAC output), none chosen freely by a
// peer, and SipHash dominated building a plan.
use crate::uniques::{FxBuild, FxMap, FxSet};

/// The distinct strings of one plan (keys and period labels), each stored
/// once and named by its index, so a batch allocates per distinct key, not
/// per record.
#[derive(Debug, Default)]
struct Strings {
    list: Vec<String>,
    ids: HashMap<String, u32, FxBuild>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        &self.list[id as usize]
    }

    /// Each id's rank in the strings' sorted order: sorting by rank sorts
    /// by the strings.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.list.len() as u32).collect();
        order.sort_unstable_by(|a, b| self.get(*a).cmp(self.get(*b)));
        let mut rank = vec![0; order.len()];
        for (r, id) in order.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }
}

/// The updates one batch makes, aggregated.
#[derive(Debug, Default)]
pub struct Plan {
    strings: Strings,
    /// (day, dimension, key) → (started, closed, completed, bytes).
    daily: FxMap<(i64, &'static str, u32), [i64; 4]>,
    /// The four period labels of each day in the batch.
    days: FxMap<i64, [u32; 4]>,
    /// (day, dimension, key, address key): a row in each of the day's four
    /// periods.
    uniques: FxSet<(i64, &'static str, u32, [u8; 16])>,
    /// Earliest completion per address key in the batch.
    firsts: FxMap<[u8; 16], i64>,
    /// (day, address key) → the latest start of a download that day. A
    /// repeat needs one start after the first completion, and if any start
    /// is after it, the latest is: the others change nothing.
    starts: FxMap<(i64, [u8; 16]), i64>,
}

/// A plan's entries in the order [`Plan::statements`] runs them: sorted as
/// the keys' text sorts. `uniques` is per day; [`Plan::period_rows`]
/// spreads them over the periods.
struct Sorted<'p> {
    rank: Vec<u32>,
    daily: Vec<(i64, &'static str, &'p str, [i64; 4])>,
    uniques: Vec<(i64, &'static str, u32, [u8; 16])>,
    firsts: Vec<([u8; 16], i64)>,
    starts: Vec<(i64, [u8; 16], i64)>,
}

const DAILY_SQL: &str = "INSERT INTO rollup_daily (day, dim, key, started, closed, completed, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (day, dim, key) DO UPDATE SET started = rollup_daily.started + excluded.started,
                 closed = rollup_daily.closed + excluded.closed,
                 completed = rollup_daily.completed + excluded.completed, bytes = rollup_daily.bytes + excluded.bytes";
const UNIQUES_SQL: &str =
    "INSERT INTO rollup_uniques (period, dim, key, ip_key) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
const IP_SQL: &str =
    "INSERT INTO rollup_ip (ip_key, first_completed_ms) VALUES ($1, $2) ON CONFLICT (ip_key) DO UPDATE
                 SET first_completed_ms = CASE WHEN rollup_ip.first_completed_ms IS NULL
                     OR excluded.first_completed_ms < rollup_ip.first_completed_ms
                     THEN excluded.first_completed_ms ELSE rollup_ip.first_completed_ms END";
const REPEAT_SQL: &str = "INSERT INTO rollup_repeat (day, ip_key) SELECT $1, $2 WHERE EXISTS
                 (SELECT 1 FROM rollup_ip WHERE ip_key = $2 AND first_completed_ms < $3) ON CONFLICT DO NOTHING";
/// The repeat row of one period of the start's day, on the same condition.
const REPEAT_PERIOD_SQL: &str =
    "INSERT INTO rollup_uniques (period, dim, key, ip_key) SELECT $1, 'repeat', '', $2
                 WHERE EXISTS (SELECT 1 FROM rollup_ip WHERE ip_key = $2 AND first_completed_ms < $3)
                 ON CONFLICT DO NOTHING";

/// The dimension of `rollup_uniques` that holds repeat downloaders.
pub const REPEAT_DIMENSION: &str = "repeat";

impl Plan {
    pub fn new(rows: &[RollupRow<'_>]) -> Self {
        let mut plan = Plan::default();
        let strings = &mut plan.strings;
        let days = &mut plan.days;
        let empty = strings.id("");
        let unknown = strings.id("unknown");
        // Decoy ids as text, made once each.
        let mut titles: FxMap<i64, u32> = FxMap::default();
        for r in rows {
            let day = r.started_at_ms.div_euclid(MS_PER_DAY);
            let country = r.country.map_or(unknown, |c| strings.id(c));
            let kommune = r.kommune.map(|k| strings.id(k));
            if r.is_open && r.address_known {
                days.entry(day)
                    .or_insert_with(|| periods(day).map(|p| strings.id(&p)));
                plan.uniques.insert((day, "all", empty, r.ip_key));
                plan.uniques.insert((day, "country", country, r.ip_key));
                if let Some(k) = kommune {
                    plan.uniques.insert((day, "kommune", k, r.ip_key));
                }
            }
            if !r.is_close {
                continue;
            }
            let title = *titles
                .entry(r.decoy_id)
                .or_insert_with(|| strings.id(&r.decoy_id.to_string()));
            let keys = [
                ("all", Some(empty)),
                ("network", Some(strings.id(r.network))),
                ("country", Some(country)),
                // Only Norwegian sessions placed in a kommune count there.
                ("kommune", kommune.filter(|&k| k != empty)),
                ("title", Some(title)),
                ("client", Some(strings.id(client_family_str(r.client)))),
            ];
            for (dim, key) in keys {
                let Some(key) = key else { continue };
                let e = plan.daily.entry((day, dim, key)).or_default();
                e[0] += i64::from(r.downloading);
                e[1] += 1;
                e[2] += i64::from(r.completed && r.downloading);
                e[3] += r.bytes_sent as i64;
            }
            if r.downloading && r.address_known {
                days.entry(day)
                    .or_insert_with(|| periods(day).map(|p| strings.id(&p)));
                let latest = plan.starts.entry((day, r.ip_key)).or_insert(i64::MIN);
                *latest = (*latest).max(r.started_at_ms);
                if r.completed {
                    // The warning is delivered by the session's end.
                    let first = plan.firsts.entry(r.ip_key).or_insert(i64::MAX);
                    *first = (*first).min(r.ended_at_ms);
                    days.entry(day)
                        .or_insert_with(|| periods(day).map(|p| strings.id(&p)));
                    plan.uniques.insert((day, "delivered", empty, r.ip_key));
                }
            }
        }
        plan
    }

    fn sorted(&self) -> Sorted<'_> {
        let rank = self.strings.ranks();
        let s = |id: u32| self.strings.get(id);
        let mut daily: Vec<_> = self
            .daily
            .iter()
            .map(|(&(d, dim, k), &v)| (d, dim, k, v))
            .collect();
        daily.sort_unstable_by_key(|&(d, dim, k, _)| (d, dim, rank[k as usize]));
        let mut uniques: Vec<_> = self.uniques.iter().copied().collect();
        uniques.sort_unstable_by_key(|&(d, dim, k, ip)| (d, dim, rank[k as usize], ip));
        let mut firsts: Vec<_> = self.firsts.iter().map(|(&ip, &at)| (ip, at)).collect();
        firsts.sort_unstable();
        let mut starts: Vec<_> = self.starts.iter().map(|(&(d, ip), &at)| (d, ip, at)).collect();
        starts.sort_unstable();
        Sorted {
            daily: daily
                .into_iter()
                .map(|(d, dim, k, v)| (d, dim, s(k), v))
                .collect(),
            rank,
            uniques,
            firsts,
            starts,
        }
    }

    /// The rows of `rollup_uniques` for per-day entries: each in the periods
    /// `which` picks of its day (0 day, 1 week, 2 month, 3 year), once,
    /// sorted as their text sorts.
    fn period_rows<'p>(
        &'p self,
        rank: &[u32],
        entries: impl Iterator<Item = (i64, &'static str, u32, [u8; 16])>,
        which: std::ops::Range<usize>,
    ) -> Vec<(&'p str, &'static str, &'p str, [u8; 16])> {
        let mut rows: FxSet<(u32, &'static str, u32, [u8; 16])> = FxSet::default();
        for (day, dim, key, ip) in entries {
            for &period in &self.days[&day][which.clone()] {
                rows.insert((period, dim, key, ip));
            }
        }
        let mut rows: Vec<_> = rows.into_iter().collect();
        rows.sort_unstable_by_key(|&(p, dim, k, ip)| (rank[p as usize], dim, rank[k as usize], ip));
        let s = |id: u32| self.strings.get(id);
        rows.into_iter()
            .map(|(p, dim, k, ip)| (s(p), dim, s(k), ip))
            .collect()
    }

    /// The statements, in order: totals, distinct addresses, first
    /// completions, then repeats (which read the first completions).
    pub fn statements(&self) -> Vec<(&'static str, Vec<Value>)> {
        let sorted = self.sorted();
        let mut out = Vec::new();
        for (day, dim, key, [started, closed, completed, bytes]) in sorted.daily {
            out.push((
                DAILY_SQL,
                vec![
                    Value::Int(day),
                    Value::Text(dim.to_string()),
                    Value::Text(key.to_string()),
                    Value::Int(started),
                    Value::Int(closed),
                    Value::Int(completed),
                    Value::Int(bytes),
                ],
            ));
        }
        for (period, dim, key, ip_key) in self.period_rows(&sorted.rank, sorted.uniques.iter().copied(), 0..4)
        {
            out.push((
                UNIQUES_SQL,
                vec![
                    Value::Text(period.to_string()),
                    Value::Text(dim.to_string()),
                    Value::Text(key.to_string()),
                    Value::Blob(ip_key.to_vec()),
                ],
            ));
        }
        for (ip_key, at) in sorted.firsts {
            out.push((IP_SQL, vec![Value::Blob(ip_key.to_vec()), Value::Int(at)]));
        }
        for (day, ip_key, started) in sorted.starts {
            out.push((
                REPEAT_SQL,
                vec![Value::Int(day), Value::Blob(ip_key.to_vec()), Value::Int(started)],
            ));
            for &period in &self.days[&day] {
                out.push((
                    REPEAT_PERIOD_SQL,
                    vec![
                        Value::Text(self.strings.get(period).to_string()),
                        Value::Blob(ip_key.to_vec()),
                        Value::Int(started),
                    ],
                ));
            }
        }
        out
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(n) => rusqlite::types::ToSqlOutput::from(*n),
            Value::Text(s) => rusqlite::types::ToSqlOutput::from(s.as_str()),
            Value::Blob(b) => rusqlite::types::ToSqlOutput::from(b.as_slice()),
        })
    }
}

/// Per-day rows of a row-per-member `rollup_uniques` (a fleet's
/// PostgreSQL store) a client knows are stored, so a busy address's every
/// session does not look its rows up again. Rows are never deleted, so an
/// entry stays true; entries are added only for committed transactions
/// ([`KnownUniques::add`] after the commit).
///
/// An entry is a 128-bit tag: the row's address key (HMAC output, already
/// uniform) mixed with a hash of its day, dimension and key. Two rows
/// share a tag with odds of about 2^-64 per pair. Bounded: when full it
/// starts again empty (it is only a cache).
#[derive(Debug, Default)]
pub struct KnownUniques {
    tags: FxSet<u128>,
}

impl KnownUniques {
    /// About 48 MiB when full.
    const MAX: usize = 2_000_000;

    /// The tag of row (period, dim, key, ip_key) of `rollup_uniques`.
    pub fn tag(period: &str, dim: &str, key: &str, ip_key: &[u8]) -> u128 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (period, dim, key, ip_key).hash(&mut h);
        let h = h.finish();
        let mut prefix = [0u8; 16];
        let n = ip_key.len().min(16);
        prefix[..n].copy_from_slice(&ip_key[..n]);
        u128::from_le_bytes(prefix) ^ (u128::from(h) << 64 | u128::from(h.rotate_left(29)))
    }

    pub fn contains(&self, tag: u128) -> bool {
        self.tags.contains(&tag)
    }

    /// Forgets every row (the store was emptied or replaced).
    pub fn clear(&mut self) {
        self.tags.clear();
    }

    /// Records the tags of rows a transaction stored, once it has
    /// committed.
    pub fn add(&mut self, tags: Vec<u128>) {
        if self.tags.len() + tags.len() > Self::MAX {
            self.tags.clear();
        }
        self.tags.extend(tags);
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// Runs a plan inside an open SQLite transaction, as [`apply_sqlite_sets`]
/// does with sets read afresh (for one-off use: a writer keeps its
/// [`UniqueSets`]).
pub fn apply_sqlite(tx: &rusqlite::Transaction<'_>, plan: &Plan) -> rusqlite::Result<()> {
    apply_sqlite_sets(tx, plan, &mut UniqueSets::default()).map(drop)
}

/// Runs a plan inside an open SQLite transaction: the totals, first
/// completions and repeat days of [`Plan::statements`] (each statement
/// prepared once per plan and bound straight from the plan), and the
/// distinct addresses as runs ([`crate::uniques`]), which `sets` says are
/// new. Returns how many distinct-address members were added.
pub fn apply_sqlite_sets(
    tx: &rusqlite::Transaction<'_>,
    plan: &Plan,
    sets: &mut UniqueSets,
) -> rusqlite::Result<usize> {
    use rusqlite::params;
    let sorted = plan.sorted();
    if !sorted.daily.is_empty() {
        let mut stmt = tx.prepare_cached(DAILY_SQL)?;
        for (day, dim, key, [started, closed, completed, bytes]) in sorted.daily {
            stmt.execute(params![day, dim, key, started, closed, completed, bytes])?;
        }
    }
    if !sorted.firsts.is_empty() {
        let mut stmt = tx.prepare_cached(IP_SQL)?;
        for (ip_key, at) in sorted.firsts {
            stmt.execute(params![&ip_key[..], at])?;
        }
    }
    // A repeat day is new only once per address and day; its periods get
    // the address then (and `sets` skips it where it is already counted).
    let mut repeats: Vec<(i64, [u8; 16])> = Vec::new();
    if !sorted.starts.is_empty() {
        let mut stmt = tx.prepare_cached(REPEAT_SQL)?;
        for (day, ip_key, started) in sorted.starts {
            if stmt.execute(params![day, &ip_key[..], started])? == 1 {
                repeats.push((day, ip_key));
            }
        }
    }
    let entries = sorted
        .uniques
        .iter()
        .map(|&(day, dim, key, ip)| (day, dim, plan.strings.get(key), ip))
        .chain(repeats.iter().map(|&(day, ip)| (day, REPEAT_DIMENSION, "", ip)));
    sets.add(tx, entries)
}

/// Adds the per-period repeat members for every `rollup_repeat` row, for
/// a ledger whose repeats were kept per day only. Idempotent; returns the
/// members it added.
pub fn backfill_repeat_periods(
    tx: &rusqlite::Transaction<'_>,
    sets: &mut UniqueSets,
) -> rusqlite::Result<usize> {
    // A day at a time, in order: the sets hold that day's periods (and
    // let go of older ones), not every period of the ledger at once.
    let days: Vec<i64> = tx
        .prepare("SELECT DISTINCT day FROM rollup_repeat ORDER BY day")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut added = 0;
    let mut stmt = tx.prepare("SELECT ip_key FROM rollup_repeat WHERE day = ?1")?;
    for day in days {
        let keys: Vec<[u8; 16]> = stmt
            .query_map([day], |r| Ok(crate::uniques::key16(r.get_ref(0)?.as_blob()?)))?
            .collect::<Result<_, _>>()?;
        added += sets.add(tx, keys.iter().map(|&ip| (day, REPEAT_DIMENSION, "", ip)))?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The plan as first written (one BTree entry and one statement per
    /// start), kept as the reference the faster plan must agree with.
    fn reference_statements(rows: &[RollupRow<'_>]) -> Vec<(&'static str, Vec<Value>)> {
        let mut daily: BTreeMap<(i64, &'static str, String), [i64; 4]> = BTreeMap::new();
        let mut uniques: BTreeSet<(String, &'static str, String, [u8; 16])> = BTreeSet::new();
        let mut firsts: BTreeMap<[u8; 16], i64> = BTreeMap::new();
        let mut starts: BTreeSet<(i64, [u8; 16], i64)> = BTreeSet::new();
        for r in rows {
            let day = r.started_at_ms.div_euclid(MS_PER_DAY);
            let keys = [
                ("all", String::new()),
                ("network", r.network.to_string()),
                ("country", r.country.unwrap_or("unknown").to_string()),
                ("kommune", r.kommune.unwrap_or("").to_string()),
                ("title", r.decoy_id.to_string()),
                ("client", client_family(r.client)),
            ];
            for (dim, key) in keys {
                if dim == "kommune" && key.is_empty() {
                    continue;
                }
                if !r.is_close {
                    continue;
                }
                let e = daily.entry((day, dim, key)).or_default();
                e[0] += i64::from(r.downloading);
                e[1] += 1;
                e[2] += i64::from(r.completed && r.downloading);
                e[3] += r.bytes_sent as i64;
            }
            if r.is_open && r.address_known {
                for period in periods(day) {
                    uniques.insert((period.clone(), "all", String::new(), r.ip_key));
                    uniques.insert((
                        period.clone(),
                        "country",
                        r.country.unwrap_or("unknown").to_string(),
                        r.ip_key,
                    ));
                    if let Some(k) = r.kommune {
                        uniques.insert((period, "kommune", k.to_string(), r.ip_key));
                    }
                }
            }
            if r.is_close && r.downloading && r.address_known {
                starts.insert((day, r.ip_key, r.started_at_ms));
                if r.completed {
                    let first = firsts.entry(r.ip_key).or_insert(i64::MAX);
                    *first = (*first).min(r.ended_at_ms);
                    for period in periods(day) {
                        uniques.insert((period, "delivered", String::new(), r.ip_key));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for ((day, dim, key), [a, b, c, d]) in daily {
            let v = vec![
                Value::Int(day),
                Value::Text(dim.into()),
                Value::Text(key),
                Value::Int(a),
                Value::Int(b),
                Value::Int(c),
                Value::Int(d),
            ];
            out.push((DAILY_SQL, v));
        }
        for (period, dim, key, ip) in uniques {
            let v = vec![
                Value::Text(period),
                Value::Text(dim.into()),
                Value::Text(key),
                Value::Blob(ip.to_vec()),
            ];
            out.push((UNIQUES_SQL, v));
        }
        for (ip, at) in firsts {
            out.push((IP_SQL, vec![Value::Blob(ip.to_vec()), Value::Int(at)]));
        }
        for (day, ip, at) in starts {
            out.extend(repeat_statements(day, ip.to_vec(), at));
        }
        out
    }

    /// A start's repeat row for its day, then for each period of the day.
    fn repeat_statements(day: i64, ip: Vec<u8>, at: i64) -> Vec<(&'static str, Vec<Value>)> {
        let mut out = vec![(
            REPEAT_SQL,
            vec![Value::Int(day), Value::Blob(ip.clone()), Value::Int(at)],
        )];
        for period in periods(day) {
            out.push((
                REPEAT_PERIOD_SQL,
                vec![Value::Text(period), Value::Blob(ip.clone()), Value::Int(at)],
            ));
        }
        out
    }

    /// Pseudo-random rows with many collisions: few days, addresses,
    /// countries, kommuner (some empty), clients and titles.
    fn rows(seed: u64, n: usize) -> Vec<RollupRow<'static>> {
        const COUNTRIES: [Option<&str>; 4] = [Some("NO"), Some("DE"), Some("unknown"), None];
        const KOMMUNER: [Option<&str>; 4] = [Some("0301"), Some("4601"), Some(""), None];
        const CLIENTS: [Option<&str>; 6] = [
            Some("libtorrent 2.0.8.0"),
            Some("libtorrent 2.0.9.0"),
            Some("Deluge"),
            Some("unknown -XX1-"),
            Some(" "),
            None,
        ];
        let mut x = seed;
        let mut next = move |m: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % m
        };
        (0..n)
            .map(|_| {
                let start = 20_780 * MS_PER_DAY + next(9 * MS_PER_DAY as u64) as i64 - 2 * MS_PER_DAY;
                let mut ip_key = [0u8; 16];
                ip_key[0] = next(40) as u8;
                // Open, close, or (one in six) a one-record session.
                let kind = next(6);
                RollupRow {
                    is_open: kind < 3 || kind == 5,
                    is_close: kind >= 3,
                    started_at_ms: start,
                    ended_at_ms: start + next(3 * MS_PER_DAY as u64) as i64,
                    network: if next(5) == 0 { "ed2k" } else { "bittorrent" },
                    decoy_id: next(7) as i64 - 1,
                    ip_key,
                    address_known: next(8) != 0,
                    client: CLIENTS[next(6) as usize],
                    completed: next(3) == 0,
                    downloading: next(6) != 0,
                    bytes_sent: next(1 << 40),
                    country: COUNTRIES[next(4) as usize],
                    kommune: KOMMUNER[next(4) as usize],
                }
            })
            .collect()
    }

    #[test]
    fn plan_agrees_with_the_reference() {
        for seed in 0..20 {
            let rows = rows(seed, 1 + seed as usize * 37);
            let new = Plan::new(&rows).statements();
            let mut reference = reference_statements(&rows);
            // The reference runs every start; the plan only each day's
            // latest per address, which inserts the same repeat rows.
            let mut latest: BTreeMap<(i64, Vec<u8>), i64> = BTreeMap::new();
            reference.retain(|(sql, v)| match (*sql, v.as_slice()) {
                (REPEAT_SQL, [Value::Int(d), Value::Blob(ip), Value::Int(at)]) => {
                    let e = latest.entry((*d, ip.clone())).or_insert(i64::MIN);
                    *e = (*e).max(*at);
                    false
                }
                (REPEAT_PERIOD_SQL, _) => false,
                _ => true,
            });
            for ((d, ip), at) in latest {
                reference.extend(repeat_statements(d, ip, at));
            }
            assert_eq!(new, reference, "seed {seed}");
        }
    }

    /// A record whose address was erased before its aggregates were made
    /// counts as a session but adds no address, delivery or repeat rows.
    #[test]
    fn an_erased_address_counts_the_session_not_an_address() {
        let known = rows(7, 300);
        let erased: Vec<RollupRow<'_>> = known
            .iter()
            .map(|r| RollupRow {
                address_known: false,
                ..r.clone()
            })
            .collect();
        let statements = Plan::new(&erased).statements();
        assert!(
            statements.iter().all(|(sql, _)| *sql == DAILY_SQL),
            "only daily counters"
        );
        let daily = |rows: &[RollupRow<'_>]| -> Vec<_> {
            Plan::new(rows)
                .statements()
                .into_iter()
                .filter(|(sql, _)| *sql == DAILY_SQL)
                .collect()
        };
        assert_eq!(daily(&erased), daily(&known));
        assert!(Plan::new(&known).statements().len() > statements.len());
    }

    /// A one-record session counts exactly as its open and close records.
    #[test]
    fn a_one_record_session_counts_as_open_and_close() {
        for seed in 0..10 {
            let mut rows = rows(200 + seed, 50);
            let split: Vec<RollupRow<'_>> = rows
                .iter()
                .flat_map(|r| {
                    let open = RollupRow {
                        is_open: true,
                        is_close: false,
                        ..r.clone()
                    };
                    let close = RollupRow {
                        is_open: false,
                        is_close: true,
                        ..r.clone()
                    };
                    [open, close]
                })
                .collect();
            for r in &mut rows {
                r.is_open = true;
                r.is_close = true;
            }
            assert_eq!(
                Plan::new(&rows).statements(),
                Plan::new(&split).statements(),
                "seed {seed}"
            );
        }
    }

    /// Every aggregate as rows, whichever way the distinct addresses are
    /// stored (runs, or the reference's row per member).
    fn dump(c: &rusqlite::Connection) -> Vec<String> {
        let mut out = Vec::new();
        let has_rows: bool = c
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'rollup_uniques'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        for table in ["rollup_daily", "rollup_uniques", "rollup_ip", "rollup_repeat"] {
            if table == "rollup_uniques" && !has_rows {
                out.extend(crate::uniques::rows(c).unwrap().into_iter().map(|(p, d, k, ip)| {
                    use rusqlite::types::Value as V;
                    format!(
                        "{table}: {:?}|{:?}|{:?}|{:?}",
                        V::Text(p),
                        V::Text(d),
                        V::Text(k),
                        V::Blob(ip)
                    )
                }));
                continue;
            }
            let mut stmt = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap();
            out.extend(rows.map(|r| format!("{table}: {}", r.unwrap())));
        }
        out.sort();
        out
    }

    /// The first layout's table of a row per distinct-address member,
    /// which the reference statements write.
    const MEMBER_ROWS_SCHEMA: &str = "
        CREATE TABLE rollup_uniques (period TEXT NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL,
            ip_key BLOB NOT NULL, PRIMARY KEY (period, dim, key, ip_key)) WITHOUT ROWID;";

    #[test]
    fn applied_plans_write_what_the_reference_writes() {
        let schema = format!("{SQLITE_SCHEMA}{}", crate::uniques::SCHEMA);
        let mut fast = rusqlite::Connection::open_in_memory().unwrap();
        let mut slow = rusqlite::Connection::open_in_memory().unwrap();
        let mut kept = rusqlite::Connection::open_in_memory().unwrap();
        fast.execute_batch(&schema).unwrap();
        slow.execute_batch(SQLITE_SCHEMA).unwrap();
        slow.execute_batch(MEMBER_ROWS_SCHEMA).unwrap();
        kept.execute_batch(&schema).unwrap();
        let mut sets = UniqueSets::default();
        let mut added = 0;
        // Batches in turn, so later ones meet members (and first
        // completions) the earlier ones wrote.
        for seed in 0..8 {
            let rows = rows(100 + seed, 300);
            // Sets read afresh for every batch.
            let tx = fast.transaction().unwrap();
            apply_sqlite(&tx, &Plan::new(&rows)).unwrap();
            tx.commit().unwrap();
            // Sets kept from batch to batch; one batch rolled back, whose
            // members the sets must not go on taking as stored.
            let plan = Plan::new(&rows);
            if seed == 3 {
                let tx = kept.transaction().unwrap();
                assert!(apply_sqlite_sets(&tx, &plan, &mut sets).unwrap() > 0);
                tx.rollback().unwrap();
            }
            let tx = kept.transaction().unwrap();
            added += apply_sqlite_sets(&tx, &plan, &mut sets).unwrap();
            tx.commit().unwrap();
            let tx = slow.transaction().unwrap();
            for (sql, params) in reference_statements(&rows) {
                tx.execute(sql, rusqlite::params_from_iter(params.iter()))
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let (a, b) = (dump(&fast), dump(&slow));
        assert!(
            a.iter().any(|r| r.starts_with("rollup_repeat")),
            "repeats exercised"
        );
        assert!(
            a.iter().any(|r| r.contains("\"repeat\"")),
            "repeat periods exercised"
        );
        assert_eq!(a, b);
        assert_eq!(dump(&kept), b, "with sets kept");
        let members = b.iter().filter(|r| r.starts_with("rollup_uniques")).count();
        assert_eq!(added, members, "each member added once");
        // Runs were merged: far fewer than a run per batch and key.
        let runs: i64 = kept
            .query_row("SELECT count(*) FROM rollup_runs", [], |r| r.get(0))
            .unwrap();
        let keys: i64 = kept
            .query_row(
                "SELECT count(*) FROM (SELECT DISTINCT period, dim, key FROM rollup_runs)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(runs < keys * 4, "{runs} runs for {keys} keys");
    }

    #[test]
    fn runs_merge_as_they_pile_up_and_keep_every_member_once() {
        let schema = format!("{SQLITE_SCHEMA}{}", crate::uniques::SCHEMA);
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(&schema).unwrap();
        let mut sets = UniqueSets::default();
        let day = days_from_civil(2026, 11, 30);
        let mut all = std::collections::BTreeSet::new();
        // 300 commits of 1..=40 new addresses each, some repeated.
        for commit in 0u32..300 {
            let tx = c.transaction().unwrap();
            let ips: Vec<[u8; 16]> = (0..commit % 40 + 1)
                .map(|i| {
                    let n = (commit * 37 + i * 101) % 5000;
                    let mut k = [0u8; 16];
                    k[..4].copy_from_slice(&n.to_be_bytes());
                    k[15] = 0xa5;
                    k
                })
                .collect();
            all.extend(ips.iter().copied());
            sets.add(&tx, ips.iter().map(|&ip| (day, "all", "", ip))).unwrap();
            tx.commit().unwrap();
        }
        let counts = crate::uniques::counts(&c, &periods(day)[3], "all").unwrap();
        assert_eq!(counts, vec![(String::new(), all.len() as i64)]);
        let runs: i64 = c
            .query_row(
                "SELECT count(*) FROM rollup_runs WHERE period = ?1",
                [&periods(day)[0]],
                |r| r.get(0),
            )
            .unwrap();
        assert!(runs <= 3 * 6, "{runs} runs after 300 commits");
        // A second writer on the same file (other sets): nothing twice.
        let mut other = UniqueSets::default();
        let tx = c.transaction().unwrap();
        let again: Vec<[u8; 16]> = all.iter().copied().take(100).collect();
        assert_eq!(
            other
                .add(&tx, again.iter().map(|&ip| (day, "all", "", ip)))
                .unwrap(),
            0
        );
        let mut fresh = [0u8; 16];
        fresh[0] = 0xee;
        assert_eq!(other.add(&tx, [(day, "all", "", fresh)]).unwrap(), 4);
        tx.commit().unwrap();
        // The first writer sees the version moved and reads again.
        let tx = c.transaction().unwrap();
        assert_eq!(sets.add(&tx, [(day, "all", "", fresh)]).unwrap(), 0);
        tx.commit().unwrap();
    }

    #[test]
    fn periods_follow_the_calendar_and_iso_weeks() {
        // 2026-11-29 is a Sunday in ISO week 48; 2027-01-01 (Friday) is in
        // week 53 of 2026; 2024-12-30 (Monday) is in week 1 of 2025.
        let day = |y, m, d| days_from_civil(y, m, d);
        assert_eq!(
            periods(day(2026, 11, 29)),
            ["d2026-11-29", "w2026-48", "m2026-11", "y2026"].map(String::from)
        );
        assert_eq!(iso_week(day(2027, 1, 1)), (2026, 53));
        assert_eq!(iso_week(day(2024, 12, 30)), (2025, 1));
        assert_eq!(iso_week(day(2026, 1, 1)), (2026, 1));
        assert_eq!(civil(day(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn covers_are_exact_and_use_the_largest_periods() {
        let day = |y, m, d| days_from_civil(y, m, d);
        assert_eq!(cover(day(2026, 1, 1), day(2026, 12, 31)), ["y2026"]);
        assert_eq!(cover(day(2026, 3, 1), day(2026, 3, 31)), ["m2026-03"]);
        // 2026-03-16 is a Monday.
        assert_eq!(
            cover(day(2026, 3, 14), day(2026, 4, 30)),
            [
                "d2026-03-14",
                "d2026-03-15",
                "w2026-12",
                "w2026-13",
                "d2026-03-30",
                "d2026-03-31",
                "m2026-04"
            ]
        );
        assert!(cover(day(2026, 3, 2), day(2026, 3, 1)).is_empty());
        // Every window's cover holds each of its days exactly once.
        for (from, to) in [
            (day(2025, 12, 20), day(2027, 2, 3)),
            (day(2026, 6, 5), day(2026, 6, 9)),
        ] {
            let mut days = Vec::new();
            for label in cover(from, to) {
                days.extend((from - 400..=to + 400).filter(|&d| periods(d).contains(&label)));
            }
            assert_eq!(days, (from..=to).collect::<Vec<_>>());
        }
        assert_eq!(day_of_label("d2026-11-29"), Some(day(2026, 11, 29)));
        assert_eq!(day_of_label("d2026-02-30"), None);
        assert_eq!(day_of_label("m2026-11"), None);
    }

    #[test]
    fn client_families_drop_versions() {
        assert_eq!(client_family(Some("libtorrent 2.0.8.0")), "libtorrent");
        assert_eq!(client_family(Some("Transmission 3.00")), "Transmission");
        assert_eq!(client_family(Some("Deluge")), "Deluge");
        assert_eq!(client_family(None), "unknown");
        assert_eq!(client_family(Some("unknown XyZ.abc-")), "unknown");
    }
}
