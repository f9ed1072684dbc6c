//! The rendered feeds, kept in the state directory so a restart need not render them again,
//! with the Last-Modified each feed was last served with.
//!
//! Rendering is the largest part of start-up once the ledger is reconciled (about 80 ms at 5,000
//! meetings), and a restart usually renders the very bytes it served before. The cache file
//! holds the bytes of every feed under the key of what they were rendered from
//! ([`cache_key`]: the config, the revisions and the build, see [`crate::digest`]); they are
//! used only when the key matches and every body's BLAKE3 checks, else the feeds are rendered as
//! if they were absent. It is written after start-up and reloads, off the request path, to a
//! temporary file renamed into place.
//!
//! The file also holds each feed's [`FeedStamp`] (its Last-Modified and its body's BLAKE3), ahead
//! of the key and read whatever the key: a restart on a changed config continues Last-Modified
//! from them by the rule a reload applies ([`crate::http::state`]), so it never goes backwards
//! across a restart. They live in this file rather than one of their own because they describe
//! these very bodies: one rename writes both, so they never disagree, and a start that uses the
//! cached bodies has their stamps too. Losing the file costs one rendering, and one start whose
//! Last-Modified is computed from the meetings' revisions alone, as if the feeds were new.
//!
//! Layout: [`MAGIC`]; the stamps' length (u32 LE), their BLAKE3 (32 bytes) and the stamps: their
//! number (u32 LE), then per feed its path's length (u16 LE), the path (UTF-8), its Last-Modified
//! (whole seconds since the epoch, i64 LE) and its body's BLAKE3 (32 bytes); then the 32-byte
//! key, the number of feeds (u32 LE), and per feed its length (u64 LE), its BLAKE3 (32 bytes) and
//! its bytes.

use std::{
    collections::BTreeMap,
    hash::Hash as _,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use jiff::Timestamp;

use crate::{
    digest::{Digest, DigestHasher},
    http::state::HashedBody,
    model::{Config, MeetingId},
    revision::StoredRevision,
};

/// The cache's file name in the state directory.
pub const FEED_CACHE_FILE: &str = "feeds.cache";

/// The first bytes of a cache file (the version is in it).
pub const MAGIC: &[u8; 16] = b"convenor-feeds-2";

/// What a feed was last served with: its Last-Modified and its body's BLAKE3 (the ETag's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedStamp {
    /// Last-Modified, whole seconds.
    pub last_modified: Timestamp,
    /// The BLAKE3 of the body served with it.
    pub hash: blake3::Hash,
}

/// Every feed's [`FeedStamp`], by its path below the token prefix (`/calendar.ics`,
/// `/priorities/<id>.ics`: the path [`crate::http::state::Feeds::feed`] takes).
pub type FeedStamps = BTreeMap<String, FeedStamp>;

/// What the cache file holds for a start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cached {
    /// The stamps of the feeds last stored, whatever they were rendered from; empty when the
    /// file is missing, of another version or damaged.
    pub stamps: FeedStamps,
    /// The bodies, when they were rendered under the key asked for and are intact.
    pub bodies: Option<Vec<HashedBody>>,
}

/// Why (part of) a cache file is not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheFileError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    /// Another format (another version of convenor, or not a cache at all).
    #[error("not a feed cache of this version")]
    Version,
    /// The file ends early.
    #[error("truncated")]
    Truncated,
    /// The stamps do not match their BLAKE3, or do not parse.
    #[error("the Last-Modified stamps are damaged")]
    DamagedStamps,
    /// The bodies were rendered from another config, other revisions or another build.
    #[error("rendered from another config, revisions or build")]
    OtherKey,
    /// Another number of feeds than the config has.
    #[error("another number of feeds")]
    OtherCount,
    /// A body does not match its stored BLAKE3.
    #[error("a body does not match its hash")]
    DamagedBody,
    /// Bytes after the last body.
    #[error("trailing bytes")]
    Trailing,
}

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

/// What the cache in `state_dir` holds for a start with `count` feeds rendered under `key`: the
/// stamps whatever the key, and the bodies if they were stored under `key` and are intact, each
/// matching its stored BLAKE3. A missing or stale cache is normal (logged at debug); damaged
/// stamps are logged as a warning and give no stamps and no bodies (so the file is written
/// again). Bodies of [`super::sendfile::SEAL_MIN_BYTES`] and more go from the file into sealed
/// memfds by the kernel, never through the heap; the hash is checked on the sealed copy, the
/// one served.
pub fn load(state_dir: &Path, key: &Digest, count: usize) -> Cached {
    let path = path_in(state_dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!("no feed cache at {}: {e}", path.display());
            return Cached::default();
        }
    };
    let mut at = 0u64;
    let stamps = match read_stamps(&file, &mut at) {
        Ok(stamps) => stamps,
        Err(CacheFileError::Version) => {
            tracing::debug!("feed cache {} not used: of another version", path.display());
            return Cached::default();
        }
        Err(why) => {
            tracing::warn!(
                "feed cache {} not used: {why}; Last-Modified starts from the meetings' revisions",
                path.display()
            );
            return Cached::default();
        }
    };
    let bodies = match read_bodies(&file, &mut at, key, count) {
        Ok(bodies) => Some(bodies),
        Err(why) => {
            tracing::debug!("cached feeds in {} not used: {why}", path.display());
            None
        }
    };
    Cached { stamps, bodies }
}

/// The magic and the stamps at the start of `file`, moving `*at` past them.
fn read_stamps(file: &std::fs::File, at: &mut u64) -> Result<FeedStamps, CacheFileError> {
    if take_at(file, at, MAGIC.len())? != MAGIC {
        return Err(CacheFileError::Version);
    }
    let len = u32::from_le_bytes(fixed(&take_at(file, at, 4)?)?);
    let stored: [u8; 32] = fixed(&take_at(file, at, 32)?)?;
    let len = usize::try_from(len).map_err(|_| CacheFileError::Truncated)?;
    let size = file.metadata()?.len();
    if at.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(CacheFileError::Truncated);
    }
    let section = take_at(file, at, len)?;
    if blake3::hash(&section).as_bytes() != &stored {
        return Err(CacheFileError::DamagedStamps);
    }
    decode_stamps(&section).ok_or(CacheFileError::DamagedStamps)
}

/// The stamps encoded by [`encode_stamps`]; `None` when they do not parse to the end.
fn decode_stamps(mut bytes: &[u8]) -> Option<FeedStamps> {
    let count = u32::from_le_bytes(fixed(split_off(&mut bytes, 4)?).ok()?);
    let mut stamps = FeedStamps::new();
    for _ in 0..count {
        let path_len = u16::from_le_bytes(fixed(split_off(&mut bytes, 2)?).ok()?);
        let path = std::str::from_utf8(split_off(&mut bytes, usize::from(path_len))?).ok()?;
        let seconds = i64::from_le_bytes(fixed(split_off(&mut bytes, 8)?).ok()?);
        let hash: [u8; 32] = fixed(split_off(&mut bytes, 32)?).ok()?;
        let stamp = FeedStamp {
            last_modified: Timestamp::from_second(seconds).ok()?,
            hash: blake3::Hash::from_bytes(hash),
        };
        if stamps.insert(path.to_owned(), stamp).is_some() {
            return None;
        }
    }
    bytes.is_empty().then_some(stamps)
}

/// The first `n` bytes of `*bytes`, leaving the rest there; `None` when there are fewer.
fn split_off<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(n)?;
    *bytes = rest;
    Some(head)
}

/// `stamps` as [`decode_stamps`] reads them; a path longer than 65,535 bytes is an error.
fn encode_stamps(stamps: &FeedStamps) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + stamps.len() * 64);
    let count = u32::try_from(stamps.len()).map_err(io::Error::other)?;
    out.extend_from_slice(&count.to_le_bytes());
    for (path, stamp) in stamps {
        let path_len = u16::try_from(path.len()).map_err(io::Error::other)?;
        out.extend_from_slice(&path_len.to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&stamp.last_modified.as_second().to_le_bytes());
        out.extend_from_slice(stamp.hash.as_bytes());
    }
    Ok(out)
}

/// The key and the bodies after the stamps (`*at` at the key), if stored under `key`.
fn read_bodies(
    file: &std::fs::File,
    at: &mut u64,
    key: &Digest,
    count: usize,
) -> Result<Vec<HashedBody>, CacheFileError> {
    let size = file.metadata()?.len();
    if take_at(file, at, 32)? != key.0 {
        return Err(CacheFileError::OtherKey);
    }
    let n = u32::from_le_bytes(fixed(&take_at(file, at, 4)?)?);
    if usize::try_from(n).ok() != Some(count) {
        return Err(CacheFileError::OtherCount);
    }
    let mut bodies = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u64::from_le_bytes(fixed(&take_at(file, at, 8)?)?);
        let stored: [u8; 32] = fixed(&take_at(file, at, 32)?)?;
        let len = usize::try_from(len).map_err(|_| CacheFileError::Truncated)?;
        let body = take_body(file, at, len, size)?;
        let body = HashedBody::new(body);
        if body.hash.as_bytes() != &stored {
            return Err(CacheFileError::DamagedBody);
        }
        bodies.push(body);
    }
    if *at != size {
        return Err(CacheFileError::Trailing);
    }
    Ok(bodies)
}

/// `n` bytes of `file` at `*at`, moving `*at` past them.
fn take_at(file: &std::fs::File, at: &mut u64, n: usize) -> Result<Vec<u8>, CacheFileError> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, *at)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => CacheFileError::Truncated,
            _ => CacheFileError::Io(e),
        })?;
    *at += n as u64;
    Ok(buf)
}

/// A body of `len` bytes at `*at` (the file being `size` bytes long), moving `*at` past it: a
/// big one sealed straight from the file ([`super::sendfile::seal_from_file`]), a small one
/// read.
fn take_body(
    file: &std::fs::File,
    at: &mut u64,
    len: usize,
    size: u64,
) -> Result<Bytes, CacheFileError> {
    let end = at
        .checked_add(len as u64)
        .filter(|&e| e <= size)
        .ok_or(CacheFileError::Truncated)?;
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

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], CacheFileError> {
    bytes.try_into().map_err(|_| CacheFileError::Truncated)
}

/// Stores `stamps`, and `bodies` under `key`, in `state_dir`: written to a temporary file,
/// synced, then renamed over the cache, so a reader sees the old cache or the new one, never a
/// mix.
pub fn store(
    state_dir: &Path,
    key: &Digest,
    stamps: &FeedStamps,
    bodies: &[HashedBody],
) -> io::Result<()> {
    // A name of its own per write, so two writes at once (a reload right after start) cannot
    // interleave in one file; the last rename wins, and either cache is whole.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = state_dir.join(format!(
        "{FEED_CACHE_FILE}.{}.{n}{TMP_SUFFIX}",
        std::process::id()
    ));
    let written = write_to(&tmp, key, stamps, bodies)
        .and_then(|()| std::fs::rename(&tmp, path_in(state_dir)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The ending of a cache file being written.
const TMP_SUFFIX: &str = ".tmp";

fn write_to(
    tmp: &Path,
    key: &Digest,
    stamps: &FeedStamps,
    bodies: &[HashedBody],
) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(tmp)?);
    out.write_all(MAGIC)?;
    let stamps = encode_stamps(stamps)?;
    let stamps_len = u32::try_from(stamps.len()).map_err(io::Error::other)?;
    out.write_all(&stamps_len.to_le_bytes())?;
    out.write_all(blake3::hash(&stamps).as_bytes())?;
    out.write_all(&stamps)?;
    out.write_all(&key.0)?;
    let n = u32::try_from(bodies.len()).map_err(io::Error::other)?;
    out.write_all(&n.to_le_bytes())?;
    for HashedBody { body, hash } in bodies {
        out.write_all(&(body.len() as u64).to_le_bytes())?;
        out.write_all(hash.as_bytes())?;
        out.write_all(body)?;
    }
    // Synced before the rename: the stamps are what keeps Last-Modified from going back at the
    // next start, so a crash must leave the old file or the whole new one.
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()
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

    fn stamps() -> FeedStamps {
        let at = |s: &str| s.parse::<Timestamp>().expect("timestamp");
        let stamp = |when: &str, body: &[u8]| FeedStamp {
            last_modified: at(when),
            hash: blake3::hash(body),
        };
        FeedStamps::from([
            (
                "/calendar.ics".to_owned(),
                stamp("2024-05-01T10:00:01Z", b"all"),
            ),
            (
                "/priorities/future-places.ics".to_owned(),
                stamp("2023-09-01T08:00:00Z", b"some"),
            ),
            // Any text a priority id may hold, and the earliest second there is.
            (
                "/priorities/é-x.ics".to_owned(),
                stamp("1970-01-01T00:00:00Z", b""),
            ),
        ])
    }

    fn bodies_only(cached: Cached) -> Option<Vec<HashedBody>> {
        cached.bodies
    }

    #[test]
    fn what_is_stored_under_a_key_is_loaded_under_that_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            load(dir.path(), &key(1), 3),
            Cached::default(),
            "nothing stored yet"
        );
        store(dir.path(), &key(1), &stamps(), &bodies()).expect("store");
        let loaded = load(dir.path(), &key(1), 3).bodies.expect("loaded");
        assert_eq!(loaded, bodies());
        // The big body went from the file into a sealed memfd; the small ones were read.
        assert!(crate::http::sendfile::is_sealed(&loaded[2].body));
        assert!(!crate::http::sendfile::is_sealed(&loaded[0].body));
        assert_eq!(
            bodies_only(load(dir.path(), &key(2), 3)),
            None,
            "another key"
        );
        assert_eq!(
            bodies_only(load(dir.path(), &key(1), 2)),
            None,
            "another number of feeds"
        );
        store(dir.path(), &key(2), &FeedStamps::new(), &bodies()[..1]).expect("store over");
        assert_eq!(
            load(dir.path(), &key(2), 1),
            Cached {
                stamps: FeedStamps::new(),
                bodies: Some(bodies()[..1].to_vec())
            }
        );
        assert_eq!(bodies_only(load(dir.path(), &key(1), 3)), None, "replaced");
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

    /// The stamps come back as stored, whatever key or number of feeds the start asks for: a
    /// changed config still continues Last-Modified from them.
    #[test]
    fn stamps_round_trip_whatever_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &key(1), &stamps(), &bodies()).expect("store");
        assert_eq!(
            load(dir.path(), &key(1), 3),
            Cached {
                stamps: stamps(),
                bodies: Some(bodies())
            }
        );
        for (other_key, count) in [(key(2), 3), (key(1), 5), (key(9), 0)] {
            let cached = load(dir.path(), &other_key, count);
            assert_eq!(cached.stamps, stamps(), "key {other_key:?}, {count} feeds");
            assert_eq!(cached.bodies, None);
        }
    }

    /// Where the stamps end and the key begins in a file of `stamps()`.
    fn stamps_end() -> usize {
        let section = encode_stamps(&stamps()).expect("encode");
        MAGIC.len() + 4 + 32 + section.len()
    }

    #[test]
    fn a_damaged_cache_is_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &key(1), &stamps(), &bodies()).expect("store");
        let path = path_in(dir.path());
        let good = std::fs::read(&path).expect("read");
        let end = stamps_end();
        // One flipped byte anywhere (magic, stamps, key, lengths, hashes, bodies) or a cut
        // anywhere: the bodies are not used.
        for at in [
            0,
            20,
            50,
            60,
            end - 1,
            end,
            end + 40,
            end + 100,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&path, &bad).expect("write");
            let cached = load(dir.path(), &key(1), 3);
            assert_eq!(cached.bodies, None, "flipped at {at}");
            // Damage in the stamps (or before them) drops them; damage after them does not.
            let expected = if at < end {
                FeedStamps::new()
            } else {
                stamps()
            };
            assert_eq!(cached.stamps, expected, "flipped at {at}");
        }
        for len in [0, 10, 52, end - 1, end, end + 100, good.len() - 1] {
            std::fs::write(&path, &good[..len]).expect("write");
            let cached = load(dir.path(), &key(1), 3);
            assert_eq!(cached.bodies, None, "cut at {len}");
            let expected = if len < end {
                FeedStamps::new()
            } else {
                stamps()
            };
            assert_eq!(cached.stamps, expected, "cut at {len}");
        }
        let mut longer = good.clone();
        longer.push(b'\n');
        std::fs::write(&path, &longer).expect("write");
        let cached = load(dir.path(), &key(1), 3);
        assert_eq!((cached.stamps, cached.bodies), (stamps(), None), "trailing");
        std::fs::write(&path, &good).expect("write");
        assert_eq!(load(dir.path(), &key(1), 3).bodies, Some(bodies()));
    }

    /// Stamps whose hash checks but which do not parse (a bug, or a forged file) are ignored,
    /// never a panic: a count beyond the bytes, a path that is not UTF-8, a path twice, a
    /// second out of range, bytes left over.
    #[test]
    fn stamps_that_do_not_parse_are_ignored() {
        let good = encode_stamps(&stamps()).expect("encode");
        assert_eq!(decode_stamps(&good), Some(stamps()));
        let mut too_many = good.clone();
        too_many[0] = 4;
        let mut not_utf8 = good.clone();
        not_utf8[6] = 0xff;
        let one = encode_stamps(&FeedStamps::from([(
            "/calendar.ics".to_owned(),
            stamps()["/calendar.ics"],
        )]))
        .expect("encode");
        let mut twice = one.clone();
        twice[0] = 2;
        twice.extend_from_slice(&one[4..]);
        let mut out_of_range = one.clone();
        let second_at = 4 + 2 + "/calendar.ics".len();
        out_of_range[second_at..second_at + 8].copy_from_slice(&i64::MAX.to_le_bytes());
        let mut left_over = good.clone();
        left_over.push(0);
        for (what, bytes) in [
            ("count", too_many),
            ("utf-8", not_utf8),
            ("twice", twice),
            ("range", out_of_range),
            ("left over", left_over),
            ("empty", Vec::new()),
        ] {
            assert_eq!(decode_stamps(&bytes), None, "{what}");
            // The same stamps in a file, under a hash that checks: no stamps, no bodies.
            let dir = tempfile::tempdir().expect("tempdir");
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&u32::try_from(bytes.len()).expect("len").to_le_bytes());
            file.extend_from_slice(blake3::hash(&bytes).as_bytes());
            file.extend_from_slice(&bytes);
            std::fs::write(path_in(dir.path()), &file).expect("write");
            assert_eq!(load(dir.path(), &key(1), 0), Cached::default(), "{what}");
        }
    }

    /// A cache of the version before the stamps is not read at all.
    #[test]
    fn a_cache_of_another_version_gives_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &key(1), &stamps(), &bodies()).expect("store");
        let path = path_in(dir.path());
        let mut old = std::fs::read(&path).expect("read");
        old[..MAGIC.len()].copy_from_slice(b"convenor-feeds-1");
        std::fs::write(&path, &old).expect("write");
        assert_eq!(load(dir.path(), &key(1), 3), Cached::default());
    }
}
