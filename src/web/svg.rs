//! The service graph as SVG, drawn on the server: one edge per caller -> callee, coloured by its
//! share of first-break findings (and labelled, so colour is never the only signal), as wide as
//! its traffic; uninstrumented callees dashed. Every name is escaped: they come from spans.

use std::fmt::Write;

use super::esc;
use super::layout::{NODE_H, layout};
use crate::view::{EdgeView, GraphView};

/// How an edge (or node) is doing, by its share of first-break findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Some findings, under 5 % of calls.
    Warn,
    Bad,
}

impl Health {
    pub fn class(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warn => "warn",
            Health::Bad => "bad",
        }
    }
}

/// (health, label) of an edge: `ok`, or the share broken and the most frequent kind.
pub fn edge_health(e: &EdgeView) -> (Health, String) {
    let breaks: u64 = e.totals.first_breaks.values().sum();
    if breaks == 0 {
        return (Health::Ok, "ok".into());
    }
    let share = if e.totals.calls > 0 {
        breaks as f64 / e.totals.calls as f64
    } else {
        1.0
    };
    let top = e
        .totals
        .first_breaks
        .iter()
        .max_by_key(|(_, n)| **n)
        .map_or("", |(k, _)| *k);
    let health = if share < 0.05 {
        Health::Warn
    } else {
        Health::Bad
    };
    (health, format!("{:.1}% {top}", (share * 100.0).min(100.0)))
}

fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The graph's SVG; edge links keep `query` (the page's stage and window).
pub fn graph(g: &GraphView, query: &str) -> String {
    let names: Vec<&str> = g.nodes.iter().map(|n| &*n.name).collect();
    let index = |name: &str| names.iter().position(|n| *n == name);
    let pairs: Vec<(usize, usize)> = g
        .edges
        .iter()
        .filter_map(|e| Some((index(&e.caller)?, index(&e.callee)?)))
        .collect();
    let l = layout(&names, &pairs);
    let max_calls = g
        .edges
        .iter()
        .map(|e| e.totals.calls)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="service graph">"#,
        w = l.width,
        h = l.height
    );
    s.push_str("<defs>");
    for class in ["ok", "warn", "bad"] {
        let _ = write!(
            s,
            r#"<marker id="arrow-{class}" class="arrow {class}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="11" markerHeight="11" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>"#
        );
    }
    s.push_str("</defs>");
    for e in &g.edges {
        let (Some(a), Some(b)) = (index(&e.caller), index(&e.callee)) else {
            continue;
        };
        let (pa, pb) = (l.nodes[a], l.nodes[b]);
        let (health, label) = edge_health(e);
        let width = 1.5 + 5.0 * (1.0 + e.totals.calls as f64).ln() / (1.0 + max_calls).ln();
        let (x1, y1) = (pa.x + pa.w, pa.y + NODE_H / 2.0);
        let (x2, y2) = (pb.x, pb.y + NODE_H / 2.0);
        let (d, lx, ly) = if a == b {
            // A call to nobody that exports spans (or to itself): a loop above the node.
            let (cx, top) = (pa.x + pa.w * 0.5, pa.y);
            (
                format!(
                    "M{:.1},{top:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{top:.1}",
                    cx - 18.0,
                    cx - 30.0,
                    top - 34.0,
                    cx + 30.0,
                    top - 34.0,
                    cx + 18.0
                ),
                cx,
                top - 30.0,
            )
        } else if x2 > x1 && pb.column > pa.column + 1 {
            // Across columns in between: arc above them, clear of the nodes there.
            let top = pa.y.min(pb.y) - 26.0 - 10.0 * (pb.column - pa.column) as f64;
            (
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{top:.1} {:.1},{top:.1} {x2:.1},{y2:.1}",
                    x1 + 40.0,
                    x2 - 40.0
                ),
                (x1 + x2) / 2.0,
                top + 0.75 * (y1.min(y2) - top) - 4.0,
            )
        } else if x2 > x1 {
            let dx = ((x2 - x1) / 2.0).max(30.0);
            // The label sits towards the callee, on the outer side of the bend, so that calls
            // fanning out of one service do not stack their labels at the fork.
            let ly = if y2 > y1 + 1.0 {
                y1 + 0.75 * (y2 - y1) + 16.0
            } else if y2 < y1 - 1.0 {
                y1 + 0.75 * (y2 - y1) - 8.0
            } else {
                y1 - 6.0
            };
            (
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                    x1 + dx,
                    x2 - dx
                ),
                x1 + 0.6 * (x2 - x1),
                ly,
            )
        } else {
            // A call back to the left: around, below both nodes.
            let low = pa.y.max(pb.y) + NODE_H + 40.0;
            (
                format!(
                    "M{x1:.1},{y1:.1} C{:.1},{low:.1} {:.1},{low:.1} {x2:.1},{y2:.1}",
                    x1 + 60.0,
                    x2 - 60.0
                ),
                (x1 + x2) / 2.0,
                low - 8.0,
            )
        };
        let class = health.class();
        // A messaging hop (through a broker) is drawn dashed, and its title names the destination.
        let (kind, via) = match e.destinations.first() {
            Some(d) => (
                " messaging",
                format!(" via {}", d.destination.as_deref().unwrap_or_default()),
            ),
            None => ("", String::new()),
        };
        let _ = write!(
            s,
            r#"<a class="edge-link" href="/edges/{}/{}?{}" data-caller="{}" data-callee="{}" data-health="{class}"><g class="edge {class}{kind}"><title>{} -> {}{}: {} calls, {}</title><path d="{d}" stroke-width="{width:.1}" marker-end="url(#arrow-{class})"/><text x="{lx:.1}" y="{ly:.1}" text-anchor="middle">{}</text></g></a>"#,
            url_part(&e.caller),
            url_part(&e.callee),
            esc(query),
            esc(&e.caller),
            esc(&e.callee),
            esc(&e.caller),
            esc(&e.callee),
            esc(&via),
            e.totals.calls,
            esc(&label),
            esc(&label),
        );
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let p = l.nodes[i];
        let own: u64 = n.own.first_breaks.values().sum();
        let class = match (n.is_virtual, own > 0) {
            (true, _) => "node virtual",
            (false, true) => "node broken",
            (false, false) => "node",
        };
        // A trace starter (a browser, an app, a job): an entry point, with its traces per stage.
        let (starter, started) = if n.starts.is_empty() {
            ("", String::new())
        } else {
            let per_stage: Vec<String> = n.starts.iter().map(|(s, k)| format!("{s} {k}")).collect();
            (
                " starter",
                format!(" (starts traces: {})", per_stage.join(", ")),
            )
        };
        let _ = write!(
            s,
            r#"<g class="{class}{starter}" data-node="{}"><title>{}{}{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{NODE_H}" rx="6"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"#,
            esc(&n.name),
            esc(&n.name),
            if n.is_virtual {
                " (uninstrumented: known from peer.service / server.address)"
            } else {
                ""
            },
            esc(&started),
            p.x,
            p.y,
            p.w,
            p.x + p.w / 2.0,
            p.y + NODE_H / 2.0 + 4.5,
            esc(&n.name),
        );
    }
    s.push_str("</svg>");
    s
}
