//! Every active decoy in one flat, sorted table.
//!
//! An entry is an info hash, a size, a catalogue id, its payload variant and
//! the offset of its title in one shared string arena: 48 bytes plus the
//! title. Piece hashes, metadata and file bytes are computed on demand from
//! the shared payload set, so nothing else is kept per decoy, except with
//! keyed fill, whose piece hashes live on disk ([`PieceHashFile`]).

use crate::piece_file::{DecoyKey, PieceHashFile, PieceRecord};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use warnseed_bittorrent::metainfo::{self, InfoFields, InfoHash};
use warnseed_bittorrent::mse;
use warnseed_bittorrent::session::SeedContent;
use warnseed_catalog::{CatalogError, CatalogStore};
use warnseed_payload::{
    map_indexed, piece_hash, DecoyLayout, DecoyPieceHashes, FillMode, Padding, PayloadSet,
};

/// Buckets of `DecoyTable::hash_buckets`: the first two bytes of a hash.
const HASH_BUCKETS: usize = 1 << 16;

fn hash_bucket(info_hash: &InfoHash) -> usize {
    usize::from(u16::from_be_bytes([info_hash[0], info_hash[1]]))
}

fn req2_prefix(info_hash: &InfoHash) -> u64 {
    u64::from_be_bytes(mse::req2_hash(info_hash)[..8].try_into().expect("8 bytes"))
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("piece-hash file {path}: {source}")]
    PieceFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unique fill needs a piece-hash file; none was given")]
    NoPieceFile,
}

const NO_RECORD: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Entry {
    info_hash: InfoHash,
    title_len: u8,
    variant: u8,
    title_offset: u32,
    /// Index into `DecoyTable::records` (keyed fill), or `NO_RECORD`.
    record: u32,
    size: u64,
    id: i64,
}

/// A load compacts the piece file only when this much or more of it is
/// records no decoy uses (and more than the live ones): rewriting a small
/// file saves nothing worth the write.
const PIECE_FILE_MIN_DEAD: u64 = 64 << 20;

/// Keyed-fill decoys' piece hashes: the file and where each decoy's are.
struct KeyedPieces {
    file: PieceHashFile,
    records: Vec<PieceRecord>,
}

pub struct DecoyTable {
    payloads: Arc<PayloadSet>,
    /// Sorted by info hash.
    entries: Vec<Entry>,
    titles: String,
    /// MSE names a torrent by HASH('req2', info hash). These two parallel
    /// arrays (12 bytes a decoy) map the first 8 bytes of that hash to
    /// entries, sorted; a hit is confirmed against the full hash.
    req2_prefix: Vec<u64>,
    req2_entry: Vec<u32>,
    /// `hash_buckets[b]..hash_buckets[b + 1]` are the entries whose info
    /// hash starts with the two bytes `b`: a lookup searches ~15 adjacent
    /// entries instead of binary-searching a million scattered ones (each
    /// probe a cache miss, once per crawler fetch).
    hash_buckets: Vec<u32>,
    keyed: Option<KeyedPieces>,
    /// Per entry: released and not retired (the campaign schedule sets
    /// these; every decoy starts active). An inactive decoy is neither
    /// served nor announced.
    active: Vec<AtomicBool>,
    active_count: AtomicUsize,
    /// `(catalogue id, entry)` sorted by id, built on first use.
    by_id: OnceLock<Vec<(i64, u32)>>,
}

/// The table a running node serves from. Titles imported into the
/// catalogue while the node runs are loaded into a new table, which then
/// replaces the old one here: peers see it at their next handshake, the
/// DHT and tracker sweeps at their next step. A session keeps the decoy
/// (and so the table) it started with.
#[derive(Clone)]
pub struct LiveTable(Arc<LiveInner>);

struct LiveInner {
    current: RwLock<Arc<DecoyTable>>,
    /// Counts replacements, so a sweep can tell that its positions (entry
    /// indices) now refer to another table.
    generation: AtomicU64,
}

impl LiveTable {
    pub fn new(table: Arc<DecoyTable>) -> Self {
        Self(Arc::new(LiveInner {
            current: RwLock::new(table),
            generation: AtomicU64::new(0),
        }))
    }

    pub fn current(&self) -> Arc<DecoyTable> {
        Arc::clone(&self.0.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current table and its generation, read together.
    pub fn current_with_generation(&self) -> (Arc<DecoyTable>, u64) {
        let table = self.0.current.read().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&table), self.0.generation.load(Ordering::Acquire))
    }

    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Makes `table` the one served from now on.
    pub fn replace(&self, table: Arc<DecoyTable>) {
        let mut current = self.0.current.write().unwrap_or_else(|e| e.into_inner());
        *current = table;
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl From<Arc<DecoyTable>> for LiveTable {
    fn from(table: Arc<DecoyTable>) -> Self {
        Self::new(table)
    }
}

/// Reports load phases to the caller (the CLI draws progress bars).
pub trait LoadProgress {
    fn hashing(&mut self, _total: u64) {}
    fn hashed(&mut self, _done: u64) {}
}

impl LoadProgress for () {}

/// What hashing one decoy yields.
struct Computed {
    info_hash: InfoHash,
    record: Option<PieceRecord>,
}

impl DecoyTable {
    /// Loads every catalogue title as an active decoy. Info hashes cached in
    /// the catalogue for this payload set are reused; the rest are computed
    /// on all cores and written back, so the next start is fast. Keyed fill
    /// keeps piece hashes in `piece_file`.
    pub fn load(
        store: &mut CatalogStore,
        payloads: Arc<PayloadSet>,
        piece_file: Option<&Path>,
        progress: &mut dyn LoadProgress,
    ) -> Result<Self, LoadError> {
        Self::load_compacting(store, payloads, piece_file, progress, PIECE_FILE_MIN_DEAD)
    }

    /// [`DecoyTable::load`], compacting the piece file once its dead
    /// records take more room than its live ones and at least `min_dead`.
    fn load_compacting(
        store: &mut CatalogStore,
        payloads: Arc<PayloadSet>,
        piece_file: Option<&Path>,
        progress: &mut dyn LoadProgress,
        min_dead: u64,
    ) -> Result<Self, LoadError> {
        let key = payloads.content_key();
        let (keyed, mut on_disk) = match (payloads.fill_mode(), piece_file) {
            (FillMode::Zeros, _) => (None, Default::default()),
            (FillMode::Unique, None) => return Err(LoadError::NoPieceFile),
            (FillMode::Unique, Some(path)) => {
                let (file, found) = PieceHashFile::open(path).map_err(|source| LoadError::PieceFile {
                    path: path.display().to_string(),
                    source,
                })?;
                (
                    Some(KeyedPieces {
                        file,
                        records: Vec::new(),
                    }),
                    found,
                )
            }
        };
        let mut table = Self::empty(payloads, keyed);
        let mut stale = Vec::new();
        store.for_each(|r| {
            let mut cached = match (r.content_key, r.info_hash) {
                (Some(k), Some(h)) if k == key => Some(h),
                _ => None,
            };
            let index = table.entries.len();
            table.push(
                r.id,
                &r.title,
                r.language.as_deref(),
                r.size_bytes,
                cached.unwrap_or_default(),
                NO_RECORD,
            );
            let found = table.keyed.is_some().then(|| {
                let e = table.entries[index];
                on_disk
                    .remove(&table.decoy_key(&e))
                    // A keyed zip decoy's central directory needs its CRC.
                    .filter(|rec| rec.fill_crc.is_some() || !table.is_zip(&e))
            });
            if let Some(keyed) = &mut table.keyed {
                match found.flatten() {
                    Some(rec) => {
                        table.entries[index].record = keyed.records.len() as u32;
                        keyed.records.push(rec);
                    }
                    None => cached = None,
                }
            }
            if cached.is_none() {
                stale.push(index);
            }
        })?;
        table.entries.shrink_to_fit();
        table.titles.shrink_to_fit();
        if !stale.is_empty() {
            progress.hashing(stale.len() as u64);
            let computed = table.compute_info_hashes(&stale, progress)?;
            let rows: Vec<(i64, [u8; 32], [u8; 20])> = stale
                .iter()
                .zip(&computed)
                .map(|(&i, c)| (table.entries[i].id, key, c.info_hash))
                .collect();
            table.adopt(&stale, computed);
            if let Some(keyed) = &table.keyed {
                // Hashes reach the disk before the catalogue says they exist.
                keyed.file.sync().map_err(|source| LoadError::PieceFile {
                    path: piece_file.map(|p| p.display().to_string()).unwrap_or_default(),
                    source,
                })?;
            }
            store.store_info_hashes(&rows)?;
        }
        if let (Some(keyed), Some(path)) = (&mut table.keyed, piece_file) {
            let before = keyed.file.len();
            match keyed.file.compact(path, &mut keyed.records, min_dead) {
                Ok(0) => {}
                Ok(freed) => tracing::info!(
                    path = %path.display(),
                    before_bytes = before,
                    after_bytes = before - freed,
                    "compacted the piece-hash file: dropped the records no decoy uses"
                ),
                // The file is as it was; the next load tries again.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot compact the piece-hash file")
                }
            }
        }
        if let Some(keyed) = &table.keyed {
            keyed.file.unlock().map_err(|source| LoadError::PieceFile {
                path: piece_file.map(|p| p.display().to_string()).unwrap_or_default(),
                source,
            })?;
        }
        table.finish_indexes();
        Ok(table)
    }

    fn empty(payloads: Arc<PayloadSet>, keyed: Option<KeyedPieces>) -> Self {
        Self {
            payloads,
            entries: Vec::new(),
            titles: String::new(),
            req2_prefix: Vec::new(),
            req2_entry: Vec::new(),
            hash_buckets: Vec::new(),
            keyed,
            active: Vec::new(),
            active_count: AtomicUsize::new(0),
            by_id: OnceLock::new(),
        }
    }

    /// What a keyed decoy's bytes depend on: the payload set (and fill
    /// secret), the title (the fill key), the size and the variant.
    fn decoy_key(&self, e: &Entry) -> DecoyKey {
        let mut h = Sha256::new();
        h.update(b"warnseed decoy key v1\0");
        h.update(self.payloads.content_key());
        h.update([e.variant]);
        h.update(e.size.to_be_bytes());
        h.update(self.title(e).as_bytes());
        h.finalize().into()
    }

    fn is_zip(&self, e: &Entry) -> bool {
        matches!(self.payloads.variant(e.variant).padding(), Padding::Zip(_))
    }

    fn push(
        &mut self,
        id: i64,
        title: &str,
        language: Option<&str>,
        size: Option<u64>,
        info_hash: InfoHash,
        record: u32,
    ) {
        let variant = self.payloads.variant_for_title(title, language);
        let title_offset = self.titles.len() as u32;
        self.titles.push_str(title);
        self.entries.push(Entry {
            info_hash,
            title_len: title.len() as u8,
            variant,
            title_offset,
            record,
            size: self.payloads.variant(variant).nearest_size(size),
            id,
        });
    }

    fn adopt(&mut self, which: &[usize], computed: Vec<Computed>) {
        for (&i, c) in which.iter().zip(computed) {
            self.entries[i].info_hash = c.info_hash;
            if let (Some(record), Some(keyed)) = (c.record, &mut self.keyed) {
                self.entries[i].record = keyed.records.len() as u32;
                keyed.records.push(record);
            }
        }
    }

    /// A table over explicit `(id, title, requested size)` rows with zero
    /// fill, for tests and benchmarks that have no catalogue file.
    pub fn from_titles<'a>(
        payloads: Arc<PayloadSet>,
        rows: impl IntoIterator<Item = (i64, &'a str, Option<u64>)>,
    ) -> Self {
        assert_eq!(
            payloads.fill_mode(),
            FillMode::Zeros,
            "keyed fill needs a piece-hash file: use DecoyTable::load"
        );
        let mut table = Self::empty(payloads, None);
        for (id, title, size) in rows {
            table.push(id, title, None, size, [0; 20], NO_RECORD);
        }
        let all: Vec<usize> = (0..table.entries.len()).collect();
        let computed = table
            .compute_info_hashes(&all, &mut ())
            .expect("zero fill writes no piece file");
        table.adopt(&all, computed);
        table.finish_indexes();
        table
    }

    /// Sorts entries by info hash and builds the MSE req2 index over them.
    fn finish_indexes(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.info_hash);
        let mut pairs: Vec<(u64, u32)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (req2_prefix(&e.info_hash), i as u32))
            .collect();
        pairs.sort_unstable();
        self.req2_prefix = pairs.iter().map(|p| p.0).collect();
        self.req2_entry = pairs.iter().map(|p| p.1).collect();
        self.hash_buckets = (0..=HASH_BUCKETS)
            .map(|b| self.entries.partition_point(|e| hash_bucket(&e.info_hash) < b) as u32)
            .collect();
        self.active = (0..self.entries.len()).map(|_| AtomicBool::new(true)).collect();
        self.active_count = AtomicUsize::new(self.entries.len());
    }

    fn index_of_id(&self, id: i64) -> Option<usize> {
        let by_id = self.by_id.get_or_init(|| {
            let mut v: Vec<(i64, u32)> = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id, i as u32))
                .collect();
            v.sort_unstable();
            v
        });
        by_id
            .binary_search_by_key(&id, |p| p.0)
            .ok()
            .map(|i| by_id[i].1 as usize)
    }

    fn is_active_index(&self, index: usize) -> bool {
        self.active[index].load(Ordering::Relaxed)
    }

    fn set_active_index(&self, index: usize, active: bool) {
        if self.active[index].swap(active, Ordering::Relaxed) != active {
            if active {
                self.active_count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.active_count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Releases (`true`) or retires (`false`) the decoy with catalogue id
    /// `id`; returns whether the table holds it.
    pub fn set_active(&self, id: i64, active: bool) -> bool {
        match self.index_of_id(id) {
            Some(i) => {
                self.set_active_index(i, active);
                true
            }
            None => false,
        }
    }

    /// Makes exactly the decoys whose id satisfies `keep` active.
    pub fn retain_active(&self, keep: impl Fn(i64) -> bool) {
        for (i, e) in self.entries.iter().enumerate() {
            self.set_active_index(i, keep(e.id));
        }
    }

    /// The highest catalogue id loaded (titles imported later wait until a
    /// [`LiveTable`] reload), or `None` for an empty table.
    pub fn max_id(&self) -> Option<i64> {
        self.entries.iter().map(|e| e.id).max()
    }

    /// Decoys currently released and not retired.
    pub fn active_len(&self) -> usize {
        self.active_count.load(Ordering::Relaxed)
    }

    /// The decoy an MSE peer names by HASH('req2', info hash).
    pub fn lookup_req2(self: &Arc<Self>, req2: &[u8; 20]) -> Option<Decoy> {
        let prefix = u64::from_be_bytes(req2[..8].try_into().expect("8 bytes"));
        let start = self.req2_prefix.partition_point(|&p| p < prefix);
        self.req2_prefix[start..]
            .iter()
            .take_while(|&&p| p == prefix)
            .zip(&self.req2_entry[start..])
            .map(|(_, &i)| i)
            .find(|&i| mse::req2_hash(&self.entries[i as usize].info_hash) == *req2)
            .filter(|&i| self.is_active_index(i as usize))
            .map(|index| Decoy {
                table: Arc::clone(self),
                index,
            })
    }

    fn compute_info_hashes(
        &self,
        which: &[usize],
        progress: &mut dyn LoadProgress,
    ) -> Result<Vec<Computed>, LoadError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let threads = match self.keyed {
            // Keyed fill splits each decoy over the cores itself.
            Some(_) => 1,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        // Work is handed out in small chunks, so one thread that drew the
        // big decoys does not leave the others idle.
        let chunk = (which.len() / (threads * 8)).clamp(1, 256);
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let out: Mutex<Vec<Option<Computed>>> = Mutex::new((0..which.len()).map(|_| None).collect());
        let failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 0..threads {
                handles.push(s.spawn(|| loop {
                    let start = next.fetch_add(chunk, Ordering::Relaxed);
                    if start >= which.len() || failed.lock().expect("no panics while held").is_some() {
                        return;
                    }
                    let end = (start + chunk).min(which.len());
                    for (slot, &i) in (start..end).zip(&which[start..end]) {
                        match self.compute_one(&self.entries[i]) {
                            Ok(c) => out.lock().expect("no panics while held")[slot] = Some(c),
                            Err(e) => {
                                *failed.lock().expect("no panics while held") = Some(e);
                                return;
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            while handles.iter().any(|h| !h.is_finished()) {
                progress.hashed(done.load(Ordering::Relaxed) as u64);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        if let Some(source) = failed.into_inner().expect("threads joined") {
            return Err(LoadError::PieceFile {
                path: "piece-hash file".into(),
                source,
            });
        }
        progress.hashed(which.len() as u64);
        Ok(out
            .into_inner()
            .expect("threads joined")
            .into_iter()
            .map(|c| c.expect("every slot computed"))
            .collect())
    }

    fn compute_one(&self, e: &Entry) -> std::io::Result<Computed> {
        let fields = self.fields(e);
        let pl = fields.piece_length;
        let Some(keyed) = &self.keyed else {
            let hashes = DecoyPieceHashes::new(self.layout(e, None));
            return Ok(Computed {
                info_hash: fields.info_hash(|i| hashes.get(i)),
                record: None,
            });
        };
        let count = metainfo::piece_count(e.size, pl);
        // Hashes already on disk (a load that stopped before the catalogue
        // cached its info hashes): the info hash is cheap from them.
        if let Some(existing) = self.record(e).filter(|r| r.count == count) {
            match keyed.file.read(existing) {
                Ok(hashes) => {
                    return Ok(Computed {
                        info_hash: fields.info_hash(|i| hashes[i as usize]),
                        record: None,
                    })
                }
                // A record that fails its CRC is hashed again below.
                Err(err) => tracing::warn!(id = e.id, error = %err, "rehashing a decoy"),
            }
        }
        // Keyed fill: one pass over the decoy (two for zip, whose tail
        // holds the padding's CRC), and the hashes go to disk.
        let crc = self.layout(e, None).compute_fill_crc();
        let layout = self.layout(e, crc);
        // Every byte is hashed: split the decoy's pieces over all cores
        // (decoys are taken one at a time, so a big last decoy does not
        // leave cores idle).
        const PIECES_PER_TASK: u32 = 8;
        let hashes: Vec<[u8; 20]> = map_indexed(u64::from(count.div_ceil(PIECES_PER_TASK)), |task| {
            let from = task as u32 * PIECES_PER_TASK;
            (from..(from + PIECES_PER_TASK).min(count))
                .map(|i| piece_hash(&layout, i))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let record = keyed.file.append(&self.decoy_key(e), &hashes, crc)?;
        Ok(Computed {
            info_hash: fields.info_hash(|i| hashes[i as usize]),
            record: Some(record),
        })
    }

    fn layout(&self, e: &Entry, fill_crc: Option<u32>) -> DecoyLayout<'_> {
        let fill = self.payloads.fill_for_title(self.title(e));
        self.payloads.layout(
            e.variant,
            e.size,
            metainfo::piece_length_for(e.size),
            fill,
            fill_crc,
        )
    }

    fn record(&self, e: &Entry) -> Option<PieceRecord> {
        let keyed = self.keyed.as_ref()?;
        (e.record != NO_RECORD).then(|| keyed.records[e.record as usize])
    }

    /// Piece hash source for pieces `range` of one decoy: computed (zero
    /// fill) or read from the piece-hash file (keyed fill; zero hashes if
    /// the read fails, which makes the metadata fail its info-hash check on
    /// the peer rather than serve something unchecked).
    fn piece_hashes(&self, e: &Entry, range: std::ops::Range<u32>) -> PieceHashes<'_> {
        match (self.record(e), &self.keyed) {
            (Some(record), Some(keyed)) => PieceHashes::Stored {
                first: range.start,
                hashes: keyed
                    .file
                    .read_range(record, range.clone())
                    .unwrap_or_else(|err| {
                        tracing::error!(id = e.id, error = %err, "cannot read piece hashes");
                        vec![[0; 20]; range.len()]
                    }),
            },
            _ => PieceHashes::Computed(DecoyPieceHashes::new(self.layout(e, None))),
        }
    }

    fn fields(&self, e: &Entry) -> InfoFields<'_> {
        InfoFields {
            name: self.title(e),
            length: e.size,
            piece_length: metainfo::piece_length_for(e.size),
        }
    }

    fn title(&self, e: &Entry) -> &str {
        let start = e.title_offset as usize;
        &self.titles[start..start + usize::from(e.title_len)]
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn payloads(&self) -> &Arc<PayloadSet> {
        &self.payloads
    }

    /// Heap bytes the table holds (entries and titles), for capacity reports.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.active.capacity()
            + self.by_id.get().map_or(0, |v| v.capacity() * 16)
            + self.titles.capacity()
            + self.req2_prefix.capacity() * 8
            + self.req2_entry.capacity() * 4
            + self.hash_buckets.capacity() * 4
            + self
                .keyed
                .as_ref()
                .map_or(0, |k| k.records.capacity() * std::mem::size_of::<PieceRecord>())
    }

    /// The entry (info-hash order) of the decoy with this info hash,
    /// active or not.
    pub fn index_of(&self, info_hash: &InfoHash) -> Option<usize> {
        let b = hash_bucket(info_hash);
        let (start, end) = match (self.hash_buckets.get(b), self.hash_buckets.get(b + 1)) {
            (Some(&s), Some(&e)) => (s as usize, e as usize),
            _ => return None,
        };
        self.entries[start..end]
            .binary_search_by(|e| e.info_hash.cmp(info_hash))
            .ok()
            .map(|i| start + i)
    }

    /// The active decoy with this info hash.
    pub fn lookup(self: &Arc<Self>, info_hash: &InfoHash) -> Option<Decoy> {
        self.index_of(info_hash)
            .filter(|&index| self.is_active_index(index))
            .map(|index| Decoy {
                table: Arc::clone(self),
                index: index as u32,
            })
    }

    /// Up to `n` active info hashes from `target` on in info-hash order
    /// (wrapping round): a BEP 51 sample near the keyspace an indexer asks
    /// about.
    pub fn info_hashes_from(&self, target: &InfoHash, n: usize) -> Vec<InfoHash> {
        let len = self.entries.len();
        if self.active_len() == 0 {
            return Vec::new();
        }
        let start = self.entries.partition_point(|e| e.info_hash < *target);
        // A query costs at most this many entries, however few are active
        // (a sample may then be short).
        const MAX_SCAN: usize = 100_000;
        (0..len.min(MAX_SCAN))
            .map(|i| (start + i) % len)
            .filter(|&i| self.is_active_index(i))
            .take(n)
            .map(|i| self.entries[i].info_hash)
            .collect()
    }

    /// The info hash of entry `i` (info-hash order), if that decoy is active.
    pub fn info_hash_at(&self, i: usize) -> Option<InfoHash> {
        self.entries
            .get(i)
            .filter(|_| self.is_active_index(i))
            .map(|e| e.info_hash)
    }

    /// Whether entry `i` (info-hash order) is active.
    pub fn is_active_at(&self, i: usize) -> bool {
        i < self.entries.len() && self.is_active_index(i)
    }

    /// Every active decoy, in info-hash order.
    pub fn iter(self: &Arc<Self>) -> impl Iterator<Item = Decoy> + '_ {
        self.iter_all().filter(|d| d.is_active())
    }

    /// Every decoy, released or not, in info-hash order.
    pub fn iter_all(self: &Arc<Self>) -> impl Iterator<Item = Decoy> + '_ {
        (0..self.entries.len() as u32).map(move |index| Decoy {
            table: Arc::clone(self),
            index,
        })
    }
}

enum PieceHashes<'t> {
    Computed(DecoyPieceHashes<'t>),
    /// Hashes of pieces `first..first + hashes.len()`.
    Stored {
        first: u32,
        hashes: Vec<[u8; 20]>,
    },
}

impl PieceHashes<'_> {
    fn get(&self, index: u32) -> [u8; 20] {
        match self {
            PieceHashes::Computed(hashes) => hashes.get(index),
            PieceHashes::Stored { first, hashes } => index
                .checked_sub(*first)
                .and_then(|i| hashes.get(i as usize))
                .copied()
                .unwrap_or([0; 20]),
        }
    }
}

/// A handle to one decoy: cheap to clone, computes everything on demand.
#[derive(Clone)]
pub struct Decoy {
    table: Arc<DecoyTable>,
    index: u32,
}

impl Decoy {
    fn entry(&self) -> &Entry {
        &self.table.entries[self.index as usize]
    }
    /// Released and not retired.
    pub fn is_active(&self) -> bool {
        self.table.is_active_index(self.index as usize)
    }
    /// Position in the table (info-hash order).
    pub fn index(&self) -> usize {
        self.index as usize
    }
    pub fn id(&self) -> i64 {
        self.entry().id
    }
    pub fn title(&self) -> &str {
        self.table.title(self.entry())
    }
    pub fn size(&self) -> u64 {
        self.entry().size
    }
    /// Name of the payload variant this decoy carries (`mp4`, `zip`, ...).
    pub fn variant(&self) -> &str {
        self.table.payloads.variant(self.entry().variant).name()
    }
    pub fn fields(&self) -> InfoFields<'_> {
        self.table.fields(self.entry())
    }
    /// The decoy's bytes, for serving and exports.
    pub fn layout(&self) -> DecoyLayout<'_> {
        let e = self.entry();
        self.table
            .layout(e, self.table.record(e).and_then(|r| r.fill_crc))
    }
    /// The whole bencoded info dictionary.
    pub fn metadata(&self) -> Vec<u8> {
        let fields = self.fields();
        let hashes = self.table.piece_hashes(self.entry(), 0..fields.piece_count());
        fields.to_bytes(|i| hashes.get(i))
    }
    pub fn torrent_file(&self, trackers: &[String]) -> Vec<u8> {
        metainfo::torrent_file(&self.metadata(), trackers, crate::DEFAULT_CLIENT_VERSION)
    }
    pub fn magnet(&self, trackers: &[String], peers: &[String]) -> String {
        metainfo::magnet(
            &self.entry().info_hash,
            self.title(),
            self.size(),
            trackers,
            peers,
        )
    }
}

impl SeedContent for Decoy {
    fn info_hash(&self) -> &InfoHash {
        &self.entry().info_hash
    }
    fn total_length(&self) -> u64 {
        self.size()
    }
    fn piece_length(&self) -> u32 {
        metainfo::piece_length_for(self.size())
    }
    fn piece_count(&self) -> u32 {
        metainfo::piece_count(self.size(), self.piece_length())
    }
    fn metadata_len(&self) -> usize {
        self.fields().encoded_len()
    }
    fn metadata_range(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        let fields = self.fields();
        // Only the hashes this window holds are computed or read.
        let hashes = self
            .table
            .piece_hashes(self.entry(), fields.pieces_in(start, end));
        fields.write_range(start, end, out, |i| hashes.get(i));
    }
    fn read(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        self.layout().read_into(offset, len, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};
    use warnseed_payload::{CellKind, Variant};

    fn synthetic_set(mode: FillMode) -> Arc<PayloadSet> {
        synthetic_set_with(mode, b"test secret")
    }

    /// Another secret: the same decoys with other fill bytes (and keys).
    fn synthetic_set_with(mode: FillMode, secret: &[u8]) -> Arc<PayloadSet> {
        let media = |n: usize| (0..n).map(|i| (i * 13) as u8).collect::<Vec<u8>>();
        Arc::new(
            PayloadSet::new(
                vec![
                    Variant::cells("mp4", media(40_000), CellKind::Mp4Free),
                    Variant::cells("mkv", media(30_001), CellKind::MatroskaVoid),
                    Variant::zip("zip", &[("warning.txt", &media(5_000))]),
                    Variant::trailing("txt", b"WARNING".to_vec()),
                ],
                mode,
                secret.to_vec(),
            )
            .unwrap(),
        )
    }

    /// Metadata hashes to the info hash, and every piece hash in it matches
    /// the bytes served.
    fn check_decoy(d: &Decoy) {
        let meta = d.metadata();
        assert_eq!(meta.len(), d.metadata_len());
        let digest: [u8; 20] = Sha1::digest(&meta).into();
        assert_eq!(&digest, d.info_hash());
        let v = warnseed_bittorrent::bencode::decode(&meta).unwrap();
        let pieces = v.get(b"pieces").unwrap().as_bytes().unwrap();
        for i in 0..d.piece_count() {
            let start = u64::from(i) * u64::from(d.piece_length());
            let mut data = Vec::new();
            d.read(start, d.piece_length(), &mut data);
            let want: [u8; 20] = Sha1::digest(&data).into();
            assert_eq!(&pieces[i as usize * 20..][..20], &want, "{} piece {i}", d.title());
        }
    }

    #[test]
    fn lookup_finds_every_decoy_and_metadata_hashes_to_its_info_hash() {
        let exts = ["mp4", "mkv", "zip", "iso"];
        let titles: Vec<String> = (0..40)
            .map(|i| format!("sample-title-{i:06}.{}", exts[i % 4]))
            .collect();
        let rows = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64, t.as_str(), Some(i as u64 * 30_011)));
        let table = Arc::new(DecoyTable::from_titles(synthetic_set(FillMode::Zeros), rows));
        assert_eq!(table.len(), 40);
        for d in table.iter() {
            let found = table.lookup(d.info_hash()).unwrap();
            assert_eq!(found.id(), d.id());
            check_decoy(&d);
        }
        let variants: std::collections::BTreeSet<String> =
            table.iter().map(|d| d.variant().to_owned()).collect();
        assert_eq!(
            variants.into_iter().collect::<Vec<_>>(),
            ["mkv", "mp4", "txt", "zip"]
        );
        assert!(table.lookup(&[0xee; 20]).is_none());
        // Misses in an occupied bucket and at both ends of the keyspace.
        for d in table.iter() {
            let mut near = *d.info_hash();
            near[19] ^= 1;
            assert!(table.lookup(&near).is_none());
        }
        assert!(table.lookup(&[0x00; 20]).is_none());
        assert!(table.lookup(&[0xff; 20]).is_none());
        for d in table.iter() {
            let found = table.lookup_req2(&mse::req2_hash(d.info_hash())).unwrap();
            assert_eq!(found.id(), d.id());
        }
        assert!(table.lookup_req2(&[0xee; 20]).is_none());
    }

    #[test]
    fn inactive_decoys_are_not_found_served_sampled_or_iterated() {
        let titles: Vec<String> = (0..10).map(|i| format!("sample-title-{i:06}.txt")).collect();
        let rows = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64 + 1, t.as_str(), None));
        let table = Arc::new(DecoyTable::from_titles(synthetic_set(FillMode::Zeros), rows));
        assert_eq!((table.active_len(), table.max_id()), (10, Some(10)));
        let hash_of = |id: i64| *table.iter_all().find(|d| d.id() == id).unwrap().info_hash();
        let three = hash_of(3);
        table.retain_active(|id| id != 3);
        assert!(table.lookup(&three).is_none());
        assert!(table.lookup_req2(&mse::req2_hash(&three)).is_none());
        assert_eq!(table.active_len(), 9);
        assert_eq!(table.iter().count(), 9);
        assert_eq!(table.iter_all().count(), 10);
        assert!(!table.info_hashes_from(&[0; 20], 10).contains(&three));
        let index = table.iter_all().find(|d| d.id() == 3).unwrap().index();
        assert_eq!(table.info_hash_at(index), None);
        // Released again; unknown ids are reported.
        assert!(table.set_active(3, true));
        assert!(!table.set_active(99, true));
        assert_eq!(table.lookup(&three).map(|d| d.id()), Some(3));
        assert_eq!(table.active_len(), 10);
        table.retain_active(|_| false);
        assert!(table.info_hashes_from(&[0; 20], 10).is_empty());
    }

    /// A catalogue in `dir` of four titles numbered from `first`: one of
    /// each kind and size the tests need.
    fn catalogue_from(dir: &Path, first: u32) -> CatalogStore {
        let csv = dir.join("t.csv");
        let kinds = [
            ("mp4", "5000000"),
            ("mkv", ""),
            ("zip", "3000007"),
            ("mkv", "3000007"),
        ];
        let mut text = String::from("title,size_bytes\n");
        for (i, (ext, size)) in kinds.iter().enumerate() {
            text.push_str(&format!("sample-title-{:06}.{ext},{size}\n", first + i as u32));
        }
        std::fs::write(&csv, text).unwrap();
        let mut store = CatalogStore::open(&dir.join("catalog.sqlite")).unwrap();
        warnseed_catalog::import_file(&mut store, &csv, |_| {}).unwrap();
        store
    }

    fn catalogue(dir: &Path) -> CatalogStore {
        catalogue_from(dir, 1)
    }

    #[test]
    fn info_hashes_are_deterministic_and_cached_in_the_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = catalogue(dir.path());
        let set = synthetic_set(FillMode::Zeros);
        let a = DecoyTable::load(&mut store, set.clone(), None, &mut ()).unwrap();
        let cached = store.find("sample-title-000001.mp4").unwrap().unwrap();
        assert_eq!(cached.content_key, Some(set.content_key()));
        let b = DecoyTable::load(&mut store, set.clone(), None, &mut ()).unwrap();
        let fresh = DecoyTable::from_titles(
            set,
            [
                (1, "sample-title-000001.mp4", Some(5_000_000)),
                (2, "sample-title-000002.mkv", None),
                (3, "sample-title-000003.zip", Some(3_000_007)),
                (4, "sample-title-000004.mkv", Some(3_000_007)),
            ],
        );
        let hashes = |t: &DecoyTable| t.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>();
        assert_eq!(hashes(&a), hashes(&b));
        assert_eq!(hashes(&a), hashes(&fresh));
    }

    #[test]
    fn unique_fill_stores_piece_hashes_and_no_two_decoys_share_a_piece() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = catalogue(dir.path());
        let set = synthetic_set(FillMode::Unique);
        let pieces = dir.path().join("pieces.bin");
        assert!(matches!(
            DecoyTable::load(&mut store, set.clone(), None, &mut ()),
            Err(LoadError::NoPieceFile)
        ));
        let a = Arc::new(DecoyTable::load(&mut store, set.clone(), Some(&pieces), &mut ()).unwrap());
        let written = std::fs::metadata(&pieces).unwrap().len();
        let b = Arc::new(DecoyTable::load(&mut store, set.clone(), Some(&pieces), &mut ()).unwrap());
        assert_eq!(
            std::fs::metadata(&pieces).unwrap().len(),
            written,
            "second load reuses the file"
        );
        let mut seen = std::collections::HashMap::new();
        for d in b.iter() {
            check_decoy(&d);
            assert_eq!(a.lookup(d.info_hash()).unwrap().id(), d.id());
            let meta = d.metadata();
            let v = warnseed_bittorrent::bencode::decode(&meta).unwrap();
            let hashes = v.get(b"pieces").unwrap().as_bytes().unwrap().to_vec();
            let media_pieces = d
                .layout()
                .variant()
                .media_len()
                .div_ceil(u64::from(d.piece_length()));
            for (i, h) in hashes.chunks(20).enumerate().skip(media_pieces as usize) {
                if let Some(other) = seen.insert(h.to_vec(), (d.id(), i)) {
                    panic!("decoy {} piece {i} equals decoy {:?}", d.id(), other);
                }
            }
        }
        // A load that stopped after hashing but before the catalogue cached
        // the info hashes resumes from the piece file: nothing is rehashed.
        let bogus: Vec<(i64, [u8; 32], [u8; 20])> = b.iter().map(|d| (d.id(), [9; 32], [0; 20])).collect();
        store.store_info_hashes(&bogus).unwrap();
        let resumed = DecoyTable::load(&mut store, set.clone(), Some(&pieces), &mut ()).unwrap();
        assert_eq!(std::fs::metadata(&pieces).unwrap().len(), written);
        assert_eq!(
            a.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>(),
            resumed.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>()
        );
        // A new catalogue reuses ids 1.. for other titles of the same sizes:
        // the piece file must not hand them the old titles' hashes.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let mut other_store = catalogue_from(&other, 777);
        let recreated =
            Arc::new(DecoyTable::load(&mut other_store, set.clone(), Some(&pieces), &mut ()).unwrap());
        for d in recreated.iter() {
            check_decoy(&d);
        }
        // Losing the piece file makes the cached info hashes stale, not wrong.
        std::fs::remove_file(&pieces).unwrap();
        let c = DecoyTable::load(&mut store, set, Some(&pieces), &mut ()).unwrap();
        assert_eq!(
            a.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>(),
            c.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>()
        );
    }
    #[test]
    fn rebuilt_payloads_do_not_grow_the_piece_file_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = catalogue(dir.path());
        let pieces = dir.path().join("pieces.bin");
        let load = |store: &mut CatalogStore, secret: &[u8]| {
            let set = synthetic_set_with(FillMode::Unique, secret);
            Arc::new(DecoyTable::load_compacting(store, set, Some(&pieces), &mut (), 0).unwrap())
        };
        let first = load(&mut store, b"first");
        let one_set = std::fs::metadata(&pieces).unwrap().len();
        // A rebuilt payload set: every decoy gets a new key and new hashes.
        // The first set's records are as big as the live ones: kept.
        let second = load(&mut store, b"second");
        assert_eq!(std::fs::metadata(&pieces).unwrap().len(), 2 * one_set);
        // A third: the dead records now outweigh the live ones.
        let third = load(&mut store, b"third");
        assert_eq!(std::fs::metadata(&pieces).unwrap().len(), one_set);
        for table in [&first, &second, &third] {
            for d in table.iter() {
                check_decoy(&d);
            }
        }
        // A later load finds every record of the compacted file.
        let again = load(&mut store, b"third");
        assert_eq!(std::fs::metadata(&pieces).unwrap().len(), one_set);
        let hashes = |t: &DecoyTable| t.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>();
        assert_eq!(hashes(&again), hashes(&third));
        assert_ne!(hashes(&third), hashes(&second));
    }
}
