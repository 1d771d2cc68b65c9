//! Why a write failed, and what the writer does about it.
//!
//! Two answers only. A failure of the store itself (busy, locked, I/O, disk full, a corrupt or
//! read-only file) is not the batch's fault: writing less would not help the next batch either, so
//! the batch is kept and retried with backoff while senders are told to retry (the queue to the
//! writer fills, then the workers' queues). A failure of the batch (a constraint, a string too big,
//! anything unknown) would fail every retry: the writer repairs what it can, isolates the traces that
//! still fail and sets them aside, counted, so that everything after them is written.

/// A failure's label in `grayscope_store_write_errors_total` and
/// `grayscope_store_dropped_traces_total`; a fixed set, so the metrics' cardinality is too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Another connection holds the database's write lock.
    Busy,
    /// An I/O error, including a file size limit reached.
    Io,
    /// No room left on the disk, or the file reached its page limit.
    Full,
    /// Out of memory inside SQLite.
    Memory,
    /// Stopped by the shutdown deadline.
    Interrupted,
    /// The file is damaged or is not a database.
    Corrupt,
    /// The file cannot be written (permissions, moved away, read-only mount).
    ReadOnly,
    /// A row broke a constraint of the schema.
    Constraint,
    /// A string or blob over SQLite's size limit.
    TooBig,
    /// Anything else; presumed to be about the batch.
    Other,
    /// Still unwritten when `--shutdown-grace` ran out (a reason to drop, never a write error).
    Shutdown,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Busy,
        Reason::Io,
        Reason::Full,
        Reason::Memory,
        Reason::Interrupted,
        Reason::Corrupt,
        Reason::ReadOnly,
        Reason::Constraint,
        Reason::TooBig,
        Reason::Other,
        Reason::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Busy => "busy",
            Reason::Io => "io",
            Reason::Full => "full",
            Reason::Memory => "memory",
            Reason::Interrupted => "interrupted",
            Reason::Corrupt => "corrupt",
            Reason::ReadOnly => "read_only",
            Reason::Constraint => "constraint",
            Reason::TooBig => "too_big",
            Reason::Other => "other",
            Reason::Shutdown => "shutdown",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether retrying the same batch later can succeed: the store's fault, not the batch's.
    pub fn is_store(self) -> bool {
        matches!(
            self,
            Reason::Busy
                | Reason::Io
                | Reason::Full
                | Reason::Memory
                | Reason::Interrupted
                | Reason::Corrupt
                | Reason::ReadOnly
                | Reason::Shutdown
        )
    }

    /// What an operator can do about a failure of the store, for its one log line.
    pub fn advice(self) -> &'static str {
        match self {
            Reason::Busy => "another process holds the database's lock",
            Reason::Io | Reason::Full => "free disk space or lower --max-store-bytes",
            Reason::Corrupt | Reason::ReadOnly => {
                "this will not clear by itself: stop grayscope, then repair or move the file"
            }
            _ => "retrying",
        }
    }
}

/// A failed write: why, and the database's words for it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.reason.label())
    }
}

/// Delay before retry `attempt` (1-based) of a write the store refused: doubling from the flush
/// interval, at most 10 s, so that a store that recovers is written to again within seconds.
pub fn backoff(flush_interval: std::time::Duration, attempt: u32) -> std::time::Duration {
    const MAX: std::time::Duration = std::time::Duration::from_secs(10);
    flush_interval
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_the_flush_interval_up_to_ten_seconds() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), 1), s(1));
        assert_eq!(backoff(s(1), 2), s(2));
        assert_eq!(backoff(s(1), 4), s(8));
        assert_eq!(backoff(s(1), 5), s(10));
        assert_eq!(backoff(s(1), 1000), s(10));
        assert_eq!(
            backoff(Duration::from_millis(200), 3),
            Duration::from_millis(800)
        );
    }
}
