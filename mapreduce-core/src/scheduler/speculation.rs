//! Speculation: which running task deserves a backup attempt, and from when.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use super::{SchedulerConfig, TaskId, TaskKind};

/// The speculation queue and what its threshold is made of.
#[derive(Debug, Default)]
pub(super) struct Speculation {
    /// Tasks with a single running attempt and no backup yet, by that attempt's start:
    /// the oldest first.
    queue: BTreeSet<(Instant, TaskId)>,
    /// Durations of the phase's finished tasks.
    durations: Median,
    /// Backup attempts running.
    backups: u32,
}

impl Speculation {
    /// Moves `task` in the queue from `before` to `after` (`None`: not queued).
    pub(super) fn requeue(&mut self, task: TaskId, before: Option<Instant>, after: Option<Instant>) {
        if before == after {
            return;
        }
        if let Some(start) = before {
            self.queue.remove(&(start, task));
        }
        if let Some(start) = after {
            self.queue.insert((start, task));
        }
    }

    /// A task of the phase finished after `took`.
    pub(super) fn finished(&mut self, took: Duration) {
        self.durations.push(took);
    }

    /// A new phase starts: its tasks are timed afresh.
    pub(super) fn new_phase(&mut self) {
        self.durations = Median::default();
    }

    pub(super) fn backup_started(&mut self) {
        self.backups += 1;
    }

    pub(super) fn backup_ended(&mut self) {
        self.backups -= 1;
    }

    /// The oldest queued task (only map tasks if `maps_only`: a reduce may not start while
    /// a map is not DONE) and the moment it becomes eligible for a backup: once it has run
    /// `max(speculation_min, speculation_factor × median)`. `None` while speculation is
    /// off, `max_backups` backups run, or no task of the phase has finished.
    pub(super) fn next(&self, c: &SchedulerConfig, maps_only: bool) -> Option<(Instant, TaskId)> {
        if !c.speculation || self.backups >= c.max_backups {
            return None;
        }
        let median = self.durations.median()?;
        let &(start, task) = self.queue.iter().find(|(_, t)| !maps_only || t.kind == TaskKind::Map)?;
        // An infinite factor never makes a task slow enough.
        let scaled = Duration::try_from_secs_f64(median.as_secs_f64() * c.speculation_factor).ok()?;
        Some((start.checked_add(scaled.max(c.speculation_min))?, task))
    }

    /// The task that deserves a backup at `now`, if any.
    pub(super) fn candidate(&self, now: Instant, c: &SchedulerConfig, maps_only: bool) -> Option<TaskId> {
        self.next(c, maps_only).filter(|(at, _)| *at <= now).map(|(_, task)| task)
    }
}

/// A running median: the element at index `len / 2` of the sorted durations, kept as the
/// smaller half (a max-heap) and the larger half (a min-heap, one longer when `len` is odd).
#[derive(Debug, Default)]
struct Median {
    lower: BinaryHeap<Duration>,
    upper: BinaryHeap<Reverse<Duration>>,
}

impl Median {
    fn push(&mut self, d: Duration) {
        match self.upper.peek() {
            Some(Reverse(min)) if d >= *min => self.upper.push(Reverse(d)),
            _ => self.lower.push(d),
        }
        if self.lower.len() > self.upper.len() {
            let max = self.lower.pop().expect("the larger heap is not empty");
            self.upper.push(Reverse(max));
        } else if self.upper.len() > self.lower.len() + 1 {
            let Reverse(min) = self.upper.pop().expect("the larger heap is not empty");
            self.lower.push(min);
        }
    }

    fn median(&self) -> Option<Duration> {
        self.upper.peek().map(|Reverse(d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_median_is_the_middle_of_the_sorted_durations() {
        let mut median = Median::default();
        assert_eq!(median.median(), None);
        let mut seen = Vec::new();
        let mut x = 7u64;
        for _ in 0..200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let d = Duration::from_millis(x >> 54);
            median.push(d);
            seen.push(d);
            seen.sort_unstable();
            assert_eq!(median.median(), Some(seen[seen.len() / 2]), "{seen:?}");
        }
    }
}
