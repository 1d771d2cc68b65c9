//! A Python virtual environment with pinned packages from PyPI, built once under `target/python/`
//! and reused while its requirements file is unchanged. A test that needs one passes without
//! running when Python cannot build it, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter of a virtual environment holding `requirements` (a pip requirements file).
pub fn venv(requirements: &Path) -> Option<PathBuf> {
    let reqs = std::fs::read_to_string(requirements).expect("the requirements file");
    let key = format!("{:016x}", fnv(reqs.as_bytes()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/python")
        .join(key);
    let python = root.join("bin/python");
    let stamp = root.join(".complete");
    if stamp.exists() {
        return Some(python);
    }
    let fail = |what: &str| {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what}: Python 3 with venv and pip, and PyPI, are required in CI"
        );
        eprintln!("{what}: skipping a test that needs Python packages");
        None
    };
    let _ = std::fs::remove_dir_all(&root);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&root)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return fail("python3 -m venv failed");
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(requirements)
        .status();
    if !installed.is_ok_and(|s| s.success()) {
        return fail("pip install failed");
    }
    std::fs::write(&stamp, "").unwrap();
    Some(python)
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
