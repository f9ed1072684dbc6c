//! The SQLite ledger: one file in the state directory, WAL, `synchronous=FULL`, `busy_timeout`,
//! every write in a `BEGIN IMMEDIATE` transaction.
//!
//! Instants are stored as integer milliseconds since the Unix epoch (UTC), which sort and compare
//! in SQL; `convenor plan` shows them as RFC 3339.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, Row, params, types::Value};

use crate::sqlite_file::OpenError;

use super::{
    LedgerError, LedgerRow, MailCount, MailKey, MailState, Outcome, ReleaseFilter, Replan, Store,
};
use crate::{model::MeetingId, revision::StoredRevision};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mails (
    meeting          TEXT    NOT NULL,
    email            TEXT    NOT NULL,
    audience         TEXT    NOT NULL,
    occurrence       INTEGER NOT NULL DEFAULT 0,
    due_ms           INTEGER NOT NULL,
    deadline_ms      INTEGER NOT NULL,
    starts_ms        INTEGER NOT NULL,
    state            TEXT    NOT NULL
        CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'failed', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER,
    last_error       TEXT,
    message_id       TEXT    NOT NULL,
    sent_at_ms       INTEGER,
    reply            TEXT,
    created_ms       INTEGER NOT NULL,
    released         INTEGER NOT NULL DEFAULT 0,
    done_rcpt        TEXT,
    withdrawn        TEXT,
    PRIMARY KEY (meeting, email, audience, occurrence)
);
CREATE INDEX IF NOT EXISTS mails_by_state_due ON mails (state, due_ms);
CREATE INDEX IF NOT EXISTS mails_retrying ON mails (next_attempt_ms)
    WHERE state = 'pending' AND next_attempt_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS meeting_revisions (
    meeting   TEXT    NOT NULL PRIMARY KEY,
    sequence  INTEGER NOT NULL,
    revision  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS revision_history (
    meeting   TEXT    NOT NULL,
    sequence  INTEGER NOT NULL,
    revision  TEXT    NOT NULL,
    PRIMARY KEY (meeting, sequence)
);
CREATE TABLE IF NOT EXISTS calendar_identity (
    id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
    uid_domain  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS plan_stamp (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
    digest  TEXT    NOT NULL
);
";

/// The columns a new row is written with (`done_rcpt` and `withdrawn` start NULL).
const INSERT_COLUMNS: &str = "meeting, email, audience, occurrence, due_ms, deadline_ms, \
     starts_ms, state, attempts, next_attempt_ms, last_error, message_id, sent_at_ms, reply, \
     created_ms, released";

/// The columns a row is read with ([`read_row`]).
const COLUMNS: &str = "meeting, email, audience, occurrence, due_ms, deadline_ms, starts_ms, state, \
     attempts, next_attempt_ms, last_error, message_id, sent_at_ms, reply, created_ms, released, \
     done_rcpt, withdrawn";

/// The columns added to `mails` since its first version, in order: an older file gets each
/// one it lacks. Nullable, so an older binary (after a rollback) still inserts rows.
const ADDED_COLUMNS: [(&str, &str); 2] = [("done_rcpt", "TEXT"), ("withdrawn", "TEXT")];

/// Brings a ledger written by an earlier version up to date. Only a file that needs it is
/// written to: the check is a read, so opening a current ledger stays read-only.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let missing = |conn: &Connection| -> rusqlite::Result<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        for (name, kind) in ADDED_COLUMNS {
            let has: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('mails') WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            if !has {
                out.push((name, kind));
            }
        }
        Ok(out)
    };
    if missing(conn)?.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Checked again under the write lock: another process may have migrated it meanwhile.
    for (name, kind) in missing(&tx)? {
        tx.execute_batch(&format!("ALTER TABLE mails ADD COLUMN {name} {kind}"))?;
    }
    tx.commit()
}

/// The SET clause adding the addresses in parameter `param` ([`lines`]) to `done_rcpt`.
fn add_done(param: &str) -> String {
    format!(
        "done_rcpt = CASE WHEN {param} IS NULL THEN done_rcpt \
         WHEN done_rcpt IS NULL THEN {param} ELSE done_rcpt || char(10) || {param} END"
    )
}

/// `done_rcpt`'s value for `addresses` added to it: one address per line, NULL for none.
fn lines(addresses: &[String]) -> Value {
    if addresses.is_empty() {
        Value::Null
    } else {
        Value::from(addresses.join("\n"))
    }
}

/// The recipients in a `done_rcpt` value: one address per line.
fn done_recipients(stored: Option<String>) -> Vec<String> {
    stored
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The ledger in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// A bulk [`Store::apply`] left its pages in the WAL ([`SqliteStore::take_checkpoint`]).
    checkpoint_due: bool,
}

/// An [`Store::apply`] of this many rows (mail rows and revisions) or more is a bulk write: its
/// commit does not copy the WAL into the database file, the caller does it off the critical path
/// ([`SqliteStore::take_checkpoint`]). A first plan at 5 meetings has about 50 rows, at 5,000
/// about 50,000; a day's scheduler passes write a handful.
pub const BULK_ROWS: usize = 1000;

/// A checkpoint of the ledger's WAL, due after a bulk write; run it on a blocking thread.
#[derive(Debug)]
#[must_use = "a checkpoint does nothing until it is run"]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// Copies the WAL into the database file ([`crate::sqlite_file::checkpoint`]) and logs the
    /// outcome; a failure costs nothing but WAL size (the next commits retry it).
    pub fn run(self) {
        match crate::sqlite_file::checkpoint(&self.path) {
            Ok((log, done)) => {
                tracing::debug!(path = %self.path.display(), "ledger checkpoint: {done} of {log} WAL frames");
            }
            Err(e) => tracing::warn!("ledger checkpoint of {} failed: {e}", self.path.display()),
        }
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

fn opt_ts(ms: Option<i64>) -> rusqlite::Result<Option<Timestamp>> {
    ms.map(ts).transpose()
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<LedgerRow> {
    let state: String = r.get(7)?;
    let state = MailState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown state `{state}`").into(),
        )
    })?;
    Ok(LedgerRow {
        key: MailKey {
            meeting: r.get(0)?,
            email: r.get(1)?,
            audience: r.get(2)?,
            occurrence: r.get(3)?,
        },
        due: ts(r.get(4)?)?,
        deadline: ts(r.get(5)?)?,
        starts: ts(r.get(6)?)?,
        state,
        attempts: r.get(8)?,
        next_attempt: opt_ts(r.get(9)?)?,
        last_error: r.get(10)?,
        message_id: r.get(11)?,
        sent_at: opt_ts(r.get(12)?)?,
        reply: r.get(13)?,
        created: ts(r.get(14)?)?,
        released: r.get(15)?,
        done_recipients: done_recipients(r.get(16)?),
        withdrawn: r.get(17)?,
    })
}

/// The scheduler's due rows at `?1`: a range of the (state, due_ms) index.
fn due_rows_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM mails WHERE state = 'pending' AND due_ms <= ?1 \
         ORDER BY due_ms, meeting, email, audience, occurrence"
    )
}

/// The first pending row without a retry, from the (state, due_ms) index.
const FIRST_DUE_SQL: &str = "SELECT due_ms FROM mails \
     WHERE state = 'pending' AND next_attempt_ms IS NULL ORDER BY due_ms LIMIT 1";

/// The earliest retry, from the partial index of retrying rows (a handful at most); without
/// statistics SQLite would walk every pending row of the other index instead.
const NEXT_RETRY_SQL: &str = "SELECT MIN(MAX(due_ms, next_attempt_ms)) \
     FROM mails INDEXED BY mails_retrying \
     WHERE state = 'pending' AND next_attempt_ms IS NOT NULL";

/// Rows per multi-row INSERT (a parameter per column of [`INSERT_COLUMNS`], 16: well under SQLite's
/// limit of 32,766 parameters a statement). 64 measured as fast as 256.
const INSERT_BATCH: usize = 64;

/// An INSERT of `rows` mail rows (`ON CONFLICT DO NOTHING`: a row already there stays as it is).
///
/// `OR ROLLBACK`: a row breaking a CHECK or NOT NULL ends the whole transaction at once, which is
/// what [`Store::apply`] does with any error anyway. With SQLite's default (ABORT) a statement
/// writing many rows must be undoable on its own, so SQLite keeps a statement journal: a copy of
/// every page each statement touches, in a temporary file. For a first plan at 5,000 meetings that
/// was 28 MB in 12,900 writes, and `ledger_first_plan/5000` went from 120 to 101 ms without it.
fn insert_sql(rows: usize) -> String {
    let columns = INSERT_COLUMNS.split(',').count();
    let one = format!("({})", vec!["?"; columns].join(", "));
    format!(
        "INSERT OR ROLLBACK INTO mails ({INSERT_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING",
        vec![one; rows].join(", ")
    )
}

const KEY_WHERE: &str = "meeting = ?1 AND email = ?2 AND audience = ?3 AND occurrence = ?4";

impl SqliteStore {
    /// Opens (creating if needed) the ledger at `path` and sets it up.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let sqlite = |source| LedgerError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let mut conn = crate::sqlite_file::open(path, SCHEMA).map_err(|e| match e {
            OpenError::Sqlite(source) => sqlite(source),
            OpenError::NotWal(mode) => LedgerError::Corrupt {
                path: path.display().to_string(),
                detail: format!("cannot switch to WAL mode (journal mode is `{mode}`)"),
            },
        })?;
        migrate(&mut conn).map_err(sqlite)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            checkpoint_due: false,
        })
    }

    /// The checkpoint a bulk write left due (at most once per such write), or `None`.
    pub fn take_checkpoint(&mut self) -> Option<Checkpoint> {
        std::mem::take(&mut self.checkpoint_due).then(|| Checkpoint {
            path: self.path.clone(),
        })
    }

    /// Opens the ledger in `state_dir` (see [`super::LEDGER_FILE`]).
    pub fn open_in(state_dir: &Path) -> Result<Self, LedgerError> {
        Self::open(&state_dir.join(super::LEDGER_FILE))
    }

    /// Decodes a stored revision; `what` names the row for the error.
    fn decode_revision(&self, json: &str, what: &str) -> Result<StoredRevision, LedgerError> {
        serde_json::from_str(json).map_err(|e| LedgerError::Corrupt {
            path: self.path.display().to_string(),
            detail: format!("{what}: {e}"),
        })
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        self.write_as(false, f)
    }

    /// [`Self::write`]; for a `bulk` write, without the automatic checkpoint at its commit and
    /// with [`Self::take_checkpoint`] due after it.
    fn write_as<T>(
        &mut self,
        bulk: bool,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let path = self.path.display().to_string();
        let err = |source| LedgerError::Sqlite {
            path: path.clone(),
            source,
        };
        let write = |conn: &mut Connection| {
            crate::sqlite_file::write_immediate(conn, err, |tx| f(tx).map_err(err))
        };
        if !bulk {
            return write(&mut self.conn);
        }
        let out = crate::sqlite_file::without_autocheckpoint(&mut self.conn, err, write)?;
        self.checkpoint_due = true;
        Ok(out)
    }

    /// [`Store::settle`], and when `read` is given, only if the row still has the times,
    /// attempts and planning instant it was read with ([`Store::settle_decided`]).
    fn settle_where(
        &mut self,
        key: &MailKey,
        from: MailState,
        outcome: &Outcome,
        read: Option<&LedgerRow>,
    ) -> Result<Option<MailState>, LedgerError> {
        let to = outcome.state().as_str();
        // A retry or failure of a row withdrawn while it was being sent leaves it skipped,
        // with the withdrawal's reason (see `LedgerRow::withdrawn`).
        let withdrawn_wins = "state = CASE WHEN withdrawn IS NULL THEN ?6 ELSE 'skipped' END";
        // ?1-?4 the key, ?5 the expected state, ?6 the new state, ?7 on: the outcome's data.
        let (set, data): (String, Vec<Value>) = match outcome {
            Outcome::Sent { at, reply } => (
                "state = ?6, sent_at_ms = ?7, reply = ?8, last_error = NULL, \
                 next_attempt_ms = NULL"
                    .into(),
                vec![ms(*at).into(), reply.clone().into()],
            ),
            Outcome::Retry { at, error, done } => (
                // The recipients reached are added to those of earlier attempts.
                format!(
                    "{withdrawn_wins}, next_attempt_ms = CASE WHEN withdrawn IS NULL THEN ?7 END, \
                     last_error = COALESCE(withdrawn, ?8), {}",
                    add_done("?9")
                ),
                vec![ms(*at).into(), error.clone().into(), lines(done)],
            ),
            Outcome::Failed { error, done } => (
                // Kept too: a failed row comes back when its meeting moves.
                format!(
                    "{withdrawn_wins}, last_error = COALESCE(withdrawn, ?7), \
                     next_attempt_ms = NULL, {}",
                    add_done("?8")
                ),
                vec![error.clone().into(), lines(done)],
            ),
            Outcome::Skipped { reason: text } | Outcome::Held { reason: text } => (
                "state = ?6, last_error = ?7, next_attempt_ms = NULL".into(),
                vec![text.clone().into()],
            ),
        };
        let mut values: Vec<Value> = vec![
            key.meeting.clone().into(),
            key.email.clone().into(),
            key.audience.clone().into(),
            key.occurrence.into(),
            from.as_str().to_owned().into(),
            to.to_owned().into(),
        ];
        values.extend(data);
        let mut condition = format!("{KEY_WHERE} AND state = ?5");
        if let Some(row) = read {
            // As read: nothing a reconciliation writes leaves all of these as they were.
            let n = values.len();
            condition.push_str(&format!(
                " AND due_ms = ?{} AND deadline_ms = ?{} AND starts_ms = ?{} \
                 AND attempts = ?{} AND created_ms = ?{} AND next_attempt_ms IS ?{}",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            ));
            values.extend([
                ms(row.due).into(),
                ms(row.deadline).into(),
                ms(row.starts).into(),
                row.attempts.into(),
                ms(row.created).into(),
                row.next_attempt.map(ms).into(),
            ]);
        }
        // The mark lives only while the row is `sending` (the SET's other expressions still
        // read the value it had).
        let statement =
            format!("UPDATE mails SET {set}, withdrawn = NULL WHERE {condition} RETURNING state");
        let state: Option<String> = self.write(|tx| {
            tx.query_row(&statement, rusqlite::params_from_iter(values), |r| r.get(0))
                .optional()
        })?;
        state
            .map(|text| {
                MailState::parse(&text).ok_or_else(|| LedgerError::Corrupt {
                    path: self.path.display().to_string(),
                    detail: format!("unknown state `{text}` for {key}"),
                })
            })
            .transpose()
    }

    fn row(&self, key: &MailKey) -> Result<Option<LedgerRow>, LedgerError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM mails WHERE {KEY_WHERE}"),
                params![key.meeting, key.email, key.audience, key.occurrence],
                read_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

impl Store for SqliteStore {
    fn rows(&self) -> Result<Vec<LedgerRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM mails \
                 ORDER BY due_ms, meeting, email, audience, occurrence"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], read_row)
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn due_rows(&self, now: Timestamp) -> Result<Vec<LedgerRow>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(&due_rows_sql())
            .map_err(|e| self.err(e))?;
        stmt.query_map([ms(now)], read_row)
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))
    }

    fn next_wake(&self) -> Result<Option<Timestamp>, LedgerError> {
        let first: Option<i64> = self
            .conn
            .prepare_cached(FIRST_DUE_SQL)
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))?;
        let retry: Option<i64> = self
            .conn
            .prepare_cached(NEXT_RETRY_SQL)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        first
            .into_iter()
            .chain(retry)
            .min()
            .map(ts)
            .transpose()
            .map_err(|e| self.err(e))
    }

    fn revisions(&self) -> Result<BTreeMap<MeetingId, StoredRevision>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT meeting, revision FROM meeting_revisions")
            .map_err(|e| self.err(e))?;
        let pairs = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        let corrupt = |detail: String| LedgerError::Corrupt {
            path: self.path.display().to_string(),
            detail,
        };
        pairs
            .into_iter()
            .map(|(id, json)| {
                let meeting = MeetingId::parse(&id)
                    .map_err(|e| corrupt(format!("meeting_revisions: {e}")))?;
                let rev = self.decode_revision(&json, &format!("meeting_revisions `{id}`"))?;
                Ok((meeting, rev))
            })
            .collect()
    }

    fn revision(&self, meeting: &MeetingId) -> Result<Option<StoredRevision>, LedgerError> {
        let json: Option<String> = self
            .conn
            .prepare_cached("SELECT revision FROM meeting_revisions WHERE meeting = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![meeting.as_str()], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        json.map(|j| self.decode_revision(&j, &format!("meeting_revisions `{meeting}`")))
            .transpose()
    }

    fn thread_root(&self, meeting: &str, except: &str) -> Result<Option<String>, LedgerError> {
        // The primary key starts with the meeting: this reads that meeting's rows only.
        self.conn
            .prepare_cached(
                "SELECT message_id FROM mails WHERE meeting = ?1 AND state = 'sent' \
                 AND message_id <> ?2 ORDER BY sent_at_ms, message_id LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![meeting, except], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    fn notices(&self, key: &MailKey) -> Result<Vec<LedgerRow>, LedgerError> {
        // A range of the primary key.
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM mails WHERE meeting = ?1 AND email = ?2 \
                 AND audience = ?3 AND occurrence > 0 ORDER BY occurrence"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![key.meeting, key.email, key.audience], read_row)
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))
    }

    fn mail_counts(&self) -> Result<Vec<MailCount>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT email, state, COUNT(*), SUM(MAX(attempts - 1, 0)) \
                 FROM mails GROUP BY email, state",
            )
            .map_err(|e| self.err(e))?;
        let counts = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        counts
            .into_iter()
            .map(|(email, state, rows, retries)| {
                let state = MailState::parse(&state).ok_or_else(|| LedgerError::Corrupt {
                    path: self.path.display().to_string(),
                    detail: format!("mails: unknown state `{state}` of `{email}`"),
                })?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok(MailCount {
                    email,
                    state,
                    rows: count(rows),
                    retries: count(retries),
                })
            })
            .collect()
    }

    fn ping(&self) -> Result<(), LedgerError> {
        self.conn
            .query_row("SELECT count(*) FROM mails", [], |r| r.get::<_, i64>(0))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn revision_at(
        &self,
        meeting: &MeetingId,
        sequence: u32,
    ) -> Result<Option<StoredRevision>, LedgerError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT revision FROM revision_history WHERE meeting = ?1 AND sequence = ?2",
                params![meeting.as_str(), sequence],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| self.decode_revision(&j, &format!("revision_history `{meeting}` {sequence}")))
            .transpose()
    }

    fn apply(&mut self, replan: &Replan) -> Result<(), LedgerError> {
        let revisions: Vec<(String, u32, String)> = replan
            .revisions
            .iter()
            .map(|(id, rev)| {
                serde_json::to_string(rev)
                    .map(|json| (id.to_string(), rev.sequence, json))
                    .map_err(|e| LedgerError::Corrupt {
                        path: self.path.display().to_string(),
                        detail: format!("cannot encode the revision of `{id}`: {e}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        // One transaction; each statement is prepared once (`prepare_cached`) and run per row:
        // preparing per row was half of this function's time at 5,000 meetings.
        // A row being sent keeps its state and attempts: only its times follow (see
        // `Replan::reschedules`); each statement matches the row in its own states only.
        let reschedule = format!(
            "UPDATE mails SET due_ms = ?5, deadline_ms = ?6, starts_ms = ?7, created_ms = ?8, \
             state = 'pending', attempts = 0, next_attempt_ms = NULL, \
             last_error = NULL, released = 0, withdrawn = NULL \
             WHERE {KEY_WHERE} AND state IN ('pending', 'held', 'skipped', 'failed')"
        );
        let reschedule_in_flight = format!(
            "UPDATE mails SET due_ms = ?5, deadline_ms = ?6, starts_ms = ?7, withdrawn = NULL \
             WHERE {KEY_WHERE} AND state = 'sending'"
        );
        let withdraw = format!(
            "UPDATE mails SET state = 'skipped', last_error = ?5 \
             WHERE {KEY_WHERE} AND state IN ('pending', 'held')"
        );
        let withdraw_in_flight =
            format!("UPDATE mails SET withdrawn = ?5 WHERE {KEY_WHERE} AND state = 'sending'");
        let follow = format!(
            "UPDATE mails SET deadline_ms = ?5, starts_ms = ?6 \
             WHERE {KEY_WHERE} AND state IN ('pending', 'held', 'sending')"
        );
        let write = |tx: &rusqlite::Transaction<'_>| {
            if !revisions.is_empty() {
                // SEQUENCE never goes down, whatever the caller computed.
                let mut current = tx.prepare_cached(
                    "INSERT INTO meeting_revisions (meeting, sequence, revision) VALUES (?1, ?2, ?3)
                     ON CONFLICT (meeting) DO UPDATE SET sequence = excluded.sequence,
                         revision = excluded.revision
                     WHERE excluded.sequence >= meeting_revisions.sequence",
                )?;
                // The last revision at each SEQUENCE: a change notice shows the one before.
                let mut history = tx.prepare_cached(
                    "INSERT INTO revision_history (meeting, sequence, revision) VALUES (?1, ?2, ?3)
                     ON CONFLICT (meeting, sequence) DO UPDATE SET revision = excluded.revision",
                )?;
                for (id, sequence, json) in &revisions {
                    current.execute(params![id, sequence, json])?;
                    history.execute(params![id, sequence, json])?;
                }
            }
            if let Some(zone) = &replan.history_zone {
                tx.execute(
                    "UPDATE revision_history \
                     SET revision = json_set(revision, '$.significant.zone', ?1) \
                     WHERE json_type(revision, '$.significant.zone') IS NULL \
                        OR json_type(revision, '$.significant.zone') = 'null'",
                    params![zone],
                )?;
            }
            // Many rows per statement: a first start inserts ~8 rows per meeting, and SQLite's
            // per-statement work (cursors on the table and both indexes) was most of it.
            for chunk in replan.inserts.chunks(INSERT_BATCH) {
                let mut stmt = tx.prepare_cached(&insert_sql(chunk.len()))?;
                let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 16);
                let times: Vec<[Option<i64>; 5]> = chunk
                    .iter()
                    .map(|r| {
                        [
                            Some(ms(r.due)),
                            Some(ms(r.deadline)),
                            Some(ms(r.starts)),
                            r.next_attempt.map(ms),
                            r.sent_at.map(ms),
                        ]
                    })
                    .collect();
                let created: Vec<i64> = chunk.iter().map(|r| ms(r.created)).collect();
                let states: Vec<&str> = chunk.iter().map(|r| r.state.as_str()).collect();
                for (((r, t), c), state) in chunk.iter().zip(&times).zip(&created).zip(&states) {
                    values.extend_from_slice(&[
                        &r.key.meeting,
                        &r.key.email,
                        &r.key.audience,
                        &r.key.occurrence,
                        &t[0],
                        &t[1],
                        &t[2],
                        state,
                    ]);
                    values.extend_from_slice(&[
                        &r.attempts,
                        &t[3],
                        &r.last_error,
                        &r.message_id,
                        &t[4],
                        &r.reply,
                        c,
                        &r.released,
                    ]);
                }
                stmt.execute(rusqlite::params_from_iter(values))?;
            }
            if !replan.reschedules.is_empty() {
                let mut stmt = tx.prepare_cached(&reschedule)?;
                let mut in_flight = tx.prepare_cached(&reschedule_in_flight)?;
                for r in &replan.reschedules {
                    let key = params![r.key.meeting, r.key.email, r.key.audience, r.key.occurrence];
                    let times = params![ms(r.due), ms(r.deadline), ms(r.starts)];
                    let moved = stmt.execute(rusqlite::params_from_iter(
                        key.iter().chain(times).chain(params![ms(r.created)]),
                    ))?;
                    if moved == 0 {
                        in_flight.execute(rusqlite::params_from_iter(key.iter().chain(times)))?;
                    }
                }
            }
            if !replan.follows.is_empty() {
                let mut stmt = tx.prepare_cached(&follow)?;
                for f in &replan.follows {
                    stmt.execute(params![
                        f.key.meeting,
                        f.key.email,
                        f.key.audience,
                        f.key.occurrence,
                        ms(f.deadline),
                        ms(f.starts)
                    ])?;
                }
            }
            match &replan.stamp {
                Some(digest) => tx
                    .prepare_cached(
                        "INSERT INTO plan_stamp (id, digest) VALUES (0, ?1)
                         ON CONFLICT (id) DO UPDATE SET digest = excluded.digest",
                    )?
                    .execute(params![digest])?,
                None => tx.execute("DELETE FROM plan_stamp", [])?,
            };
            if !replan.withdrawals.is_empty() {
                let mut stmt = tx.prepare_cached(&withdraw)?;
                let mut in_flight = tx.prepare_cached(&withdraw_in_flight)?;
                for (key, reason) in &replan.withdrawals {
                    let values =
                        params![key.meeting, key.email, key.audience, key.occurrence, reason];
                    if stmt.execute(values)? == 0 {
                        in_flight.execute(values)?;
                    }
                }
            }
            Ok(())
        };
        self.write_as(replan.inserts.len() + revisions.len() >= BULK_ROWS, write)
    }

    fn plan_stamp(&self) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row("SELECT digest FROM plan_stamp WHERE id = 0", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    fn uid_domain(&self) -> Result<Option<String>, LedgerError> {
        self.conn
            .query_row(
                "SELECT uid_domain FROM calendar_identity WHERE id = 0",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn pin_uid_domain(&mut self, proposed: &str) -> Result<String, LedgerError> {
        if let Some(pinned) = self.uid_domain()? {
            return Ok(pinned);
        }
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO calendar_identity (id, uid_domain) VALUES (0, ?1)",
                [proposed],
            )?;
            tx.query_row(
                "SELECT uid_domain FROM calendar_identity WHERE id = 0",
                [],
                |r| r.get(0),
            )
        })
    }

    fn recover_sending(&mut self) -> Result<Vec<MailKey>, LedgerError> {
        // Read first, like `pin_uid_domain`: after a clean stop there is nothing to recover, and
        // a start takes no write lock before its plan (written after READY).
        let interrupted: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM mails WHERE state = 'sending')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !interrupted {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            // Withdrawn while it was being sent: not sent again (see `LedgerRow::withdrawn`).
            tx.execute(
                "UPDATE mails SET state = 'skipped', last_error = withdrawn, \
                 next_attempt_ms = NULL, withdrawn = NULL \
                 WHERE state = 'sending' AND withdrawn IS NOT NULL",
                [],
            )?;
            let keys = {
                let mut stmt = tx.prepare(
                    "SELECT meeting, email, audience, occurrence FROM mails \
                     WHERE state = 'sending' ORDER BY due_ms",
                )?;
                stmt.query_map([], |r| {
                    Ok(MailKey {
                        meeting: r.get(0)?,
                        email: r.get(1)?,
                        audience: r.get(2)?,
                        occurrence: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.execute(
                "UPDATE mails SET state = 'pending', next_attempt_ms = NULL \
                 WHERE state = 'sending'",
                [],
            )?;
            Ok(keys)
        })
    }

    fn claim(&mut self, key: &MailKey, now: Timestamp) -> Result<Option<LedgerRow>, LedgerError> {
        let changed = self.write(|tx| {
            tx.execute(
                &format!(
                    "UPDATE mails SET state = 'sending', attempts = attempts + 1, withdrawn = NULL \
                     WHERE {KEY_WHERE} AND state = 'pending' AND due_ms <= ?5 \
                     AND (next_attempt_ms IS NULL OR next_attempt_ms <= ?5) \
                     AND ?5 < starts_ms AND (attempts > 0 OR ?5 <= deadline_ms)"
                ),
                params![
                    key.meeting,
                    key.email,
                    key.audience,
                    key.occurrence,
                    ms(now)
                ],
            )
        })?;
        if changed == 0 {
            return Ok(None);
        }
        self.row(key)
    }

    fn settle(
        &mut self,
        key: &MailKey,
        from: MailState,
        outcome: &Outcome,
    ) -> Result<Option<MailState>, LedgerError> {
        self.settle_where(key, from, outcome, None)
    }

    fn settle_decided(&mut self, row: &LedgerRow, outcome: &Outcome) -> Result<bool, LedgerError> {
        Ok(self
            .settle_where(&row.key, MailState::Pending, outcome, Some(row))?
            .is_some())
    }

    fn withdrawn(&self, key: &MailKey) -> Result<Option<String>, LedgerError> {
        self.conn
            .prepare_cached(&format!("SELECT withdrawn FROM mails WHERE {KEY_WHERE}"))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![key.meeting, key.email, key.audience, key.occurrence],
                    |r| r.get::<_, Option<String>>(0),
                )
                .optional()
            })
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    fn release(&mut self, filter: &ReleaseFilter) -> Result<usize, LedgerError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE mails SET state = 'pending', released = 1, last_error = NULL \
                 WHERE state = 'held' AND (?1 IS NULL OR meeting = ?1) \
                 AND (?2 IS NULL OR email = ?2)",
                params![filter.meeting, filter.email],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params_from_iter;

    use super::*;

    /// The first pin wins, for good: later pins (a renamed network) get the first one back, and
    /// so does the file opened again.
    #[test]
    fn the_uid_domain_is_pinned_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open_in(dir.path()).expect("open");
        assert_eq!(store.uid_domain().expect("read"), None);
        let first = store.pin_uid_domain("lednet.convenor").expect("pin");
        assert_eq!(first, "lednet.convenor");
        let again = store.pin_uid_domain("london-edn.convenor").expect("pin");
        assert_eq!(again, "lednet.convenor");
        drop(store);
        let mut store = SqliteStore::open_in(dir.path()).expect("reopen");
        assert_eq!(
            store.uid_domain().expect("read").as_deref(),
            Some("lednet.convenor")
        );
        assert_eq!(
            store.pin_uid_domain("other.convenor").expect("pin"),
            "lednet.convenor"
        );
    }

    #[test]
    fn the_scheduler_queries_search_indexes_and_never_scan_the_ledger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_in(dir.path()).expect("open");
        let plan = |sql: &str| -> String {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let zeros =
                rusqlite::params_from_iter(std::iter::repeat_n(0_i64, stmt.parameter_count()));
            let details: Vec<String> = stmt
                .query_map(zeros, |r| r.get::<_, String>(3))
                .and_then(|it| it.collect())
                .expect("plan");
            details.join("; ")
        };
        let due = plan(&due_rows_sql());
        assert!(
            due.contains("USING INDEX mails_by_state_due (state=? AND due_ms<?)"),
            "{due}"
        );
        let first = plan(FIRST_DUE_SQL);
        assert!(first.contains("USING INDEX mails_by_state_due"), "{first}");
        assert!(!first.contains("TEMP B-TREE"), "{first}");
        let retry = plan(NEXT_RETRY_SQL);
        assert!(retry.contains("USING INDEX mails_retrying"), "{retry}");
    }

    /// A bad row in a multi-row INSERT ends the whole transaction there and then (`OR
    /// ROLLBACK`: no statement journal), with an error; nothing of the transaction stays, and no
    /// row is dropped silently (as `OR IGNORE` would).
    /// The values of one mail row as [`insert_sql`] takes them, due at 1 s, its deadline at 2 s,
    /// starting at 3 s (a row `sent` at 1.5 s).
    fn raw_row(meeting: &str, email: &str, state: &str, attempts: i64) -> Vec<Value> {
        let text = |s: &str| Value::Text(s.to_owned());
        vec![
            text(meeting),
            text(email),
            text("list"),
            Value::Integer(0),
            Value::Integer(1_000),
            Value::Integer(2_000),
            Value::Integer(3_000),
            text(state),
            Value::Integer(attempts),
            Value::Null,
            Value::Null,
            text(&format!("<{meeting}.{email}@x>")),
            if state == "sent" {
                Value::Integer(1_500)
            } else {
                Value::Null
            },
            Value::Null,
            Value::Integer(500),
            Value::Integer(0),
        ]
    }

    #[test]
    fn a_bad_row_in_a_bulk_insert_ends_the_whole_transaction_with_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open_in(dir.path()).expect("open");
        let row = |meeting: &str, state: &str| raw_row(meeting, "agenda-call", state, 0);
        let outcome = crate::sqlite_file::write_immediate(
            &mut store.conn,
            |e| e,
            |tx| {
                tx.execute(&insert_sql(1), params_from_iter(row("m1", "pending")))?;
                let two = row("m2", "pending").into_iter().chain(row("m3", "bogus"));
                let err = tx
                    .execute(&insert_sql(2), params_from_iter(two))
                    .expect_err("the CHECK on state refuses `bogus`");
                assert!(
                    tx.is_autocommit(),
                    "the INSERT itself ended the transaction"
                );
                Err::<(), _>(err)
            },
        );
        let err = outcome.expect_err("the write fails");
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation),
            "{err}"
        );
        assert_eq!(store.rows().expect("rows"), Vec::new());
        crate::sqlite_file::write_immediate(
            &mut store.conn,
            |e| e,
            |tx| tx.execute(&insert_sql(1), params_from_iter(row("m1", "pending"))),
        )
        .expect("the ledger still takes writes");
        assert_eq!(store.rows().expect("rows").len(), 1);
    }

    /// `/metrics`' aggregate query counts what reading every row counts.
    #[test]
    fn mail_counts_agree_with_the_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open_in(dir.path()).expect("open");
        let rows = [
            ("m1", "agenda-call", "sent", 1),
            ("m2", "agenda-call", "sent", 3),
            ("m3", "agenda-call", "pending", 0),
            ("m1", "reminder", "pending", 2),
            ("m2", "reminder", "failed", 5),
            ("m3", "reminder", "skipped", 0),
            ("m4", "reminder", "held", 0),
            ("m5", "reminder", "sending", 1),
        ];
        for (meeting, email, state, attempts) in rows {
            let values = raw_row(meeting, email, state, attempts);
            crate::sqlite_file::write_immediate(
                &mut store.conn,
                |e| e,
                |tx| tx.execute(&insert_sql(1), params_from_iter(values)),
            )
            .expect("insert");
        }
        let mut expected: Vec<(String, &str, u64, u64)> = Vec::new();
        for row in store.rows().expect("rows") {
            let retries = u64::from(row.attempts.saturating_sub(1));
            match (expected.iter_mut())
                .find(|e| (e.0.as_str(), e.1) == (row.key.email.as_str(), row.state.as_str()))
            {
                Some(e) => (e.2, e.3) = (e.2 + 1, e.3 + retries),
                None => expected.push((row.key.email.clone(), row.state.as_str(), 1, retries)),
            }
        }
        let mut counted: Vec<(String, &str, u64, u64)> = (store.mail_counts().expect("counts"))
            .into_iter()
            .map(|c| (c.email, c.state.as_str(), c.rows, c.retries))
            .collect();
        expected.sort();
        counted.sort();
        assert_eq!(counted, expected);
        assert!(counted.contains(&("agenda-call".into(), "sent", 2, 2)));
        assert!(counted.contains(&("reminder".into(), "failed", 1, 4)));
    }

    #[test]
    fn the_connection_is_wal_full_sync_with_a_busy_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_in(dir.path()).expect("open");
        let get = |p: &str| -> i64 {
            store
                .conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .expect(p)
        };
        assert_eq!(get("synchronous"), 2, "FULL");
        assert_eq!(get("busy_timeout"), 10_000);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
    }
}
