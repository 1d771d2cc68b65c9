//! The store's string table, mirrored in memory: readers turn ids into strings and filters into
//! ids without a join, and the writer adds a string once, the first time it is stored.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;
use rusqlite::{Connection, Transaction, params};

use crate::model::Sym;

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
    fn from_i64(v: i64) -> Option<NameKind> {
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
    fn load(conn: &Connection) -> rusqlite::Result<Table> {
        let mut t = Table::default();
        let mut stmt = conn.prepare("SELECT id, kind, name FROM names")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (id, kind, name) = row?;
            let Some(kind) = NameKind::from_i64(kind) else {
                continue;
            };
            let name: Arc<str> = Arc::from(name);
            t.by_id.insert(id, (kind, name.clone()));
            t.by_name.insert((kind, name), id);
        }
        Ok(t)
    }
}

#[derive(Default)]
pub struct Names {
    table: RwLock<Table>,
}

impl Names {
    /// Reads every stored name.
    pub fn load(conn: &Connection) -> rusqlite::Result<Names> {
        Ok(Names {
            table: RwLock::new(Table::load(conn)?),
        })
    }

    /// Reads every stored name again, replacing what is mirrored: the repair for a mirror that
    /// no longer matches the database.
    pub fn reload(&self, conn: &Connection) -> rusqlite::Result<()> {
        let t = Table::load(conn)?;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = t;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: i64) -> Option<(NameKind, Arc<str>)> {
        self.read().by_id.get(&id).cloned()
    }

    pub fn name(&self, id: i64) -> Arc<str> {
        self.get(id)
            .map_or_else(|| Arc::from("(unknown)"), |(_, name)| name)
    }

    pub fn id(&self, kind: NameKind, name: &str) -> Option<i64> {
        self.read().by_name.get(&(kind, Arc::from(name))).copied()
    }

    /// Ids of a graph node name: a service, or an uninstrumented callee, or both.
    pub fn node_ids(&self, name: &str) -> Vec<i64> {
        [NameKind::Service, NameKind::Virtual]
            .into_iter()
            .filter_map(|k| self.id(k, name))
            .collect()
    }
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
    pub fn extend(&mut self, found: HashMap<(NameKind, Sym), i64, RandomState>) {
        self.0.extend(found);
    }
}

/// Assigns ids inside one write transaction; new names reach the shared table only once the
/// transaction has committed, so readers never see an id the database does not have.
pub struct NameWriter<'a> {
    names: &'a Names,
    fresh: HashMap<(NameKind, Arc<str>), i64, RandomState>,
}

impl<'a> NameWriter<'a> {
    pub fn new(names: &'a Names) -> Self {
        NameWriter {
            names,
            fresh: HashMap::default(),
        }
    }

    pub fn id(
        &mut self,
        tx: &Transaction<'_>,
        kind: NameKind,
        name: &Arc<str>,
    ) -> rusqlite::Result<i64> {
        let key = (kind, name.clone());
        if let Some(&id) = self.names.read().by_name.get(&key) {
            return Ok(id);
        }
        if let Some(&id) = self.fresh.get(&key) {
            return Ok(id);
        }
        // The database may hold the name already although the mirror does not (written by an
        // earlier run, or by another writer of a shared store): then its id is the one to use.
        let inserted = tx
            .prepare_cached(
                "INSERT INTO names (kind, name) VALUES (?1, ?2) ON CONFLICT (kind, name) DO NOTHING",
            )?
            .execute(params![kind as u8, name.as_ref()])?;
        let id = if inserted == 1 {
            tx.last_insert_rowid()
        } else {
            tx.prepare_cached("SELECT id FROM names WHERE kind = ?1 AND name = ?2")?
                .query_row(params![kind as u8, name.as_ref()], |r| r.get(0))?
        };
        self.fresh.insert(key, id);
        Ok(id)
    }

    /// Publishes the names a committed transaction added or found.
    pub fn publish(self) {
        if self.fresh.is_empty() {
            return;
        }
        let mut t = self.names.table.write().unwrap_or_else(|e| e.into_inner());
        for ((kind, name), id) in self.fresh {
            t.by_id.insert(id, (kind, name.clone()));
            t.by_name.insert((kind, name), id);
        }
    }
}
