//! What the front ends ask for, parsed once: the finding filter, time windows, pages. The JSON API,
//! the gRPC query API and the dashboard read the same [`Param`]s, and a bad value is the same
//! [`BadParam`] everywhere, naming the parameter and what it should be.

pub use super::param::{BadParam, Form, Params};
use super::param::{Param, Rule};
pub use crate::store::FindingFilter;
use crate::store::Window;
use crate::verify::{Scope, Verdict};

/// Findings on a page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Findings on a page at most.
pub const MAX_LIMIT: usize = 1000;

pub const STAGE: Param = Param::optional(
    "stage",
    Rule::Text,
    "Only this request stage, or `none` for requests without one",
);
pub const SINCE: Param = Param::optional("since", Rule::Time, "From this time");
pub const UNTIL: Param = Param::optional("until", Rule::Time, "Up to this time");
pub const LIMIT: Param = Param::optional(
    "limit",
    Rule::Count {
        min: 1,
        max: MAX_LIMIT as u64,
    },
    "Findings on the page (default 100)",
);
pub const CURSOR: Param = Param::optional("cursor", Rule::Cursor, "Where the page starts");

const KIND: Param = Param::optional(
    "kind",
    Rule::OneOf(Verdict::finding_names),
    "Only findings of this verdict",
);
const CALLER: Param = Param::optional(
    "caller",
    Rule::Text,
    "Only edges from this service (or uninstrumented callee)",
);
const CALLEE: Param = Param::optional(
    "callee",
    Rule::Text,
    "Only edges to this service (or uninstrumented callee)",
);
const TRACE_ID: Param = Param::optional("trace_id", Rule::TraceId, "Only this trace");
const SCOPE: Param = Param::optional(
    "scope",
    Rule::OneOf(|| Scope::ALL.map(Scope::as_str).to_vec()),
    "Only findings where the stage was lost here",
);
const FIRST_BREAK: Param = Param::optional(
    "first_break",
    Rule::Flag,
    "Only the first break of each trace (true), or only the breaks after it (false)",
);

/// `since` and `until`.
pub fn window(p: &impl Params) -> Result<Window, BadParam> {
    Ok(Window {
        since_ms: SINCE.time(p)?,
        until_ms: UNTIL.time(p)?,
    })
}

/// `limit`: [`DEFAULT_LIMIT`] when absent.
pub fn limit(p: &impl Params) -> Result<usize, BadParam> {
    Ok(LIMIT.count(p)?.map_or(DEFAULT_LIMIT, |n| n as usize))
}

/// `cursor`: the `next` of a previous page.
pub fn cursor(p: &impl Params) -> Result<Option<i64>, BadParam> {
    Ok(CURSOR.count(p)?.map(|n| n as i64))
}

/// The filter read from parameters; defined with the store's query, read here.
impl FindingFilter {
    /// Its parameters.
    pub const PARAMS: [&Param; 7] = [
        &KIND,
        &STAGE,
        &CALLER,
        &CALLEE,
        &TRACE_ID,
        &SCOPE,
        &FIRST_BREAK,
    ];

    pub fn parse(p: &impl Params) -> Result<FindingFilter, BadParam> {
        Ok(FindingFilter {
            kind: KIND.text(p)?.and_then(Verdict::parse),
            stage: STAGE.text(p)?.map(str::to_string),
            caller: CALLER.text(p)?.map(str::to_string),
            callee: CALLEE.text(p)?.map(str::to_string),
            trace_id: TRACE_ID.trace_id(p)?,
            scope: SCOPE.text(p)?.and_then(Scope::parse),
            first_break: FIRST_BREAK.flag(p)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::param::map;
    use super::*;

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
            (
                "scope",
                "sideways",
                "one of cross_service, in_process, messaging",
            ),
            ("first_break", "yes", "true or false"),
            ("trace_id", "0", "32 lowercase hex digits"),
            ("kind", "", "'' is not one of"),
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
        let w = window(&Form(&map(&[
            ("since", "2026-11-24T10:00:00Z"),
            ("until", ""),
        ])))
        .unwrap();
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
        assert_eq!(cursor(&map(&[("cursor", "17")])).unwrap(), Some(17));
        assert_eq!(
            super::super::param::only(["kind", "limt"].into_iter(), &[&KIND, &LIMIT])
                .unwrap_err()
                .message,
            "unknown parameter 'limt'; known: kind, limit"
        );
    }
}
