//! The request-stage x instance-stage matrix: calls by the stage the caller sent (rows) and the
//! stage of the instance that served them (columns). Off the diagonal is a request served by an
//! instance of another stage.

use std::collections::{BTreeSet, HashMap};

use crate::view::RoutingView;

pub struct Matrix {
    pub columns: Vec<String>,
    pub rows: Vec<MatrixRow>,
}

pub struct MatrixRow {
    pub stage: String,
    /// (calls, instance stage, class: `bad` off the diagonal)
    pub cells: Vec<(u64, String, &'static str)>,
}

fn name(s: Option<&str>) -> String {
    s.unwrap_or("none").to_string()
}

impl Matrix {
    /// The matrix of `routing`, with at least the `columns` given (a service's instance stages,
    /// served or not).
    pub fn of<'a>(
        routing: impl IntoIterator<Item = &'a RoutingView>,
        columns: impl IntoIterator<Item = String>,
    ) -> Matrix {
        let mut rows: BTreeSet<String> = BTreeSet::new();
        let mut cols: BTreeSet<String> = columns.into_iter().collect();
        let mut calls: HashMap<(String, String), u64> = HashMap::new();
        for r in routing {
            let (s, i) = (name(r.stage.as_deref()), name(r.instance_stage.as_deref()));
            rows.insert(s.clone());
            cols.insert(i.clone());
            *calls.entry((s, i)).or_default() += r.calls;
        }
        let columns: Vec<String> = cols.into_iter().collect();
        let rows = rows
            .into_iter()
            .map(|s| MatrixRow {
                cells: columns
                    .iter()
                    .map(|c| {
                        let n = calls.get(&(s.clone(), c.clone())).copied().unwrap_or(0);
                        let off = n > 0 && *c != s && s != "none" && c != "none";
                        (n, c.clone(), if off { "bad" } else { "" })
                    })
                    .collect(),
                stage: s,
            })
            .collect();
        Matrix { columns, rows }
    }
}
