//! Reports from the aggregates ([`crate::rollup`]): per period (day, ISO
//! week, month, year or the whole window) and per dimension key, downloads
//! started, files delivered, bytes sent, distinct addresses and repeat
//! downloaders. The arithmetic is here; a store answers three narrow
//! questions ([`RollupSource`]), so SQLite and PostgreSQL give the same
//! report.

use crate::rollup::{civil, days_from_civil, iso_week, periods};
use serde::Serialize;
use std::collections::BTreeMap;

const MS_PER_DAY: i64 = 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Week,
    Month,
    Year,
    /// One row per key for the whole window.
    Total,
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            "year" => Granularity::Year,
            "total" => Granularity::Total,
            _ => return Err(format!("{s:?}: use day, week, month, year or total")),
        })
    }
}

/// Which distinct-address rows to count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeriodSelection {
    /// One stored period (`d2026-11-29`, `w2026-48`, `m2026-11`, `y2026`).
    Exact(String),
    /// The days from..=to (labels `dYYYY-MM-DD`).
    Days { from: String, to: String },
}

/// What a store answers for reports.
pub trait RollupSource {
    /// `(day, key, [started, closed, completed, bytes])` of one dimension.
    fn daily(
        &mut self,
        dim: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, String, [i64; 4])>, String>;
    /// Distinct address keys per dimension key.
    fn uniques(&mut self, dim: &str, periods: &PeriodSelection) -> Result<Vec<(String, i64)>, String>;
    /// Distinct address keys that started a download after receiving the
    /// warning, on days from..=to.
    fn repeats(&mut self, from_day: i64, to_day: i64) -> Result<i64, String>;
    /// The first UTC day with a session, if any (the default window start).
    fn first_day(&mut self) -> Result<Option<i64>, String> {
        Ok(None)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// `2026-11-29`, `2026-W48`, `2026-11`, `2026`, or `FROM..TO`.
    pub period: String,
    pub key: String,
    pub downloads_started: i64,
    pub sessions_closed: i64,
    pub files_delivered: i64,
    pub bytes_sent: i64,
    /// For the dimensions distinct addresses are kept for (all, country,
    /// kommune).
    pub unique_ips: Option<i64>,
    /// Only for the total (`all`): addresses that received a whole file.
    pub delivered_ips: Option<i64>,
    /// Only for the total (`all`).
    pub repeat_ips: Option<i64>,
}

fn label_day(day: i64) -> String {
    periods(day)[0][1..].to_string()
}

/// The bucket a day falls in, its label, and the bucket's full day range.
fn bucket(day: i64, by: Granularity, from: i64, to: i64) -> (String, i64, i64) {
    let [d, _, m, y] = periods(day);
    match by {
        Granularity::Day => (d[1..].to_string(), day, day),
        Granularity::Week => {
            let (wy, w) = iso_week(day);
            let monday = day - (day + 3).rem_euclid(7);
            (format!("{wy:04}-W{w:02}"), monday, monday + 6)
        }
        Granularity::Month => {
            let (year, month, _) = civil(day);
            let first = days_from_civil(year, month, 1);
            let next = if month == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, month + 1, 1)
            };
            (m[1..].to_string(), first, next - 1)
        }
        Granularity::Year => {
            let (year, _, _) = civil(day);
            let first = days_from_civil(year, 1, 1);
            (y[1..].to_string(), first, days_from_civil(year + 1, 1, 1) - 1)
        }
        Granularity::Total => (format!("{}..{}", label_day(from), label_day(to)), from, to),
    }
}

/// The report of `dim` over UTC days `from_day..=to_day`, by `by`.
pub fn report(
    src: &mut dyn RollupSource,
    dim: &str,
    from_day: i64,
    to_day: i64,
    by: Granularity,
) -> Result<Vec<ReportRow>, String> {
    if !crate::rollup::DIMENSIONS.contains(&dim) {
        return Err(format!(
            "unknown dimension {dim:?}: use {}",
            crate::rollup::DIMENSIONS.join(", ")
        ));
    }
    let mut rows: BTreeMap<(i64, String), ReportRow> = BTreeMap::new();
    let mut buckets: BTreeMap<i64, (String, i64, i64)> = BTreeMap::new();
    // A dimension has many keys a day: each day's bucket is worked out once.
    let mut bucket_of: BTreeMap<i64, (String, i64, i64)> = BTreeMap::new();
    for (day, key, [started, closed, completed, bytes]) in src.daily(dim, from_day, to_day)? {
        let (label, first, last) = bucket_of
            .entry(day)
            .or_insert_with(|| bucket(day, by, from_day, to_day))
            .clone();
        buckets
            .entry(first)
            .or_insert_with(|| (label.clone(), first, last));
        let row = rows.entry((first, key.clone())).or_insert_with(|| ReportRow {
            period: label,
            key,
            ..Default::default()
        });
        row.downloads_started += started;
        row.sessions_closed += closed;
        row.files_delivered += completed;
        row.bytes_sent += bytes;
    }
    let with_uniques = crate::rollup::UNIQUE_DIMENSIONS.contains(&dim);
    for (first, (_, bfirst, blast)) in &buckets {
        // A bucket wholly inside the window has its own stored period; a
        // cut one is counted over its days.
        let (lo, hi) = ((*bfirst).max(from_day), (*blast).min(to_day));
        let whole = lo == *bfirst && hi == *blast && by != Granularity::Total;
        if with_uniques {
            let selection = if whole {
                let [d, w, m, y] = periods(lo);
                PeriodSelection::Exact(match by {
                    Granularity::Day => d,
                    Granularity::Week => w,
                    Granularity::Month => m,
                    _ => y,
                })
            } else {
                PeriodSelection::Days {
                    from: periods(lo)[0].clone(),
                    to: periods(hi)[0].clone(),
                }
            };
            for (key, n) in src.uniques(dim, &selection)? {
                if let Some(row) = rows.get_mut(&(*first, key)) {
                    row.unique_ips = Some(n);
                }
            }
        }
        if dim == "all" {
            let repeats = src.repeats(lo, hi)?;
            let selection = PeriodSelection::Days {
                from: periods(lo)[0].clone(),
                to: periods(hi)[0].clone(),
            };
            let delivered = src.uniques("delivered", &selection)?.first().map_or(0, |d| d.1);
            if let Some(row) = rows.get_mut(&(*first, String::new())) {
                row.repeat_ips = Some(repeats);
                row.delivered_ips = Some(delivered);
            }
        }
    }
    Ok(rows.into_values().collect())
}

/// The campaign's figures for a window, and a sentence in its own words.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CampaignSummary {
    pub from: String,
    pub to: String,
    pub downloads_started: i64,
    pub files_delivered: i64,
    pub bytes_sent: i64,
    pub unique_ips: i64,
    /// Addresses that received at least one whole file.
    pub delivered_ips: i64,
    pub repeat_ips: i64,
    /// Countries with at least one download (addresses the database could
    /// not place are not a country).
    pub countries: i64,
    /// Norwegian municipalities with at least one download.
    pub kommuner: i64,
    pub kommuner_total: i64,
    pub sentence: String,
}

/// Groups digits in threes: 9012345 → 9,012,345.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn campaign_summary(
    src: &mut dyn RollupSource,
    from_day: i64,
    to_day: i64,
    kommuner_total: i64,
) -> Result<CampaignSummary, String> {
    let total = report(src, "all", from_day, to_day, Granularity::Total)?;
    let t = total.first().cloned().unwrap_or_default();
    let countries = report(src, "country", from_day, to_day, Granularity::Total)?
        .iter()
        .filter(|r| r.key != "unknown" && r.downloads_started > 0)
        .count() as i64;
    let kommuner = report(src, "kommune", from_day, to_day, Granularity::Total)?
        .iter()
        .filter(|r| r.downloads_started > 0)
        .count() as i64;
    let from = label_day(from_day);
    let to = label_day(to_day);
    let plural =
        |n: i64, one: &str, many: &str| format!("{} {}", thousands(n), if n == 1 { one } else { many });
    let sentence = format!(
        "Since {from}: {} delivered to {} in {}, incl. {} of {} Norwegian municipalities.",
        plural(t.files_delivered, "file", "files"),
        plural(t.delivered_ips.unwrap_or(0), "IP address", "IP addresses"),
        plural(countries, "country", "countries"),
        thousands(kommuner),
        thousands(kommuner_total),
    );
    Ok(CampaignSummary {
        from,
        to,
        downloads_started: t.downloads_started,
        files_delivered: t.files_delivered,
        bytes_sent: t.bytes_sent,
        unique_ips: t.unique_ips.unwrap_or(0),
        delivered_ips: t.delivered_ips.unwrap_or(0),
        repeat_ips: t.repeat_ips.unwrap_or(0),
        countries,
        kommuner,
        kommuner_total,
        sentence,
    })
}

/// UTC day number of a Unix millisecond time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

impl crate::LedgerStore {
    /// The first UTC day with a download, if any.
    pub fn first_day(&self) -> Result<Option<i64>, crate::LedgerError> {
        Ok(self
            .conn
            .query_row("SELECT min(day) FROM rollup_daily WHERE dim = 'all'", [], |r| {
                r.get(0)
            })?)
    }
}

impl RollupSource for crate::LedgerStore {
    fn daily(
        &mut self,
        dim: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, String, [i64; 4])>, String> {
        // The key is (day, dim, key): one seek per day of the window reads
        // only this dimension's rows; a range over days would read every
        // dimension's (a year of titles is tens of millions of rows).
        let mut stmt = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE days(day) AS (SELECT ?1 WHERE ?1 <= ?2 UNION ALL SELECT day + 1 FROM days WHERE day < ?2)
                 SELECT r.day, r.key, r.started, r.closed, r.completed, r.bytes
                 FROM days CROSS JOIN rollup_daily r ON r.day = days.day AND r.dim = ?3",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(rusqlite::params![from_day, to_day, dim], |r| {
                Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]))
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    fn uniques(&mut self, dim: &str, periods: &PeriodSelection) -> Result<Vec<(String, i64)>, String> {
        // A run of days is the union of the fewest stored periods that
        // make it up (a calendar year is one), not of its days.
        if let PeriodSelection::Days { from, to } = periods {
            if let (Some(lo), Some(hi)) = (crate::rollup::day_of_label(from), crate::rollup::day_of_label(to))
            {
                return self.uniques_over(dim, &crate::rollup::cover(lo, hi));
            }
        }
        if !self.has_member_rows().map_err(|e| e.to_string())? {
            return match periods {
                PeriodSelection::Exact(p) => {
                    crate::uniques::counts(&self.conn, p, dim).map_err(|e| e.to_string())
                }
                PeriodSelection::Days { from, to } => {
                    // Labels that are not days (only a caller's own): every
                    // stored period between them, as the rows' order goes.
                    let labels: Vec<String> = self
                        .conn
                        .prepare_cached(
                            "SELECT DISTINCT period FROM rollup_runs WHERE period >= ?1 AND period <= ?2 AND dim = ?3",
                        )
                        .and_then(|mut st| {
                            st.query_map([from.as_str(), to.as_str(), dim], |r| r.get(0))?
                                .collect::<Result<_, _>>()
                        })
                        .map_err(|e| e.to_string())?;
                    self.union_of_runs(dim, &labels)
                }
            };
        }
        // A ledger of the first layout, opened read-only: a row per member.
        let (sql, params): (&str, Vec<String>) = match periods {
            PeriodSelection::Exact(p) => (
                "SELECT key, count(*) FROM rollup_uniques WHERE period = ?1 AND dim = ?2 GROUP BY key",
                vec![p.clone(), dim.to_string()],
            ),
            PeriodSelection::Days { from, to } => (
                "SELECT key, count(DISTINCT ip_key) FROM rollup_uniques
                 WHERE period >= ?1 AND period <= ?2 AND dim = ?3 GROUP BY key",
                vec![from.clone(), to.clone(), dim.to_string()],
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| e.to_string())?;
        let rows: Vec<(String, i64)> = rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        // Moving the rows into runs was interrupted: each key is all in one
        // or the other, so the two add up.
        if let (PeriodSelection::Exact(p), true) = (periods, self.has_runs().map_err(|e| e.to_string())?) {
            let mut sum: BTreeMap<String, i64> = rows.into_iter().collect();
            for (key, n) in crate::uniques::counts(&self.conn, p, dim).map_err(|e| e.to_string())? {
                *sum.entry(key).or_default() += n;
            }
            return Ok(sum.into_iter().collect());
        }
        Ok(rows)
    }

    fn first_day(&mut self) -> Result<Option<i64>, String> {
        crate::LedgerStore::first_day(self).map_err(|e| e.to_string())
    }

    fn repeats(&mut self, from_day: i64, to_day: i64) -> Result<i64, String> {
        if self.has_repeat_periods().map_err(|e| e.to_string())? {
            // The fewest stored periods that make up the window, as for
            // distinct addresses: a year is one period's rows.
            let periods = crate::rollup::cover(from_day, to_day);
            return Ok(self
                .uniques_over(crate::rollup::REPEAT_DIMENSION, &periods)?
                .first()
                .map_or(0, |(_, n)| *n));
        }
        // A ledger from before per-period repeats, opened read-only.
        // Distinct in a hash set here rather than SQLite's count(DISTINCT),
        // which builds a temporary index (on disk by default) of every row.
        let mut stmt = self
            .conn
            .prepare_cached("SELECT ip_key FROM rollup_repeat WHERE day >= ?1 AND day <= ?2")
            .map_err(|e| e.to_string())?;
        let mut rows = stmt.query([from_day, to_day]).map_err(|e| e.to_string())?;
        let mut seen = AddressSet::default();
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            seen.insert(
                r.get_ref(0)
                    .map_err(|e| e.to_string())?
                    .as_blob()
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(seen.len() as i64)
    }
}

/// Distinct address keys (16 bytes, HMAC output: already uniform, so the
/// first 8 bytes are the hash). Other lengths, which only a damaged file
/// holds, are kept apart and still counted exactly.
#[derive(Default)]
struct AddressSet {
    keys: std::collections::HashSet<[u8; 16], std::hash::BuildHasherDefault<PrefixHasher>>,
    other: std::collections::HashSet<Vec<u8>>,
}

impl AddressSet {
    fn insert(&mut self, key: &[u8]) {
        match <[u8; 16]>::try_from(key) {
            Ok(k) => {
                self.keys.insert(k);
            }
            Err(_) => {
                self.other.insert(key.to_vec());
            }
        }
    }

    fn len(&self) -> usize {
        self.keys.len() + self.other.len()
    }
}

/// Hashes a 16-byte key by its first 8 bytes (see [`AddressSet`]).
#[derive(Default)]
struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl crate::LedgerStore {
    /// Whether distinct addresses are still a row each (`rollup_uniques`,
    /// the first layout, in a ledger opened read-only), not runs.
    fn has_member_rows(&self) -> Result<bool, crate::LedgerError> {
        Ok(self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rollup_uniques'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Whether the ledger has runs (a ledger moving its rows into runs has
    /// both).
    fn has_runs(&self) -> Result<bool, crate::LedgerError> {
        Ok(self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'rollup_runs'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Distinct address keys per key of `dim` over the union of the runs
    /// of `periods`.
    fn union_of_runs(&mut self, dim: &str, periods: &[String]) -> Result<Vec<(String, i64)>, String> {
        let mut sets: BTreeMap<String, AddressSet> = BTreeMap::new();
        self.add_runs(dim, periods, &mut sets)?;
        Ok(sets.into_iter().map(|(k, s)| (k, s.len() as i64)).collect())
    }

    /// Adds the members of the runs of `periods` under `dim` to `sets`.
    fn add_runs(
        &mut self,
        dim: &str,
        periods: &[String],
        sets: &mut BTreeMap<String, AddressSet>,
    ) -> Result<(), String> {
        for period in periods {
            crate::uniques::for_each_member(&self.conn, period, dim, |key, ip| match sets.get_mut(key) {
                Some(set) => set.insert(ip),
                None => sets.entry(key.to_string()).or_default().insert(ip),
            })
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Distinct address keys per key of `dim` over the union of `periods`.
    fn uniques_over(&mut self, dim: &str, periods: &[String]) -> Result<Vec<(String, i64)>, String> {
        if let [one] = periods {
            return self.uniques(dim, &PeriodSelection::Exact(one.clone()));
        }
        if !self.has_member_rows().map_err(|e| e.to_string())? {
            return self.union_of_runs(dim, periods);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, ip_key FROM rollup_uniques WHERE period = ?1 AND dim = ?2")
            .map_err(|e| e.to_string())?;
        let mut sets: BTreeMap<String, AddressSet> = BTreeMap::new();
        for period in periods {
            let mut rows = stmt.query([period.as_str(), dim]).map_err(|e| e.to_string())?;
            while let Some(r) = rows.next().map_err(|e| e.to_string())? {
                let key = r
                    .get_ref(0)
                    .map_err(|e| e.to_string())?
                    .as_str()
                    .map_err(|e| e.to_string())?;
                let ip = r
                    .get_ref(1)
                    .map_err(|e| e.to_string())?
                    .as_blob()
                    .map_err(|e| e.to_string())?;
                match sets.get_mut(key) {
                    Some(set) => set.insert(ip),
                    None => sets.entry(key.to_string()).or_default().insert(ip),
                }
            }
        }
        drop(stmt);
        // A move into runs that was interrupted: both hold members.
        if self.has_runs().map_err(|e| e.to_string())? {
            self.add_runs(dim, periods, &mut sets)?;
        }
        Ok(sets.into_iter().map(|(k, s)| (k, s.len() as i64)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions over ten weeks across a year's end, from a handful of
    /// addresses, so windows cut weeks, months and years.
    fn store() -> (tempfile::TempDir, crate::LedgerStore) {
        use crate::{RecordKind, SessionRecord, Transport};
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
        let first = crate::rollup::days_from_civil(2026, 11, 20);
        let mut records = Vec::new();
        for i in 0..600i64 {
            let start = (first + i % 70) * MS_PER_DAY + i * 1000;
            let open = SessionRecord {
                kind: RecordKind::Open,
                session_key: i,
                started_at_ms: start,
                ended_at_ms: start,
                network: "bittorrent",
                decoy_id: i % 5,
                info_hash: [1; 20],
                remote_ip: format!("192.0.2.{}", (i * 7) % 23).parse().unwrap(),
                remote_port: 6881,
                peer_id: None,
                client_name: None,
                client_version: None,
                transport: Transport::Tcp,
                bytes_sent: 0,
                pieces_sent: 0,
                piece_count: 4,
                peer_pieces_initial: Some(0),
                peer_pieces_final: 0,
                completed: false,
                close_reason: String::new(),
            };
            let mut close = open.clone();
            close.kind = RecordKind::Close;
            close.ended_at_ms = start + 60_000;
            close.completed = i % 3 == 0;
            records.push(open);
            records.push(close);
        }
        records.sort_by_key(|r| {
            if r.kind == RecordKind::Open {
                r.started_at_ms
            } else {
                r.ended_at_ms
            }
        });
        for chunk in records.chunks(97) {
            store.append(chunk).unwrap();
        }
        (dir, store)
    }

    #[test]
    fn sqlite_answers_as_plain_range_queries_do() {
        let (_dir, mut store) = store();
        let first = crate::rollup::days_from_civil(2026, 11, 20);
        let windows = [(0, 69), (11, 41), (3, 9), (12, 12), (40, 30), (-5, 80)];
        for (a, b) in windows {
            let (lo, hi) = (first + a, first + b);
            let (from, to) = (periods(lo)[0].clone(), periods(hi)[0].clone());
            for dim in ["all", "country", "delivered", "title"] {
                let mut got = store
                    .uniques(
                        dim,
                        &PeriodSelection::Days {
                            from: from.clone(),
                            to: to.clone(),
                        },
                    )
                    .unwrap();
                got.sort();
                // Every member of every period whose label sorts in the
                // window, as the rows a row per member would be.
                let mut members: BTreeMap<String, std::collections::BTreeSet<Vec<u8>>> = BTreeMap::new();
                for (period, d, key, ip) in crate::uniques::rows(&store.conn).unwrap() {
                    if d == dim && period >= from && period <= to {
                        members.entry(key).or_default().insert(ip);
                    }
                }
                let want: Vec<(String, i64)> =
                    members.into_iter().map(|(k, s)| (k, s.len() as i64)).collect();
                assert_eq!(got, want, "uniques {dim} {from}..{to}");
                let mut got = store.daily(dim, lo, hi).unwrap();
                got.sort();
                let mut want: Vec<(i64, String, [i64; 4])> = store
                    .conn
                    .prepare(
                        "SELECT day, key, started, closed, completed, bytes FROM rollup_daily
                         WHERE day >= ?1 AND day <= ?2 AND dim = ?3",
                    )
                    .unwrap()
                    .query_map(rusqlite::params![lo, hi, dim], |r| {
                        Ok((r.get(0)?, r.get(1)?, [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                want.sort();
                assert_eq!(got, want, "daily {dim} {lo}..{hi}");
            }
            let want: i64 = store
                .conn
                .query_row(
                    "SELECT count(DISTINCT ip_key) FROM rollup_repeat WHERE day >= ?1 AND day <= ?2",
                    [lo, hi],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(store.repeats(lo, hi).unwrap(), want, "repeats {lo}..{hi}");
            if b - a > 30 {
                assert!(want > 0, "repeats exercised");
            }
        }
    }

    /// A ledger that kept repeat downloaders per day only gets them per
    /// period when opened for writing; opened read-only it still counts
    /// them, from the days.
    #[test]
    fn repeats_of_an_older_ledger_are_backfilled_or_read_from_days() {
        let (dir, mut store) = store();
        let first = crate::rollup::days_from_civil(2026, 11, 20);
        let windows = [(0, 69), (11, 41), (3, 9), (12, 12), (-5, 80)];
        let counts = |s: &mut crate::LedgerStore| -> Vec<i64> {
            windows
                .iter()
                .map(|&(a, b)| s.repeats(first + a, first + b).unwrap())
                .collect()
        };
        let repeat_rows = |s: &crate::LedgerStore| -> usize {
            crate::uniques::rows(&s.conn)
                .unwrap()
                .iter()
                .filter(|r| r.1 == "repeat")
                .count()
        };
        let want = counts(&mut store);
        assert!(want[0] > 0, "repeats exercised");
        let periods_before = repeat_rows(&store);
        store
            .conn
            .execute_batch(
                "DELETE FROM rollup_runs WHERE dim = 'repeat';
                 DELETE FROM ledger_meta WHERE key = 'repeat_periods';",
            )
            .unwrap();
        drop(store);
        let path = dir.path().join("ledger.sqlite");
        let mut old = crate::LedgerStore::open_read_only(&path).unwrap();
        assert_eq!(counts(&mut old), want, "read-only, from the days");
        drop(old);
        let mut store = crate::LedgerStore::open(&path).unwrap();
        assert_eq!(repeat_rows(&store), periods_before, "backfilled the same rows");
        let got = counts(&mut store);
        assert_eq!(got, want, "backfilled");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(9_012_345), "9,012,345");
        assert_eq!(thousands(357), "357");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
    }

    #[test]
    fn buckets_are_the_days_sharing_a_label() {
        // Against a walk over the neighbouring days' labels.
        for day in 20_400..21_200 {
            for (by, i) in [
                (Granularity::Month, 2),
                (Granularity::Year, 3),
                (Granularity::Week, 1),
            ] {
                let (_, first, last) = bucket(day, by, 0, 0);
                let label = &periods(day)[i];
                assert!((first..=last).all(|d| &periods(d)[i] == label), "{day} {by:?}");
                assert_ne!(&periods(first - 1)[i], label);
                assert_ne!(&periods(last + 1)[i], label);
            }
        }
    }

    #[test]
    fn buckets_cover_whole_calendar_periods() {
        // 2026-11-29 is day 20_786.
        let day = 20_786;
        assert_eq!(label_day(day), "2026-11-29");
        let (label, first, last) = bucket(day, Granularity::Month, 0, day);
        assert_eq!(
            (label.as_str(), label_day(first), label_day(last)),
            ("2026-11", "2026-11-01".into(), "2026-11-30".into())
        );
        let (label, first, last) = bucket(day, Granularity::Week, 0, day);
        assert_eq!(
            (label.as_str(), label_day(first), label_day(last)),
            ("2026-W48", "2026-11-23".into(), "2026-11-29".into())
        );
        let (label, first, last) = bucket(day, Granularity::Year, 0, day);
        assert_eq!(
            (label.as_str(), label_day(first), label_day(last)),
            ("2026", "2026-01-01".into(), "2026-12-31".into())
        );
    }
}
