//! A command run as root touches files as the state directory's owner, not as root.
//!
//! The installed service runs as a dynamic user (`DynamicUser=yes`) whose state directory is
//! its own. Run with `sudo`, `convenor agenda add ...` as root would follow any link that user
//! left in the directory (SQLite puts its WAL beside whatever a link names; the outbox could
//! be a link to `/etc`) and write there, and would leave root-owned files that the service
//! cannot write at its next start (systemd re-owns a state directory only when the directory
//! itself has the wrong owner).
//!
//! Giving up root altogether is not possible: the directory lies under `/var/lib/private`,
//! which only root may search, and SQLite opens every file by its absolute path (it turns a
//! relative name into one), so a working directory inside it does not help. Instead
//! [`act_as_owner`] makes the directory's owner and group the effective ones (root stays the
//! real and saved user, which is what lets it keep one capability) and keeps a single
//! capability, `CAP_DAC_READ_SEARCH`: the command may still search and read anything root may
//! (the path to the directory, the config, a password file), but it writes and creates only
//! where the owner may, and what it creates is the owner's. This guards root against the
//! directory's contents; it is not a sandbox against convenor's own code, which could take the
//! effective root back.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use rustix::thread::{CapabilitySet, CapabilitySets};

/// Why a command could not take on the state directory's owner for its file access.
#[derive(Debug, thiserror::Error)]
#[error("cannot act as the owner (uid {uid}, gid {gid}) of the state directory {dir}: {source}")]
pub struct OwnerError {
    /// The directory.
    dir: String,
    /// Its owner.
    uid: u32,
    /// Its group.
    gid: u32,
    /// What failed.
    source: std::io::Error,
}

/// The user whose file-system rights a command now has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The state directory's owner.
    pub uid: u32,
    /// The state directory's group.
    pub gid: u32,
}

/// When this process is root and `state_dir` exists and belongs to another user: from now on
/// the process's effective user and group are that user's and group, with no supplementary
/// groups, and its only capability is `CAP_DAC_READ_SEARCH` (searching and reading are not
/// refused). Warns of entries in the directory the owner does not own (left by an earlier
/// version run as root: the service cannot write them). Returns the owner. `None`, changing
/// nothing, when the process is not root, the directory does not exist yet (systemd adopts a
/// directory root made, whole, at the service's first start) or root owns it.
///
/// Call it before the process starts a thread: capabilities belong to a thread, and only
/// threads started afterwards inherit them (it refuses when there is more than one).
pub fn act_as_owner(state_dir: &Path) -> Result<Option<Owner>, OwnerError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let meta = match std::fs::metadata(state_dir) {
        Ok(meta) if meta.is_dir() && meta.uid() != 0 => meta,
        _ => return Ok(None),
    };
    let owner = Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    };
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    let failed = |source: std::io::Error| OwnerError {
        dir: state_dir.display().to_string(),
        uid: owner.uid,
        gid: owner.gid,
        source,
    };
    if threads != Some(1) {
        return Err(failed(std::io::Error::other(format!(
            "the process must have one thread here, not {threads:?}"
        ))));
    }
    // The C library's calls, which change every thread (the system calls change only the
    // calling one); group first, while root may still change it. -1 keeps the real and saved
    // ids (root's); the file-system ids follow the effective ones.
    // SAFETY: plain system-call wrappers; the only pointer is the null, empty list of groups.
    let keep = libc::uid_t::MAX;
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(keep, owner.gid, keep) != 0
            || libc::setresuid(keep, owner.uid, keep) != 0
        {
            return Err(failed(std::io::Error::last_os_error()));
        }
    }
    if rustix::process::geteuid().as_raw() != owner.uid
        || rustix::process::getegid().as_raw() != owner.gid
    {
        return Err(failed(std::io::Error::other(
            "the effective user or group did not change",
        )));
    }
    // Leaving effective user 0 emptied the effective capabilities (the permitted ones stay,
    // as the real user is still root): keep the one to search and read, and nothing else.
    let read_search = CapabilitySet::DAC_READ_SEARCH;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: read_search,
            permitted: read_search,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| failed(e.into()))?;
    warn_of_foreign_files(state_dir, owner);
    Ok(Some(owner))
}

/// Warns (on stderr) of the entries of `state_dir` and of its outbox that `owner` does not
/// own: an earlier version run as root left them, and neither the service nor this command
/// can write them.
fn warn_of_foreign_files(state_dir: &Path, owner: Owner) {
    let mut foreign = Vec::new();
    for dir in [state_dir.to_path_buf(), state_dir.join("outbox")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .metadata()
                .is_ok_and(|m| m.uid() != owner.uid && !m.is_symlink())
            {
                foreign.push(entry.path().display().to_string());
            }
        }
    }
    if !foreign.is_empty() {
        crate::logging::to_stderr(
            tracing::Level::WARN,
            &format!(
                "not the state directory owner's (uid {}), so the service cannot write them: \
                 {}; give them back with `chown {}:{}` on each",
                owner.uid,
                foreign.join(", "),
                owner.uid,
                owner.gid,
            ),
        );
    }
}
