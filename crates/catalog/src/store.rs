//! `catalog.sqlite`: titles, imports, and the cached info hash per title.

use crate::CatalogError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// A stored title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TitleRecord {
    pub id: i64,
    pub title: String,
    pub size_bytes: Option<u64>,
    pub campaign: Option<String>,
    pub language: Option<String>,
    /// What the cached info hash was computed for (payload and rules).
    pub content_key: Option<[u8; 32]>,
    pub info_hash: Option<[u8; 20]>,
}

pub struct CatalogStore {
    pub(crate) conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    rows INTEGER NOT NULL,
    added INTEGER NOT NULL,
    imported_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS titles (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL UNIQUE,
    size_bytes INTEGER,
    campaign TEXT,
    language TEXT,
    import_id INTEGER NOT NULL REFERENCES imports(id),
    source_line INTEGER NOT NULL,
    content_key BLOB,
    info_hash BLOB
);
";

/// Columns added after the first schema, with their definitions: added to
/// an older catalogue when it is opened.
const ADDED_COLUMNS: [(&str, &str); 1] = [("priority", "INTEGER")];

impl CatalogStore {
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::prepare(conn)
    }

    pub fn open_in_memory() -> Result<Self, CatalogError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    fn prepare(conn: Connection) -> Result<Self, CatalogError> {
        conn.execute_batch(SCHEMA)?;
        for (column, definition) in ADDED_COLUMNS {
            let present: bool = conn.query_row(
                "SELECT count(*) FROM pragma_table_info('titles') WHERE name = ?1",
                [column],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE titles ADD COLUMN {column} {definition}"))?;
            }
        }
        conn.execute_batch(crate::schedule::SCHEMA)?;
        Ok(Self { conn })
    }

    /// The highest catalogue id, `None` for an empty catalogue. Ids only
    /// grow, so a running node compares it with its table's to notice an
    /// import (one B-tree probe).
    pub fn max_id(&self) -> Result<Option<i64>, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT max(id) FROM titles", [], |r| r.get(0))?)
    }

    pub fn count(&self) -> Result<u64, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM titles", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn find(&self, title: &str) -> Result<Option<TitleRecord>, CatalogError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, title, size_bytes, campaign, language, content_key, info_hash FROM titles WHERE title = ?1",
                [title],
                row_to_record,
            )
            .optional()?)
    }

    /// The title with catalogue id `id`.
    pub fn title_of(&self, id: i64) -> Result<Option<String>, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT title FROM titles WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// Calls `f` for every title in catalogue order, streaming.
    pub fn for_each(&self, mut f: impl FnMut(TitleRecord)) -> Result<(), CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, title, size_bytes, campaign, language, content_key, info_hash FROM titles ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(row_to_record(row)?);
        }
        Ok(())
    }

    /// Records computed info hashes, in one transaction.
    pub fn store_info_hashes(&mut self, computed: &[(i64, [u8; 32], [u8; 20])]) -> Result<(), CatalogError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE titles SET content_key = ?2, info_hash = ?3 WHERE id = ?1")?;
            for (id, key, hash) in computed {
                stmt.execute(params![id, &key[..], &hash[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn blob<const N: usize>(v: Option<Vec<u8>>) -> Option<[u8; N]> {
    v.and_then(|b| b.try_into().ok())
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TitleRecord> {
    Ok(TitleRecord {
        id: r.get(0)?,
        title: r.get(1)?,
        size_bytes: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
        campaign: r.get(3)?,
        language: r.get(4)?,
        content_key: blob(r.get(5)?),
        info_hash: blob(r.get(6)?),
    })
}
