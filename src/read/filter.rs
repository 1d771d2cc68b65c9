//! What the front ends ask for, parsed once: the finding filter, time windows, pages. The JSON API,
//! the gRPC query API and the dashboard read the same parameters with the same rules, and a bad
//! value is the same [`BadParam`] everywhere, naming the parameter and what it should be.

use crate::model::TraceId;
pub use crate::store::FindingFilter;
use crate::store::Window;
use crate::verify::{Scope, Verdict};

/// Findings on a page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Findings on a page at most.
pub const MAX_LIMIT: usize = 1000;

const TIME: &str = "an RFC 3339 time (2026-11-24T10:00:00Z) or a duration before now (15m)";

/// A parameter a caller got wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter '{name}': {message}")]
pub struct BadParam {
    pub name: &'static str,
    pub message: String,
}

impl BadParam {
    fn not(name: &'static str, value: &str, expected: &str) -> BadParam {
        BadParam {
            name,
            message: format!("'{value}' is not {expected}"),
        }
    }
}

/// Reads one parameter by name, empty meaning absent: a query string, a form, a protobuf message.
pub trait Params {
    fn get(&self, name: &str) -> Option<&str>;

    /// The parameter parsed by `f`, or a [`BadParam`] saying it is not `expected`.
    fn parse<T>(
        &self,
        name: &'static str,
        expected: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, BadParam> {
        self.get(name)
            .map(|v| f(v).ok_or_else(|| BadParam::not(name, v, expected)))
            .transpose()
    }
}

impl<S: std::hash::BuildHasher> Params for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Fails on a parameter not in `known`, so that a misspelt one is not silently ignored.
pub fn only<'a>(mut given: impl Iterator<Item = &'a str>, known: &[&str]) -> Result<(), BadParam> {
    match given.find(|k| !known.contains(k)) {
        Some(unknown) => Err(BadParam {
            name: "query",
            message: format!("unknown parameter '{unknown}'; known: {}", known.join(", ")),
        }),
        None => Ok(()),
    }
}

/// A point in time: RFC 3339 (`2026-11-24T10:00:00Z`), or a duration before now (`15m`, `2h`).
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
    }
    let ago = humantime::parse_duration(s).ok()?;
    Some(crate::wall_ms().saturating_sub(ago.as_millis() as u64))
}

/// `since` and `until`, each a time as [`parse_time`] reads it.
pub fn window(p: &impl Params) -> Result<Window, BadParam> {
    Ok(Window {
        since_ms: p.parse("since", TIME, parse_time)?,
        until_ms: p.parse("until", TIME, parse_time)?,
    })
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(p: &impl Params) -> Result<usize, BadParam> {
    Ok(p.parse("limit", "a number from 1 to 1000", |s| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
    })?
    .unwrap_or(DEFAULT_LIMIT))
}

/// `cursor`: the `next` of a previous page.
pub fn cursor(p: &impl Params) -> Result<Option<i64>, BadParam> {
    p.parse("cursor", "a cursor from a previous page's 'next'", |s| {
        s.parse::<i64>().ok().filter(|n| *n > 0)
    })
}

/// The filter read from parameters; defined with the store's query, read here.
impl FindingFilter {
    /// Its parameters' names.
    pub const PARAMS: [&str; 7] = [
        "kind",
        "stage",
        "caller",
        "callee",
        "trace_id",
        "scope",
        "first_break",
    ];

    pub fn parse(p: &impl Params) -> Result<FindingFilter, BadParam> {
        let kinds: Vec<&str> = Verdict::ALL
            .iter()
            .filter(|v| v.is_finding())
            .map(|v| v.as_str())
            .collect();
        Ok(FindingFilter {
            kind: p.parse("kind", &format!("one of {}", kinds.join(", ")), |s| {
                Verdict::parse(s).filter(|v| v.is_finding())
            })?,
            stage: p.get("stage").map(str::to_string),
            caller: p.get("caller").map(str::to_string),
            callee: p.get("callee").map(str::to_string),
            trace_id: p.parse("trace_id", "a 32-digit hex trace id", |s| {
                TraceId::from_hex(s.trim())
            })?,
            scope: p.parse("scope", "cross_service or in_process", Scope::parse)?,
            first_break: p.parse("first_break", "true or false", |s| s.parse().ok())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_filter_reads_every_field_and_names_the_bad_one() {
        let f = FindingFilter::parse(&map(&[
            ("kind", "missing"),
            ("stage", "canary"),
            ("scope", "in_process"),
            ("first_break", "true"),
            ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("caller", ""),
        ]))
        .unwrap();
        assert_eq!(f.kind, Some(Verdict::Missing));
        assert_eq!(f.stage.as_deref(), Some("canary"));
        assert_eq!(f.scope, Some(Scope::InProcess));
        assert_eq!(f.first_break, Some(true));
        assert!(f.trace_id.is_some());
        assert_eq!(f.caller, None, "empty is absent");

        for (name, value, expected) in [
            ("kind", "ok", "one of missing"),
            ("scope", "sideways", "cross_service or in_process"),
            ("first_break", "yes", "true or false"),
            ("trace_id", "0", "a 32-digit hex trace id"),
        ] {
            let e = FindingFilter::parse(&map(&[(name, value)])).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.message.contains(expected), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid parameter '{name}'"))
            );
        }
    }

    #[test]
    fn windows_limits_and_cursors() {
        let w = window(&map(&[("since", "2026-11-24T10:00:00Z"), ("until", "")])).unwrap();
        assert_eq!(w.since_ms, Some(1_795_514_400_000));
        assert_eq!(w.until_ms, None);
        let e = window(&map(&[("until", "soon")])).unwrap_err();
        assert_eq!(e.name, "until");
        assert_eq!(limit(&map(&[])).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(&map(&[("limit", "1000")])).unwrap(), 1000);
        assert_eq!(limit(&map(&[("limit", "0")])).unwrap_err().name, "limit");
        assert_eq!(
            cursor(&map(&[("cursor", "-3")])).unwrap_err().name,
            "cursor"
        );
        assert_eq!(
            only(["kind", "limt"].into_iter(), &["kind", "limit"])
                .unwrap_err()
                .message,
            "unknown parameter 'limt'; known: kind, limit"
        );
    }
}
