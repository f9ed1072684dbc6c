//! The rendered feeds, kept in the state directory so a restart need not render them again.
//!
//! Rendering is the largest part of start-up once the ledger is reconciled (about 80 ms at 5,000
//! meetings), and a restart usually renders the very bytes it served before. The cache file
//! holds the bytes of every feed under the key of what they were rendered from
//! ([`cache_key`]: the config, the revisions and the build, see [`crate::digest`]); it is used
//! only when the key matches and every body's BLAKE3 checks, else the feeds are rendered as if
//! it were absent. It is written after start-up and reloads, off the request path, to a
//! temporary file renamed into place; losing it costs one rendering, nothing else.
//!
//! Layout: [`MAGIC`], the 32-byte key, the number of feeds (u32 LE), then per feed its length
//! (u64 LE), its BLAKE3 (32 bytes) and its bytes.

use std::{
    collections::BTreeMap,
    hash::Hash as _,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;

use crate::{
    digest::{Digest, DigestHasher},
    http::state::HashedBody,
    model::{Config, MeetingId},
    revision::StoredRevision,
};

/// The cache's file name in the state directory.
pub const FEED_CACHE_FILE: &str = "feeds.cache";

/// The first bytes of a cache file (the version is in it).
pub const MAGIC: &[u8; 16] = b"convenor-feeds-1";

/// The key of the feeds rendered from `config` and `revisions` by this build.
pub fn cache_key(config: &Config, revisions: &BTreeMap<MeetingId, StoredRevision>) -> Digest {
    let mut h = DigestHasher::new("convenor feeds");
    config.hash(&mut h);
    revisions.hash(&mut h);
    h.digest()
}

/// The path of the cache in `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FEED_CACHE_FILE)
}

/// The cached bodies in `state_dir` if they were stored under `key` and are intact: `count`
/// bodies, each matching its stored BLAKE3. Otherwise `None` (logged at debug: a missing or
/// stale cache is normal, a damaged one is rendered over). Bodies of
/// [`super::sendfile::SEAL_MIN_BYTES`] and more go from the file into sealed memfds by the
/// kernel, never through the heap; the hash is checked on the sealed copy, the one served.
pub fn load(state_dir: &Path, key: &Digest, count: usize) -> Option<Vec<HashedBody>> {
    let path = path_in(state_dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!("no feed cache at {}: {e}", path.display());
            return None;
        }
    };
    match read(&file, key, count) {
        Ok(bodies) => Some(bodies),
        Err(why) => {
            tracing::debug!("feed cache {} not used: {why}", path.display());
            None
        }
    }
}

fn read(file: &std::fs::File, key: &Digest, count: usize) -> Result<Vec<HashedBody>, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut at = 0u64;
    let mut take = |n: usize| take_at(file, &mut at, n);
    if take(MAGIC.len())? != MAGIC {
        return Err("not a feed cache of this version".into());
    }
    if take(32)? != key.0 {
        return Err("rendered from another config, revisions or build".into());
    }
    let n = u32::from_le_bytes(fixed(&take(4)?)?);
    if usize::try_from(n).ok() != Some(count) {
        return Err("another number of feeds".into());
    }
    let mut bodies = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u64::from_le_bytes(fixed(&take_at(file, &mut at, 8)?)?);
        let stored: [u8; 32] = fixed(&take_at(file, &mut at, 32)?)?;
        let len = usize::try_from(len).map_err(|_| "too long")?;
        let body = take_body(file, &mut at, len, size)?;
        let body = HashedBody::new(body);
        if body.hash.as_bytes() != &stored {
            return Err("a body does not match its hash".into());
        }
        bodies.push(body);
    }
    if at != size {
        return Err("trailing bytes".into());
    }
    Ok(bodies)
}

/// `n` bytes of `file` at `*at`, moving `*at` past them.
fn take_at(file: &std::fs::File, at: &mut u64, n: usize) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, *at)
        .map_err(|e| format!("truncated ({e})"))?;
    *at += n as u64;
    Ok(buf)
}

/// A body of `len` bytes at `*at` (the file being `size` bytes long), moving `*at` past it: a
/// big one sealed straight from the file ([`super::sendfile::seal_from_file`]), a small one
/// read.
fn take_body(file: &std::fs::File, at: &mut u64, len: usize, size: u64) -> Result<Bytes, String> {
    let end = at
        .checked_add(len as u64)
        .filter(|&e| e <= size)
        .ok_or("truncated")?;
    if len < super::sendfile::SEAL_MIN_BYTES {
        return take_at(file, at, len).map(Bytes::from);
    }
    match super::sendfile::seal_from_file(file, *at, len) {
        Ok(body) => {
            *at = end;
            Ok(body)
        }
        // No memfd here (a seccomp filter): read it; the feed state serves it from the heap.
        Err(e) => {
            tracing::debug!("feed cache: cannot seal a body straight from the file ({e})");
            take_at(file, at, len).map(Bytes::from)
        }
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes.try_into().map_err(|_| "truncated".to_owned())
}

/// Stores `bodies` under `key` in `state_dir`: written to a temporary file, then renamed over
/// the cache, so a reader sees the old cache or the new one, never a mix.
pub fn store(state_dir: &Path, key: &Digest, bodies: &[HashedBody]) -> io::Result<()> {
    // A name of its own per write, so two writes at once (a reload right after start) cannot
    // interleave in one file; the last rename wins, and either cache is whole.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = state_dir.join(format!(
        "{FEED_CACHE_FILE}.{}.{n}{TMP_SUFFIX}",
        std::process::id()
    ));
    let written =
        write_to(&tmp, key, bodies).and_then(|()| std::fs::rename(&tmp, path_in(state_dir)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The ending of a cache file being written.
const TMP_SUFFIX: &str = ".tmp";

fn write_to(tmp: &Path, key: &Digest, bodies: &[HashedBody]) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(tmp)?);
    out.write_all(MAGIC)?;
    out.write_all(&key.0)?;
    let n = u32::try_from(bodies.len()).map_err(io::Error::other)?;
    out.write_all(&n.to_le_bytes())?;
    for HashedBody { body, hash } in bodies {
        out.write_all(&(body.len() as u64).to_le_bytes())?;
        out.write_all(hash.as_bytes())?;
        out.write_all(body)?;
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

/// Removes cache files left half-written in `state_dir` (a crash or kill during a write). Call
/// it at start, under the state directory's lock, before any write can be under way.
pub fn remove_unfinished(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{FEED_CACHE_FILE}.")) && name.ends_with(TMP_SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed an unfinished feed cache write: {name}"),
                Err(e) => tracing::warn!("cannot remove {name}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Digest {
        Digest([n; 32])
    }

    fn bodies() -> Vec<HashedBody> {
        vec![
            HashedBody::new(Bytes::from_static(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")),
            HashedBody::new(Bytes::new()),
            HashedBody::new(Bytes::from(vec![b'x'; 70_000])),
        ]
    }

    #[test]
    fn what_is_stored_under_a_key_is_loaded_under_that_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path(), &key(1), 3), None, "nothing stored yet");
        store(dir.path(), &key(1), &bodies()).expect("store");
        let loaded = load(dir.path(), &key(1), 3).expect("loaded");
        assert_eq!(loaded, bodies());
        // The big body went from the file into a sealed memfd; the small ones were read.
        assert!(crate::http::sendfile::is_sealed(&loaded[2].body));
        assert!(!crate::http::sendfile::is_sealed(&loaded[0].body));
        assert_eq!(load(dir.path(), &key(2), 3), None, "another key");
        assert_eq!(
            load(dir.path(), &key(1), 2),
            None,
            "another number of feeds"
        );
        store(dir.path(), &key(2), &bodies()[..1]).expect("store over");
        assert_eq!(load(dir.path(), &key(2), 1), Some(bodies()[..1].to_vec()));
        assert_eq!(load(dir.path(), &key(1), 3), None, "replaced");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["feeds.cache"], "no temporary file left");
        // A write cut short by a crash leaves one; the next start removes it, and only it.
        std::fs::write(dir.path().join("feeds.cache.99.0.tmp"), b"half").expect("write");
        std::fs::write(dir.path().join("ledger.sqlite3.tmp"), b"not ours").expect("write");
        remove_unfinished(dir.path());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["feeds.cache", "ledger.sqlite3.tmp"]);
    }

    #[test]
    fn a_damaged_cache_is_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &key(1), &bodies()).expect("store");
        let path = path_in(dir.path());
        let good = std::fs::read(&path).expect("read");
        // One flipped byte anywhere (header, lengths, hashes, bodies) or a cut anywhere.
        for at in [0, 20, 50, 60, 100, 130, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).expect("write");
            assert_eq!(load(dir.path(), &key(1), 3), None, "flipped at {at}");
        }
        for len in [0, 10, 52, 100, good.len() - 1] {
            std::fs::write(&path, &good[..len]).expect("write");
            assert_eq!(load(dir.path(), &key(1), 3), None, "cut at {len}");
        }
        let mut longer = good.clone();
        longer.push(b'\n');
        std::fs::write(&path, &longer).expect("write");
        assert_eq!(load(dir.path(), &key(1), 3), None, "trailing byte");
        std::fs::write(&path, &good).expect("write");
        assert_eq!(load(dir.path(), &key(1), 3), Some(bodies()));
    }
}
