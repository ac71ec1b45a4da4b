//! The campaign schedule inside a running node: releases and retirements
//! are written to the catalogue (`warnseed_catalog`'s schedule), then
//! applied to the decoy table, so the peer server, the trackers and the DHT
//! see a decoy the moment it is released and stop seeing it the moment it
//! retires.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warnseed_catalog::{CatalogStore, SchedulePolicy, Tick};
use warnseed_ledger::unix_ms as now_ms;
use warnseed_seeder::DecoyTable;

/// The schedule is checked at least this often, so a clock step or a
/// catalogue edited by another process is noticed.
const MAX_WAIT: Duration = Duration::from_secs(60);
const MIN_WAIT: Duration = Duration::from_millis(100);

pub struct ScheduleRunner {
    store: CatalogStore,
    policy: SchedulePolicy,
    table: Arc<DecoyTable>,
    max_id: Option<i64>,
    next_due_ms: Option<i64>,
}

impl ScheduleRunner {
    /// Brings the schedule up to now and leaves exactly the released,
    /// unretired decoys active in `table`. Returns the first step's changes.
    pub fn start(catalog: &Path, policy: SchedulePolicy, table: Arc<DecoyTable>) -> Result<(Self, Tick)> {
        let mut store = CatalogStore::open(catalog)?;
        let max_id = table.max_id();
        let tick = store
            .schedule_tick(&policy, now_ms(), max_id)
            .context("updating the campaign schedule")?;
        let active: std::collections::HashSet<i64> = store.active_ids()?.into_iter().collect();
        table.retain_active(|id| active.contains(&id));
        let runner = Self {
            store,
            policy,
            table,
            max_id,
            next_due_ms: tick.next_due_ms,
        };
        Ok((runner, tick))
    }

    fn apply(&self, tick: &Tick) {
        for &id in &tick.released {
            self.table.set_active(id, true);
        }
        for &id in &tick.retired {
            self.table.set_active(id, false);
        }
        if !tick.released.is_empty() || !tick.retired.is_empty() {
            tracing::info!(
                released = tick.released.len(),
                retired = tick.retired.len(),
                active = self.table.active_len(),
                "campaign schedule step"
            );
        }
    }

    /// Steps the schedule whenever something is due, until `stop`.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut runner = self;
        loop {
            let wait = runner
                .next_due_ms
                .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
                .unwrap_or(MAX_WAIT)
                .clamp(MIN_WAIT, MAX_WAIT);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // SQLite work stays off the async threads.
            let result = tokio::task::spawn_blocking(move || {
                let tick = runner
                    .store
                    .schedule_tick(&runner.policy, now_ms(), runner.max_id);
                (runner, tick)
            })
            .await;
            let tick;
            (runner, tick) = match result {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(error = %e, "campaign schedule task failed; no more releases until restart");
                    return;
                }
            };
            match tick {
                Ok(tick) => {
                    runner.apply(&tick);
                    runner.next_due_ms = tick.next_due_ms;
                }
                // Releases are retried at the next check; nothing is lost.
                Err(e) => tracing::error!(error = %e, "cannot update the campaign schedule"),
            }
        }
    }
}
