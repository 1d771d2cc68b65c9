//! Which attribute carries the release stage, and which keys are near misses of it.
//!
//! A near miss is the bug behind `key_mismatch`: a service that writes `x-release-stag` or
//! `X_Release_Stage` instead of the configured key. A key is a near miss when it is not configured but
//! equals a configured key after lower-casing and `_` -> `-`, or is within edit distance 2 of one.
//! Every attribute key of every span is classified, so the common answer ("unrelated key") must be
//! cheap: a length check rejects most keys before any string work, and a [`KeyCache`] per request
//! classifies each distinct key once (attribute keys are a small vocabulary).

use std::collections::HashMap;

use foldhash::fast::RandomState;

/// Edit distance within which a key counts as a near miss of a configured one.
const NEAR_MISS_DISTANCE: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyClass {
    /// The n-th configured key (lower n wins).
    Stage(usize),
    NearMiss,
    Unrelated,
}

#[derive(Debug)]
pub struct StageKeys {
    keys: Vec<String>,
    normalized: Vec<String>,
    min_len: usize,
    max_len: usize,
}

impl StageKeys {
    pub fn new(keys: &[String]) -> Self {
        let normalized: Vec<String> = keys.iter().map(|k| normalize(k)).collect();
        let lens = keys.iter().map(|k| k.len());
        StageKeys {
            min_len: lens
                .clone()
                .min()
                .unwrap_or(0)
                .saturating_sub(NEAR_MISS_DISTANCE),
            max_len: lens.max().unwrap_or(0) + NEAR_MISS_DISTANCE,
            keys: keys.to_vec(),
            normalized,
        }
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    pub fn classify(&self, key: &str) -> KeyClass {
        if key.len() < self.min_len || key.len() > self.max_len {
            return KeyClass::Unrelated;
        }
        if let Some(i) = self.keys.iter().position(|k| k == key) {
            return KeyClass::Stage(i);
        }
        if self.is_near_miss(key) {
            KeyClass::NearMiss
        } else {
            KeyClass::Unrelated
        }
    }

    fn is_near_miss(&self, key: &str) -> bool {
        // Edit distance is at least the difference in length: most keys in the overall length
        // range are still too long or short for every configured key, and need no string work.
        let chars = key.chars().count();
        let near = |k: &String| k.chars().count().abs_diff(chars) <= NEAR_MISS_DISTANCE;
        if !self.normalized.iter().any(near) {
            return false;
        }
        let n = normalize(key);
        self.normalized
            .iter()
            .filter(|k| near(k))
            .any(|k| *k == n || strsim::levenshtein(k, &n) <= NEAR_MISS_DISTANCE)
    }
}

/// Remembers classifications for the keys of one request. Keys come as the bytes they arrived
/// in: most are outside the configured keys' length range and are never looked at further, not
/// even checked for UTF-8.
pub struct KeyCache<'a> {
    keys: &'a StageKeys,
    seen: HashMap<&'a [u8], KeyClass, RandomState>,
}

impl<'a> KeyCache<'a> {
    pub fn new(keys: &'a StageKeys) -> Self {
        KeyCache {
            keys,
            seen: HashMap::default(),
        }
    }

    /// A key that is not UTF-8 is no stage key, nor close to one.
    pub fn classify(&mut self, key: &'a [u8]) -> KeyClass {
        let keys = self.keys;
        if key.len() < keys.min_len || key.len() > keys.max_len {
            return KeyClass::Unrelated;
        }
        *self
            .seen
            .entry(key)
            .or_insert_with(|| match std::str::from_utf8(key) {
                Ok(k) => keys.classify(k),
                Err(_) => KeyClass::Unrelated,
            })
    }
}

fn normalize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> StageKeys {
        StageKeys::new(&[
            "x-release-stage".into(),
            "http.request.header.x-release-stage".into(),
        ])
    }

    #[test]
    fn configured_keys_in_order() {
        let k = defaults();
        assert_eq!(k.classify("x-release-stage"), KeyClass::Stage(0));
        assert_eq!(
            k.classify("http.request.header.x-release-stage"),
            KeyClass::Stage(1)
        );
    }

    #[test]
    fn near_misses() {
        let k = defaults();
        for key in [
            "x-release-stag",
            "X_Release_Stage",
            "X-Release-Stage",
            "x_release_stage",
            "x-relase-stage",
            "x-release-stages",
            "http.request.header.x_release_stage",
        ] {
            assert_eq!(k.classify(key), KeyClass::NearMiss, "{key}");
        }
    }

    #[test]
    fn unrelated_keys() {
        let k = defaults();
        for key in [
            "http.method",
            "service.name",
            "x-request-id",
            "release",
            "x-rel",
            "deployment.stage",
        ] {
            assert_eq!(k.classify(key), KeyClass::Unrelated, "{key}");
        }
        let mut cache = KeyCache::new(&k);
        for _ in 0..2 {
            assert_eq!(cache.classify(b"x-request-id"), KeyClass::Unrelated);
            assert_eq!(cache.classify(b"x-release-stag"), KeyClass::NearMiss);
            assert_eq!(cache.classify(b"x-release-stage"), KeyClass::Stage(0));
            assert_eq!(cache.classify(b"x-release-stag\xff"), KeyClass::Unrelated);
        }
    }
}
