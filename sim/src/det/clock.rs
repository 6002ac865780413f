//! Virtual time for a deterministic run: tokio's paused clock, read as wall-clock
//! milliseconds from a fixed epoch, with an offset per server instance (clock skew).

use flashsale::clock::Clock;
use tokio::time::Instant;

/// Wall-clock milliseconds at the start of every deterministic run (2026-01-01T00:00Z),
/// so that two runs of one seed see the same times.
pub const DET_EPOCH_MS: i64 = 1_767_225_600_000;

/// A wall clock that advances with tokio's (paused, auto-advancing) clock.
#[derive(Debug, Clone, Copy)]
pub struct VirtualClock {
    origin: Instant,
    offset_ms: i64,
}

impl VirtualClock {
    /// A clock that reads [`DET_EPOCH_MS`] plus `offset_ms` at `origin`.
    pub fn new(origin: Instant, offset_ms: i64) -> Self {
        Self { origin, offset_ms }
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        DET_EPOCH_MS.saturating_add(self.offset_ms).saturating_add(elapsed)
    }
}
