//! The payload set a node serves: rendered from warnseed.toml, cached in
//! `<data>/payloads/`, and assembled into `warnseed_payload::PayloadSet`.
//!
//! Rendering and encoding take seconds and must give the same bytes every
//! time (decoys' info hashes depend on them), so the rendered files are kept
//! with a fingerprint of everything they were made from, and reused while
//! it matches.

use crate::config::{DataDir, PayloadConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use warnseed_bittorrent::metainfo::hex;
use warnseed_media::{RenderOptions, Script, StillFormat};
use warnseed_payload::{CellKind, FillMode, PayloadSet, Variant, EXTENSIONS};

pub const PAYLOAD_DIR: &str = "payloads";
const MANIFEST: &str = "manifest.json";
/// Bump when rendering changes, so caches are rebuilt.
const RENDER_VERSION: &str = "warnseed payload render v1";

/// The files a payload set is assembled from: one group per language, whose
/// warning shows that language first. Zip and PDF variants are built from
/// these (video, text, poster) when the set is assembled.
pub struct Components {
    groups: Vec<GroupFiles>,
}

#[derive(Serialize, Deserialize)]
struct GroupFiles {
    language: String,
    /// (variant name, file name, SHA-256) of every file-backed variant: a
    /// cached file is used only if it still has its hash.
    files: Vec<(String, String, String)>,
    poster_width: u32,
    poster_height: u32,
    #[serde(skip)]
    bytes: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    fingerprint: String,
    groups: Vec<GroupFiles>,
}

/// Everything rendering reads, resolved from the configuration.
struct Inputs {
    scripts: Vec<Script>,
    image: Option<Vec<u8>>,
    video: Option<Vec<u8>>,
    options: RenderOptions,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn inputs(root: &Path, cfg: &PayloadConfig, languages: &[String]) -> Result<Inputs> {
    let mut extra = Vec::new();
    for path in &cfg.scripts {
        let path = root.join(path);
        let text = String::from_utf8(read(&path, "warning script")?)
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        extra.push(Script::from_toml_str(&text).with_context(|| format!("parsing {}", path.display()))?);
    }
    let mut scripts: Vec<Script> = Vec::new();
    for lang in languages {
        if !valid_language_tag(lang) {
            bail!("payload.languages: {lang:?} is not a language tag such as en, nb or nb-NO");
        }
        if scripts.iter().any(|s| s.lang.eq_ignore_ascii_case(lang)) {
            bail!("payload.languages lists {lang:?} twice");
        }
        let script = extra
            .iter()
            .find(|s| &s.lang == lang)
            .cloned()
            .or_else(|| Script::builtin(lang));
        let Some(mut script) = script else {
            if let Some(bad) = extra.iter().find(|s| !valid_language_tag(&s.lang)) {
                bail!(
                    "a script in payload.scripts has lang {:?}, not a language tag",
                    bad.lang
                );
            }
            bail!(
                "no warning script for language {lang:?}: built in are {:?}; add one with payload.scripts",
                Script::builtin_languages()
            );
        };
        if let Some(url) = &cfg.help_url {
            script.url = url.clone();
        }
        scripts.push(script);
    }
    if scripts.is_empty() {
        bail!("payload.languages is empty: a warning needs at least one language");
    }
    let mut options = RenderOptions::default();
    if let Some(s) = cfg.seconds_per_slide {
        options.seconds_per_slide = s;
    }
    let image = cfg
        .image
        .as_ref()
        .map(|p| read(&root.join(p), "side image"))
        .transpose()?;
    if let Some(bytes) = &image {
        options.side_image = Some(warnseed_media::decode_image(bytes).context("decoding payload.image")?);
    }
    let video = cfg
        .video
        .as_ref()
        .map(|p| {
            let path = root.join(p);
            read(&path, "warning video")
                .and_then(|v| operator_video(v).with_context(|| format!("payload.video {}", path.display())))
        })
        .transpose()?;
    Ok(Inputs {
        scripts,
        image,
        video,
        options,
    })
}

/// A BCP 47-looking tag: letters, then `-`-separated letters or digits.
/// It names cache files, so nothing else may pass.
fn valid_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    (2..=8).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Checks an operator's finished video can take padding after its end.
fn operator_video(mut video: Vec<u8>) -> Result<Vec<u8>> {
    const MAX: usize = 1 << 31;
    if video.len() >= MAX {
        bail!("is {} bytes; a warning video must be under 2 GiB", video.len());
    }
    match video_container(&video) {
        None => bail!("is not MP4, Matroska or AVI (by its signature)"),
        Some(("mp4", _)) => {
            // Walk the top-level boxes: one of size 0 ("to the end of the
            // file") would swallow the padding boxes appended after it.
            let mut pos = 0usize;
            while pos + 8 <= video.len() {
                let size = u32::from_be_bytes(video[pos..pos + 4].try_into().expect("4 bytes")) as u64;
                let size = match size {
                    0 => bail!("its last box runs to the end of the file; remux it (e.g. ffmpeg -c copy)"),
                    1 if pos + 16 <= video.len() => {
                        u64::from_be_bytes(video[pos + 8..pos + 16].try_into().expect("8 bytes"))
                    }
                    s => s,
                };
                if size < 8 {
                    bail!("has a malformed box at offset {pos}");
                }
                pos = pos.saturating_add(size as usize);
            }
        }
        Some(("mkv", _)) => {
            // Padding Void elements must fall inside the Segment: give it
            // unknown size when its size field has the 8 bytes for that.
            let header_len = ebml_element_len(&video, 4).context("has a cut-short EBML header")?;
            let at = header_len;
            if video.get(at..at + 4) != Some(&[0x18, 0x53, 0x80, 0x67][..]) {
                bail!("has no Segment after its EBML header");
            }
            match video.get(at + 4).map(|&b| ebml_vint_len(b)) {
                Some(8) if video.len() >= at + 12 => {
                    video[at + 4..at + 12].copy_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
                }
                _ => bail!(
                    "its Segment size field is not 8 bytes long; remux it (e.g. mkvmerge or ffmpeg -c copy)"
                ),
            }
        }
        Some(_) => {}
    }
    Ok(video)
}

/// Length of an EBML variable-size integer from its first byte (1–8).
fn ebml_vint_len(first: u8) -> usize {
    (first.leading_zeros() as usize + 1).min(8)
}

/// Total length of the EBML element whose `id_len`-byte ID starts `bytes`
/// (ID, size field and data), or `None` if cut short.
fn ebml_element_len(bytes: &[u8], id_len: usize) -> Option<usize> {
    let len = ebml_vint_len(*bytes.get(id_len)?);
    let field = bytes.get(id_len..id_len + len)?;
    // The marker bit is dropped from the first byte (all of it for len 8).
    let mut value = u64::from(field[0]) & (0xFF >> len);
    for b in &field[1..] {
        value = (value << 8) | u64::from(*b);
    }
    usize::try_from(value).ok()?.checked_add(id_len + len)
}

fn fingerprint(inputs: &Inputs) -> String {
    let mut h = Sha256::new();
    h.update(RENDER_VERSION);
    for s in &inputs.scripts {
        for field in [&s.lang, &s.heading, &s.body, &s.help, &s.url] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
    }
    let o = &inputs.options;
    for n in [o.width, o.height, o.fps, o.seconds_per_slide] {
        h.update(n.to_be_bytes());
    }
    for blob in [&inputs.image, &inputs.video] {
        match blob {
            Some(b) => {
                h.update([1]);
                h.update(Sha256::digest(b));
            }
            None => h.update([0]),
        }
    }
    hex(&h.finalize())
}

/// The container an operator's finished video is in, by its signature.
fn video_container(bytes: &[u8]) -> Option<(&'static str, CellKind)> {
    if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        Some(("mp4", CellKind::Mp4Free))
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(("mkv", CellKind::MatroskaVoid))
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"AVI " {
        Some(("avi", CellKind::AviJunk))
    } else {
        None
    }
}

fn text_warning(scripts: &[Script]) -> String {
    let mut t = String::new();
    for s in scripts {
        t.push_str(&format!(
            "{}\n\n{}\n\n{}\n{}\n\n",
            s.heading, s.body, s.help, s.url
        ));
    }
    t
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html_warning(scripts: &[Script]) -> String {
    let mut t = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Warning</title></head>\n\
         <body style=\"background:#0b1a33;color:#fff;font-family:sans-serif;max-width:40em;margin:2em auto\">\n",
    );
    for s in scripts {
        let url = html_escape(&s.url);
        t.push_str(&format!(
            "<section lang=\"{}\"><h1 style=\"color:#ffcc00\">{}</h1><p>{}</p><p>{}<br><a href=\"{url}\" \
             style=\"color:#8cf\">{url}</a></p></section>\n",
            html_escape(&s.lang),
            html_escape(&s.heading),
            html_escape(&s.body).replace('\n', "<br>"),
            html_escape(&s.help).replace('\n', "<br>"),
        ));
    }
    t.push_str("</body></html>\n");
    t
}

/// Renders one group: the scripts in this order.
fn render_group(inputs: &Inputs, scripts: &[Script]) -> Result<GroupFiles> {
    let opts = &inputs.options;
    let suffix = if std::ptr::eq(scripts.as_ptr(), inputs.scripts.as_ptr()) {
        String::new()
    } else {
        format!(".{}", scripts[0].lang)
    };
    let mut files: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut add = |variant: &str, ext: &str, bytes: Vec<u8>| {
        files.push((variant.to_owned(), format!("warning{suffix}.{ext}"), bytes));
    };
    match &inputs.video {
        Some(video) => {
            if video_container(video).is_none() {
                bail!("payload.video is not MP4, Matroska or AVI (by its signature)");
            }
            // One file, used as-is for every video extension; see variants().
            add("video", "video", video.clone());
        }
        None => {
            let slides: Vec<_> = scripts
                .iter()
                .map(|s| warnseed_media::render_slide(s, opts))
                .collect();
            let video = warnseed_media::encode_video(&slides, opts).context("encoding the warning video")?;
            add("mp4", "mp4", warnseed_media::mux_mp4(&video));
            add("mkv", "mkv", warnseed_media::mux_matroska(&video));
            add("avi", "avi", warnseed_media::mux_avi(&video));
        }
    }
    let poster = warnseed_media::render_poster(scripts, opts);
    for (name, format) in [
        ("jpg", StillFormat::Jpeg),
        ("png", StillFormat::Png),
        ("gif", StillFormat::Gif),
        ("bmp", StillFormat::Bmp),
    ] {
        let bytes =
            warnseed_media::encode_still(&poster, format).with_context(|| format!("encoding {name}"))?;
        add(name, name, bytes);
    }
    add("txt", "txt", text_warning(scripts).into_bytes());
    add("html", "html", html_warning(scripts).into_bytes());
    Ok(GroupFiles {
        language: scripts[0].lang.clone(),
        files: files
            .iter()
            .map(|f| (f.0.clone(), f.1.clone(), hex(&Sha256::digest(&f.2))))
            .collect(),
        bytes: files.into_iter().map(|f| f.2).collect(),
        poster_width: poster.width,
        poster_height: poster.height,
    })
}

/// One group per language, each with its language first and the others
/// after it in configured order.
fn render(inputs: &Inputs) -> Result<Components> {
    let mut groups = vec![render_group(inputs, &inputs.scripts)?];
    for lead in 1..inputs.scripts.len() {
        let mut order = vec![inputs.scripts[lead].clone()];
        order.extend(
            inputs
                .scripts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lead)
                .map(|(_, s)| s.clone()),
        );
        groups.push(render_group(inputs, &order)?);
    }
    Ok(Components { groups })
}

impl GroupFiles {
    fn file(&self, variant: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .position(|f| f.0 == variant)
            .map(|i| self.bytes[i].as_slice())
    }

    /// The group's variants, in [`EXTENSIONS`] order.
    fn variants(&self) -> Vec<Variant> {
        let mut out = Vec::new();
        let rendered = |name: &str| self.file(name).expect("rendered");
        let (video, video_kind, video_name) = match self.file("video") {
            Some(v) => {
                let (name, kind) = video_container(v).expect("checked when rendered");
                (v, Some(kind), format!("warning.{name}"))
            }
            None => (rendered("mp4"), None, "warning.mp4".to_owned()),
        };
        for (name, kind) in [
            ("mp4", CellKind::Mp4Free),
            ("mkv", CellKind::MatroskaVoid),
            ("avi", CellKind::AviJunk),
        ] {
            match video_kind {
                // An operator's video serves every video extension in its
                // own container (players go by content, not name).
                Some(k) => out.push(Variant::cells(name, video.to_vec(), k)),
                None => out.push(Variant::cells(name, rendered(name).to_vec(), kind)),
            }
        }
        for name in ["jpg", "png", "gif", "bmp"] {
            out.push(Variant::trailing(name, rendered(name).to_vec()));
        }
        let text = rendered("txt");
        out.push(Variant::zip(
            "zip",
            &[(video_name.as_str(), video), ("warning.txt", text)],
        ));
        out.push(Variant::pdf(
            "pdf",
            rendered("jpg"),
            self.poster_width,
            self.poster_height,
            "Warning",
        ));
        out.push(Variant::trailing("html", rendered("html").to_vec()));
        out.push(Variant::trailing("txt", text.to_vec()));
        debug_assert!(out.iter().all(|v| EXTENSIONS.iter().any(|(n, _)| *n == v.name())));
        out
    }
}

impl Components {
    /// The payload set: one group of variants per language.
    pub fn payload_set(&self, fill: FillMode, secret: Vec<u8>) -> Result<PayloadSet> {
        let groups = self
            .groups
            .iter()
            .map(|g| (Some(g.language.clone()), g.variants()))
            .collect();
        Ok(PayloadSet::with_languages(groups, fill, secret)?)
    }

    /// Writes the files and the manifest to `dir`.
    fn save(&self, dir: &Path, fingerprint: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for g in &self.groups {
            for ((_, file, _), bytes) in g.files.iter().zip(&g.bytes) {
                write_atomically(&dir.join(file), bytes)?;
            }
        }
        let manifest = serde_json::json!({ "fingerprint": fingerprint, "groups": self.groups });
        write_atomically(
            &dir.join(MANIFEST),
            serde_json::to_string_pretty(&manifest)
                .expect("serialises")
                .as_bytes(),
        )
    }

    fn load(dir: &Path, fingerprint: &str) -> Option<Self> {
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join(MANIFEST)).ok()?).ok()?;
        if manifest.fingerprint != fingerprint {
            return None;
        }
        let mut groups = manifest.groups;
        for g in &mut groups {
            for (_, file, sha256) in &g.files {
                let bytes = std::fs::read(dir.join(file)).ok()?;
                if hex(&Sha256::digest(&bytes)) != *sha256 {
                    tracing::warn!(file = %dir.join(file).display(), "cached payload changed on disk; rendering again");
                    return None;
                }
                g.bytes.push(bytes);
            }
        }
        Some(Self { groups })
    }
}

/// Writes `path` through a temporary file of its own (`<name>.tmp`), synced
/// before the rename, so a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut name = path.file_name().expect("a file name").to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// The components for `cfg` kept in `cache`: reused while the fingerprint
/// matches and every file has its recorded hash, else rendered and saved.
/// Reuse is what keeps a node's bytes, and so its info hashes, the same
/// across restarts and upgrades of the encoder.
fn cached_components(root: &Path, cfg: &PayloadConfig, cache: &Path) -> Result<Components> {
    let inputs = inputs(root, cfg, &cfg.languages)?;
    let fp = fingerprint(&inputs);
    if let Some(c) = Components::load(cache, &fp) {
        return Ok(c);
    }
    tracing::info!(dir = %cache.display(), "rendering the warning payloads");
    let c = render(&inputs)?;
    c.save(cache, &fp)?;
    Ok(c)
}

/// The node's components, cached in `<data>/payloads/`.
pub fn node_components(dir: &DataDir) -> Result<Components> {
    cached_components(&dir.root, &dir.config.payload, &dir.root.join(PAYLOAD_DIR))
}

fn fill_secret(cfg: &PayloadConfig) -> Vec<u8> {
    cfg.fill_secret.clone().unwrap_or_default().into_bytes()
}

/// The payload set rendered from `cfg` (paths relative to `root`), with no
/// cache: for benchmarks and checks.
pub fn rendered_payload_set(root: &Path, cfg: &PayloadConfig) -> Result<PayloadSet> {
    let inputs = inputs(root, cfg, &cfg.languages)?;
    render(&inputs)?.payload_set(cfg.fill, fill_secret(cfg))
}

/// The payload set a node serves.
pub fn node_payload_set(dir: &DataDir) -> Result<PayloadSet> {
    let cfg = &dir.config.payload;
    let secret = fill_secret(cfg);
    if let Some(path) = dir.payload_path() {
        let bytes = read(&path, "payload file")?;
        return Ok(PayloadSet::single(
            bytes,
            &path.display().to_string(),
            cfg.fill,
            secret,
        )?);
    }
    node_components(dir)?.payload_set(cfg.fill, secret)
}

/// `payload build`: renders every variant and writes it, at its smallest
/// size, to `out`; returns what was written.
pub fn build_into(
    root: &Path,
    cfg: &PayloadConfig,
    languages: Option<&[String]>,
    out: &Path,
) -> Result<Vec<(String, PathBuf, u64)>> {
    let components = match languages {
        // The configured languages: the cache in `out` if it matches (so
        // a build never changes what a node already serves).
        None => cached_components(root, cfg, out)?,
        Some(langs) => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            render(&inputs(root, cfg, langs)?)?
        }
    };
    let set = components.payload_set(FillMode::Zeros, Vec::new())?;
    let default_language = set.languages()[0];
    let mut written = Vec::new();
    for (i, v) in set.variants().iter().enumerate() {
        // The default group's files are warning-<variant>.<ext>; another
        // language's are warning-<variant>.<lang>.<ext>.
        let language = set.variant_language(i as u8);
        let path = match language {
            l if l == default_language => out.join(format!("warning-{}.{}", v.name(), v.name())),
            l => out.join(format!(
                "warning-{}.{}.{}",
                v.name(),
                l.unwrap_or_default(),
                v.name()
            )),
        };
        let layout = v.layout(v.min_size(), 16 * 1024, warnseed_payload::Fill::Zeros, None);
        let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        layout
            .write_all(&mut f, false)
            .with_context(|| format!("writing {}", path.display()))?;
        let label = match language {
            Some(l) => format!("{} {l}", v.name()),
            None => v.name().to_owned(),
        };
        written.push((label, path, v.min_size()));
    }
    Ok(written)
}
