//! The model's rules of failed attempts: what each failure costs its task and its worker,
//! and lost map outputs.

use std::time::Instant;

use super::model::{Expect, Model, Running};
use super::*;

/// What a failed attempt costs its task, as the module docs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charge {
    Budget,
    Loss,
    Free,
}

impl Model {
    /// What `reason` costs `task`: a lost map output is free if it was an output the map
    /// accepted (now or before), and then only for a reduce.
    pub(super) fn charge(&self, task: TaskId, reason: &Failure) -> Charge {
        match reason {
            Failure::TimedOut | Failure::Task(_) => Charge::Budget,
            Failure::Unreachable(_) => Charge::Loss,
            Failure::Busy(_) | Failure::Draining(_) => Charge::Free,
            Failure::Refused(_) => unreachable!("the model's workers run every job"),
            Failure::MapOutputLost { map: m, attempt, .. } => {
                let now = self.accepted_by.get(&map(*m)) == Some(attempt);
                let known = now || self.forgotten.contains(&(*m, *attempt));
                if task.kind == TaskKind::Reduce && known { Charge::Free } else { Charge::Budget }
            }
        }
    }

    /// An attempt failed: the worker's counts and where it goes, a lost map output, then
    /// the task's charge.
    pub(super) fn on_failed(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        run: Running,
        reason: &Failure,
        expect: &mut Expect,
    ) {
        let (task, worker) = (run.task, run.worker);
        let charge = self.charge(task, reason);
        let last = AttemptFailure { attempt, worker, reason: reason.clone() };
        match reason {
            Failure::TimedOut => {
                self.counts.timed_out += 1;
                self.workers[worker.0 as usize].timeouts += 1;
                self.workers[worker.0 as usize].stats.timed_out += 1;
            }
            Failure::Unreachable(_) => {
                self.last_unreachable = Some(WorkerFailure { worker, reason: reason.clone() });
                self.counts.lost += 1;
                self.workers[worker.0 as usize].stats.lost += 1;
                self.rest_unreachable(now, worker);
            }
            Failure::Task(_) | Failure::MapOutputLost { .. } => {
                self.counts.failed += 1;
                self.workers[worker.0 as usize].stats.failed += 1;
                self.answered(worker);
            }
            Failure::Busy(_) => {
                self.counts.busy += 1;
                self.answered(worker);
                let c = &self.config;
                let m = &mut self.workers[worker.0 as usize];
                m.wake = Some(now + backoff(m.busy, c.retry_base, c.retry_cap));
                m.busy += 1;
            }
            // Draining is a scenario of `rules_membership`, not one the model generates.
            Failure::Draining(_) => unreachable!("the model's workers do not drain"),
            // Refusal is a scenario of `rules_failures`, not one the model generates.
            Failure::Refused(_) => unreachable!("the model's workers run every job"),
        }
        if charge == Charge::Budget {
            let c = &self.config;
            let m = &mut self.workers[worker.0 as usize];
            m.failures += 1;
            if c.probation_after > 0 && m.failures >= c.probation_after {
                let cap = c.retry_cap.saturating_mul(8).max(c.probation_base);
                m.wake = Some(now + backoff(m.probations, c.probation_base, cap));
                m.needs_probe = true;
                m.probations += 1;
                m.stats.probations += 1;
                m.failures = 0;
                self.probations += 1;
            } else if matches!(reason, Failure::TimedOut) {
                m.needs_probe = true;
            }
        }
        if let (Failure::MapOutputLost { map: m, attempt: lost, .. }, Charge::Free) = (reason, charge)
            && self.accepted_by.get(&map(*m)) == Some(lost)
            && self.forget(*m, *lost, &last, expect)
        {
            return;
        }
        if self.accepted.contains_key(&task) {
            return;
        }
        if charge == Charge::Budget {
            self.failed_on.entry(task).or_default().insert(worker);
        }
        match charge {
            Charge::Budget => *self.failures.entry(task).or_default() += 1,
            Charge::Loss => *self.lost.entry(task).or_default() += 1,
            Charge::Free => {}
        }
        let failures = self.failures.get(&task).copied().unwrap_or(0);
        let lost = self.lost.get(&task).copied().unwrap_or(0);
        let max = self.config.max_attempts;
        assert!(failures <= max && lost <= 4 * max, "{task} past its budget");
        if failures >= max || lost >= 4 * max {
            let (input, attempts) = (self.input(task), self.tally(task));
            expect.job_fails = Some(JobError::TaskFailed { task, input, attempts, last });
        } else if self.attempts_of(task).is_empty() {
            self.backed_up.remove(&task);
            self.todo.push_front(task);
        }
    }

    /// Map `m`'s accepted output, of attempt `lost`, is lost: it is TODO again (RUNNING if
    /// attempts of it run), or the job fails if that happened `4 × max_attempts` times.
    /// Returns whether the job fails.
    fn forget(&mut self, m: u32, lost: AttemptId, last: &AttemptFailure, expect: &mut Expect) -> bool {
        let task = map(m);
        self.accepted.remove(&task);
        self.accepted_by.remove(&task);
        self.forgotten.insert((m, lost));
        self.map_outputs_lost += 1;
        let n = self.outputs_lost.entry(task).or_default();
        *n += 1;
        let max = self.config.max_attempts;
        assert!(*n <= 4 * max, "{task} lost past its limit");
        if *n >= 4 * max {
            let (input, attempts, last) = (self.input(task), self.tally(task), last.clone());
            expect.job_fails = Some(JobError::TaskFailed { task, input, attempts, last });
            return true;
        }
        if self.attempts_of(task).is_empty() {
            self.backed_up.remove(&task);
            self.todo.push_front(task);
        } else {
            assert!(self.backed_up.contains(&task), "{task} ran twice without a backup");
        }
        false
    }
}
