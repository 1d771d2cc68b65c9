//! Parts of a service graph small enough to read: the broken edges and what surrounds them, or one
//! service's callers and callees. A mesh of hundreds of services drawn whole is a block of lines
//! that says nothing; these say what to look at, and how much they left out.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::view::{EdgeView, GraphView};

/// A part of a graph, and how many of the edges it was chosen from it left out.
pub struct Part {
    pub graph: GraphView,
    pub left_out: usize,
}

/// Whether calls on `e` had first-break findings: the hop where a release broke.
pub fn is_broken(e: &EdgeView) -> bool {
    e.totals.first_breaks.values().any(|&n| n > 0)
}

fn breaks(e: &EdgeView) -> u64 {
    e.totals.first_breaks.values().sum()
}

/// `g`'s nodes that `edges` touch, plus `extra` ones, and those edges.
fn part(g: &GraphView, edges: Vec<EdgeView>, extra: &BTreeSet<&str>, from: usize) -> Part {
    let names: HashSet<&str> = edges
        .iter()
        .flat_map(|e| [&*e.caller, &*e.callee])
        .chain(extra.iter().copied())
        .collect();
    let left_out = from.saturating_sub(edges.len());
    Part {
        graph: GraphView {
            stage: g.stage.clone(),
            nodes: g
                .nodes
                .iter()
                .filter(|n| names.contains(&*n.name))
                .cloned()
                .collect(),
            edges,
        },
        left_out,
    }
}

/// Calls kept around each broken edge: into its caller (how traffic reaches the break), and out
/// of its callee (where the broken stage goes on to).
const LEADING: usize = 3;
const FOLLOWING: usize = 2;

/// Every broken edge (most breaks first), then around each the busiest calls into its caller and
/// out of its callee, at most `cap` edges in all. Services with findings of their own (orphans)
/// are kept too.
pub fn broken_part(g: &GraphView, cap: usize) -> Part {
    let mut broken: Vec<usize> = (0..g.edges.len())
        .filter(|&i| is_broken(&g.edges[i]))
        .collect();
    broken.sort_by_key(|&i| std::cmp::Reverse(breaks(&g.edges[i])));
    let mut into: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut out_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in g.edges.iter().enumerate() {
        if !is_broken(e) {
            into.entry(&e.callee).or_default().push(i);
            out_of.entry(&e.caller).or_default().push(i);
        }
    }
    for list in into.values_mut().chain(out_of.values_mut()) {
        list.sort_by_key(|&i| (std::cmp::Reverse(g.edges[i].totals.calls), i));
    }
    let mut chosen: Vec<usize> = broken.clone();
    let mut taken: HashSet<usize> = broken.iter().copied().collect();
    for &b in &broken {
        let e = &g.edges[b];
        let near = [
            (into.get(&*e.caller), LEADING),
            (out_of.get(&*e.callee), FOLLOWING),
        ];
        for (list, n) in near {
            for &i in list.map(Vec::as_slice).unwrap_or_default().iter().take(n) {
                if taken.insert(i) {
                    chosen.push(i);
                }
            }
        }
    }
    chosen.truncate(cap);
    let edges: Vec<EdgeView> = chosen.into_iter().map(|i| g.edges[i].clone()).collect();
    let orphans: BTreeSet<&str> = g
        .nodes
        .iter()
        .filter(|n| n.own.first_breaks.values().any(|&c| c > 0))
        .map(|n| &*n.name)
        .collect();
    part(g, edges, &orphans, g.edges.len())
}

/// `centre`'s callers up to `depth` calls upstream and its callees up to `depth` downstream, with
/// the calls on those paths: nearest first, then busiest, at most `cap` edges. `None` when `g`
/// has no such service.
pub fn around(g: &GraphView, centre: &str, depth: usize, cap: usize) -> Option<Part> {
    g.nodes.iter().find(|n| &*n.name == centre)?;
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut inc: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in g.edges.iter().enumerate() {
        out.entry(&e.caller).or_default().push(i);
        inc.entry(&e.callee).or_default().push(i);
    }
    // (distance, edge) of every edge on a path of at most `depth` calls, both ways.
    let mut found: HashMap<usize, usize> = HashMap::new();
    for (adjacent, downstream) in [(&out, true), (&inc, false)] {
        let mut seen: HashSet<&str> = HashSet::from([centre]);
        let mut queue = VecDeque::from([(centre, 0usize)]);
        while let Some((name, d)) = queue.pop_front() {
            if d == depth {
                continue;
            }
            for &i in adjacent.get(name).map(Vec::as_slice).unwrap_or_default() {
                found.entry(i).or_insert(d);
                let e = &g.edges[i];
                let next = if downstream { &*e.callee } else { &*e.caller };
                if seen.insert(next) {
                    queue.push_back((next, d + 1));
                }
            }
        }
    }
    let mut chosen: Vec<(usize, usize)> = found.into_iter().map(|(i, d)| (d, i)).collect();
    let from = chosen.len();
    chosen.sort_by_key(|&(d, i)| (d, std::cmp::Reverse(g.edges[i].totals.calls), i));
    chosen.truncate(cap);
    chosen.sort_by_key(|&(_, i)| i);
    let edges = chosen
        .into_iter()
        .map(|(_, i)| g.edges[i].clone())
        .collect();
    Some(part(g, edges, &BTreeSet::from([centre]), from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{NodeView, StatsView};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn stats(calls: u64, broken: u64) -> StatsView {
        StatsView {
            calls,
            verdicts: BTreeMap::new(),
            first_breaks: if broken > 0 {
                BTreeMap::from([("missing", broken)])
            } else {
                BTreeMap::new()
            },
            consistency: None,
        }
    }

    fn graph(edges: &[(&str, &str, u64, u64)]) -> GraphView {
        let names: BTreeSet<&str> = edges.iter().flat_map(|e| [e.0, e.1]).collect();
        GraphView {
            stage: None,
            nodes: names
                .into_iter()
                .map(|n| NodeView {
                    name: Arc::from(n),
                    is_virtual: false,
                    own: stats(0, 0),
                    starts: BTreeMap::new(),
                    group: None,
                })
                .collect(),
            edges: edges
                .iter()
                .map(|&(a, b, calls, broken)| EdgeView {
                    caller: Arc::from(a),
                    callee: Arc::from(b),
                    totals: stats(calls, broken),
                    stages: BTreeMap::new(),
                    routing: Vec::new(),
                    examples: BTreeMap::new(),
                    last_seen: String::new(),
                    destinations: Vec::new(),
                })
                .collect(),
        }
    }

    fn pairs(p: &Part) -> Vec<(String, String)> {
        p.graph
            .edges
            .iter()
            .map(|e| (e.caller.to_string(), e.callee.to_string()))
            .collect()
    }

    #[test]
    fn the_broken_part_keeps_every_break_then_what_leads_to_it() {
        let g = graph(&[
            ("gw", "a", 100, 0),
            ("gw", "x", 500, 0),
            ("a", "b", 100, 5),
            ("b", "c", 90, 0),
            ("b", "d", 80, 0),
            ("b", "e", 70, 0),
            ("x", "y", 400, 0),
            ("y", "z", 400, 2),
        ]);
        let p = broken_part(&g, 5);
        assert_eq!(
            pairs(&p),
            [("a", "b"), ("y", "z"), ("gw", "a"), ("b", "c"), ("b", "d")]
                .map(|(a, b)| (a.into(), b.into())),
            "the breaks, then around the worst: the busiest calls on each side"
        );
        assert_eq!(p.left_out, 3);
        assert!(p.graph.nodes.iter().all(|n| n.name.as_ref() != "e"));
        let all = broken_part(&g, 50);
        assert_eq!(
            all.graph.edges.len(),
            6,
            "not b -> e (the third call out of b) nor gw -> x (two calls from a break)"
        );
        // A cap below the number of breaks still keeps the worst ones.
        assert_eq!(pairs(&broken_part(&g, 1)), [("a".into(), "b".into())]);
    }

    #[test]
    fn around_a_service_goes_up_and_down_as_deep_as_asked() {
        let g = graph(&[
            ("gw", "a", 100, 0),
            ("a", "b", 100, 0),
            ("b", "c", 90, 0),
            ("c", "d", 90, 0),
            ("x", "c", 10, 0),
        ]);
        let one = around(&g, "b", 1, 50).unwrap();
        assert_eq!(
            pairs(&one),
            [("a", "b"), ("b", "c")].map(|(a, b)| (a.into(), b.into()))
        );
        let two = around(&g, "b", 2, 50).unwrap();
        assert_eq!(two.graph.edges.len(), 4, "{:?}", pairs(&two));
        assert!(
            !pairs(&two).contains(&("x".into(), "c".into())),
            "a caller of a callee is not on a path through b"
        );
        let capped = around(&g, "b", 2, 2).unwrap();
        assert_eq!(pairs(&capped), pairs(&one), "nearest first");
        assert_eq!(capped.left_out, 2);
        assert!(around(&g, "nobody", 1, 50).is_none());
    }
}
