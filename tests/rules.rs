//! The shipped Prometheus rules, checked and unit-tested by the real `promtool`.

use std::path::Path;
use std::process::Command;

/// `promtool`, or `None` outside CI when it is not installed; under `CI=true` a missing tool is a
/// failure, not a skip.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required in CI (Debian package 'prometheus'; .ci/run installs it)"
        );
        eprintln!("promtool not installed: skipping (install Debian's 'prometheus')");
        return None;
    }
    Some("promtool")
}

fn run(args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_are_valid_and_every_alert_is_tested() {
    let Some(_) = promtool() else { return };
    run(&["check", "rules", "grayscope-rules.yml"]);
    run(&["test", "rules", "grayscope-rules.test.yml"]);

    // Every alert in the rules has a test case that expects it to fire.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/prometheus");
    let rules = std::fs::read_to_string(dir.join("grayscope-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("grayscope-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 11);
    for a in alerts {
        let firing = tests
            .split(&format!("alertname: {a}\n"))
            .skip(1)
            .any(|rest| rest.trim_start().starts_with("exp_alerts:\n"));
        assert!(firing, "no firing test for {a}");
    }

    // Every runbook an alert links to is in the README.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for anchor in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: \"README.md#"))
    {
        let anchor = anchor.trim_end_matches('"');
        assert!(
            readme.contains(&format!("<a id=\"{anchor}\"></a>")),
            "README has no runbook {anchor}"
        );
    }
}
