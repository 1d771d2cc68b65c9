//! What the SQL stores share: the schema's codes, the names mirror, the write plan and the read
//! queries, written once against [`Db`]. SQLite and PostgreSQL differ in how they connect,
//! create their tables, write a plan in one transaction and enforce retention; their queries are
//! the same text (`$1`-style placeholders, integers and blobs only).

pub mod names;
pub mod plan;
pub mod read;

use crate::model::TraceId;
use crate::store::StoreError;
use crate::verify::Scope;

/// `edge_minutes.verdict` of the row counting calls; verdicts are their codes (`Verdict as i64`).
pub const CALL: i64 = 100;
/// Example trace ids kept per edge and verdict.
pub const EXAMPLES: usize = 5;

pub fn trace_key(t: TraceId) -> [u8; 16] {
    t.0.to_be_bytes()
}

pub fn scope_code(s: Scope) -> i64 {
    match s {
        Scope::CrossService => 0,
        Scope::InProcess => 1,
        Scope::Messaging => 2,
    }
}

pub fn scope_of(code: i64) -> Scope {
    match code {
        1 => Scope::InProcess,
        2 => Scope::Messaging,
        _ => Scope::CrossService,
    }
}

/// A value in or out of a query: the schema has integers, text and blobs, nothing else.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A row of a query's result.
#[derive(Clone, Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn bad(&self, i: usize, want: &str) -> StoreError {
        StoreError::Query(format!("column {i}: {:?} is not {want}", self.0.get(i)))
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            _ => Err(self.bad(i, "an integer")),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v),
            _ => Err(self.bad(i, "text")),
        }
    }

    pub fn bytes(&self, i: usize) -> Result<&[u8], StoreError> {
        match self.0.get(i) {
            Some(Value::Bytes(v)) => Ok(v),
            _ => Err(self.bad(i, "bytes")),
        }
    }
}

/// A database the shared queries run on.
#[async_trait::async_trait]
pub trait Db: Send + Sync {
    /// Runs `sql` (placeholders `$1`, `$2`, ...) with `args` and returns every row.
    async fn query(&self, sql: &str, args: Vec<Value>) -> Result<Vec<Row>, StoreError>;
}

/// A list of ids for `IN (...)`: integers only, so they go into the text as they are.
pub fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
