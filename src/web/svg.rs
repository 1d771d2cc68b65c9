//! Service graphs as SVG, drawn on the server: one edge per caller -> callee, coloured by its
//! share of first-break findings, as wide as the log of its traffic; uninstrumented callees
//! dashed. Only edges with findings are labelled (the label says the share and the kind, so that
//! colour is never the only signal), and a label goes where it covers no node and no other label,
//! or is left out and counted. Every name is escaped: they come from spans.

use std::fmt::Write;

use super::layout::{NODE_H, Placed, layout, ring};
use super::{esc, url_part};
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
    health(e.totals.calls, &e.totals.first_breaks)
}

/// (health, label) of calls with these first breaks by kind.
pub fn health<'a>(
    calls: u64,
    first_breaks: impl IntoIterator<Item = (&'a &'static str, &'a u64)>,
) -> (Health, String) {
    let mut breaks = 0;
    let mut top: (&str, u64) = ("", 0);
    for (k, &n) in first_breaks {
        breaks += n;
        if n > top.1 {
            top = (k, n);
        }
    }
    if breaks == 0 {
        return (Health::Ok, "ok".into());
    }
    let share = if calls > 0 {
        breaks as f64 / calls as f64
    } else {
        1.0
    };
    let health = if share < 0.05 {
        Health::Warn
    } else {
        Health::Bad
    };
    (
        health,
        format!("{:.1}% {}", (share * 100.0).min(100.0), top.0),
    )
}

/// A graph ready to draw: what each box and line says and where it links.
#[derive(Default)]
pub struct Drawing {
    pub nodes: Vec<DrawNode>,
    pub edges: Vec<DrawEdge>,
    /// Nodes on a circle rather than in columns: for graphs whose calls go every way.
    pub ring: bool,
}

pub struct DrawNode {
    /// `data-node`: the service (or group) name.
    pub key: String,
    pub label: String,
    pub title: String,
    /// Extra classes: `broken`, `virtual`, `starter`, `group`, `centre`.
    pub classes: String,
    pub href: Option<String>,
}

pub struct DrawEdge {
    pub from: usize,
    pub to: usize,
    pub caller: String,
    pub callee: String,
    pub calls: u64,
    pub health: Health,
    /// Drawn only when the edge has findings.
    pub label: String,
    pub title: String,
    pub href: String,
    /// A messaging hop (through a broker): dashed.
    pub messaging: bool,
}

impl Drawing {
    /// Every node and edge of `g`; nodes link to their service's page, edges to theirs, both
    /// keeping `query` (the page's stage and window).
    pub fn of_graph(g: &GraphView, query: &str, centre: Option<&str>) -> Drawing {
        let names: std::collections::HashMap<&str, usize> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&*n.name, i))
            .collect();
        let nodes = g
            .nodes
            .iter()
            .map(|n| {
                let own: u64 = n.own.first_breaks.values().sum();
                let mut classes = String::new();
                if n.is_virtual {
                    classes.push_str(" virtual");
                } else if own > 0 {
                    classes.push_str(" broken");
                }
                if !n.starts.is_empty() {
                    classes.push_str(" starter");
                }
                if centre == Some(&*n.name) {
                    classes.push_str(" centre");
                }
                let mut title = n.name.to_string();
                if let Some(g) = &n.group {
                    let _ = write!(title, " [{g}]");
                }
                if n.is_virtual {
                    title.push_str(" (uninstrumented: known from peer.service / server.address)");
                }
                if !n.starts.is_empty() {
                    let per_stage: Vec<String> =
                        n.starts.iter().map(|(s, k)| format!("{s} {k}")).collect();
                    let _ = write!(title, " (starts traces: {})", per_stage.join(", "));
                }
                if own > 0 {
                    let _ = write!(title, " ({own} findings without a caller)");
                }
                DrawNode {
                    key: n.name.to_string(),
                    label: n.name.to_string(),
                    title,
                    classes,
                    href: (!n.is_virtual)
                        .then(|| format!("/services/{}?{query}", url_part(&n.name))),
                }
            })
            .collect();
        let edges = g
            .edges
            .iter()
            .filter_map(|e| {
                let (from, to) = (*names.get(&*e.caller)?, *names.get(&*e.callee)?);
                let (health, label) = edge_health(e);
                let via = e
                    .destinations
                    .first()
                    .map(|d| format!(" via {}", d.destination.as_deref().unwrap_or_default()));
                Some(DrawEdge {
                    from,
                    to,
                    caller: e.caller.to_string(),
                    callee: e.callee.to_string(),
                    calls: e.totals.calls,
                    health,
                    title: format!(
                        "{} -> {}{}: {} calls, {label}",
                        e.caller,
                        e.callee,
                        via.as_deref().unwrap_or_default(),
                        e.totals.calls
                    ),
                    label,
                    href: format!(
                        "/edges/{}/{}?{query}",
                        url_part(&e.caller),
                        url_part(&e.callee)
                    ),
                    messaging: via.is_some(),
                })
            })
            .collect();
        Drawing {
            nodes,
            edges,
            ring: false,
        }
    }
}

/// A drawn graph, and how many edge labels had no free spot (their edges are still drawn, and
/// listed in the broken-edges table).
pub struct Svg {
    pub svg: String,
    pub labels_left_out: usize,
}

/// A box on the canvas: x, y, width, height.
#[derive(Clone, Copy, Debug)]
struct Rect(f64, f64, f64, f64);

impl Rect {
    fn overlaps(&self, o: &Rect, pad: f64) -> bool {
        self.0 < o.0 + o.2 + pad
            && o.0 < self.0 + self.2 + pad
            && self.1 < o.1 + o.3 + pad
            && o.1 < self.1 + self.3 + pad
    }
}

type Point = (f64, f64);

/// A point of the cubic Bézier `p` at `t`.
fn at(p: &[Point; 4], t: f64) -> Point {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    (
        a * p[0].0 + b * p[1].0 + c * p[2].0 + d * p[3].0,
        a * p[0].1 + b * p[1].1 + c * p[2].1 + d * p[3].1,
    )
}

/// Width of one character of an edge label (12 px, bold for the worst), generously: a label
/// must never be wider than the room kept for it.
const LABEL_CHAR_W: f64 = 8.2;
/// A label's box from its baseline: 12 px glyphs reach about 11 px above it and 4 below.
const LABEL_ASCENT: f64 = 12.0;
const LABEL_H: f64 = 17.0;

/// Where a label of `chars` characters goes on `curve`: the first spot along it, from its middle
/// outwards, then a line above or below, that covers no node and no label already placed.
fn place_label(
    curve: &[Point; 4],
    chars: usize,
    taken: &[Rect],
    bounds: (f64, f64),
) -> Option<(Point, Rect)> {
    let w = chars as f64 * LABEL_CHAR_W + 8.0;
    // From the middle of the curve outwards, and from on it to further off it.
    let ts = (0..19).map(|i| 0.5 + if i % 2 == 0 { 0.025 } else { -0.025 } * i as f64);
    for t in ts {
        let (x, y) = at(curve, t);
        for dy in [4.0, -10.0, 18.0, -24.0, 32.0, -38.0, 46.0, -52.0, 60.0] {
            let base = y + dy;
            let r = Rect(x - w / 2.0, base - LABEL_ASCENT, w, LABEL_H);
            let inside = r.0 >= 0.0 && r.1 >= 0.0 && r.0 + r.2 <= bounds.0 && r.1 + r.3 <= bounds.1;
            if inside && !taken.iter().any(|o| r.overlaps(o, 3.0)) {
                return Some(((x, base), r));
            }
        }
    }
    None
}

/// The drawing's SVG.
pub fn draw(d: &Drawing) -> Svg {
    let names: Vec<&str> = d.nodes.iter().map(|n| n.label.as_str()).collect();
    let pairs: Vec<(usize, usize)> = d.edges.iter().map(|e| (e.from, e.to)).collect();
    let l = if d.ring {
        ring(&names)
    } else {
        layout(&names, &pairs)
    };
    let max_calls = d.edges.iter().map(|e| e.calls).max().unwrap_or(0).max(1) as f64;
    let mut s = String::with_capacity(256 * (d.nodes.len() + d.edges.len()));
    let _ = write!(
        s,
        r#"<svg class="graph{}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="service graph">"#,
        if d.ring { " ring" } else { "" },
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
    // Labels never cover a node: the nodes are taken first.
    let mut taken: Vec<Rect> = l
        .nodes
        .iter()
        .map(|p| Rect(p.x, p.y, p.w, NODE_H))
        .collect();
    let mut labels_left_out = 0;
    // Healthy edges first, so that broken ones are drawn on top.
    let mut order: Vec<usize> = (0..d.edges.len()).collect();
    order.sort_by_key(|&i| d.edges[i].health != Health::Ok);
    for i in order {
        let e = &d.edges[i];
        let (pa, pb) = (l.nodes[e.from], l.nodes[e.to]);
        let width = (1.5 + 5.0 * (1.0 + e.calls as f64).ln() / (1.0 + max_calls).ln()).min(6.5);
        let curve = match l.centre {
            Some(c) if e.from != e.to => chord(&pa, &pb, c),
            _ => curve(&pa, &pb, e.from == e.to),
        };
        let class = e.health.class();
        let _ = write!(
            s,
            r#"<a class="edge-link" href="{}" data-caller="{}" data-callee="{}" data-health="{class}"><g class="edge {class}{}"><title>{}</title><path d="M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" stroke-width="{width:.1}" marker-end="url(#arrow-{class})"/>"#,
            esc(&e.href),
            esc(&e.caller),
            esc(&e.callee),
            if e.messaging { " messaging" } else { "" },
            esc(&e.title),
            curve[0].0,
            curve[0].1,
            curve[1].0,
            curve[1].1,
            curve[2].0,
            curve[2].1,
            curve[3].0,
            curve[3].1,
        );
        if e.health != Health::Ok {
            match place_label(&curve, e.label.chars().count(), &taken, (l.width, l.height)) {
                Some(((x, y), r)) => {
                    taken.push(r);
                    let _ = write!(
                        s,
                        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
                        esc(&e.label)
                    );
                }
                None => labels_left_out += 1,
            }
        }
        s.push_str("</g></a>");
    }
    for (i, n) in d.nodes.iter().enumerate() {
        let p = l.nodes[i];
        if let Some(href) = &n.href {
            let _ = write!(s, r#"<a class="node-link" href="{}">"#, esc(href));
        }
        let _ = write!(
            s,
            r#"<g class="node{}" data-node="{}"><title>{}</title><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{NODE_H}" rx="6"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"#,
            esc(&n.classes),
            esc(&n.key),
            esc(&n.title),
            p.x,
            p.y,
            p.w,
            p.x + p.w / 2.0,
            p.y + NODE_H / 2.0 + 4.5,
            esc(&n.label),
        );
        if n.href.is_some() {
            s.push_str("</a>");
        }
    }
    s.push_str("</svg>");
    Svg {
        svg: s,
        labels_left_out,
    }
}

/// A call across a ring: from box edge to box edge, bent towards the centre and to its right, so
/// that calls both ways between two boxes are two curves.
fn chord(pa: &Placed, pb: &Placed, (cx, cy): Point) -> [Point; 4] {
    let centre_of = |p: &Placed| (p.x + p.w / 2.0, p.y + NODE_H / 2.0);
    let (a, b) = (centre_of(pa), centre_of(pb));
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    // Where the line between the centres leaves a box `w` wide.
    let exit = |(x, y): Point, w: f64, sign: f64| {
        let t =
            ((w / 2.0 + 2.0) / dx.abs().max(1e-9)).min((NODE_H / 2.0 + 2.0) / dy.abs().max(1e-9));
        (x + sign * t * dx, y + sign * t * dy)
    };
    let (p0, p3) = (exit(a, pa.w, 1.0), exit(b, pb.w, -1.0));
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let (mx, my) = ((p0.0 + p3.0) / 2.0, (p0.1 + p3.1) / 2.0);
    let bend = (
        mx + 0.25 * (cx - mx) - 14.0 * dy / len,
        my + 0.25 * (cy - my) + 14.0 * dx / len,
    );
    [p0, bend, bend, p3]
}

/// The curve of a call from `pa` to `pb`: a loop above a node that calls itself, an arc over the
/// columns a call skips, a bend to the next column, or a swing below both for a call back.
fn curve(pa: &Placed, pb: &Placed, to_itself: bool) -> [Point; 4] {
    let (x1, y1) = (pa.x + pa.w, pa.y + NODE_H / 2.0);
    let (x2, y2) = (pb.x, pb.y + NODE_H / 2.0);
    if to_itself {
        let (cx, top) = (pa.x + pa.w * 0.5, pa.y);
        [
            (cx - 18.0, top),
            (cx - 30.0, top - 34.0),
            (cx + 30.0, top - 34.0),
            (cx + 18.0, top),
        ]
    } else if x2 > x1 && pb.column > pa.column + 1 {
        let top = (pa.y.min(pb.y) - 26.0 - 10.0 * (pb.column - pa.column) as f64).max(4.0);
        [(x1, y1), (x1 + 40.0, top), (x2 - 40.0, top), (x2, y2)]
    } else if x2 > x1 {
        let dx = ((x2 - x1) / 2.0).max(30.0);
        [(x1, y1), (x1 + dx, y1), (x2 - dx, y2), (x2, y2)]
    } else {
        let low = pa.y.max(pb.y) + NODE_H + 40.0;
        [(x1, y1), (x1 + 60.0, low), (x2 - 60.0, low), (x2, y2)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_keeps_off_nodes_and_other_labels() {
        let curve = [(0.0, 50.0), (50.0, 50.0), (50.0, 50.0), (100.0, 50.0)];
        let node = Rect(30.0, 30.0, 40.0, 30.0);
        let (_, first) = place_label(&curve, 6, &[node], (400.0, 400.0)).unwrap();
        assert!(!first.overlaps(&node, 0.0));
        let (_, second) = place_label(&curve, 6, &[node, first], (400.0, 400.0)).unwrap();
        assert!(!second.overlaps(&node, 0.0) && !second.overlaps(&first, 0.0));
        // No room anywhere: left out rather than drawn over something.
        let wall = Rect(-1000.0, -1000.0, 3000.0, 3000.0);
        assert!(place_label(&curve, 6, &[wall], (400.0, 400.0)).is_none());
    }

    #[test]
    fn health_is_the_share_broken_and_the_top_kind() {
        let (h, l) = health(1000, [(&"missing", &10u64), (&"changed", &2u64)]);
        assert_eq!((h, l.as_str()), (Health::Warn, "1.2% missing"));
        let (h, l) = health(10, [(&"changed", &5u64)]);
        assert_eq!((h, l.as_str()), (Health::Bad, "50.0% changed"));
        assert_eq!(health(10, []).0, Health::Ok);
    }
}
