//! `warnseed report …`: the ledger's aggregates per period and dimension,
//! with the catalogue's releases, as a table, CSV or JSON.

use crate::evidence::csv_field;
use anyhow::{anyhow, Result};
use serde::Serialize;
use warnseed_catalog::utc::{format_date, parse_time, MS_PER_DAY};
use warnseed_catalog::CatalogStore;
use warnseed_ledger::report::{self, Granularity, ReportRow, RollupSource};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?}: use table, csv or json")),
        }
    }
}

/// The UTC day window of `--from`/`--to` (inclusive; default: from the
/// first day with data, or today, to today).
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    first_day: Option<i64>,
    now_ms: i64,
) -> Result<(i64, i64)> {
    let today = now_ms.div_euclid(MS_PER_DAY);
    let (from_given, to_given) = (from.is_some(), to.is_some());
    let day = |t: &str, flag: &str| {
        // Reports count whole days; a time of day would be silently
        // rounded to its day.
        if warnseed_catalog::utc::has_time_of_day(t) {
            return Err(anyhow!(
                "{flag}: {t:?}: reports count whole UTC days; give a date like 2026-11-01"
            ));
        }
        parse_time(t)
            .map(|ms| ms.div_euclid(MS_PER_DAY))
            .map_err(|e| anyhow!("{flag}: {e}"))
    };
    let from = match from {
        Some(t) => day(t, "--from")?,
        None => first_day.unwrap_or(today).min(today),
    };
    let to = match to {
        Some(t) => day(t, "--to")?,
        None => today,
    };
    if to < from {
        match (from_given, to_given) {
            (true, true) => anyhow::bail!("--to is before --from"),
            (true, false) => anyhow::bail!("--from is after today ({})", format_date(today * MS_PER_DAY)),
            // The default start is the first day with data: a window that
            // ends before it is empty, not an error.
            (false, _) => return Ok((to, to)),
        }
    }
    Ok((from, to))
}

/// One output row: the ledger's figures and, for totals, the catalogue's.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub figures: ReportRow,
    /// A title's name, or a kommune's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoys_released: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoys_active: Option<u64>,
}

/// The rows for `dim`, with releases (totals) and names (titles) added.
pub fn rows(
    src: &mut dyn RollupSource,
    catalog: Option<&CatalogStore>,
    dim: &str,
    from: i64,
    to: i64,
    by: Granularity,
    name_of: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Row>> {
    let figures = report::report(src, dim, from, to, by).map_err(|e| anyhow!("report: {e}"))?;
    let mut out = Vec::with_capacity(figures.len());
    for f in figures {
        let (mut released, mut active) = (None, None);
        if dim == "all" {
            if let Some(c) = catalog {
                let (lo, hi) = period_bounds(&f.period, from, to);
                let (r, a) = c.releases_between(lo * MS_PER_DAY, (hi + 1) * MS_PER_DAY)?;
                released = Some(r);
                active = Some(a);
            }
        }
        let name = match dim {
            "title" => f
                .key
                .parse()
                .ok()
                .and_then(|id| catalog.and_then(|c| c.title_of(id).ok().flatten())),
            "kommune" => name_of(&f.key),
            _ => None,
        };
        out.push(Row {
            figures: f,
            name,
            decoys_released: released,
            decoys_active: active,
        });
    }
    Ok(out)
}

/// The days a row's period label covers, cut to the window.
fn period_bounds(label: &str, from: i64, to: i64) -> (i64, i64) {
    let parse = |s: &str| parse_time(s).ok().map(|ms| ms.div_euclid(MS_PER_DAY));
    let (lo, hi) = if let Some((a, b)) = label.split_once("..") {
        (parse(a), parse(b))
    } else if let Some((y, w)) = label.split_once("-W") {
        // ISO week: Monday of week 1 is the Monday on or before 4 January.
        let (y, w): (i64, i64) = (y.parse().unwrap_or(1970), w.parse().unwrap_or(1));
        let jan4 = parse(&format!("{y:04}-01-04")).unwrap_or(0);
        let monday = jan4 - (jan4 + 3).rem_euclid(7) + (w - 1) * 7;
        (Some(monday), Some(monday + 6))
    } else {
        match label.len() {
            10 => (parse(label), parse(label)),
            7 => {
                let first = parse(&format!("{label}-01"));
                let next = first.map(|d| {
                    let mut n = d + 28;
                    while format_date(n * MS_PER_DAY)[..7] == label[..] {
                        n += 1;
                    }
                    n - 1
                });
                (first, next)
            }
            4 => (parse(&format!("{label}-01-01")), parse(&format!("{label}-12-31"))),
            _ => (None, None),
        }
    };
    (lo.unwrap_or(from).max(from), hi.unwrap_or(to).min(to))
}

fn columns(dim: &str, rows: &[Row]) -> Vec<&'static str> {
    let mut c = vec!["period"];
    if dim != "all" {
        c.push(match dim {
            "country" => "country",
            "kommune" => "kommune",
            "title" => "decoy",
            "client" => "client",
            _ => "network",
        });
    }
    if rows.iter().any(|r| r.name.is_some()) {
        c.push("name");
    }
    c.extend(["downloads_started", "files_delivered", "bytes_sent"]);
    if rows.iter().any(|r| r.figures.unique_ips.is_some()) {
        c.push("unique_ips");
    }
    if dim == "all" {
        c.extend(["delivered_ips", "repeat_ips"]);
        if rows.iter().any(|r| r.decoys_released.is_some()) {
            c.extend(["decoys_released", "decoys_active"]);
        }
    }
    c
}

fn cell(r: &Row, column: &str) -> String {
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let optu = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    match column {
        "period" => r.figures.period.clone(),
        "name" => r.name.clone().unwrap_or_default(),
        "downloads_started" => r.figures.downloads_started.to_string(),
        "files_delivered" => r.figures.files_delivered.to_string(),
        "bytes_sent" => r.figures.bytes_sent.to_string(),
        "unique_ips" => opt(r.figures.unique_ips),
        "repeat_ips" => opt(r.figures.repeat_ips),
        "delivered_ips" => opt(r.figures.delivered_ips),
        "decoys_released" => optu(r.decoys_released),
        "decoys_active" => optu(r.decoys_active),
        _ => r.figures.key.clone(),
    }
}

/// Renders rows; `footer` lines go under a table only.
pub fn render(dim: &str, rows: &[Row], format: Format, footer: &[String]) -> Result<String> {
    let cols = columns(dim, rows);
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Csv => {
            let mut out = cols.join(",") + "\n";
            for r in rows {
                let line: Vec<String> = cols.iter().map(|c| csv_field(&cell(r, c))).collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| cols.iter().map(|c| cell(r, c)).collect())
                .collect();
            let width = |i: usize| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([cols[i].len()])
                    .max()
                    .unwrap_or(0)
            };
            let widths: Vec<usize> = (0..cols.len()).map(width).collect();
            let numeric = |c: &str| {
                !matches!(
                    c,
                    "period" | "name" | "country" | "kommune" | "client" | "network"
                )
            };
            let line = |vals: Vec<String>| {
                vals.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if numeric(cols[i]) {
                            format!("{v:>w$}", w = widths[i])
                        } else {
                            format!("{v:<w$}", w = widths[i])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let mut out = line(cols.iter().map(|c| c.to_string()).collect()) + "\n";
            for r in cells {
                out.push_str(&line(r));
                out.push('\n');
            }
            if rows.is_empty() {
                out.push_str("(no downloads in this window)\n");
            }
            for f in footer {
                out.push_str(f);
                out.push('\n');
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_windows_are_whole_days_and_an_empty_one_is_no_error() {
        let day = |t: &str| parse_time(t).unwrap().div_euclid(MS_PER_DAY);
        let now = parse_time("2026-11-30T12:00:00Z").unwrap();
        let first = Some(day("2026-06-01"));
        assert_eq!(
            window(Some("2026-11-01"), Some("2026-11-07"), first, now).unwrap(),
            (day("2026-11-01"), day("2026-11-07"))
        );
        assert_eq!(
            window(None, None, first, now).unwrap(),
            (day("2026-06-01"), day("2026-11-30"))
        );
        // A time of day is refused, not rounded to its day.
        let err = window(Some("2026-11-01T12:00:00Z"), None, first, now).unwrap_err();
        assert!(err.to_string().contains("whole UTC days"), "{err}");
        // Before the first day with data: an empty window, not "--to is
        // before --from" about a --from nobody gave.
        assert_eq!(
            window(None, Some("2025-12-31"), first, now).unwrap(),
            (day("2025-12-31"), day("2025-12-31"))
        );
        let err = window(Some("2026-12-05"), None, first, now).unwrap_err();
        assert!(err.to_string().contains("after today"), "{err}");
        let err = window(Some("2026-11-05"), Some("2026-11-01"), first, now).unwrap_err();
        assert!(err.to_string().contains("--to is before --from"), "{err}");
    }
}
