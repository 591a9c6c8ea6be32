//! Workers that join, leave or die, and the map outputs they hold.
//!
//! When map outputs stay on the workers that wrote them ([`JobPlan::outputs_on_workers`]),
//! a worker that leaves ([`Event::WorkerLeft`]) or is declared dead (silent for
//! [`SchedulerConfig::dead_after`](super::SchedulerConfig::dead_after)) takes its
//! accepted map outputs with it: each such map is TODO again, as after a
//! [`Failure::MapOutputLost`]. On a shared filesystem outputs outlive their workers, and
//! neither changes a task.

use std::time::Instant;

use super::worker::WorkerState;
use super::{AttemptFailure, Failure, MAX_WORKERS, Phase, Scheduler, WorkerId};

#[cfg(doc)]
use super::{Event, JobPlan};

impl Scheduler {
    /// A new worker joins the running job: it is ready at once (the next
    /// [`Self::poll_action`] may give it a task) and gets the next id in order, the
    /// number of workers before it (the plan's first `workers` are `0..workers`). `None`
    /// once the job is over, or at [`MAX_WORKERS`]: the worker is then not used.
    pub fn add_worker(&mut self, now: Instant) -> Option<WorkerId> {
        self.start_clock(now);
        if self.phase == Phase::Done || self.workers.len() >= MAX_WORKERS {
            return None;
        }
        let w = self.workers.add();
        // A worker that may answer: the job no longer waits for a silent cluster to end.
        self.timers.no_workers = None;
        tracing::info!(worker = %w, "worker joined");
        Some(w)
    }

    /// `w` leaves the job: it is never called again once its call in flight (if any)
    /// ends, counts as silent for good, and its map outputs are lost at once, unless it
    /// drains (`drains`): then they stay readable until the job ends (a reduce that cannot
    /// read one reports it lost, as for any worker).
    pub(super) fn leave(&mut self, now: Instant, w: WorkerId, drains: bool) {
        if w.0 >= self.workers.len() || self.workers.get(w).left {
            tracing::debug!(worker = %w, "ignoring the departure of an unknown or departed worker");
            return;
        }
        tracing::info!(worker = %w, drains, "worker left");
        if self.workers.get(w).unreachable == 0 {
            let (_, last) = self.workers.fell_silent(now, w);
            if last {
                self.timers.no_workers = Some(now + self.config.no_worker_timeout);
            }
        }
        if let Some(since) = self.workers.get(w).silent_since {
            self.timers.deaths.remove(&(since + self.config.dead_after, w));
        }
        self.workers.get_mut(w).left = true;
        let state = self.workers.get(w).state();
        if matches!(
            state,
            WorkerState::Ready | WorkerState::NeedsProbe | WorkerState::IdleWait(_) | WorkerState::Resting { .. }
        ) {
            // No call in flight that must end first (an idle Wait's answer is ignored).
            self.workers.set(w, WorkerState::Left);
        }
        if drains {
            self.workers.get_mut(w).stats.drained = true;
        } else {
            self.lose_outputs_of(w, "the worker left");
        }
    }

    /// `w` has been silent for `dead_after`: it is declared dead and its map outputs are
    /// lost. It is still retried, and used again if it answers.
    pub(super) fn declare_dead(&mut self, w: WorkerId) {
        tracing::warn!(worker = %w, after = ?self.config.dead_after, "worker declared dead");
        self.lose_outputs_of(w, "the worker was declared dead");
    }

    /// Every DONE map whose accepted output `w` holds is TODO again (RUNNING, if backups
    /// of it run), unless the job is over. Without outputs on workers, nothing changes.
    pub(super) fn lose_outputs_of(&mut self, w: WorkerId, why: &str) {
        if !self.outputs_on_workers {
            return;
        }
        for map in std::mem::take(&mut self.workers.get_mut(w).held) {
            if self.phase == Phase::Done {
                return;
            }
            let Some(output) = self.tasks.maps.output(map).filter(|m| m.holder == Some(w)) else {
                continue;
            };
            let attempt = output.attempt;
            let failure = AttemptFailure { attempt, worker: w, reason: Failure::Unreachable(why.to_string()) };
            if self.lose_map_output(map, attempt, failure) {
                return;
            }
        }
    }
}
