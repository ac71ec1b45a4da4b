//! Every active decoy in one flat, sorted table.
//!
//! An entry is an info hash, a size, a catalogue id and the offset of its
//! title in one shared string arena: about 48 bytes plus the title. Piece
//! hashes, metadata and file bytes are computed on demand from the shared
//! payload, so nothing else is kept per decoy.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use warnseed_bittorrent::metainfo::{self, InfoFields, InfoHash, WindowSink};
use warnseed_bittorrent::mse;
use warnseed_bittorrent::session::SeedContent;
use warnseed_catalog::{CatalogError, CatalogStore};
use warnseed_payload::{read_decoy_range, DecoyBytes, Payload, PieceHashCache};

fn req2_prefix(info_hash: &InfoHash) -> u64 {
    u64::from_be_bytes(mse::req2_hash(info_hash)[..8].try_into().expect("8 bytes"))
}

/// Identifies what an info hash was computed from: the payload's bytes and
/// the rules that lay a decoy out (bump the tag when those rules change).
pub fn content_key(payload: &Payload) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"warnseed decoy layout v1: payload then zeros, libtorrent piece table\0");
    h.update(payload.sha256());
    h.finalize().into()
}

#[derive(Clone, Copy)]
struct Entry {
    info_hash: InfoHash,
    title_len: u8,
    title_offset: u32,
    size: u64,
    id: i64,
}

pub struct DecoyTable {
    cache: PieceHashCache,
    /// Sorted by info hash.
    entries: Vec<Entry>,
    titles: String,
    /// MSE names a torrent by HASH('req2', info hash). These two parallel
    /// arrays (12 bytes a decoy) map the first 8 bytes of that hash to
    /// entries, sorted; a hit is confirmed against the full hash.
    req2_prefix: Vec<u64>,
    req2_entry: Vec<u32>,
}

/// Reports load phases to the caller (the CLI draws progress bars).
pub trait LoadProgress {
    fn hashing(&mut self, _total: u64) {}
    fn hashed(&mut self, _done: u64) {}
}

impl LoadProgress for () {}

impl DecoyTable {
    /// Loads every catalogue title as an active decoy. Info hashes cached in
    /// the catalogue for this payload are reused; the rest are computed on
    /// all cores and written back, so the next start is fast.
    pub fn load(
        store: &mut CatalogStore,
        payload: Arc<Payload>,
        progress: &mut dyn LoadProgress,
    ) -> Result<Self, CatalogError> {
        let key = content_key(&payload);
        let mut entries = Vec::new();
        let mut titles = String::new();
        let mut stale = Vec::new();
        store.for_each(|r| {
            let size = payload.decoy_size(r.size_bytes);
            let title_offset = titles.len() as u32;
            titles.push_str(&r.title);
            let cached = match (r.content_key, r.info_hash) {
                (Some(k), Some(h)) if k == key => Some(h),
                _ => None,
            };
            if cached.is_none() {
                stale.push(entries.len());
            }
            entries.push(Entry {
                info_hash: cached.unwrap_or_default(),
                title_len: r.title.len() as u8,
                title_offset,
                size,
                id: r.id,
            });
        })?;
        entries.shrink_to_fit();
        titles.shrink_to_fit();
        let mut table = Self {
            cache: PieceHashCache::new(payload),
            entries,
            titles,
            req2_prefix: Vec::new(),
            req2_entry: Vec::new(),
        };
        if !stale.is_empty() {
            progress.hashing(stale.len() as u64);
            let computed = table.compute_info_hashes(&stale, progress);
            let rows: Vec<(i64, [u8; 32], [u8; 20])> = stale
                .iter()
                .zip(&computed)
                .map(|(&i, h)| (table.entries[i].id, key, *h))
                .collect();
            for (&i, h) in stale.iter().zip(computed) {
                table.entries[i].info_hash = h;
            }
            store.store_info_hashes(&rows)?;
        }
        table.finish_indexes();
        Ok(table)
    }

    /// A table over explicit `(id, title, requested size)` rows, for tests
    /// and benchmarks that have no catalogue file.
    pub fn from_titles<'a>(
        payload: Arc<Payload>,
        rows: impl IntoIterator<Item = (i64, &'a str, Option<u64>)>,
    ) -> Self {
        let mut table = Self {
            cache: PieceHashCache::new(payload.clone()),
            entries: Vec::new(),
            titles: String::new(),
            req2_prefix: Vec::new(),
            req2_entry: Vec::new(),
        };
        for (id, title, size) in rows {
            let title_offset = table.titles.len() as u32;
            table.titles.push_str(title);
            table.entries.push(Entry {
                info_hash: [0; 20],
                title_len: title.len() as u8,
                title_offset,
                size: payload.decoy_size(size),
                id,
            });
        }
        let all: Vec<usize> = (0..table.entries.len()).collect();
        let hashes = table.compute_info_hashes(&all, &mut ());
        for (e, h) in table.entries.iter_mut().zip(hashes) {
            e.info_hash = h;
        }
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
            .map(|index| Decoy {
                table: Arc::clone(self),
                index,
            })
    }

    fn compute_info_hashes(&self, which: &[usize], progress: &mut dyn LoadProgress) -> Vec<InfoHash> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        // Work is handed out in small chunks, so one thread that drew the
        // big decoys does not leave the others idle.
        let chunk = (which.len() / (threads * 8)).clamp(1, 256);
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let out = Mutex::new(vec![[0u8; 20]; which.len()]);
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for _ in 0..threads {
                handles.push(s.spawn(|| loop {
                    let start = next.fetch_add(chunk, Ordering::Relaxed);
                    if start >= which.len() {
                        return;
                    }
                    let end = (start + chunk).min(which.len());
                    let hashes: Vec<InfoHash> = which[start..end]
                        .iter()
                        .map(|&i| self.compute_one(&self.entries[i]))
                        .collect();
                    out.lock().expect("no panics while held")[start..end].copy_from_slice(&hashes);
                    done.fetch_add(end - start, Ordering::Relaxed);
                }));
            }
            while handles.iter().any(|h| !h.is_finished()) {
                progress.hashed(done.load(Ordering::Relaxed) as u64);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        progress.hashed(which.len() as u64);
        out.into_inner().expect("threads joined")
    }

    fn compute_one(&self, e: &Entry) -> InfoHash {
        let fields = self.fields(e);
        fields.info_hash(|i| self.cache.piece_hash(e.size, fields.piece_length, i))
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
    pub fn payload(&self) -> &Arc<Payload> {
        self.cache.payload()
    }

    /// Heap bytes the table holds (entries and titles), for capacity reports.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.titles.capacity()
            + self.req2_prefix.capacity() * 8
            + self.req2_entry.capacity() * 4
    }

    pub fn lookup(self: &Arc<Self>, info_hash: &InfoHash) -> Option<Decoy> {
        self.entries
            .binary_search_by(|e| e.info_hash.cmp(info_hash))
            .ok()
            .map(|index| Decoy {
                table: Arc::clone(self),
                index: index as u32,
            })
    }

    /// Every decoy, in info-hash order.
    pub fn iter(self: &Arc<Self>) -> impl Iterator<Item = Decoy> + '_ {
        (0..self.entries.len() as u32).map(move |index| Decoy {
            table: Arc::clone(self),
            index,
        })
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
    pub fn id(&self) -> i64 {
        self.entry().id
    }
    pub fn title(&self) -> &str {
        self.table.title(self.entry())
    }
    pub fn size(&self) -> u64 {
        self.entry().size
    }
    pub fn fields(&self) -> InfoFields<'_> {
        self.table.fields(self.entry())
    }
    pub fn bytes(&self) -> DecoyBytes {
        DecoyBytes::new(Arc::clone(self.table.payload()), self.size())
    }
    /// The whole bencoded info dictionary.
    pub fn metadata(&self) -> Vec<u8> {
        let e = self.entry();
        let fields = self.fields();
        fields.to_bytes(|i| self.table.cache.piece_hash(e.size, fields.piece_length, i))
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
        let e = self.entry();
        let fields = self.fields();
        let mut sink = WindowSink {
            start,
            end,
            pos: 0,
            out,
        };
        fields.write(&mut sink, |i| {
            self.table.cache.piece_hash(e.size, fields.piece_length, i)
        });
    }
    fn read(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        read_decoy_range(self.table.payload().bytes(), self.size(), offset, len, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn lookup_finds_every_decoy_and_metadata_hashes_to_its_info_hash() {
        let payload = Arc::new(Payload::new(vec![7u8; 40_000], "t").unwrap());
        let titles: Vec<String> = (0..50).map(|i| format!("sample-title-{i:06}.mp4")).collect();
        let rows = titles
            .iter()
            .enumerate()
            .map(|(i, t)| (i as i64, t.as_str(), Some(i as u64 * 30_011)));
        let table = Arc::new(DecoyTable::from_titles(payload, rows));
        assert_eq!(table.len(), 50);
        for d in table.iter() {
            let found = table.lookup(d.info_hash()).unwrap();
            assert_eq!(found.id(), d.id());
            let meta = d.metadata();
            assert_eq!(meta.len(), d.metadata_len());
            let digest: [u8; 20] = Sha1::digest(&meta).into();
            assert_eq!(&digest, d.info_hash());
            // Piece hashes in the metadata match the bytes we serve.
            let mut data = Vec::new();
            d.read(0, d.size().min(u64::from(d.piece_length())) as u32, &mut data);
            let first: [u8; 20] = Sha1::digest(&data).into();
            let v = warnseed_bittorrent::bencode::decode(&meta).unwrap();
            assert_eq!(&v.get(b"pieces").unwrap().as_bytes().unwrap()[..20], &first);
        }
        assert!(table.lookup(&[0xee; 20]).is_none());
        for d in table.iter() {
            let found = table.lookup_req2(&mse::req2_hash(d.info_hash())).unwrap();
            assert_eq!(found.id(), d.id());
        }
        assert!(table.lookup_req2(&[0xee; 20]).is_none());
    }

    #[test]
    fn info_hashes_are_deterministic_and_cached_in_the_catalogue() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("t.csv");
        std::fs::write(
            &csv,
            "title,size_bytes\nsample-title-000001.mp4,5000000\nsample-title-000002.mkv,\n",
        )
        .unwrap();
        let mut store = CatalogStore::open(&dir.path().join("catalog.sqlite")).unwrap();
        warnseed_catalog::import_file(&mut store, &csv, |_| {}).unwrap();
        let payload = Arc::new(Payload::builtin());
        let a = DecoyTable::load(&mut store, payload.clone(), &mut ()).unwrap();
        let cached = store.find("sample-title-000001.mp4").unwrap().unwrap();
        assert_eq!(cached.content_key, Some(content_key(&payload)));
        let b = DecoyTable::load(&mut store, payload.clone(), &mut ()).unwrap();
        let fresh = DecoyTable::from_titles(
            payload,
            [
                (1, "sample-title-000001.mp4", Some(5_000_000)),
                (2, "sample-title-000002.mkv", None),
            ],
        );
        let hashes = |t: &DecoyTable| t.entries.iter().map(|e| e.info_hash).collect::<Vec<_>>();
        assert_eq!(hashes(&a), hashes(&b));
        assert_eq!(hashes(&a), hashes(&fresh));
    }
}
