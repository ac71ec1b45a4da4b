//! The campaign schedule inside a running node: releases and retirements
//! are written to the catalogue (`warnseed_catalog`'s schedule), then
//! applied to the decoy table, so the peer server, the trackers and the DHT
//! see a decoy the moment it is released and stop seeing it the moment it
//! retires. Titles imported while the node runs are loaded into a new
//! table that replaces the served one, and released like any other.

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warnseed_catalog::{CatalogStore, SchedulePolicy, Tick};
use warnseed_ledger::unix_ms as now_ms;
use warnseed_seeder::{DecoyTable, LiveTable};

/// The schedule is checked at least this often, so a clock step or a
/// catalogue edited by another process is noticed.
const MAX_WAIT: Duration = Duration::from_secs(60);
const MIN_WAIT: Duration = Duration::from_millis(100);
/// How often the catalogue is looked at for imported titles (one B-tree
/// probe: its highest id).
const IMPORT_POLL: Duration = Duration::from_secs(5);
/// After a failed reload, the next try waits this long.
const RELOAD_RETRY: Duration = Duration::from_secs(60);

/// Builds a table of every catalogue title (the node's own loader, with its
/// payloads and piece file).
pub type Reload = Box<dyn FnMut(&mut CatalogStore) -> Result<DecoyTable> + Send>;

pub struct ScheduleRunner {
    store: CatalogStore,
    policy: SchedulePolicy,
    table: LiveTable,
    reload: Option<Reload>,
    max_id: Option<i64>,
    next_due_ms: Option<i64>,
    reload_after: Option<Instant>,
}

impl ScheduleRunner {
    /// Brings the schedule up to now and leaves exactly the released,
    /// unretired decoys active in `table`. Returns the first step's changes.
    /// With `reload`, titles imported later are loaded while the node runs.
    pub fn start(
        catalog: &Path,
        policy: SchedulePolicy,
        table: LiveTable,
        reload: Option<Reload>,
    ) -> Result<(Self, Tick)> {
        let mut store = CatalogStore::open(catalog)?;
        let current = table.current();
        let max_id = current.max_id();
        let tick = store
            .schedule_tick(&policy, now_ms(), max_id)
            .context("updating the campaign schedule")?;
        let active: HashSet<i64> = store.active_ids()?.into_iter().collect();
        current.retain_active(|id| active.contains(&id));
        let runner = Self {
            store,
            policy,
            table,
            reload,
            max_id,
            next_due_ms: tick.next_due_ms,
            reload_after: None,
        };
        Ok((runner, tick))
    }

    fn apply(&self, tick: &Tick) {
        let table = self.table.current();
        for &id in &tick.released {
            table.set_active(id, true);
        }
        for &id in &tick.retired {
            table.set_active(id, false);
        }
        if !tick.released.is_empty() || !tick.retired.is_empty() {
            tracing::info!(
                released = tick.released.len(),
                retired = tick.retired.len(),
                active = table.active_len(),
                "campaign schedule step"
            );
        }
    }

    /// Loads titles imported since the table was built, if any: a new table
    /// with exactly the catalogue's released, unretired decoys active
    /// replaces the served one. Returns the number of titles added.
    fn reload_if_imported(&mut self) -> Result<Option<usize>> {
        let Some(reload) = self.reload.as_mut() else {
            return Ok(None);
        };
        if self.reload_after.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        let newest = self.store.max_id()?;
        if newest <= self.max_id {
            return Ok(None);
        }
        let started = Instant::now();
        let table = reload(&mut self.store)?;
        // Nothing new is served before the schedule releases it.
        let active: HashSet<i64> = self.store.active_ids()?.into_iter().collect();
        table.retain_active(|id| active.contains(&id));
        let before = self.table.current().len();
        let added = table.len().saturating_sub(before);
        self.max_id = table.max_id();
        tracing::info!(
            added,
            decoys = table.len(),
            active = table.active_len(),
            load_ms = started.elapsed().as_millis() as u64,
            "imported titles loaded: the node now serves the reloaded catalogue"
        );
        self.table.replace(Arc::new(table));
        Ok(Some(added))
    }

    /// Reloads if titles were imported, then steps the schedule if it is
    /// due (or after a reload, so new titles may be released at once).
    fn check(&mut self, tick_due: bool) -> Option<Result<Tick, warnseed_catalog::CatalogError>> {
        let loaded = match self.reload_if_imported() {
            Ok(n) => {
                self.reload_after = None;
                n
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot load the imported titles; retrying in a minute");
                self.reload_after = Some(Instant::now() + RELOAD_RETRY);
                None
            }
        };
        (tick_due || loaded.is_some()).then(|| self.store.schedule_tick(&self.policy, now_ms(), self.max_id))
    }

    /// Steps the schedule whenever something is due, and loads imported
    /// titles, until `stop`.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut runner = self;
        let mut next_tick = Instant::now() + runner.wait_for_due();
        loop {
            let poll = if runner.reload.is_some() {
                IMPORT_POLL
            } else {
                MAX_WAIT
            };
            let wake = next_tick.min(Instant::now() + poll);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let tick_due = Instant::now() >= next_tick;
            // SQLite work (and a reload) stays off the async threads, and a
            // stop does not wait for it.
            let task = tokio::task::spawn_blocking(move || {
                let checked = runner.check(tick_due);
                (runner, checked)
            });
            let result = tokio::select! {
                result = task => result,
                _ = stop.wait_for(|s| *s) => return,
            };
            let checked;
            (runner, checked) = match result {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(error = %e, "campaign schedule task failed; no more releases until restart");
                    return;
                }
            };
            match checked {
                Some(Ok(tick)) => {
                    runner.apply(&tick);
                    runner.next_due_ms = tick.next_due_ms;
                    next_tick = Instant::now() + runner.wait_for_due();
                }
                // Releases are retried at the next check; nothing is lost.
                Some(Err(e)) => {
                    tracing::error!(error = %e, "cannot update the campaign schedule");
                    next_tick = Instant::now() + IMPORT_POLL;
                }
                None => {}
            }
        }
    }

    /// Until the next retirement, release or start, within bounds.
    fn wait_for_due(&self) -> Duration {
        self.next_due_ms
            .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
            .unwrap_or(MAX_WAIT)
            .clamp(MIN_WAIT, MAX_WAIT)
    }
}
