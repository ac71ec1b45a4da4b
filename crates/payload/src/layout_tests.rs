//! Every layout, at awkward sizes: bytes read in pieces equal the whole,
//! shared piece hashes equal direct hashes, and the padding parses as the
//! container's own elements.

use crate::*;
use sha1::{Digest, Sha1};

fn media(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn variants() -> Vec<Variant> {
    vec![
        Variant::cells("mp4", media(40_000), CellKind::Mp4Free),
        Variant::cells("mkv", media(40_001), CellKind::MatroskaVoid),
        Variant::cells("avi", media(16_383), CellKind::AviJunk),
        // Media ending on a piece boundary, or within a header's length of
        // one: the first padding cell then fills a piece of its own.
        Variant::cells("mp4", media(32_768), CellKind::Mp4Free),
        Variant::cells("mkv", media(32_763), CellKind::MatroskaVoid),
        Variant::zip(
            "zip",
            &[("warning.mp4", &media(30_000)), ("warning.txt", b"text")],
        ),
        Variant::pdf("pdf", &media(20_000), 854, 480, "Warning"),
        Variant::trailing("txt", media(100)),
    ]
}

fn whole(layout: &DecoyLayout<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < layout.size() {
        let n = (layout.size() - pos).min(1 << 20) as u32;
        layout.read_into(pos, n, &mut out);
        pos += u64::from(n);
    }
    out
}

fn sizes(v: &Variant, pl: u64) -> Vec<u64> {
    let m = v.min_size();
    let mut s = vec![m, m + 1, m + 2, m + 8, m + 9, m + 10, m + 17];
    for k in 1..5 {
        let b = (m.div_ceil(pl) + k) * pl;
        s.extend([b - 10, b - 9, b - 8, b - 1, b, b + 1, b + 8, b + 9, b + 100]);
    }
    s.sort_unstable();
    s.dedup();
    s.into_iter().map(|x| v.nearest_size(Some(x))).collect()
}

fn check_container(v: &Variant, bytes: &[u8]) {
    let m = v.media_len() as usize;
    match v.padding() {
        Padding::Cells(CellKind::Mp4Free) => {
            let mut pos = m;
            while pos < bytes.len() {
                let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
                assert_eq!(&bytes[pos + 4..pos + 8], b"free", "box at {pos}");
                assert!(size >= 8);
                pos += size;
            }
            assert_eq!(pos, bytes.len(), "boxes end at the end");
        }
        Padding::Cells(CellKind::MatroskaVoid) => {
            let mut pos = m;
            while pos < bytes.len() {
                assert_eq!(bytes[pos], 0xEC, "Void at {pos}");
                let first = bytes[pos + 1];
                let width = first.leading_zeros() as usize + 1;
                let mut value = u64::from(first & 0xFFu8.checked_shr(width as u32).unwrap_or(0));
                for b in &bytes[pos + 2..pos + 1 + width] {
                    value = (value << 8) | u64::from(*b);
                }
                pos += 1 + width + value as usize;
            }
            assert_eq!(pos, bytes.len());
        }
        Padding::Cells(CellKind::AviJunk) => {
            let mut pos = m;
            while pos < bytes.len() {
                assert_eq!(&bytes[pos..pos + 4], b"JUNK", "chunk at {pos}");
                let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
                assert_eq!(size % 2, 0);
                pos += 8 + size;
                // An odd remainder is the chunk's pad byte.
                if pos + 1 == bytes.len() {
                    pos += 1;
                }
            }
            assert_eq!(pos, bytes.len());
        }
        Padding::Zip(_) => {
            let end = &bytes[bytes.len() - 22..];
            assert_eq!(&end[..4], &[0x50, 0x4b, 0x05, 0x06]);
            let loc = &bytes[bytes.len() - 42..bytes.len() - 22];
            let z64 = u64::from_le_bytes(loc[8..16].try_into().unwrap()) as usize;
            assert_eq!(&bytes[z64..z64 + 4], &[0x50, 0x4b, 0x06, 0x06]);
            let cd = u64::from_le_bytes(bytes[z64 + 48..z64 + 56].try_into().unwrap()) as usize;
            assert_eq!(
                &bytes[cd..cd + 4],
                &[0x50, 0x4b, 0x01, 0x02],
                "central directory offset"
            );
            let pad = u64::from_le_bytes(bytes[cd - 8..cd].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[cd - 20..cd - 16].try_into().unwrap());
            assert_eq!(crc32fast::hash(&bytes[m..m + pad]), crc, "padding CRC");
            assert_eq!(m + pad + 24, cd);
        }
        Padding::Pdf(_) => {
            let text = String::from_utf8_lossy(&bytes[bytes.len() - 40..]).to_string();
            let start: usize = text.split("startxref\n").nth(1).unwrap()[..12].parse().unwrap();
            assert_eq!(&bytes[start..start + 4], b"xref");
            assert!(bytes.ends_with(b"%%EOF\n"));
        }
        Padding::Trailing => {}
    }
}

#[test]
fn reads_hashes_and_structure_agree_at_every_awkward_size() {
    for v in variants() {
        for pl in [16 * 1024u32, 32 * 1024] {
            for size in sizes(&v, u64::from(pl)) {
                for fill in [Fill::Zeros, Fill::Keyed(0xdead_beef)] {
                    let layout = v.layout(size, pl, fill, None);
                    let bytes = whole(&layout);
                    assert_eq!(bytes.len() as u64, size);
                    assert_eq!(&bytes[..v.media().len()], v.media(), "{}", v.name());
                    check_container(&v, &bytes);
                    let per_decoy = DecoyPieceHashes::new(layout);
                    for (i, piece) in bytes.chunks(pl as usize).enumerate() {
                        let want: [u8; 20] = Sha1::digest(piece).into();
                        assert_eq!(
                            per_decoy.get(i as u32),
                            want,
                            "{} size {size} piece {i}",
                            v.name()
                        );
                        assert_eq!(
                            piece_hash(&layout, i as u32),
                            want,
                            "{} size {size} pl {pl} piece {i} {fill:?}",
                            v.name()
                        );
                        let mut part = Vec::new();
                        layout.read_into(i as u64 * u64::from(pl) + 3, 100, &mut part);
                        let from = (i * pl as usize + 3).min(bytes.len());
                        let to = (from + 100).min(bytes.len());
                        assert_eq!(part, bytes[from..to]);
                    }
                }
            }
        }
    }
}

#[test]
fn sizes_below_the_smallest_padding_element_round_up() {
    let v = Variant::cells("mp4", media(1000), CellKind::Mp4Free);
    assert_eq!(v.nearest_size(Some(10)), 1000);
    assert_eq!(v.nearest_size(Some(1001)), 1008);
    assert_eq!(v.nearest_size(Some(1008)), 1008);
    let k = Variant::cells("mkv", media(1000), CellKind::MatroskaVoid);
    assert_eq!(k.nearest_size(Some(1001)), 1002);
    assert_eq!(k.nearest_size(None), 1000);
}

#[test]
fn large_decoys_hash_cheaply_and_keep_the_structure() {
    // 3 GiB + 7 at 4 MiB pieces: only the head and the last two pieces are
    // more than a table lookup, so this runs in milliseconds.
    for v in variants() {
        let pl = 4 << 20;
        let size = v.nearest_size(Some((3 << 30) + 7));
        let layout = v.layout(size, pl, Fill::Zeros, None);
        let n = size.div_ceil(u64::from(pl)) as u32;
        for i in [0, 1, n / 2, n - 2, n - 1] {
            let start = u64::from(i) * u64::from(pl);
            let mut piece = Vec::new();
            layout.read_into(start, pl, &mut piece);
            let want: [u8; 20] = Sha1::digest(&piece).into();
            assert_eq!(piece_hash(&layout, i), want, "{} piece {i}", v.name());
        }
        let mut last = Vec::new();
        layout.read_into(size - 300, 300, &mut last);
        assert_eq!(last.len(), 300);
        if matches!(v.padding(), Padding::Zip(_)) {
            assert_eq!(&last[300 - 22..300 - 18], &[0x50, 0x4b, 0x05, 0x06]);
        }
    }
}

#[test]
fn a_set_maps_extensions_and_keys_fills_per_title() {
    let set = PayloadSet::new(variants(), FillMode::Unique, b"secret".to_vec()).unwrap();
    let name = |t: &str| set.variant(set.variant_for_title(t, None)).name().to_owned();
    assert_eq!(name("sample-title-000001.MKV"), "mkv");
    assert_eq!(name("sample-title-000002.webm"), "mkv");
    assert_eq!(name("sample-title-000003.wmv"), "mp4");
    assert_eq!(name("sample-title-000004.rar"), "zip");
    assert_eq!(name("sample-title-000005.iso"), "txt");
    assert_eq!(name("sample-title-000006"), "txt");
    assert_ne!(
        set.fill_for_title("sample-title-000001.mkv"),
        set.fill_for_title("sample-title-000002.mkv")
    );
    let zeros = PayloadSet::new(variants(), FillMode::Zeros, Vec::new()).unwrap();
    assert_eq!(zeros.fill_for_title("a.mkv"), Fill::Zeros);
    assert_ne!(set.content_key(), zeros.content_key());
    assert!(PayloadSet::new(
        vec![Variant::trailing("mp4", media(3))],
        FillMode::Zeros,
        Vec::new()
    )
    .is_err());
}

#[test]
fn titles_of_a_campaign_language_get_that_languages_group() {
    let group = |tag: &str| {
        vec![
            Variant::cells("mp4", tag.as_bytes().repeat(100), CellKind::Mp4Free),
            Variant::trailing("txt", tag.as_bytes().to_vec()),
        ]
    };
    let set = PayloadSet::with_languages(
        vec![(Some("en".into()), group("en")), (Some("nb".into()), group("nb"))],
        FillMode::Zeros,
        Vec::new(),
    )
    .unwrap();
    let media = |t: &str, l: Option<&str>| set.variant(set.variant_for_title(t, l)).media()[..2].to_vec();
    assert_eq!(media("sample-title-000001.mp4", Some("nb-NO")), b"nb");
    assert_eq!(media("sample-title-000001.mp4", Some("NB")), b"nb");
    assert_eq!(
        media("sample-title-000001.mp4", Some("sv")),
        b"en",
        "other languages: the first group"
    );
    assert_eq!(media("sample-title-000001.mp4", None), b"en");
    assert_eq!(media("sample-title-000001.iso", Some("nb")), b"nb");
    assert_eq!(
        set.variant_language(set.variant_for_title("a.mp4", Some("nb"))),
        Some("nb")
    );
    let single = PayloadSet::with_languages(
        vec![(Some("en".into()), group("en"))],
        FillMode::Zeros,
        Vec::new(),
    )
    .unwrap();
    assert_ne!(single.content_key(), set.content_key());
}
