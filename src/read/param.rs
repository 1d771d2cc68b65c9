//! A parameter's rules, said once. The JSON API, the gRPC query API and the dashboard read their
//! parameters through a [`Param`], and the OpenAPI document describes each one from the same
//! [`Param`] ([`Rule::schema`]): what the document calls valid is exactly what is accepted, so a
//! client generated from it never sends a request that is refused.
//!
//! Every rule is checked on the raw text, the way it arrives in a query string or a webhook's
//! metadata, and its schema says the same in JSON Schema: patterns are the very regular
//! expressions the checks run.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Value as Json, json};

use crate::model::TraceId;

/// A parameter a caller got wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter '{name}': {message}")]
pub struct BadParam {
    pub name: &'static str,
    pub message: String,
}

/// Reads one parameter's raw value by name. A source where an empty field means "not given" (an
/// HTML form, a proto3 string) answers `None` for it; one where it is a value (the JSON API's
/// query strings, a webhook's metadata) answers `""`, which only [`Rule::Text`] reads as absent.
pub trait Params {
    fn get(&self, name: &str) -> Option<&str>;
}

/// Query strings and webhook metadata: every value as given, the empty one too.
impl<S: std::hash::BuildHasher> Params for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::HashMap::get(self, name).map(String::as_str)
    }
}

/// A path's segment, the value of whichever parameter is asked for: the router has already said
/// which parameter it is.
pub struct Segment<'a>(pub &'a str);

impl Params for Segment<'_> {
    fn get(&self, _: &str) -> Option<&str> {
        Some(self.0)
    }
}

/// An HTML form's fields, where an empty field is one not filled in.
pub struct Form<'a, P>(pub &'a P);

impl<P: Params> Params for Form<'_, P> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).filter(|v| !v.is_empty())
    }
}

/// A duration as parameters take it: up to four parts of digits and a unit, `15m`, `1h30m`.
/// Bounded so that no value the pattern allows can overflow.
const DURATION: &str = r"^([0-9]{1,9}(ms|s|m|h|d|w)){1,4}$";
/// A ratio written as a decimal, `0`, `0.99`, `1`: the form a webhook's string metadata takes.
const RATIO: &str = r"^(0(\.[0-9]{1,9})?|1(\.0{1,9})?)$";
/// A page cursor: a positive number, opaque to the caller.
const CURSOR: &str = r"^[1-9][0-9]{0,17}$";
/// A trace id: 32 lowercase hex digits, as W3C Trace Context writes it.
const TRACE_ID: &str = r"^[0-9a-f]{32}$";

/// Each pattern compiled from the very text the document carries.
static DURATION_RE: LazyLock<Regex> = LazyLock::new(|| compile(DURATION));
static RATIO_RE: LazyLock<Regex> = LazyLock::new(|| compile(RATIO));
static CURSOR_RE: LazyLock<Regex> = LazyLock::new(|| compile(CURSOR));
static TRACE_ID_RE: LazyLock<Regex> = LazyLock::new(|| compile(TRACE_ID));

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a pattern of this module")
}

/// What a parameter's value may be.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    /// Any text; empty is absent (or, for a required parameter, missing).
    Text,
    /// One of these words.
    OneOf(fn() -> Vec<&'static str>),
    /// A trace id, 32 lowercase hex digits. The all-zero id is not a valid trace id, but asking
    /// for it is a fair question with a plain answer: no such trace.
    TraceId,
    /// A point in time: an RFC 3339 time with its offset, or a duration before now.
    Time,
    /// A length of time, [`DURATION`].
    Duration,
    /// A whole number from `min` to `max`.
    Count { min: u64, max: u64 },
    /// A share from 0 to 1, written as a decimal ([`RATIO`]).
    Ratio,
    /// `true` or `false`.
    Flag,
    /// The `next` of a previous page ([`CURSOR`]).
    Cursor,
}

/// A value that passed its rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Text(&'a str),
    Count(u64),
    Ratio(f64),
    Flag(bool),
    /// Milliseconds since the Unix epoch; times before it are the epoch.
    Time(u64),
    Duration(Duration),
    TraceId(TraceId),
}

impl Rule {
    /// What a value must be, for error messages and the document.
    pub fn expected(&self) -> String {
        match self {
            Rule::Text => "text".into(),
            Rule::OneOf(words) => format!("one of {}", words().join(", ")),
            Rule::TraceId => "a trace id: 32 lowercase hex digits".into(),
            Rule::Time => {
                "an RFC 3339 time (2026-11-24T10:00:00Z) or a duration before now (15m)".into()
            }
            Rule::Duration => {
                "a duration: a number and a unit (ms, s, m, h, d, w), as in 5m or 1h30m".into()
            }
            Rule::Count { min, max } => format!("a whole number from {min} to {max}"),
            Rule::Ratio => "a ratio from 0 to 1, as in 0.99".into(),
            Rule::Flag => "true or false".into(),
            Rule::Cursor => "a cursor from a previous page's 'next'".into(),
        }
    }

    /// The value, if `s` is one.
    pub fn read<'a>(&self, s: &'a str) -> Option<Value<'a>> {
        match self {
            Rule::Text => Some(Value::Text(s)),
            Rule::OneOf(words) => words()
                .into_iter()
                .find(|w| *w == s)
                .map(|_| Value::Text(s)),
            Rule::TraceId => TRACE_ID_RE
                .is_match(s)
                .then(|| u128::from_str_radix(s, 16).ok())
                .flatten()
                .map(|id| Value::TraceId(TraceId(id))),
            Rule::Time => read_time(s).map(Value::Time),
            Rule::Duration => read_duration(s).map(Value::Duration),
            Rule::Count { min, max } => (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .filter(|n| (min..=max).contains(&n))
                .map(Value::Count),
            Rule::Ratio => RATIO_RE
                .is_match(s)
                .then(|| s.parse::<f64>().ok())
                .flatten()
                .map(Value::Ratio),
            Rule::Flag => s.parse().ok().map(Value::Flag),
            Rule::Cursor => CURSOR_RE
                .is_match(s)
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .map(Value::Count),
        }
    }

    /// The rule in JSON Schema. `as_text` describes the value as the string it is written as,
    /// for places whose values are all strings (a Flagger webhook's `metadata`); otherwise
    /// counts and flags are integers and booleans, as a query string's generated clients take
    /// them.
    pub fn schema(&self, required: bool, as_text: bool) -> Json {
        match *self {
            Rule::Text if required => json!({"type": "string", "minLength": 1}),
            Rule::Text => json!({"type": "string"}),
            Rule::OneOf(words) => json!({"type": "string", "enum": words()}),
            Rule::TraceId => json!({"type": "string", "pattern": TRACE_ID}),
            Rule::Time => json!({"anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": DURATION},
            ]}),
            Rule::Duration => json!({"type": "string", "pattern": DURATION}),
            Rule::Count { min, max } if as_text => {
                // Digits alone can say "0 to 10^k - 1", and only that.
                let digits = max.to_string().len();
                assert!(
                    min == 0 && max.to_string().bytes().all(|b| b == b'9'),
                    "a count written as text must run from 0 to all nines, not {min} to {max}"
                );
                json!({"type": "string", "pattern": format!("^[0-9]{{1,{digits}}}$")})
            }
            Rule::Count { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
            Rule::Ratio => json!({"type": "string", "pattern": RATIO}),
            Rule::Flag if as_text => json!({"type": "string", "enum": ["true", "false"]}),
            Rule::Flag => json!({"type": "boolean"}),
            Rule::Cursor => json!({"type": "string", "pattern": CURSOR}),
        }
    }
}

/// [`Rule::Time`]: RFC 3339 with any offset (a time before 1970 is 1970), or a duration before
/// now.
fn read_time(s: &str) -> Option<u64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis().max(0) as u64);
    }
    let ago = read_duration(s)?;
    Some(crate::wall_ms().saturating_sub(ago.as_millis() as u64))
}

fn read_duration(s: &str) -> Option<Duration> {
    DURATION_RE
        .is_match(s)
        .then(|| humantime::parse_duration(s).ok())
        .flatten()
}

/// One parameter: its name, its rule, whether it must be given, and what it is for.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub rule: Rule,
    pub required: bool,
    /// What it means, for the document; the rule's own words follow it there.
    pub about: &'static str,
}

impl Param {
    pub const fn optional(name: &'static str, rule: Rule, about: &'static str) -> Param {
        Param {
            name,
            rule,
            required: false,
            about,
        }
    }

    pub const fn required(name: &'static str, rule: Rule, about: &'static str) -> Param {
        Param {
            name,
            rule,
            required: true,
            about,
        }
    }

    /// The value in `p`, checked: `None` when it is not given.
    pub fn read<'a>(&self, p: &'a impl Params) -> Result<Option<Value<'a>>, BadParam> {
        let raw = p
            .get(self.name)
            .filter(|v| !(v.is_empty() && matches!(self.rule, Rule::Text)));
        match raw {
            None if self.required => Err(self.missing()),
            None => Ok(None),
            Some(raw) => self.rule.read(raw).map(Some).ok_or_else(|| BadParam {
                name: self.name,
                message: format!("'{raw}' is not {}", self.rule.expected()),
            }),
        }
    }

    /// The error for a required parameter not given.
    pub fn missing(&self) -> BadParam {
        BadParam {
            name: self.name,
            message: format!("is required: {}", self.rule.expected()),
        }
    }

    /// A required parameter's value, as one of the typed reads below gave it: [`Param::read`]
    /// already refuses its absence, this says so in the type.
    pub fn need<T>(&self, v: Result<Option<T>, BadParam>) -> Result<T, BadParam> {
        v?.ok_or_else(|| self.missing())
    }

    /// The value through `pick`, which names the [`Value`] this parameter's rule gives. Which
    /// one that is does not depend on the input: every parameter is read once in the tests.
    fn pick<'a, T>(
        &self,
        p: &'a impl Params,
        pick: impl Fn(Value<'a>) -> Option<T>,
    ) -> Result<Option<T>, BadParam> {
        Ok(self.read(p)?.map(|v| {
            pick(v).unwrap_or_else(|| panic!("{} is read as another kind of value", self.name))
        }))
    }

    pub fn text<'a>(&self, p: &'a impl Params) -> Result<Option<&'a str>, BadParam> {
        self.pick(p, |v| match v {
            Value::Text(s) => Some(s),
            _ => None,
        })
    }

    pub fn count(&self, p: &impl Params) -> Result<Option<u64>, BadParam> {
        self.pick(p, |v| match v {
            Value::Count(n) => Some(n),
            _ => None,
        })
    }

    pub fn ratio(&self, p: &impl Params) -> Result<Option<f64>, BadParam> {
        self.pick(p, |v| match v {
            Value::Ratio(r) => Some(r),
            _ => None,
        })
    }

    pub fn flag(&self, p: &impl Params) -> Result<Option<bool>, BadParam> {
        self.pick(p, |v| match v {
            Value::Flag(b) => Some(b),
            _ => None,
        })
    }

    /// Milliseconds since the Unix epoch.
    pub fn time(&self, p: &impl Params) -> Result<Option<u64>, BadParam> {
        self.pick(p, |v| match v {
            Value::Time(t) => Some(t),
            _ => None,
        })
    }

    pub fn duration(&self, p: &impl Params) -> Result<Option<Duration>, BadParam> {
        self.pick(p, |v| match v {
            Value::Duration(d) => Some(d),
            _ => None,
        })
    }

    pub fn trace_id(&self, p: &impl Params) -> Result<Option<TraceId>, BadParam> {
        self.pick(p, |v| match v {
            Value::TraceId(id) => Some(id),
            _ => None,
        })
    }

    /// Its description in the document: what it means, then what it must be.
    pub fn description(&self) -> String {
        match self.rule {
            // The schema's enum lists the words.
            Rule::OneOf(_) | Rule::Text | Rule::Flag => self.about.to_string(),
            _ => format!("{}; {}", self.about, self.rule.expected()),
        }
    }
}

/// Fails on a parameter not in `known`, so that a misspelt one is not silently ignored.
pub fn only<'a>(
    mut given: impl Iterator<Item = &'a str>,
    known: &[&Param],
) -> Result<(), BadParam> {
    match given.find(|k| !known.iter().any(|p| p.name == *k)) {
        Some(unknown) => Err(BadParam {
            name: "query",
            message: format!(
                "unknown parameter '{unknown}'; known: {}",
                known.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// A query string's parameters, for tests.
#[cfg(test)]
pub fn map(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_reads_what_it_promises() {
        let accept = |rule: Rule, s: &str| rule.read(s).is_some();
        for ok in ["0", "1", "0.99", "1.000", "0.5"] {
            assert!(accept(Rule::Ratio, ok), "{ok}");
        }
        for bad in ["", "1.5", "-0.1", "1e-5", "nan", ".5", "2"] {
            assert!(!accept(Rule::Ratio, bad), "{bad}");
        }
        let count = Rule::Count { min: 1, max: 1000 };
        for (s, ok) in [
            ("1", true),
            ("1000", true),
            ("0001", true),
            ("0", false),
            ("1001", false),
            ("+5", false),
            ("", false),
            ("1.0", false),
            ("99999999999999999999999", false),
        ] {
            assert_eq!(accept(count, s), ok, "{s}");
        }
        for (s, ok) in [
            ("15m", true),
            ("1h30m", true),
            ("250ms", true),
            ("0s", true),
            ("999999999w999999999w999999999w999999999w", true),
            ("1 h", false),
            ("1M", false),
            ("", false),
            ("15", false),
        ] {
            assert_eq!(accept(Rule::Duration, s), ok, "{s}");
        }
        assert_eq!(
            Rule::Duration.read("1h30m"),
            Some(Value::Duration(Duration::from_secs(5400)))
        );
        assert_eq!(
            Rule::Time.read("2026-11-24T11:00:00+01:00"),
            Some(Value::Time(1_795_514_400_000))
        );
        assert_eq!(
            Rule::Time.read("1969-12-31T23:59:59Z"),
            Some(Value::Time(0))
        );
        assert!(
            Rule::Time.read("2026-11-24T10:00:00").is_none(),
            "no offset"
        );
        assert!(Rule::Time.read("soon").is_none());
        assert_eq!(
            Rule::TraceId.read(&"0".repeat(32)),
            Some(Value::TraceId(TraceId(0))),
            "the all-zero id is a question with the answer 'no such trace'"
        );
        assert!(Rule::TraceId.read(&"A".repeat(32)).is_none(), "lowercase");
        assert!(Rule::TraceId.read("0").is_none());
        assert!(Rule::Cursor.read("0").is_none());
        assert_eq!(Rule::Cursor.read("42"), Some(Value::Count(42)));
    }

    #[test]
    fn a_required_parameter_empty_text_and_empty_values() {
        let stage = Param::required("stage", Rule::Text, "the stage");
        assert_eq!(
            stage.text(&map(&[("stage", "")])).unwrap_err().message,
            "is required: text"
        );
        assert_eq!(
            stage.text(&map(&[("stage", "canary")])).unwrap(),
            Some("canary")
        );
        let caller = Param::optional("caller", Rule::Text, "the caller");
        assert_eq!(caller.text(&map(&[("caller", "")])).unwrap(), None);
        let depth = Param::optional("depth", Rule::Count { min: 1, max: 2 }, "depth");
        let e = depth.count(&map(&[("depth", "")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid parameter 'depth': '' is not a whole number from 1 to 2"
        );
        assert_eq!(
            depth.count(&Form(&map(&[("depth", "")]))).unwrap(),
            None,
            "a form's empty field"
        );
    }

    #[test]
    fn schemas_say_what_the_checks_do() {
        assert_eq!(
            Rule::Count { min: 0, max: 999 }.schema(false, true)["pattern"],
            "^[0-9]{1,3}$"
        );
        assert_eq!(Rule::Text.schema(true, false)["minLength"], 1);
        assert_eq!(
            Rule::Flag.schema(false, true)["enum"],
            json!(["true", "false"])
        );
        assert_eq!(Rule::TraceId.schema(true, false)["pattern"], TRACE_ID);
    }
}
