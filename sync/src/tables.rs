//! Every redb table, in one place. Names carry a version; a layout change gets a new name and a
//! numbered migration (see `migrations.rs`).

use redb::TableDefinition;

/// Small named values: `migration`, `doc_id`, `role`, `home`.
pub const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta_v1");
/// This device's secret key (`secret`).
pub const IDENTITY: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("identity_v1");
/// Before migration 4: the one document (`current`).
pub const DOC_SNAPSHOT_V1: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("doc_snapshot_v1");
/// Before migration 4: the one document's chunks, by sequence number.
pub const DOC_CHUNKS_V1: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("doc_chunks_v1");
/// Before migration 4: Automerge sync state per peer.
pub const SYNC_STATES_V1: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("sync_states_v1");
/// Each document's compacted snapshot, by document key (`store::DocKey`).
pub const DOC_SNAPSHOTS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("doc_snapshots_v2");
/// Incremental chunks written since a document's snapshot, by (document key, sequence number).
/// Sequence numbers are one counter for the whole file, so a document's chunks load in the
/// order they were written.
pub const DOC_CHUNKS: TableDefinition<'static, (&str, u64), &[u8]> =
    TableDefinition::new("doc_chunks_v2");
/// Paired devices (desktop) or the home desktop (phone), JSON by device id.
pub const PEERS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("peers_v1");
/// Automerge sync state per (peer device id, document key).
pub const SYNC_STATES: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("sync_states_v2");
/// Security-relevant events, JSON, by sequence number.
pub const AUDIT: TableDefinition<'static, u64, &str> = TableDefinition::new("audit_v1");
/// Pairing codes by SHA-256 of their token (the token itself is never stored), JSON.
pub const PAIRING_TOKENS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("pairing_tokens_v1");
/// Before migration 5: per Automerge actor (hex), the signature of its latest change.
pub const CHANGE_SIGNATURES_V1: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("change_signatures_v1");
/// Per (document key, Automerge actor in hex), the signature of the actor's latest change in
/// that document this device holds (`deskhand_core::authorship::Signed::to_bytes`: seq, change
/// hash, ed25519 signature). An actor's changes form one chain per document, so the latest is
/// per document too.
pub const CHANGE_SIGNATURES: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("change_signatures_v2");
/// Per document key, what the node must know of a conversation document without loading it
/// (`store::DocInfo`, JSON): its week, heads, and counts. Written in the same transaction as
/// each of the document's changes.
pub const DOC_INFO: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("doc_info_v1");
