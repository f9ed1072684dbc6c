//! The agenda store: `agenda.sqlite3` in the state directory (WAL, `synchronous=FULL`,
//! `busy_timeout`, writes in `BEGIN IMMEDIATE`), tables created with `CREATE TABLE IF NOT EXISTS`.
//!
//! A file of its own rather than tables in the mail ledger: its rows come from the public web
//! form and from the CLI while the daemon runs, so it gets its own connection and lock, and a
//! flood of proposals never waits on (or holds up) the scheduler's ledger. Nothing of the agenda
//! is deleted: a proposal for a cancelled or removed meeting stays, and every decision is a row
//! in `decisions` with who and when. Lead tokens are the exception: each has an expiry
//! (`expires_ms`), and a token's row is deleted [`EXPIRED_TOKENS_KEPT`] after it (whenever a
//! new token is issued), so the table holds the recent links only.
//!
//! The recipients a lead mail reached while it was not sent (the team, while the relay put the
//! lead off) are kept in `notify_done`, so its retries, after a restart too, leave them out.
//!
//! A proposal is owed a mail to its lead while `notify_wanted` is set and `notified_ms` is not:
//! a sent mail sets `notified_ms`; giving the mail up for good (the meeting started, or the
//! server refused it) clears `notify_wanted` and keeps the reason in `notify_error`; moving an
//! undecided proposal whose mail was owed and never sent makes it owed again
//! ([`AgendaStore::move_to`]). Both are
//! columns every file has (see below), so giving up needs no migration.
//!
//! Upgrades: [`AgendaStore::open`] brings a file written by an earlier version up to date. A
//! `proposals` table without `notify_wanted` (before lead mails were owed) gets it, no proposal
//! owed; one without `notify_done` gets it, empty. A `lead_tokens` table without `expires_ms` (before lead links expired) gets the column, and
//! each of its tokens expires [`LeadLinkLifetime::DEFAULT`] after it was issued, as if the
//! expiry had always been there: a link mailed last week keeps its remaining weeks, one mailed
//! years ago is refused at once. A row without an expiry written later by an older binary
//! (after a rollback) gets the same at the next open.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::{
    model::{NewProposal, Proposal, Status},
    token::Standing,
};
use crate::model::LeadLinkLifetime;

/// The store's file name in the state directory.
pub const AGENDA_FILE: &str = "agenda.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS proposals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting      TEXT    NOT NULL,
    priority     TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    organisation TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    presents     INTEGER NOT NULL,
    minutes      INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('proposed', 'accepted', 'declined')),
    position     INTEGER,
    created_ms   INTEGER NOT NULL,
    decided_by   TEXT,
    decided_ms   INTEGER,
    notify_wanted INTEGER NOT NULL DEFAULT 0,
    notified_ms  INTEGER,
    notify_error TEXT,
    notify_done  TEXT
);
CREATE INDEX IF NOT EXISTS proposals_by_email ON proposals (email, created_ms);
CREATE INDEX IF NOT EXISTS proposals_by_meeting ON proposals (meeting, created_ms);
CREATE TABLE IF NOT EXISTS decisions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    proposal  INTEGER NOT NULL REFERENCES proposals (id),
    action    TEXT    NOT NULL,
    detail    TEXT,
    by        TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lead_tokens (
    hash        TEXT    NOT NULL PRIMARY KEY,
    priority    TEXT    NOT NULL,
    lead_email  TEXT    NOT NULL,
    issued_ms   INTEGER NOT NULL,
    revoked_ms  INTEGER,
    note        TEXT    NOT NULL,
    expires_ms  INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
);
";

/// How long a lead token's row is kept after it expired: meanwhile its link answers "expired"
/// (410, with what to do) rather than "no such page" (404). 90 days covers a meeting cycle (a
/// lead going back to the mail of the last call). Pruned when a token is issued.
pub const EXPIRED_TOKENS_KEPT: SignedDuration = SignedDuration::from_hours(90 * 24);

/// Whether `table` has a column `column`.
fn has_column(tx: &rusqlite::Transaction<'_>, table: &str, column: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )
}

/// Brings a file written by an earlier version up to date (see the module docs). Idempotent,
/// run in one `BEGIN IMMEDIATE` transaction at every open, so two processes opening the same
/// old file at once migrate it once.
fn migrate(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    if !has_column(tx, "lead_tokens", "expires_ms")? {
        // Nullable, like a fresh file's: an older binary (after a rollback) inserts without it.
        tx.execute_batch("ALTER TABLE lead_tokens ADD COLUMN expires_ms INTEGER")?;
    }
    // A file from before lead mails were owed (`notify_wanted`): its proposals were mailed, or
    // not, by the version that stored them; none is owed now.
    if !has_column(tx, "proposals", "notify_wanted")? {
        tx.execute_batch(
            "ALTER TABLE proposals ADD COLUMN notify_wanted INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    // A file from before the lead mail's recipients reached were kept (`notify_done`).
    if !has_column(tx, "proposals", "notify_done")? {
        tx.execute_batch("ALTER TABLE proposals ADD COLUMN notify_done TEXT")?;
    }
    tx.execute(
        "UPDATE lead_tokens SET expires_ms = issued_ms + ?1 WHERE expires_ms IS NULL",
        params![LeadLinkLifetime::DEFAULT.duration().as_secs() * 1000],
    )?;
    Ok(())
}

const COLUMNS: &str = "id, meeting, priority, name, organisation, email, title, summary, \
    presents, minutes, status, position, created_ms, decided_by, decided_ms";

/// Why the agenda store failed.
#[derive(Debug, thiserror::Error)]
pub enum AgendaError {
    /// SQLite failed.
    #[error("agenda store {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// The file refused WAL mode.
    #[error("agenda store {path}: cannot switch to WAL mode (journal mode is `{mode}`)")]
    NotWal {
        /// The file.
        path: String,
        /// The journal mode it kept.
        mode: String,
    },
    /// No proposal with this number.
    #[error("no proposal #{0}")]
    NoProposal(i64),
    /// The random source failed.
    #[error(transparent)]
    Random(#[from] super::token::RandomError),
}

/// A stored lead token (its hash only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the token.
    pub hash: String,
    /// The priority it opens.
    pub priority: String,
    /// The lead's address when it was issued; a token stops working when the lead changes.
    pub lead_email: String,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it was revoked, if it was.
    pub revoked: Option<Timestamp>,
    /// When it stops working.
    pub expires: Timestamp,
}

impl TokenRow {
    /// Whether the token opens its page at `now` (see [`Standing::of`]). The lead having
    /// changed since is the caller's to check, against the config in force.
    pub fn standing_at(&self, now: Timestamp) -> Standing {
        Standing::of(self.revoked.is_some(), self.expires, now)
    }
}

/// A token just issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token to hand out (in a link, see [`crate::agenda::lead_url`]); never stored.
    pub raw: String,
    /// When it stops working.
    pub expires: Timestamp,
}

/// One recorded action on a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRow {
    /// The proposal.
    pub proposal: i64,
    /// `proposed`, `accepted`, `declined`, `moved`, `ordered`.
    pub action: String,
    /// Details (the new meeting, position, minutes).
    pub detail: Option<String>,
    /// Who.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// The agenda store.
pub struct AgendaStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for AgendaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgendaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn ts(ms: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

fn read(r: &Row<'_>) -> rusqlite::Result<Proposal> {
    let status: String = r.get(10)?;
    let status = Status::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Text,
            format!("unknown status `{status}`").into(),
        )
    })?;
    Ok(Proposal {
        id: r.get(0)?,
        meeting: r.get(1)?,
        priority: r.get(2)?,
        name: r.get(3)?,
        organisation: r.get(4)?,
        email: r.get(5)?,
        title: r.get(6)?,
        summary: r.get(7)?,
        presents: r.get(8)?,
        minutes: r.get(9)?,
        status,
        position: r.get(11)?,
        created: ts(r.get(12)?)?,
        decided_by: r.get(13)?,
        decided_at: r.get::<_, Option<i64>>(14)?.map(ts).transpose()?,
    })
}

impl AgendaStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, AgendaError> {
        let conn = crate::sqlite_file::open(path, SCHEMA).map_err(|e| match e {
            crate::sqlite_file::OpenError::Sqlite(source) => AgendaError::Sqlite {
                path: path.display().to_string(),
                source,
            },
            crate::sqlite_file::OpenError::NotWal(mode) => AgendaError::NotWal {
                path: path.display().to_string(),
                mode,
            },
        })?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.write(|tx| {
            migrate(tx).map_err(|source| AgendaError::Sqlite {
                path: path.display().to_string(),
                source,
            })
        })?;
        Ok(store)
    }

    /// Opens the store in `state_dir` ([`AGENDA_FILE`]).
    pub fn open_in(state_dir: &Path) -> Result<Self, AgendaError> {
        Self::open(&state_dir.join(AGENDA_FILE))
    }

    fn err(&self, source: rusqlite::Error) -> AgendaError {
        AgendaError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, AgendaError>,
    ) -> Result<T, AgendaError> {
        let path = self.path.display().to_string();
        let err = |source| AgendaError::Sqlite {
            path: path.clone(),
            source,
        };
        crate::sqlite_file::write_immediate(&mut self.conn, err, f)
    }

    /// Stores a new proposal as `proposed`, with a `proposed` decision row; returns its number.
    /// With `notify`, the proposal is marked as owed a mail to its lead until
    /// [`AgendaStore::mark_notified`] records one sent (see [`AgendaStore::unnotified`]).
    pub fn add(
        &mut self,
        p: &NewProposal,
        by: &str,
        notify: bool,
        now: Timestamp,
    ) -> Result<i64, AgendaError> {
        let path = self.path.display().to_string();
        self.write(|tx| {
            let e = |source| AgendaError::Sqlite {
                path: path.clone(),
                source,
            };
            tx.execute(
                "INSERT INTO proposals (meeting, priority, name, organisation, email, title, \
                 summary, presents, minutes, status, created_ms, notify_wanted) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'proposed', ?10, ?11)",
                params![
                    p.meeting.as_str(),
                    p.priority,
                    p.name,
                    p.organisation,
                    p.email,
                    p.title,
                    p.summary,
                    p.presents,
                    p.minutes,
                    now.as_millisecond(),
                    notify
                ],
            )
            .map_err(e)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO decisions (proposal, action, by, at_ms) VALUES (?1, 'proposed', ?2, ?3)",
                params![id, by, now.as_millisecond()],
            )
            .map_err(e)?;
            Ok(id)
        })
    }

    /// Proposals from `email` (for any meeting) since `since`, and from anyone for `meeting`
    /// since `since` (rate limits).
    pub fn counts_since(
        &self,
        email: &str,
        meeting: &str,
        since: Timestamp,
    ) -> Result<(u32, u32), AgendaError> {
        let ms = since.as_millisecond();
        let one: u32 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM proposals WHERE email = ?1 AND created_ms >= ?2",
                params![email, ms],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let all: u32 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM proposals WHERE meeting = ?1 AND created_ms >= ?2",
                params![meeting, ms],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok((one, all))
    }

    /// Every proposal (of one meeting, when given), oldest first.
    pub fn proposals(&self, meeting: Option<&str>) -> Result<Vec<Proposal>, AgendaError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM proposals WHERE ?1 IS NULL OR meeting = ?1 ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![meeting], read)
            .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))
    }

    /// One proposal.
    pub fn proposal(&self, id: i64) -> Result<Proposal, AgendaError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM proposals WHERE id = ?1"),
                params![id],
                read,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(AgendaError::NoProposal(id))
    }

    fn record(
        tx: &rusqlite::Transaction<'_>,
        id: i64,
        action: &str,
        detail: Option<&str>,
        by: &str,
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO decisions (proposal, action, detail, by, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, action, detail, by, now.as_millisecond()],
        )
        .map(|_| ())
    }

    /// Runs one update of proposal `id` and records it; fails when there is no such proposal.
    fn change(
        &mut self,
        id: i64,
        sql: &str,
        values: &[&dyn rusqlite::ToSql],
        (action, detail): (&str, Option<&str>),
        by: &str,
        now: Timestamp,
    ) -> Result<(), AgendaError> {
        let path = self.path.display().to_string();
        self.write(|tx| {
            let e = |source| AgendaError::Sqlite {
                path: path.clone(),
                source,
            };
            let n = tx.execute(sql, values).map_err(e)?;
            if n == 0 {
                return Err(AgendaError::NoProposal(id));
            }
            Self::record(tx, id, action, detail, by, now).map_err(e)
        })
    }

    /// Accepts or declines proposal `id`, recording who and when.
    pub fn decide(
        &mut self,
        id: i64,
        status: Status,
        by: &str,
        now: Timestamp,
    ) -> Result<(), AgendaError> {
        let ms = now.as_millisecond();
        self.change(
            id,
            "UPDATE proposals SET status = ?1, decided_by = ?2, decided_ms = ?3 WHERE id = ?4",
            &[&status.as_str(), &by, &ms, &id],
            (status.as_str(), None),
            by,
            now,
        )
    }

    /// Moves proposal `id` to another meeting (its decision stands; its position is cleared).
    /// A proposal still undecided whose lead was never mailed about it, though a mail was owed
    /// (given up: its meeting started first, or the server refused it), is owed the mail again,
    /// for its new meeting: whom an attempt reached is forgotten, as the mail is a new one.
    pub fn move_to(
        &mut self,
        id: i64,
        meeting: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(), AgendaError> {
        self.change(
            id,
            "UPDATE proposals SET meeting = ?1, position = NULL, \
             notify_wanted = CASE WHEN status = 'proposed' AND notified_ms IS NULL \
                 AND (notify_wanted = 1 OR notify_error IS NOT NULL) THEN 1 ELSE notify_wanted END, \
             notify_done = CASE WHEN status = 'proposed' AND notified_ms IS NULL \
                 AND (notify_wanted = 1 OR notify_error IS NOT NULL) THEN NULL ELSE notify_done END, \
             notify_error = CASE WHEN status = 'proposed' AND notified_ms IS NULL \
                 THEN NULL ELSE notify_error END \
             WHERE id = ?2",
            &[&meeting, &id],
            ("moved", Some(&format!("to {meeting}"))),
            by,
            now,
        )
    }

    /// Sets the running position and, when given, the minutes of proposal `id`.
    pub fn order(
        &mut self,
        id: i64,
        position: i64,
        minutes: Option<u32>,
        by: &str,
        now: Timestamp,
    ) -> Result<(), AgendaError> {
        let detail = match minutes {
            Some(m) => format!("position {position}, {m} min"),
            None => format!("position {position}"),
        };
        self.change(
            id,
            "UPDATE proposals SET position = ?1, minutes = COALESCE(?2, minutes) WHERE id = ?3",
            &[&position, &minutes, &id],
            ("ordered", Some(&detail)),
            by,
            now,
        )
    }

    /// Every recorded action on proposal `id`, oldest first.
    pub fn decisions(&self, id: i64) -> Result<Vec<DecisionRow>, AgendaError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT proposal, action, detail, by, at_ms FROM decisions \
                 WHERE proposal = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![id], |r| {
            Ok(DecisionRow {
                proposal: r.get(0)?,
                action: r.get(1)?,
                detail: r.get(2)?,
                by: r.get(3)?,
                at: ts(r.get(4)?)?,
            })
        })
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| self.err(e))
    }

    /// Records an attempt to tell the lead of proposal `id`: sent at `now` (`error` `None`), or
    /// not, with `error`; `reached` (whom a failed attempt got the mail to anyway: the team,
    /// while the relay put the lead off) is added to [`AgendaStore::notify_done`] in the same
    /// commit, so a retry, after a restart too, leaves them out.
    pub fn mark_notified(
        &mut self,
        id: i64,
        now: Timestamp,
        error: Option<&str>,
        reached: &[String],
    ) -> Result<(), AgendaError> {
        self.mark_notified_where(id, None, now, error, reached)
            .map(drop)
    }

    /// [`AgendaStore::mark_notified`] for an attempt whose mail was about `meeting`: recorded
    /// only while the proposal is still for that meeting. False when it was moved meanwhile
    /// (`convenor agenda move`): the mail owed now is about the new meeting, and this attempt
    /// neither settles it nor adds to whom it reached.
    pub fn mark_notified_for(
        &mut self,
        id: i64,
        meeting: &str,
        now: Timestamp,
        error: Option<&str>,
        reached: &[String],
    ) -> Result<bool, AgendaError> {
        self.mark_notified_where(id, Some(meeting), now, error, reached)
    }

    fn mark_notified_where(
        &mut self,
        id: i64,
        meeting: Option<&str>,
        now: Timestamp,
        error: Option<&str>,
        reached: &[String],
    ) -> Result<bool, AgendaError> {
        let ms = error.is_none().then(|| now.as_millisecond());
        let reached = (!reached.is_empty()).then(|| reached.join("\n"));
        let changed = self
            .conn
            .execute(
                "UPDATE proposals SET notified_ms = ?1, notify_error = ?2, notify_done = CASE \
                 WHEN ?4 IS NULL THEN notify_done WHEN notify_done IS NULL THEN ?4 \
                 ELSE notify_done || char(10) || ?4 END \
                 WHERE id = ?3 AND (?5 IS NULL OR meeting = ?5)",
                params![ms, error, id, reached, meeting],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// True while proposal `id` is owed a mail to its lead (see the module docs).
    pub fn is_owed(&self, id: i64) -> Result<bool, AgendaError> {
        self.conn
            .query_row(
                "SELECT notify_wanted = 1 AND notified_ms IS NULL FROM proposals WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map(|owed| owed.unwrap_or(false))
            .map_err(|e| self.err(e))
    }

    /// The recipients the mail to the lead of proposal `id` already got to (see
    /// [`AgendaStore::mark_notified`]); empty for an unknown proposal.
    pub fn notify_done(&self, id: i64) -> Result<Vec<String>, AgendaError> {
        let stored: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT notify_done FROM proposals WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(stored
            .flatten()
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// Records that proposal `id` is no longer owed a mail to its lead, unsent, and why
    /// (`reason`, kept in `notify_error`): the meeting started first, or the server refused the
    /// mail for good. From then on [`AgendaStore::unnotified`] leaves it out, so a start gives
    /// it up once, not again at every start. A mail already recorded sent stays so.
    pub fn give_up_notify(&mut self, id: i64, reason: &str) -> Result<(), AgendaError> {
        self.give_up_notify_where(id, None, reason).map(drop)
    }

    /// [`AgendaStore::give_up_notify`] for a mail about `meeting`, only while the proposal is
    /// still for it; false when it was moved meanwhile (the mail owed now is another one).
    pub fn give_up_notify_for(
        &mut self,
        id: i64,
        meeting: &str,
        reason: &str,
    ) -> Result<bool, AgendaError> {
        self.give_up_notify_where(id, Some(meeting), reason)
    }

    fn give_up_notify_where(
        &mut self,
        id: i64,
        meeting: Option<&str>,
        reason: &str,
    ) -> Result<bool, AgendaError> {
        let changed = self
            .conn
            .execute(
                "UPDATE proposals SET notify_wanted = 0, notify_error = ?1 \
                 WHERE id = ?2 AND notified_ms IS NULL AND (?3 IS NULL OR meeting = ?3)",
                params![reason, id, meeting],
            )
            .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// Proposals still owed a mail to their lead (the mail failed, or the daemon stopped first),
    /// leaving out those given up ([`AgendaStore::give_up_notify`]).
    pub fn unnotified(&self) -> Result<Vec<i64>, AgendaError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id FROM proposals WHERE notify_wanted = 1 AND notified_ms IS NULL ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|it| it.collect::<rusqlite::Result<Vec<i64>>>())
            .map_err(|e| self.err(e))
    }

    /// Issues a new token for the lead of `priority`, working from `now` for `lifetime`, and
    /// returns it (only its hash is stored). In the same transaction, deletes the rows of
    /// tokens that expired more than [`EXPIRED_TOKENS_KEPT`] before `now`.
    pub fn issue_token(
        &mut self,
        priority: &str,
        lead_email: &str,
        note: &str,
        lifetime: LeadLinkLifetime,
        now: Timestamp,
    ) -> Result<IssuedToken, AgendaError> {
        let (raw, hash) = super::token::issue()?;
        let expires = lifetime.expiry(now);
        let path = self.path.display().to_string();
        self.write(|tx| {
            let e = |source| AgendaError::Sqlite {
                path: path.clone(),
                source,
            };
            Self::prune_tokens(tx, now).map_err(e)?;
            tx.execute(
                "INSERT INTO lead_tokens (hash, priority, lead_email, issued_ms, note, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash,
                    priority,
                    lead_email,
                    now.as_millisecond(),
                    note,
                    expires.as_millisecond()
                ],
            )
            .map_err(e)?;
            Ok(IssuedToken { raw, expires })
        })
    }

    /// Deletes the rows of tokens that expired more than [`EXPIRED_TOKENS_KEPT`] before `now`
    /// (revoked or not); returns how many.
    fn prune_tokens(tx: &rusqlite::Transaction<'_>, now: Timestamp) -> rusqlite::Result<usize> {
        let cutoff = now
            .checked_sub(EXPIRED_TOKENS_KEPT)
            .unwrap_or(Timestamp::MIN);
        tx.execute(
            "DELETE FROM lead_tokens WHERE expires_ms <= ?1",
            params![cutoff.as_millisecond()],
        )
    }

    /// Revokes every token of `priority` that still works at `now`; returns how many.
    pub fn revoke_tokens(&mut self, priority: &str, now: Timestamp) -> Result<usize, AgendaError> {
        let ms = now.as_millisecond();
        self.conn
            .execute(
                "UPDATE lead_tokens SET revoked_ms = ?1 WHERE priority = ?2 \
                 AND revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > ?1)",
                params![ms, priority],
            )
            .map_err(|e| self.err(e))
    }

    /// The stored token with this hash, if any.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRow>, AgendaError> {
        self.conn
            .query_row(
                "SELECT hash, priority, lead_email, issued_ms, revoked_ms, expires_ms \
                 FROM lead_tokens WHERE hash = ?1",
                params![hash],
                |r| {
                    let issued = ts(r.get(3)?)?;
                    Ok(TokenRow {
                        hash: r.get(0)?,
                        priority: r.get(1)?,
                        lead_email: r.get(2)?,
                        issued,
                        revoked: r.get::<_, Option<i64>>(4)?.map(ts).transpose()?,
                        // None only for a row an older binary wrote since this file was opened
                        // (see the module docs): the rule the next open applies.
                        expires: match r.get::<_, Option<i64>>(5)? {
                            Some(ms) => ts(ms)?,
                            None => LeadLinkLifetime::DEFAULT.expiry(issued),
                        },
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The secret CSRF tokens are made with, created on first use.
    pub fn csrf_secret(&mut self) -> Result<Vec<u8>, AgendaError> {
        let found: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'csrf_secret'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(s) = found {
            return Ok(s);
        }
        let fresh = super::token::random_bytes()?.to_vec();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('csrf_secret', ?1)",
                params![fresh],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'csrf_secret'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MeetingId;

    fn new(email: &str) -> NewProposal {
        NewProposal {
            meeting: MeetingId::parse("2023-02-24").expect("id"),
            priority: "future-places".into(),
            name: "N".into(),
            organisation: "O".into(),
            email: email.into(),
            title: "T".into(),
            summary: "S".into(),
            presents: true,
            minutes: 10,
        }
    }

    /// Moving a proposal makes its lead mail owed again only when it is undecided, the mail was
    /// owed once and never sent: given up (meeting started, or refused) or still being tried.
    /// The recipients an attempt reached are forgotten then: the mail is about another meeting.
    #[test]
    fn a_moved_proposal_is_owed_its_lead_mail_again_only_when_it_never_went_out() {
        let t0: Timestamp = "2023-01-10T10:00:00Z".parse().expect("ts");
        let team = ["team@example.org".to_owned()];
        // (case, from the web, what happened to the mail, decided, owed after the move)
        type Setup = fn(&mut AgendaStore, i64, Timestamp);
        let cases: [(&str, bool, Setup, bool, bool); 7] = [
            (
                "given up: started",
                true,
                |s, id, _| {
                    s.give_up_notify(id, "not sent: the meeting started first")
                        .expect("give up")
                },
                false,
                true,
            ),
            (
                "given up: refused",
                true,
                |s, id, _| s.give_up_notify(id, "550 no such user").expect("give up"),
                false,
                true,
            ),
            (
                "being tried",
                true,
                |s, id, t| {
                    s.mark_notified(id, t, Some("421 later"), &["team@example.org".to_owned()])
                        .expect("attempt")
                },
                false,
                true,
            ),
            (
                "sent",
                true,
                |s, id, t| s.mark_notified(id, t, None, &[]).expect("sent"),
                false,
                false,
            ),
            ("added from the CLI", false, |_, _, _| {}, false, false),
            (
                "given up, then accepted",
                true,
                |s, id, _| {
                    s.give_up_notify(id, "not sent: the meeting started first")
                        .expect("give up")
                },
                true,
                false,
            ),
            (
                "team reached, then given up",
                true,
                |s, id, t| {
                    s.mark_notified(id, t, Some("421 later"), &["team@example.org".to_owned()])
                        .expect("attempt");
                    s.give_up_notify(id, "not sent: the meeting started first")
                        .expect("give up");
                },
                false,
                true,
            ),
        ];
        for (case, web, setup, decided, owed) in cases {
            let dir = tempfile::tempdir().expect("tmp");
            let mut s = AgendaStore::open_in(dir.path()).expect("open");
            let id = s.add(&new("a@example.org"), "web", web, t0).expect("add");
            setup(&mut s, id, t0);
            if decided {
                s.decide(id, Status::Accepted, "team", t0).expect("decide");
            }
            let done_before = s.notify_done(id).expect("done");
            s.move_to(id, "2023-04-21", "team", t0).expect("move");
            let p = s.proposal(id).expect("proposal");
            assert_eq!(p.meeting, "2023-04-21", "{case}");
            assert_eq!(s.unnotified().expect("owed").contains(&id), owed, "{case}");
            let done_after = s.notify_done(id).expect("done");
            if owed {
                assert!(done_after.is_empty(), "{case}: {done_after:?}");
            } else {
                assert_eq!(done_after, done_before, "{case}");
            }
            if case.starts_with("team reached") {
                assert_eq!(done_before, team, "{case}");
            }
        }
    }

    /// An attempt about the meeting a proposal was for is not recorded once the proposal has
    /// moved (`convenor agenda move` during the attempt): the mail about the new meeting stays
    /// owed, and whom the old attempt reached does not count for it. Giving up likewise.
    #[test]
    fn an_attempt_about_the_meeting_a_proposal_moved_from_settles_nothing() {
        let t0: Timestamp = "2023-01-10T10:00:00Z".parse().expect("ts");
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = AgendaStore::open_in(dir.path()).expect("open");
        let id = s.add(&new("a@example.org"), "web", true, t0).expect("add");
        let old = s.proposal(id).expect("proposal").meeting;
        s.move_to(id, "2023-04-21", "team", t0).expect("move");
        let team = ["team@example.org".to_owned()];
        for error in [None, Some("451 put off")] {
            assert!(
                !s.mark_notified_for(id, &old, t0, error, &team)
                    .expect("record")
            );
        }
        assert!(!s.give_up_notify_for(id, &old, "refused").expect("give up"));
        assert!(s.is_owed(id).expect("owed"));
        assert!(s.notify_done(id).expect("done").is_empty());
        // About the meeting it is for now: recorded.
        assert!(
            s.mark_notified_for(id, "2023-04-21", t0, None, &[])
                .expect("record")
        );
        assert!(!s.is_owed(id).expect("owed"));
    }

    #[test]
    fn proposals_decisions_and_tokens_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0: Timestamp = "2023-01-10T10:00:00Z".parse().expect("ts");
        let t1: Timestamp = "2023-01-11T10:00:00Z".parse().expect("ts");
        let (id, token) = {
            let mut s = AgendaStore::open_in(dir.path()).expect("open");
            let id = s.add(&new("a@example.org"), "web", true, t0).expect("add");
            s.add(&new("b@example.org"), "cli", false, t0).expect("add");
            assert_eq!(s.unnotified().expect("unnotified"), [id]);
            s.mark_notified(id, t0, Some("421 try later"), &[])
                .expect("failed");
            assert_eq!(s.unnotified().expect("unnotified"), [id]);
            s.mark_notified(id, t1, None, &[]).expect("sent");
            assert!(s.unnotified().expect("unnotified").is_empty());
            s.decide(id, Status::Accepted, "lead:future-places x@y", t1)
                .expect("decide");
            s.order(id, 2, Some(20), "team", t1).expect("order");
            let token = s
                .issue_token("future-places", "x@y", "cli", LeadLinkLifetime::DEFAULT, t0)
                .expect("token")
                .raw;
            (id, token)
        };
        let mut s = AgendaStore::open_in(dir.path()).expect("reopen");
        let p = s.proposal(id).expect("proposal");
        assert_eq!(
            (p.status, p.position, p.minutes),
            (Status::Accepted, Some(2), 20)
        );
        assert_eq!(p.decided_by.as_deref(), Some("lead:future-places x@y"));
        assert_eq!(p.decided_at, Some(t1));
        let actions: Vec<String> = s
            .decisions(id)
            .expect("decisions")
            .into_iter()
            .map(|d| d.action)
            .collect();
        assert_eq!(actions, ["proposed", "accepted", "ordered"]);
        assert_eq!(
            s.counts_since("a@example.org", "2023-02-24", t0)
                .expect("counts"),
            (1, 2)
        );
        // The second count is the meeting's; the first any meeting's.
        assert_eq!(
            s.counts_since("a@example.org", "2023-03-01", t0)
                .expect("counts"),
            (1, 0)
        );
        let row = s
            .token(&super::super::token::hash(&token))
            .expect("token")
            .expect("found");
        assert_eq!(
            (row.priority.as_str(), row.revoked, row.issued, row.expires),
            (
                "future-places",
                None,
                t0,
                LeadLinkLifetime::DEFAULT.expiry(t0)
            )
        );
        assert!(
            s.token(&token).expect("lookup").is_none(),
            "raw token is never stored"
        );
        assert_eq!(s.revoke_tokens("future-places", t1).expect("revoke"), 1);
        let secret = s.csrf_secret().expect("secret");
        assert_eq!(secret.len(), 32);
        assert_eq!(s.csrf_secret().expect("secret"), secret);
        assert!(matches!(
            s.decide(999, Status::Declined, "team", t1),
            Err(AgendaError::NoProposal(999))
        ));
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("an instant")
    }

    fn lifetime(hours: i64) -> LeadLinkLifetime {
        LeadLinkLifetime::new(SignedDuration::from_hours(hours)).expect("a lifetime")
    }

    fn row(s: &AgendaStore, raw: &str) -> Option<TokenRow> {
        s.token(&super::super::token::hash(raw)).expect("lookup")
    }

    fn token_rows(s: &AgendaStore) -> i64 {
        s.conn
            .query_row("SELECT COUNT(*) FROM lead_tokens", [], |r| r.get(0))
            .expect("count")
    }

    /// Issued at T with lifetime L: usable up to T+L (exclusive), expired from T+L on, whatever
    /// L; the stored expiry survives reopening the file; a revoked token is revoked at every
    /// instant; revoking does not count (or touch) tokens already expired.
    #[test]
    fn a_lead_token_works_until_its_lifetime_is_over_and_not_an_instant_longer() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = at("2026-01-10T10:00:00Z");
        let second = SignedDuration::from_secs(1);
        let milli = SignedDuration::from_millis(1);
        for l in [
            LeadLinkLifetime::MIN,
            lifetime(7 * 24),
            LeadLinkLifetime::DEFAULT,
            LeadLinkLifetime::MAX,
        ] {
            let raw = AgendaStore::open_in(dir.path())
                .expect("open")
                .issue_token("p1", "lead@example.org", "test", l, t)
                .expect("issue")
                .raw;
            let s = AgendaStore::open_in(dir.path()).expect("reopen");
            let stored = row(&s, &raw).expect("stored");
            let end = t + l.duration();
            assert_eq!((stored.issued, stored.expires), (t, end), "{l}");
            for (now, standing) in [
                (t - second, Standing::Usable),
                (t, Standing::Usable),
                (t + second, Standing::Usable),
                (end - second, Standing::Usable),
                (end - milli, Standing::Usable),
                (end, Standing::Expired),
                (end + milli, Standing::Expired),
                (end + second, Standing::Expired),
                (
                    t + SignedDuration::from_hours(10 * 365 * 24),
                    Standing::Expired,
                ),
            ] {
                assert_eq!(stored.standing_at(now), standing, "{l}, at {now}");
            }
        }

        let mut s = AgendaStore::open_in(dir.path()).expect("open");
        let live = s
            .issue_token("p2", "lead@example.org", "test", lifetime(1), t)
            .expect("issue")
            .raw;
        let old = s
            .issue_token(
                "p2",
                "lead@example.org",
                "test",
                lifetime(1),
                t - SignedDuration::from_hours(2),
            )
            .expect("issue")
            .raw;
        assert_eq!(s.revoke_tokens("p2", t + second).expect("revoke"), 1);
        let revoked = row(&s, &live).expect("stored");
        assert_eq!(revoked.revoked, Some(t + second));
        for now in [t, t + second, t + SignedDuration::from_hours(2)] {
            assert_eq!(revoked.standing_at(now), Standing::Revoked, "at {now}");
        }
        let expired = row(&s, &old).expect("stored");
        assert_eq!(
            (expired.revoked, expired.standing_at(t)),
            (None, Standing::Expired)
        );
    }

    /// Issuing a token deletes the rows of tokens expired more than [`EXPIRED_TOKENS_KEPT`]
    /// before, revoked or not, and keeps the others (whose links keep answering "expired").
    #[test]
    fn issuing_a_token_prunes_the_rows_of_tokens_long_expired() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = AgendaStore::open_in(dir.path()).expect("open");
        let t = at("2026-01-10T10:00:00Z");
        let milli = SignedDuration::from_millis(1);
        let issue = |s: &mut AgendaStore, l: LeadLinkLifetime, now: Timestamp| {
            s.issue_token("p1", "lead@example.org", "test", l, now)
                .expect("issue")
                .raw
        };
        let revoked = issue(&mut s, LeadLinkLifetime::MIN, t);
        assert_eq!(s.revoke_tokens("p1", t).expect("revoke"), 1);
        let short = issue(&mut s, LeadLinkLifetime::MIN, t);
        let long = issue(&mut s, LeadLinkLifetime::DEFAULT, t);
        let short_gone = t + LeadLinkLifetime::MIN.duration() + EXPIRED_TOKENS_KEPT;
        let long_gone = t + LeadLinkLifetime::DEFAULT.duration() + EXPIRED_TOKENS_KEPT;

        let just_before = issue(&mut s, LeadLinkLifetime::MIN, short_gone - milli);
        assert_eq!(token_rows(&s), 4);
        let expired = row(&s, &short).expect("kept a while after its expiry");
        assert_eq!(expired.standing_at(short_gone - milli), Standing::Expired);
        assert!(row(&s, &revoked).is_some());

        let at_the_cutoff = issue(&mut s, LeadLinkLifetime::DEFAULT, short_gone);
        assert!(row(&s, &short).is_none() && row(&s, &revoked).is_none());
        assert!(row(&s, &long).is_some() && row(&s, &just_before).is_some());
        assert_eq!(token_rows(&s), 3);

        // `just_before` expired at about `short_gone`, a month before `long_gone`: still kept.
        issue(&mut s, LeadLinkLifetime::MIN, long_gone);
        assert!(row(&s, &long).is_none());
        assert!(row(&s, &just_before).is_some() && row(&s, &at_the_cutoff).is_some());
        assert_eq!(token_rows(&s), 3);
    }

    /// The agenda store's schema before lead links expired, verbatim (as `convenor` up to
    /// commit bf46530 created it): `lead_tokens` without `expires_ms`.
    const SCHEMA_BEFORE_EXPIRY: &str = "
CREATE TABLE IF NOT EXISTS proposals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting      TEXT    NOT NULL,
    priority     TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    organisation TEXT    NOT NULL,
    email        TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    summary      TEXT    NOT NULL,
    presents     INTEGER NOT NULL,
    minutes      INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('proposed', 'accepted', 'declined')),
    position     INTEGER,
    created_ms   INTEGER NOT NULL,
    decided_by   TEXT,
    decided_ms   INTEGER,
    notify_wanted INTEGER NOT NULL DEFAULT 0,
    notified_ms  INTEGER,
    notify_error TEXT
);
CREATE INDEX IF NOT EXISTS proposals_by_email ON proposals (email, created_ms);
CREATE TABLE IF NOT EXISTS decisions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    proposal  INTEGER NOT NULL REFERENCES proposals (id),
    action    TEXT    NOT NULL,
    detail    TEXT,
    by        TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lead_tokens (
    hash        TEXT    NOT NULL PRIMARY KEY,
    priority    TEXT    NOT NULL,
    lead_email  TEXT    NOT NULL,
    issued_ms   INTEGER NOT NULL,
    revoked_ms  INTEGER,
    note        TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
);
";

    /// A file from before lead mails were owed (the schema before `notify_wanted` existed)
    /// opens: the column is added, its proposals are not owed a mail, and new proposals are
    /// stored and owed as usual. Such a file used to fail every `add` and the start's resend.
    #[test]
    fn a_store_from_before_lead_mails_were_owed_is_migrated_when_opened() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(AGENDA_FILE);
        let schema =
            SCHEMA_BEFORE_EXPIRY.replace("    notify_wanted INTEGER NOT NULL DEFAULT 0,\n", "");
        assert_ne!(schema, SCHEMA_BEFORE_EXPIRY);
        {
            let old = crate::sqlite_file::open(&path, &schema).expect("old file");
            old.execute(
                "INSERT INTO proposals (meeting, priority, name, organisation, email, title, \
                 summary, presents, minutes, status, created_ms) \
                 VALUES ('2023-02-24', 'p1', 'N', 'O', 'a@example.org', 'T', 'S', 1, 10, \
                 'proposed', 0)",
                [],
            )
            .expect("proposal the old way");
        }
        let s = AgendaStore::open_in(dir.path()).expect("open and migrate");
        assert_eq!(s.unnotified().expect("owed"), Vec::<i64>::new());
        assert_eq!(s.proposals(None).expect("proposals").len(), 1);
        drop(s);
        // Opening again changes nothing.
        let s = AgendaStore::open_in(dir.path()).expect("open again");
        assert_eq!(s.proposals(None).expect("proposals").len(), 1);
    }

    /// Whom a lead mail reached while it was not sent is kept and added to across attempts
    /// and reopens, also in a file from before the column existed (migrated when opened).
    #[test]
    fn the_recipients_a_lead_mail_reached_are_kept_across_reopens() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(AGENDA_FILE);
        assert!(!SCHEMA_BEFORE_EXPIRY.contains("notify_done"));
        {
            let old = crate::sqlite_file::open(&path, SCHEMA_BEFORE_EXPIRY).expect("old file");
            old.execute(
                "INSERT INTO proposals (meeting, priority, name, organisation, email, title, \
                 summary, presents, minutes, status, created_ms, notify_wanted) \
                 VALUES ('2023-02-24', 'p1', 'N', 'O', 'a@example.org', 'T', 'S', 1, 10, \
                 'proposed', 0, 1)",
                [],
            )
            .expect("proposal the old way");
        }
        let mut s = AgendaStore::open_in(dir.path()).expect("open and migrate");
        let id = s.unnotified().expect("owed")[0];
        assert!(s.notify_done(id).expect("none yet").is_empty());
        let t = Timestamp::UNIX_EPOCH;
        s.mark_notified(id, t, Some("451 put off"), &["team@example.org".into()])
            .expect("add");
        s.mark_notified(id, t, Some("451 put off"), &[])
            .expect("nothing to add");
        drop(s);
        let mut s = AgendaStore::open_in(dir.path()).expect("reopen");
        s.mark_notified(id, t, Some("451 put off"), &["cc@example.org".into()])
            .expect("add");
        assert_eq!(
            s.notify_done(id).expect("read"),
            ["team@example.org", "cc@example.org"]
        );
        assert!(s.notify_done(id + 1).expect("unknown").is_empty());
    }

    /// How the earlier version stored a token (its `issue_token`), on a connection of its own.
    fn insert_token_the_old_way(conn: &Connection, raw: &str, issued: Timestamp) {
        conn.execute(
            "INSERT INTO lead_tokens (hash, priority, lead_email, issued_ms, note) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                super::super::token::hash(raw),
                "p1",
                "lead@example.org",
                issued.as_millisecond(),
                "mail for proposal #1"
            ],
        )
        .expect("insert the old way");
    }

    fn has_expiry_column(path: &Path) -> bool {
        Connection::open(path)
            .expect("open")
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('lead_tokens') \
                 WHERE name = 'expires_ms'",
                [],
                |r| r.get(0),
            )
            .expect("table info")
    }

    /// A file created by the earlier version (its schema, its rows, written the way it wrote
    /// them) opens: its tokens expire 30 days (the default lifetime) after they were issued, so
    /// one from years ago is refused at once and one from yesterday keeps working; a revoked one
    /// stays revoked; proposals and the CSRF secret are untouched. Opening again changes
    /// nothing; a token an older binary writes later (a rollback) gets the same rule.
    #[test]
    fn a_store_from_before_lead_links_expired_is_migrated_when_opened() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(AGENDA_FILE);
        let now = at("2026-01-10T10:00:00Z");
        let day = SignedDuration::from_hours(24);
        let (years_ago, yesterday, revoked_at) = (now - 730 * day, now - day, now - 2 * day);
        {
            let old = crate::sqlite_file::open(&path, SCHEMA_BEFORE_EXPIRY).expect("old file");
            old.execute(
                "INSERT INTO proposals (meeting, priority, name, organisation, email, title, \
                 summary, presents, minutes, status, created_ms, notify_wanted) \
                 VALUES ('2023-02-24', 'p1', 'N', 'O', 'a@example.org', 'T', 'S', 1, 10, \
                 'proposed', ?1, 1)",
                params![years_ago.as_millisecond()],
            )
            .expect("proposal");
            old.execute(
                "INSERT INTO meta (key, value) VALUES ('csrf_secret', ?1)",
                params![vec![7u8; 32]],
            )
            .expect("secret");
            insert_token_the_old_way(&old, &"a".repeat(64), years_ago);
            insert_token_the_old_way(&old, &"b".repeat(64), yesterday);
            insert_token_the_old_way(&old, &"c".repeat(64), yesterday);
            old.execute(
                "UPDATE lead_tokens SET revoked_ms = ?1 WHERE hash = ?2",
                params![
                    revoked_at.as_millisecond(),
                    super::super::token::hash(&"c".repeat(64))
                ],
            )
            .expect("revoke");
        }
        assert!(!has_expiry_column(&path));

        let expiry = |issued: Timestamp| issued + LeadLinkLifetime::DEFAULT.duration();
        let check = |s: &AgendaStore| {
            let recent = row(s, &"b".repeat(64)).expect("kept");
            assert_eq!(recent.expires, expiry(yesterday));
            assert_eq!(recent.standing_at(now), Standing::Usable);
            assert_eq!(
                recent.standing_at(expiry(yesterday) - SignedDuration::from_secs(1)),
                Standing::Usable
            );
            assert_eq!(recent.standing_at(expiry(yesterday)), Standing::Expired);
            let revoked = row(s, &"c".repeat(64)).expect("kept");
            assert_eq!(revoked.revoked, Some(revoked_at));
            assert_eq!(revoked.standing_at(now), Standing::Revoked);
        };
        {
            let mut s = AgendaStore::open(&path).expect("open the old file");
            assert!(has_expiry_column(&path));
            check(&s);
            let old = row(&s, &"a".repeat(64)).expect("kept until a token is issued");
            assert_eq!(old.expires, expiry(years_ago));
            assert_eq!(old.standing_at(now), Standing::Expired);
            // The stored expiries themselves, not a rule applied when read.
            let stored: Vec<Option<i64>> = s
                .conn
                .prepare("SELECT expires_ms FROM lead_tokens ORDER BY issued_ms, hash")
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .expect("expires_ms");
            assert_eq!(
                stored,
                [expiry(years_ago), expiry(yesterday), expiry(yesterday)]
                    .map(|t| Some(t.as_millisecond()))
            );
            assert_eq!(s.proposal(1).expect("proposal").title, "T");
            assert_eq!(s.unnotified().expect("owed"), [1]);
            assert_eq!(s.csrf_secret().expect("secret"), vec![7u8; 32]);
            s.add(&new("b@example.org"), "web", false, now)
                .expect("add");
            let fresh = s
                .issue_token(
                    "p1",
                    "lead@example.org",
                    "cli",
                    LeadLinkLifetime::DEFAULT,
                    now,
                )
                .expect("issue")
                .raw;
            assert_eq!(
                row(&s, &fresh).expect("stored").standing_at(now),
                Standing::Usable
            );
            // Issuing pruned the token that expired long ago, like any other.
            assert!(row(&s, &"a".repeat(64)).is_none());

            // An older binary (a rollback) shares the file and writes a token without expiry.
            let older = Connection::open(&path).expect("second connection");
            insert_token_the_old_way(&older, &"d".repeat(64), yesterday);
            let read = row(&s, &"d".repeat(64)).expect("stored");
            assert_eq!(read.expires, expiry(yesterday));
        }
        let s = AgendaStore::open(&path).expect("open again");
        check(&s);
        let unfilled: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM lead_tokens WHERE expires_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(unfilled, 0);
        assert_eq!(s.proposals(None).expect("proposals").len(), 2);
    }
}
