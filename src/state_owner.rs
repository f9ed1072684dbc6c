//! Hands the root-owned files a command run as root finds in a state directory (those it made,
//! and any an earlier one left) to that directory's owner.
//!
//! The installed service runs as a dynamic user (`DynamicUser=yes`); its state directory is
//! that user's. `sudo convenor agenda add ...` on a stopped service would otherwise leave
//! root-owned files there (a new `agenda.sqlite3`, a WAL, an outbox file) that the service
//! cannot write, and it would fail at its next start: systemd re-owns a state directory
//! recursively only when the directory itself has the wrong owner, so it does not see them.
//! Dropping privileges instead is not possible here: the service's directory lies under
//! `/var/lib/private` (mode 0700, root's), which only root can pass through.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// While alive, notes a state directory that belongs to another user than the root this process
/// runs as; when dropped, gives every root-owned entry under it to the directory's owner and
/// group. A process ended by a signal (Ctrl-C) does not drop it: its files stay root's, and
/// the next command run as root hands them over. Does nothing when the process is not root, when the directory does not
/// exist yet (systemd adopts a directory root made, whole, at the service's first start) or
/// when root owns it.
#[derive(Debug)]
pub struct HandBack {
    dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl HandBack {
    /// Notes `state_dir`'s owner, before a command that may create files under it.
    pub fn of(state_dir: &Path) -> Self {
        let root = rustix::process::geteuid().is_root();
        let owner = std::fs::metadata(state_dir)
            .ok()
            .filter(|m| root && m.is_dir() && m.uid() != 0)
            .map(|m| (m.uid(), m.gid()));
        Self {
            dir: state_dir.to_path_buf(),
            owner,
        }
    }

    /// Gives the root-owned entries under the directory to its owner now; returns how many,
    /// and the first failure (the others are still tried).
    ///
    /// Everything is done relative to directory descriptors opened without following links,
    /// so an entry swapped for a link while the walk runs cannot lead it outside the
    /// directory; links are re-owned themselves, and a file with more than one name (a hard
    /// link, which could be one of root's files elsewhere) is left as it is.
    pub fn hand_back(&self) -> (usize, Option<std::io::Error>) {
        use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
        let Some((uid, gid)) = self.owner else {
            return (0, None);
        };
        let (uid, gid) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut changed = 0;
        let mut first_error: Option<std::io::Error> = None;
        // The directory itself may be reached through a link (systemd's /var/lib/convenor
        // points into /var/lib/private); nothing under it is.
        let mut pending = match rustix::fs::openat(CWD, &self.dir, dir_flags, Mode::empty()) {
            Ok(fd) => vec![fd],
            Err(e) => return (0, Some(e.into())),
        };
        while let Some(dir) = pending.pop() {
            let entries = match rustix::fs::Dir::read_from(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    first_error.get_or_insert(e.into());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                // Gone meanwhile (SQLite removes its WAL at the last close): nothing to do.
                let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                    continue;
                };
                let kind = FileType::from_raw_mode(stat.st_mode);
                if kind == FileType::Directory {
                    match rustix::fs::openat(
                        &dir,
                        name,
                        dir_flags | OFlags::NOFOLLOW,
                        Mode::empty(),
                    ) {
                        Ok(fd) => pending.push(fd),
                        Err(e) => {
                            first_error.get_or_insert(e.into());
                        }
                    }
                }
                if stat.st_uid != 0 || (kind == FileType::RegularFile && stat.st_nlink > 1) {
                    continue;
                }
                match rustix::fs::chownat(
                    &dir,
                    name,
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                ) {
                    Ok(()) => changed += 1,
                    Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => {
                        first_error.get_or_insert(e.into());
                    }
                }
            }
        }
        (changed, first_error)
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        let (changed, error) = self.hand_back();
        if let Some(e) = error {
            // The directory itself, not the link systemd keeps at /var/lib/convenor (`chown -R`
            // on a link changes the link only).
            let real = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
            crate::logging::to_stderr(
                tracing::Level::WARN,
                &format!(
                    "could not give every root-owned file under {} back to the directory's \
                     owner: {e}; run `chown -R --reference={real} {real}` before starting the \
                     service",
                    self.dir.display(),
                    real = real.display(),
                ),
            );
        } else if changed > 0 {
            tracing::debug!(changed, dir = %self.dir.display(), "state files handed back");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    /// As root: root's files and links under a directory owned by someone else go to that
    /// owner, down the tree; neither what a link points to nor a file with a second name
    /// outside the directory changes hands. As anyone else: nothing is noted or changed.
    #[test]
    fn root_files_go_to_the_owner_and_nothing_outside_moves() {
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "root's").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("outbox")).expect("mkdir");
        std::fs::write(state.join("agenda.sqlite3"), "").expect("write");
        std::fs::write(state.join("outbox/one.eml"), "").expect("write");
        std::os::unix::fs::symlink(&secret, state.join("link")).expect("symlink");
        std::fs::hard_link(&secret, state.join("hard")).expect("hard link");
        let uid = |p: &Path| std::fs::symlink_metadata(p).expect("stat").uid();
        if !rustix::process::geteuid().is_root() {
            assert_eq!(HandBack::of(&state).hand_back().0, 0);
            return;
        }
        std::os::unix::fs::lchown(&state, Some(65534), Some(65534)).expect("chown");
        let guard = HandBack::of(&state);
        drop(guard);
        for p in ["agenda.sqlite3", "outbox", "outbox/one.eml", "link"] {
            assert_eq!(uid(&state.join(p)), 65534, "{p}");
        }
        assert_eq!(
            uid(&secret),
            0,
            "a link's target or a second name stays root's"
        );
        assert_eq!(uid(&state.join("hard")), 0);
        // A directory root owns is not handed anywhere.
        let mine = dir.path().join("mine");
        std::fs::create_dir_all(&mine).expect("mkdir");
        std::fs::write(mine.join("f"), "").expect("write");
        assert_eq!(HandBack::of(&mine).hand_back().0, 0);
        assert_eq!(uid(&mine.join("f")), 0);
    }
}
