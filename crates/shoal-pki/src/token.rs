//! Join tokens, kubeadm's format: `ID.SECRET` with a 6-character id and a 16-character
//! secret of `a-z0-9`. The id names the token in listings and revocations; only a hash
//! of the secret is stored.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::PkiError;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// A join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}.<secret>)", self.id)
    }
}

impl Token {
    /// A new random token.
    pub fn generate() -> Token {
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        Token {
            id: pick(ID_LEN),
            secret: pick(SECRET_LEN),
        }
    }

    /// Parses `ID.SECRET`.
    pub fn parse(s: &str) -> Result<Token, PkiError> {
        let s = s.trim();
        let bad = || {
            PkiError::Token(format!(
                "expected ID.SECRET ({ID_LEN} and {SECRET_LEN} characters of a-z0-9), as printed by `shoalctl token create`"
            ))
        };
        let (id, secret) = s.split_once('.').ok_or_else(bad)?;
        let ok = |v: &str, n: usize| v.len() == n && v.bytes().all(|b| ALPHABET.contains(&b));
        if !ok(id, ID_LEN) || !ok(secret, SECRET_LEN) {
            return Err(bad());
        }
        Ok(Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `sha256` (hex) of the secret: what the store keeps.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// True when `hash` is this token's secret hash (compared in constant time).
    pub fn matches(&self, hash: &str) -> bool {
        let mine = self.secret_hash();
        mine.len() == hash.len()
            && mine
                .bytes()
                .zip(hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_match_their_hash() {
        let t = Token::generate();
        let p = Token::parse(&t.to_string()).unwrap();
        assert_eq!(p, t);
        assert!(t.matches(&t.secret_hash()));
        assert!(!Token::generate().matches(&t.secret_hash()));
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "abc.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            let e = Token::parse(bad).unwrap_err().to_string();
            assert!(e.contains("ID.SECRET"), "{bad}: {e}");
        }
    }
}
