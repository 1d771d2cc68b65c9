//! Writes the seed corpus of both fuzz targets from the test suite's own requests: every request
//! in `tests/data` and load generator traffic with injected faults, each as protobuf and as JSON.
//!
//! `cargo run --example fuzz_seeds` (by `scripts/fuzz.sh`). An example of the collector's crate
//! rather than a binary of the fuzz crate: `cargo test` has built it already, in the profile the
//! tests use, so writing the seeds costs no build of its own.

use std::path::Path;

use grayscope::loadgen::{Template, Wire};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::SeedableRng;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (pb, json) = (
        root.join("fuzz/corpus/otlp_protobuf"),
        root.join("fuzz/corpus/otlp_json"),
    );
    std::fs::create_dir_all(&pb)?;
    std::fs::create_dir_all(&json)?;
    let mut n = 0;
    let mut write = |name: String, req: &ExportTraceServiceRequest| -> std::io::Result<()> {
        std::fs::write(pb.join(format!("{name}.pb")), req.encode_to_vec())?;
        std::fs::write(json.join(format!("{name}.json")), serde_json::to_vec(req)?)?;
        n += 1;
        Ok(())
    };
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/data"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let requests: Vec<ExportTraceServiceRequest> = match serde_json::from_str(&text) {
            Ok(req) => vec![req],
            Err(_) => text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        };
        for (i, req) in requests.iter().enumerate() {
            write(format!("{stem}-{i}"), req)?;
        }
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for i in 0..8u64 {
        let t = Template::build(27, (0.5, &[]), Wire::Http, &mut rng);
        let req = ExportTraceServiceRequest::decode(&t.instance(1, i, None)[..])
            .expect("the load generator's requests decode");
        write(format!("loadgen-{i}"), &req)?;
    }
    println!("wrote {n} seeds to {} and {}", pb.display(), json.display());
    Ok(())
}
