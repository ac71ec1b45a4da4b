//! Piece hashes of keyed-fill decoys, kept on disk.
//!
//! With zero fill a decoy's piece hashes are recomputed on demand for free.
//! With keyed fill every piece is different and costs a SHA-1 pass over the
//! decoy, so they are computed once and appended here (20 bytes a piece),
//! and metadata requests read them back. Only derived metadata is stored;
//! no decoy bytes are.
//!
//! Records: magic, catalogue id, content key, piece count, zip CRC (with a
//! presence flag), then the hashes. A torn record at the end (a crash while
//! appending) is cut off on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

const MAGIC: [u8; 4] = *b"WSPH";
const HEADER_LEN: u64 = 4 + 8 + 32 + 4 + 4 + 4;
/// Bounds a corrupt count before it is used to skip or allocate.
const MAX_PIECES: u32 = 1 << 22;

/// Where one decoy's hashes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceRecord {
    pub offset: u64,
    pub count: u32,
    pub fill_crc: Option<u32>,
}

pub struct PieceHashFile {
    file: File,
    /// Appends go through here; reads use positioned reads and no lock.
    end: Mutex<u64>,
}

impl PieceHashFile {
    /// Opens (or creates) the file and returns the records made for
    /// `content_key`, by catalogue id (the newest wins).
    pub fn open(path: &Path, content_key: &[u8; 32]) -> std::io::Result<(Self, HashMap<i64, PieceRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut records = HashMap::new();
        let mut pos = 0u64;
        let mut reader = std::io::BufReader::new(&mut file);
        let mut header = [0u8; HEADER_LEN as usize];
        while pos + HEADER_LEN <= len {
            reader.seek(SeekFrom::Start(pos))?;
            reader.read_exact(&mut header)?;
            if header[..4] != MAGIC {
                break;
            }
            let id = i64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
            let key: [u8; 32] = header[12..44].try_into().expect("32 bytes");
            let count = u32::from_le_bytes(header[44..48].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[48..52].try_into().expect("4 bytes"));
            let has_crc = u32::from_le_bytes(header[52..56].try_into().expect("4 bytes")) == 1;
            if count > MAX_PIECES {
                break;
            }
            let next = pos + HEADER_LEN + u64::from(count) * 20;
            if next > len {
                break;
            }
            if key == *content_key {
                records.insert(
                    id,
                    PieceRecord {
                        offset: pos + HEADER_LEN,
                        count,
                        fill_crc: has_crc.then_some(crc),
                    },
                );
            }
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

    pub fn append(
        &self,
        id: i64,
        content_key: &[u8; 32],
        hashes: &[[u8; 20]],
        fill_crc: Option<u32>,
    ) -> std::io::Result<PieceRecord> {
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + hashes.len() * 20);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(content_key);
        buf.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
        buf.extend_from_slice(&fill_crc.unwrap_or(0).to_le_bytes());
        buf.extend_from_slice(&u32::from(fill_crc.is_some()).to_le_bytes());
        for h in hashes {
            buf.extend_from_slice(h);
        }
        let mut end = self.end.lock().expect("no panics while held");
        (&self.file).write_all(&buf)?;
        let record = PieceRecord {
            offset: *end + HEADER_LEN,
            count: hashes.len() as u32,
            fill_crc,
        };
        *end += buf.len() as u64;
        Ok(record)
    }

    pub fn read(&self, record: PieceRecord) -> std::io::Result<Vec<[u8; 20]>> {
        let mut raw = vec![0u8; record.count as usize * 20];
        self.file.read_exact_at(&mut raw, record.offset)?;
        Ok(raw
            .chunks_exact(20)
            .map(|c| c.try_into().expect("20 bytes"))
            .collect())
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces.bin");
        let key = [3u8; 32];
        let (f, found) = PieceHashFile::open(&path, &key).unwrap();
        assert!(found.is_empty());
        let a = f.append(1, &key, &[[1; 20], [2; 20]], None).unwrap();
        let b = f.append(2, &key, &[[9; 20]], Some(77)).unwrap();
        f.append(3, &[4u8; 32], &[[5; 20]], None).unwrap();
        drop(f);
        // A crash half-way through an append.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&MAGIC)
            .unwrap();
        let (f, found) = PieceHashFile::open(&path, &key).unwrap();
        assert_eq!(found.len(), 2, "the other key's record is not ours");
        assert_eq!(found[&1], a);
        assert_eq!(found[&2], b);
        assert_eq!(f.read(a).unwrap(), vec![[1; 20], [2; 20]]);
        assert_eq!(f.read(b).unwrap(), vec![[9; 20]]);
        let c = f.append(4, &key, &[[6; 20]], None).unwrap();
        assert_eq!(f.read(c).unwrap(), vec![[6; 20]]);
    }
}
