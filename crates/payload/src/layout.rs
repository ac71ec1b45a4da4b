//! Where every byte of a decoy comes from.
//!
//! A decoy is a variant's media (the warning, as its container wants it),
//! then padding up to the decoy's size, then, for zip and PDF, a short tail
//! that depends on the size. The padding is container-valid:
//!
//! * MP4: `free` boxes; Matroska: `Void` elements; AVI: `JUNK` chunks.
//!   One padding cell per piece, and each cell's header is the last bytes of
//!   the piece before the cell's data. So every middle piece is
//!   `fill ‖ header(piece length)`, the one header that depends on the size
//!   ends the next-to-last piece, and a piece hash never has to start from a
//!   state that depends on the size (see `hashes`).
//! * zip: the data of a stored `padding.bin` entry; PDF: the data of an
//!   unreferenced stream object. Their size-dependent records are the tail.
//! * Images and text: trailing bytes, which their readers ignore.
//!
//! Nothing is stored per decoy: a [`DecoyLayout`] is built per read from the
//! variant, the size, the piece length and the fill.

use crate::fill::Fill;
use crate::hashes::HeadHashes;
use crate::pdf::{PdfTemplate, MAX_PDF_SIZE};
use crate::zip::ZipTemplate;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The padding cells of the containers that have a padding element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// ISO BMFF `free` box (8-byte header: 32-bit size, type).
    Mp4Free,
    /// EBML `Void` element (ID 0xEC, then an 8-byte size).
    MatroskaVoid,
    /// RIFF `JUNK` chunk (FourCC, 32-bit little-endian size, word-aligned).
    AviJunk,
}

impl CellKind {
    /// Header length of every cell but a very short first one.
    fn header_len(self) -> u64 {
        match self {
            CellKind::Mp4Free | CellKind::AviJunk => 8,
            CellKind::MatroskaVoid => 9,
        }
    }

    /// The smallest cell the container can express.
    fn min_cell(self) -> u64 {
        match self {
            CellKind::Mp4Free | CellKind::AviJunk => 8,
            // 0xEC then a one-byte size of zero.
            CellKind::MatroskaVoid => 2,
        }
    }

    /// Writes the header of a cell of `cell` bytes (header included) and
    /// returns its length.
    fn header(self, cell: u64, out: &mut [u8; 9]) -> usize {
        match self {
            CellKind::Mp4Free => {
                let size = u32::try_from(cell).expect("padding cells are at most two pieces");
                out[..4].copy_from_slice(&size.to_be_bytes());
                out[4..8].copy_from_slice(b"free");
                8
            }
            CellKind::AviJunk => {
                // RIFF data is word-aligned: an odd remainder is the pad byte.
                let size = u32::try_from((cell - 8) & !1).expect("padding cells are at most two pieces");
                out[..4].copy_from_slice(b"JUNK");
                out[4..8].copy_from_slice(&size.to_le_bytes());
                8
            }
            CellKind::MatroskaVoid => {
                out[0] = 0xEC;
                if cell >= 9 {
                    // 8-byte EBML size: marker 0x01, then 7 bytes big-endian.
                    let data = (cell - 9).to_be_bytes();
                    out[1] = 0x01;
                    out[2..9].copy_from_slice(&data[1..8]);
                    9
                } else {
                    // A Void of no data with a (cell - 1)-byte size field.
                    let width = (cell - 1) as usize;
                    out[1..cell as usize].fill(0);
                    out[1] = 0x80 >> (width - 1);
                    cell as usize
                }
            }
        }
    }
}

/// How a variant is padded.
#[derive(Debug)]
pub enum Padding {
    Trailing,
    Cells(CellKind),
    Zip(ZipTemplate),
    Pdf(PdfTemplate),
}

/// One warning in one container: the bytes every decoy of this kind starts with.
#[derive(Debug)]
pub struct Variant {
    name: String,
    media: Arc<[u8]>,
    padding: Padding,
    sha256: [u8; 32],
    head_hashes: HeadHashes,
}

impl Variant {
    fn build(name: &str, media: Vec<u8>, padding: Padding) -> Self {
        let sha256 = Sha256::digest(&media).into();
        Self {
            name: name.to_owned(),
            media: media.into(),
            padding,
            sha256,
            head_hashes: HeadHashes::default(),
        }
    }

    pub(crate) fn head_hashes(&self) -> &HeadHashes {
        &self.head_hashes
    }

    /// Media whose readers stop at their own end (images, text, anything
    /// served as-is): padding is appended.
    pub fn trailing(name: &str, media: Vec<u8>) -> Self {
        Self::build(name, media, Padding::Trailing)
    }

    pub fn cells(name: &str, mut media: Vec<u8>, kind: CellKind) -> Self {
        if kind == CellKind::AviJunk && media.len() % 2 == 1 {
            // RIFF chunks start on even offsets: a cell after odd media
            // could not be parsed. The byte is the RIFF's own pad byte.
            media.push(0);
        }
        Self::build(name, media, Padding::Cells(kind))
    }

    pub fn zip(name: &str, files: &[(&str, &[u8])]) -> Self {
        let template = ZipTemplate::new(files);
        let head = template.head().to_vec();
        Self::build(name, head, Padding::Zip(template))
    }

    pub fn pdf(name: &str, jpeg: &[u8], width: u32, height: u32, title: &str) -> Self {
        let template = PdfTemplate::new(jpeg, width, height, title);
        let head = template.head().to_vec();
        Self::build(name, head, Padding::Pdf(template))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The bytes every decoy of this variant starts with.
    pub fn media(&self) -> &[u8] {
        &self.media
    }
    pub fn media_len(&self) -> u64 {
        self.media.len() as u64
    }
    /// SHA-256 of the media: identifies the variant in caches and listings.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    pub fn padding(&self) -> &Padding {
        &self.padding
    }

    fn tail_len(&self) -> u64 {
        match &self.padding {
            Padding::Zip(z) => z.tail_len(),
            Padding::Pdf(p) => p.tail_len(),
            _ => 0,
        }
    }

    /// The smallest decoy: the warning with no padding.
    pub fn min_size(&self) -> u64 {
        self.media_len() + self.tail_len()
    }

    /// The size a decoy gets when `requested` is asked for: at least the
    /// warning, and a size the container can express (a padding element
    /// has a smallest size; PDF cross-references bound the file).
    pub fn nearest_size(&self, requested: Option<u64>) -> u64 {
        let size = requested.unwrap_or(0).max(self.min_size());
        match &self.padding {
            Padding::Cells(kind) => {
                let pad = size - self.media_len();
                if pad > 0 && pad < kind.min_cell() {
                    self.media_len() + kind.min_cell()
                } else {
                    size
                }
            }
            Padding::Pdf(_) => size.min(MAX_PDF_SIZE),
            _ => size,
        }
    }

    /// The layout of a decoy of `size` bytes (a size from [`nearest_size`]).
    /// `fill_crc` is the CRC-32 of the padding, needed only by zip with a
    /// keyed fill (it is computed here for zeros).
    ///
    /// [`nearest_size`]: Variant::nearest_size
    pub fn layout(&self, size: u64, piece_length: u32, fill: Fill, fill_crc: Option<u32>) -> DecoyLayout<'_> {
        assert_eq!(
            self.nearest_size(Some(size)),
            size,
            "a decoy's size comes from Variant::nearest_size"
        );
        DecoyLayout {
            variant: self,
            size,
            piece_length: u64::from(piece_length),
            fill,
            fill_crc,
        }
    }
}

/// A piece of a decoy's bytes, as [`DecoyLayout::visit`] hands them out.
pub enum Segment<'a> {
    Bytes(&'a [u8]),
    /// Fill bytes at file offsets `offset..offset + len`.
    Fill {
        offset: u64,
        len: u64,
    },
}

/// One decoy's bytes, computed on demand.
#[derive(Clone, Copy)]
pub struct DecoyLayout<'v> {
    variant: &'v Variant,
    size: u64,
    piece_length: u64,
    fill: Fill,
    fill_crc: Option<u32>,
}

/// The cells of a padded decoy: a first cell at the end of the media, then
/// cells whose data starts at piece boundaries `k · piece_length` for
/// `first_k ..= last_k` (none when `first_k > last_k`).
struct Cells {
    kind: CellKind,
    media_end: u64,
    first_k: u64,
    last_k: u64,
}

impl Cells {
    fn aligned(&self) -> bool {
        self.first_k <= self.last_k
    }

    /// Start and end of the cell holding `pos` (`pos` in the padding).
    fn cell_at(&self, pos: u64, pl: u64, size: u64) -> (u64, u64) {
        let h = self.kind.header_len();
        if !self.aligned() {
            return (self.media_end, size);
        }
        let first_aligned = self.first_k * pl - h;
        if pos < first_aligned {
            return (self.media_end, first_aligned);
        }
        let k = ((pos + h) / pl).min(self.last_k);
        let end = if k == self.last_k { size } else { (k + 1) * pl - h };
        (k * pl - h, end)
    }
}

impl<'v> DecoyLayout<'v> {
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn fill(&self) -> Fill {
        self.fill
    }
    pub fn variant(&self) -> &'v Variant {
        self.variant
    }

    /// Where padding ends and the tail starts.
    fn body_end(&self) -> u64 {
        self.size - self.variant.tail_len()
    }

    fn cells(&self) -> Option<Cells> {
        let Padding::Cells(kind) = self.variant.padding else {
            return None;
        };
        let media_end = self.variant.media_len();
        let h = kind.header_len();
        let pl = self.piece_length;
        // The first aligned cell starts early enough that the first cell
        // still holds a whole header; the last one's data starts by the end.
        let first_k = (media_end + 2 * h).div_ceil(pl);
        let last_k = self.size / pl;
        Some(Cells {
            kind,
            media_end,
            first_k,
            last_k,
        })
    }

    /// Offset of the first byte whose value depends on the decoy's size:
    /// pieces wholly before it are the same in every decoy of the variant
    /// with this piece length.
    pub fn size_dependent_from(&self) -> u64 {
        match self.cells() {
            Some(c) if c.aligned() => c.last_k * self.piece_length - c.kind.header_len(),
            Some(c) if self.size > c.media_end => c.media_end,
            Some(_) => self.size,
            None => self.body_end(),
        }
    }

    /// Offset from which every whole piece that ends by
    /// [`size_dependent_from`] holds the same bytes as every other: fill
    /// only, or fill then one padding header of a full piece.
    ///
    /// [`size_dependent_from`]: DecoyLayout::size_dependent_from
    pub fn repeating_from(&self) -> u64 {
        match self.cells() {
            Some(c) if c.aligned() => c.first_k * self.piece_length,
            Some(_) => self.size,
            None => self.variant.media_len(),
        }
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    fn padding_crc(&self) -> u32 {
        let len = self.body_end() - self.variant.media_len();
        match (self.fill, self.fill_crc) {
            (_, Some(crc)) => crc,
            (Fill::Zeros, None) => crate::crc::crc32_of_zeros(len),
            (fill, None) => {
                // Callers that serve keyed zip decoys pass the stored CRC;
                // this full pass is the fallback (exports, tests), split over
                // all cores and joined with crc32_combine.
                const CHUNK: u64 = 16 << 20;
                let (start, end) = (self.variant.media_len(), self.body_end());
                let chunks = (end - start).div_ceil(CHUNK);
                let crc_of = |i: u64| {
                    let from = start + i * CHUNK;
                    let to = (from + CHUNK).min(end);
                    let mut hasher = crc32fast::Hasher::new();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut pos = from;
                    while pos < to {
                        let n = (to - pos).min(buf.len() as u64) as usize;
                        fill.write(pos, &mut buf[..n]);
                        hasher.update(&buf[..n]);
                        pos += n as u64;
                    }
                    (hasher.finalize(), to - from)
                };
                let parts = crate::parallel::map_indexed(chunks, crc_of);
                parts.into_iter().fold(crc32fast::hash(&[]), |acc, (crc, len)| {
                    crate::crc::crc32_combine(acc, crc, len)
                })
            }
        }
    }

    fn tail(&self) -> Vec<u8> {
        let pad = self.body_end() - self.variant.media_len();
        match &self.variant.padding {
            Padding::Zip(z) => z.tail(pad, self.padding_crc()),
            Padding::Pdf(p) => p.tail(pad),
            _ => Vec::new(),
        }
    }

    /// The CRC-32 a keyed zip decoy needs, computed by one pass over its
    /// padding; `None` for every other decoy.
    pub fn compute_fill_crc(&self) -> Option<u32> {
        (matches!(self.variant.padding, Padding::Zip(_)) && !self.fill.is_zeros()).then(|| self.padding_crc())
    }

    /// Hands the bytes `start..end` (clamped to the decoy) to `f`, in order.
    pub fn visit(&self, start: u64, end: u64, mut f: impl FnMut(Segment<'_>)) {
        let end = end.min(self.size);
        let media = self.variant.media();
        let media_end = media.len() as u64;
        let body_end = self.body_end();
        let cells = self.cells();
        let mut pos = start;
        while pos < end {
            if pos < media_end {
                let to = end.min(media_end);
                f(Segment::Bytes(&media[pos as usize..to as usize]));
                pos = to;
            } else if pos >= body_end {
                let tail = self.tail();
                f(Segment::Bytes(
                    &tail[(pos - body_end) as usize..(end - body_end) as usize],
                ));
                return;
            } else if let Some(c) = &cells {
                let (cell_start, cell_end) = c.cell_at(pos, self.piece_length, self.size);
                let mut header = [0u8; 9];
                let header_len = c.kind.header(cell_end - cell_start, &mut header) as u64;
                if pos < cell_start + header_len {
                    let to = end.min(cell_start + header_len);
                    f(Segment::Bytes(
                        &header[(pos - cell_start) as usize..(to - cell_start) as usize],
                    ));
                    pos = to;
                } else {
                    let to = end.min(cell_end);
                    f(Segment::Fill {
                        offset: pos,
                        len: to - pos,
                    });
                    pos = to;
                }
            } else {
                let to = end.min(body_end);
                f(Segment::Fill {
                    offset: pos,
                    len: to - pos,
                });
                pos = to;
            }
        }
    }

    /// Appends bytes `offset..offset + len` (clamped to the decoy) to `out`.
    /// Every reader of decoy bytes goes through here, so serving and
    /// exporting cannot differ.
    pub fn read_into(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        let fill = self.fill;
        self.visit(offset, offset.saturating_add(u64::from(len)), |seg| match seg {
            Segment::Bytes(b) => out.extend_from_slice(b),
            Segment::Fill { offset, len } => fill.extend(out, offset, len),
        });
    }

    /// Writes the whole decoy to `w`. With zero fill and `sparse`, runs of
    /// fill are skipped with a seek, so a multi-GB test file costs no disk.
    pub fn write_all(&self, w: &mut std::fs::File, sparse: bool) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        const CHUNK: u64 = 1 << 20;
        let mut offset = 0;
        let mut buf = Vec::with_capacity(CHUNK as usize);
        let mut result = Ok(());
        while offset < self.size && result.is_ok() {
            let end = (offset + CHUNK).min(self.size);
            buf.clear();
            let fill = self.fill;
            self.visit(offset, end, |seg| {
                if result.is_err() {
                    return;
                }
                match seg {
                    Segment::Bytes(b) => buf.extend_from_slice(b),
                    Segment::Fill { offset, len } if sparse && fill.is_zeros() => {
                        result = w
                            .write_all(&buf)
                            .and_then(|_| w.seek(SeekFrom::Current(len as i64)).map(|_| ()));
                        buf.clear();
                        let _ = offset;
                    }
                    Segment::Fill { offset, len } => fill.extend(&mut buf, offset, len),
                }
            });
            if result.is_ok() {
                result = w.write_all(&buf);
            }
            offset = end;
        }
        result?;
        w.set_len(self.size)
    }
}
