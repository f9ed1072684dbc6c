//! Lead tokens and CSRF tokens.
//!
//! A lead token is 32 random bytes from the operating system (`getrandom`), written as 64 hex
//! digits; only its SHA-256 is stored, so a copy of the state directory does not open any lead
//! page. Each expires a [`crate::model::LeadLinkLifetime`] after it is issued; whether a stored
//! token still opens its page at an instant is [`Standing::of`] (pure: `now` is an argument). A
//! CSRF token is HMAC-SHA-256 under a secret kept in the agenda store, over the lead
//! token's hash and the proposal's number: a form served on one lead page works only there, for
//! that proposal.

use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// What a stored lead token is worth at an instant (see [`Standing::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It opens its lead page and records decisions.
    Usable,
    /// The team revoked it (`convenor agenda token rotate|revoke`).
    Revoked,
    /// Its lifetime is over.
    Expired,
}

impl Standing {
    /// The standing at `now` of a token expiring at `expires`, revoked or not: usable strictly
    /// before `expires`, expired from `expires` on; a revocation outranks the expiry.
    pub fn of(revoked: bool, expires: Timestamp, now: Timestamp) -> Self {
        if revoked {
            Self::Revoked
        } else if now < expires {
            Self::Usable
        } else {
            Self::Expired
        }
    }
}

/// Why no random bytes could be had.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// 32 bytes from the operating system's random source.
pub fn random_bytes() -> Result<[u8; 32], RandomError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| RandomError(e.to_string()))?;
    Ok(b)
}

/// A fresh lead token: (the token to hand out, its hash to store).
pub fn issue() -> Result<(String, String), RandomError> {
    let raw = hex::encode(random_bytes()?);
    let h = hash(&raw);
    Ok((raw, h))
}

/// The stored form of a token: the hex SHA-256 of its text.
pub fn hash(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// True when `raw` has the shape of a token (64 lowercase hex digits); anything else is refused
/// before any lookup.
pub fn well_formed(raw: &str) -> bool {
    raw.len() == 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The CSRF token of the forms on a lead page for one proposal.
pub fn csrf(secret: &[u8], token_hash: &str, proposal: i64) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(token_hash.as_bytes());
    mac.update(b"\0");
    mac.update(proposal.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a posted CSRF token in constant time.
pub fn csrf_ok(secret: &[u8], token_hash: &str, proposal: i64, posted: &str) -> bool {
    let want = csrf(secret, token_hash, proposal);
    !want.is_empty() && bool::from(want.as_bytes().ct_eq(posted.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_only_their_hash_is_kept() {
        let (a, ha) = issue().expect("random");
        let (b, _) = issue().expect("random");
        assert_ne!(a, b);
        assert!(well_formed(&a) && well_formed(&b));
        assert_eq!(ha, hash(&a));
        assert_ne!(ha, a);
        for bad in [
            "",
            "abc",
            &a.to_uppercase(),
            &format!("{a}0"),
            &a.replace('a', "g"),
        ] {
            assert!(!well_formed(bad) || bad == a, "{bad}");
        }
    }

    #[test]
    fn csrf_is_bound_to_secret_token_and_proposal() {
        let t = hash("t");
        let c = csrf(b"secret", &t, 7);
        assert!(csrf_ok(b"secret", &t, 7, &c));
        assert!(!csrf_ok(b"secret", &t, 8, &c));
        assert!(!csrf_ok(b"other", &t, 7, &c));
        assert!(!csrf_ok(b"secret", &hash("u"), 7, &c));
        assert!(!csrf_ok(b"secret", &t, 7, ""));
    }
}
