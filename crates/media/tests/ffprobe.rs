//! The files this crate writes, checked by the real FFmpeg tools: ffprobe
//! must see H.264 of the right size and length, ffmpeg must decode every
//! frame without a word on stderr, and a decoded frame must show the text.
//!
//! Needs `ffprobe` and `ffmpeg` from the Debian package `ffmpeg`; without
//! them the tests fail (they never skip), saying which package to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warnseed_media::{
    encode_still, encode_video, mux_avi, mux_matroska, mux_mp4, render_poster, render_slide, RenderOptions,
    RgbFrame, Script, StillFormat,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("warnseed-media-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(tool: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` not found: install the Debian package `ffmpeg` (apt-get install ffmpeg)")
        }
        Err(e) => panic!("running {tool}: {e}"),
    }
}

fn ffprobe(path: &Path) -> serde_json::Value {
    let path = path.to_str().unwrap();
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            path,
        ],
    );
    assert!(
        out.status.success(),
        "ffprobe {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe {path} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON")
}

/// Decodes one frame at `seek_seconds` as 8-bit grey.
fn grey_frame(path: &Path, seek_seconds: u32) -> Vec<u8> {
    let path = path.to_str().unwrap();
    let seek = seek_seconds.to_string();
    let out = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-ss",
            &seek,
            "-i",
            path,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
    );
    assert!(
        out.status.success(),
        "ffmpeg frame {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffmpeg frame {path} stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn luma(frame: &RgbFrame) -> Vec<u8> {
    frame
        .rgb
        .chunks_exact(3)
        .map(|p| ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000) as u8)
        .collect()
}

/// Of the pixels that are text (bright) in `source`, the share that are
/// bright in `decoded` too.
fn text_kept(source: &RgbFrame, decoded: &[u8]) -> f64 {
    let source = luma(source);
    assert_eq!(source.len(), decoded.len(), "decoded frame has the slide's size");
    // Skip the stripes (first and last 10 rows): text only.
    let rows = 10 * 854..(480 - 10) * 854;
    let text: Vec<usize> = rows.filter(|&i| source[i] > 160).collect();
    assert!(text.len() > 5_000, "the slide has text");
    let kept = text.iter().filter(|&&i| decoded[i] > 128).count();
    kept as f64 / text.len() as f64
}

fn scripts() -> Vec<Script> {
    ["en", "nb"]
        .iter()
        .map(|l| Script::builtin(l).expect("builtin"))
        .collect()
}

#[test]
fn videos_probe_and_decode_cleanly_in_every_container() {
    let dir = TempDir::new("video");
    let opts = RenderOptions::default();
    let slides: Vec<RgbFrame> = scripts().iter().map(|s| render_slide(s, &opts)).collect();
    let video = encode_video(&slides, &opts).expect("encode");

    let files = [
        ("warning.mp4", mux_mp4(&video), "mov,mp4,m4a,3gp,3g2,mj2"),
        ("warning.mkv", mux_matroska(&video), "matroska,webm"),
        ("warning.avi", mux_avi(&video), "avi"),
    ];
    for (name, bytes, format_name) in &files {
        let path = dir.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        println!("{name}: {} bytes", bytes.len());

        let probe = ffprobe(&path);
        let stream = &probe["streams"][0];
        assert_eq!(
            probe["streams"].as_array().unwrap().len(),
            1,
            "{name}: one stream"
        );
        assert_eq!(stream["codec_name"], "h264", "{name}");
        assert_eq!(stream["profile"], "Constrained Baseline", "{name}");
        assert_eq!(stream["width"], 854, "{name}");
        assert_eq!(stream["height"], 480, "{name}");
        assert_eq!(stream["r_frame_rate"], "25/1", "{name}");
        assert_eq!(probe["format"]["format_name"], *format_name, "{name}");
        let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((10.0..=30.0).contains(&duration), "{name}: duration {duration}");
        assert!(
            (duration - 16.0).abs() < 0.05,
            "{name}: 2 slides x 8 s, got {duration}"
        );

        // Decode everything; any complaint at -v error is a failure.
        let p = path.to_str().unwrap();
        let out = run("ffmpeg", &["-v", "error", "-i", p, "-f", "null", "-"]);
        assert!(out.status.success(), "{name}: ffmpeg decode failed");
        assert!(
            out.stderr.is_empty(),
            "{name}: decode stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The first frame shows the English slide, a frame in the second
        // half the Norwegian one (seeking there needs the second IDR).
        let first = grey_frame(&path, 0);
        let en = text_kept(&slides[0], &first);
        assert!(
            en > 0.9,
            "{name}: {:.0} % of the English text visible",
            en * 100.0
        );
        let later = grey_frame(&path, 12);
        let nb = text_kept(&slides[1], &later);
        assert!(
            nb > 0.9,
            "{name}: {:.0} % of the Norwegian text visible",
            nb * 100.0
        );
        assert!(
            text_kept(&slides[0], &later) < nb,
            "{name}: second half is not the English slide"
        );
    }
}

#[test]
fn stills_probe_with_their_codec_and_size() {
    let dir = TempDir::new("still");
    let opts = RenderOptions::default();
    let poster = render_poster(&scripts(), &opts);
    for (format, name, codec) in [
        (StillFormat::Jpeg, "warning.jpg", "mjpeg"),
        (StillFormat::Png, "warning.png", "png"),
        (StillFormat::Gif, "warning.gif", "gif"),
        (StillFormat::Bmp, "warning.bmp", "bmp"),
    ] {
        let bytes = encode_still(&poster, format).expect("encode still");
        println!("{name}: {} bytes", bytes.len());
        let path = dir.0.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let probe = ffprobe(&path);
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], codec, "{name}");
        assert_eq!(stream["width"], 854, "{name}");
        assert_eq!(stream["height"], 960, "{name}");
        let p = path.to_str().unwrap();
        let out = run("ffmpeg", &["-v", "error", "-i", p, "-f", "null", "-"]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn same_inputs_give_same_bytes() {
    let opts = RenderOptions::default();
    let make = || {
        let slides: Vec<RgbFrame> = scripts().iter().map(|s| render_slide(s, &opts)).collect();
        let video = encode_video(&slides, &opts).unwrap();
        let poster = render_poster(&scripts(), &opts);
        (
            mux_mp4(&video),
            mux_matroska(&video),
            mux_avi(&video),
            encode_still(&poster, StillFormat::Jpeg).unwrap(),
            encode_still(&poster, StillFormat::Gif).unwrap(),
        )
    };
    assert!(make() == make());
}
