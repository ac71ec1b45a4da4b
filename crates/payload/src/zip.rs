//! A zip archive whose last entry is padding of any length.
//!
//! Layout: the warning files (stored), then a stored `padding.bin` entry
//! whose local header sets bit 3 (sizes and CRC follow the data in a data
//! descriptor). Everything that depends on the padding's length (descriptor,
//! central directory, ZIP64 end records) therefore sits at the end of the
//! file, so the head is the same bytes for every decoy. ZIP64 records are
//! always written so the tail has one fixed length at any size.

/// The padding entry's name, as archivers list it.
pub const PADDING_NAME: &str = "padding.bin";

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;
/// 2026-01-01 00:00 in MS-DOS form: a fixed stamp keeps the bytes, and so
/// the info hashes, reproducible.
const DOS_DATE: u16 = ((2026 - 1980) << 9) | (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Made by Unix (3), spec 4.5 (ZIP64).
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
const VERSION_STORED: u16 = 10;
const VERSION_ZIP64: u16 = 45;
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const UNIX_FILE_MODE: u32 = 0o100_644 << 16;

const DESCRIPTOR_LEN: u64 = 24;
const ZIP64_END_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;
const END_LEN: u64 = 22;

#[derive(Debug)]
pub struct ZipTemplate {
    head: Vec<u8>,
    /// Central directory records of the warning files (fixed).
    fixed_central: Vec<u8>,
    padding_header_offset: u64,
    entries: u16,
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

impl ZipTemplate {
    /// `files` are stored as they are (video is already compressed).
    pub fn new(files: &[(&str, &[u8])]) -> Self {
        let mut head = Vec::new();
        let mut fixed_central = Vec::new();
        for (name, data) in files {
            let offset = head.len() as u32;
            let crc = crc32fast::hash(data);
            let len = u32::try_from(data.len()).expect("warning files are far below 4 GiB");
            put32(&mut head, LOCAL_SIG);
            put16(&mut head, VERSION_STORED);
            put16(&mut head, 0);
            put16(&mut head, 0); // stored
            put16(&mut head, DOS_TIME);
            put16(&mut head, DOS_DATE);
            put32(&mut head, crc);
            put32(&mut head, len);
            put32(&mut head, len);
            put16(&mut head, name.len() as u16);
            put16(&mut head, 0);
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(data);

            put32(&mut fixed_central, CENTRAL_SIG);
            put16(&mut fixed_central, VERSION_MADE_BY);
            put16(&mut fixed_central, VERSION_STORED);
            put16(&mut fixed_central, 0);
            put16(&mut fixed_central, 0);
            put16(&mut fixed_central, DOS_TIME);
            put16(&mut fixed_central, DOS_DATE);
            put32(&mut fixed_central, crc);
            put32(&mut fixed_central, len);
            put32(&mut fixed_central, len);
            put16(&mut fixed_central, name.len() as u16);
            put16(&mut fixed_central, 0); // extra
            put16(&mut fixed_central, 0); // comment
            put16(&mut fixed_central, 0); // disk
            put16(&mut fixed_central, 0); // internal attributes
            put32(&mut fixed_central, UNIX_FILE_MODE);
            put32(&mut fixed_central, offset);
            fixed_central.extend_from_slice(name.as_bytes());
        }
        let padding_header_offset = head.len() as u64;
        put32(&mut head, LOCAL_SIG);
        put16(&mut head, VERSION_ZIP64);
        put16(&mut head, FLAG_DESCRIPTOR);
        put16(&mut head, 0);
        put16(&mut head, DOS_TIME);
        put16(&mut head, DOS_DATE);
        put32(&mut head, 0); // CRC: in the descriptor
        put32(&mut head, u32::MAX); // sizes: in the ZIP64 field (zero here, see bit 3)
        put32(&mut head, u32::MAX);
        put16(&mut head, PADDING_NAME.len() as u16);
        put16(&mut head, 20);
        head.extend_from_slice(PADDING_NAME.as_bytes());
        put16(&mut head, 0x0001); // ZIP64 extended information
        put16(&mut head, 16);
        put64(&mut head, 0);
        put64(&mut head, 0);
        Self {
            head,
            fixed_central,
            padding_header_offset,
            entries: files.len() as u16 + 1,
        }
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    fn padding_central_len() -> u64 {
        46 + PADDING_NAME.len() as u64 + 20
    }

    /// Bytes after the padding data, the same count at every size.
    pub fn tail_len(&self) -> u64 {
        DESCRIPTOR_LEN
            + self.fixed_central.len() as u64
            + Self::padding_central_len()
            + ZIP64_END_LEN
            + ZIP64_LOCATOR_LEN
            + END_LEN
    }

    /// The tail for `padding_len` bytes of padding whose CRC-32 is `crc`.
    pub fn tail(&self, padding_len: u64, crc: u32) -> Vec<u8> {
        let mut t = Vec::with_capacity(self.tail_len() as usize);
        put32(&mut t, DESCRIPTOR_SIG);
        put32(&mut t, crc);
        put64(&mut t, padding_len);
        put64(&mut t, padding_len);
        let central_offset = self.head.len() as u64 + padding_len + DESCRIPTOR_LEN;
        t.extend_from_slice(&self.fixed_central);
        put32(&mut t, CENTRAL_SIG);
        put16(&mut t, VERSION_MADE_BY);
        put16(&mut t, VERSION_ZIP64);
        put16(&mut t, FLAG_DESCRIPTOR);
        put16(&mut t, 0);
        put16(&mut t, DOS_TIME);
        put16(&mut t, DOS_DATE);
        put32(&mut t, crc);
        put32(&mut t, u32::MAX);
        put32(&mut t, u32::MAX);
        put16(&mut t, PADDING_NAME.len() as u16);
        put16(&mut t, 20);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put32(&mut t, UNIX_FILE_MODE);
        put32(&mut t, self.padding_header_offset as u32);
        t.extend_from_slice(PADDING_NAME.as_bytes());
        put16(&mut t, 0x0001);
        put16(&mut t, 16);
        put64(&mut t, padding_len); // uncompressed
        put64(&mut t, padding_len); // compressed
        let central_len = self.fixed_central.len() as u64 + Self::padding_central_len();
        let zip64_end_offset = central_offset + central_len;
        put32(&mut t, ZIP64_END_SIG);
        put64(&mut t, ZIP64_END_LEN - 12);
        put16(&mut t, VERSION_MADE_BY);
        put16(&mut t, VERSION_ZIP64);
        put32(&mut t, 0);
        put32(&mut t, 0);
        put64(&mut t, u64::from(self.entries));
        put64(&mut t, u64::from(self.entries));
        put64(&mut t, central_len);
        put64(&mut t, central_offset);
        put32(&mut t, ZIP64_LOCATOR_SIG);
        put32(&mut t, 0);
        put64(&mut t, zip64_end_offset);
        put32(&mut t, 1);
        put32(&mut t, END_SIG);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put16(&mut t, self.entries);
        put16(&mut t, self.entries);
        put32(&mut t, central_len as u32);
        put32(&mut t, u32::try_from(central_offset).unwrap_or(u32::MAX));
        put16(&mut t, 0);
        debug_assert_eq!(t.len() as u64, self.tail_len());
        t
    }
}
