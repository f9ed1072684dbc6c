//! Revisions a start served before its plan was committed, kept for the next start.
//!
//! Why: a start whose plan raises no SEQUENCE serves the feeds (READY) before it commits the
//! plan (`daemon::FirstPlan`), so a meeting new to the ledger is served at SEQUENCE 0 before
//! the ledger has it. Should that plan never be committed (a crash, a ledger refusing writes)
//! and the meeting be moved before the next start, that start would serve SEQUENCE 0 again for
//! other times, and a calendar that took the first could keep it. So before READY those
//! revisions are written, synced, to [`FILE`] in the state directory; the next reconciliation
//! reads them as if the ledger held them (a move from them raises SEQUENCE, and they are
//! written to the ledger as they were served), and the file goes once a plan is committed.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::Path,
};

use crate::{model::MeetingId, revision::StoredRevision};

/// The file, in the state directory.
pub const FILE: &str = "served-unplanned.json";

/// Writes `revisions` (those of meetings the ledger does not hold) to [`FILE`] in `dir`, synced
/// and renamed into place, so a crash leaves the whole file or the one before.
pub fn write<'a>(
    dir: &Path,
    revisions: impl Iterator<Item = (&'a MeetingId, &'a StoredRevision)>,
) -> io::Result<()> {
    let by_id: BTreeMap<&str, &StoredRevision> =
        revisions.map(|(id, rev)| (id.as_str(), rev)).collect();
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut out = io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer(&mut out, &by_id).map_err(io::Error::other)?;
    out.flush()?;
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The revisions in [`FILE`] in `dir`: none when there is no such file. A file that cannot be
/// read is logged and read as none (what it guarded is then as before this file existed).
pub fn read(dir: &Path) -> BTreeMap<MeetingId, StoredRevision> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; ignored", path.display());
            return BTreeMap::new();
        }
    };
    match serde_json::from_str::<BTreeMap<String, StoredRevision>>(&text) {
        Ok(by_id) => (by_id.into_iter())
            .filter_map(|(id, rev)| MeetingId::parse(&id).ok().map(|id| (id, rev)))
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; ignored", path.display());
            BTreeMap::new()
        }
    }
}

/// Removes [`FILE`] from `dir` once a plan is committed (the ledger then holds what it held).
pub fn remove(dir: &Path) {
    match std::fs::remove_file(dir.join(FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // Harmless: the revisions it holds are in the ledger now, which takes precedence.
        Err(e) => tracing::warn!("cannot remove {}: {e}", dir.join(FILE).display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_revisions_are_read_back_and_gone_once_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).is_empty());
        let path = std::path::Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let config = crate::config::parse(path, &text, &Default::default())
            .expect("valid")
            .config;
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        let revisions: BTreeMap<MeetingId, StoredRevision> = (config.meetings.iter())
            .map(|m| {
                let rev = crate::revision::next_revision(None, &config, m, now).0;
                (m.id.clone(), rev)
            })
            .collect();
        write(dir.path(), revisions.iter()).expect("write");
        assert_eq!(read(dir.path()), revisions);
        remove(dir.path());
        assert!(read(dir.path()).is_empty());
        remove(dir.path());
        std::fs::write(dir.path().join(FILE), "not json").expect("write");
        assert!(read(dir.path()).is_empty(), "a damaged file reads as none");
    }
}
