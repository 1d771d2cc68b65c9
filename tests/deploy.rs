//! The Kubernetes example under `deploy/` says only what grayscope and the Collector accept: the
//! Collector's config validates with a Collector built from the official modules, and every
//! `GRAYSCOPE_*` variable the Deployment sets is one `grayscope serve` reads.

use std::path::Path;
use std::process::Command;

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes")
            .join(file),
    )
    .unwrap()
}

#[test]
fn every_variable_the_deployment_sets_is_one_grayscope_reads() {
    let help = Command::new(env!("CARGO_BIN_EXE_grayscope"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let yaml = deploy("grayscope.yaml");
    let vars: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|n| n.starts_with("GRAYSCOPE_"))
        .collect();
    assert!(vars.len() >= 5, "{vars:?}");
    for v in vars {
        assert!(
            help.contains(&format!("[env: {v}=")),
            "{v} is not a variable of grayscope serve"
        );
    }
}

#[test]
fn the_collector_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if Command::new("go").arg("version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Go is required in CI to build the OpenTelemetry Collector"
        );
        eprintln!("Go is not installed: skipping");
        return;
    }
    assert!(
        Command::new(root.join("tests/otelcol/build.sh"))
            .status()
            .unwrap()
            .success()
    );
    // The config is the ConfigMap's `config.yaml: |` block.
    let yaml = deploy("collector.yaml");
    let start = yaml.find("config.yaml: |\n").expect("a config block") + "config.yaml: |\n".len();
    let block: String = yaml[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, block).unwrap();
    let out = Command::new(root.join("target/otelcol/grayscope-otelcol"))
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
