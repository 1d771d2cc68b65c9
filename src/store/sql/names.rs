//! The store's string table, mirrored in memory: readers turn ids into strings and filters into
//! ids without a join, and the writer adds a string once, the first time it is stored.
//!
//! With several writers on one database (PostgreSQL), names appear that this process did not add;
//! readers fetch the ids they meet and do not know ([`Names::ensure`], [`Names::find`]), and the
//! writer takes the id the database already has for a name instead of adding it again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;

use super::{Db, Value, id_list};
use crate::model::Sym;
use crate::store::StoreError;

/// What a name is; part of its identity (a service and a stage may share a spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NameKind {
    Service = 0,
    /// An uninstrumented callee, known by `peer.service` / `server.address`.
    Virtual = 1,
    Stage = 2,
    Span = 3,
}

impl NameKind {
    pub fn from_i64(v: i64) -> Option<NameKind> {
        Some(match v {
            0 => NameKind::Service,
            1 => NameKind::Virtual,
            2 => NameKind::Stage,
            3 => NameKind::Span,
            _ => return None,
        })
    }
}

#[derive(Default)]
struct Table {
    by_id: HashMap<i64, (NameKind, Arc<str>), RandomState>,
    by_name: HashMap<(NameKind, Arc<str>), i64, RandomState>,
}

impl Table {
    fn insert(&mut self, id: i64, kind: NameKind, name: Arc<str>) {
        self.by_id.insert(id, (kind, name.clone()));
        self.by_name.insert((kind, name), id);
    }
}

#[derive(Default)]
pub struct Names {
    table: RwLock<Table>,
}

impl Names {
    /// A mirror of these (id, kind, name) rows.
    pub fn of(rows: impl IntoIterator<Item = (i64, i64, String)>) -> Names {
        let names = Names::default();
        names.replace(rows);
        names
    }

    /// Every stored name, read through `db`.
    pub async fn load(db: &dyn Db) -> Result<Names, StoreError> {
        let rows = db
            .query("SELECT id, kind, name FROM names", Vec::new())
            .await?;
        Ok(Names::of(rows_of(&rows)?))
    }

    /// Replaces what is mirrored with these rows: the repair for a mirror that no longer matches
    /// the database.
    pub fn replace(&self, rows: impl IntoIterator<Item = (i64, i64, String)>) {
        let mut t = Table::default();
        for (id, kind, name) in rows {
            if let Some(kind) = NameKind::from_i64(kind) {
                t.insert(id, kind, Arc::from(name));
            }
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds names a committed transaction added or found.
    pub fn publish(&self, fresh: impl IntoIterator<Item = ((NameKind, Arc<str>), i64)>) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        for ((kind, name), id) in fresh {
            t.insert(id, kind, name);
        }
    }

    pub fn get(&self, id: i64) -> Option<(NameKind, Arc<str>)> {
        self.read().by_id.get(&id).cloned()
    }

    pub fn name(&self, id: i64) -> Arc<str> {
        self.get(id)
            .map_or_else(|| Arc::from("(unknown)"), |(_, name)| name)
    }

    /// The id of a name, if this mirror has it.
    pub fn id(&self, kind: NameKind, name: &str) -> Option<i64> {
        self.read().by_name.get(&(kind, Arc::from(name))).copied()
    }

    /// Fetches the names of `ids` this mirror does not have yet.
    pub async fn ensure(
        &self,
        db: &dyn Db,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<(), StoreError> {
        let missing: Vec<i64> = {
            let t = self.read();
            let mut m: Vec<i64> = ids
                .into_iter()
                .filter(|id| *id > 0 && !t.by_id.contains_key(id))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let rows = db
            .query(
                &format!(
                    "SELECT id, kind, name FROM names WHERE id IN ({})",
                    id_list(&missing)
                ),
                Vec::new(),
            )
            .await?;
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        for (id, kind, name) in rows_of(&rows)? {
            if let Some(kind) = NameKind::from_i64(kind) {
                t.insert(id, kind, Arc::from(name));
            }
        }
        Ok(())
    }

    /// The id of a name, from the mirror or else the database.
    pub async fn find(
        &self,
        db: &dyn Db,
        kind: NameKind,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.id(kind, name) {
            return Ok(Some(id));
        }
        let rows = db
            .query(
                "SELECT id FROM names WHERE kind = $1 AND name = $2",
                vec![Value::Int(kind as i64), Value::Text(name.to_string())],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let id = row.int(0)?;
        self.publish([((kind, Arc::from(name)), id)]);
        Ok(Some(id))
    }

    /// Ids of a graph node name: a service, or an uninstrumented callee, or both.
    pub async fn node_ids(&self, db: &dyn Db, name: &str) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::new();
        for kind in [NameKind::Service, NameKind::Virtual] {
            if let Some(id) = self.find(db, kind, name).await? {
                out.push(id);
            }
        }
        Ok(out)
    }
}

fn rows_of(rows: &[super::Row]) -> Result<Vec<(i64, i64, String)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.int(0)?, r.int(1)?, r.text(2)?.to_string())))
        .collect()
}

/// Store ids of interned symbols, kept by the writer across writes. A symbol's string never
/// changes and names are never deleted, so each symbol is resolved and its string hashed once per
/// process instead of once per stored edge and span (that lookup was the writer's largest cost).
#[derive(Default)]
pub struct SymIds(HashMap<(NameKind, Sym), i64, RandomState>);

impl SymIds {
    pub fn get(&self, kind: NameKind, sym: Sym) -> Option<i64> {
        self.0.get(&(kind, sym)).copied()
    }

    /// Adds the ids a committed transaction assigned or found.
    pub fn extend(&mut self, found: impl IntoIterator<Item = ((NameKind, Sym), i64)>) {
        self.0.extend(found);
    }
}
