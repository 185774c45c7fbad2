//! Bearer keys: kept as SHA-256 digests, so the tenants file need not hold
//! a token, and compared in constant time, so timing tells nothing about a
//! key.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of a key given as the digest of its token.
const DIGEST_PREFIX: &str = "sha256:";

/// A key: the SHA-256 digest of its token.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

/// A key hashes as its first eight bytes (with [`DigestHasher`], as they
/// are): a digest is spread evenly already, and a caller cannot steer it
/// toward a key's, so hashing it again would only cost every call.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(word));
    }
}

/// The hasher of the map of keys: it keeps the word a [`Key`] gives it.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    // Only a `Key` is hashed with it; anything else still gets a hash.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// The map of keys' hashing, by [`DigestHasher`].
pub type ByDigest = BuildHasherDefault<DigestHasher>;

impl std::fmt::Debug for Key {
    // A digest is no secret, but logs have no use for it either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// How a key was written in the tenants file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// `sha256:<hex>`: the file holds no token.
    AsDigest,
    /// The token itself: anyone who reads the file can use it.
    Literally,
}

/// Why a key in the tenants file cannot be one. The key itself is never part
/// of the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// An empty string.
    #[error("a key is empty")]
    Empty,
    /// `sha256:` followed by something other than 64 hex digits.
    #[error(
        "a key starting with \"sha256:\" must continue with 64 hex digits (the SHA-256 of the token, as `sha256sum` prints it)"
    )]
    BadDigest,
}

impl Key {
    /// The key of `written`: `sha256:<64 hex digits>`, or else a token given
    /// literally.
    pub fn parse(written: &str) -> Result<(Key, Written), KeyError> {
        if written.is_empty() {
            return Err(KeyError::Empty);
        }
        match written.strip_prefix(DIGEST_PREFIX) {
            Some(hex_digits) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hex_digits.trim(), &mut digest)
                    .map_err(|_| KeyError::BadDigest)?;
                Ok((Key(digest), Written::AsDigest))
            }
            None => Ok((Key::of_token(written), Written::Literally)),
        }
    }

    /// The key a caller's token stands for.
    pub fn of_token(token: &str) -> Key {
        Key(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `self` and `other` are the same key, in time that does not
    /// depend on where they differ.
    pub fn matches(&self, other: &Key) -> bool {
        // Four words, each compared in constant time: a byte at a time
        // costs 32 such comparisons.
        let words = |key: &Key| -> [u64; 4] {
            std::array::from_fn(|i| {
                let mut word = [0u8; 8];
                word.copy_from_slice(&key.0[i * 8..i * 8 + 8]);
                u64::from_ne_bytes(word)
            })
        };
        words(self)[..].ct_eq(&words(other)[..]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_and_the_token_it_hashes_are_the_same_key() {
        // printf %s secret | sha256sum
        let written = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        let (key, how) = Key::parse(written).unwrap();
        assert_eq!(how, Written::AsDigest);
        assert!(key.matches(&Key::of_token("secret")));
        assert!(!key.matches(&Key::of_token("secret ")));
        let (literal, how) = Key::parse("secret").unwrap();
        assert_eq!(how, Written::Literally);
        assert!(literal.matches(&key));
    }

    #[test]
    fn malformed_digests_are_refused_without_echoing_them() {
        for written in [
            "sha256:",
            "sha256:abc",
            "sha256:zz80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b00",
        ] {
            let error = Key::parse(written).unwrap_err();
            assert_eq!(error, KeyError::BadDigest);
            assert!(!error.to_string().contains("2bb8"));
        }
        assert_eq!(Key::parse("").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn keys_are_found_by_their_digest_and_told_apart_by_all_of_it() {
        let mut keys: std::collections::HashMap<Key, u32, ByDigest> = Default::default();
        for index in 0..1000 {
            keys.insert(Key::of_token(&format!("token-{index}")), index);
        }
        for index in 0..1000 {
            assert_eq!(
                keys.get(&Key::of_token(&format!("token-{index}"))),
                Some(&index)
            );
        }
        // The same first eight bytes, another key.
        let mut twin = Key::of_token("token-7");
        twin.0[31] ^= 1;
        assert_eq!(keys.get(&twin), None);
        assert!(!twin.matches(&Key::of_token("token-7")));
    }

    #[test]
    fn a_key_does_not_print_its_digest() {
        let (key, _) = Key::parse("secret").unwrap();
        assert_eq!(format!("{key:?}"), "Key(…)");
    }
}
