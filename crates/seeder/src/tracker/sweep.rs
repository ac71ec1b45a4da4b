//! The bookkeeping of publishing to one tracker, without sockets or clock:
//! which decoys the tracker has from us, what a full round or a reconcile
//! tick must send, how answers are tallied, BEP 12 tier order and backoff.
//!
//! State is one byte per decoy (by its stable table index), so a million
//! decoys cost a megabyte per tier.

use super::{AnnounceEvent, Announced, Failure, ScrapeCounts, DEFAULT_INTERVAL, MIN_INTERVAL};
use crate::decoys::DecoyTable;
use std::sync::Arc;
use std::time::Duration;

type InfoHash = [u8; 20];

/// A round or tick gives up once this many requests in a row found no
/// tracker (refused connections, timeouts, garbage): the tracker is down,
/// and going on would cost a timeout per decoy.
pub(crate) const ABORT_AFTER_FAILURES: u32 = 8;
/// Failures of one round or tick logged one by one; the rest are counted.
const FAILURES_LOGGED: u64 = 10;
/// The first wait after a failed round; it doubles up to [`DEFAULT_INTERVAL`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(15);

/// The decoys as a tracker sweep sees them.
pub(crate) trait DecoyView {
    fn len(&self) -> usize;
    fn is_active(&self, index: usize) -> bool;
    /// The info hash of an active decoy (`None` once it is inactive).
    fn active_info_hash(&self, index: usize) -> Option<InfoHash>;
    /// The info hashes of `indices` (ascending), active or not.
    fn info_hashes(&self, indices: &[usize]) -> Vec<(usize, InfoHash)>;
}

impl DecoyView for Arc<DecoyTable> {
    fn len(&self) -> usize {
        DecoyTable::len(self)
    }
    fn is_active(&self, index: usize) -> bool {
        self.is_active_at(index)
    }
    fn active_info_hash(&self, index: usize) -> Option<InfoHash> {
        self.info_hash_at(index)
    }
    fn info_hashes(&self, indices: &[usize]) -> Vec<(usize, InfoHash)> {
        use warnseed_bittorrent::session::SeedContent;
        // One pass over the table: retired decoys have no other way in.
        let mut wanted = indices.iter().peekable();
        let mut out = Vec::with_capacity(indices.len());
        for decoy in self.iter_all() {
            let Some(&&next) = wanted.peek() else { break };
            if decoy.index() == next {
                out.push((next, *decoy.info_hash()));
                wanted.next();
            }
        }
        out
    }
}

/// What a tracker has from us, for one decoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mark {
    /// Never announced, or stopped.
    Unannounced,
    /// Announced (the tracker lists us as a seed).
    Listed,
    /// The tracker refused it (e.g. not on its whitelist): not asked again
    /// until the next full round.
    Refused,
}

/// Per decoy: what the current tracker has from us.
#[derive(Debug, Default)]
pub(crate) struct AnnounceState {
    marks: Vec<Mark>,
    listed: usize,
}

/// What a reconcile tick has to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Active decoys the tracker does not have yet.
    pub starts: usize,
    /// Retired decoys the tracker still lists (ascending indices).
    pub stops: Vec<usize>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.starts == 0 && self.stops.is_empty()
    }
}

impl AnnounceState {
    pub fn new(len: usize) -> Self {
        Self {
            marks: vec![Mark::Unannounced; len],
            listed: 0,
        }
    }

    /// Forgets everything: a different tracker knows nothing of us.
    pub fn reset(&mut self) {
        self.marks.fill(Mark::Unannounced);
        self.listed = 0;
    }

    /// Decoys the tracker lists from us.
    pub fn listed(&self) -> usize {
        self.listed
    }

    pub fn is_listed(&self, index: usize) -> bool {
        self.marks.get(index) == Some(&Mark::Listed)
    }

    fn set(&mut self, index: usize, mark: Mark) {
        let Some(slot) = self.marks.get_mut(index) else {
            return;
        };
        match (*slot == Mark::Listed, mark == Mark::Listed) {
            (false, true) => self.listed += 1,
            (true, false) => self.listed -= 1,
            _ => {}
        }
        *slot = mark;
    }

    /// The same marks for a new table (the catalogue was reloaded): each
    /// decoy's mark moves to its place in the new table (`new_index` of its
    /// info hash); decoys the new table lacks are forgotten.
    pub fn moved_to(
        self,
        old: &impl DecoyView,
        new_len: usize,
        new_index: impl Fn(&InfoHash) -> Option<usize>,
    ) -> Self {
        let mut moved = Self::new(new_len);
        let marked: Vec<usize> = (0..self.marks.len())
            .filter(|&i| self.marks[i] != Mark::Unannounced)
            .collect();
        for (i, info_hash) in old.info_hashes(&marked) {
            if let Some(j) = new_index(&info_hash) {
                moved.set(j, self.marks[i]);
            }
        }
        moved
    }

    /// Compares the marks with the table. A refused decoy that was retired
    /// is simply forgotten (the tracker never had it).
    pub fn changes(&mut self, view: &impl DecoyView) -> Changes {
        let mut changes = Changes::default();
        for i in 0..self.marks.len().min(view.len()) {
            match (view.is_active(i), self.marks[i]) {
                (true, Mark::Unannounced) => changes.starts += 1,
                (false, Mark::Listed) => changes.stops.push(i),
                (false, Mark::Refused) => self.marks[i] = Mark::Unannounced,
                _ => {}
            }
        }
        changes
    }

    /// Applies the answer to `job`.
    pub fn record(&mut self, job: &Job, result: &Result<Announced, Failure>) {
        let mark = match (job.event, result) {
            (AnnounceEvent::Stopped, Ok(_) | Err(Failure::Refused(_))) => Mark::Unannounced,
            (_, Ok(_)) => Mark::Listed,
            (_, Err(Failure::Refused(_))) => Mark::Refused,
            // Unanswered: as it was. A stop is sent again on the next tick.
            (_, Err(Failure::Unreachable(_))) => return,
        };
        self.set(job.index, mark);
    }
}

/// Whether a sweep re-announces everything or only sends what changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SweepKind {
    /// Every active decoy (event `started` for those the tracker lacks, none
    /// for the rest), refused ones again, and stops for retired ones.
    Full,
    /// Only `started` for newly active decoys and `stopped` for retired ones.
    Changes,
}

/// One announce to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Job {
    pub index: usize,
    pub info_hash: InfoHash,
    pub event: AnnounceEvent,
}

/// The announces of one round or tick, handed out one at a time so that
/// nothing proportional to the table is built.
#[derive(Debug)]
pub(crate) struct Sweep {
    kind: SweepKind,
    next: usize,
    /// Stops go first: a retired decoy should leave the tracker promptly.
    stops: std::vec::IntoIter<(usize, InfoHash)>,
}

impl Sweep {
    /// `stops`: the info hashes of `Changes::stops`.
    pub fn new(kind: SweepKind, stops: Vec<(usize, InfoHash)>) -> Self {
        Self {
            kind,
            next: 0,
            stops: stops.into_iter(),
        }
    }

    pub fn next_job(&mut self, state: &AnnounceState, view: &impl DecoyView) -> Option<Job> {
        for (index, info_hash) in self.stops.by_ref() {
            // Released again meanwhile: nothing to stop.
            if state.is_listed(index) && !view.is_active(index) {
                return Some(Job {
                    index,
                    info_hash,
                    event: AnnounceEvent::Stopped,
                });
            }
        }
        let len = state.marks.len().min(view.len());
        while self.next < len {
            let index = self.next;
            self.next += 1;
            if !view.is_active(index) {
                continue;
            }
            let event = match (self.kind, state.marks[index]) {
                (_, Mark::Unannounced) => AnnounceEvent::Started,
                (SweepKind::Full, Mark::Refused) => AnnounceEvent::Started,
                (SweepKind::Full, Mark::Listed) => AnnounceEvent::None,
                (SweepKind::Changes, _) => continue,
            };
            // Retired between the check and here: skip it.
            let Some(info_hash) = view.active_info_hash(index) else {
                continue;
            };
            return Some(Job {
                index,
                info_hash,
                event,
            });
        }
        None
    }
}

/// The answers of one round or tick.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub ok: u64,
    pub refused: u64,
    pub unreachable: u64,
    pub started: u64,
    pub stopped: u64,
    failures_in_a_row: u32,
    pub last_error: Option<String>,
    /// The shortest interval any answer asked for.
    interval: Option<Duration>,
    /// The longest `min interval` any answer set.
    min_interval: Option<Duration>,
}

impl Tally {
    /// Counts one answer; returns whether the failure should be logged on
    /// its own (the first few of a round are).
    pub fn record(&mut self, event: AnnounceEvent, result: &Result<Announced, Failure>) -> bool {
        match result {
            Ok(a) => {
                self.ok += 1;
                self.failures_in_a_row = 0;
                match event {
                    AnnounceEvent::Started => self.started += 1,
                    AnnounceEvent::Stopped => self.stopped += 1,
                    AnnounceEvent::None => {}
                }
                self.interval = Some(self.interval.map_or(a.interval, |i| i.min(a.interval)));
                if let Some(m) = a.min_interval {
                    self.min_interval = Some(self.min_interval.map_or(m, |i| i.max(m)));
                }
                false
            }
            Err(e) => {
                match e {
                    Failure::Refused(_) => {
                        self.refused += 1;
                        self.failures_in_a_row = 0;
                    }
                    Failure::Unreachable(_) => {
                        self.unreachable += 1;
                        self.failures_in_a_row += 1;
                    }
                }
                self.last_error = Some(e.to_string());
                self.failed() <= FAILURES_LOGGED
            }
        }
    }

    pub fn failed(&self) -> u64 {
        self.refused + self.unreachable
    }

    /// Too many requests in a row found no tracker: stop sending.
    pub fn aborted(&self) -> bool {
        self.failures_in_a_row >= ABORT_AFTER_FAILURES
    }

    /// A full round failed: something was sent and nothing was accepted
    /// (a tracker that refuses every decoy is as useless as a dead one).
    pub fn round_failed(&self) -> bool {
        self.ok == 0 && self.failed() > 0
    }

    /// A tick failed: the tracker did not answer at all. (A few refusals
    /// of new decoys are answers.)
    pub fn tick_failed(&self) -> bool {
        self.ok + self.refused == 0 && self.unreachable > 0
    }

    /// When the next full round is due: the tracker's interval (floored at
    /// a minute), but never before its `min interval`.
    pub fn next_round_in(&self) -> Duration {
        // Bounded again here: every answer's were, but this is what the
        // clock gets added to.
        let interval = self.interval.unwrap_or(DEFAULT_INTERVAL).max(MIN_INTERVAL);
        self.min_interval
            .map_or(interval, |m| interval.max(m))
            .min(crate::tracker::MAX_INTERVAL)
    }
}

/// BEP 12 order within a tier: shuffled once, the first tracker used; one
/// that fails gives way to the next, and one that works moves to the front.
#[derive(Clone, Debug)]
pub(crate) struct TierOrder {
    /// Indices into the tier's configured URLs.
    order: Vec<usize>,
    /// Position in `order` of the tracker in use.
    pos: usize,
    failed_in_a_row: usize,
}

impl TierOrder {
    /// `seed`: shuffle with it (BEP 12); `None` keeps the configured order.
    pub fn new(len: usize, seed: Option<u64>) -> Self {
        assert!(len > 0, "a tier has at least one tracker");
        let mut order: Vec<usize> = (0..len).collect();
        if let Some(seed) = seed {
            let mut rng = SplitMix64(seed);
            for i in (1..len).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        Self {
            order,
            pos: 0,
            failed_in_a_row: 0,
        }
    }

    /// The tracker in use (an index into the configured URLs).
    pub fn current(&self) -> usize {
        self.order[self.pos]
    }

    /// The tracker in use works: it moves to the front.
    pub fn succeeded(&mut self) {
        let t = self.order.remove(self.pos);
        self.order.insert(0, t);
        self.pos = 0;
        self.failed_in_a_row = 0;
    }

    /// The tracker in use failed: the next one takes over. Returns whether
    /// every tracker of the tier has now failed since the last success
    /// (time to back off rather than try again at once).
    pub fn failed(&mut self) -> bool {
        self.failed_in_a_row += 1;
        self.pos = (self.pos + 1) % self.order.len();
        self.failed_in_a_row.is_multiple_of(self.order.len())
    }

    /// The configured indices in the order they are tried.
    #[cfg(test)]
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Waits after failed rounds: 15 s doubling up to 30 minutes.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_BACKOFF }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(DEFAULT_INTERVAL);
        wait
    }
}

/// Hands out the active decoys' info hashes in batches for scraping.
#[derive(Debug)]
pub(crate) struct ScrapeCursor {
    next: usize,
    batch: usize,
}

impl ScrapeCursor {
    pub fn new(batch: usize) -> Self {
        Self {
            next: 0,
            batch: batch.max(1),
        }
    }

    pub fn next_batch(&mut self, view: &impl DecoyView) -> Option<Vec<InfoHash>> {
        let mut out = Vec::with_capacity(self.batch);
        while self.next < view.len() && out.len() < self.batch {
            if let Some(h) = view.active_info_hash(self.next) {
                out.push(h);
            }
            self.next += 1;
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The totals of scraping every active decoy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScrapeTally {
    /// Info hashes in answered requests.
    pub decoys: u64,
    /// Decoys with at least one seeder (`complete` ≥ 1): the tracker lists them.
    pub listed: u64,
    pub seeders: u64,
    pub leechers: u64,
    pub downloaded: u64,
    /// Requests that failed.
    pub failed: u64,
    failures_in_a_row: u32,
    pub last_error: Option<String>,
}

impl ScrapeTally {
    pub fn record(&mut self, result: &Result<Vec<ScrapeCounts>, Failure>) {
        match result {
            Ok(counts) => {
                self.failures_in_a_row = 0;
                for c in counts {
                    self.decoys += 1;
                    self.listed += u64::from(c.complete > 0);
                    self.seeders = self.seeders.saturating_add(c.complete);
                    self.leechers = self.leechers.saturating_add(c.incomplete);
                    self.downloaded = self.downloaded.saturating_add(c.downloaded);
                }
            }
            Err(e) => {
                self.failed += 1;
                if matches!(e, Failure::Unreachable(_)) {
                    self.failures_in_a_row += 1;
                }
                self.last_error = Some(e.to_string());
            }
        }
    }

    pub fn aborted(&self) -> bool {
        self.failures_in_a_row >= ABORT_AFTER_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A table of `active` flags; decoy `i` has info hash `[i; 20]`.
    struct Fake {
        active: RefCell<Vec<bool>>,
    }

    impl Fake {
        fn new(active: &[bool]) -> Self {
            Self {
                active: RefCell::new(active.to_vec()),
            }
        }
        fn set(&self, i: usize, on: bool) {
            self.active.borrow_mut()[i] = on;
        }
    }

    impl DecoyView for Fake {
        fn len(&self) -> usize {
            self.active.borrow().len()
        }
        fn is_active(&self, i: usize) -> bool {
            self.active.borrow()[i]
        }
        fn active_info_hash(&self, i: usize) -> Option<InfoHash> {
            self.is_active(i).then_some([i as u8; 20])
        }
        fn info_hashes(&self, indices: &[usize]) -> Vec<(usize, InfoHash)> {
            indices.iter().map(|&i| (i, [i as u8; 20])).collect()
        }
    }

    const OK: Result<Announced, Failure> = Ok(Announced {
        interval: Duration::from_secs(900),
        min_interval: None,
    });

    fn sweep(kind: SweepKind, state: &mut AnnounceState, view: &Fake) -> Vec<(usize, AnnounceEvent)> {
        let changes = state.changes(view);
        let mut s = Sweep::new(kind, view.info_hashes(&changes.stops));
        let mut out = Vec::new();
        while let Some(job) = s.next_job(state, view) {
            assert_eq!(job.info_hash, [job.index as u8; 20]);
            out.push((job.index, job.event));
        }
        out
    }

    fn answer_all(
        state: &mut AnnounceState,
        jobs: &[(usize, AnnounceEvent)],
        result: &Result<Announced, Failure>,
    ) {
        for &(index, event) in jobs {
            state.record(
                &Job {
                    index,
                    info_hash: [index as u8; 20],
                    event,
                },
                result,
            );
        }
    }

    use AnnounceEvent::{None as Regular, Started, Stopped};

    #[test]
    fn rounds_start_then_reannounce_and_ticks_send_only_changes() {
        let view = Fake::new(&[true, false, true, true]);
        let mut state = AnnounceState::new(4);
        let first = sweep(SweepKind::Full, &mut state, &view);
        assert_eq!(first, vec![(0, Started), (2, Started), (3, Started)]);
        answer_all(&mut state, &first, &OK);
        assert_eq!(state.listed(), 3);
        assert!(state.changes(&view).is_empty());
        assert_eq!(sweep(SweepKind::Changes, &mut state, &view), vec![]);
        assert_eq!(
            sweep(SweepKind::Full, &mut state, &view),
            vec![(0, Regular), (2, Regular), (3, Regular)]
        );

        // The schedule releases 1 and retires 2.
        view.set(1, true);
        view.set(2, false);
        assert_eq!(
            state.changes(&view),
            Changes {
                starts: 1,
                stops: vec![2]
            }
        );
        let tick = sweep(SweepKind::Changes, &mut state, &view);
        assert_eq!(tick, vec![(2, Stopped), (1, Started)], "stops go first");
        answer_all(&mut state, &tick, &OK);
        assert_eq!(state.listed(), 3);
        assert!(state.changes(&view).is_empty());
        assert_eq!(
            sweep(SweepKind::Full, &mut state, &view),
            vec![(0, Regular), (1, Regular), (3, Regular)]
        );
    }

    #[test]
    fn unanswered_announces_are_retried_and_refusals_wait_for_the_next_round() {
        let view = Fake::new(&[true, true]);
        let mut state = AnnounceState::new(2);
        let unreachable = Err(Failure::Unreachable("timed out".into()));
        let refused = Err(Failure::Refused("not on the whitelist".into()));
        state.record(
            &Job {
                index: 0,
                info_hash: [0; 20],
                event: Started,
            },
            &unreachable,
        );
        state.record(
            &Job {
                index: 1,
                info_hash: [1; 20],
                event: Started,
            },
            &refused,
        );
        // The unanswered one is retried on the next tick; the refused one
        // only on the next full round.
        assert_eq!(sweep(SweepKind::Changes, &mut state, &view), vec![(0, Started)]);
        assert_eq!(
            sweep(SweepKind::Full, &mut state, &view),
            vec![(0, Started), (1, Started)]
        );

        // A stop that got no answer is sent again; a refused one is done.
        answer_all(&mut state, &[(0, Started), (1, Started)], &OK);
        view.set(0, false);
        view.set(1, false);
        let tick = sweep(SweepKind::Changes, &mut state, &view);
        assert_eq!(tick, vec![(0, Stopped), (1, Stopped)]);
        answer_all(&mut state, &tick[..1], &unreachable);
        answer_all(&mut state, &tick[1..], &refused);
        assert_eq!(sweep(SweepKind::Changes, &mut state, &view), vec![(0, Stopped)]);
        assert_eq!(state.listed(), 1);

        // A refused decoy that is retired is forgotten without a request.
        let view = Fake::new(&[true]);
        let mut state = AnnounceState::new(1);
        answer_all(&mut state, &[(0, Started)], &refused);
        view.set(0, false);
        assert!(state.changes(&view).is_empty());
        view.set(0, true);
        assert_eq!(sweep(SweepKind::Changes, &mut state, &view), vec![(0, Started)]);
    }

    #[test]
    fn a_stop_is_dropped_when_the_decoy_comes_back_before_it_is_sent() {
        let view = Fake::new(&[true]);
        let mut state = AnnounceState::new(1);
        answer_all(&mut state, &[(0, Started)], &OK);
        view.set(0, false);
        let changes = state.changes(&view);
        let mut s = Sweep::new(SweepKind::Changes, view.info_hashes(&changes.stops));
        view.set(0, true);
        assert_eq!(s.next_job(&state, &view), None);
        state.reset();
        assert_eq!(state.listed(), 0);
        assert_eq!(sweep(SweepKind::Changes, &mut state, &view), vec![(0, Started)]);
    }

    #[test]
    fn tallies_decide_rounds_ticks_and_intervals() {
        let mut t = Tally::default();
        assert!(!t.round_failed() && !t.tick_failed(), "nothing sent");
        assert_eq!(t.next_round_in(), DEFAULT_INTERVAL);
        for _ in 0..ABORT_AFTER_FAILURES - 1 {
            t.record(Started, &Err(Failure::Unreachable("refused".into())));
        }
        assert!(!t.aborted());
        t.record(Started, &Err(Failure::Refused("no".into())));
        assert!(!t.aborted(), "an answer breaks the run");
        assert!(t.round_failed());
        assert!(!t.tick_failed(), "the tracker answered");
        t.record(
            Started,
            &Ok(Announced {
                interval: Duration::from_secs(1933),
                min_interval: Some(Duration::from_secs(966)),
            }),
        );
        t.record(
            Regular,
            &Ok(Announced {
                interval: Duration::from_secs(1800),
                min_interval: Some(Duration::from_secs(2000)),
            }),
        );
        assert_eq!((t.ok, t.refused, t.unreachable, t.started), (2, 1, 7, 1));
        assert!(!t.round_failed());
        assert_eq!(t.next_round_in(), Duration::from_secs(2000), "min interval wins");
        let mut t = Tally::default();
        for i in 0..ABORT_AFTER_FAILURES {
            assert!(!t.aborted());
            let logged = t.record(Stopped, &Err(Failure::Unreachable("timed out".into())));
            assert_eq!(logged, u64::from(i) < FAILURES_LOGGED);
        }
        assert!(t.aborted() && t.tick_failed() && t.round_failed());
        assert_eq!(t.last_error.as_deref(), Some("timed out"));
    }

    #[test]
    fn tiers_follow_bep12() {
        let mut o = TierOrder::new(3, None);
        assert_eq!(o.order(), &[0, 1, 2]);
        assert_eq!(o.current(), 0);
        assert!(!o.failed());
        assert_eq!(o.current(), 1);
        o.succeeded();
        assert_eq!(o.order(), &[1, 0, 2], "a working tracker moves to the front");
        assert_eq!(o.current(), 1);
        assert!(!o.failed());
        assert_eq!(o.current(), 0);
        assert!(!o.failed());
        assert_eq!(o.current(), 2);
        assert!(o.failed(), "every tracker failed: back off");
        assert_eq!(o.current(), 1, "then start over from the front");
        let mut single = TierOrder::new(1, Some(7));
        assert!(single.failed());
        assert_eq!(single.current(), 0);

        // Shuffles are permutations, and differ by seed.
        let orders: std::collections::BTreeSet<Vec<usize>> = (0..50)
            .map(|seed| {
                let o = TierOrder::new(4, Some(seed));
                let mut sorted = o.order().to_vec();
                sorted.sort_unstable();
                assert_eq!(sorted, vec![0, 1, 2, 3]);
                o.order().to_vec()
            })
            .collect();
        assert!(orders.len() > 10, "{orders:?}");
    }

    #[test]
    fn backoff_doubles_to_the_default_interval() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, vec![15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        b.reset();
        assert_eq!(b.next_wait(), FIRST_BACKOFF);
    }

    #[test]
    fn scrapes_batch_active_decoys_and_total_counts() {
        let view = Fake::new(&[true, false, true, true, true]);
        let mut c = ScrapeCursor::new(2);
        assert_eq!(c.next_batch(&view), Some(vec![[0; 20], [2; 20]]));
        assert_eq!(c.next_batch(&view), Some(vec![[3; 20], [4; 20]]));
        assert_eq!(c.next_batch(&view), None);

        let mut t = ScrapeTally::default();
        let seed = ScrapeCounts {
            complete: 1,
            incomplete: 2,
            downloaded: 3,
        };
        t.record(&Ok(vec![seed, ScrapeCounts::default()]));
        t.record(&Ok(vec![ScrapeCounts {
            complete: u64::MAX,
            ..seed
        }]));
        t.record(&Err(Failure::Unreachable("timed out".into())));
        assert_eq!(
            (t.decoys, t.listed, t.seeders, t.leechers, t.downloaded),
            (3, 2, u64::MAX, 4, 6)
        );
        assert_eq!((t.failed, t.last_error.as_deref()), (1, Some("timed out")));
        for _ in 1..ABORT_AFTER_FAILURES {
            t.record(&Err(Failure::Unreachable("timed out".into())));
        }
        assert!(t.aborted());
    }
    #[test]
    fn marks_follow_their_decoys_into_a_reloaded_table() {
        let view = Fake::new(&[true, true, true, true, false]);
        let mut state = AnnounceState::new(5);
        let jobs = sweep(SweepKind::Full, &mut state, &view);
        assert_eq!(jobs.len(), 4);
        // 0 and 2 listed, 1 refused, 3 unanswered.
        for (index, result) in [
            (0, OK),
            (2, OK),
            (1, Err(Failure::Refused("not whitelisted".into()))),
        ] {
            state.record(
                &Job {
                    index,
                    info_hash: [index as u8; 20],
                    event: AnnounceEvent::Started,
                },
                &result,
            );
        }
        assert_eq!(state.listed(), 2);
        // The new table has two more decoys; the old ones moved: decoy i
        // is now at 6 - i, and decoy 2 is gone.
        let moved = state.moved_to(&view, 7, |h| match h[0] {
            2 => None,
            i => Some(6 - i as usize),
        });
        assert_eq!(moved.listed(), 1);
        assert!(moved.is_listed(6), "decoy 0 stays listed at its new place");
        assert!(!moved.is_listed(0) && !moved.is_listed(4));
        assert_eq!(
            moved.marks[5],
            Mark::Refused,
            "decoy 1 stays refused until the next full round"
        );
        assert_eq!(moved.marks.iter().filter(|m| **m != Mark::Unannounced).count(), 2);
    }
}
