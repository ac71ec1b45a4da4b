//! Aggregates kept beside the chain, so reports over a hundred million
//! sessions read thousands of rows, and so they survive the erasure of raw
//! addresses (they never hold one: addresses enter as a keyed hash).
//!
//! Every committed batch of records updates, in the same transaction:
//! - `rollup_daily`: per UTC day (the session's start) and dimension key,
//!   downloads (sessions whose peer lacked pieces at the start; counted
//!   when they end), sessions ended, files delivered (downloads that ended
//!   complete) and bytes sent;
//! - `rollup_uniques`: per period (day, ISO week, month, year) and
//!   dimension key, each distinct address key once: every address that
//!   asked for a decoy, and (dimension `delivered`) every address that
//!   received a whole file;
//! - `rollup_ip`: per address key, when it first received the whole file;
//! - `rollup_repeat`: per day, address keys whose download started after
//!   they had received the warning (the repeat downloaders).
//!
//! Address keys are HMAC-SHA256 of the address under a secret kept in the
//! ledger: pseudonyms, not anonymous. Whoever holds the ledger file holds
//! the secret too.
//!
//! The statements are plain SQL that SQLite and PostgreSQL both run
//! (`$n` parameters, `ON CONFLICT`), so a fleet's PostgreSQL store applies
//! exactly the same updates ([`Plan::statements`]).

use std::collections::{BTreeMap, BTreeSet};

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
CREATE TABLE IF NOT EXISTS rollup_uniques (
    period TEXT NOT NULL,          -- d2026-11-29, w2026-48, m2026-11, y2026
    dim TEXT NOT NULL,
    key TEXT NOT NULL,
    ip_key BLOB NOT NULL,
    PRIMARY KEY (period, dim, key, ip_key)
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
    pub is_open: bool,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: &'a str,
    pub decoy_id: i64,
    pub ip_key: [u8; 16],
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
    // An unrecognised peer id is named `unknown` plus its first bytes:
    // one key for all of them, so made-up ids cannot add keys without end.
    let Some(name) = name
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "unknown" && !n.starts_with("unknown "))
    else {
        return "unknown".into();
    };
    match name.rsplit_once(' ') {
        Some((family, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => family.to_string(),
        _ => name.to_string(),
    }
}

fn civil(day: i64) -> (i64, u32, u32) {
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

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
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

/// (day, dimension, key).
type DailyKey = (i64, &'static str, String);

/// The updates one batch makes, aggregated.
#[derive(Debug, Default)]
pub struct Plan {
    /// (started, closed, completed, bytes).
    daily: BTreeMap<DailyKey, [i64; 4]>,
    uniques: BTreeSet<(String, &'static str, String, [u8; 16])>,
    /// Earliest completion per address key in the batch.
    firsts: BTreeMap<[u8; 16], i64>,
    /// (day, address key, started_at_ms) of every download started.
    starts: BTreeSet<(i64, [u8; 16], i64)>,
}

impl Plan {
    pub fn new(rows: &[RollupRow<'_>]) -> Self {
        let mut plan = Plan::default();
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
                // Only Norwegian sessions placed in a kommune count there.
                if dim == "kommune" && key.is_empty() {
                    continue;
                }
                if r.is_open {
                    continue;
                }
                let e = plan.daily.entry((day, dim, key)).or_default();
                e[0] += i64::from(r.downloading);
                e[1] += 1;
                e[2] += i64::from(r.completed && r.downloading);
                e[3] += r.bytes_sent as i64;
            }
            if r.is_open {
                for period in periods(day) {
                    plan.uniques
                        .insert((period.clone(), "all", String::new(), r.ip_key));
                    plan.uniques.insert((
                        period.clone(),
                        "country",
                        r.country.unwrap_or("unknown").to_string(),
                        r.ip_key,
                    ));
                    if let Some(k) = r.kommune {
                        plan.uniques.insert((period, "kommune", k.to_string(), r.ip_key));
                    }
                }
            } else if r.downloading {
                plan.starts.insert((day, r.ip_key, r.started_at_ms));
                if r.completed {
                    // The warning is delivered by the session's end.
                    let first = plan.firsts.entry(r.ip_key).or_insert(i64::MAX);
                    *first = (*first).min(r.ended_at_ms);
                    for period in periods(day) {
                        plan.uniques
                            .insert((period, "delivered", String::new(), r.ip_key));
                    }
                }
            }
        }
        plan
    }

    /// The statements, in order: totals, distinct addresses, first
    /// completions, then repeats (which read the first completions).
    pub fn statements(&self) -> Vec<(&'static str, Vec<Value>)> {
        let mut out = Vec::new();
        for ((day, dim, key), [started, closed, completed, bytes]) in &self.daily {
            out.push((
                "INSERT INTO rollup_daily (day, dim, key, started, closed, completed, bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (day, dim, key) DO UPDATE SET started = rollup_daily.started + excluded.started,
                 closed = rollup_daily.closed + excluded.closed,
                 completed = rollup_daily.completed + excluded.completed, bytes = rollup_daily.bytes + excluded.bytes",
                vec![
                    Value::Int(*day),
                    Value::Text(dim.to_string()),
                    Value::Text(key.clone()),
                    Value::Int(*started),
                    Value::Int(*closed),
                    Value::Int(*completed),
                    Value::Int(*bytes),
                ],
            ));
        }
        for (period, dim, key, ip_key) in &self.uniques {
            out.push((
                "INSERT INTO rollup_uniques (period, dim, key, ip_key) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                vec![
                    Value::Text(period.clone()),
                    Value::Text(dim.to_string()),
                    Value::Text(key.clone()),
                    Value::Blob(ip_key.to_vec()),
                ],
            ));
        }
        for (ip_key, at) in &self.firsts {
            out.push((
                "INSERT INTO rollup_ip (ip_key, first_completed_ms) VALUES ($1, $2) ON CONFLICT (ip_key) DO UPDATE
                 SET first_completed_ms = CASE WHEN rollup_ip.first_completed_ms IS NULL
                     OR excluded.first_completed_ms < rollup_ip.first_completed_ms
                     THEN excluded.first_completed_ms ELSE rollup_ip.first_completed_ms END",
                vec![Value::Blob(ip_key.to_vec()), Value::Int(*at)],
            ));
        }
        for (day, ip_key, started) in &self.starts {
            out.push((
                "INSERT INTO rollup_repeat (day, ip_key) SELECT $1, $2 WHERE EXISTS
                 (SELECT 1 FROM rollup_ip WHERE ip_key = $2 AND first_completed_ms < $3) ON CONFLICT DO NOTHING",
                vec![Value::Int(*day), Value::Blob(ip_key.to_vec()), Value::Int(*started)],
            ));
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

/// Runs a plan inside an open SQLite transaction.
pub(crate) fn apply_sqlite(tx: &rusqlite::Transaction<'_>, plan: &Plan) -> rusqlite::Result<()> {
    for (sql, params) in plan.statements() {
        tx.prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn client_families_drop_versions() {
        assert_eq!(client_family(Some("libtorrent 2.0.8.0")), "libtorrent");
        assert_eq!(client_family(Some("Transmission 3.00")), "Transmission");
        assert_eq!(client_family(Some("Deluge")), "Deluge");
        assert_eq!(client_family(None), "unknown");
        assert_eq!(client_family(Some("unknown XyZ.abc-")), "unknown");
    }
}
