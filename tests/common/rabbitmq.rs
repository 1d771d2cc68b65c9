//! A throwaway RabbitMQ broker (Debian's `rabbitmq-server`) on loopback ports chosen by the OS,
//! with its data in a temporary directory; stopped, with the epmd it started, when dropped. A test
//! that needs one passes without running when the broker is not installed, except under
//! `CI=true`, where it fails.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

pub struct Broker {
    pub amqp_port: u16,
    epmd_port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Broker {
    pub fn start() -> Option<Broker> {
        if !Path::new(SERVER).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "rabbitmq-server is required in CI (Debian package 'rabbitmq-server'; .ci/run installs it)"
            );
            eprintln!("{SERVER} is not installed: skipping a RabbitMQ test");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path();
        std::fs::write(d.join("enabled_plugins"), "[].\n").unwrap();
        let (amqp_port, dist_port, epmd_port) = (free_port(), free_port(), free_port());
        let node = format!(
            "grayscope-test-{}-{amqp_port}@localhost",
            std::process::id()
        );
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new(SERVER)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("none"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                d.join("none-advanced.config"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        let mut b = Broker {
            amqp_port,
            epmd_port,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", amqp_port)).is_err() {
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!(
                    "rabbitmq-server exited ({status}):\n{}",
                    std::fs::read_to_string(b.dir.path().join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rabbitmq-server did not listen within 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(b)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The server script runs the Erlang VM as its child: end the VM (and anything it runs),
        // then the script.
        let mut pids = descendants(self.child.id());
        pids.reverse();
        for pid in &pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The epmd daemon the VM started on this test's port.
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The processes below `pid`, parents before their children.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            all.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}
