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
//! [`act_as_owner`] keeps root's user id but makes every file-system check that of the
//! directory's owner (`setfsuid`, `setfsgid`, no supplementary groups) with one exception,
//! `CAP_DAC_READ_SEARCH`: the command may still search and read anything root may (the path to
//! the directory, the config, a password file), but it writes and creates only where the owner
//! may, and what it creates is the owner's.

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
/// every file this process opens, creates or searches is checked as that user and group would
/// be, except that searching and reading are not refused (`CAP_DAC_READ_SEARCH`); every other
/// capability is given up for good. Returns the owner. `None`, changing nothing, when the
/// process is not root, the directory does not exist yet (systemd adopts a directory root made,
/// whole, at the service's first start) or root owns it.
///
/// Call it before the process starts a thread: file-system ids and capabilities belong to a
/// thread, and only threads started afterwards inherit them.
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
    let failed = |source: std::io::Error| OwnerError {
        dir: state_dir.display().to_string(),
        uid: owner.uid,
        gid: owner.gid,
        source,
    };
    // SAFETY: plain system-call wrappers; the only pointer is the null, empty list of groups.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        // Each returns the previous id and cannot report failure: asking again tells.
        libc::setfsgid(owner.gid);
        libc::setfsuid(owner.uid);
        if libc::setfsgid(owner.gid) as u32 != owner.gid
            || libc::setfsuid(owner.uid) as u32 != owner.uid
        {
            return Err(failed(std::io::Error::other(
                "the file-system user or group did not change",
            )));
        }
    }
    // Leaving file-system id 0 dropped the file capabilities from the effective set; keep the
    // one to search and read, and nothing else, permitted either.
    let keep = CapabilitySet::DAC_READ_SEARCH;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| failed(e.into()))?;
    Ok(Some(owner))
}
