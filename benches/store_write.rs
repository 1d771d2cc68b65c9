//! What the store sustains: findings and traces written per second, and the bytes each takes on
//! disk. Traces come from the load generator's traffic (9-span traces, each with one injected
//! fault), decoded and finalised by the real pipeline, then written through the real store.
//!
//! `cargo bench --bench store_write [-- TRACES] [postgres://ADMIN_URL]`: SQLite by default; with a
//! PostgreSQL URL, into a fresh database on that server (dropped afterwards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use grayscope::assemble::{Assembler, AssemblerConfig};
use grayscope::instances::{Clock, Instances};
use grayscope::intern::{SymbolLimits, Symbols};
use grayscope::loadgen::{Template, Wire};
use grayscope::receive::Decoder;
use grayscope::store::sqlite::DB_FILE;
use grayscope::store::{DirLock, SqliteStore, Store, StoreConfig};
use grayscope::verify::Policy;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::SeedableRng;

fn main() {
    let traces: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300_000);
    let postgres = std::env::args().skip(1).find(|a| a.starts_with("postgres"));
    let symbols = Arc::new(Symbols::new(&SymbolLimits::default()));
    let instances = Arc::new(Instances::new([], u64::MAX / 2));
    let decoder = Decoder::new(
        symbols.clone(),
        instances.clone(),
        Clock::new(),
        &["x-release-stage".into()],
        "deployment.stage",
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let templates: Vec<Template> = (0..16)
        .map(|_| Template::build(999, (1.0, &[]), Wire::Http, &mut rng))
        .collect();
    let per_request = templates[0].spans / 9;
    let mut asm = Assembler::new(
        AssemblerConfig::offline(),
        Arc::new(Policy::default()),
        instances,
    );
    let mut batches = Vec::new();
    let now = grayscope::wall_ms();
    for n in 0..traces.div_ceil(per_request) as u64 {
        let body = templates[n as usize % templates.len()].instance(7, n, None);
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("template decodes");
        for batch in decoder.decode(&req, 1).batches {
            asm.insert(batch, 0, now, &mut Vec::new());
        }
        let mut out = Vec::new();
        asm.drain(0, now, &mut out);
        batches.push(out);
    }
    let findings: usize = batches
        .iter()
        .flatten()
        .map(|f| f.outcome.findings.len())
        .sum();
    let stored_spans: usize = batches
        .iter()
        .flatten()
        .filter_map(|f| f.snapshot.as_ref().map(|s| s.spans.len()))
        .sum();
    let finalised: usize = batches.iter().map(Vec::len).sum();

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    if let Some(admin) = postgres {
        let secs = rt.block_on(postgres_run(&admin, batches, symbols));
        println!("store:                     PostgreSQL");
        println!(
            "finalised traces:          {finalised} ({findings} findings, {stored_spans} stored spans)"
        );
        println!("write time:                {secs:.2} s");
        println!("findings per second:       {:.0}", findings as f64 / secs);
        println!(
            "stored spans per second:   {:.0}",
            stored_spans as f64 / secs
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let elapsed = rt.block_on(async {
        let cfg = StoreConfig {
            queue_spans: 1 << 20,
            flush_interval: Duration::from_secs(1),
            retention: Duration::from_secs(3600),
            max_bytes: u64::MAX,
        };
        let store = SqliteStore::open(&cfg, DirLock::acquire(dir.path()).expect("locked"), symbols)
            .expect("store opens");
        let t = Instant::now();
        for b in batches {
            store.submit(b).await.expect("submitted");
        }
        store.flush().await.expect("written");
        let elapsed = t.elapsed();
        store
            .stop(tokio::time::Instant::now() + Duration::from_secs(60))
            .await;
        elapsed
    });
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("the store opens");
    let size_of = |names: &str| -> u64 {
        conn.query_row(
            &format!("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({names})"),
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("dbstat") as u64
    };
    let finding_bytes = size_of(
        "'findings', 'findings_observed', 'findings_trace', 'findings_kind', 'findings_caller', 'findings_callee'",
    );
    let trace_bytes = size_of("'traces', 'sqlite_autoindex_traces_1', 'traces_finalised'");
    let file = std::fs::metadata(dir.path().join(DB_FILE))
        .expect("the file")
        .len();
    let secs = elapsed.as_secs_f64();
    println!(
        "finalised traces:          {finalised} ({findings} findings, {stored_spans} stored spans)"
    );
    println!("write time:                {secs:.2} s");
    println!("findings per second:       {:.0}", findings as f64 / secs);
    println!(
        "stored spans per second:   {:.0}",
        stored_spans as f64 / secs
    );
    println!(
        "disk bytes per finding:    {:.0}",
        finding_bytes as f64 / findings as f64
    );
    println!(
        "disk bytes per stored span: {:.1}",
        trace_bytes as f64 / stored_spans as f64
    );
    println!(
        "file bytes per finding (everything): {:.0}",
        file as f64 / findings as f64
    );
}

/// Writes `batches` into a fresh database on `admin`'s server; the seconds it took.
async fn postgres_run(
    admin: &str,
    batches: Vec<Vec<grayscope::assemble::Finalised>>,
    symbols: Arc<Symbols>,
) -> f64 {
    use grayscope::store::{PostgresStore, Store};
    let name = format!("grayscope_bench_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("the server answers");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a database");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    let cfg = StoreConfig {
        queue_spans: 1 << 20,
        flush_interval: Duration::from_secs(1),
        retention: Duration::from_secs(3600),
        max_bytes: u64::MAX,
    };
    let store = PostgresStore::connect(&format!("{base}/{name}"), &cfg, symbols)
        .await
        .expect("store opens");
    let t = Instant::now();
    for b in batches {
        store.submit(b).await.expect("submitted");
    }
    store.flush().await.expect("written");
    let elapsed = t.elapsed().as_secs_f64();
    store
        .stop(tokio::time::Instant::now() + Duration::from_secs(60))
        .await;
    drop(store);
    client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("dropped");
    elapsed
}
