//! The fleet's tables in PostgreSQL. Records, geolocation and seals are
//! kept per node (`node_id` beside the node's own key); the aggregates are
//! the fleet's, with the same columns as SQLite's so the portable
//! statements of [`warnseed_ledger::rollup::Plan`] run on them unchanged.

/// Run with `search_path` set to the fleet's schema.
pub(crate) const TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS sessions (
    node_id TEXT NOT NULL,
    -- The record's place in its node's hash chain: 1, 2, 3, ... with no gaps
    -- (`id` in the node's SQLite ledger).
    seq BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT NOT NULL,
    network TEXT NOT NULL,
    decoy_id BIGINT NOT NULL,
    info_hash BYTEA NOT NULL,
    remote_ip TEXT NOT NULL,
    remote_port INTEGER NOT NULL,
    peer_id BYTEA,
    client_name TEXT,
    client_version TEXT,
    transport TEXT NOT NULL,
    bytes_sent BIGINT NOT NULL,
    pieces_sent BIGINT NOT NULL,
    piece_count BIGINT NOT NULL,
    peer_pieces_initial BIGINT,
    peer_pieces_final BIGINT NOT NULL,
    completed BOOLEAN NOT NULL,
    close_reason TEXT NOT NULL,
    ip_salt BYTEA,
    ip_commitment BYTEA NOT NULL,
    prev_hash BYTEA NOT NULL,
    record_hash BYTEA NOT NULL,
    kind TEXT NOT NULL,
    session_key BIGINT NOT NULL,
    -- The aggregates' key of remote_ip (HMAC with the fleet's secret);
    -- empty once retention has replaced the address.
    ip_key BYTEA NOT NULL,
    PRIMARY KEY (node_id, seq)
);
-- Started times grow with seq, so a BRIN index costs next to nothing.
CREATE INDEX IF NOT EXISTS sessions_started ON sessions USING brin (started_at_ms);
CREATE TABLE IF NOT EXISTS session_geo (
    node_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    country TEXT,
    country_name TEXT,
    region TEXT,
    city TEXT,
    latitude DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    accuracy_km BIGINT,
    kommune TEXT,
    kommune_name TEXT,
    kommune_confidence TEXT,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE IF NOT EXISTS seals (
    node_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    sealed_at_ms BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    head_hash BYTEA NOT NULL,
    merkle_root BYTEA NOT NULL,
    clock_source TEXT NOT NULL,
    clock_synced BIGINT,
    clock_max_error_us BIGINT,
    clock_est_error_us BIGINT,
    prev_seal_hash BYTEA NOT NULL,
    seal_hash BYTEA NOT NULL,
    PRIMARY KEY (node_id, id)
);
-- One row per node: how far it has forwarded and when (the resume point
-- itself is max(seq) of the node's records, which cannot disagree with them).
CREATE TABLE IF NOT EXISTS fleet_nodes (
    node_id TEXT PRIMARY KEY,
    forwarded_seq BIGINT NOT NULL,
    forwarded_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollup_daily (
    day BIGINT NOT NULL,
    dim TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    started BIGINT NOT NULL,
    closed BIGINT NOT NULL,
    completed BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (day, dim, key)
);
-- Byte order ("C"), as in SQLite: reports select day labels by range.
CREATE TABLE IF NOT EXISTS rollup_uniques (
    period TEXT COLLATE "C" NOT NULL,
    dim TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    ip_key BYTEA NOT NULL,
    PRIMARY KEY (period, dim, key, ip_key)
);
CREATE TABLE IF NOT EXISTS rollup_ip (
    ip_key BYTEA PRIMARY KEY,
    first_completed_ms BIGINT
);
CREATE TABLE IF NOT EXISTS rollup_repeat (
    day BIGINT NOT NULL,
    ip_key BYTEA NOT NULL,
    PRIMARY KEY (day, ip_key)
);
-- One-time changes to what the store holds, by name, done once each.
CREATE TABLE IF NOT EXISTS fleet_migrations (
    name TEXT PRIMARY KEY
);
"#;
