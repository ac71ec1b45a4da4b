//! A one-page PDF showing the warning picture, with room for padding.
//!
//! The picture is a JPEG drawn over the whole page, so every script renders
//! as it was drawn, with no font embedding. Padding is the data of an
//! unreferenced stream object whose /Length is an indirect object written
//! after it; with the cross-reference table, that puts every byte that
//! depends on the padding's length at the end of the file. Numbers there are
//! zero-padded to a fixed width (PDF integers may have leading zeros), so
//! the tail has one length at every size.

use std::fmt::Write as _;

/// Page width in points; the height follows the picture's aspect ratio.
const PAGE_WIDTH: u32 = 842;
/// Object numbers: 1 catalog, 2 pages, 3 page, 4 image, 5 contents,
/// 6 info, 7 padding stream, 8 padding length.
const OBJECTS: usize = 8;
/// Width of the padding length and startxref numbers.
const NUMBER_WIDTH: usize = 12;
/// Cross-reference offsets are 10 digits, which bounds the file.
pub const MAX_PDF_SIZE: u64 = 9_999_000_000;

#[derive(Debug)]
pub struct PdfTemplate {
    head: Vec<u8>,
    /// Offsets of objects 1..=7; object 8 lives in the tail.
    offsets: Vec<u64>,
    /// The same at every size (fixed-width numbers); kept, since every read
    /// of a PDF decoy needs it.
    tail_len: u64,
}

impl PdfTemplate {
    pub fn new(jpeg: &[u8], width: u32, height: u32, title: &str) -> Self {
        let page_height = (u64::from(PAGE_WIDTH) * u64::from(height) / u64::from(width.max(1))) as u32;
        let mut head: Vec<u8> = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::with_capacity(OBJECTS);
        let title: String = title
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .filter(|c| !matches!(c, '(' | ')' | '\\'))
            .collect();
        let content = format!("q {PAGE_WIDTH} 0 0 {page_height} 0 0 cm /Im0 Do Q");
        let mut object = |head: &mut Vec<u8>, body: &[u8]| {
            offsets.push(head.len() as u64);
            let n = offsets.len();
            head.extend_from_slice(format!("{n} 0 obj\n").as_bytes());
            head.extend_from_slice(body);
            head.extend_from_slice(b"\nendobj\n");
        };
        object(&mut head, b"<< /Type /Catalog /Pages 2 0 R >>");
        object(&mut head, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
        object(
            &mut head,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {page_height}] \
                 /Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
            )
            .as_bytes(),
        );
        let mut image = format!(
            "<< /Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace /DeviceRGB \
             /BitsPerComponent 8 /Filter /DCTDecode /Length {} >>\nstream\n",
            jpeg.len()
        )
        .into_bytes();
        image.extend_from_slice(jpeg);
        image.extend_from_slice(b"\nendstream");
        object(&mut head, &image);
        let mut contents = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        contents.extend_from_slice(content.as_bytes());
        contents.extend_from_slice(b"\nendstream");
        object(&mut head, &contents);
        object(
            &mut head,
            format!("<< /Title ({title}) /Producer (warnseed) >>").as_bytes(),
        );
        offsets.push(head.len() as u64);
        head.extend_from_slice(b"7 0 obj\n<< /Length 8 0 R >>\nstream\n");
        let mut template = Self {
            head,
            offsets,
            tail_len: 0,
        };
        template.tail_len = template.tail(0).len() as u64;
        template
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn tail_len(&self) -> u64 {
        self.tail_len
    }

    pub fn tail(&self, padding_len: u64) -> Vec<u8> {
        let mut t = String::new();
        t.push_str("\nendstream\nendobj\n");
        let length_object = self.head.len() as u64 + padding_len + t.len() as u64;
        let _ = write!(t, "8 0 obj\n{padding_len:0NUMBER_WIDTH$}\nendobj\n");
        let xref = self.head.len() as u64 + padding_len + t.len() as u64;
        let _ = write!(t, "xref\n0 {}\n0000000000 65535 f \n", OBJECTS + 1);
        for offset in self.offsets.iter().copied().chain([length_object]) {
            // Each entry is exactly 20 bytes: the space before the newline counts.
            let _ = writeln!(t, "{offset:010} 00000 n ");
        }
        let _ = write!(
            t,
            "trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref:0NUMBER_WIDTH$}\n%%EOF\n",
            OBJECTS + 1
        );
        t.into_bytes()
    }
}
