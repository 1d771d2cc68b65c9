//! A layered left-to-right layout of the service graph: entry services on the left, each service
//! one column right of its furthest caller, the order within a column chosen to keep calls short.
//!
//! Small and deterministic (the same graph always draws the same), which matters more here than
//! generality: service graphs are shallow (a handful of columns) and mostly acyclic.

use std::collections::VecDeque;

pub const NODE_H: f64 = 34.0;
const COL_GAP: f64 = 120.0;
const ROW_GAP: f64 = 26.0;
const MARGIN: f64 = 24.0;
/// Room above the nodes for calls that arc over a column, and for self calls.
pub const TOP: f64 = 72.0;
/// Width of one character of the node font, for sizing boxes to their names.
const CHAR_W: f64 = 7.4;
const SWEEPS: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placed {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub column: usize,
}

#[derive(Debug)]
pub struct Layout {
    pub nodes: Vec<Placed>,
    pub width: f64,
    pub height: f64,
    /// The centre of a [`ring`] layout, which calls bend towards.
    pub centre: Option<(f64, f64)>,
}

/// Nodes on a circle, in the order given: for graphs whose calls go every way (groups of
/// services call each other in both directions), where columns would string them on one line.
pub fn ring(names: &[&str]) -> Layout {
    let n = names.len();
    let width_of = |v: usize| (names[v].chars().count() as f64 * CHAR_W + 28.0).max(80.0);
    let widest = (0..n).map(width_of).fold(80.0, f64::max);
    // Room for every box around the circle, and never so small that opposite boxes touch.
    let around: f64 = (0..n).map(|v| width_of(v).max(NODE_H * 3.0) + 24.0).sum();
    let r = (around / std::f64::consts::TAU).max(widest).max(120.0);
    let (cx, cy) = (MARGIN + widest / 2.0 + r, TOP + NODE_H / 2.0 + r);
    let nodes = (0..n)
        .map(|v| {
            let a = -std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * v as f64 / n as f64;
            let w = width_of(v);
            Placed {
                x: cx + r * a.cos() - w / 2.0,
                y: cy + r * a.sin() - NODE_H / 2.0,
                w,
                column: v,
            }
        })
        .collect();
    Layout {
        nodes,
        width: 2.0 * (cx),
        height: cy + r + NODE_H / 2.0 + MARGIN + 40.0,
        centre: Some((cx, cy)),
    }
}

/// Places `names.len()` nodes joined by `edges` (index pairs, caller first).
pub fn layout(names: &[&str], edges: &[(usize, usize)]) -> Layout {
    let n = names.len();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut inc: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a != b && a < n && b < n && !out[a].contains(&b) {
            out[a].push(b);
            inc[b].push(a);
        }
    }
    let forward = acyclic(n, &out, names);
    let column = columns(n, &forward);
    let columns_n = column.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_col: Vec<Vec<usize>> = vec![Vec::new(); columns_n];
    let mut ids: Vec<usize> = (0..n).collect();
    ids.sort_by(|a, b| names[*a].cmp(names[*b]));
    for v in ids {
        by_col[column[v]].push(v);
    }
    order(&mut by_col, &out, &inc);

    let width_of = |v: usize| (names[v].chars().count() as f64 * CHAR_W + 28.0).max(80.0);
    let col_w: Vec<f64> = by_col
        .iter()
        .map(|c| c.iter().map(|&v| width_of(v)).fold(0.0, f64::max))
        .collect();
    let tallest = by_col.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let height = tallest * (NODE_H + ROW_GAP) - ROW_GAP + MARGIN + TOP;
    let mut nodes = vec![
        Placed {
            x: 0.0,
            y: 0.0,
            w: 0.0,
            column: 0
        };
        n
    ];
    let mut x = MARGIN;
    for (c, col) in by_col.iter().enumerate() {
        let used = col.len() as f64 * (NODE_H + ROW_GAP) - ROW_GAP;
        let top = TOP + ((height - MARGIN - TOP) - used) / 2.0;
        for (i, &v) in col.iter().enumerate() {
            nodes[v] = Placed {
                x: x + (col_w[c] - width_of(v)) / 2.0,
                y: top + i as f64 * (NODE_H + ROW_GAP),
                w: width_of(v),
                column: c,
            };
        }
        x += col_w[c] + COL_GAP;
    }
    Layout {
        nodes,
        width: (x - COL_GAP + MARGIN).max(2.0 * MARGIN),
        height: height.max(MARGIN + TOP + NODE_H),
        centre: None,
    }
}

/// The edges that point forward: a depth-first search from the nodes without callers (by name,
/// for determinism) drops the edges that close a cycle.
fn acyclic(n: usize, out: &[Vec<usize>], names: &[&str]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    let mut forward: Vec<Vec<usize>> = vec![Vec::new(); n];
    let has_caller: Vec<bool> = {
        let mut h = vec![false; n];
        for targets in out {
            for &b in targets {
                h[b] = true;
            }
        }
        h
    };
    let mut starts: Vec<usize> = (0..n).collect();
    starts.sort_by_key(|&v| (has_caller[v], names[v]));
    for s in starts {
        if mark[s] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next child index).
        let mut stack = vec![(s, 0usize)];
        mark[s] = Mark::Open;
        while let Some((v, i)) = stack.pop() {
            if i < out[v].len() {
                stack.push((v, i + 1));
                let w = out[v][i];
                match mark[w] {
                    Mark::New => {
                        forward[v].push(w);
                        mark[w] = Mark::Open;
                        stack.push((w, 0));
                    }
                    Mark::Done => forward[v].push(w),
                    Mark::Open => {} // a back edge: drawn, but not used for columns
                }
            } else {
                mark[v] = Mark::Done;
            }
        }
    }
    forward
}

/// Longest-path columns over the forward edges.
fn columns(n: usize, forward: &[Vec<usize>]) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    for targets in forward {
        for &b in targets {
            indeg[b] += 1;
        }
    }
    let mut col = vec![0usize; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    while let Some(v) = queue.pop_front() {
        for &w in &forward[v] {
            col[w] = col[w].max(col[v] + 1);
            indeg[w] -= 1;
            if indeg[w] == 0 {
                queue.push_back(w);
            }
        }
    }
    col
}

/// Barycentre ordering: alternately sorts each column by the mean position of its callers, then of
/// its callees, which untangles most crossings in a few sweeps.
fn order(cols: &mut [Vec<usize>], out: &[Vec<usize>], inc: &[Vec<usize>]) {
    let n = out.len();
    let mut pos = vec![0.0f64; n];
    let reindex = |cols: &[Vec<usize>], pos: &mut [f64]| {
        for c in cols {
            for (i, &v) in c.iter().enumerate() {
                pos[v] = i as f64;
            }
        }
    };
    reindex(cols, &mut pos);
    for sweep in 0..SWEEPS {
        let neighbours = if sweep % 2 == 0 { inc } else { out };
        for c in cols.iter_mut() {
            let key = |v: usize| -> f64 {
                let ns = &neighbours[v];
                if ns.is_empty() {
                    pos[v]
                } else {
                    ns.iter().map(|&u| pos[u]).sum::<f64>() / ns.len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = c.iter().map(|&v| (key(v), v)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *c = keyed.into_iter().map(|(_, v)| v).collect();
        }
        reindex(cols, &mut pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_services_are_left_and_callees_right_of_their_callers() {
        let names = ["orders", "gateway", "users", "payments", "inventory"];
        // gateway -> users -> orders -> {payments, inventory}; gateway -> orders
        let edges = [(1, 2), (2, 0), (0, 3), (0, 4), (1, 0)];
        let l = layout(&names, &edges);
        let col = |i: usize| l.nodes[i].column;
        assert_eq!((col(1), col(2), col(0), col(3), col(4)), (0, 1, 2, 3, 3));
        for &(a, b) in &edges {
            assert!(l.nodes[a].x + l.nodes[a].w < l.nodes[b].x);
        }
        // Nothing overlaps within a column.
        assert!((l.nodes[3].y - l.nodes[4].y).abs() >= NODE_H);
    }

    #[test]
    fn cycles_and_self_calls_still_lay_out() {
        let names = ["a", "b", "c"];
        let l = layout(&names, &[(0, 1), (1, 2), (2, 0), (1, 1)]);
        assert_eq!(l.nodes[0].column, 0);
        assert_eq!(l.nodes[2].column, 2);
        let empty = layout(&[], &[]);
        assert!(empty.width > 0.0 && empty.height > 0.0);
    }

    #[test]
    fn a_ring_keeps_its_boxes_apart() {
        let names = [
            "checkout (26)",
            "catalog (14)",
            "identity (28)",
            "a",
            "b",
            "c",
            "d",
        ];
        let l = ring(&names);
        for (i, a) in l.nodes.iter().enumerate() {
            assert!(a.x >= 0.0 && a.y >= 0.0 && a.x + a.w <= l.width && a.y + NODE_H <= l.height);
            for b in &l.nodes[i + 1..] {
                let apart = a.x + a.w <= b.x
                    || b.x + b.w <= a.x
                    || a.y + NODE_H <= b.y
                    || b.y + NODE_H <= a.y;
                assert!(apart, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_same_graph_draws_the_same() {
        let names = ["x", "y", "z", "w"];
        let edges = [(0, 1), (0, 2), (2, 3), (1, 3)];
        assert_eq!(layout(&names, &edges).nodes, layout(&names, &edges).nodes);
    }
}
