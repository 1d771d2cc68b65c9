//! Files that are read again when they change: certificates rotated by cert-manager, token files
//! edited for rotation. Polled rather than watched with inotify: a Kubernetes Secret volume swaps a
//! symlink, which inotify on the file itself does not see, and reading three small files every two
//! seconds costs nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SecurityError;

/// How often watched files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

type Load<T> = fn(&[Vec<u8>]) -> Result<T, SecurityError>;

/// A value built from files, rebuilt when their contents change. A change that does not build (a
/// certificate written before its key, say) keeps the previous value and is logged once.
pub struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Load<T>,
    current: RwLock<Arc<T>>,
    /// The contents the current value, or the last refused change, was built from.
    seen: Mutex<Vec<Vec<u8>>>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads and builds now: at start a file that does not build is an error, not a warning.
    pub fn open(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: Load<T>,
    ) -> Result<Arc<Self>, SecurityError> {
        let files = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let within = |source| SecurityError::In {
            what,
            files: files.clone(),
            source: Box::new(source),
        };
        let contents = read_all(&paths)?;
        let value = load(&contents).map_err(within)?;
        Ok(Arc::new(Watched {
            what,
            paths,
            load,
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(contents),
        }))
    }

    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; rebuilds if they changed. Returns whether the value was replaced.
    pub fn check(&self) -> bool {
        let contents = match read_all(&self.paths) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("{}: {e}; keeping the previous one", self.what);
                return false;
            }
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == contents {
            return false;
        }
        let built = (self.load)(&contents);
        *seen = contents;
        match built {
            Ok(value) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
                tracing::info!("{}: reloaded from {}", self.what, self.describe());
                true
            }
            Err(e) => {
                tracing::warn!(
                    "{}: the changed files do not load ({e}); keeping the previous one",
                    self.what
                );
                false
            }
        }
    }

    /// Checks every [`RELOAD_EVERY`] until `stop`.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let me = me.clone();
                // File reads block; certificates parse in microseconds.
                let _ = tokio::task::spawn_blocking(move || me.check()).await;
            }
        });
    }

    fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, SecurityError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|source| SecurityError::Read {
                path: p.clone(),
                source,
            })
        })
        .collect()
}
