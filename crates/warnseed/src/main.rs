//! warnseed: publish warning decoys under catalogue titles on BitTorrent and
//! register every peer that downloads one.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "warnseed",
    version,
    about = "Seed warning decoys on peer-to-peer networks and register every download"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `warnseed_seeder=debug`.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory with warnseed.toml and empty databases.
    Init {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
    },
    /// Manage the catalogue of titles.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Export decoys as .torrent files, magnet links or a tracker whitelist.
    Decoys {
        #[command(subcommand)]
        command: DecoysCommand,
    },
    /// Build and inspect the warning payloads (video, stills, zip, PDF, text).
    Payload {
        #[command(subcommand)]
        command: PayloadCommand,
    },
    /// Run the node: seed every decoy until SIGINT/SIGTERM.
    Run(RunArgs),
    /// What the node running on this data directory is doing: listen
    /// addresses, decoys, and each tracker's state.
    Status {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The campaign schedule: releases, retirements, what comes next.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Check the ledger's hash chain.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Figures from the ledger.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Fleet mode: this node's ledger in the fleet's PostgreSQL.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Import titles from CSV (header row) or JSON Lines files.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value = "./node")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum PayloadCommand {
    /// Render every variant and write it, at its smallest size, to --out
    /// (default: the node's payloads/ directory, which `run` then uses).
    Build {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        /// Languages, comma-separated (default: payload.languages).
        #[arg(long, value_delimiter = ',')]
        lang: Option<Vec<String>>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The payload set this node serves: variants, sizes, titles per variant.
    List {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// One `<info hash>.torrent` per decoy in --out (a directory), plus index.tsv.
    Torrent,
    /// One magnet link per line in --out (a file, `-` for stdout).
    Magnet,
    /// One hex info hash per line (opentracker's access.whitelist format).
    Whitelist,
    /// Every decoy's bytes, as a file named by its title, in --out (a
    /// directory); zero padding is written sparse.
    Files,
}

#[derive(Subcommand)]
enum DecoysCommand {
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        /// Tracker URLs written into .torrent files and magnet links
        /// (default: the node's configured trackers).
        #[arg(long = "tracker")]
        trackers: Vec<String>,
        /// Peer addresses (host:port) added to magnet links as x.pe.
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Also write the info hashes to this file (opentracker whitelist).
        #[arg(long)]
        whitelist: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The node's data directory (created if missing).
    #[arg(long, default_value = "./node")]
    data: PathBuf,
    /// Address to accept peers on (repeatable; default from warnseed.toml).
    #[arg(long)]
    listen: Vec<String>,
    /// http:// or udp:// tracker to announce every decoy to (repeatable;
    /// default from warnseed.toml).
    #[arg(long = "tracker")]
    trackers: Vec<String>,
    /// Keep the DHT node off even if warnseed.toml turns it on.
    #[arg(long)]
    no_dht: bool,
    /// Import this catalogue file before starting.
    #[arg(long)]
    catalog: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Released today, active, retired, unreleased, and the next releases.
    Status {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
        /// How many upcoming releases to list.
        #[arg(long, default_value_t = 10)]
        next: usize,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Every record of one address or range in a time window, with the
    /// proofs that tie each to the ledger: evidence.json, evidence.csv and a
    /// printable evidence.html.
    Export {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        /// An address (203.0.113.7, 2001:db8::1) or CIDR range.
        #[arg(long)]
        ip: String,
        /// UTC start of the window (2026-11-01 or 2026-11-01T08:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// UTC end of the window, inclusive: a date is the whole day,
        /// 2026-11-30T23:59Z the whole minute.
        #[arg(long)]
        to: Option<String>,
        /// Directory the three files go to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace raw addresses older than an age by a keyed pseudonym (or
    /// erase them); the chain still verifies and the figures stay.
    Retain {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        /// Age (`400d`, `12h`…); default: ledger.ip_retention.
        #[arg(long)]
        older_than: Option<String>,
        /// `pseudonym` or `erase`; default: ledger.ip_retention_mode.
        #[arg(long)]
        mode: Option<String>,
    },
    /// Closed sessions as CSV with every address replaced by its keyed
    /// pseudonym (HMAC-SHA256 under the operator's key), for statistics
    /// and research.
    ExportPseudonymised {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// First UTC day (2026-01-01); default: the first.
        #[arg(long)]
        from: Option<String>,
        /// Last UTC day, inclusive; default: today.
        #[arg(long)]
        to: Option<String>,
    },
    /// Check an evidence.json offline, without the database. Exits 1 if
    /// anything in it does not check out.
    VerifyExport {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// A seal hash held independently (logged by the node, handed over
        /// earlier): it must be in the export; says which records it covers.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Walk the whole hash chain; name the first missing, altered or
    /// inserted record. Exits 1 if there is one.
    Verify {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Decoys active, sessions, completed downloads, unique IPs, bytes sent,
    /// and the campaign's figures in one sentence.
    Summary {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
        /// First UTC day of the window (2026-01-01; default: the first day
        /// with data).
        #[arg(long)]
        from: Option<String>,
    },
    /// Per period: downloads started, files delivered, bytes, unique IPs,
    /// repeat downloaders, decoys released and active.
    Totals(ReportArgs),
    /// Per country (ISO code; `unknown` where the database has none).
    Countries(ReportArgs),
    /// Per Norwegian municipality, and how many of the 357 had a download.
    Kommuner(ReportArgs),
    /// Per decoy title.
    Titles(ReportArgs),
    /// Per client software (without its version).
    Clients(ReportArgs),
    /// Per network (bittorrent).
    Networks(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    #[arg(long, default_value = "./node")]
    data: PathBuf,
    /// First UTC day (2026-01-01; reports count whole days); default: the
    /// first day with data.
    #[arg(long)]
    from: Option<String>,
    /// Last UTC day, inclusive; default: today.
    #[arg(long)]
    to: Option<String>,
    /// day, week (ISO), month, year or total.
    #[arg(long, default_value = "total")]
    by: String,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// sqlite (this node's ledger) or postgres (the fleet's, `[fleet]`).
    #[arg(long, default_value = "sqlite")]
    store: String,
}

fn main() {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = dispatch(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init { data } => commands::init(&data),
        Command::Catalog {
            command: CatalogCommand::Import { files, data },
        } => commands::catalog_import(&data, &files),
        Command::Decoys {
            command:
                DecoysCommand::Export {
                    format,
                    out,
                    data,
                    trackers,
                    peers,
                    whitelist,
                },
        } => commands::export(&data, format, &out, trackers, &peers, whitelist.as_deref()),
        Command::Payload {
            command: PayloadCommand::Build { data, lang, out },
        } => commands::payload_build(&data, lang, out),
        Command::Payload {
            command: PayloadCommand::List { data, json },
        } => commands::payload_list(&data, json),
        Command::Run(args) => commands::run(args),
        Command::Status { data, json } => commands::status(&data, json),
        Command::Schedule {
            command: ScheduleCommand::Status { data, json, next },
        } => commands::schedule_status(&data, json, next),
        Command::Ledger {
            command: LedgerCommand::Verify { data, json },
        } => commands::ledger_verify(&data, json),
        Command::Ledger {
            command:
                LedgerCommand::Export {
                    data,
                    ip,
                    from,
                    to,
                    out,
                },
        } => commands::ledger_export(&data, &ip, from.as_deref(), to.as_deref(), &out),
        Command::Ledger {
            command: LedgerCommand::VerifyExport { file, json, anchor },
        } => commands::ledger_verify_export(&file, json, anchor.as_deref()),
        Command::Ledger {
            command:
                LedgerCommand::Retain {
                    data,
                    older_than,
                    mode,
                },
        } => commands::ledger_retain(&data, older_than.as_deref(), mode.as_deref()),
        Command::Ledger {
            command: LedgerCommand::ExportPseudonymised { data, out, from, to },
        } => commands::ledger_export_pseudonymised(&data, &out, from.as_deref(), to.as_deref()),
        Command::Report {
            command: ReportCommand::Summary { data, json, from },
        } => commands::report_summary(&data, json, from.as_deref()),
        Command::Report { command } => {
            let (dim, a) = match command {
                ReportCommand::Totals(a) => ("all", a),
                ReportCommand::Countries(a) => ("country", a),
                ReportCommand::Kommuner(a) => ("kommune", a),
                ReportCommand::Titles(a) => ("title", a),
                ReportCommand::Clients(a) => ("client", a),
                ReportCommand::Networks(a) => ("network", a),
                ReportCommand::Summary { .. } => unreachable!("matched above"),
            };
            commands::report_figures(
                &a.data,
                dim,
                a.from.as_deref(),
                a.to.as_deref(),
                &a.by,
                &a.format,
                &a.store,
            )
        }
        Command::Fleet {
            command: FleetCommand::Status { data, json },
        } => commands::fleet_status(&data, json),
        Command::Fleet {
            command: FleetCommand::Push { data },
        } => commands::fleet_push(&data),
    }
}

#[derive(Subcommand)]
enum FleetCommand {
    /// How far this node's ledger has reached the fleet's PostgreSQL: the
    /// records there against the local head, and the forwarder's state.
    Status {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Forward every record not yet in the fleet's PostgreSQL now, and exit
    /// (a running node does this by itself; safe beside it).
    Push {
        #[arg(long, default_value = "./node")]
        data: PathBuf,
    },
}
