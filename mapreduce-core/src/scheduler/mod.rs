//! The pure scheduler: which worker runs which task attempt, and when.
//!
//! It is a sans-IO state machine in the style of `quinn-proto`: it never sleeps, spawns,
//! reads a clock or touches a socket. The runtime tells it what happened and drains what
//! to do next:
//!
//! 1. [`Scheduler::new`] with the [`JobPlan`]; every worker starts ready (more may join
//!    later: [`Scheduler::add_worker`]).
//! 2. Drain [`Scheduler::poll_action`] until `None`, doing each [`Action`]: start an RPC
//!    under the given deadline, cut a worker's idle Wait short ([`Action::Wake`]), delete
//!    a discarded output, or stop at [`Action::Finished`].
//! 3. When an RPC ends, feed [`Scheduler::handle_event`]; when [`Scheduler::poll_timeout`]
//!    passes, just drain again. Go to 2.
//!
//! `now` must never go backwards between calls. Every reply names its call: an attempt by
//! its [`AttemptId`], a Wait by its [`WaitId`]. Replies to calls that are no longer
//! current are ignored: a late reply of an attempt that already timed out, the answer of a
//! Wait that was woken, a second answer. A success for a task that is already DONE (or
//! after the job ended) is answered with [`Action::Discard`].
//!
//! # Rules
//! - A task is TODO, RUNNING (with the set of its running attempts) or DONE (with its
//!   accepted output). A DONE task has exactly one accepted output and never changes
//!   again, but for a map whose output was lost (below).
//! - A failed attempt returns its task to TODO (in front) only when no other attempt of it
//!   runs.
//! - Failures that are the task's (an error, a deadline passed) count against its budget
//!   of [`SchedulerConfig::max_attempts`]; past it the job fails naming the task. An
//!   unreachable worker is not the task's fault, but a task lost that way
//!   `4 × max_attempts` times also fails the job, so a job always ends.
//! - A busy worker ([`Failure::Busy`]: at its limit of concurrent tasks) is not a failure:
//!   the task is not charged, nor the worker's failure streak; the worker answered, so it
//!   is reachable and needs no probe. It rests `retry_base × 2^k` after `k` Busy answers
//!   since its last success, capped at `retry_cap`, and is then ready again.
//! - Lost map output ([`Failure::MapOutputLost`]: a reduce met a checksum error, a short
//!   range or a missing file in the output of map task `map`'s attempt `attempt`) is not
//!   the reduce's fault: it is not charged, nor the worker's failure streak. If that
//!   output is still the map's accepted one, it is forgotten (not discarded: it may be
//!   gone or corrupt) and the map is TODO again, in front (RUNNING, if attempts of it
//!   still run: backups that lost, which count as its backup). A report about an output
//!   the map accepted before and forgot already changes nothing more; a report naming an
//!   output the map never accepted (or from a map attempt) is the attempt's own failure,
//!   charged as an error. A map whose output is lost `4 × max_attempts` times fails the
//!   job naming the map, so a job always ends. When map outputs stay on their workers and
//!   the report says the holder is gone (`holder_gone`: unreachable, or without the
//!   output because it restarted), every output that holder holds is lost at once.
//! - A worker that cannot run the job at all ([`Failure::Refused`]: it lacks the job type,
//!   or the job asks past its limits) ends the job at once ([`JobError::Refused`]).
//! - Each worker's deadline is `task_timeout × 2^k` after `k` deadlines missed in a row,
//!   capped at `max_task_timeout`; a success resets `k`. After a missed deadline the
//!   worker is probed with a zero Wait before it gets work again.
//! - An unreachable worker is retried after `retry_base × 2^k`, capped at `retry_cap`, and
//!   used again once it answers. If every worker is unreachable and none has answered
//!   for `no_worker_timeout` since the last one fell silent, the job fails.
//! - The report's `intermediate_bytes` and `skipped_records` sum the last accepted
//!   output of each map task (a lost output counts until a re-run replaces it: the job
//!   may end before, when every reduce is DONE).
//! - A plan has at most `u32::MAX` map tasks, [`MAX_REDUCERS`] reducers and
//!   [`MAX_WORKERS`] workers; no duration knob exceeds [`MAX_DURATION`].
//! - A worker whose attempts fail `probation_after` times in a row (across tasks) is on
//!   probation, given no task for `probation_base × 2^n` (n: its earlier probations,
//!   capped at `retry_cap × 8`), as Hadoop blacklists nodes.
//! - A TODO task is not given to a worker on which an attempt of it failed (by error or
//!   deadline), unless no other worker can take it now (each failed it too, is
//!   unreachable, or rests), as Hadoop avoids the node where a task failed: one
//!   misconfigured worker cannot use up a task's attempts alone.
//! - REDUCE starts when every map task is DONE, and stays the phase after a map's output
//!   is lost; but no attempt of a reduce (nor a backup) starts while a map is not DONE:
//!   the TODO maps go first, reduces wait in the TODO queue until every map is DONE
//!   again, and running reduces keep running.
//! - Speculation (see [`SchedulerConfig::speculation`]): when no TODO task is one it may
//!   take, a ready worker takes a backup attempt of the oldest running task that has a
//!   single attempt (a map, while a map is not DONE), if that task has run longer than
//!   `max(speculation_min, speculation_factor × median duration of the phase's finished
//!   tasks)`, and fewer than `max_backups` backups run. Maps re-run in the REDUCE phase
//!   are not among its finished tasks. A task gets one backup at most (until it fails
//!   back to TODO). The first success wins; the others are discarded when they reply.
//! - Workers join ([`Scheduler::add_worker`], or [`Event::WorkerJoined`]: ids in order,
//!   the next is the number of workers so far), ready at once, and leave
//!   ([`Event::WorkerLeft`]): a departed worker is never called again once its call in
//!   flight ends, and counts as silent for good. A plan may start with no worker: it
//!   waits `no_worker_timeout` from its first call for one to join.
//! - A worker that drains ([`Failure::Draining`], in the answer of an attempt or a Wait:
//!   it was told to stop) leaves the job as one that left, but keeps its map outputs: they
//!   stay accepted (a reduce that cannot read one reports it lost, as always). The attempt
//!   it refused is not charged; its task is TODO again, in front.
//! - When map outputs stay on workers ([`JobPlan::outputs_on_workers`]), an accepted map
//!   output is held by the worker of its attempt. A worker that leaves, or that is
//!   declared dead (silent, every call to it failing, for [`SchedulerConfig::dead_after`]
//!   since it fell silent), loses at once every accepted output it holds: each such map
//!   is TODO again (RUNNING with its backups, if any), counted in `map_outputs_lost` and
//!   against the map's `4 × max_attempts` losses, as a lost map output; running reduces
//!   continue. A dead worker that answers later is used again; its old outputs stay
//!   forgotten. A map output accepted from a worker that left meanwhile is lost at once.
//!   On a shared filesystem (`false`) outputs outlive their workers.
//! - [`Event::WaitAnswered`] and [`Event::WaitFailed`] are accepted only for the worker's
//!   current Wait.
//! - A worker with nothing to do gets an idle Wait of `idle_wait`. It is woken
//!   ([`Action::Wake`]) to get work now instead of when its Wait ends: when TODO tasks
//!   that may start appear (the REDUCE phase starts, an attempt fails, a map output is
//!   lost, the last lost map is DONE again) that the ready workers cannot all take and
//!   that it may take, or at the moment a running task becomes eligible for a
//!   backup ([`Scheduler::poll_timeout`] includes that moment). A probe is never cut short.

mod attempt;
mod config;
mod membership;
mod report;
mod speculation;
mod task;
#[cfg(test)]
mod tests;
mod timers;
mod types;
mod worker;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

pub use config::{ConfigError, MAX_DURATION, MAX_IDLE_WAIT, MAX_WORKERS, SchedulerConfig, backoff};
pub use report::{AttemptCounts, AttemptFailure, JobError, JobReport, JobStatus, Phase, WorkerFailure, WorkerReport};
pub use types::{
    Action, AttemptId, Event, Failure, JobPlan, Location, MapOutputRange, ReduceInput, TaskId, TaskKind, TaskOutput,
    TaskSpec, WaitId, WorkerId,
};

use crate::counters::Counters;
use crate::job::MAX_REDUCERS;
use crate::shard::Shard;
use attempt::Attempt;
use speculation::Speculation;
use task::Tasks;
use timers::Timers;
use worker::{WorkerState, Workers};

/// The scheduler. See the [module docs](self) for the contract and the rules.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    shards: Vec<Shard>,
    /// Map then Reduce, then Done once the job has finished (with success or error).
    phase: Phase,
    tasks: Tasks,
    workers: Workers,
    /// The attempts running, including those that lost to another attempt of their task.
    attempts: FxHashMap<AttemptId, Attempt>,
    /// Whether map outputs stay on their workers ([`JobPlan::outputs_on_workers`]).
    outputs_on_workers: bool,
    /// Map outputs (map task, attempt) that were accepted, then lost and forgotten.
    lost_outputs: FxHashSet<(u32, AttemptId)>,
    /// Bytes and skipped records of each map task's last accepted output, for the report.
    map_sizes: Vec<(u64, u64)>,
    /// The counters of each task's last accepted attempt, maps then reduces: summed when
    /// the job succeeds (a lost map's re-run replaces its counters, never adds to them).
    task_counters: Vec<Counters>,
    speculation: Speculation,
    timers: Timers,
    /// The next attempt id.
    next_attempt: u64,
    /// The next Wait id.
    next_wait: u64,
    /// Actions decided while handling an event, given out first.
    actions: VecDeque<Action>,
    /// When the scheduler was first called, for the report's `elapsed_ms`.
    started: Option<Instant>,
    /// The last call that found a worker unreachable, for [`JobError::NoWorkers`].
    last_unreachable: Option<WorkerFailure>,
    report: JobReport,
}

impl Scheduler {
    /// A scheduler for `plan`. All workers start ready. A plan of no workers waits for
    /// workers to join ([`Scheduler::add_worker`]) for `no_worker_timeout` from its first
    /// call, then fails with [`JobError::NoWorkers`].
    pub fn new(plan: JobPlan, config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let too_many = |what, n: u64, max: u64| (n > max).then_some(ConfigError::TooMany { what, n, max });
        let maps = plan.shards.len() as u64;
        let limits = [
            ("map tasks", maps, u64::from(u32::MAX)),
            ("reducers", u64::from(plan.reducers), u64::from(MAX_REDUCERS)),
            ("workers", u64::from(plan.workers), u64::from(MAX_WORKERS)),
        ];
        if let Some(e) = limits.into_iter().find_map(|(what, n, max)| too_many(what, n, max)) {
            return Err(e);
        }
        let maps = maps as u32;
        // Saturating: a hostile plan's sizes must not overflow (nor a segment that ends
        // before it starts).
        let segments = plan.shards.iter().flat_map(|s| &s.segments);
        let input_bytes = segments.map(|g| g.end.saturating_sub(g.start)).fold(0, u64::saturating_add);
        let report = JobReport { map_tasks: maps, reduce_tasks: plan.reducers, input_bytes, ..JobReport::default() };
        let mut s = Scheduler {
            config,
            shards: plan.shards,
            phase: Phase::Map,
            tasks: Tasks::new(maps, plan.reducers),
            workers: Workers::new(plan.workers),
            attempts: FxHashMap::default(),
            outputs_on_workers: plan.outputs_on_workers,
            lost_outputs: FxHashSet::default(),
            map_sizes: vec![(0, 0); maps as usize],
            task_counters: vec![Counters::new(); maps as usize + plan.reducers as usize],
            speculation: Speculation::default(),
            timers: Timers::default(),
            next_attempt: 0,
            next_wait: 0,
            actions: VecDeque::new(),
            started: None,
            last_unreachable: None,
            report,
        };
        if maps == 0 {
            s.start_reduce(None);
        }
        Ok(s)
    }

    /// Feeds one event. Never fails; stale events are ignored.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        self.start_clock(now);
        if self.phase == Phase::Done {
            if let Event::Succeeded { output, .. } = event {
                self.actions.push_back(Action::Discard(output));
            }
            return;
        }
        match event {
            Event::WaitAnswered { wait } => match self.workers.waiting(wait) {
                Some(w) => {
                    self.answered(w);
                    self.workers.make_ready(w, WorkerState::Ready);
                }
                None => tracing::debug!(%wait, "ignoring the answer of a Wait that is not current"),
            },
            Event::WaitFailed { wait, reason: Failure::Draining(why) } => match self.workers.waiting(wait) {
                Some(w) => {
                    tracing::info!(worker = %w, %why, "worker drains");
                    self.answered(w);
                    self.leave(now, w, true);
                    self.workers.make_ready(w, WorkerState::Ready);
                }
                None => tracing::debug!(%wait, "ignoring the drain answer of a Wait that is not current"),
            },
            Event::WaitFailed { wait, reason } => match self.workers.waiting(wait) {
                Some(w) => {
                    tracing::debug!(%wait, worker = %w, %reason, "wait failed");
                    self.last_unreachable = Some(WorkerFailure { worker: w, reason });
                    self.rest_unreachable(now, w);
                }
                None => tracing::debug!(%wait, "ignoring the failure of a Wait that is not current"),
            },
            Event::Succeeded { attempt, output } => self.on_success(now, attempt, output),
            Event::Failed { attempt, reason } => self.on_failure(now, attempt, reason),
            Event::WorkerLeft { worker } => self.leave(now, worker, false),
            Event::WorkerJoined => {
                let _ = self.add_worker(now);
            }
        }
        self.arm_backup_timer();
    }

    /// The next thing to do, or `None` until the next event or [`Self::poll_timeout`].
    #[must_use]
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let action = self.next_action(now);
        self.arm_backup_timer();
        action
    }

    /// The next moment at which [`Self::poll_action`] may have something new without an
    /// event: a resting worker may be probed, a running task becomes eligible for a backup
    /// while a worker waits idle, or the job gives up on unreachable workers.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Progress, for logs and progress bars.
    pub fn status(&self) -> JobStatus {
        JobStatus {
            phase: self.phase,
            maps_done: self.tasks.maps.done(),
            maps_total: self.tasks.maps.len(),
            reduces_done: self.tasks.reduces.done(),
            reduces_total: self.tasks.reduces.len(),
            running: self.attempts.len() as u32,
            failed: self.report.attempts.failed + self.report.attempts.timed_out + self.report.attempts.lost,
            backups: self.report.attempts.speculative,
            map_outputs_lost: self.report.map_outputs_lost,
        }
    }

    fn next_action(&mut self, now: Instant) -> Option<Action> {
        self.start_clock(now);
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.phase == Phase::Done {
            return None;
        }
        while let Some(w) = self.timers.rested(now) {
            let probe = self.workers.get(w).state() == (WorkerState::Resting { probe: true });
            self.workers.make_ready(w, if probe { WorkerState::NeedsProbe } else { WorkerState::Ready });
        }
        while let Some(w) = self.timers.dead(now) {
            self.declare_dead(w);
            if self.phase == Phase::Done {
                return self.actions.pop_front();
            }
        }
        if self.timers.no_workers.is_some_and(|deadline| now >= deadline) {
            let (waited, last) = (self.config.no_worker_timeout, self.last_unreachable.clone());
            self.finish(Err(JobError::NoWorkers { waited, last }));
            return self.actions.pop_front();
        }
        if let Some((w, wait)) = self.wakeable(now) {
            self.workers.make_ready(w, WorkerState::Ready);
            return Some(Action::Wake { worker: w, wait });
        }
        let w = self.workers.pop_ready()?;
        let probe = self.workers.get(w).state() == WorkerState::NeedsProbe;
        if !probe {
            if let Some(task) = self.take_todo(w) {
                return Some(self.launch(now, w, task, false));
            }
            if let Some(task) = self.speculation.candidate(now, &self.config, self.tasks.maps_pending()) {
                return Some(self.launch(now, w, task, true));
            }
        }
        let wait = WaitId(self.next_wait);
        self.next_wait += 1;
        let deadline = self.deadline(w);
        if probe {
            self.workers.set(w, WorkerState::Probing(wait));
            return Some(Action::Wait { worker: w, wait, for_: Duration::ZERO, deadline });
        }
        self.workers.set(w, WorkerState::IdleWait(wait));
        let for_ = self.config.idle_wait;
        Some(Action::Wait { worker: w, wait, for_, deadline: for_.saturating_add(deadline) })
    }

    /// A worker in an idle Wait to wake, and its Wait: for a TODO task that may start now,
    /// that the ready workers leave and that has not failed on it (so that it surely takes
    /// a task once ready), or, when no worker is ready, for a backup that is due.
    fn wakeable(&self, now: Instant) -> Option<(WorkerId, WaitId)> {
        let todo = || self.tasks.todo.iter().filter(|&t| self.tasks.launchable(t));
        let for_todo = |w: WorkerId| todo().any(|t| !self.tasks.failed_on(t, w));
        let maps_only = self.tasks.maps_pending();
        let for_backup =
            self.workers.ready_len() == 0 && self.speculation.candidate(now, &self.config, maps_only).is_some();
        if self.tasks.launchable_todo() <= self.workers.ready_len() && !for_backup {
            return None;
        }
        self.workers.idle().find(|&(w, _)| for_backup || for_todo(w))
    }

    /// Sets the backup timer: the moment the oldest running task becomes eligible for a
    /// backup, while a worker waits idle and could take it.
    fn arm_backup_timer(&mut self) {
        let idle = self.phase != Phase::Done && self.workers.any_idle();
        let next = self.speculation.next(&self.config, self.tasks.maps_pending());
        self.timers.backup = next.filter(|_| idle).map(|(at, _)| at);
    }

    fn start_clock(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            if self.workers.len() == 0 {
                self.timers.no_workers = Some(now + self.config.no_worker_timeout);
            }
        }
    }

    /// The deadline of `w`'s next call, doubled for each deadline it missed in a row.
    fn deadline(&self, w: WorkerId) -> Duration {
        let c = &self.config;
        backoff(self.workers.get(w).timeouts, c.task_timeout, c.max_task_timeout)
    }

    /// `w` may not be called before `until`; then it is probed if `probe`, else ready.
    fn rest(&mut self, w: WorkerId, until: Instant, probe: bool) {
        self.workers.set(w, WorkerState::Resting { probe });
        self.timers.rest(w, until);
    }

    /// A call to `w` found it unreachable: it rests `retry_base × 2^k`, and the job gives
    /// up `no_worker_timeout` from now if every worker is silent.
    fn rest_unreachable(&mut self, now: Instant, w: WorkerId) {
        let delay = backoff(self.workers.get(w).unreachable, self.config.retry_base, self.config.retry_cap);
        let (falls, last) = self.workers.fell_silent(now, w);
        if last {
            self.timers.no_workers = Some(now + self.config.no_worker_timeout);
        }
        if falls && self.outputs_on_workers {
            self.timers.deaths.insert((now + self.config.dead_after, w));
        }
        self.rest(w, now + delay, true);
    }

    /// `w` answered: it is reachable again.
    fn answered(&mut self, w: WorkerId) {
        if let Some(since) = self.workers.answered(w) {
            self.timers.no_workers = None;
            self.timers.deaths.remove(&(since + self.config.dead_after, w));
        }
    }

    /// The map phase is over: every reduce is TODO, timed afresh. A map-only job (no
    /// reduce) succeeds here, at `now` (`None`: before it started).
    fn start_reduce(&mut self, now: Option<Instant>) {
        if self.tasks.reduces.len() == 0 {
            let outputs = self.tasks.maps.outputs().map(|m| m.location.to_string()).collect();
            self.succeed(now, outputs);
            return;
        }
        self.phase = Phase::Reduce;
        self.speculation.new_phase();
        self.tasks.queue_reduces();
        tracing::debug!(reduces = self.tasks.reduces.len(), "map phase done; reduce phase starts");
    }

    /// Every reduce is DONE (every map, for a map-only job): the job succeeded, with
    /// `outputs` to commit.
    fn succeed(&mut self, now: Option<Instant>, outputs: Vec<String>) {
        let mut report = self.report.clone();
        report.outputs = outputs;
        let sum =
            |(b, s): (u64, u64), &(bytes, skipped): &(u64, u64)| (b.saturating_add(bytes), s.saturating_add(skipped));
        (report.intermediate_bytes, report.skipped_records) = self.map_sizes.iter().fold((0, 0), sum);
        for counters in &self.task_counters {
            crate::counters::merge(&mut report.counters, counters);
        }
        report.workers_on_probation = self.workers.iter().filter(|(_, w)| w.probations > 0).count() as u32;
        report.workers = self.workers.iter().map(|(_, w)| w.stats.clone()).collect();
        report.elapsed_ms = match (now, self.started) {
            (Some(now), Some(started)) => now.saturating_duration_since(started).as_millis() as u64,
            _ => 0,
        };
        self.finish(Ok(report));
    }

    fn finish(&mut self, result: Result<JobReport, JobError>) {
        self.phase = Phase::Done;
        self.tasks.todo.clear();
        self.timers.clear();
        self.actions.push_back(Action::Finished(result));
    }
}
