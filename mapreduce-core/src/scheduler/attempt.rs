//! Attempts: giving a worker a task, and hearing how the attempt ended.

use std::time::Instant;

use super::task::{MapOutput, Tally, Tasks};
use super::worker::WorkerState;
use super::{
    Action, AttemptFailure, AttemptId, Failure, JobError, Phase, Scheduler, TaskId, TaskKind, TaskOutput, TaskSpec,
    WorkerFailure, WorkerId, backoff,
};

/// A running attempt.
#[derive(Debug)]
pub(super) struct Attempt {
    task: TaskId,
    worker: WorkerId,
    /// Whether it is a backup of a task that already ran.
    backup: bool,
    /// When it started.
    started: Instant,
}

/// What a failed attempt costs its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charge {
    /// Its own failure: counts against `max_attempts`, and it avoids the worker.
    Budget,
    /// Lost with an unreachable worker: counts against `4 × max_attempts`.
    Loss,
    /// Nothing: a busy or draining worker, or a map output lost under a reduce.
    Free,
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
        self.attempts.insert(attempt, Attempt { task, worker: w, backup, started: now });
        self.workers.set(w, WorkerState::Busy);
        self.report.attempts.launched += 1;
        if task.kind == TaskKind::Map && self.phase == Phase::Reduce {
            self.report.attempts.map_reruns += 1;
        }
        self.workers.get_mut(w).stats.launched += 1;
        if backup {
            self.speculation.backup_started();
            self.report.attempts.speculative += 1;
        }
        let deadline = self.deadline(w);
        tracing::debug!(%task, %attempt, worker = %w, backup, "launch");
        Action::Run { worker: w, attempt, task, spec, deadline }
    }

    /// The first TODO task that worker `w` may run: one that may start now (no reduce
    /// while a map is not DONE) and that has not failed on `w`, or that no other worker
    /// can take now (each failed it, is unreachable, or rests), as Hadoop avoids rerunning
    /// a task on the node where it failed. One misconfigured worker thus cannot use up a
    /// task's attempts alone.
    pub(super) fn take_todo(&mut self, w: WorkerId) -> Option<TaskId> {
        let usable_elsewhere = |t: TaskId| {
            let other = |(id, other): (WorkerId, &super::worker::Worker)| {
                id != w && !self.tasks.failed_on(t, id) && other.unreachable == 0 && !other.rests()
            };
            self.workers.iter().any(other)
        };
        let may = |t: TaskId| self.tasks.launchable(t) && (!self.tasks.failed_on(t, w) || !usable_elsewhere(t));
        if self.tasks.launchable_todo() == 0 {
            return None;
        }
        let i = self.tasks.todo.iter().position(may)?;
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
        worker.busy = 0;
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
        // A map re-run in the reduce phase is not one of the phase's tasks.
        if (task.kind == TaskKind::Map) == (self.phase == Phase::Map) {
            self.speculation.finished(now.saturating_duration_since(stopped.started));
        }
        match (task.kind, output) {
            (TaskKind::Map, TaskOutput::Map { location, ranges, skipped_records, counters, .. }) => {
                let bytes = ranges.iter().map(|r| r.bytes).fold(0, u64::saturating_add);
                self.map_sizes[task.index as usize] = (bytes, skipped_records);
                self.task_counters[task.index as usize] = counters;
                let holder = self.outputs_on_workers.then_some(a.worker);
                if let Some(h) = holder {
                    self.workers.get_mut(h).held.push(task.index);
                }
                let output = MapOutput::new(attempt, location, &ranges, holder);
                let done = self.change_task(task, |t| t.accept_map(task.index, output));
                if self.tasks.reduces.len() == 0 {
                    // A map-only job: the map's output is the job's.
                    self.report.output_records += ranges.iter().map(|r| r.records).sum::<u64>();
                }
                if done && self.phase == Phase::Map {
                    self.start_reduce(Some(now));
                }
                if self.workers.get(a.worker).left {
                    // It left with the call in flight: what it holds is gone.
                    self.lose_outputs_of(a.worker, "the worker left");
                }
            }
            (TaskKind::Reduce, TaskOutput::Reduce { path, records, counters, .. }) => {
                self.report.output_records += records;
                self.task_counters[self.tasks.maps.len() as usize + task.index as usize] = counters;
                if self.change_task(task, |t| t.reduces.accept(task.index, path)) {
                    let outputs = self.tasks.reduces.outputs().cloned().collect();
                    self.succeed(Some(now), outputs);
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
        if let Failure::Refused(_) = reason {
            self.report.attempts.failed += 1;
            self.workers.get_mut(w).stats.failed += 1;
            self.answered(w);
            self.finish(Err(JobError::Refused { task, last: AttemptFailure { attempt, worker: w, reason } }));
            return;
        }
        let charge = self.charge_of(task, &reason);
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
            Failure::Task(_) | Failure::MapOutputLost { .. } => {
                worker.stats.failed += 1;
                self.report.attempts.failed += 1;
                self.answered(w);
            }
            Failure::Busy(_) => {
                self.report.attempts.busy += 1;
                self.answered(w);
            }
            Failure::Refused(_) => unreachable!("handled above"),
            Failure::Draining(_) => self.answered(w),
        }
        // Where the worker goes next.
        match (&reason, charge) {
            (Failure::Unreachable(_), _) => self.rest_unreachable(now, w),
            (Failure::Draining(_), _) => {
                self.leave(now, w, true);
                self.workers.make_ready(w, WorkerState::Ready);
            }
            (Failure::Busy(_), _) => self.rest_busy(now, w),
            (_, Charge::Free) => self.workers.make_ready(w, WorkerState::Ready),
            _ => self.after_failure(now, w, &reason),
        }
        if let (Failure::MapOutputLost { map, attempt: lost, holder_gone, .. }, Charge::Free) = (&reason, charge) {
            let failure = AttemptFailure { attempt, worker: w, reason: reason.clone() };
            // A holder gone for the job (unreachable, or restarted) takes all it holds:
            // reduce after reduce would otherwise find its outputs lost one at a time.
            let holder = self.tasks.maps.output(*map).filter(|m| m.attempt == *lost).and_then(|m| m.holder);
            match holder.filter(|_| *holder_gone) {
                Some(h) => {
                    tracing::warn!(worker = %h, "a reduce found this worker gone: the map outputs it holds are lost");
                    self.lose_outputs_of(h, "a reduce found the worker gone (unreachable, or restarted)");
                    if self.phase == Phase::Done {
                        return;
                    }
                }
                None => {
                    if self.lose_map_output(*map, *lost, failure) {
                        return;
                    }
                }
            }
        }

        let Some(stopped) = self.change_task(task, |tasks| tasks.stop(task, attempt)) else {
            return;
        };
        let tally = match charge {
            Charge::Budget => self.tasks.charge(task, w, true),
            Charge::Loss => self.tasks.charge(task, w, false),
            Charge::Free => self.tasks.tally(task),
        };
        let max = self.config.max_attempts;
        if tally.failures >= max || tally.lost >= max.saturating_mul(4) {
            self.fail_job(task, tally, AttemptFailure { attempt, worker: w, reason });
        } else if stopped.todo {
            self.tasks.todo.push_front(task);
        }
    }

    /// What `reason` costs `task`. A reduce's report of a lost map output is free if it
    /// names an output that map task accepted (now or before it was lost); any other such
    /// report (from a map, or naming an output never accepted) is the task's own failure.
    fn charge_of(&self, task: TaskId, reason: &Failure) -> Charge {
        match reason {
            Failure::TimedOut | Failure::Task(_) => Charge::Budget,
            Failure::Unreachable(_) => Charge::Loss,
            Failure::Busy(_) | Failure::Draining(_) | Failure::Refused(_) => Charge::Free,
            Failure::MapOutputLost { map, attempt, .. } => {
                let accepted = self.tasks.maps.output(*map).is_some_and(|m| m.attempt == *attempt);
                let known = accepted || self.lost_outputs.contains(&(*map, *attempt));
                if task.kind == TaskKind::Reduce && known { Charge::Free } else { Charge::Budget }
            }
        }
    }

    /// A reduce could not read the output of attempt `lost` of map `map`: if it is still
    /// the map's accepted output, the map is forgotten and runs again (with the attempts
    /// of it that still run, if any), unless its outputs were lost `4 × max_attempts`
    /// times: then the job fails, and this returns true. A report about an output already
    /// forgotten changes nothing.
    pub(super) fn lose_map_output(&mut self, map: u32, lost: AttemptId, failure: AttemptFailure) -> bool {
        if self.tasks.maps.output(map).is_none_or(|m| m.attempt != lost) {
            tracing::debug!(map, attempt = %lost, "output already forgotten");
            return false;
        }
        let task = TaskId { kind: TaskKind::Map, index: map };
        let mut losers: Vec<(AttemptId, Instant)> =
            self.attempts.iter().filter(|(_, a)| a.task == task).map(|(&id, a)| (id, a.started)).collect();
        losers.sort_unstable_by_key(|&(id, started)| (started, id));
        let todo = losers.is_empty();
        let tally = self.change_task(task, |t| t.maps.forget(map, losers));
        self.lost_outputs.insert((map, lost));
        self.report.map_outputs_lost += 1;
        tracing::warn!(%task, attempt = %lost, "map output lost; the map runs again");
        if tally.outputs_lost >= self.config.max_attempts.saturating_mul(4) {
            self.fail_job(task, tally, failure);
            return true;
        }
        if todo {
            self.tasks.todo.push_front(task);
        }
        false
    }

    /// The job fails: `task` failed too often, last with `last`.
    fn fail_job(&mut self, task: TaskId, tally: Tally, last: AttemptFailure) {
        let input = self.describe_input(task);
        self.finish(Err(JobError::TaskFailed { task, input, attempts: tally.total(), last }));
    }

    /// `w` answered Busy: it rests `retry_base × 2^k` after `k` Busy answers since its last
    /// success, capped at `retry_cap`, and is then ready (it answered: no probe).
    fn rest_busy(&mut self, now: Instant, w: WorkerId) {
        let worker = self.workers.get_mut(w);
        let delay = backoff(worker.busy, self.config.retry_base, self.config.retry_cap);
        worker.busy = worker.busy.saturating_add(1);
        self.rest(w, now + delay, false);
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
            self.rest(w, now + period, true);
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
