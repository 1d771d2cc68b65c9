//! Bounded string interning for the values that repeat across spans: service names, span names,
//! stage values, attribute keys, peer names.
//!
//! One interner per kind of string, so that a flood of junk span names cannot use up the room that
//! service names need. Each is capped: past its cap, new strings map to [`OTHER`] and are counted,
//! so memory stays bounded whatever senders do. Interned strings live as long as the process; that is
//! the price of 4-byte symbols, and the caps are what make it affordable.
//!
//! Receivers intern while decoding, on several threads at once. A [`RequestCache`] in front of the
//! shared table keeps that to one shared lookup per distinct string per request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use foldhash::fast::RandomState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::model::Sym;
use crate::telemetry::Registry;

/// What an overflowing string becomes; it is always symbol 1 of every interner.
pub const OTHER: &str = "(other)";

/// A capped, append-only, thread-safe string table.
pub struct Interner {
    table: RwLock<Table>,
    cap: usize,
    overflowed: AtomicU64,
}

#[derive(Default)]
struct Table {
    ids: HashMap<Arc<str>, Sym, RandomState>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    /// `cap` counts distinct strings, including [`OTHER`].
    pub fn new(cap: usize) -> Self {
        let me = Interner {
            table: RwLock::new(Table::default()),
            cap: cap.max(2),
            overflowed: AtomicU64::new(0),
        };
        me.intern(OTHER);
        me
    }

    pub fn other(&self) -> Sym {
        Sym(NonZeroU32::MIN)
    }

    pub fn intern(&self, s: &str) -> Sym {
        if let Some(sym) = self.get(s) {
            return sym;
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(sym) = t.ids.get(s) {
            return *sym;
        }
        if t.strings.len() >= self.cap {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return self.other();
        }
        let arc: Arc<str> = Arc::from(s);
        t.strings.push(arc.clone());
        let sym = Sym(NonZeroU32::new(t.strings.len() as u32).expect("len >= 1 after push"));
        t.ids.insert(arc, sym);
        sym
    }

    /// Looks a string up without adding it.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .get(s)
            .copied()
    }

    pub fn resolve(&self, sym: Sym) -> Arc<str> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.strings
            .get(sym.0.get() as usize - 1)
            .cloned()
            .unwrap_or_else(|| Arc::from(OTHER))
    }

    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .strings
            .len()
    }

    /// Never: [`OTHER`] is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How many strings were folded into [`OTHER`] because the table was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The interners grayscope keeps, one per kind of string.
pub struct Symbols {
    pub services: Interner,
    pub names: Interner,
    /// Stage values, attribute keys and peer names: small vocabularies.
    pub values: Interner,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols")
            .field("services", &self.services.len())
            .field("span_names", &self.names.len())
            .field("values", &self.values.len())
            .finish()
    }
}

impl Symbols {
    pub fn new(limits: &SymbolLimits) -> Self {
        Symbols {
            services: Interner::new(limits.services),
            names: Interner::new(limits.span_names),
            values: Interner::new(limits.values),
        }
    }
}

/// Caps on distinct strings, per kind.
#[derive(Clone, Debug)]
pub struct SymbolLimits {
    pub services: usize,
    pub span_names: usize,
    pub values: usize,
}

impl Default for SymbolLimits {
    fn default() -> Self {
        SymbolLimits {
            services: 10_000,
            span_names: 200_000,
            values: 10_000,
        }
    }
}

/// A per-request front for one [`Interner`]: repeated strings in a request cost one local hash
/// lookup instead of a shared lock. Strings come as the bytes they arrived in, and are checked
/// for UTF-8 and cut to length only the first time a request has them.
pub struct RequestCache<'a> {
    interner: &'a Interner,
    max_len: usize,
    seen: HashMap<&'a [u8], Sym, RandomState>,
}

impl<'a> RequestCache<'a> {
    /// Strings longer than `max_len` bytes are cut, at a character boundary.
    pub fn new(interner: &'a Interner, max_len: usize) -> Self {
        RequestCache {
            interner,
            max_len,
            seen: HashMap::default(),
        }
    }

    pub fn intern(&mut self, bytes: &'a [u8]) -> Result<Sym, std::str::Utf8Error> {
        if let Some(sym) = self.seen.get(bytes) {
            return Ok(*sym);
        }
        let sym = self
            .interner
            .intern(cut(std::str::from_utf8(bytes)?, self.max_len));
        self.seen.insert(bytes, sym);
        Ok(sym)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The interners' sizes and overflows, read at scrape time.
pub fn register_metrics(symbols: &Arc<Symbols>, r: &mut Registry) {
    r.register_collector(Box::new(InternerCollector(symbols.clone())));
}

/// Interner sizes and overflows, read at scrape time.
#[derive(Debug)]
struct InternerCollector(Arc<Symbols>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

impl Collector for InternerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tables = [
            ("services", &self.0.services),
            ("span_names", &self.0.names),
            ("values", &self.0.values),
        ];
        let g = ConstGauge::new(0i64);
        let mut m = encoder.encode_descriptor(
            "interned_strings",
            "Distinct strings interned, by table (bounded; see grayscope_interned_overflow_total)",
            None,
            g.metric_type(),
        )?;
        for (table, i) in tables {
            ConstGauge::new(i.len() as i64).encode(m.encode_family(&TableLabels { table })?)?;
        }
        let c = ConstCounter::new(0u64);
        let mut m = encoder.encode_descriptor(
            "interned_overflow",
            "Strings folded into '(other)' because their table was full",
            None,
            c.metric_type(),
        )?;
        for (table, i) in tables {
            ConstCounter::new(i.overflowed()).encode(m.encode_family(&TableLabels { table })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_resolves() {
        let i = Interner::new(10);
        let a = i.intern("orders");
        assert_eq!(i.intern("orders"), a);
        assert_ne!(i.intern("payments"), a);
        assert_eq!(&*i.resolve(a), "orders");
        assert_eq!(i.get("orders"), Some(a));
        assert_eq!(i.get("nope"), None);
    }

    #[test]
    fn folds_into_other_past_the_cap() {
        let i = Interner::new(3); // OTHER + 2
        let a = i.intern("a");
        let b = i.intern("b");
        assert_eq!(i.intern("c"), i.other());
        assert_eq!(i.intern("d"), i.other());
        assert_eq!(
            i.intern("a"),
            a,
            "known strings still resolve after the cap"
        );
        assert_eq!(&*i.resolve(b), "b");
        assert_eq!(&*i.resolve(i.other()), OTHER);
        assert_eq!(i.overflowed(), 2);
        assert_eq!(i.len(), 3);
    }

    #[test]
    fn request_cache_agrees_with_the_table() {
        let i = Interner::new(100);
        let s = String::from("canary");
        let mut c = RequestCache::new(&i, 4);
        let x = c.intern(s.as_bytes()).unwrap();
        assert_eq!(c.intern(s.as_bytes()).unwrap(), x);
        assert_eq!(i.intern("cana"), x, "cut to the cache's length");
        assert!(c.intern(b"can\xffary").is_err());
        let cut = c.intern("ggrü".as_bytes()).unwrap();
        assert_eq!(&*i.resolve(cut), "ggr", "cut at a character boundary");
    }
}
