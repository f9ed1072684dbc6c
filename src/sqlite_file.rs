//! Opening a SQLite file the way every store of convenor needs it: WAL journal (readers never
//! wait for the writer), `synchronous=FULL` (a commit is on disk when it returns), a busy
//! timeout (a second connection waits instead of failing), foreign keys on, and the schema.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// Why a store file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The file refused WAL mode (for example on a file system without shared memory).
    #[error("cannot switch to WAL mode (journal mode is `{0}`)")]
    NotWal(String),
}

/// Opens (creating if needed) the SQLite file at `path`, sets it up, and runs `schema` (which
/// must be idempotent: `CREATE ... IF NOT EXISTS`).
pub fn open(path: &Path, schema: &str) -> Result<Connection, OpenError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // journal_mode answers with a row, so it is queried rather than executed.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction (it takes the write lock at once, so it waits out
/// another writer under the busy timeout instead of failing with SQLITE_BUSY on upgrade) and
/// commits it; `sqlite` turns SQLite's errors into the store's own error type.
pub fn write_immediate<T, E>(
    conn: &mut Connection,
    sqlite: impl Fn(rusqlite::Error) -> E,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&sqlite)?;
    let out = f(&tx)?;
    tx.commit().map_err(sqlite)?;
    Ok(out)
}
