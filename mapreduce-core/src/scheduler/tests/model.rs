//! The rules of the module docs as a second, simpler scheduler: the model the properties
//! check every action against.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::properties::Scenario;
use super::*;

/// A running attempt, as the model knows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running {
    pub(super) task: TaskId,
    pub(super) worker: WorkerId,
    pub(super) started: Instant,
    pub(super) backup: bool,
}

/// A worker, as the model knows it.
#[derive(Debug, Clone, Default)]
pub(super) struct WorkerModel {
    /// Deadlines missed since its last success.
    pub(super) timeouts: u32,
    /// Failed attempts (error or deadline) since its last success.
    pub(super) failures: u32,
    /// Unreachable calls since it last answered.
    pub(super) unreachable: u32,
    /// Busy answers since its last success.
    pub(super) busy: u32,
    /// When it fell silent (its first unreachable call since it last answered).
    pub(super) silent_since: Option<Instant>,
    pub(super) probations: u32,
    /// It owes a probe before its next Run.
    pub(super) needs_probe: bool,
    /// It rests until then: its next call comes exactly then.
    pub(super) wake: Option<Instant>,
    /// What the report must say of it.
    pub(super) stats: WorkerReport,
}

/// What the drain after one event must contain.
#[derive(Debug, Default)]
pub(super) struct Expect {
    pub(super) discard: Option<TaskOutput>,
    pub(super) job_fails: Option<JobError>,
}

/// The rules of the module docs, replayed on what the scheduler is told and asks for.
/// Every action is checked against it the moment it is drained.
pub(super) struct Model {
    pub(super) config: SchedulerConfig,
    pub(super) shards: Vec<Shard>,
    pub(super) reducers: u32,
    pub(super) reliable: bool,
    pub(super) start: Instant,
    pub(super) accepted: BTreeMap<TaskId, TaskOutput>,
    /// The attempt of each accepted output.
    pub(super) accepted_by: HashMap<TaskId, AttemptId>,
    /// Map outputs (map task, attempt) accepted, then lost.
    pub(super) forgotten: HashSet<(u32, AttemptId)>,
    /// Bytes and skipped records of each map's last accepted output.
    pub(super) map_sizes: BTreeMap<TaskId, (u64, u64)>,
    /// The counters of each task's last accepted output (a lost one's stay until a
    /// re-run replaces them).
    pub(super) task_counters: BTreeMap<TaskId, Counters>,
    /// Times each map's accepted output was lost.
    pub(super) outputs_lost: HashMap<TaskId, u32>,
    /// Whether every map was DONE once: the REDUCE phase.
    pub(super) reduce_phase: bool,
    /// Durations of the accepted attempts of the current phase's kind of task.
    pub(super) durations: Vec<Duration>,
    pub(super) failures: HashMap<TaskId, u32>,
    pub(super) lost: HashMap<TaskId, u32>,
    /// Workers on which an attempt of the task failed by error or deadline.
    pub(super) failed_on: HashMap<TaskId, BTreeSet<WorkerId>>,
    /// The TODO tasks in queue order: the phase's tasks in index order at its start, a
    /// task sent back to TODO in front.
    pub(super) todo: VecDeque<TaskId>,
    pub(super) backed_up: HashSet<TaskId>,
    pub(super) running: BTreeMap<AttemptId, Running>,
    /// The Waits in flight: whose, and whether idle (not a probe): an idle one may be woken.
    pub(super) waits: BTreeMap<WaitId, (WorkerId, bool)>,
    /// The last call that found a worker unreachable.
    pub(super) last_unreachable: Option<WorkerFailure>,
    pub(super) launched: HashSet<AttemptId>,
    pub(super) workers: Vec<WorkerModel>,
    pub(super) counts: AttemptCounts,
    pub(super) probations: u32,
    pub(super) map_outputs_lost: u64,
}

impl Model {
    pub(super) fn new(s: &Scenario, start: Instant) -> Model {
        let todo = if s.shards == 0 { (0..s.reducers).map(reduce).collect() } else { (0..s.shards).map(map).collect() };
        Model {
            config: s.config.clone(),
            shards: shards(s.shards),
            reducers: s.reducers,
            reliable: s.reliable,
            start,
            accepted: BTreeMap::new(),
            accepted_by: HashMap::new(),
            forgotten: HashSet::new(),
            outputs_lost: HashMap::new(),
            map_sizes: BTreeMap::new(),
            task_counters: BTreeMap::new(),
            reduce_phase: s.shards == 0,
            durations: Vec::new(),
            failures: HashMap::new(),
            lost: HashMap::new(),
            failed_on: HashMap::new(),
            todo,
            backed_up: HashSet::new(),
            running: BTreeMap::new(),
            waits: BTreeMap::new(),
            last_unreachable: None,
            launched: HashSet::new(),
            workers: vec![WorkerModel::default(); s.workers as usize],
            counts: AttemptCounts::default(),
            probations: 0,
            map_outputs_lost: 0,
        }
    }

    pub(super) fn maps(&self) -> u32 {
        self.shards.len() as u32
    }

    pub(super) fn maps_done(&self) -> bool {
        (0..self.maps()).all(|i| self.accepted.contains_key(&map(i)))
    }

    /// The tasks of the phases begun: every map, and in the REDUCE phase every reduce.
    pub(super) fn phase_tasks(&self) -> Vec<TaskId> {
        let reduces = if self.reduce_phase { self.reducers } else { 0 };
        (0..self.maps()).map(map).chain((0..reduces).map(reduce)).collect()
    }

    /// Whether an attempt of `task` may start now: no reduce while a map is not DONE.
    pub(super) fn launchable(&self, task: TaskId) -> bool {
        task.kind == TaskKind::Map || self.maps_done()
    }

    /// Every failure of `task` so far, of every kind.
    pub(super) fn tally(&self, task: TaskId) -> u32 {
        let get = |m: &HashMap<TaskId, u32>| m.get(&task).copied().unwrap_or(0);
        get(&self.failures) + get(&self.lost) + get(&self.outputs_lost)
    }

    /// What `task` reads, as a job error names it.
    pub(super) fn input(&self, task: TaskId) -> String {
        match task.kind {
            TaskKind::Map => self.shards[task.index as usize].to_string(),
            TaskKind::Reduce => format!("partition {} of {} map outputs", task.index, self.maps()),
        }
    }

    pub(super) fn attempts_of(&self, task: TaskId) -> Vec<Running> {
        self.running.values().filter(|r| r.task == task).copied().collect()
    }

    /// The phase's TODO tasks (not accepted, no attempt running), in index order.
    pub(super) fn todo_tasks(&self) -> Vec<TaskId> {
        let todo = |t: &TaskId| !self.accepted.contains_key(t) && self.attempts_of(*t).is_empty();
        self.phase_tasks().into_iter().filter(todo).collect()
    }

    /// Whether `worker` could take a task now: it answers (no unreachable call since it
    /// last did) and does not rest (on probation or after an unreachable call).
    pub(super) fn available(&self, now: Instant, worker: WorkerId) -> bool {
        let m = &self.workers[worker.0 as usize];
        m.unreachable == 0 && m.wake.is_none_or(|t| t <= now)
    }

    pub(super) fn failed_on(&self, task: TaskId, worker: WorkerId) -> bool {
        self.failed_on.get(&task).is_some_and(|ws| ws.contains(&worker))
    }

    /// The TODO task a free `worker` must get now, if any: the first in queue order that
    /// did not fail on it, or that no other worker could take now (every other one failed
    /// it too, is unreachable or rests).
    pub(super) fn next_todo(&self, now: Instant, worker: WorkerId) -> Option<TaskId> {
        let others = || (0..self.workers.len() as u32).map(w).filter(move |o| *o != worker);
        let elsewhere = |t: TaskId| others().any(|o| !self.failed_on(t, o) && self.available(now, o));
        self.todo.iter().copied().find(|&t| self.launchable(t) && (!self.failed_on(t, worker) || !elsewhere(t)))
    }

    pub(super) fn deadline(&self, worker: WorkerId) -> Duration {
        let c = &self.config;
        backoff(self.workers[worker.0 as usize].timeouts, c.task_timeout, c.max_task_timeout)
    }

    /// The task a free worker must back up now, if any: speculation on, fewer than
    /// `max_backups` backups running, a finished task in the phase, and the oldest task
    /// with a single attempt (never backed up) has run past the threshold.
    pub(super) fn backup_due(&self, now: Instant) -> Option<TaskId> {
        let (started, threshold, task) = self.backup_threshold()?;
        (now.saturating_duration_since(started) >= threshold).then_some(task)
    }

    /// The oldest task a backup may be for (a map, while a map is not DONE), when its
    /// attempt started, and how long it must run before it gets one.
    fn backup_threshold(&self) -> Option<(Instant, Duration, TaskId)> {
        let c = &self.config;
        let backups = self.running.values().filter(|r| r.backup).count() as u32;
        if !c.speculation || backups >= c.max_backups || self.durations.is_empty() {
            return None;
        }
        let single = |t: &TaskId| {
            let attempts = self.attempts_of(*t);
            let eligible = attempts.len() == 1
                && !self.backed_up.contains(t)
                && !self.accepted.contains_key(t)
                && self.launchable(*t);
            eligible.then(|| (attempts[0].started, *t))
        };
        let oldest = self.phase_tasks().iter().filter_map(single).min();
        let (started, task) = oldest?;
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        let threshold = sorted[sorted.len() / 2].mul_f64(c.speculation_factor).max(c.speculation_min);
        Some((started, threshold, task))
    }

    /// Whether `worker` has a call in flight.
    fn busy(&self, worker: WorkerId) -> bool {
        self.running.values().any(|r| r.worker == worker) || self.waits.values().any(|(x, _)| *x == worker)
    }

    /// When a free worker must back up a task, if nothing else changes: the moment
    /// [`Self::backup_due`] turns to `Some`.
    pub(super) fn backup_moment(&self) -> Option<Instant> {
        let (started, threshold, _) = self.backup_threshold()?;
        started.checked_add(threshold)
    }

    /// Checks the rules a call to `worker` must keep: one call at a time, and a rest
    /// ends exactly when it should.
    pub(super) fn call(&mut self, now: Instant, worker: WorkerId) {
        assert!(!self.busy(worker), "{worker} got a second call");
        if let Some(wake) = self.workers[worker.0 as usize].wake.take() {
            assert_eq!(now - self.start, wake - self.start, "{worker} called at the wrong time after its rest");
        }
    }

    pub(super) fn on_action(&mut self, now: Instant, action: &Action, expect: &mut Expect) {
        match action {
            Action::Run { .. } => self.on_run(now, action),
            Action::Wait { worker, wait, for_, deadline } => {
                self.call(now, *worker);
                let owed = std::mem::take(&mut self.workers[worker.0 as usize].needs_probe);
                if for_.is_zero() {
                    assert!(owed, "{worker} probed for no reason");
                    assert_eq!(*deadline, self.deadline(*worker));
                } else {
                    assert!(!owed, "{worker} got an idle wait instead of its probe");
                    assert_eq!(*for_, self.config.idle_wait);
                    assert_eq!(*deadline, self.config.idle_wait + self.deadline(*worker));
                    let todo = self.next_todo(now, *worker);
                    assert_eq!(todo, None, "{worker} left idle while it may take a TODO task");
                    assert_eq!(self.backup_due(now), None, "{worker} left idle while a backup is due");
                }
                assert!(self.waits.insert(*wait, (*worker, !for_.is_zero())).is_none(), "{wait} sent twice");
            }
            Action::Wake { worker, wait } => {
                let call = self.waits.remove(wait);
                assert_eq!(call, Some((*worker, true)), "woke {worker} out of {wait}: not its idle Wait in flight");
                let for_todo = self.todo.iter().any(|&t| self.launchable(t) && !self.failed_on(t, *worker));
                let for_backup = self.backup_due(now).is_some();
                assert!(for_todo || for_backup, "woke {worker} with no TODO task it may take and no backup due");
            }
            Action::Discard(output) => {
                assert_eq!(expect.discard.take().as_ref(), Some(output), "unexpected discard");
            }
            Action::Finished(result) => self.on_finished(now, result, expect),
        }
    }

    pub(super) fn on_run(&mut self, now: Instant, action: &Action) {
        let Action::Run { worker, attempt, task, spec, deadline } = action else { unreachable!() };
        let (worker, attempt, task) = (*worker, *attempt, *task);
        assert!(self.launched.insert(attempt), "{attempt} launched twice");
        assert!(!self.accepted.contains_key(&task), "{task} ran again after it was DONE");
        let failures = self.failures.get(&task).copied().unwrap_or(0);
        assert!(failures < self.config.max_attempts, "{task} ran after using its budget");
        self.call(now, worker);
        assert!(!self.workers[worker.0 as usize].needs_probe, "{worker} got work before its probe");
        assert_eq!(*deadline, self.deadline(worker), "{worker}'s deadline");
        match task.kind {
            TaskKind::Map => {
                let shard = self.shards[task.index as usize].clone();
                assert_eq!(*spec, TaskSpec::Map { shard });
            }
            TaskKind::Reduce => {
                assert!(self.maps_done(), "{task} launched before every map was done");
                let file = |m: u32| match &self.accepted[&map(m)] {
                    TaskOutput::Map { location, ranges, .. } => ranges
                        .iter()
                        .filter(|r| r.partition == task.index)
                        .map(|range| ReduceInput { location: location.clone(), range: range.clone() })
                        .collect::<Vec<_>>(),
                    other => panic!("a map accepted {other:?}"),
                };
                let inputs = (0..self.maps()).flat_map(file).collect();
                let want = TaskSpec::Reduce { partition: task.index, inputs };
                assert_eq!(*spec, want);
            }
        }
        let backup = !self.attempts_of(task).is_empty();
        let todo = self.next_todo(now, worker);
        if !backup {
            assert_eq!(Some(task), todo, "{worker} got the wrong TODO task (queue {:?})", self.todo);
            self.todo.retain(|t| *t != task);
        }
        if backup {
            assert_eq!(todo, None, "backup of {task} on {worker} while it may take a TODO task");
            let at = now - self.start;
            assert_eq!(self.backup_due(now), Some(task), "backup of {task} at {at:?}");
            self.backed_up.insert(task);
            self.counts.speculative += 1;
        }
        self.counts.launched += 1;
        if task.kind == TaskKind::Map && self.reduce_phase {
            self.counts.map_reruns += 1;
        }
        self.workers[worker.0 as usize].stats.launched += 1;
        let started = now;
        self.running.insert(attempt, Running { task, worker, started, backup });
    }

    pub(super) fn rest_unreachable(&mut self, now: Instant, worker: WorkerId) {
        let c = &self.config;
        let m = &mut self.workers[worker.0 as usize];
        m.wake = Some(now + backoff(m.unreachable, c.retry_base, c.retry_cap));
        m.unreachable += 1;
        m.silent_since.get_or_insert(now);
        m.needs_probe = true;
    }

    /// The worker answered: it is no longer silent.
    pub(super) fn answered(&mut self, worker: WorkerId) {
        let m = &mut self.workers[worker.0 as usize];
        (m.unreachable, m.silent_since) = (0, None);
    }

    /// When the job must give up: `no_worker_timeout` after the last worker fell silent,
    /// if every worker is silent.
    pub(super) fn no_worker_deadline(&self) -> Option<Instant> {
        let silent: Option<Vec<Instant>> = self.workers.iter().map(|m| m.silent_since).collect();
        silent?.into_iter().max().map(|t| t + self.config.no_worker_timeout)
    }

    /// Updates the model for an event about to be fed; says what the next drain holds.
    pub(super) fn on_event(&mut self, now: Instant, event: &Event) -> Expect {
        let mut expect = Expect::default();
        match event {
            Event::WorkerLeft { .. } | Event::WorkerJoined => panic!("the model has a fixed set of workers: {event:?}"),
            // Accepted only for a Wait in flight; else nothing changes.
            Event::WaitAnswered { wait } => {
                if let Some((worker, _)) = self.waits.remove(wait) {
                    self.answered(worker);
                }
            }
            Event::WaitFailed { wait, reason } => {
                if let Some((worker, _)) = self.waits.remove(wait) {
                    self.last_unreachable = Some(WorkerFailure { worker, reason: reason.clone() });
                    self.rest_unreachable(now, worker);
                }
            }
            Event::Succeeded { attempt, output } => {
                let Some(run) = self.running.remove(attempt) else {
                    expect.discard = Some(output.clone());
                    return expect;
                };
                self.counts.succeeded += 1;
                let m = &mut self.workers[run.worker.0 as usize];
                (m.timeouts, m.failures, m.busy) = (0, 0, 0);
                self.answered(run.worker);
                if self.accepted.contains_key(&run.task) {
                    expect.discard = Some(output.clone());
                    return expect;
                }
                if run.backup {
                    self.counts.speculative_won += 1;
                }
                self.workers[run.worker.0 as usize].stats.accepted += 1;
                self.accepted.insert(run.task, output.clone());
                self.accepted_by.insert(run.task, *attempt);
                let (TaskOutput::Map { counters, .. } | TaskOutput::Reduce { counters, .. }) = output;
                self.task_counters.insert(run.task, counters.clone());
                if let TaskOutput::Map { ranges, skipped_records, .. } = output {
                    let bytes = ranges.iter().map(|r| r.bytes).sum();
                    self.map_sizes.insert(run.task, (bytes, *skipped_records));
                }
                if (run.task.kind == TaskKind::Map) != self.reduce_phase {
                    self.durations.push(now - run.started);
                }
                if !self.reduce_phase && self.maps_done() {
                    self.reduce_phase = true;
                    self.durations.clear();
                    self.todo = (0..self.reducers).map(reduce).collect();
                }
            }
            Event::Failed { attempt, reason } => {
                if let Some(run) = self.running.remove(attempt) {
                    self.on_failed(now, *attempt, run, reason, &mut expect);
                }
            }
        }
        expect
    }

    pub(super) fn on_finished(&mut self, now: Instant, result: &Result<JobReport, JobError>, expect: &mut Expect) {
        match result {
            Err(e @ JobError::TaskFailed { .. }) => {
                assert_eq!(expect.job_fails.take().as_ref(), Some(e), "a job failure no task earned");
            }
            Err(e @ JobError::Refused { .. }) => panic!("the model's workers run every job: {e}"),
            Err(JobError::NoWorkers { waited, last }) => {
                assert!(!self.reliable, "NoWorkers though worker-0 always answers");
                assert_eq!(*waited, self.config.no_worker_timeout);
                assert_eq!(*last, self.last_unreachable, "NoWorkers names the wrong last error");
                let deadline = self.no_worker_deadline().expect("NoWorkers while a worker is not silent");
                // Not later either: `after_drain` checked every earlier drain.
                assert_eq!(now - self.start, deadline - self.start, "NoWorkers at the wrong time");
            }
            Ok(report) => {
                assert!(expect.job_fails.is_none(), "the job succeeded though a task used its budget");
                assert_eq!(*report, self.report(now));
            }
        }
    }

    /// The report of a successful job: exactly one accepted output per reduce, and one per
    /// map but for maps whose output was lost (and not yet replaced) after every reduce
    /// that needed it read it.
    pub(super) fn report(&self, now: Instant) -> JobReport {
        for task in (0..self.reducers).map(reduce) {
            assert!(self.accepted.contains_key(&task), "the job succeeded without {task}");
        }
        for task in (0..self.maps()).map(map) {
            assert!(self.map_sizes.contains_key(&task), "the job succeeded, {task} never done");
        }
        let intermediate_bytes = self.map_sizes.values().map(|s| s.0).sum();
        let skipped = self.map_sizes.values().map(|s| s.1).sum();
        let (mut output_records, mut outputs, mut counters) = (0, Vec::new(), Counters::new());
        for output in self.accepted.values() {
            if let TaskOutput::Reduce { path, records, .. } = output {
                output_records += records;
                outputs.push(path.clone());
            }
        }
        for c in self.task_counters.values() {
            crate::counters::merge(&mut counters, c);
        }
        JobReport {
            map_tasks: self.maps(),
            reduce_tasks: self.reducers,
            attempts: self.counts.clone(),
            elapsed_ms: (now - self.start).as_millis() as u64,
            input_bytes: self.shards.iter().map(Shard::len).sum(),
            intermediate_bytes,
            skipped_records: skipped,
            map_outputs_lost: self.map_outputs_lost,
            output_records,
            probations: self.probations,
            workers_on_probation: self.workers.iter().filter(|m| m.probations > 0).count() as u32,
            workers: self.workers.iter().map(|m| m.stats.clone()).collect(),
            counters,
            outputs,
        }
    }

    /// After a drain that did not end the job: every worker has a call in flight or rests
    /// until later, the model's queue holds exactly the phase's TODO tasks, and the job has
    /// not outlived `no_worker_timeout` after the last worker fell silent.
    pub(super) fn after_drain(&self, now: Instant) {
        let mut queued: Vec<TaskId> = self.todo.iter().copied().collect();
        queued.sort_unstable();
        assert_eq!(queued, self.todo_tasks(), "the model's TODO queue went astray");
        for (i, m) in self.workers.iter().enumerate() {
            let worker = w(i as u32);
            let resting = m.wake.is_some_and(|t| t > now);
            assert!(self.busy(worker) || resting, "{worker} forgotten: no call in flight and no rest");
        }
        let idle = self.waits.values().find(|(_, idle)| *idle);
        if let (Some(task), Some((worker, _))) = (self.backup_due(now), idle) {
            panic!("a backup of {task} is due, and {worker} is left in its idle Wait");
        }
        if let Some(deadline) = self.no_worker_deadline() {
            let timeout = self.config.no_worker_timeout;
            assert!(now < deadline, "every worker silent for {timeout:?}, the job goes on");
        }
    }
}
