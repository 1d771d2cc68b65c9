//! grayscope: an OTLP trace collector that verifies gray-release (canary) stage propagation.
pub mod assemble;
pub mod instances;
pub mod intern;
pub mod model;
pub mod stage;
pub mod testkit;
pub mod verify;
pub mod aggregate;
pub mod receive;

/// Unix time in milliseconds, for timestamps shown to users.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
