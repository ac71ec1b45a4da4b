//! The variants a node serves, and which title gets which.

use crate::fill::{Fill, FillMode};
use crate::layout::{DecoyLayout, Variant};
use sha2::{Digest, Sha256};

/// Variant names, and the title extensions each serves. Players pick a
/// demuxer by content, not by name, so a title's extension only has to map
/// to a container that players open whatever the file is called; README.md
/// explains each choice.
pub const EXTENSIONS: &[(&str, &[&str])] = &[
    (
        "mp4",
        &[
            "mp4", "m4v", "mov", "3gp", "3g2", "wmv", "asf", "flv", "f4v", "mpg", "mpeg", "mpe", "m2v",
            "vob", "ts", "m2ts", "mts", "ogv", "rm", "rmvb", "divx",
        ],
    ),
    ("mkv", &["mkv", "webm", "mk3d"]),
    ("avi", &["avi", "xvid"]),
    ("jpg", &["jpg", "jpeg", "jpe", "jfif"]),
    ("png", &["png"]),
    ("gif", &["gif"]),
    ("bmp", &["bmp"]),
    ("zip", &["zip", "rar", "7z", "cbz", "cbr"]),
    ("pdf", &["pdf"]),
    ("html", &["html", "htm"]),
    ("txt", &[]),
];

/// The variant for titles whose extension no other variant claims.
pub const FALLBACK_VARIANT: &str = "txt";

/// Every variant a node serves, with the fill mode they are padded with.
///
/// Variants come in groups, one per campaign language: a group's warning
/// shows its language first. A title whose catalogue language matches a
/// group (by primary subtag: `nb-NO` → `nb`) gets that group's variants;
/// every other title gets the first group's.
#[derive(Debug)]
pub struct PayloadSet {
    variants: Vec<Variant>,
    groups: Vec<Group>,
    fill_mode: FillMode,
    /// Mixed into every keyed fill, so another party cannot reproduce (and
    /// so recognise) our padding from a title alone.
    fill_secret: Vec<u8>,
    /// Which variant serves every title: set by `single`.
    single: Option<u8>,
}

#[derive(Debug)]
struct Group {
    language: Option<String>,
    variants: std::ops::Range<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload set has no variant named {0:?} (every set needs one for titles of unknown type)")]
    MissingVariant(&'static str),
    #[error("payload set has {0} variants; at most 255")]
    TooMany(usize),
    #[error("cannot read payload {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("payload {0} is empty; a decoy must carry the warning")]
    Empty(String),
}

impl PayloadSet {
    /// A set serving each title the variant its extension maps to
    /// ([`EXTENSIONS`]); variants missing from `variants` fall back to
    /// [`FALLBACK_VARIANT`], which must be there.
    pub fn new(
        variants: Vec<Variant>,
        fill_mode: FillMode,
        fill_secret: Vec<u8>,
    ) -> Result<Self, PayloadError> {
        Self::with_languages(vec![(None, variants)], fill_mode, fill_secret)
    }

    /// As [`PayloadSet::new`], with one group of variants per language; the
    /// first group serves titles of any other or no language.
    pub fn with_languages(
        groups: Vec<(Option<String>, Vec<Variant>)>,
        fill_mode: FillMode,
        fill_secret: Vec<u8>,
    ) -> Result<Self, PayloadError> {
        let mut variants = Vec::new();
        let mut ranges = Vec::new();
        for (language, group) in groups {
            if !group.iter().any(|v| v.name() == FALLBACK_VARIANT) {
                return Err(PayloadError::MissingVariant(FALLBACK_VARIANT));
            }
            let start = variants.len();
            variants.extend(group);
            ranges.push(Group {
                language: language.map(|l| l.to_ascii_lowercase()),
                variants: start..variants.len(),
            });
        }
        if ranges.is_empty() {
            return Err(PayloadError::MissingVariant(FALLBACK_VARIANT));
        }
        if variants.len() > 255 {
            return Err(PayloadError::TooMany(variants.len()));
        }
        Ok(Self {
            variants,
            groups: ranges,
            fill_mode,
            fill_secret,
            single: None,
        })
    }

    /// A set serving one file for every title, whatever its extension,
    /// padded with trailing fill (an operator's own payload file).
    pub fn single(
        media: Vec<u8>,
        origin: &str,
        fill_mode: FillMode,
        fill_secret: Vec<u8>,
    ) -> Result<Self, PayloadError> {
        if media.is_empty() {
            return Err(PayloadError::Empty(origin.to_owned()));
        }
        Ok(Self {
            variants: vec![Variant::trailing(FALLBACK_VARIANT, media)],
            groups: vec![Group {
                language: None,
                variants: 0..1,
            }],
            fill_mode,
            fill_secret,
            single: Some(0),
        })
    }

    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }
    pub fn variant(&self, index: u8) -> &Variant {
        &self.variants[usize::from(index)]
    }
    pub fn fill_mode(&self) -> FillMode {
        self.fill_mode
    }

    /// Languages with a group of their own, the default group's first.
    pub fn languages(&self) -> Vec<Option<&str>> {
        self.groups.iter().map(|g| g.language.as_deref()).collect()
    }

    /// The language of the group variant `index` belongs to.
    pub fn variant_language(&self, index: u8) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.variants.contains(&usize::from(index)))
            .and_then(|g| g.language.as_deref())
    }

    /// The variant that serves `title` (by its extension) for a title of
    /// catalogue `language`.
    pub fn variant_for_title(&self, title: &str, language: Option<&str>) -> u8 {
        if let Some(i) = self.single {
            return i;
        }
        // Compared by primary subtag on both sides: `nb-NO` titles and an
        // `nb` group, or `nb` titles and an `nb-NO` group, belong together.
        fn primary(tag: &str) -> &str {
            tag.split(['-', '_']).next().unwrap_or(tag)
        }
        let group = language
            .and_then(|l| {
                self.groups.iter().find(|g| {
                    g.language
                        .as_deref()
                        .is_some_and(|gl| primary(gl).eq_ignore_ascii_case(primary(l)))
                })
            })
            .unwrap_or(&self.groups[0]);
        let in_group = &self.variants[group.variants.clone()];
        let index_of = |name: &str| in_group.iter().position(|v| v.name() == name);
        let ext = title
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let found = EXTENSIONS
            .iter()
            .find(|(_, exts)| exts.contains(&ext.as_str()))
            .and_then(|(name, _)| index_of(name))
            .or_else(|| index_of(FALLBACK_VARIANT))
            .expect("checked at construction");
        (group.variants.start + found) as u8
    }

    /// The per-decoy fill: keyed by the title, so every node with the same
    /// set and secret serves identical decoys (a fleet shares swarms).
    pub fn fill_for_title(&self, title: &str) -> Fill {
        let key = match self.fill_mode {
            FillMode::Zeros => 0,
            FillMode::Unique => {
                let mut h = Sha256::new();
                h.update(b"warnseed fill key v1\0");
                h.update((self.fill_secret.len() as u64).to_be_bytes());
                h.update(&self.fill_secret);
                h.update(title.as_bytes());
                u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
            }
        };
        Fill::new(self.fill_mode, key)
    }

    /// Identifies what info hashes were computed from: every variant's
    /// bytes, the extension map, the fill and the layout rules (bump the tag
    /// when those rules change).
    pub fn content_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"warnseed decoy layout v2: variants by extension, cells per piece\0");
        h.update(self.fill_mode.as_str());
        h.update((self.fill_secret.len() as u64).to_be_bytes());
        h.update(&self.fill_secret);
        h.update([u8::from(self.single.is_some())]);
        for g in &self.groups {
            h.update(b"group ");
            h.update(g.language.as_deref().unwrap_or("*").as_bytes());
            h.update([0]);
            for v in &self.variants[g.variants.clone()] {
                h.update(v.name().as_bytes());
                h.update([0]);
                h.update(v.sha256());
            }
        }
        for (name, exts) in EXTENSIONS {
            h.update(name.as_bytes());
            for e in *exts {
                h.update([b',']);
                h.update(e.as_bytes());
            }
            h.update([b';']);
        }
        h.finalize().into()
    }

    /// A decoy's layout from what the table keeps per decoy.
    pub fn layout(
        &self,
        variant: u8,
        size: u64,
        piece_length: u32,
        fill: Fill,
        fill_crc: Option<u32>,
    ) -> DecoyLayout<'_> {
        self.variant(variant).layout(size, piece_length, fill, fill_crc)
    }
}
