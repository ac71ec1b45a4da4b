//! Piece hashes of keyed-fill decoys, kept on disk.
//!
//! With zero fill a decoy's piece hashes are recomputed on demand for free.
//! With keyed fill every piece is different and costs a SHA-1 pass over the
//! decoy, so they are computed once and appended here (20 bytes a piece),
//! and metadata requests read back the ones they need. Only derived
//! metadata is stored; no decoy bytes are.
//!
//! A record is found by its decoy key, a hash of everything its bytes depend
//! on (payload set, title, size), never by catalogue id: ids are reused when
//! a catalogue is recreated, and a record must never serve another decoy.
//! Each record carries a CRC of its hashes, checked before they are trusted.
//! A torn record at the end (a crash while appending) is cut off on open.
//!
//! Appends happen only while a table is loading, and a load holds an
//! exclusive lock on the file: two processes (`run` and `catalog import`,
//! say) never append at once, and neither cuts the other's record.
//!
//! Records nobody needs any more (a rebuilt payload set gives every decoy
//! a new key; titles leave the catalogue) are dropped by a loader that
//! finds them taking more room than the live ones: it writes the live
//! records to a new file and renames it over the old one. A process still
//! reading the old file keeps its own handle on the old inode, so its
//! offsets stay right; a loader that waited for the lock on the old inode
//! notices the rename and opens the new file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

const MAGIC: [u8; 4] = *b"WSP2";
/// magic, decoy key, piece count, CRC of the hashes, zip CRC, zip CRC flag.
const HEADER_LEN: u64 = 4 + 32 + 4 + 4 + 4 + 4;
/// Bounds a corrupt count before it is used to skip or allocate.
const MAX_PIECES: u32 = 1 << 22;

/// Identifies one decoy's bytes.
pub type DecoyKey = [u8; 32];

/// Where one decoy's hashes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceRecord {
    pub offset: u64,
    pub count: u32,
    pub fill_crc: Option<u32>,
    hashes_crc: u32,
}

pub struct PieceHashFile {
    file: File,
    /// Appends go through here; reads use positioned reads and no lock.
    end: Mutex<u64>,
}

/// Where a compaction writes the file's next version.
fn compacting_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".compacting");
    path.with_file_name(name)
}

fn corrupt(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl PieceHashFile {
    /// Opens (or creates) the file, takes its exclusive lock (waiting for
    /// another loader to finish) and returns every whole record by decoy key
    /// (the newest wins). Call [`PieceHashFile::unlock`] when done appending.
    pub fn open(path: &Path) -> std::io::Result<(Self, HashMap<DecoyKey, PieceRecord>)> {
        let mut tries = 0;
        let file = loop {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(path)?;
            file.lock()?;
            // Another loader may have compacted the file while this one
            // waited: the lock is then on a file no longer at `path`.
            let (held, named) = (file.metadata()?, std::fs::metadata(path));
            if named.is_ok_and(|n| (n.dev(), n.ino()) == (held.dev(), held.ino())) {
                break file;
            }
            tries += 1;
            if tries == 100 {
                return Err(std::io::Error::other(format!(
                    "{}: replaced 100 times while waiting for its lock",
                    path.display()
                )));
            }
        };
        // A compaction that died before its rename left its copy behind.
        let _ = std::fs::remove_file(compacting_path(path));
        let len = file.metadata()?.len();
        let mut records = HashMap::new();
        let mut pos = 0u64;
        let mut reader = BufReader::with_capacity(1 << 16, &file);
        let mut header = [0u8; HEADER_LEN as usize];
        while pos + HEADER_LEN <= len {
            reader.read_exact(&mut header)?;
            if header[..4] != MAGIC {
                break;
            }
            let key: DecoyKey = header[4..36].try_into().expect("32 bytes");
            let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
            let count = word(36);
            if count > MAX_PIECES {
                break;
            }
            let next = pos + HEADER_LEN + u64::from(count) * 20;
            if next > len {
                break;
            }
            records.insert(
                key,
                PieceRecord {
                    offset: pos + HEADER_LEN,
                    count,
                    hashes_crc: word(40),
                    fill_crc: (word(48) == 1).then(|| word(44)),
                },
            );
            reader.seek_relative(i64::from(count) * 20)?;
            pos = next;
        }
        drop(reader);
        if pos < len {
            tracing::warn!(path = %path.display(), kept = pos, dropped = len - pos, "cutting a torn piece-hash record");
            file.set_len(pos)?;
        }
        Ok((
            Self {
                file,
                end: Mutex::new(pos),
            },
            records,
        ))
    }

    /// Releases the load lock; reads go on working.
    pub fn unlock(&self) -> std::io::Result<()> {
        self.file.unlock()
    }

    pub fn append(
        &self,
        key: &DecoyKey,
        hashes: &[[u8; 20]],
        fill_crc: Option<u32>,
    ) -> std::io::Result<PieceRecord> {
        let mut body = Vec::with_capacity(hashes.len() * 20);
        for h in hashes {
            body.extend_from_slice(h);
        }
        let hashes_crc = crc32fast::hash(&body);
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + body.len());
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(key);
        buf.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
        buf.extend_from_slice(&hashes_crc.to_le_bytes());
        buf.extend_from_slice(&fill_crc.unwrap_or(0).to_le_bytes());
        buf.extend_from_slice(&u32::from(fill_crc.is_some()).to_le_bytes());
        buf.extend_from_slice(&body);
        let mut end = self.end.lock().expect("no panics while held");
        (&self.file).write_all(&buf)?;
        let record = PieceRecord {
            offset: *end + HEADER_LEN,
            count: hashes.len() as u32,
            fill_crc,
            hashes_crc,
        };
        *end += buf.len() as u64;
        Ok(record)
    }

    /// Every hash of a record, checked against the record's CRC.
    pub fn read(&self, record: PieceRecord) -> std::io::Result<Vec<[u8; 20]>> {
        let mut raw = vec![0u8; record.count as usize * 20];
        self.file.read_exact_at(&mut raw, record.offset)?;
        if crc32fast::hash(&raw) != record.hashes_crc {
            return Err(corrupt(format!(
                "piece hashes at offset {} fail their CRC",
                record.offset
            )));
        }
        Ok(raw
            .chunks_exact(20)
            .map(|c| c.try_into().expect("20 bytes"))
            .collect())
    }

    /// Hashes `range` of a record (what one metadata request needs). Not
    /// checked against the CRC, which covers the whole record: the record
    /// was checked when its table was loaded.
    pub fn read_range(
        &self,
        record: PieceRecord,
        range: std::ops::Range<u32>,
    ) -> std::io::Result<Vec<[u8; 20]>> {
        let range = range.start.min(record.count)..range.end.min(record.count);
        let mut raw = vec![0u8; range.len() * 20];
        self.file
            .read_exact_at(&mut raw, record.offset + u64::from(range.start) * 20)?;
        Ok(raw
            .chunks_exact(20)
            .map(|c| c.try_into().expect("20 bytes"))
            .collect())
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        *self.end.lock().expect("no panics while held")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// If the records not in `live` take more room than those in it, and
    /// at least `min_dead` bytes, rewrites the file at `path` with only
    /// the live records and points `live` at their new places. The caller
    /// holds the load lock (this file came from [`PieceHashFile::open`])
    /// and keeps it on the new file. Returns the bytes freed (0: left as
    /// it was). A live record that fails its CRC stops the compaction and
    /// leaves the file as it was.
    pub fn compact(&mut self, path: &Path, live: &mut [PieceRecord], min_dead: u64) -> std::io::Result<u64> {
        let old_len = self.len();
        let live_len: u64 = live.iter().map(|r| HEADER_LEN + u64::from(r.count) * 20).sum();
        let dead = old_len.saturating_sub(live_len);
        if dead < min_dead || dead <= live_len {
            return Ok(0);
        }
        let tmp = compacting_path(path);
        let new = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&tmp)?;
        new.lock()?;
        new.set_len(0)?;
        let mut moved = Vec::with_capacity(live.len());
        let mut pos = 0u64;
        let written = (|| {
            let mut out = BufWriter::with_capacity(1 << 20, &new);
            let mut raw = Vec::new();
            for record in live.iter() {
                raw.resize((HEADER_LEN + u64::from(record.count) * 20) as usize, 0);
                self.file.read_exact_at(&mut raw, record.offset - HEADER_LEN)?;
                if raw[..4] != MAGIC || crc32fast::hash(&raw[HEADER_LEN as usize..]) != record.hashes_crc {
                    return Err(corrupt(format!(
                        "piece hashes at offset {} fail their CRC; not compacting",
                        record.offset
                    )));
                }
                out.write_all(&raw)?;
                moved.push(PieceRecord {
                    offset: pos + HEADER_LEN,
                    ..*record
                });
                pos += raw.len() as u64;
            }
            out.flush()?;
            drop(out);
            new.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path)?;
        // The new file is in place and whole; only the rename's durability
        // is in doubt, and the old file holds the same live records.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot sync the directory after compacting");
        }
        live.copy_from_slice(&moved);
        // Dropping the old file releases its lock; a loader waiting on it
        // sees the rename and waits on the new file's lock instead.
        self.file = new;
        *self.end.get_mut().expect("no panics while held") = pos;
        Ok(old_len - pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let (f, found) = PieceHashFile::open(&path).unwrap();
        assert!(found.is_empty());
        let a = f.append(&[1; 32], &[[1; 20], [2; 20]], None).unwrap();
        let b = f.append(&[2; 32], &[[9; 20]], Some(77)).unwrap();
        f.unlock().unwrap();
        drop(f);
        // A crash half-way through an append.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&MAGIC)
            .unwrap();
        let (f, found) = PieceHashFile::open(&path).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&[1; 32]], a);
        assert_eq!(found[&[2; 32]], b);
        assert_eq!(f.read(a).unwrap(), vec![[1; 20], [2; 20]]);
        assert_eq!(f.read_range(a, 1..5).unwrap(), vec![[2; 20]]);
        assert_eq!(f.read(b).unwrap(), vec![[9; 20]]);
        let c = f.append(&[3; 32], &[[6; 20]], None).unwrap();
        assert_eq!(f.read(c).unwrap(), vec![[6; 20]]);
    }

    #[test]
    fn hashes_that_fail_their_crc_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let (f, _) = PieceHashFile::open(&path).unwrap();
        let a = f.append(&[1; 32], &[[1; 20], [2; 20]], None).unwrap();
        drop(f);
        // Hashes never written (zeros after a crash on a delayed-allocation
        // file system) but a whole-looking record.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 40], a.offset).unwrap();
        let (f, found) = PieceHashFile::open(&path).unwrap();
        assert!(f.read(found[&[1; 32]]).is_err());
    }

    #[test]
    fn compaction_keeps_only_live_records_and_old_readers_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let (f, _) = PieceHashFile::open(&path).unwrap();
        let dead_a = f.append(&[1; 32], &[[1; 20]; 30], None).unwrap();
        let live_b = f.append(&[2; 32], &[[2; 20], [3; 20]], Some(5)).unwrap();
        let dead_c = f.append(&[3; 32], &[[4; 20]; 30], None).unwrap();
        let live_d = f.append(&[4; 32], &[[6; 20]], None).unwrap();
        f.unlock().unwrap();
        // Another process that loaded before the compaction.
        let (reader, _) = PieceHashFile::open(&path).unwrap();
        reader.unlock().unwrap();
        let (mut f, found) = PieceHashFile::open(&path).unwrap();
        let full = f.len();
        let mut live = [found[&[2; 32]], found[&[4; 32]]];
        assert_eq!(live, [live_b, live_d]);
        // Below the floor nothing happens.
        assert_eq!(f.compact(&path, &mut live, full).unwrap(), 0);
        assert_eq!(live, [live_b, live_d]);
        let freed = f.compact(&path, &mut live, 0).unwrap();
        assert_eq!(freed, 2 * (HEADER_LEN + 30 * 20));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full - freed);
        assert_eq!(f.read(live[0]).unwrap(), vec![[2; 20], [3; 20]]);
        assert_eq!(live[0].fill_crc, Some(5));
        assert_eq!(f.read(live[1]).unwrap(), vec![[6; 20]]);
        // Appends after the compaction land in the new file.
        let e = f.append(&[5; 32], &[[7; 20]], None).unwrap();
        f.unlock().unwrap();
        assert_eq!(reader.read(dead_a).unwrap(), vec![[1; 20]; 30]);
        assert_eq!(reader.read(dead_c).unwrap(), vec![[4; 20]; 30]);
        assert_eq!(reader.read(live_d).unwrap(), vec![[6; 20]]);
        drop(f);
        let (_, found) = PieceHashFile::open(&path).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(
            (found[&[2; 32]], found[&[4; 32]], found[&[5; 32]]),
            (live[0], live[1], e)
        );
        assert!(!dir.path().join("pieces.bin.compacting").exists());
        // A compaction that died before its rename: its copy is removed
        // by the next open.
        std::fs::write(dir.path().join("pieces.bin.compacting"), [0; 99]).unwrap();
        drop(PieceHashFile::open(&path).unwrap());
        assert!(!dir.path().join("pieces.bin.compacting").exists());
    }

    #[test]
    fn a_loader_that_waited_through_a_compaction_locks_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let (mut first, _) = PieceHashFile::open(&path).unwrap();
        first.append(&[1; 32], &[[1; 20]; 50], None).unwrap();
        let mut live = [first.append(&[2; 32], &[[2; 20]], None).unwrap()];
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let (second, found) = PieceHashFile::open(&p).unwrap();
            let record = second.append(&[3; 32], &[[3; 20]], None).unwrap();
            tx.send((found, record)).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err());
        assert!(first.compact(&path, &mut live, 0).unwrap() > 0);
        // The waiter got the old file's lock when the old file was dropped,
        // but must still wait for this loader, which holds the new one's.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err());
        first.unlock().unwrap();
        let (found, third) = rx.recv().unwrap();
        waiter.join().unwrap();
        assert_eq!(found.len(), 1, "the waiter read the compacted file");
        assert_eq!(found[&[2; 32]], live[0]);
        let (f, found) = PieceHashFile::open(&path).unwrap();
        assert_eq!(found[&[3; 32]], third, "its append went to the file at the path");
        assert_eq!(f.read(third).unwrap(), vec![[3; 20]]);
    }

    #[test]
    fn a_second_loader_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let (first, _) = PieceHashFile::open(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let (second, found) = PieceHashFile::open(&p).unwrap();
            tx.send(found.len()).unwrap();
            drop(second);
        });
        // Until the first loader unlocks, the second sees nothing.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err());
        first.append(&[5; 32], &[[5; 20]], None).unwrap();
        first.unlock().unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            1,
            "the second loader sees the first one's record"
        );
        waiter.join().unwrap();
    }
}
