//! Bearer tokens: a set read from a file (one per line, so that a new token can be added before the
//! old one is removed), compared in constant time.
//!
//! Each token is kept as its SHA-256 digest and a presented token is hashed before comparing: every
//! comparison is then of 32 bytes, so neither a token's length nor the position of its first wrong
//! byte shows in the time an answer takes, and every token of the set is compared every time.

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::SecurityError;

/// Shorter tokens are refused at load: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// A set of accepted tokens.
pub struct Tokens {
    digests: Vec<[u8; 32]>,
    /// The first token of the file: what this process presents to other instances.
    first: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.digests.len())
    }
}

impl Tokens {
    /// Parses a tokens file: one token per line; blank lines and lines starting `#` are skipped.
    pub fn parse(text: &[u8]) -> Result<Tokens, SecurityError> {
        let text = std::str::from_utf8(text).map_err(|_| SecurityError::Tokens {
            message: "the file is not UTF-8 text".into(),
        })?;
        let mut digests = Vec::new();
        let mut first = None;
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            let bad = |message: String| SecurityError::Tokens {
                message: format!("line {}: {message}", i + 1),
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "a token must be at least {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "a token is printable ASCII without spaces, as an HTTP header value must be"
                        .into(),
                ));
            }
            first.get_or_insert_with(|| token.to_string());
            digests.push(hash(token.as_bytes()));
        }
        match first {
            Some(first) => Ok(Tokens { digests, first }),
            None => Err(SecurityError::Tokens {
                message: "no token in the file (one per line; # starts a comment)".into(),
            }),
        }
    }

    /// Whether `presented` is one of the set.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let h = hash(presented);
        let mut any = subtle::Choice::from(0);
        for d in &self.digests {
            any |= d.ct_eq(&h);
        }
        any.into()
    }

    /// The digest of `presented` if it is one of the set: the key of its login sessions.
    pub fn digest_of(&self, presented: &[u8]) -> Option<[u8; 32]> {
        let h = hash(presented);
        self.accepts(presented).then_some(h)
    }

    /// Each token's digest, for keys derived from the tokens (login sessions).
    pub fn digests(&self) -> &[[u8; 32]] {
        &self.digests
    }

    pub fn first(&self) -> &str {
        &self.first
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn hash(b: &[u8]) -> [u8; 32] {
    let d = digest(&SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The token of an `Authorization: Bearer ...` header value; the scheme is case-insensitive.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";
    const B: &str = "fedcba9876543210fedc";

    #[test]
    fn several_tokens_comments_and_blank_lines() {
        let t = Tokens::parse(format!("# rotated 2026-11\n{A}\n\n  {B}  \n").as_bytes()).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.accepts(A.as_bytes()));
        assert!(t.accepts(B.as_bytes()));
        assert!(!t.accepts(b"0123456789abcdef012"), "a prefix");
        assert!(!t.accepts(format!("{A}x").as_bytes()), "longer");
        assert!(!t.accepts(b""));
        assert_eq!(t.first(), A);
    }

    #[test]
    fn refuses_files_that_protect_nothing() {
        for (text, says) in [
            ("", "no token"),
            ("# only a comment\n", "no token"),
            ("short\n", "line 1: a token must be at least 16"),
            ("0123456789abcdef 0123\n", "line 1: a token is printable"),
        ] {
            let e = Tokens::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(Tokens::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
