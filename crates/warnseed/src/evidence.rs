//! Writing an evidence export as JSON (the checkable form), CSV (for
//! spreadsheets) and a printable HTML page.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use warnseed_catalog::utc::format_time;
use warnseed_ledger::{Evidence, EvidenceCheck};

pub const JSON_FILE: &str = "evidence.json";
pub const CSV_FILE: &str = "evidence.csv";
pub const HTML_FILE: &str = "evidence.html";

const CSV_COLUMNS: &str = "seq,kind,started_at_utc,ended_at_utc,started_at_ms,ended_at_ms,remote_ip,remote_port,\
network,decoy_id,title,info_hash,client_name,client_version,peer_id,transport,bytes_sent,pieces_sent,piece_count,\
peer_pieces_initial,peer_pieces_final,completed,close_reason,session_key,ip_salt,ip_commitment,prev_hash,\
record_hash,seal,leaf_index,tree_size,merkle_path";

pub fn csv_field(s: &str) -> String {
    // Quote everything that could break a row, and neutralise leading
    // characters spreadsheets would run as a formula.
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes the three files into `dir`; `titles` names decoys (informative:
/// titles are not part of the chain, the info hash is).
pub fn write(
    dir: &Path,
    e: &Evidence,
    check: &EvidenceCheck,
    titles: &HashMap<i64, String>,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let title = |id: i64| titles.get(&id).cloned().unwrap_or_default();
    let json = dir.join(JSON_FILE);
    write_atomic(&json, &serde_json::to_vec_pretty(e)?)?;

    let mut csv = String::from(CSV_COLUMNS);
    csv.push('\n');
    for r in &e.records {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let fields = [
            r.seq.to_string(),
            r.kind.clone(),
            format_time_ms(r.started_at_ms),
            format_time_ms(r.ended_at_ms),
            r.started_at_ms.to_string(),
            r.ended_at_ms.to_string(),
            opt(&r.remote_ip),
            r.remote_port.to_string(),
            r.network.clone(),
            r.decoy_id.to_string(),
            title(r.decoy_id),
            r.info_hash.clone(),
            opt(&r.client_name),
            opt(&r.client_version),
            opt(&r.peer_id),
            r.transport.clone(),
            r.bytes_sent.to_string(),
            r.pieces_sent.to_string(),
            r.piece_count.to_string(),
            r.peer_pieces_initial.map(|n| n.to_string()).unwrap_or_default(),
            r.peer_pieces_final.to_string(),
            r.completed.to_string(),
            r.close_reason.clone(),
            r.session_key.to_string(),
            opt(&r.ip_salt),
            r.ip_commitment.clone(),
            r.prev_hash.clone(),
            r.record_hash.clone(),
            r.proof.seal.to_string(),
            r.proof.leaf_index.to_string(),
            r.proof.tree_size.to_string(),
            r.proof.path.join(";"),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    let csv_path = dir.join(CSV_FILE);
    write_atomic(&csv_path, csv.as_bytes())?;

    let html_path = dir.join(HTML_FILE);
    write_atomic(&html_path, html(e, check, &title).as_bytes())?;
    Ok(vec![json, csv_path, html_path])
}

/// Times with milliseconds, as the ledger holds them.
pub fn format_time_ms(ms: i64) -> String {
    let t = format_time(ms);
    format!("{}.{:03}Z", t.trim_end_matches('Z'), ms.rem_euclid(1000))
}

fn html(e: &Evidence, check: &EvidenceCheck, title: &dyn Fn(i64) -> String) -> String {
    let mut h = String::new();
    let completed = e
        .records
        .iter()
        // A seed reconnecting ends "complete" too; only downloads deliver.
        .filter(|r| {
            r.kind != "open" && r.completed && r.peer_pieces_initial.is_none_or(|p| p < r.piece_count)
        })
        .count();
    let sent: i64 = e
        .records
        .iter()
        // Close records and one-record sessions hold what a session sent.
        .filter(|r| r.kind != "open")
        .map(|r| r.bytes_sent)
        .sum();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>warnseed evidence: {ip}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;font-size:11pt}} table{{border-collapse:collapse;width:100%}}\
         td,th{{border:1px solid #999;padding:3px 5px;text-align:left;vertical-align:top}}\
         .hash{{font-family:monospace;font-size:8pt;word-break:break-all}} @media print{{body{{margin:0}}}}\
         </style></head><body>\n<h1>Evidence export: {ip}</h1>\n<table>\
         <tr><th>address or range</th><td>{ip}</td></tr>\
         <tr><th>window (UTC)</th><td>{from} – {to}</td></tr>\
         <tr><th>node</th><td class=\"hash\">{node}</td></tr>\
         <tr><th>generated (UTC)</th><td>{gen}</td></tr>\
         <tr><th>records</th><td>{n} ({completed} completed downloads, {sent} bytes sent)</td></tr>\
         <tr><th>newest seal</th><td>{seal_at} <span class=\"hash\">{seal}</span></td></tr>\
         <tr><th>clock at that seal</th><td>{clock}</td></tr>\
         <tr><th>offline check</th><td>passed when written: every record hash, address commitment and \
         Merkle path, and {seals} seal(s)</td></tr></table>\n",
        ip = html_escape(&e.ip),
        from = format_time_ms(e.from_ms.max(0)),
        to = if e.to_ms == i64::MAX { "now".into() } else { format_time_ms(e.to_ms) },
        node = html_escape(&e.node_id),
        gen = format_time_ms(e.generated_at_ms),
        n = e.records.len(),
        seal_at = check.newest_seal_at_ms.map(format_time_ms).unwrap_or_else(|| "none".into()),
        seal = check.newest_seal_hash.as_deref().unwrap_or(""),
        clock = e
            .seals
            .last()
            .map(|s| match s.clock_synced {
                Some(true) => format!(
                    "synchronised ({}; max error {} µs)",
                    html_escape(&s.clock_source),
                    s.clock_max_error_us.unwrap_or(-1)
                ),
                Some(false) => format!("not synchronised ({})", html_escape(&s.clock_source)),
                None => "unknown".into(),
            })
            .unwrap_or_else(|| "unknown".into()),
        seals = check.seals,
    );
    h.push_str(
        "<h2>Records</h2>\n<table><tr><th>#</th><th>record</th><th>start (UTC)</th><th>end (UTC)</th>\
         <th>address</th><th>port</th><th>client</th><th>file</th><th>bytes sent</th><th>completed</th>\
         <th>end reason</th></tr>\n",
    );
    for r in &e.records {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}<br><span class=\"hash\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.seq,
            html_escape(&r.kind),
            format_time_ms(r.started_at_ms),
            if r.kind != "open" {
                format_time_ms(r.ended_at_ms)
            } else {
                "(opened)".into()
            },
            html_escape(r.remote_ip.as_deref().unwrap_or("")),
            r.remote_port,
            html_escape(r.client_name.as_deref().unwrap_or("unknown")),
            html_escape(&title(r.decoy_id)),
            r.info_hash,
            r.bytes_sent,
            if r.completed { "yes" } else { "no" },
            html_escape(&r.close_reason),
        );
    }
    h.push_str("</table>\n<h2>Proof</h2>\n<table><tr><th>#</th><th>record hash</th><th>seal</th></tr>\n");
    for r in &e.records {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"hash\">{}</td><td>{} (leaf {} of {})</td></tr>",
            r.seq, r.record_hash, r.proof.seal, r.proof.leaf_index, r.proof.tree_size
        );
    }
    h.push_str(
        "</table>\n<h2>How to check this export</h2>\n<p>Each record is one session of a BitTorrent client \
         with a decoy whose only content is a police warning, as the node registered it. Every record's hash \
         covers all its fields and the hash of the record before it; the address enters as a salted SHA-256 \
         commitment. Seals, made every minute, commit to the records since the previous seal by a Merkle \
         root and are chained to each other. <code>warnseed ledger verify-export evidence.json</code> \
         recomputes every record hash, address commitment and Merkle path, and the seals' hashes and links, \
         without the database. Compare the newest seal hash above with one obtained independently (for \
         example, logged by the node and handed over earlier).</p>\n</body></html>\n",
    );
    h
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path_for(path);
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| commit_temp(&tmp, path));
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written
}

/// Where a file is written before it replaces `path`: hidden beside it,
/// named for this process, so it never takes the name of a file the user
/// keeps there (`report.csv` once went through `report.tmp`).
pub fn temp_path_for(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.part", std::process::id()))
}

/// Makes the finished `tmp` durable and puts it in `path`'s place: an
/// export handed over as evidence is either whole or absent after a crash.
pub fn commit_temp(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_leaves_the_users_files_and_no_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("evidence.json");
        // A file of the user's that the old temporary name would have taken.
        std::fs::write(dir.path().join("evidence.tmp"), b"mine").unwrap();
        write_atomic(&out, b"{}").unwrap();
        write_atomic(&out, b"{\"again\": 1}").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{\"again\": 1}");
        assert_eq!(std::fs::read(dir.path().join("evidence.tmp")).unwrap(), b"mine");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A write that cannot finish leaves nothing behind either.
        assert!(write_atomic(&dir.path().join("missing").join("x.json"), b"{}").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
