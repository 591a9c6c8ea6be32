//! The scheduling knobs, their checks, and the backoff arithmetic.

use std::time::Duration;

/// Scheduling knobs. Plain data: build with `..Default::default()`, then
/// [`SchedulerConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Deadline of a task attempt on a worker that has missed none.
    pub task_timeout: Duration,
    /// Cap of a worker's doubled deadline.
    pub max_task_timeout: Duration,
    /// Attempts a task may fail (by error or deadline) before the job fails.
    pub max_attempts: u32,
    /// How long an idle worker waits before asking again.
    pub idle_wait: Duration,
    /// First retry delay of an unreachable worker.
    pub retry_base: Duration,
    /// Cap of the retry delay.
    pub retry_cap: Duration,
    /// The job fails when every worker is unreachable and none has answered for this long
    /// since the last one fell silent.
    pub no_worker_timeout: Duration,
    /// When map outputs stay on workers: a worker silent this long since it fell silent
    /// (every call to it failing since) is declared dead, and its map outputs are lost.
    pub dead_after: Duration,
    /// Consecutive failed attempts after which a worker is put on probation (0: never).
    pub probation_after: u32,
    /// First probation period.
    pub probation_base: Duration,
    /// Whether idle workers run backup attempts of slow tasks.
    pub speculation: bool,
    /// A task is slow once it has run this many times the phase's median task duration.
    pub speculation_factor: f64,
    /// ...and at least this long.
    pub speculation_min: Duration,
    /// Backup attempts running at once, at most.
    pub max_backups: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            task_timeout: Duration::from_secs(60),
            max_task_timeout: Duration::from_secs(600),
            max_attempts: 4,
            idle_wait: Duration::from_millis(50),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(5),
            no_worker_timeout: Duration::from_secs(60),
            dead_after: Duration::from_secs(10),
            probation_after: 3,
            probation_base: Duration::from_secs(1),
            speculation: true,
            speculation_factor: 2.0,
            speculation_min: Duration::from_millis(500),
            max_backups: 2,
        }
    }
}

/// A [`SchedulerConfig`] or [`JobPlan`](super::JobPlan) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// `max_attempts` is zero.
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
    /// `idle_wait` exceeds [`MAX_IDLE_WAIT`], the longest Wait a worker serves.
    #[error("idle_wait of {0:?} exceeds the 60 s a worker waits at most")]
    IdleWaitTooLong(Duration),
    /// `speculation_factor` is below 1 or not a number.
    #[error("speculation_factor must be at least 1")]
    BadSpeculationFactor,
    /// A duration exceeds [`MAX_DURATION`] (past it, deadlines would overflow).
    #[error("{0} exceeds a year")]
    DurationTooLong(&'static str),
    /// The plan has more map tasks, reducers or workers than a scheduler keeps.
    #[error("{n} {what} is more than the maximum of {max}")]
    TooMany {
        /// `map tasks`, `reducers` or `workers`.
        what: &'static str,
        /// How many the plan has.
        n: u64,
        /// The most there may be: `u32::MAX`, [`MAX_REDUCERS`](crate::job::MAX_REDUCERS)
        /// or [`MAX_WORKERS`].
        max: u64,
    },
}

impl SchedulerConfig {
    /// Checks that every knob makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("task_timeout", self.task_timeout),
            ("max_task_timeout", self.max_task_timeout),
            ("retry_base", self.retry_base),
            ("retry_cap", self.retry_cap),
            ("no_worker_timeout", self.no_worker_timeout),
            ("dead_after", self.dead_after),
            ("probation_base", self.probation_base),
            ("idle_wait", self.idle_wait),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
            if d > MAX_DURATION {
                return Err(ConfigError::DurationTooLong(name));
            }
        }
        if self.speculation_min > MAX_DURATION {
            return Err(ConfigError::DurationTooLong("speculation_min"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        if self.idle_wait > MAX_IDLE_WAIT {
            return Err(ConfigError::IdleWaitTooLong(self.idle_wait));
        }
        if self.speculation_factor.is_nan() || self.speculation_factor < 1.0 {
            return Err(ConfigError::BadSpeculationFactor);
        }
        Ok(())
    }
}

/// The longest Wait a worker serves, and so the longest `idle_wait`.
pub const MAX_IDLE_WAIT: Duration = Duration::from_secs(60);

/// The longest any duration knob may be: a year, so that `now` plus any deadline, rest
/// or probation (at most 8 × `retry_cap`) is a valid `Instant`.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The most workers a plan may have.
pub const MAX_WORKERS: u32 = 1 << 16;

/// `base × 2^k`, capped at `cap` (and at `cap` for any `k` large enough to overflow).
pub fn backoff(k: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(k.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(cap, |d| d.min(cap))
}
