//! `grayscope serve` as a child process, as an operator runs it: for tests of what only a whole
//! process shows (restarts, signals, resident memory).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `grayscope serve` on OS-chosen ports; killed when dropped.
pub struct Served {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// host:port of the API and metrics.
    pub api: String,
}

impl Served {
    /// Starts `grayscope serve` with its store in `data` and `args` after the listen addresses.
    pub fn start(data: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Served {
        Served::spawn(Served::command(data, args))
    }

    /// The command [`Served::start`] runs, for a test to add to (its stderr, its limits).
    pub fn command(data: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grayscope"));
        cmd.args([
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
        ])
        .args(["--http", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("GRAYSCOPE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        cmd
    }

    /// Runs `cmd` and waits for it to say where it listens.
    pub fn spawn(mut cmd: Command) -> Served {
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            !line.is_empty(),
            "grayscope serve exited at start: {:?}",
            child.wait()
        );
        // "grayscope: OTLP/gRPC on A, OTLP/HTTP on B, API and metrics on http://C"
        let addr = |after: &str| -> String {
            let rest = &line[line.find(after).expect(&line) + after.len()..];
            rest.split([',', '\n']).next().unwrap().trim().to_string()
        };
        Served {
            grpc: addr("OTLP/gRPC on ").parse().unwrap(),
            http: addr("OTLP/HTTP on ").parse().unwrap(),
            api: addr("metrics on http://"),
            child,
        }
    }

    /// Sends `sig` and waits at most `within` for the process to end; its exit code, `None` when a
    /// signal ended it.
    pub fn signal(&mut self, sig: i32, within: Duration) -> Option<i32> {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `kB` field of `/proc/PID/status`, such as `VmRSS:` or `VmHWM:`.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The sum of every sample of `name` (any labels, or exactly the labels given with it) in
/// Prometheus text.
pub fn sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A child process that is killed if the test ends (or panics) while it still runs, so that a
/// failing test leaves nothing behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
