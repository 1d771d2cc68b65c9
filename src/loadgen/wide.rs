//! A wide mesh for the dashboard at scale: hundreds of services in namespaces, layered `depth`
//! deep, with about `edges` distinct calls, a canary instance on every tenth service, and faults
//! concentrated on a few calls, as a real broken release is (one service that drops the stage
//! breaks its own calls, not random ones).
//!
//! Trace `k` crosses call `k mod edges`: from an entry service down to its caller, then on down
//! through random callees, so the templates of a run together cross every call.

use opentelemetry_proto::tonic::trace::v1::Span;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::traffic::{Expected, Fault, HttpSpan, recent_ns, rng_free_id};
use crate::model::SpanKind;

const NAMESPACES: [&str; 10] = [
    "checkout", "catalog", "identity", "payments", "shipping", "search", "ads", "media", "notify",
    "data",
];
const NOUNS: [&str; 12] = [
    "api", "auth", "cart", "pricing", "stock", "ledger", "render", "profile", "quote", "rank",
    "feed", "audit",
];

/// A trace's spans, each with the index of the instance that exports it, and the finding it
/// must produce.
pub type Traced = (Vec<(usize, Span)>, Option<(Fault, Expected)>);

pub struct WideService {
    pub name: String,
    pub namespace: &'static str,
    layer: usize,
    pub canary: bool,
}

pub struct WideMesh {
    pub services: Vec<WideService>,
    /// (caller, callee) indices into `services`.
    pub edges: Vec<(usize, usize)>,
    callees: Vec<Vec<usize>>,
    /// The first caller of each service is one layer above it, so every service has a way up.
    callers: Vec<Vec<usize>>,
    /// The calls faulty traces break (indices into `edges`).
    faulty: Vec<usize>,
}

/// The faults a wide mesh injects: the ones on a single call.
pub const WIDE_FAULTS: [Fault; 6] = [
    Fault::MissingCrossService,
    Fault::MissingInProcess,
    Fault::Changed,
    Fault::Appeared,
    Fault::KeyMismatch,
    Fault::Misrouted,
];

impl WideMesh {
    /// `services` services in `depth` layers with about `edges` calls (at least one caller for
    /// every service below the first layer); the same arguments make the same mesh.
    pub fn new(services: usize, edges: usize, depth: usize, seed: u64) -> WideMesh {
        let n = services.max(2);
        let depth = depth.clamp(2, n);
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5EED_3E5A);
        let services: Vec<WideService> = (0..n)
            .map(|i| {
                let namespace = NAMESPACES[(i / 3 + i % 2) % NAMESPACES.len()];
                WideService {
                    name: format!("{namespace}-{}-{i}", NOUNS[i % NOUNS.len()]),
                    namespace,
                    layer: i * depth / n,
                    canary: i % 10 == 3,
                }
            })
            .collect();
        let layer: Vec<Vec<usize>> = (0..depth)
            .map(|l| (0..n).filter(|&i| services[i].layer == l).collect())
            .collect();
        let mut mesh = WideMesh {
            edges: Vec::new(),
            callees: vec![Vec::new(); n],
            callers: vec![Vec::new(); n],
            faulty: Vec::new(),
            services,
        };
        for l in 1..depth {
            for (j, &b) in layer[l].iter().enumerate() {
                let above = &layer[l - 1];
                mesh.add(above[j % above.len()], b);
            }
        }
        let mut attempts = 0;
        while mesh.edges.len() < edges && attempts < edges * 20 {
            attempts += 1;
            let l = rng.random_range(0..depth - 1);
            let down = if l + 2 < depth && rng.random::<f64>() < 0.2 {
                2
            } else {
                1
            };
            let a = layer[l][rng.random_range(0..layer[l].len())];
            let b = layer[l + down][rng.random_range(0..layer[l + down].len())];
            mesh.add(a, b);
        }
        // A few calls break, one in a hundred; those into a canary service can be misrouted.
        let count = (mesh.edges.len() / 100).max(3).min(mesh.edges.len());
        let step = mesh.edges.len() / count;
        mesh.faulty = (0..count).map(|i| i * step + step / 2).collect();
        if let Some(e) = (0..mesh.edges.len()).find(|&e| mesh.services[mesh.edges[e].1].canary) {
            mesh.faulty[0] = e;
        }
        mesh
    }

    fn add(&mut self, a: usize, b: usize) {
        if !self.callees[a].contains(&b) {
            self.callees[a].push(b);
            self.callers[b].push(a);
            self.edges.push((a, b));
        }
    }

    /// The calls faulty traces break: (caller, callee).
    pub fn faulty(&self) -> impl Iterator<Item = (&str, &str)> {
        self.faulty.iter().map(|&e| {
            let (a, b) = self.edges[e];
            (&*self.services[a].name, &*self.services[b].name)
        })
    }

    /// Instance `2i` is service `i`'s stable instance, `2i + 1` its canary (which exports
    /// nothing unless the service has one).
    pub fn instances(&self) -> Vec<(String, &'static str, Option<&str>)> {
        self.services
            .iter()
            .flat_map(|s| {
                ["stable", "canary"].map(|stage| (s.name.clone(), stage, Some(s.namespace)))
            })
            .collect()
    }

    fn instance(&self, service: usize, stage: Option<&str>) -> usize {
        2 * service + usize::from(self.services[service].canary && stage == Some("canary"))
    }

    /// A trace: its spans (with the instance exporting each) and, if `fault` is given, the
    /// finding it must produce. A faulty trace breaks one of the faulty calls; a clean one
    /// crosses call number `next` and counts it.
    ///
    /// The `first` trace of a request is a clean canary one through the call that misroutes, so
    /// that its canary instance is live wherever the request lands: a misroute is only a bug
    /// when the right instance existed.
    pub fn trace(
        &self,
        (next, first): (&mut usize, bool),
        main: u128,
        stage: &str,
        fault: Option<Fault>,
        rng: &mut SmallRng,
    ) -> Traced {
        let (stage, fault) = if first {
            ("canary", None)
        } else {
            (stage, fault)
        };
        let fault = fault.map(|f| {
            if WIDE_FAULTS.contains(&f) {
                f
            } else {
                Fault::MissingCrossService
            }
        });
        let edge = match fault {
            _ if first => self.faulty[0],
            Some(Fault::Misrouted) => self.faulty[0],
            Some(_) => self.faulty[rng.random_range(0..self.faulty.len())],
            None => {
                *next += 1;
                (*next - 1) % self.edges.len()
            }
        };
        let (a, b) = self.edges[edge];
        // Misrouting needs a canary instance to miss.
        let fault = match fault {
            Some(Fault::Misrouted) if !self.services[b].canary => Some(Fault::MissingCrossService),
            f => f,
        };
        let mut chain = vec![b, a];
        while let Some(&up) = self.callers[*chain.last().expect("not empty")].first() {
            chain.push(up);
        }
        chain.reverse();
        let hop = chain.len() - 1; // the faulty call is chain[hop - 1] -> chain[hop]
        if fault != Some(Fault::KeyMismatch) {
            while let Some(next) = {
                let c = &self.callees[*chain.last().expect("not empty")];
                (!c.is_empty() && rng.random::<f64>() < 0.8)
                    .then(|| c[rng.random_range(0..c.len())])
            } {
                chain.push(next);
            }
        }
        let base = recent_ns(rng);
        let mut out = Vec::with_capacity(2 * chain.len());
        let mut n = 0u64;
        let mut parent: Option<u64> = None;
        // The next span of the trace, numbered in order: (its id, the span).
        let mut next_span = |parent: Option<u64>,
                             (name, kind, peer): (&str, SpanKind, &str),
                             stage: Option<(&str, &str)>| {
            n += 1;
            let id = rng_free_id(main, n);
            let span = HttpSpan {
                trace: main,
                id,
                parent,
                name,
                kind,
                peer,
                stage,
                start_ns: base + n * 1_000,
                duration_ns: 2_000_000u64.saturating_sub(n * 20_000),
            }
            .span();
            (id, span)
        };
        for (i, &svc) in chain.iter().enumerate() {
            // The stage the server span of chain[i] carries, and the instance that serves it.
            let (carried, served_by) = match fault {
                Some(Fault::MissingCrossService | Fault::MissingInProcess) if i >= hop => {
                    (None, None)
                }
                Some(Fault::Changed) if i >= hop => (Some("stable"), Some("stable")),
                Some(Fault::Appeared) if i < hop => (None, None),
                Some(Fault::Appeared) => (Some("stable"), Some("stable")),
                Some(Fault::Misrouted) if i == hop => (Some(stage), Some("stable")),
                _ => (Some(stage), Some(stage)),
            };
            let name = format!("GET /{}", self.services[svc].name);
            let key = if fault == Some(Fault::KeyMismatch) && i == hop {
                "x-release-stag"
            } else {
                "x-release-stage"
            };
            let (server, span) = next_span(
                parent,
                (&name, SpanKind::Server, ""),
                carried.map(|s| (key, s)),
            );
            out.push((self.instance(svc, served_by), span));
            let Some(&next) = chain.get(i + 1) else {
                break;
            };
            // The call to the next service: it carries what the service holds, except where the
            // stage is lost in process.
            let sent = match fault {
                Some(Fault::MissingInProcess) if i + 1 >= hop => None,
                Some(Fault::Appeared) if i < hop => None,
                _ => carried,
            };
            let callee = &self.services[next].name;
            let (client, span) = next_span(
                Some(server),
                (&format!("GET /{callee}"), SpanKind::Client, callee),
                sent.map(|s| ("x-release-stage", s)),
            );
            out.push((self.instance(svc, served_by), span));
            parent = Some(client);
        }
        let expected = fault.map(|f| {
            (
                f,
                (
                    f.expected().0,
                    Some(self.services[a].name.clone()),
                    self.services[b].name.clone(),
                ),
            )
        });
        (out, expected)
    }
}
