//! The daemons' one source of time.
//!
//! Pure cores are handed `now`; the drivers that hand it to them read it here. Production uses
//! the system clocks; the in-process tests use [`Clock::with_offset`] to move time forward (a
//! token's expiry, an auth timeout) without sleeping. Offsets only ever move time forward, so
//! monotonic deadlines stay monotonic.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Wall and monotonic time, optionally shifted forward by a shared offset.
#[derive(Clone, Default)]
pub struct Clock {
    offset: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("offset", &self.offset())
            .finish()
    }
}

/// Moves a [`Clock`] forward; every clone of the clock sees the change.
#[derive(Debug, Clone)]
pub struct ClockControl {
    offset: Arc<AtomicU64>,
}

impl ClockControl {
    /// Moves time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .offset
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(nanos))
            });
    }
}

impl Clock {
    /// The system clocks.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system clocks plus an offset that the returned control moves forward.
    pub fn with_offset() -> (Self, ClockControl) {
        let offset = Arc::new(AtomicU64::new(0));
        (
            Self {
                offset: Some(offset.clone()),
            },
            ClockControl { offset },
        )
    }

    fn offset(&self) -> Duration {
        self.offset.as_ref().map_or(Duration::ZERO, |o| {
            Duration::from_nanos(o.load(Ordering::SeqCst))
        })
    }

    /// Wall-clock time (token expiries, audit records).
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// Monotonic time (rate limits, bans).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }
}

/// Seconds since the Unix epoch (0 before it): how the daemons print and persist times.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_moves_every_clone_forward() {
        let (clock, control) = Clock::with_offset();
        let copy = clock.clone();
        let before = copy.now();
        control.advance(Duration::from_secs(3600));
        assert!(copy.now() >= before + Duration::from_secs(3600));
        assert!(clock.instant() >= Instant::now() + Duration::from_secs(3599));
        assert_eq!(
            unix_secs(SystemTime::UNIX_EPOCH + Duration::from_secs(7)),
            7
        );
    }
}
