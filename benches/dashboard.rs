//! Server time to draw the overview's service graph for a large mesh: 200 services and 1,000
//! caller -> callee edges (with stages and a share of broken ones), from the graph model to the SVG.
//!
//! `cargo bench --bench dashboard`

use std::time::Instant;

use grayscope::aggregate::{Count, ServiceGraph};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::read::subgraph;
use grayscope::verify::{NodeKey, Verdict};
use grayscope::view::GraphView;
use grayscope::web::svg;

fn main() {
    let sym = Symbols::new(&SymbolLimits::default());
    let other = sym.values.other();
    let stages = [sym.values.intern("stable"), sym.values.intern("canary")];
    let nodes: Vec<NodeKey> = (0..200)
        .map(|i| NodeKey::Service(sym.services.intern(&format!("service-{i:03}"))))
        .collect();
    let mut g = ServiceGraph::default();
    let mut edges = 0;
    // A layered mesh: each service calls 5 services of later layers.
    'outer: for (i, &a) in nodes.iter().enumerate() {
        for k in 1..=5 {
            let j = (i + k * 7) % nodes.len();
            if j == i {
                continue;
            }
            for (s, &stage) in stages.iter().enumerate() {
                let n = 100 + (i * 13 + k) as u64 % 400;
                let broken = if (i + k) % 17 == 0 {
                    n / (3 + s as u64)
                } else {
                    0
                };
                for (verdict, count) in [
                    (None, n),
                    (Some(Verdict::Ok), n - broken),
                    (Some(Verdict::Missing), broken),
                ] {
                    g.count(
                        Some(a),
                        nodes[j],
                        Count {
                            stage: Some(stage),
                            instance: Some(stage),
                            verdict,
                            count,
                            first_breaks: if verdict == Some(Verdict::Missing) {
                                count
                            } else {
                                0
                            },
                        },
                        other,
                    );
                }
            }
            edges += 1;
            if edges == 1000 {
                break 'outer;
            }
        }
    }
    println!(
        "graph: {} services, {} edges",
        g.graph.node_count(),
        g.graph.edge_count()
    );
    let runs = 50;
    // The overview's default for a large mesh: the broken part, capped; and the whole graph.
    for (what, cap) in [
        ("broken part (120 edges)", Some(120)),
        ("whole graph", None),
    ] {
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..runs {
            let view = GraphView::of(&g, None, None, &sym);
            let view = match cap {
                Some(cap) => subgraph::broken_part(&view, cap).graph,
                None => view,
            };
            bytes = svg::draw(&svg::Drawing::of_graph(&view, "window=1h", None))
                .svg
                .len();
        }
        let per = t.elapsed() / runs;
        println!(
            "{what}: view + layout + SVG per request: {:.2} ms ({} KiB of SVG)",
            per.as_secs_f64() * 1e3,
            bytes / 1024
        );
    }
}
