//! Attempts: giving a worker a task, and hearing how the attempt ended.

use std::time::Instant;

use super::task::{MapOutput, Tasks};
use super::worker::WorkerState;
use super::{
    Action, AttemptFailure, AttemptId, Failure, JobError, Scheduler, TaskId, TaskKind, TaskOutput, TaskSpec,
    WorkerFailure, WorkerId, backoff,
};

/// A running attempt.
#[derive(Debug)]
pub(super) struct Attempt {
    task: TaskId,
    worker: WorkerId,
    /// Whether it is a backup of a task that already ran.
    backup: bool,
}

impl Scheduler {
    /// Changes the state of `task` with `change`, keeping its place in the speculation
    /// queue. Every change of a task's state goes through here.
    fn change_task<R>(&mut self, task: TaskId, change: impl FnOnce(&mut Tasks) -> R) -> R {
        let before = self.tasks.queue_key(task);
        let r = change(&mut self.tasks);
        self.speculation.requeue(task, before, self.tasks.queue_key(task));
        r
    }

    /// Starts an attempt of `task` on `w`.
    pub(super) fn launch(&mut self, now: Instant, w: WorkerId, task: TaskId, backup: bool) -> Action {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let spec = match task.kind {
            TaskKind::Map => TaskSpec::Map { shard: self.shards[task.index as usize].clone() },
            TaskKind::Reduce => {
                TaskSpec::Reduce { partition: task.index, inputs: self.tasks.reduce_inputs(task.index) }
            }
        };
        self.change_task(task, |tasks| tasks.start(task, attempt, now, backup));
        self.attempts.insert(attempt, Attempt { task, worker: w, backup });
        self.workers.set(w, WorkerState::Busy);
        self.report.attempts.launched += 1;
        self.workers.get_mut(w).stats.launched += 1;
        if backup {
            self.speculation.backup_started();
            self.report.attempts.speculative += 1;
        }
        let deadline = self.deadline(w);
        tracing::debug!(%task, %attempt, worker = %w, backup, "launch");
        Action::Run { worker: w, attempt, task, spec, deadline }
    }

    /// The first TODO task that worker `w` may run: one that has not failed on `w`, or
    /// that no other worker can take now (each failed it, is unreachable, or rests after
    /// an unreachable call or on probation), as Hadoop avoids rerunning a task on the node
    /// where it failed. One misconfigured worker thus cannot use up a task's attempts alone.
    pub(super) fn take_todo(&mut self, w: WorkerId) -> Option<TaskId> {
        let usable_elsewhere = |t: TaskId| {
            let other = |(id, other): (WorkerId, &super::worker::Worker)| {
                id != w && !self.tasks.failed_on(t, id) && other.unreachable == 0 && !other.rests()
            };
            self.workers.iter().any(other)
        };
        let i = self.tasks.todo.iter().position(|&t| !self.tasks.failed_on(t, w) || !usable_elsewhere(t))?;
        self.tasks.todo.remove(i)
    }

    /// Removes `attempt` from the running attempts, and frees its worker from backing up.
    fn end(&mut self, attempt: AttemptId) -> Option<Attempt> {
        let a = self.attempts.remove(&attempt)?;
        if a.backup {
            self.speculation.backup_ended();
        }
        Some(a)
    }

    pub(super) fn on_success(&mut self, now: Instant, attempt: AttemptId, output: TaskOutput) {
        let Some(a) = self.end(attempt) else {
            tracing::debug!(%attempt, "ignoring success of an attempt not running");
            self.actions.push_back(Action::Discard(output));
            return;
        };
        let worker = self.workers.get_mut(a.worker);
        worker.timeouts = 0;
        worker.failures = 0;
        self.answered(a.worker);
        self.workers.make_ready(a.worker, WorkerState::Ready);
        self.report.attempts.succeeded += 1;

        let task = a.task;
        let Some(stopped) = self.change_task(task, |tasks| tasks.stop(task, attempt)) else {
            tracing::debug!(%task, %attempt, "late success of a done task; discarded");
            self.actions.push_back(Action::Discard(output));
            return;
        };
        if a.backup {
            self.report.attempts.speculative_won += 1;
        }
        self.workers.get_mut(a.worker).stats.accepted += 1;
        self.speculation.finished(now.saturating_duration_since(stopped.started));
        match (task.kind, output) {
            (TaskKind::Map, TaskOutput::Map { location, ranges, .. }) => {
                self.report.intermediate_bytes += ranges.iter().map(|r| r.bytes).sum::<u64>();
                let done = self.change_task(task, |t| t.maps.accept(task.index, MapOutput { location, ranges }));
                if done {
                    self.start_reduce();
                }
            }
            (TaskKind::Reduce, TaskOutput::Reduce { path, records, .. }) => {
                self.report.output_records += records;
                if self.change_task(task, |t| t.reduces.accept(task.index, path)) {
                    self.succeed(now);
                }
            }
            (_, output) => panic!("{attempt} of {task} answered with the output of another kind of task: {output:?}"),
        }
    }

    pub(super) fn on_failure(&mut self, now: Instant, attempt: AttemptId, reason: Failure) {
        let Some(a) = self.end(attempt) else {
            tracing::debug!(%attempt, "ignoring failure of an attempt not running");
            return;
        };
        let (task, w) = (a.task, a.worker);
        tracing::warn!(%task, %attempt, worker = %w, %reason, "attempt failed");
        let worker = self.workers.get_mut(w);
        match &reason {
            Failure::TimedOut => {
                worker.stats.timed_out += 1;
                worker.timeouts = worker.timeouts.saturating_add(1);
                self.report.attempts.timed_out += 1;
            }
            Failure::Unreachable(_) => {
                worker.stats.lost += 1;
                self.report.attempts.lost += 1;
                self.last_unreachable = Some(WorkerFailure { worker: w, reason: reason.clone() });
            }
            Failure::Task(_) => {
                worker.stats.failed += 1;
                self.report.attempts.failed += 1;
                self.answered(w);
            }
        }
        // Where the worker goes next.
        let counts = !matches!(reason, Failure::Unreachable(_));
        if counts {
            self.after_failure(now, w, &reason);
        } else {
            self.rest_unreachable(now, w);
        }

        let Some(stopped) = self.change_task(task, |tasks| tasks.stop(task, attempt)) else {
            return;
        };
        let (failures, lost) = self.tasks.charge(task, w, counts);
        let max = self.config.max_attempts;
        if failures >= max || lost >= max.saturating_mul(4) {
            let (input, last) = (self.describe_input(task), AttemptFailure { attempt, worker: w, reason });
            self.finish(Err(JobError::TaskFailed { task, input, attempts: failures + lost, last }));
        } else if stopped.todo {
            self.tasks.todo.push_front(task);
        }
    }

    /// After a failure of its own (an error or a missed deadline), `w` goes on probation
    /// if it failed `probation_after` times in a row, else it is ready again (probed first
    /// after a missed deadline).
    fn after_failure(&mut self, now: Instant, w: WorkerId, reason: &Failure) {
        let c = &self.config;
        let worker = self.workers.get_mut(w);
        worker.failures += 1;
        if c.probation_after > 0 && worker.failures >= c.probation_after {
            let cap = c.retry_cap.saturating_mul(8).max(c.probation_base);
            let period = backoff(worker.probations, c.probation_base, cap);
            worker.probations += 1;
            worker.stats.probations += 1;
            worker.failures = 0;
            self.report.probations += 1;
            tracing::warn!(worker = %w, ?period, "worker on probation after repeated failures");
            self.rest(w, now + period);
        } else if matches!(reason, Failure::TimedOut) {
            self.workers.make_ready(w, WorkerState::NeedsProbe);
        } else {
            self.workers.make_ready(w, WorkerState::Ready);
        }
    }

    /// What `task` reads, to name it in an error.
    fn describe_input(&self, task: TaskId) -> String {
        match task.kind {
            TaskKind::Map => self.shards[task.index as usize].to_string(),
            TaskKind::Reduce => format!("partition {} of {} map outputs", task.index, self.tasks.maps.len()),
        }
    }
}
