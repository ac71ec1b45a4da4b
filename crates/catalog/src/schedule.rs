//! The campaign schedule: which titles are published, from when, until when.
//!
//! A campaign releases up to a daily quota of new decoys (UTC days), in a
//! chosen order, between an optional start and stop, and retires each decoy
//! a lifetime after its release. Every release and retirement is a row in
//! `catalog.sqlite`, written in one transaction per step, so a restart
//! neither releases a title twice nor skips one: the next title is always
//! the first unreleased one in the order.

use crate::store::CatalogStore;
use crate::utc::{day_start, MS_PER_DAY};
use crate::CatalogError;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS releases (
    title_id INTEGER PRIMARY KEY REFERENCES titles(id),
    released_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS releases_by_time ON releases(released_at_ms);
CREATE TABLE IF NOT EXISTS schedule_state (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
";

/// The order titles are released in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOrder {
    /// Import order (catalogue id).
    Catalogue,
    /// The `priority` column, highest first; titles without one come last,
    /// in catalogue order.
    Priority,
    /// A fixed pseudo-random order, drawn once per catalogue (so a restart
    /// continues the same sequence).
    Random,
}

impl ReleaseOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseOrder::Catalogue => "catalogue",
            ReleaseOrder::Priority => "priority",
            ReleaseOrder::Random => "random",
        }
    }
}

impl std::str::FromStr for ReleaseOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "catalogue" | "catalog" => Ok(ReleaseOrder::Catalogue),
            "priority" => Ok(ReleaseOrder::Priority),
            "random" => Ok(ReleaseOrder::Random),
            _ => Err(format!("release order {s:?}: use catalogue, priority or random")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulePolicy {
    /// New decoys released per UTC day.
    pub daily_quota: u64,
    /// A decoy retires this long after its release; `None`: never.
    pub lifetime_ms: Option<i64>,
    pub order: ReleaseOrder,
    /// Nothing is released before this time.
    pub start_ms: Option<i64>,
    /// At this time every decoy retires and no more are released.
    pub stop_ms: Option<i64>,
}

/// What one step changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub released: Vec<i64>,
    pub retired: Vec<i64>,
    /// When the schedule next has something to do (a retirement, the next
    /// day's quota, the start or the stop), if ever.
    pub next_due_ms: Option<i64>,
}

/// A title due for release and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextRelease {
    pub at_ms: i64,
    pub id: i64,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleStatus {
    pub now_ms: i64,
    /// `waiting` (before start), `running`, `stopped` (after stop) or
    /// `finished` (every title released).
    pub state: &'static str,
    pub released_today: u64,
    pub released_total: u64,
    pub active: u64,
    pub retired: u64,
    /// Titles not yet released.
    pub unreleased: u64,
    pub next: Vec<NextRelease>,
    /// The next retirement, if any decoy is active and the lifetime is set.
    pub next_retirement_ms: Option<i64>,
}

impl CatalogStore {
    /// Brings the schedule up to `now_ms` in one transaction: retires
    /// decoys past their lifetime (every one, once the stop has passed),
    /// then releases titles until today's quota is met. Titles with an id
    /// above `max_id` (imported after the caller loaded its table) wait.
    pub fn schedule_tick(
        &mut self,
        policy: &SchedulePolicy,
        now_ms: i64,
        max_id: Option<i64>,
    ) -> Result<Tick, CatalogError> {
        let tx = self.conn.transaction()?;
        let stopped = policy.stop_ms.is_some_and(|stop| now_ms >= stop);
        let cutoff = if stopped {
            Some(i64::MAX)
        } else {
            policy.lifetime_ms.map(|l| now_ms.saturating_sub(l))
        };
        let mut tick = Tick::default();
        if let Some(cutoff) = cutoff {
            let mut stmt = tx.prepare(
                "UPDATE releases SET retired_at_ms = ?1
                 WHERE retired_at_ms IS NULL AND released_at_ms <= ?2 RETURNING title_id",
            )?;
            let rows = stmt.query_map(params![now_ms, cutoff], |r| r.get(0))?;
            tick.retired = rows.collect::<Result<_, _>>()?;
        }
        let started = policy.start_ms.is_none_or(|start| now_ms >= start);
        if started && !stopped {
            let today: u64 = tx.query_row(
                "SELECT count(*) FROM releases WHERE released_at_ms >= ?1",
                [day_start(now_ms)],
                |r| r.get::<_, i64>(0),
            )? as u64;
            let want = policy.daily_quota.saturating_sub(today);
            if want > 0 {
                let seed = random_order_seed(&tx, policy.order)?;
                let picked = next_unreleased(&tx, policy.order, &seed, want as usize, max_id)?;
                let mut insert =
                    tx.prepare("INSERT INTO releases (title_id, released_at_ms) VALUES (?1, ?2)")?;
                for (id, _) in &picked {
                    insert.execute(params![id, now_ms])?;
                }
                tick.released = picked.into_iter().map(|(id, _)| id).collect();
            }
        }
        tick.next_due_ms = next_due(&tx, policy, now_ms)?;
        tx.commit()?;
        Ok(tick)
    }

    /// Titles ever released, and those of them not retired.
    pub fn release_counts(&self) -> Result<(u64, u64), CatalogError> {
        Ok(self.conn.query_row(
            "SELECT count(*), count(*) - count(retired_at_ms) FROM releases",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Decoys released in `[from_ms, to_ms)`, and those active at `to_ms`
    /// (released before it, not retired by it).
    pub fn releases_between(&self, from_ms: i64, to_ms: i64) -> Result<(u64, u64), CatalogError> {
        Ok(self.conn.query_row(
            "SELECT
                (SELECT count(*) FROM releases WHERE released_at_ms >= ?1 AND released_at_ms < ?2),
                (SELECT count(*) FROM releases WHERE released_at_ms < ?2
                    AND (retired_at_ms IS NULL OR retired_at_ms >= ?2))",
            [from_ms, to_ms],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Catalogue ids of released decoys that have not retired.
    pub fn active_ids(&self) -> Result<Vec<i64>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT title_id FROM releases WHERE retired_at_ms IS NULL ORDER BY title_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The schedule as of `now_ms`, with the next `show_next` releases.
    /// Reads only: a running node makes the releases.
    pub fn schedule_status(
        &mut self,
        policy: &SchedulePolicy,
        now_ms: i64,
        show_next: usize,
    ) -> Result<ScheduleStatus, CatalogError> {
        // A read transaction: one consistent view. It writes only the random
        // order's seed, if this is the first time anyone asked.
        let tx = self.conn.transaction()?;
        let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, CatalogError> {
            Ok(tx.query_row(sql, p, |r| r.get::<_, i64>(0))? as u64)
        };
        let released_today = count(
            "SELECT count(*) FROM releases WHERE released_at_ms >= ?1",
            &[&day_start(now_ms)],
        )?;
        let released_total = count("SELECT count(*) FROM releases", &[])?;
        let active = count("SELECT count(*) FROM releases WHERE retired_at_ms IS NULL", &[])?;
        let titles = count("SELECT count(*) FROM titles", &[])?;
        let unreleased = titles.saturating_sub(released_total);
        let stopped = policy.stop_ms.is_some_and(|stop| now_ms >= stop);
        let state = if stopped {
            "stopped"
        } else if policy.start_ms.is_some_and(|start| now_ms < start) {
            "waiting"
        } else if unreleased == 0 {
            "finished"
        } else {
            "running"
        };
        let mut next = Vec::new();
        if !stopped && policy.daily_quota > 0 && show_next > 0 {
            let seed = random_order_seed(&tx, policy.order)?;
            let picked = next_unreleased(&tx, policy.order, &seed, show_next, None)?;
            let first_day_start = policy.start_ms.filter(|&s| s > now_ms).unwrap_or(now_ms);
            // The first day has what is left of its quota (all of it before
            // the start), every later day the whole quota.
            let mut day_at = first_day_start;
            let mut left = if first_day_start > now_ms {
                policy.daily_quota
            } else {
                policy.daily_quota.saturating_sub(released_today)
            };
            for (id, title) in picked {
                while left == 0 {
                    day_at = day_start(day_at) + MS_PER_DAY;
                    left = policy.daily_quota;
                }
                if policy.stop_ms.is_some_and(|stop| day_at >= stop) {
                    break;
                }
                next.push(NextRelease {
                    at_ms: day_at,
                    id,
                    title,
                });
                left -= 1;
            }
        }
        let next_retirement_ms = match policy.lifetime_ms {
            Some(lifetime) => tx
                .query_row(
                    "SELECT min(released_at_ms) FROM releases WHERE retired_at_ms IS NULL",
                    [],
                    |r| r.get::<_, Option<i64>>(0),
                )?
                .map(|t| t.saturating_add(lifetime)),
            None => None,
        };
        let next_retirement_ms = match (next_retirement_ms, policy.stop_ms) {
            (Some(r), Some(stop)) => Some(r.min(stop)),
            (None, Some(stop)) if active > 0 => Some(stop),
            (r, _) => r,
        };
        tx.commit()?;
        Ok(ScheduleStatus {
            now_ms,
            state,
            released_today,
            released_total,
            active,
            retired: released_total - active,
            unreleased,
            next,
            next_retirement_ms,
        })
    }
}

/// The random order's seed, drawn once and kept in the catalogue.
fn random_order_seed(tx: &rusqlite::Transaction<'_>, order: ReleaseOrder) -> Result<[u8; 32], CatalogError> {
    if order != ReleaseOrder::Random {
        return Ok([0; 32]);
    }
    let stored: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM schedule_state WHERE key = 'random_order_seed'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(seed) = stored.and_then(|v| <[u8; 32]>::try_from(v).ok()) {
        return Ok(seed);
    }
    // Not secret, only unpredictable enough that the order is not the
    // catalogue's: the clock and the catalogue's own contents will do.
    let mut h = Sha256::new();
    h.update(b"warnseed release order v1\0");
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes(),
    );
    h.update(std::process::id().to_be_bytes());
    let seed: [u8; 32] = h.finalize().into();
    tx.execute(
        "INSERT OR REPLACE INTO schedule_state (key, value) VALUES ('random_order_seed', ?1)",
        [&seed[..]],
    )?;
    Ok(seed)
}

fn random_key(seed: &[u8; 32], id: i64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(id.to_be_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// The first `n` unreleased titles in `order`.
fn next_unreleased(
    tx: &rusqlite::Transaction<'_>,
    order: ReleaseOrder,
    seed: &[u8; 32],
    n: usize,
    max_id: Option<i64>,
) -> Result<Vec<(i64, String)>, CatalogError> {
    let max_id = max_id.unwrap_or(i64::MAX);
    let base = "SELECT t.id, t.title FROM titles t LEFT JOIN releases r ON r.title_id = t.id
                WHERE r.title_id IS NULL AND t.id <= ?1";
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let read = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<Vec<(i64, String)>, CatalogError> {
        let mut stmt = tx.prepare(sql)?;
        let rows = stmt.query_map(p, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    match order {
        ReleaseOrder::Catalogue => read(&format!("{base} ORDER BY t.id LIMIT ?2"), &[&max_id, &limit]),
        ReleaseOrder::Priority => read(
            &format!("{base} ORDER BY t.priority IS NULL, t.priority DESC, t.id LIMIT ?2"),
            &[&max_id, &limit],
        ),
        ReleaseOrder::Random => {
            // Every unreleased title is keyed; only the first `n` are kept.
            let mut all: Vec<(u64, i64, String)> = read(base, &[&max_id])?
                .into_iter()
                .map(|(id, title)| (random_key(seed, id), id, title))
                .collect();
            if all.len() > n {
                all.select_nth_unstable_by_key(n, |e| (e.0, e.1));
                all.truncate(n);
            }
            all.sort_unstable_by_key(|e| (e.0, e.1));
            Ok(all.into_iter().map(|(_, id, title)| (id, title)).collect())
        }
    }
}

/// When the schedule next changes anything after `now_ms`.
fn next_due(
    tx: &rusqlite::Transaction<'_>,
    policy: &SchedulePolicy,
    now_ms: i64,
) -> Result<Option<i64>, CatalogError> {
    if policy.stop_ms.is_some_and(|stop| now_ms >= stop) {
        return Ok(None);
    }
    let mut due: Vec<i64> = Vec::new();
    if let Some(lifetime) = policy.lifetime_ms {
        let oldest: Option<i64> = tx.query_row(
            "SELECT min(released_at_ms) FROM releases WHERE retired_at_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        due.extend(oldest.map(|t| t.saturating_add(lifetime)));
    }
    match policy.start_ms {
        Some(start) if now_ms < start => due.push(start),
        _ => due.push(day_start(now_ms) + MS_PER_DAY),
    }
    due.extend(policy.stop_ms);
    Ok(due.into_iter().filter(|&t| t > now_ms).min())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utc::parse_time;
    use std::io::Write;

    fn catalogue(n: usize, priorities: &[(usize, i64)]) -> (tempfile::TempDir, CatalogStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("titles.csv");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "title,priority").unwrap();
        for i in 1..=n {
            let p = priorities.iter().find(|p| p.0 == i).map(|p| p.1.to_string());
            writeln!(f, "sample-title-{i:06}.mp4,{}", p.unwrap_or_default()).unwrap();
        }
        drop(f);
        let mut store = CatalogStore::open(&dir.path().join("catalog.sqlite")).unwrap();
        crate::import_file(&mut store, &path, |_| {}).unwrap();
        (dir, store)
    }

    fn policy(quota: u64, lifetime: Option<&str>, order: ReleaseOrder) -> SchedulePolicy {
        SchedulePolicy {
            daily_quota: quota,
            lifetime_ms: lifetime.map(|l| crate::utc::parse_duration(l).unwrap()),
            order,
            start_ms: None,
            stop_ms: None,
        }
    }

    fn at(text: &str) -> i64 {
        parse_time(text).unwrap()
    }

    #[test]
    fn releases_the_daily_quota_in_order_and_never_twice() {
        let (_dir, mut store) = catalogue(10, &[]);
        let p = policy(4, None, ReleaseOrder::Catalogue);
        let t = store.schedule_tick(&p, at("2026-12-01T09:00Z"), None).unwrap();
        assert_eq!(t.released, vec![1, 2, 3, 4]);
        assert_eq!(t.next_due_ms, Some(at("2026-12-02")));
        // Later the same day: the quota is spent.
        let t = store.schedule_tick(&p, at("2026-12-01T23:59Z"), None).unwrap();
        assert!(t.released.is_empty());
        // Next day, then a gap of days: each day gets its quota, no more,
        // and no title is skipped or repeated.
        assert_eq!(
            store
                .schedule_tick(&p, at("2026-12-02T00:00:01Z"), None)
                .unwrap()
                .released,
            vec![5, 6, 7, 8]
        );
        assert_eq!(
            store
                .schedule_tick(&p, at("2026-12-09T12:00Z"), None)
                .unwrap()
                .released,
            vec![9, 10]
        );
        assert!(store
            .schedule_tick(&p, at("2026-12-10T12:00Z"), None)
            .unwrap()
            .released
            .is_empty());
        assert_eq!(store.active_ids().unwrap(), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn releases_survive_reopening_the_catalogue() {
        let (dir, mut store) = catalogue(6, &[]);
        let p = policy(2, None, ReleaseOrder::Random);
        let first = store
            .schedule_tick(&p, at("2026-12-01T09:00Z"), None)
            .unwrap()
            .released;
        let planned = store
            .schedule_status(&p, at("2026-12-01T10:00Z"), 10)
            .unwrap()
            .next;
        drop(store);
        let mut store = CatalogStore::open(&dir.path().join("catalog.sqlite")).unwrap();
        // Same day again after a restart: nothing more.
        assert!(store
            .schedule_tick(&p, at("2026-12-01T11:00Z"), None)
            .unwrap()
            .released
            .is_empty());
        let second = store
            .schedule_tick(&p, at("2026-12-02T09:00Z"), None)
            .unwrap()
            .released;
        let third = store
            .schedule_tick(&p, at("2026-12-03T09:00Z"), None)
            .unwrap()
            .released;
        // The order planned before the restart is the order released after it.
        let planned_ids: Vec<i64> = planned.iter().map(|n| n.id).collect();
        assert_eq!([second.clone(), third.clone()].concat(), planned_ids);
        assert_eq!(planned[0].at_ms, at("2026-12-02"));
        assert_eq!(planned[2].at_ms, at("2026-12-03"));
        let mut all = [first, second, third].concat();
        all.sort();
        assert_eq!(all, (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn priority_order_puts_high_priorities_first_and_unprioritised_last() {
        let (_dir, mut store) = catalogue(5, &[(4, 10), (2, 5), (5, -1)]);
        let p = policy(5, None, ReleaseOrder::Priority);
        let t = store.schedule_tick(&p, at("2026-12-01T09:00Z"), None).unwrap();
        assert_eq!(t.released, vec![4, 2, 5, 1, 3]);
    }

    #[test]
    fn decoys_retire_after_their_lifetime_and_everything_at_the_stop() {
        let (_dir, mut store) = catalogue(6, &[]);
        let mut p = policy(2, Some("36h"), ReleaseOrder::Catalogue);
        p.start_ms = Some(at("2026-12-01T06:00Z"));
        p.stop_ms = Some(at("2026-12-05"));
        let t = store.schedule_tick(&p, at("2026-12-01T05:00Z"), None).unwrap();
        assert!(t.released.is_empty(), "before the start");
        assert_eq!(t.next_due_ms, Some(at("2026-12-01T06:00Z")));
        assert_eq!(
            store
                .schedule_tick(&p, at("2026-12-01T06:00Z"), None)
                .unwrap()
                .released,
            vec![1, 2]
        );
        let t = store.schedule_tick(&p, at("2026-12-02T06:00Z"), None).unwrap();
        assert_eq!((t.released, t.retired), (vec![3, 4], vec![]));
        assert_eq!(
            t.next_due_ms,
            Some(at("2026-12-02T18:00Z")),
            "1 and 2 retire 36 h after release"
        );
        let t = store.schedule_tick(&p, at("2026-12-02T18:00Z"), None).unwrap();
        assert_eq!((t.released, t.retired), (vec![], vec![1, 2]));
        assert_eq!(store.active_ids().unwrap(), vec![3, 4]);
        let status = store.schedule_status(&p, at("2026-12-02T19:00Z"), 10).unwrap();
        assert_eq!(
            (
                status.state,
                status.active,
                status.retired,
                status.unreleased,
                status.released_today
            ),
            ("running", 2, 2, 2, 2)
        );
        assert_eq!(status.next.iter().map(|n| n.id).collect::<Vec<_>>(), vec![5, 6]);
        let t = store.schedule_tick(&p, at("2026-12-05T00:00Z"), None).unwrap();
        assert_eq!((t.released, t.retired, t.next_due_ms), (vec![], vec![3, 4], None));
        let status = store.schedule_status(&p, at("2026-12-06"), 10).unwrap();
        assert_eq!(
            (status.state, status.active, status.next.len()),
            ("stopped", 0, 0)
        );
    }

    #[test]
    fn titles_beyond_the_loaded_table_wait() {
        let (_dir, mut store) = catalogue(5, &[]);
        let p = policy(5, None, ReleaseOrder::Catalogue);
        let t = store.schedule_tick(&p, at("2026-12-01T09:00Z"), Some(3)).unwrap();
        assert_eq!(t.released, vec![1, 2, 3]);
        let t = store.schedule_tick(&p, at("2026-12-01T09:01Z"), None).unwrap();
        assert_eq!(t.released, vec![4, 5]);
    }
}
