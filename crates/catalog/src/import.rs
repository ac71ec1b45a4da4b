//! Importing CSV and JSON Lines catalogue files.

use crate::store::CatalogStore;
use crate::title::{check_campaign, check_language, check_size, parse_size, validate_title, TitleRow};
use crate::CatalogError;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const COLUMNS: [&str; 5] = ["title", "size_bytes", "campaign", "language", "priority"];

/// A rejected row: where it is and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub rows: u64,
    pub added: u64,
    /// Rows already in the catalogue with the same fields.
    pub unchanged: u64,
}

/// Counts bytes read so the caller can show progress over the file size.
struct CountingReader<R, F> {
    inner: R,
    read: u64,
    hasher: Sha256,
    on_progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for CountingReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.hasher.update(&buf[..n]);
        (self.on_progress)(self.read);
        Ok(n)
    }
}

enum Format {
    Csv,
    JsonLines,
}

fn detect_format(path: &Path, first: &[u8]) -> Format {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => Format::Csv,
        Some("jsonl" | "ndjson" | "json") => Format::JsonLines,
        _ if first
            .strip_prefix("\u{feff}".as_bytes())
            .unwrap_or(first)
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            == Some(&b'{') =>
        {
            Format::JsonLines
        }
        _ => Format::Csv,
    }
}

/// Imports `path` into the store in one transaction. `on_progress` receives
/// the number of bytes read so far. Every invalid row is reported (file,
/// line, reason) and then nothing is imported.
pub fn import_file(
    store: &mut CatalogStore,
    path: &Path,
    on_progress: impl FnMut(u64),
) -> Result<ImportOutcome, CatalogError> {
    let display = path.display().to_string();
    let io_err = |source| CatalogError::Io {
        path: display.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let first = reader.fill_buf().map_err(io_err)?.to_vec();
    let format = detect_format(path, &first);
    let mut counting = CountingReader {
        inner: reader,
        read: 0,
        hasher: Sha256::new(),
        on_progress,
    };

    let tx = store.conn.transaction()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    tx.execute(
        "INSERT INTO imports (path, sha256, rows, added, imported_at_ms) VALUES (?1, x'', 0, 0, ?2)",
        params![display, now_ms],
    )?;
    let import_id = tx.last_insert_rowid();
    let mut outcome = ImportOutcome::default();
    let mut errors = Vec::new();
    {
        let mut insert = tx.prepare(
            "INSERT INTO titles (title, size_bytes, campaign, language, import_id, source_line, priority)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(title) DO NOTHING",
        )?;
        let mut existing = tx.prepare(
            "SELECT size_bytes, campaign, language, import_id, source_line, priority FROM titles WHERE title = ?1",
        )?;
        let mut accept = |line: u64, row: TitleRow, errors: &mut Vec<RowError>| -> Result<(), CatalogError> {
            outcome.rows += 1;
            let size = row.size_bytes.map(|n| n as i64);
            if insert.execute(params![
                row.title,
                size,
                row.campaign,
                row.language,
                import_id,
                line as i64,
                row.priority
            ])? == 1
            {
                outcome.added += 1;
                return Ok(());
            }
            let (old_size, old_campaign, old_language, old_import, old_line, old_priority): (
                Option<i64>,
                Option<String>,
                Option<String>,
                i64,
                i64,
                Option<i64>,
            ) = existing
                .query_row([&row.title], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })
                .optional()?
                .expect("conflicting row exists");
            let reason = if old_import == import_id {
                Some(format!("duplicate title (first at line {old_line})"))
            } else if (old_size, &old_campaign, &old_language, old_priority)
                != (size, &row.campaign, &row.language, row.priority)
            {
                Some(
                    "title is already in the catalogue with a different size, campaign, language or priority"
                        .into(),
                )
            } else {
                None
            };
            match reason {
                Some(reason) => errors.push(RowError {
                    file: display.clone(),
                    line,
                    reason,
                }),
                None => outcome.unchanged += 1,
            }
            Ok(())
        };
        match format {
            Format::Csv => read_csv(&mut counting, &display, &mut errors, &mut accept)?,
            Format::JsonLines => read_json_lines(&mut counting, &display, &mut errors, &mut accept)?,
        }
    }
    if !errors.is_empty() {
        // Dropping the transaction rolls everything back.
        return Err(CatalogError::Invalid {
            path: display,
            invalid: errors.len(),
            errors,
        });
    }
    let digest: [u8; 32] = counting.hasher.finalize().into();
    if outcome.added == 0 {
        // Nothing new: leave no trace, so re-importing is a true no-op.
        drop(tx);
        return Ok(outcome);
    }
    tx.execute(
        "UPDATE imports SET sha256 = ?2, rows = ?3, added = ?4 WHERE id = ?1",
        params![import_id, &digest[..], outcome.rows as i64, outcome.added as i64],
    )?;
    tx.commit()?;
    Ok(outcome)
}

type Accept<'a> = dyn FnMut(u64, TitleRow, &mut Vec<RowError>) -> Result<(), CatalogError> + 'a;

fn read_csv(
    input: &mut impl Read,
    file: &str,
    errors: &mut Vec<RowError>,
    accept: &mut Accept<'_>,
) -> Result<(), CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let push = |errors: &mut Vec<RowError>, line: u64, reason: String| {
        errors.push(RowError {
            file: file.to_string(),
            line,
            reason,
        })
    };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            push(errors, 1, format!("unreadable header row: {e}"));
            return Ok(());
        }
    };
    let mut index = [None; COLUMNS.len()];
    for (i, name) in headers.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| *c == name) {
            Some(c) if index[c].is_some() => push(errors, 1, format!("column {name:?} appears twice")),
            Some(c) => index[c] = Some(i),
            None => push(
                errors,
                1,
                format!("unknown column {name:?} (known columns: {})", COLUMNS.join(", ")),
            ),
        }
    }
    if index[0].is_none() {
        push(errors, 1, "the header row has no \"title\" column".into());
    }
    if !errors.is_empty() {
        return Ok(());
    }
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(CatalogError::Io {
                        path: file.to_string(),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
                let line = e.position().map(|p| p.line()).unwrap_or(line);
                push(errors, line, format!("malformed CSV: {e}"));
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        let field = |c: usize| index[c].and_then(|i| record.get(i)).unwrap_or("");
        match row_from_fields(field(0), field(1), field(2), field(3), field(4)) {
            Ok(row) => accept(line, row, errors)?,
            Err(reason) => push(errors, line, reason),
        }
    }
    Ok(())
}

fn row_from_fields(
    title: &str,
    size: &str,
    campaign: &str,
    language: &str,
    priority: &str,
) -> Result<TitleRow, String> {
    // Spaces around a field are the file's layout (`title, size_bytes`),
    // not part of the name: `foo.mp4 ` would lose its extension and its
    // format.
    let title = title.trim();
    validate_title(title)?;
    Ok(TitleRow {
        title: title.to_string(),
        size_bytes: parse_size(size)?,
        campaign: check_campaign(campaign)?,
        language: check_language(language)?,
        priority: parse_priority(priority)?,
    })
}

fn parse_priority(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|_| format!("priority {raw:?} is not a whole number"))
}

fn read_json_lines(
    input: &mut impl Read,
    file: &str,
    errors: &mut Vec<RowError>,
    accept: &mut Accept<'_>,
) -> Result<(), CatalogError> {
    let reader = BufReader::with_capacity(1 << 16, input);
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let raw = line.map_err(|source| CatalogError::Io {
            path: file.to_string(),
            source,
        })?;
        let push = |errors: &mut Vec<RowError>, reason: String| {
            errors.push(RowError {
                file: file.to_string(),
                line: line_no,
                reason,
            })
        };
        let Ok(text) = std::str::from_utf8(&raw) else {
            push(errors, "line is not valid UTF-8".into());
            continue;
        };
        // A byte-order mark (Windows tools write one) before the first line.
        let text = text.trim().trim_start_matches('\u{feff}');
        if text.is_empty() {
            continue;
        }
        match row_from_json(text) {
            Ok(row) => accept(line_no, row, errors)?,
            Err(reason) => push(errors, reason),
        }
    }
    Ok(())
}

fn row_from_json(text: &str) -> Result<TitleRow, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let obj = value.as_object().ok_or("a line must be a JSON object")?;
    if let Some(unknown) = obj.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?} (known fields: {})",
            COLUMNS.join(", ")
        ));
    }
    let text_field = |name: &str| -> Result<&str, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(""),
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(_) => Err(format!("{name} must be a string")),
        }
    };
    let title = match obj.get("title") {
        Some(serde_json::Value::String(s)) => s.trim(),
        None | Some(serde_json::Value::Null) => return Err("missing title".into()),
        Some(_) => return Err("title must be a string".into()),
    };
    validate_title(title)?;
    let size_bytes = match obj.get("size_bytes") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            Some(check_size(n.as_u64().ok_or_else(|| {
                format!("size_bytes {n} is not a whole number of bytes")
            })?)?)
        }
        Some(serde_json::Value::String(s)) => parse_size(s)?,
        Some(_) => return Err("size_bytes must be a number".into()),
    };
    let priority = match obj.get("priority") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| format!("priority {n} is not a whole number"))?,
        ),
        Some(serde_json::Value::String(s)) => parse_priority(s)?,
        Some(_) => return Err("priority must be a number".into()),
    };
    Ok(TitleRow {
        title: title.to_string(),
        size_bytes,
        campaign: check_campaign(text_field("campaign")?)?,
        language: check_language(text_field("language")?)?,
        priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn spaces_around_a_title_are_layout_and_a_bom_is_no_title() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CatalogStore::open_in_memory().unwrap();
        let csv = write(
            &dir,
            "t.csv",
            "title, size_bytes\nsample-title-000001.mp4 , 1000\n",
        );
        import_file(&mut store, &csv, |_| {}).unwrap();
        // Windows PowerShell 5 writes JSON Lines with a byte-order mark,
        // and a .txt extension says nothing of the format.
        let jsonl = write(
            &dir,
            "t.txt",
            "\u{feff}{\"title\": \"  sample-title-000002.mkv\", \"size_bytes\": 2000}\n",
        );
        let out = import_file(&mut store, &jsonl, |_| {}).unwrap();
        assert_eq!(out.added, 1);
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(
            store.find("sample-title-000001.mp4").unwrap().unwrap().size_bytes,
            Some(1000)
        );
        assert_eq!(
            store.find("sample-title-000002.mkv").unwrap().unwrap().size_bytes,
            Some(2000)
        );
        // The same titles with their spaces are the same titles.
        let again = write(
            &dir,
            "again.csv",
            "title,size_bytes\n  sample-title-000001.mp4,1000\n",
        );
        assert_eq!(import_file(&mut store, &again, |_| {}).unwrap().added, 0);
    }

    #[test]
    fn imports_csv_and_reimport_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "t.csv",
            "title,size_bytes,campaign,language\nsample-title-000001.mp4,1000,c1,en\n\"sample, quoted 2.mkv\",,,\n",
        );
        let mut store = CatalogStore::open_in_memory().unwrap();
        let out = import_file(&mut store, &p, |_| {}).unwrap();
        assert_eq!((out.rows, out.added, out.unchanged), (2, 2, 0));
        let again = import_file(&mut store, &p, |_| {}).unwrap();
        assert_eq!((again.rows, again.added, again.unchanged), (2, 0, 2));
        assert_eq!(store.count().unwrap(), 2);
        let imports: i64 = store
            .conn
            .query_row("SELECT count(*) FROM imports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(imports, 1);
        let r = store.find("sample, quoted 2.mkv").unwrap().unwrap();
        assert_eq!(r.size_bytes, None);
        assert_eq!(
            store
                .find("sample-title-000001.mp4")
                .unwrap()
                .unwrap()
                .language
                .as_deref(),
            Some("en")
        );
    }

    #[test]
    fn any_invalid_row_imports_nothing_and_every_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(256);
        let body = format!(
            "title,size_bytes\nok-1.mp4,10\n,5\na/b.mp4,1\nok-2.mp4,abc\nok-3.mp4,0\n{long},1\nok-1.mp4,10\n\"ctl\u{7}.mp4\",1\n"
        );
        let p = write(&dir, "bad.csv", &body);
        let mut store = CatalogStore::open_in_memory().unwrap();
        let Err(CatalogError::Invalid { errors, .. }) = import_file(&mut store, &p, |_| {}) else {
            panic!("expected invalid rows")
        };
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9], "{errors:#?}");
        assert!(errors[0].reason.contains("empty title"));
        assert!(errors[1].reason.contains("path separator"));
        assert!(errors[2].reason.contains("not a whole number"));
        assert!(errors[3].reason.contains("size_bytes is 0"));
        assert!(errors[4].reason.contains("255"));
        assert!(errors[5].reason.contains("duplicate title (first at line 2)"));
        assert!(errors[6].reason.contains("control character"));
        assert!(errors[0].to_string().starts_with(&format!("{}:3:", p.display())));
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn unknown_columns_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "c.csv", "title,colour\na.mp4,red\n");
        let mut store = CatalogStore::open_in_memory().unwrap();
        let Err(CatalogError::Invalid { errors, .. }) = import_file(&mut store, &p, |_| {}) else {
            panic!()
        };
        assert!(errors[0].reason.contains("unknown column \"colour\""));
        let p = write(&dir, "j.jsonl", "{\"title\":\"a.mp4\",\"colour\":1}\n");
        let Err(CatalogError::Invalid { errors, .. }) = import_file(&mut store, &p, |_| {}) else {
            panic!()
        };
        assert!(errors[0].reason.contains("unknown field \"colour\""));
    }

    #[test]
    fn imports_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "t.jsonl",
            "{\"title\":\"sample-title-000001.mp4\",\"size_bytes\":123}\n\n{\"title\":\"sample-title-000002.avi\",\"campaign\":\"c\",\"language\":\"nb\"}\n",
        );
        let mut store = CatalogStore::open_in_memory().unwrap();
        assert_eq!(import_file(&mut store, &p, |_| {}).unwrap().added, 2);
        assert_eq!(
            store.find("sample-title-000001.mp4").unwrap().unwrap().size_bytes,
            Some(123)
        );
        let p = write(
            &dir,
            "bad.jsonl",
            "{\"title\":\"ok.mp4\"}\nnot json\n{\"title\":5}\n{\"size_bytes\":3}\n",
        );
        let Err(CatalogError::Invalid { errors, .. }) = import_file(&mut store, &p, |_| {}) else {
            panic!()
        };
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn conflicting_reimport_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(&dir, "a.csv", "title,size_bytes\nx.mp4,10\n");
        let b = write(&dir, "b.csv", "title,size_bytes\nx.mp4,11\ny.mp4,1\n");
        let mut store = CatalogStore::open_in_memory().unwrap();
        import_file(&mut store, &a, |_| {}).unwrap();
        let Err(CatalogError::Invalid { errors, .. }) = import_file(&mut store, &b, |_| {}) else {
            panic!()
        };
        assert!(errors[0].reason.contains("different size"));
        assert!(store.find("y.mp4").unwrap().is_none());
    }
}
