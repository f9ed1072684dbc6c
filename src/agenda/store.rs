//! The agenda store: `agenda.sqlite3` in the state directory (WAL, `synchronous=FULL`,
//! `busy_timeout`, writes in `BEGIN IMMEDIATE`), tables created with `CREATE TABLE IF NOT EXISTS`.
//!
//! A file of its own rather than tables in the mail ledger: its rows come from the public web
//! form and from the CLI while the daemon runs, so it gets its own connection and lock, and a
//! flood of proposals never waits on (or holds up) the scheduler's ledger. Nothing is deleted:
//! a proposal for a cancelled or removed meeting stays, and every decision is a row in
//! `decisions` with who and when.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::model::{NewProposal, Proposal, Status};

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
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
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

    /// Proposals from `email` since `since`, and from anyone since `since` (rate limits).
    pub fn counts_since(&self, email: &str, since: Timestamp) -> Result<(u32, u32), AgendaError> {
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
                "SELECT COUNT(*) FROM proposals WHERE created_ms >= ?1",
                params![ms],
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
    pub fn move_to(
        &mut self,
        id: i64,
        meeting: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<(), AgendaError> {
        self.change(
            id,
            "UPDATE proposals SET meeting = ?1, position = NULL WHERE id = ?2",
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

    /// Records whether the lead was told of proposal `id`.
    pub fn mark_notified(
        &mut self,
        id: i64,
        now: Timestamp,
        error: Option<&str>,
    ) -> Result<(), AgendaError> {
        let ms = error.is_none().then(|| now.as_millisecond());
        self.conn
            .execute(
                "UPDATE proposals SET notified_ms = ?1, notify_error = ?2 WHERE id = ?3",
                params![ms, error, id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Proposals still owed a mail to their lead (the mail failed, or the daemon stopped first).
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

    /// Issues a new token for the lead of `priority` and returns it (only its hash is stored).
    pub fn issue_token(
        &mut self,
        priority: &str,
        lead_email: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<String, AgendaError> {
        let (raw, hash) = super::token::issue()?;
        self.conn
            .execute(
                "INSERT INTO lead_tokens (hash, priority, lead_email, issued_ms, note) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, priority, lead_email, now.as_millisecond(), note],
            )
            .map_err(|e| self.err(e))?;
        Ok(raw)
    }

    /// Revokes every live token of `priority`; returns how many.
    pub fn revoke_tokens(&mut self, priority: &str, now: Timestamp) -> Result<usize, AgendaError> {
        self.conn
            .execute(
                "UPDATE lead_tokens SET revoked_ms = ?1 WHERE priority = ?2 AND revoked_ms IS NULL",
                params![now.as_millisecond(), priority],
            )
            .map_err(|e| self.err(e))
    }

    /// The stored token with this hash, if any.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRow>, AgendaError> {
        self.conn
            .query_row(
                "SELECT hash, priority, lead_email, issued_ms, revoked_ms FROM lead_tokens \
                 WHERE hash = ?1",
                params![hash],
                |r| {
                    Ok(TokenRow {
                        hash: r.get(0)?,
                        priority: r.get(1)?,
                        lead_email: r.get(2)?,
                        issued: ts(r.get(3)?)?,
                        revoked: r.get::<_, Option<i64>>(4)?.map(ts).transpose()?,
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
            s.mark_notified(id, t0, Some("421 try later"))
                .expect("failed");
            assert_eq!(s.unnotified().expect("unnotified"), [id]);
            s.mark_notified(id, t1, None).expect("sent");
            assert!(s.unnotified().expect("unnotified").is_empty());
            s.decide(id, Status::Accepted, "lead:future-places x@y", t1)
                .expect("decide");
            s.order(id, 2, Some(20), "team", t1).expect("order");
            let token = s
                .issue_token("future-places", "x@y", "cli", t0)
                .expect("token");
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
        assert_eq!(s.counts_since("a@example.org", t0).expect("counts"), (1, 2));
        let row = s
            .token(&super::super::token::hash(&token))
            .expect("token")
            .expect("found");
        assert_eq!(
            (row.priority.as_str(), row.revoked),
            ("future-places", None)
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
}
