//! `warnseed.toml`: the node's configuration, kept in its data directory.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "warnseed.toml";
pub const CATALOG_DB: &str = "catalog.sqlite";
pub const LEDGER_DB: &str = "ledger.sqlite";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub payload: PayloadConfig,
    #[serde(default)]
    pub peer: PeerConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// TCP addresses the peer server listens on.
    pub listen: Vec<String>,
    /// HTTP trackers every decoy is announced to.
    pub trackers: Vec<String>,
    /// Run a mainline DHT node and announce every decoy through it.
    pub dht: bool,
    /// UDP address of the DHT node.
    #[serde(default = "default_dht_listen")]
    pub dht_listen: String,
    /// UDP address of the IPv6 DHT node (BEP 32); `""`: none.
    #[serde(default = "default_dht_listen6")]
    pub dht_listen6: String,
    /// `host:port` of DHT nodes to join through. The default is the usual
    /// public routers, used only when `dht = true`.
    #[serde(default = "default_dht_bootstrap")]
    pub dht_bootstrap: Vec<String>,
    /// Every decoy is announced to the DHT once per this many seconds,
    /// spread evenly.
    #[serde(default = "default_dht_announce_interval")]
    pub dht_announce_interval_secs: u64,
}

fn default_dht_listen() -> String {
    "0.0.0.0:6881".into()
}

fn default_dht_listen6() -> String {
    "[::]:6881".into()
}

fn default_dht_bootstrap() -> Vec<String> {
    [
        "router.bittorrent.com:6881",
        "dht.transmissionbt.com:6881",
        "router.utorrent.com:6881",
    ]
    .map(String::from)
    .to_vec()
}

fn default_dht_announce_interval() -> u64 {
    30 * 60
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:6881".into()],
            trackers: Vec::new(),
            dht: false,
            dht_listen: default_dht_listen(),
            dht_listen6: default_dht_listen6(),
            dht_bootstrap: default_dht_bootstrap(),
            dht_announce_interval_secs: default_dht_announce_interval(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PayloadConfig {
    /// Languages of the warning, in the order shown (built in: `en`, `nb`;
    /// more with `scripts`).
    pub languages: Vec<String>,
    /// Extra warning scripts (TOML: lang, heading, body, help, url); a
    /// script for a built-in language replaces it.
    pub scripts: Vec<PathBuf>,
    /// Replaces the help URL of every script.
    pub help_url: Option<String>,
    /// A still image (PNG or JPEG) shown beside the text.
    pub image: Option<PathBuf>,
    /// A finished warning video (MP4, Matroska or AVI), used as-is for every
    /// video title instead of the rendered one.
    pub video: Option<PathBuf>,
    /// Seconds each language's slide is shown (the video is kept 10–30 s).
    pub seconds_per_slide: Option<u32>,
    /// One file served for every title whatever its extension, padded
    /// after its end (replaces every rendered variant).
    pub file: Option<PathBuf>,
    /// Padding: `zeros` (shared pieces, cheapest) or `unique` (keyed
    /// pseudo-random bytes per decoy; piece hashes kept in piece-hashes.bin).
    pub fill: warnseed_payload::FillMode,
    /// Mixed into `unique` fill keys; nodes of one fleet share it so they
    /// serve identical decoys.
    pub fill_secret: Option<String>,
}

impl Default for PayloadConfig {
    fn default() -> Self {
        Self {
            languages: vec!["en".into(), "nb".into()],
            scripts: Vec::new(),
            help_url: None,
            image: None,
            video: None,
            seconds_per_slide: None,
            file: None,
            fill: warnseed_payload::FillMode::Zeros,
            fill_secret: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// BEP 10 `v` string sent to peers.
    pub client_version: String,
    /// Start of our 20-byte peer id (Azureus style, e.g. `-WS0100-`).
    #[serde(default = "default_peer_id_prefix")]
    pub peer_id_prefix: String,
    /// Peers uploaded to at once; the rest wait choked.
    pub upload_slots: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            client_version: warnseed_seeder::DEFAULT_CLIENT_VERSION.into(),
            peer_id_prefix: default_peer_id_prefix(),
            upload_slots: 1_000,
            max_connections: 20_000,
            max_connections_per_ip: 16,
        }
    }
}

fn default_peer_id_prefix() -> String {
    warnseed_seeder::DEFAULT_PEER_ID_PREFIX.into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Longest a finished session waits before its batch is committed.
    pub batch_window_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { batch_window_ms: 100 }
    }
}

/// The campaign schedule: how many decoys are released a day, in what
/// order, and how long each stays published.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// New decoys released per UTC day.
    pub daily_quota: u64,
    /// How long a decoy stays published (`90d`, `12h`, `30m`, `45s`), or
    /// `never`.
    pub lifetime: String,
    /// `catalogue` (import order), `priority` (the catalogue's priority
    /// column, highest first) or `random` (a fixed shuffle).
    pub order: String,
    /// UTC time of the first release (`2026-12-01` or
    /// `2026-12-01T06:00:00Z`); none: at once.
    pub start: Option<String>,
    /// UTC time the campaign ends: every decoy retires.
    pub stop: Option<String>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            daily_quota: 20_000,
            lifetime: "90d".into(),
            order: "catalogue".into(),
            start: None,
            stop: None,
        }
    }
}

impl ScheduleConfig {
    pub fn policy(&self) -> Result<warnseed_catalog::SchedulePolicy> {
        use warnseed_catalog::utc::{parse_duration, parse_time};
        let err = |key: &str, e: String| anyhow::anyhow!("schedule.{key} in {CONFIG_FILE}: {e}");
        let lifetime_ms = match self.lifetime.trim() {
            "never" => None,
            l => Some(parse_duration(l).map_err(|e| err("lifetime", e))?),
        };
        let time = |key: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| parse_time(t).map_err(|e| err(key, e)))
                .transpose()
        };
        let policy = warnseed_catalog::SchedulePolicy {
            daily_quota: self.daily_quota,
            lifetime_ms,
            order: self.order.parse().map_err(|e| err("order", e))?,
            start_ms: time("start", &self.start)?,
            stop_ms: time("stop", &self.stop)?,
        };
        if let (Some(start), Some(stop)) = (policy.start_ms, policy.stop_ms) {
            if stop <= start {
                anyhow::bail!("schedule.stop in {CONFIG_FILE} is not after schedule.start");
            }
        }
        Ok(policy)
    }
}

/// A node's data directory and its configuration.
pub struct DataDir {
    pub root: PathBuf,
    pub config: Config,
}

impl DataDir {
    pub fn config_path(root: &Path) -> PathBuf {
        root.join(CONFIG_FILE)
    }

    /// Creates the directory and a default configuration if missing.
    pub fn init(root: &Path) -> Result<(Self, bool)> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating data directory {}", root.display()))?;
        let path = Self::config_path(root);
        let created = !path.exists();
        if created {
            let text = format!(
                "# warnseed node configuration. See README.md for every key.\n{}",
                toml::to_string(&Config::default()).expect("default config serialises")
            );
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok((Self::open(root)?, created))
    }

    pub fn open(root: &Path) -> Result<Self> {
        let path = Self::config_path(root);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `warnseed init --data {}` first)",
                path.display(),
                root.display()
            )
        })?;
        let config: Config = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            config,
        })
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.root.join(CATALOG_DB)
    }
    pub fn ledger_path(&self) -> PathBuf {
        self.root.join(LEDGER_DB)
    }
    /// Piece hashes of `unique`-fill decoys.
    pub fn piece_file_path(&self) -> PathBuf {
        self.root.join("piece-hashes.bin")
    }
    pub fn payload_path(&self) -> Option<PathBuf> {
        self.config.payload.file.as_ref().map(|p| self.root.join(p))
    }
}
