//! Numbered migrations. Each runs once, in order, inside one write transaction.

use redb::{ReadableTable, WriteTransaction};

use crate::tables::*;

type Migration = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// All migrations; index + 1 is the migration number stored under `meta.migration`.
const MIGRATIONS: &[Migration] = &[
    m1_create_tables,
    m2_pairing_tokens,
    m3_change_signatures,
    m4_documents_by_key,
    m5_signatures_by_document,
    m6_doc_info,
];

/// The newest migration number this build knows.
pub const LATEST: u64 = MIGRATIONS.len() as u64;

fn m1_create_tables(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(META)?;
    tx.open_table(IDENTITY)?;
    tx.open_table(DOC_SNAPSHOT_V1)?;
    tx.open_table(DOC_CHUNKS_V1)?;
    tx.open_table(PEERS)?;
    tx.open_table(SYNC_STATES_V1)?;
    tx.open_table(AUDIT)?;
    Ok(())
}

fn m2_pairing_tokens(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(PAIRING_TOKENS)?;
    Ok(())
}

/// Signed sync (`deskhand/sync/2`): the latest change signature of each actor. The node signs
/// its own history on its first start after this migration (meta `own_history_signed`).
fn m3_change_signatures(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(CHANGE_SIGNATURES_V1)?;
    Ok(())
}

/// Storage keyed by document (issue 16's workspace of several documents): the one document of
/// the tables before moves under the key `workspace` (`store::DocKey::WORKSPACE`), its chunks
/// keep their sequence numbers, and each peer's sync state becomes (peer, `workspace`). The old
/// tables are deleted in the same transaction, so a crash leaves either layout, never both.
fn m4_documents_by_key(tx: &WriteTransaction) -> Result<(), redb::Error> {
    let key = crate::store::DocKey::WORKSPACE.as_str();
    {
        let old = tx.open_table(DOC_SNAPSHOT_V1)?;
        let mut new = tx.open_table(DOC_SNAPSHOTS)?;
        if let Some(v) = old.get("current")? {
            new.insert(key, v.value())?;
        }
    }
    {
        let old = tx.open_table(DOC_CHUNKS_V1)?;
        let mut new = tx.open_table(DOC_CHUNKS)?;
        for item in old.iter()? {
            let (seq, v) = item?;
            new.insert((key, seq.value()), v.value())?;
        }
    }
    {
        let old = tx.open_table(SYNC_STATES_V1)?;
        let mut new = tx.open_table(SYNC_STATES)?;
        for item in old.iter()? {
            let (peer, v) = item?;
            new.insert((peer.value(), key), v.value())?;
        }
    }
    tx.delete_table(DOC_SNAPSHOT_V1)?;
    tx.delete_table(DOC_CHUNKS_V1)?;
    tx.delete_table(SYNC_STATES_V1)?;
    Ok(())
}

/// Change signatures keyed by document: an actor's chain, and so its latest change, is per
/// document. The signatures of before belong to the one document, `workspace`. The old table is
/// deleted in the same transaction.
fn m5_signatures_by_document(tx: &WriteTransaction) -> Result<(), redb::Error> {
    let key = crate::store::DocKey::WORKSPACE.as_str();
    {
        let old = tx.open_table(CHANGE_SIGNATURES_V1)?;
        let mut new = tx.open_table(CHANGE_SIGNATURES)?;
        for item in old.iter()? {
            let (actor, v) = item?;
            new.insert((key, actor.value()), v.value())?;
        }
    }
    tx.delete_table(CHANGE_SIGNATURES_V1)?;
    Ok(())
}

/// What the node knows of each conversation document without loading it (issue 16).
fn m6_doc_info(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(DOC_INFO)?;
    Ok(())
}

/// Runs what is missing. Returns the migration number found before, or an error naming a
/// database written by a newer build.
pub fn run(tx: &WriteTransaction) -> Result<u64, MigrationError> {
    let found = {
        let meta = tx.open_table(META).map_err(redb::Error::from)?;
        let v = meta.get("migration").map_err(redb::Error::from)?;
        v.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    };
    if found > LATEST {
        return Err(MigrationError::TooNew { found });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        m(tx)?;
        let n = i as u64 + 1;
        tx.open_table(META)
            .map_err(redb::Error::from)?
            .insert("migration", n.to_be_bytes().as_slice())
            .map_err(redb::Error::from)?;
    }
    Ok(found)
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Written by a newer build.
    #[error(
        "database was written by a newer Deskhand (migration {found}, this build knows {LATEST})"
    )]
    TooNew {
        /// Migration number found.
        found: u64,
    },
    /// redb failed.
    #[error(transparent)]
    Redb(#[from] redb::Error),
}
