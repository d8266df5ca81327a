//! Every redb table, in one place. Names carry a version; a layout change gets a new name and a
//! numbered migration (see `migrations.rs`).

use redb::TableDefinition;

/// Small named values: `migration`, `doc_id`, `role`, `home`.
pub const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta_v1");
/// This device's secret key (`secret`).
pub const IDENTITY: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("identity_v1");
/// The compacted document (`current`).
pub const DOC_SNAPSHOT: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("doc_snapshot_v1");
/// Incremental document chunks written since the snapshot, by sequence number.
pub const DOC_CHUNKS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("doc_chunks_v1");
/// Paired devices (desktop) or the home desktop (phone), JSON by device id.
pub const PEERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("peers_v1");
/// Automerge sync state per peer.
pub const SYNC_STATES: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("sync_states_v1");
/// Security-relevant events, JSON, by sequence number.
pub const AUDIT: TableDefinition<'static, u64, &str> = TableDefinition::new("audit_v1");
/// Pairing codes by SHA-256 of their token (the token itself is never stored), JSON.
pub const PAIRING_TOKENS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("pairing_tokens_v1");
/// Per Automerge actor (hex), the signature of its latest change this device holds
/// (`deskhand_core::authorship::Signed::to_bytes`: seq, change hash, ed25519 signature).
pub const CHANGE_SIGNATURES: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("change_signatures_v1");
