//! The endpoints' parameters, each set once: a handler reads its parameters through the set's
//! [`Param`]s, refuses any other ([`only`]), and the OpenAPI document lists the same set with
//! each parameter's schema from its rule ([`schema`]). Neither can say more than the other.

use std::collections::HashMap;

use axum::extract::Query as QueryString;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{AnyOf, Object, Schema};
use utoipa::openapi::{RefOr, Required};

use super::ApiError;
use crate::read::filter::{self, FindingFilter};
use crate::read::param::{self, Param, Rule};

/// A request's query string, every value as given: an empty one is a value, refused where text
/// is not what the parameter takes (`limit=`).
pub type Query = QueryString<HashMap<String, String>>;

/// A set of parameters in one place (the query string or the path).
pub struct Set {
    /// In groups, so that a set can take a whole list defined elsewhere (the finding filter's).
    pub groups: &'static [&'static [&'static Param]],
}

impl Set {
    pub fn params(&self) -> impl Iterator<Item = &'static Param> {
        self.groups.iter().flat_map(|g| g.iter().copied())
    }

    /// Fails on a query parameter not in the set, so that a misspelt one is not ignored.
    pub fn only(&self, q: &Query) -> Result<(), ApiError> {
        let known: Vec<&Param> = self.params().collect();
        Ok(param::only(q.keys().map(String::as_str), &known)?)
    }

    fn document(&self, at: ParameterIn) -> Vec<Parameter> {
        self.params()
            .map(|p| {
                ParameterBuilder::new()
                    .name(p.name)
                    .parameter_in(at.clone())
                    .required(if p.required || at == ParameterIn::Path {
                        Required::True
                    } else {
                        Required::False
                    })
                    .description(Some(p.description()))
                    .schema(Some(schema(p, false)))
                    .build()
            })
            .collect()
    }
}

/// A parameter's rule as an OpenAPI schema; `as_text` as in [`Rule::schema`].
pub fn schema(p: &Param, as_text: bool) -> Schema {
    to_schema(p.rule.schema(p.required, as_text))
}

/// A body's schema, written as JSON Schema around the parameters' own.
pub fn object_schema(json: serde_json::Value) -> RefOr<Schema> {
    RefOr::T(to_schema(json))
}

/// JSON Schema as utoipa holds it. Its `Schema` is untagged and would read an `anyOf` as an
/// empty object, so the kind is chosen here.
fn to_schema(json: serde_json::Value) -> Schema {
    let schema = if json.get("anyOf").is_some() {
        serde_json::from_value::<AnyOf>(json).map(Schema::AnyOf)
    } else {
        serde_json::from_value::<Object>(json).map(Schema::Object)
    };
    schema.unwrap_or_else(|e| panic!("a schema of this module: {e}"))
}

/// Declares a documented set: a unit type whose `IntoParams` the endpoint's `#[utoipa::path]`
/// names, and whose `SET` the handler reads by.
macro_rules! documented {
    ($(#[$doc:meta])* $name:ident, $at:ident, [$($group:expr),* $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            pub const SET: Set = Set { groups: &[$($group),*] };
        }

        impl utoipa::IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                $name::SET.document(ParameterIn::$at)
            }
        }
    };
}

pub const LOCAL: Param = Param::optional(
    "local",
    Rule::Flag,
    "Only this instance and the store: not the other instances of a cluster (default false)",
);
const DEPTH: Param = Param::optional(
    "depth",
    Rule::Count { min: 1, max: 2 },
    "How many calls away the graph reaches, upstream and downstream (default 1)",
);
pub const TRACE_ID: Param = Param::required("trace_id", Rule::TraceId, "The trace");
pub const NAME: Param = Param::required("name", Rule::Text, "The service");
pub const CALLER: Param = Param::required("caller", Rule::Text, "Service the calls come from");
pub const CALLEE: Param = Param::required(
    "callee",
    Rule::Text,
    "Service (or uninstrumented callee) they go to",
);

documented!(
    /// `/api/v1/findings`.
    FindingParams,
    Query,
    [
        &FindingFilter::PARAMS,
        &[&filter::SINCE, &filter::UNTIL, &filter::LIMIT, &filter::CURSOR],
    ]
);
documented!(
    /// The graph and an edge's series.
    WindowParams,
    Query,
    [&[&filter::STAGE, &filter::SINCE, &filter::UNTIL]]
);
documented!(
    /// `/api/v1/services/{name}`.
    ServiceParams,
    Query,
    [&[&filter::STAGE, &filter::SINCE, &filter::UNTIL, &DEPTH]]
);
documented!(
    /// A trace's endpoints.
    TraceParams,
    Query,
    [&[&LOCAL]]
);
documented!(
    /// Endpoints without parameters, which still refuse unknown ones.
    NoParams,
    Query,
    []
);
documented!(
    /// `/api/v1/gate`.
    GateParams,
    Query,
    [&super::gate::GateQuery::PARAMS]
);
documented!(ServicePath, Path, [&[&NAME]]);
documented!(EdgePath, Path, [&[&CALLER, &CALLEE]]);
documented!(TracePath, Path, [&[&TRACE_ID]]);

/// `depth`: 1 when absent.
pub fn depth(q: &Query) -> Result<usize, ApiError> {
    Ok(DEPTH.count(&q.0)?.map_or(1, |d| d as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::IntoParams;

    /// utoipa reads a schema back into its own types: what it cannot hold would be dropped
    /// from the document silently, and the document would promise less than is checked.
    #[test]
    fn every_parameter_schema_reaches_the_document_whole() {
        let sets = [
            FindingParams::SET,
            WindowParams::SET,
            ServiceParams::SET,
            TraceParams::SET,
            GateParams::SET,
            ServicePath::SET,
            EdgePath::SET,
            TracePath::SET,
        ];
        for set in sets {
            for p in set.params() {
                for as_text in [false, true] {
                    if as_text && matches!(p.rule, Rule::Count { min, .. } if min > 0) {
                        continue;
                    }
                    let want = p.rule.schema(p.required, as_text);
                    let got = serde_json::to_value(schema(p, as_text)).unwrap();
                    assert_eq!(got, want, "{}", p.name);
                }
            }
        }
        let path = TracePath::into_params(|| None);
        assert_eq!(path[0].name, "trace_id");
        assert!(matches!(path[0].parameter_in, ParameterIn::Path));
        assert!(matches!(path[0].required, Required::True));
    }
}
