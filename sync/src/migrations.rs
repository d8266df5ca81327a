//! Numbered migrations. Each runs once, in order, inside one write transaction.

use redb::{ReadableTable, WriteTransaction};

use crate::tables::*;

type Migration = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// All migrations; index + 1 is the migration number stored under `meta.migration`.
const MIGRATIONS: &[Migration] = &[m1_create_tables, m2_pairing_tokens, m3_change_signatures];

/// The newest migration number this build knows.
pub const LATEST: u64 = MIGRATIONS.len() as u64;

fn m1_create_tables(tx: &WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(META)?;
    tx.open_table(IDENTITY)?;
    tx.open_table(DOC_SNAPSHOT)?;
    tx.open_table(DOC_CHUNKS)?;
    tx.open_table(PEERS)?;
    tx.open_table(SYNC_STATES)?;
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
    tx.open_table(CHANGE_SIGNATURES)?;
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
