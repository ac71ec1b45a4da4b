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
    #[serde(default)]
    pub geo: GeoConfig,
    #[serde(default)]
    pub fleet: FleetConfig,
}

/// Geolocation of downloaders' addresses.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// A MaxMind-format City database (DB-IP City Lite or GeoLite2-City),
    /// relative to the data directory or absolute; none: every address is
    /// "unknown".
    pub mmdb: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// TCP addresses the peer server listens on.
    pub listen: Vec<String>,
    /// http:// and udp:// trackers every active decoy is announced to, in
    /// BEP 12 tiers (see [`TrackerTiers`]).
    pub trackers: TrackerTiers,
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
            trackers: TrackerTiers::default(),
            dht: false,
            dht_listen: default_dht_listen(),
            dht_listen6: default_dht_listen6(),
            dht_bootstrap: default_dht_bootstrap(),
            dht_announce_interval_secs: default_dht_announce_interval(),
        }
    }
}

/// `node.trackers`: tracker URLs in BEP 12 tiers. Each entry of the list is
/// a URL (a tier of its own, which is what a flat list of URLs always
/// meant) or a list of URLs (one tier, whose trackers stand in for each
/// other); the two may be mixed:
/// `["udp://a:6969/announce", ["http://b:80/announce", "http://c:80/announce"]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerTiers(Vec<Vec<String>>);

impl TrackerTiers {
    /// Checks that no tier is empty and no URL appears twice.
    pub fn from_tiers(tiers: Vec<Vec<String>>) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for (i, tier) in tiers.iter().enumerate() {
            if tier.is_empty() {
                return Err(format!("tracker tier {} is empty", i + 1));
            }
            for url in tier {
                if !seen.insert(url.as_str()) {
                    return Err(format!("tracker {url:?} is listed twice"));
                }
            }
        }
        Ok(Self(tiers))
    }

    /// Every URL its own tier (`run --tracker`).
    pub fn one_per_tier(urls: &[String]) -> Result<Self, String> {
        Self::from_tiers(urls.iter().map(|u| vec![u.clone()]).collect())
    }

    pub fn tiers(&self) -> &[Vec<String>] {
        &self.0
    }

    /// Every URL, tier by tier.
    pub fn urls(&self) -> Vec<String> {
        self.0.iter().flatten().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for TrackerTiers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for tier in &self.0 {
            match tier.as_slice() {
                [one] => seq.serialize_element(one)?,
                many => seq.serialize_element(many)?,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for TrackerTiers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One entry: a URL, or a tier of URLs.
        struct Tier(Vec<String>);

        impl<'de> Deserialize<'de> for Tier {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct TierVisitor;
                impl<'de> serde::de::Visitor<'de> for TierVisitor {
                    type Value = Tier;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a tracker URL or a list of tracker URLs (one BEP 12 tier)")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Tier, E> {
                        Ok(Tier(vec![v.to_string()]))
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tier, A::Error> {
                        let mut urls = Vec::new();
                        while let Some(url) = seq.next_element::<String>()? {
                            urls.push(url);
                        }
                        Ok(Tier(urls))
                    }
                }
                d.deserialize_any(TierVisitor)
            }
        }

        let tiers = Vec::<Tier>::deserialize(d)?;
        Self::from_tiers(tiers.into_iter().map(|t| t.0).collect()).map_err(serde::de::Error::custom)
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
    /// Committed records are sealed (Merkle root, clock state) within this
    /// many seconds.
    #[serde(default = "default_seal_interval")]
    pub seal_interval_secs: u64,
    /// Raw addresses older than this (`400d`, `6h`…) are replaced, by the
    /// running node every hour or by `ledger retain`; `never` keeps them.
    #[serde(default = "default_ip_retention")]
    pub ip_retention: String,
    /// `pseudonym` (keyed HMAC: repeat downloaders stay countable) or
    /// `erase`.
    #[serde(default = "default_ip_retention_mode")]
    pub ip_retention_mode: String,
    /// The operator's pseudonym key (created, 32 random bytes, if missing);
    /// relative to the data directory or absolute.
    #[serde(default = "default_pseudonym_key_file")]
    pub pseudonym_key_file: PathBuf,
}

fn default_ip_retention() -> String {
    "never".into()
}

fn default_ip_retention_mode() -> String {
    "pseudonym".into()
}

fn default_pseudonym_key_file() -> PathBuf {
    "pseudonym.key".into()
}

impl LedgerConfig {
    /// The configured retention age in milliseconds, if any.
    pub fn retention_ms(&self) -> Result<Option<i64>> {
        match self.ip_retention.trim() {
            "never" => Ok(None),
            age => warnseed_catalog::utc::parse_duration(age)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("ledger.ip_retention in {CONFIG_FILE}: {e}")),
        }
    }
}

fn default_seal_interval() -> u64 {
    60
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            batch_window_ms: 100,
            seal_interval_secs: default_seal_interval(),
            ip_retention: default_ip_retention(),
            ip_retention_mode: default_ip_retention_mode(),
            pseudonym_key_file: default_pseudonym_key_file(),
        }
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
    /// The operator's pseudonym key, created (32 random bytes, hex, mode
    /// 0600) if missing.
    pub fn pseudonym_key(&self) -> Result<Vec<u8>> {
        let path = self.root.join(&self.config.ledger.pseudonym_key_file);
        if !path.exists() {
            // A new key would make new pseudonyms differ from stored ones.
            if warnseed_ledger::LedgerStore::open(&self.ledger_path())?.has_pseudonyms()? {
                anyhow::bail!(
                    "the pseudonym key {} is missing but the ledger holds pseudonyms made with it: restore the key",
                    path.display()
                );
            }
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating the pseudonym key {}", path.display()))?;
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created a pseudonym key; keep a copy: pseudonyms depend on it");
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let key = text.trim();
        if key.len() < 32 {
            anyhow::bail!("pseudonym key {} is shorter than 32 characters", path.display());
        }
        Ok(key.as_bytes().to_vec())
    }

    pub fn retention(&self) -> Result<warnseed_ledger::Retention> {
        match self.config.ledger.ip_retention_mode.as_str() {
            "erase" => Ok(warnseed_ledger::Retention::Erase),
            "pseudonym" => Ok(warnseed_ledger::Retention::Pseudonym {
                key: self.pseudonym_key()?,
            }),
            other => {
                anyhow::bail!("ledger.ip_retention_mode {other:?} in {CONFIG_FILE}: use pseudonym or erase")
            }
        }
    }

    pub fn geo_path(&self) -> Option<PathBuf> {
        self.config.geo.mmdb.as_ref().map(|p| self.root.join(p))
    }

    pub fn payload_path(&self) -> Option<PathBuf> {
        self.config.payload.file.as_ref().map(|p| self.root.join(p))
    }
}

/// `[fleet]`: forwarding this node's ledger to the fleet's PostgreSQL.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// A libpq-style connection string (`host=db.example user=warnseed
    /// dbname=warnseed` or `postgresql://warnseed@db.example/warnseed`);
    /// empty: fleet mode off.
    pub postgres: String,
    /// The PostgreSQL schema warnseed's tables live in (created if missing).
    pub schema: String,
    /// A file holding the address-key secret every node of the fleet
    /// shares (at least 16 bytes, e.g. `openssl rand -hex 32`), so one
    /// downloader seen by two nodes counts once; relative to the data
    /// directory. None: this ledger's own secret (distinct addresses are
    /// then only distinct per node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_key_secret_file: Option<PathBuf>,
    /// Records per PostgreSQL transaction.
    pub batch_size: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            postgres: String::new(),
            schema: "warnseed".into(),
            ip_key_secret_file: None,
            batch_size: 5_000,
        }
    }
}

/// Where the forwarder publishes its state, in the data directory.
pub const FLEET_STATUS_FILE: &str = "fleet-status.json";

impl DataDir {
    /// The fleet's PostgreSQL, if `fleet.postgres` is set.
    pub fn fleet_pg(&self) -> Result<Option<warnseed_fleet::PgConfig>> {
        let f = &self.config.fleet;
        if f.postgres.trim().is_empty() {
            return Ok(None);
        }
        let pg = warnseed_fleet::PgConfig::new(f.postgres.clone(), f.schema.clone())
            .with_context(|| format!("[fleet] in {CONFIG_FILE}"))?;
        Ok(Some(pg))
    }

    /// The forwarder's settings, if fleet mode is on.
    pub fn fleet_forwarder(&self) -> Result<Option<warnseed_fleet::ForwarderConfig>> {
        let Some(pg) = self.fleet_pg()? else {
            return Ok(None);
        };
        let f = &self.config.fleet;
        if f.batch_size == 0 {
            anyhow::bail!("fleet.batch_size in {CONFIG_FILE} is 0");
        }
        let mut config = warnseed_fleet::ForwarderConfig::new(pg, self.ledger_path());
        config.ip_key_secret = f
            .ip_key_secret_file
            .as_ref()
            .map(|p| warnseed_fleet::read_secret_file(&self.root.join(p)))
            .transpose()
            .with_context(|| format!("fleet.ip_key_secret_file in {CONFIG_FILE}"))?;
        config.batch_size = f.batch_size;
        config.status_file = Some(self.root.join(FLEET_STATUS_FILE));
        Ok(Some(config))
    }
}

/// Which store reports read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportStore {
    /// This node's own ledger.
    Sqlite,
    /// The fleet's PostgreSQL (`[fleet] postgres`): every node's records.
    Postgres,
}

impl std::str::FromStr for ReportStore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(format!("{s:?}: use sqlite or postgres")),
        }
    }
}

/// The aggregates reports read: this node's ledger, or the fleet's
/// PostgreSQL. Not from inside an async task (the PostgreSQL store blocks
/// on a runtime of its own).
pub fn open_report_source(
    dir: &DataDir,
    store: ReportStore,
) -> Result<Box<dyn warnseed_ledger::report::RollupSource>> {
    Ok(match store {
        ReportStore::Sqlite => Box::new(warnseed_ledger::LedgerStore::open(&dir.ledger_path())?),
        ReportStore::Postgres => {
            let pg = dir.fleet_pg()?.with_context(|| {
                format!(
                    "--store postgres: set [fleet] postgres in {}",
                    DataDir::config_path(&dir.root).display()
                )
            })?;
            Box::new(
                warnseed_fleet::PgStore::connect(&pg).with_context(|| {
                    format!("connecting to the fleet's PostgreSQL (schema {})", pg.schema)
                })?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(toml_text: &str) -> Result<NodeConfig, String> {
        let text = format!("[node]\nlisten = []\ndht = false\n{toml_text}\n");
        toml::from_str::<Config>(&text)
            .map(|c| c.node)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn trackers_take_a_flat_list_tiers_or_both() {
        let flat = node(r#"trackers = ["udp://a:1/announce", "http://b:2/announce"]"#).unwrap();
        assert_eq!(
            flat.trackers.tiers(),
            &[
                vec!["udp://a:1/announce".to_string()],
                vec!["http://b:2/announce".to_string()]
            ]
        );
        let tiers =
            node(r#"trackers = [["udp://a:1/announce", "http://b:2/announce"], ["http://c:3/announce"]]"#)
                .unwrap();
        assert_eq!(tiers.trackers.tiers().len(), 2);
        assert_eq!(tiers.trackers.tiers()[0].len(), 2);
        assert_eq!(
            tiers.trackers.urls(),
            ["udp://a:1/announce", "http://b:2/announce", "http://c:3/announce"]
        );
        let mixed =
            node(r#"trackers = ["udp://a:1/announce", ["http://b:2/announce", "http://c:3/announce"]]"#)
                .unwrap();
        assert_eq!(mixed.trackers.tiers().len(), 2);
        assert!(node("trackers = []").unwrap().trackers.is_empty());
    }

    #[test]
    fn bad_tracker_lists_are_refused() {
        let e = node(r#"trackers = [[]]"#).unwrap_err();
        assert!(e.contains("tier 1 is empty"), "{e}");
        let e = node(r#"trackers = ["http://a:1/announce", ["http://a:1/announce"]]"#).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = node(r#"trackers = [1]"#).unwrap_err();
        assert!(e.contains("a tracker URL or a list of tracker URLs"), "{e}");
        assert!(node(r#"trackers = [[["http://a:1/announce"]]]"#).is_err());
        assert!(node(r#"trackers = "http://a:1/announce""#).is_err());
    }

    #[test]
    fn trackers_round_trip_through_toml() {
        for text in [
            r#"trackers = ["udp://a:1/announce", "http://b:2/announce"]"#,
            r#"trackers = ["udp://a:1/announce", ["http://b:2/announce", "http://c:3/announce"]]"#,
        ] {
            let before = node(text).unwrap();
            let written = toml::to_string(&Config {
                node: before.clone(),
                ..Config::default()
            })
            .unwrap();
            let after: Config = toml::from_str(&written).unwrap();
            assert_eq!(after.node.trackers, before.trackers, "{written}");
        }
    }
}
