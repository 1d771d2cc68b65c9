//! One process per data directory.
//!
//! The store's writer assumes it is the only one: its name-id cache, its per-minute upserts and its
//! retention all read what they wrote. Two processes on one directory (a copied unit file, a
//! rolling restart that overlaps) would interleave their writes and both keep acknowledging spans.
//! An advisory lock (`flock`) on `grayscope.lock` makes the second one stop at start instead. The
//! kernel drops the lock when the process dies, however it dies, so `kill -9` leaves nothing stale
//! behind; the file's content (the holder's pid) is only there to name the holder in the message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside `--data`.
pub const LOCK_FILE: &str = "grayscope.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create the data directory {}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the data directory {}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory {} is in use by another grayscope process{}; stop it, or give this one its own --data",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
}

/// Exclusive use of a data directory for as long as it is held (dropping it unlocks).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and takes it, or says which process has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let lock_err = |source| LockError::Lock {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's pid stays readable to whoever is refused.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid: held.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        let record = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())
        };
        record(&mut file).map_err(lock_err)?;
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_taken_once_and_free_again_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DirLock::acquire(&data).unwrap();
        // flock is per open file, so a second take in this same process is refused like another
        // process's would be.
        match DirLock::acquire(&data) {
            Err(e @ LockError::InUse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&data.display().to_string()), "{msg}");
                assert!(
                    msg.contains(&format!("(pid {})", std::process::id())),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        let again = DirLock::acquire(&data).unwrap();
        assert_eq!(again.dir(), data);
    }
}
