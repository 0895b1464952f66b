//! Exponential backoff with jitter between failed exports: the first wait is
//! about [`INITIAL`], each failure doubles it up to a maximum, a success
//! starts over. The jitter keeps the exporters of many hosts from retrying in
//! step after a collector outage.

use std::time::Duration;

/// The first wait after a failure.
pub const INITIAL: Duration = Duration::from_secs(1);

/// The backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: Duration,
    next: Duration,
    /// xorshift64 state for the jitter.
    rng: u64,
}

impl Backoff {
    /// A backoff that never waits longer than `max`.
    pub fn new(max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            max,
            next: INITIAL.min(max),
            rng: seed | 1,
        }
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The wait before the next attempt: between half and all of the current
    /// step, which then doubles (up to the maximum).
    pub fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = step / 2;
        let jitter = (self.rng % 1_000) as u32;
        half + half * jitter / 1_000
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = INITIAL.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_with_jitter_and_start_over() {
        let mut b = Backoff::new(Duration::from_secs(8));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        for (wait, step) in waits.iter().zip([1, 2, 4, 8, 8, 8]) {
            let step = Duration::from_secs(step);
            assert!(
                *wait >= step / 2 && *wait <= step,
                "{wait:?} for a step of {step:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= INITIAL);
        let mut small = Backoff::new(Duration::from_millis(100));
        assert!(small.next_wait() <= Duration::from_millis(100));
    }
}
