//! The demo's message broker: a NATS server (`nats-server`, Debian's package of that name) on a
//! loopback port the OS chooses, started for the run and ended with it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DemoError;

/// A running `nats-server`.
pub struct NatsServer {
    child: Child,
    pub url: String,
}

impl NatsServer {
    /// The server binary: `GRAYSCOPE_NATS_SERVER`, else `nats-server` on the `PATH` (or in
    /// `/usr/sbin`, where Debian puts it).
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("GRAYSCOPE_NATS_SERVER") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    }

    /// Starts one and waits until it accepts connections (at most 10 s).
    pub fn start(binary: &std::path::Path) -> Result<NatsServer, DemoError> {
        let fail = |reason: String| DemoError::Broker(reason);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| fail(format!("no free port: {e}")))?
            .port();
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", binary.display())))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!("{} exited: {status}", binary.display())));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "{} did not listen on 127.0.0.1:{port} within 10 s",
                    binary.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
