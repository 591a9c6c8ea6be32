//! The pure scheduler: which worker runs which task attempt, and when.
//!
//! It is a sans-IO state machine in the style of `quinn-proto`: it never sleeps, spawns,
//! reads a clock or touches a socket. The runtime tells it what happened and drains what
//! to do next:
//!
//! 1. [`Scheduler::new`] with the [`JobPlan`]; every worker starts ready.
//! 2. Drain [`Scheduler::poll_action`] until `None`, doing each [`Action`]: start an RPC
//!    under the given deadline, cut a worker's idle Wait short ([`Action::Wake`]), delete
//!    a discarded output, or stop at [`Action::Finished`].
//! 3. When an RPC ends, feed [`Scheduler::handle_event`]; when [`Scheduler::poll_timeout`]
//!    passes, just drain again. Go to 2.
//!
//! `now` must never go backwards between calls. Events about attempts the scheduler does
//! not know as running (a late reply of an attempt that already timed out) are ignored;
//! a success for a task that is already DONE is answered with [`Action::Discard`].
//!
//! # Rules
//! - A task is TODO, PROCESSING (with the set of its running attempts) or DONE; a DONE
//!   task never changes again and has exactly one accepted output.
//! - A failed attempt returns its task to TODO only when no other attempt of it runs.
//! - Failures that are the task's (an error, a deadline passed) count against its budget
//!   of [`SchedulerConfig::max_attempts`]; past it the job fails naming the task. An
//!   unreachable worker is not the task's fault, but a task lost that way
//!   `4 × max_attempts` times also fails the job, so a job always ends.
//! - Each worker's deadline is `task_timeout × 2^k` after `k` deadlines missed in a row,
//!   capped at `max_task_timeout`; a success resets `k`. After a missed deadline the
//!   worker is probed with a zero Wait before it gets work again.
//! - An unreachable worker is retried after `retry_base × 2^k`, capped at `retry_cap`, and
//!   used again once it answers. If every worker is unreachable and none has answered
//!   for `no_worker_timeout` since the last one fell silent, the job fails.
//! - A worker whose attempts fail `probation_after` times in a row (across tasks) is on
//!   probation, given no task for `probation_base × 2^n` (n: its earlier probations,
//!   capped at `retry_cap × 8`), as Hadoop blacklists nodes.
//! - A TODO task is not given to a worker on which an attempt of it failed (by error or
//!   deadline), unless no other worker can take it now (each failed it too, is
//!   unreachable, or rests), as Hadoop avoids the node where a task failed: one
//!   misconfigured worker cannot use up a task's attempts alone.
//! - REDUCE starts when every map task is DONE.
//! - Speculation (see [`SchedulerConfig::speculation`]): when no TODO task of the phase is
//!   one it may take, a ready worker takes a backup attempt of the oldest running task that has a single
//!   attempt, if that task has run longer than `max(speculation_min, speculation_factor ×
//!   median duration of the phase's finished tasks)`, and fewer than `max_backups` backups
//!   run. A task gets one backup at most (until it fails back to TODO). The first success
//!   wins; the others are discarded when they reply.
//! - `WorkerIdle` and `Unreachable` are accepted only for a worker with a Wait in flight.
//! - A worker with nothing to do gets an idle Wait of `idle_wait`. When TODO tasks appear
//!   (the REDUCE phase starts, an attempt fails) and ready workers cannot take them all,
//!   a worker in an idle Wait that may take one is woken ([`Action::Wake`]): it gets the
//!   task now instead of when its Wait ends. A probe is never cut short.

mod config;
mod report;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

pub use config::{ConfigError, MAX_IDLE_WAIT, SchedulerConfig, backoff};
pub use report::{AttemptCounts, JobError, JobReport, JobStatus, Phase, WorkerReport};
pub use types::{
    Action, AttemptId, Event, Failure, JobPlan, PartitionFile, TaskId, TaskKind, TaskOutput, TaskSpec, WorkerId,
};

use crate::shard::Shard;

#[derive(Debug)]
enum TaskState {
    Todo,
    Processing,
    Done,
}

#[derive(Debug)]
struct Task {
    state: TaskState,
    /// Running attempts and their start times.
    running: Vec<(AttemptId, Instant)>,
    /// Failures that count against the budget.
    failures: u32,
    /// Attempts lost to unreachable workers.
    lost: u32,
    last_failure: Option<String>,
    output: Option<TaskOutput>,
    /// Whether a backup of it was launched (one per task at most).
    backed_up: bool,
    /// Workers on which an attempt of it failed (by error or deadline), each once.
    failed_on: Vec<WorkerId>,
}

impl Task {
    fn new() -> Self {
        Task {
            state: TaskState::Todo,
            running: Vec::new(),
            failures: 0,
            lost: 0,
            last_failure: None,
            output: None,
            backed_up: false,
            failed_on: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Attempt {
    task: TaskId,
    worker: WorkerId,
    started: Instant,
    backup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Needs an action from the next `poll_action`.
    Ready,
    /// Needs a zero Wait (a probe) before it gets work.
    NeedsProbe,
    /// A task attempt is in flight.
    Busy,
    /// A probe (a zero Wait) is in flight.
    Waiting,
    /// An idle Wait is in flight: the worker had nothing to do, and may be woken.
    Idle,
    /// Not to be called before `until`, then probed.
    Resting { until: Instant },
}

#[derive(Debug)]
struct Worker {
    state: WorkerState,
    /// Deadlines missed in a row.
    timeouts: u32,
    /// Failed calls to an unreachable worker in a row.
    unreachable: u32,
    /// When it last stopped answering (set while `unreachable > 0`).
    silent_since: Option<Instant>,
    /// Failed attempts in a row (any task).
    failures: u32,
    /// Times it was put on probation.
    probations: u32,
    /// Its counts for the report.
    stats: WorkerReport,
}

/// The scheduler. See the [module docs](self) for the contract and the rules.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    shards: Vec<Shard>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    phase: Phase,
    todo: VecDeque<TaskId>,
    done_in_phase: u32,
    /// Durations of the phase's finished tasks (for the speculation threshold).
    durations: Vec<Duration>,
    /// Their median, computed when a backup is considered; `None` after a change.
    median: Option<Duration>,
    workers: Vec<Worker>,
    /// Workers whose state is Ready or NeedsProbe, in the order they became so.
    ready: VecDeque<WorkerId>,
    /// Resting workers by the time they may be probed.
    resting: BTreeSet<(Instant, WorkerId)>,
    attempts: FxHashMap<AttemptId, Attempt>,
    /// Tasks with exactly one running attempt, by its start: the speculation queue.
    speculative: BTreeSet<(Instant, TaskId)>,
    backups_running: u32,
    next_attempt: u64,
    actions: VecDeque<Action>,
    started: Option<Instant>,
    last_unreachable: String,
    report: JobReport,
    finished: bool,
}

impl Scheduler {
    /// A scheduler for `plan`. All workers start ready.
    pub fn new(plan: JobPlan, config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        if plan.reducers == 0 {
            return Err(ConfigError::ZeroReducers);
        }
        if plan.workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        let maps = plan.shards.len() as u32;
        let report = JobReport {
            map_tasks: maps,
            reduce_tasks: plan.reducers,
            input_bytes: plan.shards.iter().map(Shard::len).sum(),
            ..JobReport::default()
        };
        let mut s = Scheduler {
            maps: (0..maps).map(|_| Task::new()).collect(),
            reduces: (0..plan.reducers).map(|_| Task::new()).collect(),
            shards: plan.shards,
            phase: Phase::Map,
            todo: (0..maps).map(|index| TaskId { kind: TaskKind::Map, index }).collect(),
            done_in_phase: 0,
            durations: Vec::new(),
            median: None,
            workers: (0..plan.workers)
                .map(|_| Worker {
                    state: WorkerState::Ready,
                    timeouts: 0,
                    unreachable: 0,
                    silent_since: None,
                    failures: 0,
                    probations: 0,
                    stats: WorkerReport::default(),
                })
                .collect(),
            ready: (0..plan.workers).map(WorkerId).collect(),
            resting: BTreeSet::new(),
            attempts: FxHashMap::default(),
            speculative: BTreeSet::new(),
            backups_running: 0,
            next_attempt: 0,
            actions: VecDeque::new(),
            started: None,
            last_unreachable: String::new(),
            report,
            finished: false,
            config,
        };
        if maps == 0 {
            s.start_reduce();
        }
        Ok(s)
    }

    /// Feeds one event. Never fails; stale events are ignored.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        self.start_clock(now);
        if self.finished {
            if let Event::Succeeded { output, .. } = event {
                self.actions.push_back(Action::Discard(output));
            }
            return;
        }
        match event {
            Event::WorkerIdle(w) => {
                if self.waiting(w) {
                    self.answered(w);
                    self.make_ready(w, WorkerState::Ready);
                }
            }
            Event::Unreachable(w) => {
                if self.waiting(w) {
                    self.last_unreachable = format!("{w} did not answer a wait");
                    self.rest_unreachable(now, w);
                }
            }
            Event::Succeeded { attempt, output } => self.on_success(now, attempt, output),
            Event::Failed { attempt, reason } => self.on_failure(now, attempt, reason),
        }
    }

    /// The next thing to do, or `None` until the next event or [`Self::poll_timeout`].
    #[must_use]
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        self.start_clock(now);
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.finished {
            return None;
        }
        self.wake_resting(now);
        if self.check_no_workers(now) {
            return self.actions.pop_front();
        }
        if let Some(w) = self.wakeable() {
            self.make_ready(w, WorkerState::Ready);
            return Some(Action::Wake { worker: w });
        }
        let w = self.ready.pop_front()?;
        let worker = &mut self.workers[w.0 as usize];
        let probe = worker.state == WorkerState::NeedsProbe;
        worker.state = WorkerState::Busy;
        let deadline = self.deadline(w);
        if !probe {
            if let Some(task) = self.take_todo(w) {
                return Some(self.launch(now, w, task, false));
            }
            if let Some(task) = self.backup_candidate(now) {
                return Some(self.launch(now, w, task, true));
            }
        }
        if probe {
            self.workers[w.0 as usize].state = WorkerState::Waiting;
            return Some(Action::Wait { worker: w, for_: Duration::ZERO, deadline });
        }
        self.workers[w.0 as usize].state = WorkerState::Idle;
        let for_ = self.config.idle_wait;
        Some(Action::Wait { worker: w, for_, deadline: for_ + deadline })
    }

    /// The next moment at which [`Self::poll_action`] may have something new without an
    /// event: a resting worker may be probed, or the job gives up on unreachable workers.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let wake = self.resting.first().map(|(t, _)| *t);
        let give_up = self.no_worker_deadline();
        match (wake, give_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Progress, for logs and progress bars.
    pub fn status(&self) -> JobStatus {
        let done = |ts: &[Task]| ts.iter().filter(|t| matches!(t.state, TaskState::Done)).count() as u32;
        JobStatus {
            phase: self.phase,
            maps_done: done(&self.maps),
            maps_total: self.maps.len() as u32,
            reduces_done: done(&self.reduces),
            reduces_total: self.reduces.len() as u32,
            running: self.attempts.len() as u32,
        }
    }

    fn start_clock(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
        }
    }

    fn deadline(&self, w: WorkerId) -> Duration {
        let c = &self.config;
        backoff(self.workers[w.0 as usize].timeouts, c.task_timeout, c.max_task_timeout)
    }

    fn task(&self, id: TaskId) -> &Task {
        match id.kind {
            TaskKind::Map => &self.maps[id.index as usize],
            TaskKind::Reduce => &self.reduces[id.index as usize],
        }
    }

    fn task_mut(&mut self, id: TaskId) -> &mut Task {
        match id.kind {
            TaskKind::Map => &mut self.maps[id.index as usize],
            TaskKind::Reduce => &mut self.reduces[id.index as usize],
        }
    }

    fn make_ready(&mut self, w: WorkerId, state: WorkerState) {
        debug_assert!(matches!(state, WorkerState::Ready | WorkerState::NeedsProbe));
        self.workers[w.0 as usize].state = state;
        self.ready.push_back(w);
    }

    fn rest(&mut self, w: WorkerId, until: Instant) {
        self.workers[w.0 as usize].state = WorkerState::Resting { until };
        self.resting.insert((until, w));
    }

    fn rest_unreachable(&mut self, now: Instant, w: WorkerId) {
        let worker = &mut self.workers[w.0 as usize];
        let delay = backoff(worker.unreachable, self.config.retry_base, self.config.retry_cap);
        worker.unreachable = worker.unreachable.saturating_add(1);
        worker.silent_since.get_or_insert(now);
        self.rest(w, now + delay);
    }

    fn wake_resting(&mut self, now: Instant) {
        while let Some(&(until, w)) = self.resting.first() {
            if until > now {
                break;
            }
            self.resting.pop_first();
            self.make_ready(w, WorkerState::NeedsProbe);
        }
    }

    /// A worker answered: it is reachable again.
    fn answered(&mut self, w: WorkerId) {
        let worker = &mut self.workers[w.0 as usize];
        worker.unreachable = 0;
        worker.silent_since = None;
    }

    /// When the job gives up if no worker answers before: `no_worker_timeout` after the
    /// last worker fell silent, while every worker is silent.
    fn no_worker_deadline(&self) -> Option<Instant> {
        let mut last_silent = None;
        for w in &self.workers {
            last_silent = last_silent.max(Some(w.silent_since?));
        }
        last_silent.map(|t| t + self.config.no_worker_timeout)
    }

    /// Fails the job if no worker has answered for `no_worker_timeout`.
    fn check_no_workers(&mut self, now: Instant) -> bool {
        if self.no_worker_deadline().is_some_and(|deadline| now >= deadline) {
            let err = JobError::NoWorkers(self.config.no_worker_timeout, self.last_unreachable.clone());
            self.finish(Err(err));
            return true;
        }
        false
    }

    fn launch(&mut self, now: Instant, w: WorkerId, task: TaskId, backup: bool) -> Action {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        let spec = match task.kind {
            TaskKind::Map => TaskSpec::Map { shard: self.shards[task.index as usize].clone() },
            TaskKind::Reduce => TaskSpec::Reduce {
                partition: task.index,
                inputs: self
                    .maps
                    .iter()
                    .flat_map(|m| match &m.output {
                        Some(TaskOutput::Map { files, .. }) => files.iter().filter(move |f| f.partition == task.index),
                        other => panic!("reduce {task} launched before every map output exists: {other:?}"),
                    })
                    .cloned()
                    .collect(),
            },
        };
        let t = self.task_mut(task);
        t.state = TaskState::Processing;
        t.running.push((attempt, now));
        if backup {
            t.backed_up = true;
        }
        let running = t.running.len();
        let first_start = t.running[0].1;
        match running {
            1 if !backup => {
                self.speculative.insert((now, task));
            }
            _ => {
                self.speculative.remove(&(first_start, task));
            }
        }
        self.attempts.insert(attempt, Attempt { task, worker: w, started: now, backup });
        self.report.attempts.launched += 1;
        self.workers[w.0 as usize].stats.launched += 1;
        if backup {
            self.backups_running += 1;
            self.report.attempts.speculative += 1;
        }
        let deadline = self.deadline(w);
        tracing::debug!(%task, %attempt, worker = %w, backup, "launch");
        Action::Run { worker: w, attempt, task, spec, deadline }
    }

    /// The first TODO task that worker `w` may run: one that has not failed on `w`, or
    /// that no other worker can take now (each failed it, is unreachable, or rests after
    /// an unreachable call or on probation), as Hadoop avoids rerunning a task on the node where it failed. One
    /// misconfigured worker thus cannot use up a task's attempts alone.
    /// Whether `w` has a Wait (idle or a probe) in flight.
    fn waiting(&self, w: WorkerId) -> bool {
        matches!(self.workers[w.0 as usize].state, WorkerState::Waiting | WorkerState::Idle)
    }

    /// A worker in an idle Wait to wake for a TODO task that the ready workers leave: one
    /// on which that task has not failed, so that it surely takes a task once ready.
    fn wakeable(&self) -> Option<WorkerId> {
        if self.todo.len() <= self.ready.len() {
            return None;
        }
        let i = self.workers.iter().enumerate().position(|(i, worker)| {
            let id = WorkerId(i as u32);
            worker.state == WorkerState::Idle && self.todo.iter().any(|&t| !self.task(t).failed_on.contains(&id))
        })?;
        Some(WorkerId(i as u32))
    }

    fn take_todo(&mut self, w: WorkerId) -> Option<TaskId> {
        let usable_elsewhere = |t: &Task| {
            self.workers.iter().enumerate().any(|(i, other)| {
                let id = WorkerId(i as u32);
                id != w
                    && !t.failed_on.contains(&id)
                    && other.unreachable == 0
                    && !matches!(other.state, WorkerState::Resting { .. })
            })
        };
        let i = self.todo.iter().position(|&id| {
            let t = self.task(id);
            !t.failed_on.contains(&w) || !usable_elsewhere(t)
        })?;
        self.todo.remove(i)
    }

    /// The oldest running task that deserves a backup attempt now, if any.
    fn backup_candidate(&mut self, now: Instant) -> Option<TaskId> {
        let c = &self.config;
        if !c.speculation || self.backups_running >= c.max_backups || self.durations.is_empty() {
            return None;
        }
        let &(start, task) = self.speculative.first()?;
        let running_for = now.saturating_duration_since(start);
        if running_for < c.speculation_min {
            return None;
        }
        let durations = &self.durations;
        let median = *self.median.get_or_insert_with(|| {
            let mut d = durations.clone();
            let mid = d.len() / 2;
            *d.select_nth_unstable(mid).1
        });
        let threshold = median.mul_f64(c.speculation_factor).max(c.speculation_min);
        if running_for < threshold || self.task(task).backed_up {
            return None;
        }
        Some(task)
    }

    /// Removes `attempt` from its task's running set; returns the record.
    fn end_attempt(&mut self, attempt: AttemptId) -> Option<Attempt> {
        let a = self.attempts.remove(&attempt)?;
        if a.backup {
            self.backups_running -= 1;
        }
        let task = a.task;
        let t = self.task_mut(task);
        let first_before = t.running.first().map(|r| r.1);
        t.running.retain(|(id, _)| *id != attempt);
        let (running, first_after) = (t.running.len(), t.running.first().map(|r| r.1));
        if let Some(start) = first_before {
            self.speculative.remove(&(start, task));
        }
        // A task left with one running attempt (its backup failed, or the original did)
        // keeps its place in the queue only if it was never backed up.
        let t = self.task(task);
        if running == 1 && !t.backed_up && !matches!(t.state, TaskState::Done) {
            self.speculative.insert((first_after.expect("one running"), task));
        }
        Some(a)
    }

    fn on_success(&mut self, now: Instant, attempt: AttemptId, output: TaskOutput) {
        let Some(a) = self.end_attempt(attempt) else {
            tracing::debug!(%attempt, "ignoring success of an attempt not running");
            self.actions.push_back(Action::Discard(output));
            return;
        };
        let worker = &mut self.workers[a.worker.0 as usize];
        worker.timeouts = 0;
        worker.failures = 0;
        self.answered(a.worker);
        self.make_ready(a.worker, WorkerState::Ready);
        self.report.attempts.succeeded += 1;

        let task = a.task;
        if matches!(self.task(task).state, TaskState::Done) {
            tracing::debug!(%task, %attempt, "late success of a done task; discarded");
            self.actions.push_back(Action::Discard(output));
            return;
        }
        if a.backup {
            self.report.attempts.speculative_won += 1;
        }
        self.workers[a.worker.0 as usize].stats.accepted += 1;
        match &output {
            TaskOutput::Map { files, .. } => {
                self.report.intermediate_bytes += files.iter().map(|f| f.bytes).sum::<u64>();
            }
            TaskOutput::Reduce { records, .. } => self.report.output_records += records,
        }
        let t = self.task_mut(task);
        t.state = TaskState::Done;
        t.output = Some(output);
        let took = now.saturating_duration_since(a.started);
        self.durations.push(took);
        self.median = None;
        self.done_in_phase += 1;
        match self.phase {
            Phase::Map if self.done_in_phase == self.maps.len() as u32 => self.start_reduce(),
            Phase::Reduce if self.done_in_phase == self.reduces.len() as u32 => {
                let mut report = std::mem::take(&mut self.report);
                report.outputs = self
                    .reduces
                    .iter()
                    .map(|t| match &t.output {
                        Some(TaskOutput::Reduce { path, .. }) => path.clone(),
                        other => panic!("reduce task done without a reduce output: {other:?}"),
                    })
                    .collect();
                report.workers_on_probation = self.workers.iter().filter(|w| w.probations > 0).count() as u32;
                report.workers = self.workers.iter().map(|w| w.stats.clone()).collect();
                report.elapsed_ms =
                    now.saturating_duration_since(self.started.expect("clock started")).as_millis() as u64;
                self.finish(Ok(report));
            }
            _ => {}
        }
    }

    fn on_failure(&mut self, now: Instant, attempt: AttemptId, reason: Failure) {
        let Some(a) = self.end_attempt(attempt) else {
            tracing::debug!(%attempt, "ignoring failure of an attempt not running");
            return;
        };
        let task = a.task;
        tracing::warn!(%task, %attempt, worker = %a.worker, %reason, "attempt failed");
        let counts = !matches!(reason, Failure::Unreachable(_));
        let worker = &mut self.workers[a.worker.0 as usize];
        match &reason {
            Failure::TimedOut => worker.stats.timed_out += 1,
            Failure::Unreachable(_) => worker.stats.lost += 1,
            Failure::Task(_) => worker.stats.failed += 1,
        }
        match &reason {
            Failure::TimedOut => {
                worker.timeouts = worker.timeouts.saturating_add(1);
                self.report.attempts.timed_out += 1;
            }
            Failure::Unreachable(why) => {
                self.report.attempts.lost += 1;
                self.last_unreachable = format!("{}: {why}", a.worker);
            }
            Failure::Task(_) => {
                self.report.attempts.failed += 1;
                self.answered(a.worker);
            }
        }
        // Where the worker goes next.
        match reason {
            Failure::Unreachable(_) => self.rest_unreachable(now, a.worker),
            _ => {
                let worker = &mut self.workers[a.worker.0 as usize];
                worker.failures += 1;
                let c = &self.config;
                if c.probation_after > 0 && worker.failures >= c.probation_after {
                    let cap = c.retry_cap.saturating_mul(8).max(c.probation_base);
                    let period = backoff(worker.probations, c.probation_base, cap);
                    worker.probations += 1;
                    worker.stats.probations += 1;
                    worker.failures = 0;
                    self.report.probations += 1;
                    tracing::warn!(worker = %a.worker, ?period, "worker on probation after repeated failures");
                    self.rest(a.worker, now + period);
                } else if matches!(reason, Failure::TimedOut) {
                    self.make_ready(a.worker, WorkerState::NeedsProbe);
                } else {
                    self.make_ready(a.worker, WorkerState::Ready);
                }
            }
        }
        if matches!(self.task(task).state, TaskState::Done) {
            return;
        }
        let max = self.config.max_attempts;
        let t = self.task_mut(task);
        if counts {
            t.failures += 1;
            if !t.failed_on.contains(&a.worker) {
                t.failed_on.push(a.worker);
            }
        } else {
            t.lost += 1;
        }
        t.last_failure = Some(format!("{} on {}: {reason}", attempt, a.worker));
        let exhausted = t.failures >= max || t.lost >= max.saturating_mul(4);
        if exhausted {
            let (attempts, last) = (t.failures + t.lost, t.last_failure.clone().unwrap_or_default());
            let input = self.describe_input(task);
            self.finish(Err(JobError::TaskFailed { task, input, attempts, last }));
            return;
        }
        if t.running.is_empty() {
            t.state = TaskState::Todo;
            t.backed_up = false;
            self.todo.push_front(task);
        }
    }

    fn describe_input(&self, task: TaskId) -> String {
        match task.kind {
            TaskKind::Map => self.shards[task.index as usize].to_string(),
            TaskKind::Reduce => format!("partition {} of {} map outputs", task.index, self.maps.len()),
        }
    }

    fn start_reduce(&mut self) {
        self.phase = Phase::Reduce;
        self.done_in_phase = 0;
        self.durations.clear();
        self.median = None;
        self.todo = (0..self.reduces.len() as u32).map(|index| TaskId { kind: TaskKind::Reduce, index }).collect();
        tracing::debug!(reduces = self.reduces.len(), "map phase done; reduce phase starts");
    }

    fn finish(&mut self, result: Result<JobReport, JobError>) {
        self.phase = Phase::Done;
        self.finished = true;
        self.todo.clear();
        self.actions.push_back(Action::Finished(result));
    }
}
