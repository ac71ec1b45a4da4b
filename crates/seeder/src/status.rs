//! What a running node reports about itself: per-tracker state and
//! connection counts, shared between the tasks that update it and the one
//! that publishes it (`status.json` in the data directory).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

use warnseed_ledger::unix_ms as now_ms;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// `pending` (no round finished yet), `ok` (the last round had
    /// successes) or `failing` (the last round had none).
    pub state: String,
    pub rounds: u64,
    pub last_round_at_ms: Option<i64>,
    pub announced: u64,
    pub failed: u64,
    pub last_error: Option<String>,
    pub next_round_at_ms: Option<i64>,
}

/// Per-tracker status, keyed by URL.
#[derive(Debug, Default)]
pub struct StatusBoard {
    trackers: Mutex<BTreeMap<String, TrackerStatus>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn tracker_pending(&self, url: &str) {
        self.trackers.lock().expect("status lock").insert(
            url.to_string(),
            TrackerStatus {
                url: url.to_string(),
                state: "pending".into(),
                ..TrackerStatus::default()
            },
        );
    }

    pub(crate) fn tracker_round(
        &self,
        url: &str,
        ok: u64,
        failed: u64,
        last_error: Option<String>,
        next_in_ms: i64,
    ) {
        let now = now_ms();
        let mut map = self.trackers.lock().expect("status lock");
        let t = map.entry(url.to_string()).or_default();
        t.url = url.to_string();
        t.state = if ok > 0 || failed == 0 { "ok" } else { "failing" }.into();
        t.rounds += 1;
        t.last_round_at_ms = Some(now);
        t.announced = ok;
        t.failed = failed;
        t.last_error = last_error;
        t.next_round_at_ms = Some(now + next_in_ms);
    }

    pub fn trackers(&self) -> Vec<TrackerStatus> {
        self.trackers
            .lock()
            .expect("status lock")
            .values()
            .cloned()
            .collect()
    }
}
