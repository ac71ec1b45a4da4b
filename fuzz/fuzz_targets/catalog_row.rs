//! Fuzzes catalogue input: `warnseed_catalog::validate_title` and
//! `import_file` on arbitrary file contents.
//!
//! The first input byte picks what the rest is used as (low two bits: 0 a
//! title, 1 a CSV file, 2 a JSON Lines file, 3 all three):
//! 1. as a title (UTF-8, lossily repaired): `validate_title` never panics,
//!    and an accepted title meets every rule it documents (not blank, no
//!    whitespace around it, at most 255 bytes, no `/` or `\`, no control
//!    character, not `.` or `..`). An
//!    accepted title is then written as a one-row CSV file (RFC 4180 quoted)
//!    and as a one-line JSON Lines file; importing each must add exactly that
//!    title, byte for byte;
//! 2. as the contents of `<tmp>/fuzz.csv`, and
//! 3. as the contents of `<tmp>/fuzz.jsonl`, each imported into a fresh
//!    `CatalogStore::open_in_memory()`.
//!
//! For imports: `import_file` returns (Ok or Err, never panics), and the
//! documented all-or-nothing rules hold: on Ok, rows = added + unchanged and
//! the store holds exactly the added titles, each valid; on Err nothing is
//! stored, and an `Invalid` error lists as many row errors as it counts,
//! each on a line >= 1; re-importing a file that imported fine changes
//! nothing; progress reports never go backwards or past the file size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use warnseed_catalog::{import_file, validate_title, CatalogError, CatalogStore, MAX_TITLE_BYTES};

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warnseed-fuzz-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

fn write_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

fn titles(store: &CatalogStore) -> Vec<String> {
    let mut out = Vec::new();
    store.for_each(|r| out.push(r.title)).expect("read back titles");
    out
}

/// Imports `path` into a fresh store and checks the all-or-nothing rules.
/// Returns the stored titles when the import succeeded.
fn import_and_check(path: &Path, file_len: u64) -> Option<Vec<String>> {
    let mut store = CatalogStore::open_in_memory().expect("in-memory store");
    let mut last = 0u64;
    let result = import_file(&mut store, path, |read| {
        assert!(read >= last, "progress went back from {last} to {read}");
        assert!(read <= file_len, "progress {read} past the file size {file_len}");
        last = read;
    });
    let count = store.count().expect("count");
    match result {
        Ok(out) => {
            assert_eq!(out.rows, out.added + out.unchanged, "{out:?}");
            assert_eq!(out.unchanged, 0, "a fresh store has nothing unchanged: {out:?}");
            assert_eq!(count, out.added, "{out:?}");
            let stored = titles(&store);
            assert_eq!(stored.len() as u64, count);
            for t in &stored {
                assert!(validate_title(t).is_ok(), "stored an invalid title {t:?}");
            }
            // Importing the same file again changes nothing.
            let again = import_file(&mut store, path, |_| {}).expect("re-import of a good file");
            assert_eq!(again.added, 0, "{again:?}");
            assert_eq!(again.rows, out.rows, "{again:?}");
            assert_eq!(again.unchanged, out.rows, "{again:?}");
            assert_eq!(store.count().expect("count"), count);
            Some(stored)
        }
        Err(e) => {
            assert_eq!(count, 0, "a failed import stored {count} titles: {e}");
            if let CatalogError::Invalid { invalid, errors, .. } = &e {
                assert!(*invalid > 0 && *invalid == errors.len(), "{e}");
                for err in errors {
                    assert!(err.line >= 1, "{err}");
                    let _ = err.to_string();
                }
            }
            let _ = e.to_string();
            None
        }
    }
}

fn check_title(title: &str) {
    let Ok(()) = validate_title(title) else { return };
    assert!(!title.trim().is_empty());
    assert_eq!(title.trim(), title, "an accepted title has no whitespace around it");
    assert!(title.len() <= MAX_TITLE_BYTES);
    assert!(!title.contains(['/', '\\']));
    assert!(!title.chars().any(char::is_control));
    assert!(title != "." && title != "..");

    // A valid title survives both file formats exactly.
    let csv = format!("title\n\"{}\"\n", title.replace('"', "\"\""));
    let path = write_file("title.csv", csv.as_bytes());
    let stored = import_and_check(&path, csv.len() as u64);
    assert_eq!(stored.as_deref(), Some(&[title.to_string()][..]), "CSV round trip of {title:?}");

    let json = format!("{{\"title\":{}}}\n", serde_json::to_string(title).unwrap());
    let path = write_file("title.jsonl", json.as_bytes());
    let stored = import_and_check(&path, json.len() as u64);
    assert_eq!(stored.as_deref(), Some(&[title.to_string()][..]), "JSON Lines round trip of {title:?}");
}

fuzz_target!(|data: &[u8]| {
    // Opening a store and importing costs far more than the checks, so the
    // first byte picks one use per run (3 = all of them).
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 3 == 0 || mode & 3 == 3 {
        let title = String::from_utf8_lossy(rest);
        if let Err(reason) = validate_title(&title) {
            assert!(!reason.is_empty());
        }
        check_title(&title);
    }
    for (bit, name) in [(1, "fuzz.csv"), (2, "fuzz.jsonl")] {
        if mode & bit != 0 {
            let path = write_file(name, rest);
            import_and_check(&path, rest.len() as u64);
        }
    }
});
