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
use warnseed_media::{RenderOptions, Script, StillFormat};
use warnseed_payload::{CellKind, FillMode, PayloadSet, Variant, EXTENSIONS};

pub const PAYLOAD_DIR: &str = "payloads";
const MANIFEST: &str = "manifest.json";
/// Bump when rendering changes, so caches are rebuilt.
const RENDER_VERSION: &str = "warnseed payload render v1";

/// The files a payload set is assembled from. Zip and PDF variants are
/// built from these (video, text, poster) when the set is assembled.
pub struct Components {
    /// (variant name, file name, bytes) for every file-backed variant.
    files: Vec<(String, String, Vec<u8>)>,
    poster_size: (u32, u32),
    languages: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    fingerprint: String,
    languages: Vec<String>,
    poster_width: u32,
    poster_height: u32,
    /// (variant name, file name)
    files: Vec<(String, String)>,
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
    let mut scripts = Vec::new();
    for lang in languages {
        let script = extra
            .iter()
            .find(|s| &s.lang == lang)
            .cloned()
            .or_else(|| Script::builtin(lang));
        let Some(mut script) = script else {
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
        .map(|p| read(&root.join(p), "warning video"))
        .transpose()?;
    Ok(Inputs {
        scripts,
        image,
        video,
        options,
    })
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
    h.update(inputs.options.seconds_per_slide.to_be_bytes());
    for blob in [&inputs.image, &inputs.video] {
        match blob {
            Some(b) => {
                h.update([1]);
                h.update(Sha256::digest(b));
            }
            None => h.update([0]),
        }
    }
    warnseed_bittorrent::metainfo::hex(&h.finalize())
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

fn render(inputs: &Inputs) -> Result<Components> {
    let opts = &inputs.options;
    let mut files = Vec::new();
    match &inputs.video {
        Some(video) => {
            let Some((_, _)) = video_container(video) else {
                bail!("payload.video is not MP4, Matroska or AVI (by its signature)");
            };
            // One file, used as-is for every video extension; see assemble().
            files.push(("video".to_owned(), "warning-video.bin".to_owned(), video.clone()));
        }
        None => {
            let slides: Vec<_> = inputs
                .scripts
                .iter()
                .map(|s| warnseed_media::render_slide(s, opts))
                .collect();
            let video = warnseed_media::encode_video(&slides, opts).context("encoding the warning video")?;
            files.push((
                "mp4".into(),
                "warning.mp4".into(),
                warnseed_media::mux_mp4(&video),
            ));
            files.push((
                "mkv".into(),
                "warning.mkv".into(),
                warnseed_media::mux_matroska(&video),
            ));
            files.push((
                "avi".into(),
                "warning.avi".into(),
                warnseed_media::mux_avi(&video),
            ));
        }
    }
    let poster = warnseed_media::render_poster(&inputs.scripts, opts);
    for (name, format) in [
        ("jpg", StillFormat::Jpeg),
        ("png", StillFormat::Png),
        ("gif", StillFormat::Gif),
        ("bmp", StillFormat::Bmp),
    ] {
        let bytes =
            warnseed_media::encode_still(&poster, format).with_context(|| format!("encoding {name}"))?;
        files.push((name.into(), format!("warning.{name}"), bytes));
    }
    files.push((
        "txt".into(),
        "warning.txt".into(),
        text_warning(&inputs.scripts).into_bytes(),
    ));
    files.push((
        "html".into(),
        "warning.html".into(),
        html_warning(&inputs.scripts).into_bytes(),
    ));
    Ok(Components {
        files,
        poster_size: (poster.width, poster.height),
        languages: inputs.scripts.iter().map(|s| s.lang.clone()).collect(),
    })
}

impl Components {
    fn file(&self, variant: &str) -> Option<&[u8]> {
        self.files.iter().find(|f| f.0 == variant).map(|f| f.2.as_slice())
    }

    /// The variants, in [`EXTENSIONS`] order.
    pub fn variants(&self) -> Vec<Variant> {
        let mut out = Vec::new();
        let (video, video_kind, video_name) = match self.file("video") {
            Some(v) => {
                let (name, kind) = video_container(v).expect("checked when rendered");
                (v, Some(kind), format!("warning.{name}"))
            }
            None => (
                self.file("mp4").expect("rendered"),
                None,
                "warning.mp4".to_owned(),
            ),
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
                None => out.push(Variant::cells(
                    name,
                    self.file(name).expect("rendered").to_vec(),
                    kind,
                )),
            }
        }
        for name in ["jpg", "png", "gif", "bmp"] {
            out.push(Variant::trailing(
                name,
                self.file(name).expect("rendered").to_vec(),
            ));
        }
        let text = self.file("txt").expect("rendered");
        out.push(Variant::zip(
            "zip",
            &[(video_name.as_str(), video), ("warning.txt", text)],
        ));
        let (w, h) = self.poster_size;
        out.push(Variant::pdf(
            "pdf",
            self.file("jpg").expect("rendered"),
            w,
            h,
            "Warning",
        ));
        out.push(Variant::trailing(
            "html",
            self.file("html").expect("rendered").to_vec(),
        ));
        out.push(Variant::trailing("txt", text.to_vec()));
        debug_assert!(out.iter().all(|v| EXTENSIONS.iter().any(|(n, _)| *n == v.name())));
        out
    }

    /// Writes the files and the manifest to `dir`.
    fn save(&self, dir: &Path, fingerprint: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (_, file, bytes) in &self.files {
            write_atomically(&dir.join(file), bytes)?;
        }
        let manifest = Manifest {
            fingerprint: fingerprint.to_owned(),
            languages: self.languages.clone(),
            poster_width: self.poster_size.0,
            poster_height: self.poster_size.1,
            files: self.files.iter().map(|f| (f.0.clone(), f.1.clone())).collect(),
        };
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
        let mut files = Vec::new();
        for (variant, file) in manifest.files {
            let bytes = std::fs::read(dir.join(&file)).ok()?;
            files.push((variant, file, bytes));
        }
        Some(Self {
            files,
            poster_size: (manifest.poster_width, manifest.poster_height),
            languages: manifest.languages,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// The node's components: from `<data>/payloads/` while its fingerprint
/// matches the configuration, else rendered and saved there.
pub fn node_components(dir: &DataDir) -> Result<Components> {
    let cfg = &dir.config.payload;
    let inputs = inputs(&dir.root, cfg, &cfg.languages)?;
    let fp = fingerprint(&inputs);
    let cache = dir.root.join(PAYLOAD_DIR);
    if let Some(c) = Components::load(&cache, &fp) {
        return Ok(c);
    }
    tracing::info!(dir = %cache.display(), "rendering the warning payloads");
    let c = render(&inputs)?;
    c.save(&cache, &fp)?;
    Ok(c)
}

/// The payload set a node serves.
pub fn node_payload_set(dir: &DataDir) -> Result<PayloadSet> {
    let cfg = &dir.config.payload;
    let secret = cfg.fill_secret.clone().unwrap_or_default().into_bytes();
    if let Some(path) = dir.payload_path() {
        let bytes = read(&path, "payload file")?;
        return Ok(PayloadSet::single(
            bytes,
            &path.display().to_string(),
            cfg.fill,
            secret,
        )?);
    }
    Ok(PayloadSet::new(
        node_components(dir)?.variants(),
        cfg.fill,
        secret,
    )?)
}

/// `payload build`: renders every variant and writes it, at its smallest
/// size, to `out`; returns what was written.
pub fn build_into(
    root: &Path,
    cfg: &PayloadConfig,
    languages: Option<&[String]>,
    out: &Path,
) -> Result<Vec<(String, PathBuf, u64)>> {
    let langs = languages.unwrap_or(&cfg.languages).to_vec();
    let inputs = inputs(root, cfg, &langs)?;
    let components = render(&inputs)?;
    if languages.is_none() || languages == Some(cfg.languages.as_slice()) {
        components.save(out, &fingerprint(&inputs))?;
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let set = PayloadSet::new(components.variants(), FillMode::Zeros, Vec::new())?;
    let mut written = Vec::new();
    for v in set.variants() {
        let path = out.join(format!("warning-{}.{}", v.name(), v.name()));
        let layout = v.layout(v.min_size(), 16 * 1024, warnseed_payload::Fill::Zeros, None);
        let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        layout
            .write_all(&mut f, false)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push((v.name().to_owned(), path, v.min_size()));
    }
    Ok(written)
}
