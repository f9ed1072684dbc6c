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
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // journal_mode answers with a row, so it is queried rather than executed.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal(mode));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    let empty: bool = conn.query_row("SELECT count(*) = 0 FROM sqlite_master", [], |r| r.get(0))?;
    if empty {
        // A new file: its schema in one transaction, one synced commit rather than one per
        // statement (a first start creates two stores before READY).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(schema)?;
        tx.commit()?;
    } else {
        // Statements that find their table or index there write nothing, and take no lock.
        conn.execute_batch(schema)?;
    }
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

/// Runs `f`, work that may wait (a SQLite write waits up to the busy timeout for another
/// writer, such as the CLI or a backup; a mutex around a store waits for such a write), so that
/// it stalls no async task but the caller's: on tokio's multi-thread runtime the worker hands
/// its other tasks (the feeds, the scheduler) to another thread while `f` runs
/// (`block_in_place`); elsewhere (a current-thread runtime, no runtime) `f` just runs.
pub fn off_the_async_workers<T>(f: impl FnOnce() -> T) -> T {
    if tokio::runtime::Handle::try_current()
        .is_ok_and(|rt| rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// SQLite's default `wal_autocheckpoint`: a commit that leaves this many pages or more in the
/// WAL copies them into the database file before it returns.
pub const AUTOCHECKPOINT_PAGES: u32 = 1000;

/// Runs `write` with the automatic checkpoint off, then turns it back on (also when `write`
/// failed). Its commit is as durable as any (the WAL is synced); only the copy of its pages into
/// the database file is left for [`checkpoint`]. For a bulk write at start: at 5,000 meetings
/// the first plan's commit spent about 50 ms copying 11 MB.
pub fn without_autocheckpoint<T, E>(
    conn: &mut Connection,
    sqlite: impl Fn(rusqlite::Error) -> E,
    write: impl FnOnce(&mut Connection) -> Result<T, E>,
) -> Result<T, E> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(&sqlite)?;
    let out = write(conn);
    let restored = conn
        .pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
        .map_err(sqlite);
    let out = out?;
    restored?;
    Ok(out)
}

/// Copies the WAL of the SQLite file at `path` into the database file, on a connection of its
/// own: `PASSIVE`, so it never waits for (or blocks) a reader or the writer. Returns the WAL's
/// frames and how many of them are now in the database file. Safe to run beside the store's own
/// connection, on any thread; a commit meanwhile skips its own automatic checkpoint.
pub fn checkpoint(path: &Path) -> rusqlite::Result<(u64, u64)> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let (log, done): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    // -1 means "not in WAL mode", which a store file never leaves.
    Ok((log.max(0).cast_unsigned(), done.max(0).cast_unsigned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_checkpoint_comes_back_on_after_a_write_that_succeeded_or_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open(&dir.path().join("t.sqlite3"), "CREATE TABLE t (x)").expect("open");
        let pages = |conn: &Connection| -> i64 {
            conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .expect("pragma")
        };
        assert_eq!(pages(&conn), i64::from(AUTOCHECKPOINT_PAGES));
        let during = without_autocheckpoint(&mut conn, |e| e, |c| Ok(pages(c))).expect("ok");
        assert_eq!(during, 0);
        assert_eq!(pages(&conn), i64::from(AUTOCHECKPOINT_PAGES));
        let failed: rusqlite::Result<()> = without_autocheckpoint(
            &mut conn,
            |e| e,
            |c| c.execute_batch("INSERT INTO missing VALUES (1)"),
        );
        assert!(failed.is_err());
        assert_eq!(pages(&conn), i64::from(AUTOCHECKPOINT_PAGES));
    }
}
