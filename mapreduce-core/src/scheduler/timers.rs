//! The timer table: every moment at which the scheduler may have something new to do
//! without an event. [`Timers::next`] is `poll_timeout`.

use std::collections::BTreeSet;
use std::time::Instant;

use super::WorkerId;

/// The scheduler's timers.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Resting workers by the end of their rest, when they may be probed.
    rests: BTreeSet<(Instant, WorkerId)>,
    /// Silent workers by the moment they are declared dead (`dead_after` after they fell
    /// silent), while map outputs stay on workers.
    pub(super) deaths: BTreeSet<(Instant, WorkerId)>,
    /// When the job gives up, set while every worker is silent: `no_worker_timeout` after
    /// the last one fell silent.
    pub(super) no_workers: Option<Instant>,
    /// When the oldest running task becomes eligible for a backup, set while a worker in
    /// an idle Wait could take it.
    pub(super) backup: Option<Instant>,
}

impl Timers {
    /// The next moment to drain `poll_action` again.
    pub(super) fn next(&self) -> Option<Instant> {
        let rest = self.rests.first().map(|(t, _)| *t);
        let death = self.deaths.first().map(|(t, _)| *t);
        [rest, death, self.no_workers, self.backup].into_iter().flatten().min()
    }

    /// `w` rests until `until`.
    pub(super) fn rest(&mut self, w: WorkerId, until: Instant) {
        self.rests.insert((until, w));
    }

    /// A worker whose rest is over at `now`, taken off the table.
    pub(super) fn rested(&mut self, now: Instant) -> Option<WorkerId> {
        if self.rests.first()?.0 > now {
            return None;
        }
        self.rests.pop_first().map(|(_, w)| w)
    }

    /// A worker declared dead at `now`, taken off the table.
    pub(super) fn dead(&mut self, now: Instant) -> Option<WorkerId> {
        if self.deaths.first()?.0 > now {
            return None;
        }
        self.deaths.pop_first().map(|(_, w)| w)
    }

    /// Stops every timer: the job is over.
    pub(super) fn clear(&mut self) {
        *self = Timers::default();
    }
}
