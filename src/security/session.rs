//! Dashboard login sessions, without server-side state: the cookie holds an expiry and an HMAC of
//! it keyed by the digest of the read token that logged in. Every instance of a cluster reading the
//! same token file accepts it, and removing a token from the file ends its sessions.

use ring::hmac;
use subtle::ConstantTimeEq;

use super::tokens::Tokens;

/// The cookie's name.
pub const COOKIE: &str = "grayscope_session";

/// How long a login lasts.
pub const LIFETIME_S: u64 = 12 * 3600;

const CONTEXT: &[u8] = b"grayscope dashboard session v1 ";

/// A session value for the token with `digest`, valid until `now_s + LIFETIME_S`.
pub fn issue(digest: &[u8; 32], now_s: u64) -> String {
    let expires = now_s + LIFETIME_S;
    format!("v1.{expires}.{}", hex(&mac(digest, expires)))
}

/// The `Set-Cookie` value for `session`: HttpOnly (no script reads it), Secure (sent over HTTPS
/// only; browsers also send it to http://localhost), SameSite=Strict (no other site's page makes the
/// browser send it).
pub fn set_cookie(session: &str) -> String {
    format!("{COOKIE}={session}; Path=/; Max-Age={LIFETIME_S}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// Whether `value` is a live session of one of `tokens`.
pub fn valid(value: &str, tokens: &Tokens, now_s: u64) -> bool {
    let mut parts = value.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    if expires <= now_s || expires > now_s + LIFETIME_S {
        return false;
    }
    let Some(sig) = unhex(sig) else {
        return false;
    };
    tokens
        .digests()
        .iter()
        .any(|d| bool::from(mac(d, expires).as_slice().ct_eq(&sig)))
}

/// The session cookie's value among `headers`' cookies.
pub fn from_headers(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn mac(digest: &[u8; 32], expires: u64) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, digest);
    let mut msg = CONTEXT.to_vec();
    msg.extend_from_slice(expires.to_string().as_bytes());
    hmac::sign(&key, &msg).as_ref().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Tokens {
        Tokens::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_session_lives_as_long_as_its_token_and_its_lifetime() {
        let t = tokens("0123456789abcdef0123\nfedcba9876543210fedc\n");
        let s = issue(&t.digests()[1], 1_000);
        assert!(valid(&s, &t, 1_000));
        assert!(valid(&s, &t, 1_000 + LIFETIME_S - 1));
        assert!(!valid(&s, &t, 1_000 + LIFETIME_S), "expired");
        assert!(
            !valid(&s, &tokens("0123456789abcdef0123\n"), 1_000),
            "its token was removed"
        );
        let forged = s.replace("v1.", "v1.9").to_string();
        assert!(!valid(&forged, &t, 1_000), "a later expiry is not signed");
        assert!(!valid("v1.2000.zz", &t, 1_000));
        assert!(!valid("", &t, 1_000));
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=b; grayscope_session=v1.5.ab".parse().unwrap(),
        );
        assert_eq!(from_headers(&h), Some("v1.5.ab"));
        assert!(set_cookie("x").contains("HttpOnly; Secure; SameSite=Strict"));
    }
}
