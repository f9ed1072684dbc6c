//! Hands what a command run as root leaves in a state directory back to that directory's owner.
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
/// runs as; when dropped, gives every entry under it that this user owns to the directory's
/// owner and group. Does nothing when the process is not root, when the directory does not
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
    pub fn hand_back(&self) -> (usize, Option<std::io::Error>) {
        let Some((uid, gid)) = self.owner else {
            return (0, None);
        };
        let mut changed = 0;
        let mut first_error = None;
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Not followed: a symbolic link is re-owned itself, never what it points to.
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    pending.push(path.clone());
                }
                if meta.uid() != 0 {
                    continue;
                }
                match std::os::unix::fs::lchown(&path, Some(uid), Some(gid)) {
                    Ok(()) => changed += 1,
                    // Gone meanwhile (SQLite removes its WAL at the last close).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
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
            crate::logging::to_stderr(
                tracing::Level::WARN,
                &format!(
                    "could not give every file this command (run as root) made under {} back \
                     to its owner: {e}; run `chown -R --reference={} {}` before starting the \
                     service",
                    self.dir.display(),
                    self.dir.display(),
                    self.dir.display()
                ),
            );
        } else if changed > 0 {
            tracing::debug!(changed, dir = %self.dir.display(), "state files handed back");
        }
    }
}
