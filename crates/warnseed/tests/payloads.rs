//! Rendered warning payloads, checked by the programs users open them
//! with: ffprobe/ffmpeg for video, Pillow for stills, unzip and 7-Zip for
//! archives, poppler for PDF. Decoys are exported at awkward sizes (the
//! smallest, one byte more, 10 MiB + 3, 1 GiB + 7; zero padding is written
//! sparse, so the large ones cost no disk) and with unique fill, and real
//! libtorrent downloads rendered decoys end to end.

mod common;

use common::*;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn require_tools() {
    require("ffprobe", "ffmpeg");
    require("ffmpeg", "ffmpeg");
    require("pdfinfo", "poppler-utils");
    require("pdftoppm", "poppler-utils");
    require("unzip", "unzip");
    require("7z", "p7zip-full");
    require_python_module("PIL", "python3-pil");
}

/// Runs a command; returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Share of pixels brighter than mid-grey in an 8-bit grey buffer: text
/// on the dark warning background gives a few percent, a blank frame 0.
fn bright_share(gray: &[u8]) -> f64 {
    gray.iter().filter(|&&p| p > 128).count() as f64 / gray.len().max(1) as f64
}

fn check_video(path: &Path, decode: bool) {
    let (ok, out, err) = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path));
    assert!(ok && err.is_empty(), "ffprobe {}: {err}", path.display());
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "h264", "{}: {out}", path.display());
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(854), Some(480))
    );
    let duration: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (10.0..=30.0).contains(&duration),
        "{}: {duration} s",
        path.display()
    );
    if decode {
        let (ok, _, err) = run(Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"]));
        assert!(
            ok && err.is_empty(),
            "decoding every frame of {}: {err}",
            path.display()
        );
        let frame = frame_at_2s(path);
        assert_eq!(frame.len(), 854 * 480, "{}", path.display());
        let share = bright_share(&frame);
        assert!(
            share > 0.01,
            "frame at 2 s of {} is blank ({share})",
            path.display()
        );
    }
}

/// Pillow decodes the image (as viewers do, it stops at the image's end
/// and ignores the padding after it) and it is not blank.
fn check_still(path: &Path, codec: &str, probe: bool) {
    let script = "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]); im.load()\n\
                  g = im.convert('L'); h = g.histogram()\n\
                  print(im.format, im.size[0], im.size[1], sum(h[129:]) / (im.size[0] * im.size[1]))";
    let (ok, out, err) = run(Command::new("/usr/bin/python3").args(["-c", script]).arg(path));
    assert!(ok, "Pillow cannot read {}: {err}", path.display());
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[1], "854", "{out}");
    let share: f64 = f[3].parse().unwrap();
    assert!(share > 0.01, "{} is blank: {out}", path.display());
    if probe {
        let (ok, out, err) = run(Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(path));
        assert!(ok && err.is_empty(), "ffprobe {}: {err}", path.display());
        assert_eq!(out.trim(), codec, "{}", path.display());
    }
}

fn check_zip(path: &Path, work: &Path) {
    let (ok, out, err) = run(Command::new("unzip").arg("-t").arg(path));
    assert!(
        ok && out.contains("No errors detected"),
        "unzip -t {}: {out}{err}",
        path.display()
    );
    for name in ["warning.mp4", "warning.txt", "padding.bin"] {
        assert!(out.contains(name), "{name} in {}: {out}", path.display());
    }
    // 7-Zip (and WinRAR) open archives by signature, whatever the name.
    let (ok, out, err) = run(Command::new("7z").arg("t").arg(path));
    assert!(
        ok && out.contains("Everything is Ok"),
        "7z t {}: {out}{err}",
        path.display()
    );
    // Python's zipfile checks every CRC (the 4 GiB ones would take minutes).
    if std::fs::metadata(path).unwrap().len() < GIB {
        let (ok, out, err) = run(Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.testzip())",
            ])
            .arg(path));
        assert!(
            ok && out.trim() == "None",
            "zipfile {}: {out}{err}",
            path.display()
        );
    }
    let video = work.join("from-zip.mp4");
    let bytes = Command::new("unzip")
        .arg("-p")
        .arg(path)
        .arg("warning.mp4")
        .output()
        .unwrap()
        .stdout;
    std::fs::write(&video, bytes).unwrap();
    check_video(&video, false);
}

fn check_pdf(path: &Path, work: &Path) {
    let (ok, out, err) = run(Command::new("pdfinfo").arg(path));
    assert!(ok && err.is_empty(), "pdfinfo {}: {out}{err}", path.display());
    assert!(
        out.lines().any(|l| l.starts_with("Pages:") && l.ends_with(" 1")),
        "{out}"
    );
    let prefix = work.join("page");
    let (ok, _, err) = run(Command::new("pdftoppm")
        .args(["-r", "20", "-gray", "-singlefile"])
        .arg(path)
        .arg(&prefix));
    assert!(ok && err.is_empty(), "pdftoppm {}: {err}", path.display());
    let pgm = std::fs::read(prefix.with_extension("pgm")).unwrap();
    // Binary PGM: three header lines, then the pixels.
    let mut newlines = 0;
    let start = pgm
        .iter()
        .position(|&b| {
            newlines += usize::from(b == b'\n');
            newlines == 3
        })
        .unwrap()
        + 1;
    let share = bright_share(&pgm[start..]);
    assert!(
        share > 0.01,
        "the PDF page of {} renders blank ({share})",
        path.display()
    );
}

fn check_text(path: &Path) {
    let mut head = vec![0u8; 4096];
    let n = std::io::Read::read(&mut std::fs::File::open(path).unwrap(), &mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(
        text.contains("WARNING") && text.contains("ADVARSEL"),
        "{}: {text}",
        path.display()
    );
}

/// Checks one exported decoy by its variant.
fn check_decoy(variant: &str, path: &Path, size: u64, work: &Path) {
    let small = size <= 10 * MIB + 3;
    match variant {
        "mp4" | "mkv" | "avi" => check_video(path, true),
        "jpg" => check_still(path, "mjpeg", small),
        "png" => check_still(path, "png", small),
        "gif" => check_still(path, "gif", small),
        "bmp" => check_still(path, "bmp", small),
        "zip" => check_zip(path, work),
        "pdf" => check_pdf(path, work),
        "html" | "txt" => check_text(path),
        other => panic!("unexpected variant {other}"),
    }
}

/// `warnseed payload list --json` of a node.
fn payload_list(data: &Path) -> Value {
    serde_json::from_str(&warnseed(&[
        "payload",
        "list",
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]))
    .unwrap()
}

/// The SHA-256 `payload list --json` gives the first variant named `name`.
fn variant_sha(list: &Value, name: &str) -> Value {
    list["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == name)
        .unwrap()["sha256"]
        .clone()
}

/// The variants a node serves: (name, language, smallest decoy size).
fn variants(data: &Path) -> Vec<(String, String, u64)> {
    let v = payload_list(data);
    v["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["variant"].as_str().unwrap().to_owned(),
                r["language"].as_str().unwrap().to_owned(),
                r["min_size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Raw grey pixels of the frame at 2 s.
fn frame_at_2s(path: &Path) -> Vec<u8> {
    Command::new("ffmpeg")
        .args(["-v", "error", "-ss", "2", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap()
        .stdout
}

/// A title extension that maps to each variant.
fn extension(variant: &str) -> &str {
    match variant {
        "txt" => "iso",
        v => v,
    }
}

/// A catalogue row: (variant, language, title, requested size).
type Row = (String, String, String, u64);

/// Initialises a node (with extra `[payload]` lines), imports `rows` built
/// from its variants, exports every decoy's file; returns (data dir,
/// files dir, rows).
fn export_node(
    work: &Path,
    payload_lines: &str,
    rows: impl Fn(&[(String, String, u64)]) -> Vec<Row>,
) -> (PathBuf, PathBuf, Vec<Row>) {
    let data = work.join("node");
    warnseed(&["init", "--data", data.to_str().unwrap()]);
    if !payload_lines.is_empty() {
        set_payload_config(&data, payload_lines);
    }
    let rows = rows(&variants(&data));
    let csv = work.join("catalog.csv");
    let mut text = String::from("title,size_bytes,language\n");
    for (_, language, title, size) in &rows {
        text.push_str(&format!("{title},{size},{language}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    warnseed(&[
        "catalog",
        "import",
        csv.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let files = work.join("files");
    export_files(&data, &files);
    (data, files, rows)
}

#[test]
fn every_variant_is_a_valid_file_at_every_size() {
    require_tools();
    let work = tempfile::tempdir().unwrap();
    let (_data, files, rows) = export_node(work.path(), "", |variants| {
        let mut rows = Vec::new();
        // Both language groups (en, nb): titles tagged nb-NO get the nb one.
        for (name, language, min) in variants {
            let tag = if language == "nb" { "nb-NO" } else { language };
            for size in [*min, min + 1, 10 * MIB + 3, GIB + 7] {
                let title = format!("sample-title-{:06}.{}", rows.len() + 1, extension(name));
                rows.push((name.clone(), tag.to_owned(), title, size));
            }
        }
        // ZIP64 in earnest: past 4 GiB.
        let title = format!("sample-title-{:06}.zip", rows.len() + 1);
        rows.push(("zip".to_owned(), "en".to_owned(), title, 4 * GIB + 1));
        // Extensions served by another container than their own.
        for (variant, ext) in [
            ("mkv", "webm"),
            ("mp4", "wmv"),
            ("mp4", "flv"),
            ("zip", "rar"),
            ("zip", "7z"),
        ] {
            let title = format!("sample-title-{:06}.{ext}", rows.len() + 1);
            rows.push((variant.to_owned(), "en".to_owned(), title, 10 * MIB + 3));
        }
        rows
    });
    assert!(
        rows.len() >= 2 * 11 * 4,
        "every variant of both languages is listed: {rows:?}"
    );
    // The nb group's video shows Norwegian first: its frame at 2 s differs.
    let first_mp4 = |tag: &str| {
        let row = rows.iter().find(|r| r.0 == "mp4" && r.1 == tag).unwrap();
        frame_at_2s(&files.join(&row.2))
    };
    assert_ne!(
        first_mp4("en"),
        first_mp4("nb-NO"),
        "each language group leads with its language"
    );
    for (variant, _language, title, requested) in &rows {
        let path = files.join(title);
        let size = std::fs::metadata(&path).unwrap().len();
        // The smallest padding element is 8 bytes (an MP4 box, an AVI
        // chunk), so one byte over the minimum becomes eight.
        assert!(
            size >= *requested && size - requested <= 7,
            "{title}: {size} bytes for {requested} requested"
        );
        if *requested >= 10 * MIB {
            assert_eq!(size, *requested, "{title} has the exact size");
        }
        check_decoy(variant, &path, size, work.path());
    }
}

#[test]
fn unique_fill_decoys_are_valid_and_share_no_padding() {
    require_tools();
    let work = tempfile::tempdir().unwrap();
    let (data, files, rows) = export_node(
        work.path(),
        "fill = \"unique\"\nfill_secret = \"test secret\"",
        |variants| {
            let mut rows = Vec::new();
            for (name, language, min) in variants {
                for size in [min + 1, 3 * MIB + 3, 3 * MIB + 3] {
                    let title = format!("sample-title-{:06}.{}", rows.len() + 1, extension(name));
                    rows.push((name.clone(), language.clone(), title, size));
                }
            }
            rows
        },
    );
    assert!(data.join("piece-hashes.bin").exists());
    let mut tails = std::collections::HashSet::new();
    for (variant, _language, title, _) in &rows {
        let path = files.join(title);
        let size = std::fs::metadata(&path).unwrap().len();
        check_decoy(variant, &path, size, work.path());
        if size > 3 * MIB {
            // 64 KiB of padding near the end (past the largest media, before
            // any tail): keyed bytes, different in every decoy (two decoys
            // of each variant have this size).
            let bytes = std::fs::read(&path).unwrap();
            let at = bytes.len() - 300 * 1024;
            let window = bytes[at..at + 65_536].to_vec();
            assert!(
                window.iter().filter(|&&b| b == 0).count() < 1024,
                "{title} padding is not keyed"
            );
            assert!(tails.insert(window), "{title} shares padding with another decoy");
        }
    }
}

#[test]
fn payload_build_writes_every_variant_and_takes_scripts_images_and_videos() {
    require_tools();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("node");
    warnseed(&["init", "--data", data.to_str().unwrap()]);

    // Built-in Norwegian only, into a directory of its own.
    let out = work.path().join("nb");
    let listing = warnseed(&[
        "payload",
        "build",
        "--data",
        data.to_str().unwrap(),
        "--lang",
        "nb",
        "--out",
        out.to_str().unwrap(),
    ]);
    for name in [
        "mp4", "mkv", "avi", "jpg", "png", "gif", "bmp", "zip", "pdf", "html", "txt",
    ] {
        let file = out.join(format!("warning-{name}.{name}"));
        assert!(listing.contains(file.to_str().unwrap()), "{listing}");
        if !matches!(name, "html" | "txt") {
            check_decoy(name, &file, 0, work.path());
        }
    }
    let text = std::fs::read_to_string(out.join("warning-txt.txt")).unwrap();
    assert!(text.contains("ADVARSEL") && !text.contains("WARNING"), "{text}");

    let err = Command::new(bin())
        .args([
            "payload",
            "build",
            "--data",
            data.to_str().unwrap(),
            "--lang",
            "xx",
            "--out",
        ])
        .arg(work.path().join("xx"))
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no warning script for language \"xx\""));

    // An operator's script in another script (Cyrillic), a side image and
    // a help URL of their own.
    std::fs::write(
        data.join("uk.toml"),
        "lang = \"uk\"\nheading = \"ПОПЕРЕДЖЕННЯ\"\n\
         body = \"Ви завантажили цей файл з комп'ютера поліції. Вашу IP-адресу зареєстровано.\"\n\
         help = \"Допомога:\"\nurl = \"https://example.org/uk\"\n",
    )
    .unwrap();
    std::fs::copy(out.join("warning-png.png"), data.join("officer.png")).unwrap();
    set_payload_config(
        &data,
        "languages = [\"uk\", \"en\"]\nscripts = [\"uk.toml\"]\nimage = \"officer.png\"\nhelp_url = \"https://help.example.org/\"",
    );
    let listing = warnseed(&["payload", "build", "--data", data.to_str().unwrap()]);
    let served = data.join("payloads");
    check_video(&served.join("warning-mp4.mp4"), true);
    // Titles tagged en get a video that leads with English.
    assert!(listing.contains("warning-mp4.en.mp4"), "{listing}");
    check_video(&served.join("warning-mp4.en.mp4"), true);
    assert_ne!(
        frame_at_2s(&served.join("warning-mp4.mp4")),
        frame_at_2s(&served.join("warning-mp4.en.mp4"))
    );
    let text = std::fs::read_to_string(served.join("warning-txt.txt")).unwrap();
    assert!(text.starts_with("ПОПЕРЕДЖЕННЯ"), "{text}");
    assert!(
        text.contains("https://help.example.org/") && !text.contains("https://example.org/uk"),
        "{text}"
    );
    let list: Value = payload_list(&data);
    assert_eq!(list["languages"], serde_json::json!(["uk", "en"]));

    // A cached file that changed on disk is rendered again, to the same
    // bytes: what a node serves does not drift.
    let before = variant_sha(&list, "mp4");
    std::fs::write(served.join("warning.mp4"), b"not a video").unwrap();
    let list: Value = payload_list(&data);
    assert_eq!(variant_sha(&list, "mp4"), before);
    check_video(&served.join("warning.mp4"), false);

    // Bad operator input is refused with a reason.
    let fails_with = |lines: &str, reason: &str| {
        set_payload_config(&data, lines);
        let out = Command::new(bin())
            .args(["payload", "list", "--data", data.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(reason), "{lines}: {err}");
    };
    fails_with("languages = [\"en/../x\"]", "is not a language tag");
    fails_with("languages = [\"en\", \"EN\"]", "twice");
    let mut runs_to_end = std::fs::read(out.join("warning-mp4.mp4")).unwrap();
    runs_to_end.extend_from_slice(&[0, 0, 0, 0, b'f', b'r', b'e', b'e']);
    std::fs::write(data.join("to-end.mp4"), runs_to_end).unwrap();
    fails_with(
        "languages = [\"en\"]\nvideo = \"to-end.mp4\"",
        "runs to the end of the file",
    );
    set_payload_config(&data, "languages = [\"uk\", \"en\"]");
    let cfg = data.join("warnseed.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("video = \"to-end.mp4\"\n", "")).unwrap();

    // A finished video, used as-is for every video title.
    std::fs::copy(out.join("warning-mp4.mp4"), data.join("operator.mp4")).unwrap();
    set_payload_config(&data, "video = \"operator.mp4\"");
    let list: Value = payload_list(&data);
    assert_eq!(variant_sha(&list, "mp4"), variant_sha(&list, "mkv"));
    assert_eq!(variant_sha(&list, "mp4"), variant_sha(&list, "avi"));
    let operator = std::fs::read(data.join("operator.mp4")).unwrap();
    let csv = work.path().join("op.csv");
    std::fs::write(
        &csv,
        format!("title,size_bytes\nsample-title-000001.mkv,{}\n", 10 * MIB + 3),
    )
    .unwrap();
    warnseed(&[
        "catalog",
        "import",
        csv.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let files = work.path().join("op-files");
    export_files(&data, &files);
    let decoy = std::fs::read(files.join("sample-title-000001.mkv")).unwrap();
    assert_eq!(decoy.len() as u64, 10 * MIB + 3);
    assert_eq!(
        &decoy[..operator.len()],
        &operator[..],
        "the operator's video, byte for byte"
    );
    check_video(&files.join("sample-title-000001.mkv"), true);
}

#[test]
fn libtorrent_downloads_rendered_mkv_and_zip_decoys_that_play_and_open() {
    require_tools();
    let rows = "sample-title-000001.mkv,3145731\nsample-title-000002.zip,2097153\n";
    for (tag, lines) in [("zeros", ""), ("unique", "fill = \"unique\"")] {
        let mut node = Node::with_payload_config(rows, None, lines);
        let torrents = node.export_torrents(&[]);
        let index = Node::index(&torrents);
        let files = node.dir.path().join("expected");
        export_files(&node.data, &files);
        let ip = Ipv4Addr::new(127, 0, 0, 1);
        let listen = SocketAddr::from((ip, free_port(ip)));
        node.start(listen, &[]);
        for (i, (info_hash, _id, size, title)) in index.iter().enumerate() {
            let bind = Ipv4Addr::new(127, 0, 3, 10 + i as u8);
            let out = node.dir.path().join(format!("lt-{tag}-{i}"));
            let torrent = torrents.join(format!("{info_hash}.torrent"));
            let r = libtorrent_download(("--torrent", torrent.to_str().unwrap()), Some(listen), bind, &out);
            let path = Path::new(r["path"].as_str().unwrap());
            assert_eq!(std::fs::metadata(path).unwrap().len(), *size, "{tag} {title}");
            assert_eq!(
                file_sha256(path),
                file_sha256(&files.join(title)),
                "{tag} {title}: the exported bytes"
            );
            if title.ends_with(".mkv") {
                check_video(path, true);
            } else {
                check_zip(path, node.dir.path());
            }
            let sessions = node.wait_for_completed(&bind.to_string(), info_hash);
            assert!(
                sessions.iter().any(|s| s.completed && s.bytes_sent == *size),
                "{sessions:?}"
            );
        }
        node.stop();
    }
}
