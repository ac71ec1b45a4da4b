//! What a running node reports about itself: per-tracker state and
//! connection counts, shared between the tasks that update it and the one
//! that publishes it (`status.json` in the data directory).

use serde::Serialize;
use std::sync::Mutex;

use warnseed_ledger::unix_ms as now_ms;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// The BEP 12 tier it belongs to (1 = the first).
    pub tier: usize,
    /// `pending` (in use, no round finished yet), `ok` (the last round had
    /// successes), `failing` (its last round or tick had none, or it could
    /// not be reached) or `standby` (another tracker of its tier is in use).
    pub state: String,
    /// Full rounds finished with this tracker.
    pub rounds: u64,
    pub last_round_at_ms: Option<i64>,
    /// How long the last full round took.
    pub last_round_took_ms: Option<u64>,
    /// Announces of the last full round that the tracker accepted…
    pub announced: u64,
    /// …and that it refused or that got no answer.
    pub failed: u64,
    pub last_error: Option<String>,
    /// When the next full round starts (reconcile ticks run in between).
    pub next_round_at_ms: Option<i64>,
    /// Decoys this tracker has from us: announced and not stopped since.
    pub tracked: u64,
    /// `event=started` announces it accepted since the node started.
    pub started: u64,
    /// `event=stopped` announces (retired decoys) it accepted.
    pub stopped: u64,
    pub scrape: ScrapeStatus,
}

/// The totals of the last scrape of every active decoy (after each full round).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ScrapeStatus {
    /// `false`: an HTTP tracker whose path has no `announce` segment to
    /// turn into `scrape`.
    pub supported: bool,
    /// When the last scrape finished; `None` before the first.
    pub at_ms: Option<i64>,
    /// How long it took.
    pub took_ms: Option<u64>,
    /// Decoys the answers covered.
    pub decoys: u64,
    /// Decoys the tracker lists with at least one seeder.
    pub listed: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub downloaded: u64,
    /// Scrape requests that failed.
    pub failed: u64,
    pub last_error: Option<String>,
}

/// Per-tracker status, in configuration order (tier by tier).
#[derive(Debug, Default)]
pub struct StatusBoard {
    trackers: Mutex<Vec<TrackerStatus>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a tracker of `tier` (1 = the first) before its first round.
    pub fn tracker_pending(&self, tier: usize, url: &str) {
        let mut list = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = TrackerStatus {
            url: url.to_string(),
            tier,
            state: "pending".into(),
            scrape: ScrapeStatus {
                supported: true,
                ..ScrapeStatus::default()
            },
            ..TrackerStatus::default()
        };
        match list.iter_mut().find(|t| t.url == url) {
            Some(t) => *t = fresh,
            None => list.push(fresh),
        }
    }

    /// Changes the status of the tracker with this URL (registering it if
    /// it was not).
    pub(crate) fn update(&self, url: &str, change: impl FnOnce(&mut TrackerStatus)) {
        let mut list = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
        let i = match list.iter().position(|t| t.url == url) {
            Some(i) => i,
            None => {
                list.push(TrackerStatus {
                    url: url.to_string(),
                    ..TrackerStatus::default()
                });
                list.len() - 1
            }
        };
        change(&mut list[i]);
    }

    pub fn trackers(&self) -> Vec<TrackerStatus> {
        let mut list = self.trackers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        list.sort_by_key(|t| t.tier);
        list
    }
}

/// Milliseconds since the Unix epoch, `in_ms` from now.
pub(crate) fn at_ms_from_now(in_ms: u128) -> i64 {
    now_ms().saturating_add(i64::try_from(in_ms).unwrap_or(i64::MAX))
}

pub(crate) fn unix_now_ms() -> i64 {
    now_ms()
}
