//! The OpenAPI document held to the server that publishes it: schemathesis (pinned, from PyPI)
//! generates requests from `/api/v1/openapi.json`, valid and invalid, for every operation it lists,
//! and runs all of its checks on every answer: valid requests accepted, invalid ones refused,
//! statuses, headers and bodies as documented, no server error, no operation reachable without
//! the read token. The collector is a real `grayscope serve` with `--read-tokens`, fed by the
//! load generator, so that findings, traces and the graph hold data.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::binary::{KillOnDrop, Served};
use common::python::venv;

const TOKEN: &str = "schemathesis-read-token-0f3a9c";
/// Generated requests per operation and phase; a few thousand in all.
const MAX_EXAMPLES: &str = "100";
/// Fixed, so that a failure is reproduced by running the test again; change it to explore.
const SEED: &str = "20261207";

fn get(api: &str, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("http://{api}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
}

#[test]
fn every_operation_keeps_the_promises_of_its_document() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let Some(python) = venv(&here.join("requirements.txt")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("read-tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let served = Served::start(
        dir.path().join("data"),
        &[
            "--read-tokens",
            tokens.to_str().unwrap(),
            "--trace-idle",
            "1s",
        ],
    );

    // Traffic with faults of every kind, finalised and stored before the run starts.
    let fed = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["loadgen", "--grpc", &served.grpc.to_string()])
        .args(["--requests", "10", "--fault-rate", "0.2", "--seed", "7"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(fed.success(), "loadgen: {fed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: serde_json::Value = get(&served.api, "/api/v1/findings?limit=1").json().unwrap();
        if page["findings"].as_array().is_some_and(|f| !f.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no findings stored: {page}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let doc: serde_json::Value = get(&served.api, "/api/v1/openapi.json").json().unwrap();
    // Every operation but the document itself, which schemathesis reads instead of testing.
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .filter(|op| op != "GET /api/v1/openapi.json")
        .collect();
    operations.sort();

    let (report_path, junit) = (dir.path().join("report.json"), dir.path().join("junit.xml"));
    let mut run = Command::new(python.with_file_name("schemathesis"));
    run.arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{}/api/v1/openapi.json", served.api))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        // One worker: reproducible by its seed, and two threads share schemathesis's caches
        // (one run in a few erred inside schemathesis with a KeyError).
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--report", "json,junit", "--report-json-path"])
        .arg(&report_path)
        .arg("--report-junit-path")
        .arg(&junit)
        .env("NO_COLOR", "1")
        .current_dir(dir.path());
    // An error inside schemathesis itself (an internal error, no failure on the API) is its
    // fault, not grayscope's: said, and run once more. A failure on the API never is.
    let (mut status, mut printed, mut report) = schemathesis(&mut run, dir.path(), &report_path);
    if !status.success()
        && report["failures"].as_array().is_some_and(|f| f.is_empty())
        && report["errors"].as_array().is_some_and(|e| !e.is_empty())
    {
        eprintln!("schemathesis erred on its own; once more:\n{printed}");
        (status, printed, report) = schemathesis(&mut run, dir.path(), &report_path);
    }
    assert!(status.success(), "schemathesis failed:\n{printed}");

    assert_eq!(report["complete"], true, "{printed}");
    let junit = std::fs::read_to_string(&junit).unwrap();
    let mut tested: Vec<String> = junit
        .split("<testcase name=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .filter(|name| name != "Stateful tests")
        .collect();
    tested.sort();
    assert_eq!(
        tested, operations,
        "every operation of the document was tested:\n{printed}"
    );
    let cases = report["test_cases"]["generated"].as_u64().unwrap();
    assert!(cases >= 1000, "only {cases} cases generated:\n{printed}");
    assert_eq!(report["test_cases"]["with_failures"], 0, "{printed}");
    assert_eq!(report["test_cases"]["errored"], 0, "{printed}");
    eprintln!(
        "schemathesis: {} operations, {cases} cases, all checks passed",
        operations.len()
    );
}

/// Runs `run`, its output to a file, not a pipe: a pipe nobody reads while the run lasts would
/// stop it when full. Its exit status, what it printed, and its JSON report (null if none).
fn schemathesis(
    run: &mut Command,
    dir: &Path,
    report: &Path,
) -> (std::process::ExitStatus, String, serde_json::Value) {
    let log = dir.join("schemathesis.log");
    let file = std::fs::File::create(&log).unwrap();
    run.stdout(file.try_clone().unwrap()).stderr(file);
    let _ = std::fs::remove_file(report);
    let mut child = KillOnDrop(run.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "schemathesis ran over 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let printed = std::fs::read_to_string(&log).unwrap();
    let report = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (status, printed, report)
}
