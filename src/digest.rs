//! Digests that say "nothing changed since last time": of a config and of this very build.
//!
//! Start-up skips work whose inputs did not change: the ledger keeps the digest of the config
//! it was last reconciled with (a restart with the same config and the same build reconciles
//! nothing), and the feed cache is keyed by the digest of the config, the revisions and the
//! build. A digest is BLAKE3 over the values' [`std::hash::Hash`] encoding, which the derives
//! make complete: every field of every model type is fed in (adding a field adds it to the
//! digest; the one hand-written impl, `Network`'s, destructures so a new field cannot be
//! missed). `Hash` encodings are not stable across Rust versions or platforms, so every digest
//! also covers [`build_identity`]: a digest is only ever compared with one made by the same
//! binary.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::OnceLock,
};

use crate::model::Config;

/// A 256-bit digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A [`Hasher`] that feeds everything into BLAKE3, so that `value.hash(&mut hasher)` yields a
/// collision-resistant digest of the value's whole `Hash` encoding (not the 64-bit `finish`).
///
/// `Hash` writes a value a few bytes at a time (a length, a string, a separator); they are
/// gathered into blocks of [`DigestHasher::BLOCK`] bytes before BLAKE3 sees them, which makes
/// hashing a 5,000-meeting config several times faster than one BLAKE3 update per write.
#[derive(Clone, Debug, Default)]
pub struct DigestHasher {
    blake3: blake3::Hasher,
    pending: Vec<u8>,
}

impl DigestHasher {
    /// Bytes gathered before they are handed to BLAKE3.
    pub const BLOCK: usize = 16 * 1024;

    /// A hasher whose digests are distinct from those of any other `domain`.
    pub fn new(domain: &str) -> Self {
        let mut h = Self {
            blake3: blake3::Hasher::new(),
            pending: Vec::with_capacity(Self::BLOCK),
        };
        domain.hash(&mut h);
        build_identity().hash(&mut h);
        h
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> Digest {
        let mut all = self.blake3.clone();
        all.update(&self.pending);
        Digest(*all.finalize().as_bytes())
    }
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > Self::BLOCK {
            self.blake3.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() >= Self::BLOCK {
            self.blake3.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// The first 8 bytes of the digest; use [`DigestHasher::digest`] for the whole of it.
    fn finish(&self) -> u64 {
        let d = self.digest();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d.0[..8]);
        u64::from_le_bytes(first)
    }
}

/// The digest of a whole config (meetings, schedule, settings, attached agendas), as the
/// ledger's reconciliation and the feeds see it, for this build.
pub fn config_digest(config: &Config) -> Digest {
    let mut h = DigestHasher::new("convenor config");
    config.hash(&mut h);
    h.digest()
}

/// What tells this build of convenor from any other: the package version, the linker's GNU
/// build-id (a hash of the linked code, read from the running image by the `buildid` crate;
/// the toolchains convenor is built with emit one), and the running executable's size,
/// modification time and inode (the test ccache uses for compilers: it also covers a binary
/// linked without a build-id). A rebuilt or reinstalled binary gets a new identity, so nothing
/// one build derived is trusted by another. When the executable cannot be examined, the
/// identity is unique to this process, so nothing derived by an earlier run is trusted.
pub fn build_identity() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let build_id: String = buildid::build_id()
            .map(hex::encode)
            .unwrap_or_else(|| "no-build-id".to_owned());
        let version = format!("{} {build_id}", env!("CARGO_PKG_VERSION"));
        let exe = std::env::current_exe().and_then(std::fs::metadata);
        match exe {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt as _;
                format!(
                    "{version} {} {} {}.{} {}",
                    meta.len(),
                    meta.dev(),
                    meta.ino(),
                    meta.mtime(),
                    meta.mtime_nsec()
                )
            }
            Err(e) => {
                tracing::debug!("cannot examine the executable ({e}): no digest is reused");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                format!(
                    "{version} process {} {}",
                    std::process::id(),
                    now.as_nanos()
                )
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_the_whole_encoding_and_the_domain() {
        let of = |domain: &str, v: &(&str, u32)| {
            let mut h = DigestHasher::new(domain);
            v.hash(&mut h);
            h.digest()
        };
        assert_eq!(of("a", &("x", 1)), of("a", &("x", 1)));
        assert_ne!(of("a", &("x", 1)), of("a", &("x", 2)));
        assert_ne!(of("a", &("x", 1)), of("a", &("y", 1)));
        assert_ne!(of("a", &("x", 1)), of("b", &("x", 1)));
        assert_eq!(of("a", &("x", 1)).to_string().len(), 64);
    }

    #[test]
    fn gathering_writes_into_blocks_changes_no_digest() {
        // The same bytes, written in pieces of every size around the block, give the digest of
        // the bytes written at once (BLAKE3 of the concatenation).
        let data: Vec<u8> = (0..3 * DigestHasher::BLOCK + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut whole = blake3::Hasher::new();
        whole.update(&data);
        let expected = Digest(*whole.finalize().as_bytes());
        for piece in [
            1,
            7,
            1000,
            DigestHasher::BLOCK - 1,
            DigestHasher::BLOCK,
            40_000,
        ] {
            let mut h = DigestHasher::default();
            for chunk in data.chunks(piece) {
                h.write(chunk);
            }
            assert_eq!(h.digest(), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn the_build_identity_names_the_version_the_build_id_and_the_executable() {
        let id = build_identity();
        assert!(id.starts_with(env!("CARGO_PKG_VERSION")), "{id}");
        assert!(
            !id.contains("process"),
            "the test binary can be examined: {id}"
        );
        // The linker's build-id, as readelf (binutils) shows it for this very executable.
        let exe = std::env::current_exe().expect("exe");
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .expect("run readelf");
        let notes = String::from_utf8_lossy(&out.stdout);
        let from_readelf = notes
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("the test binary has a GNU build-id");
        assert!(id.contains(from_readelf), "{id} lacks {from_readelf}");
    }
}
