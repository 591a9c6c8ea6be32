//! Tests of the scheduler, driven by [`Sim`]: a fake cluster with a fake clock in the
//! style of quinn-proto's `Pair`. The clock starts at one `Instant::now()` and only moves
//! when a test moves it, jumping straight to the next reply or to `poll_timeout()`.
//! Nothing sleeps, so every run is the same.
//!
//! - Scenarios and tables: one rule of the module docs each.
//! - Properties: random plans, knobs and worker behaviour, checked against a model of the
//!   rules ([`Model`]) after every action the scheduler takes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::shard::Segment;

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn map(index: u32) -> TaskId {
    TaskId { kind: TaskKind::Map, index }
}

fn reduce(index: u32) -> TaskId {
    TaskId { kind: TaskKind::Reduce, index }
}

fn w(index: u32) -> WorkerId {
    WorkerId(index)
}

/// `n` shards; shard `i` is `in/i.txt[0..1000 + i)`.
fn shards(n: u32) -> Vec<Shard> {
    (0..n)
        .map(|i| Shard { segments: vec![Segment { path: format!("in/{i}.txt"), start: 0, end: 1000 + u64::from(i) }] })
        .collect()
}

/// The defaults without speculation, so that no backup joins a scenario uninvited.
fn quiet() -> SchedulerConfig {
    SchedulerConfig { speculation: false, ..SchedulerConfig::default() }
}

/// Speculation on, with the given threshold and limit.
fn speculative(min: Duration, factor: f64, max_backups: u32) -> SchedulerConfig {
    SchedulerConfig {
        speculation: true,
        speculation_min: min,
        speculation_factor: factor,
        max_backups,
        ..SchedulerConfig::default()
    }
}

/// What a worker writes for an attempt: files named after the task and the attempt, one
/// per partition for a map (a reduce gets every range of its partition).
fn output_for(task: TaskId, attempt: AttemptId, reducers: u32) -> TaskOutput {
    let dir = format!("{task}/{attempt}");
    match task.kind {
        TaskKind::Map => TaskOutput::Map {
            files: (0..reducers)
                .map(|partition| PartitionFile {
                    partition,
                    path: format!("{dir}/part-{partition}"),
                    offset: 1000 * u64::from(partition),
                    bytes: 100 + u64::from(partition),
                    records: 10,
                })
                .collect(),
            input_records: 7,
        },
        TaskKind::Reduce => {
            TaskOutput::Reduce { path: format!("{dir}/out"), records: 5 + u64::from(task.index), bytes: 50 }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------

/// A Run the scheduler asked for that has not ended yet.
#[derive(Debug, Clone)]
struct RunCall {
    worker: WorkerId,
    attempt: AttemptId,
    task: TaskId,
    spec: TaskSpec,
    deadline: Duration,
    sent: Instant,
}

/// A Wait the scheduler asked for that has not ended yet.
#[derive(Debug, Clone, Copy)]
struct WaitCall {
    worker: WorkerId,
    for_: Duration,
    sent: Instant,
}

/// A call as a test reads it in a worker's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Run(TaskId),
    /// A zero Wait.
    Probe,
    /// A Wait of `idle_wait`.
    Idle,
}

/// How a simulated worker answers on its own. Runs are never answered on their own by an
/// `Up` worker: the test decides (succeed, fail, time out, lose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Answers a Wait when it is over.
    Up,
    /// Every call to it fails at once, as a refused connection does.
    Down,
}

/// The scheduler, a fake clock and the calls in flight.
struct Sim {
    sched: Scheduler,
    /// The one real `Instant` of the test; `now` is `start` plus what the test advanced.
    start: Instant,
    now: Instant,
    reducers: u32,
    health: Vec<Health>,
    runs: Vec<RunCall>,
    waits: Vec<WaitCall>,
    /// Every Run ever asked for, in order.
    launched: Vec<RunCall>,
    /// Every action drained, with the time since `start`.
    log: Vec<(Duration, Action)>,
    finished: Option<Result<JobReport, JobError>>,
}

impl Sim {
    fn new(shards_n: u32, reducers: u32, workers: u32, config: SchedulerConfig) -> Sim {
        let plan = JobPlan { shards: shards(shards_n), reducers, workers };
        let sched = Scheduler::new(plan, config).expect("a valid plan and config");
        let start = Instant::now();
        Sim {
            sched,
            start,
            now: start,
            reducers,
            health: vec![Health::Up; workers as usize],
            runs: Vec::new(),
            waits: Vec::new(),
            launched: Vec::new(),
            log: Vec::new(),
            finished: None,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Drains `poll_action` at `now` and records what it asked for.
    fn step(&mut self) -> Vec<Action> {
        let mut drained = Vec::new();
        while let Some(action) = self.sched.poll_action(self.now) {
            self.record(&action);
            drained.push(action);
            assert!(drained.len() < 10_000, "poll_action never returns None");
        }
        drained
    }

    fn record(&mut self, action: &Action) {
        if self.finished.is_some() {
            assert!(matches!(action, Action::Discard(_)), "{action:?} after Finished");
        }
        match action {
            Action::Run { worker, attempt, task, spec, deadline } => {
                self.assert_free(*worker, action);
                let run = RunCall {
                    worker: *worker,
                    attempt: *attempt,
                    task: *task,
                    spec: spec.clone(),
                    deadline: *deadline,
                    sent: self.now,
                };
                self.runs.push(run.clone());
                self.launched.push(run);
            }
            Action::Wait { worker, for_, .. } => {
                self.assert_free(*worker, action);
                self.waits.push(WaitCall { worker: *worker, for_: *for_, sent: self.now });
            }
            Action::Wake { worker } => {
                // The runtime drops the call: it never answers.
                let wait = self.waits.iter().position(|c| c.worker == *worker);
                let wait = wait.unwrap_or_else(|| panic!("woke {worker} with no Wait in flight"));
                assert!(!self.waits[wait].for_.is_zero(), "woke {worker} out of a probe");
                self.waits.remove(wait);
            }
            Action::Discard(_) => {}
            Action::Finished(result) => self.finished = Some(result.clone()),
        }
        self.log.push((self.elapsed(), action.clone()));
    }

    /// One RPC per worker at a time: the runtime holds one call per worker.
    fn assert_free(&self, worker: WorkerId, action: &Action) {
        let busy = self.runs.iter().any(|r| r.worker == worker) || self.waits.iter().any(|c| c.worker == worker);
        assert!(!busy, "{action:?} while {worker} has a call in flight");
    }

    /// Feeds `event` at `now` without draining; forgets the call it ends, if in flight.
    fn feed(&mut self, event: Event) {
        match &event {
            Event::Succeeded { attempt, .. } | Event::Failed { attempt, .. } => {
                self.runs.retain(|r| r.attempt != *attempt);
            }
            Event::WorkerIdle(worker) | Event::Unreachable(worker) => {
                self.waits.retain(|c| c.worker != *worker);
            }
        }
        self.sched.handle_event(self.now, event);
    }

    fn is_up(&self, worker: WorkerId) -> bool {
        self.health[worker.0 as usize] == Health::Up
    }

    /// Delivers one reply that workers give on their own and that is due by `now`.
    fn deliver_due(&mut self) -> bool {
        if let Some(run) = self.runs.iter().find(|r| !self.is_up(r.worker)) {
            let reason = Failure::Unreachable("connection refused".into());
            let attempt = run.attempt;
            self.feed(Event::Failed { attempt, reason });
            return true;
        }
        if let Some(call) = self.waits.iter().find(|c| !self.is_up(c.worker)) {
            let worker = call.worker;
            self.feed(Event::Unreachable(worker));
            return true;
        }
        let due = self
            .waits
            .iter()
            .filter(|c| c.sent + c.for_ <= self.now)
            .min_by_key(|c| (c.sent + c.for_, c.worker))
            .copied();
        if let Some(call) = due {
            self.feed(Event::WorkerIdle(call.worker));
            return true;
        }
        false
    }

    /// Drains, delivers the replies due now, drains again, until nothing changes without
    /// time passing. Then `poll_timeout` must be in the future: a timeout at or before
    /// `now` with nothing to do would make the runtime spin.
    fn run_until_idle(&mut self) {
        loop {
            self.step();
            if !self.deliver_due() {
                break;
            }
        }
        if let Some(t) = self.sched.poll_timeout() {
            assert!(
                t > self.now,
                "poll_timeout is {:?} at {:?} though poll_action has nothing to do",
                t.saturating_duration_since(self.start),
                self.elapsed()
            );
        }
    }

    /// The next moment something happens without the test: a Wait ends or a timeout.
    fn next_wake(&self) -> Option<Instant> {
        let replies = self.waits.iter().filter(|c| self.is_up(c.worker)).map(|c| c.sent + c.for_).min();
        replies.into_iter().chain(self.sched.poll_timeout()).min()
    }

    /// Moves the clock to `until`, stopping at every reply and timeout on the way.
    fn advance_to(&mut self, until: Instant) {
        assert!(until >= self.now, "time goes forward only");
        self.run_until_idle();
        while let Some(t) = self.next_wake().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.run_until_idle();
        }
        self.now = until;
        self.run_until_idle();
    }

    fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Jumps from timeout to timeout until the job ends, which must be by `limit` after
    /// the start; returns the time since the start.
    fn jump_to_end(&mut self, limit: Duration) -> Duration {
        while self.finished.is_none() {
            assert!(self.elapsed() <= limit, "the job still runs at {:?}", self.elapsed());
            self.jump_to_timeout();
        }
        self.elapsed()
    }

    /// Jumps to `poll_timeout()`; returns the time since the start.
    fn jump_to_timeout(&mut self) -> Duration {
        let t = self.sched.poll_timeout().expect("a timeout is pending");
        self.advance_to(t);
        self.elapsed()
    }

    fn run(&self, attempt: AttemptId) -> RunCall {
        let run = self.runs.iter().find(|r| r.attempt == attempt);
        run.cloned().unwrap_or_else(|| panic!("{attempt} is not running"))
    }

    fn runs_of(&self, task: TaskId) -> Vec<RunCall> {
        self.runs.iter().filter(|r| r.task == task).cloned().collect()
    }

    /// The one running attempt of `task`.
    fn run_of(&self, task: TaskId) -> RunCall {
        match self.runs_of(task).as_slice() {
            [run] => run.clone(),
            runs => panic!("{task} has {} running attempts, not one", runs.len()),
        }
    }

    /// The tasks running, in the order they were launched.
    fn running(&self) -> Vec<TaskId> {
        self.runs.iter().map(|r| r.task).collect()
    }

    /// How often `task` was launched.
    fn launches(&self, task: TaskId) -> usize {
        self.launched.iter().filter(|r| r.task == task).count()
    }

    /// The calls `worker` got, with their times.
    fn calls_to(&self, worker: WorkerId) -> Vec<(Duration, Call)> {
        let call = |action: &Action| match action {
            Action::Run { worker: w, task, .. } if *w == worker => Some(Call::Run(*task)),
            Action::Wait { worker: w, for_, .. } if *w == worker => {
                Some(if for_.is_zero() { Call::Probe } else { Call::Idle })
            }
            _ => None,
        };
        self.log.iter().filter_map(|(at, a)| call(a).map(|c| (*at, c))).collect()
    }

    fn discarded(&self) -> Vec<TaskOutput> {
        let discard = |a: &Action| match a {
            Action::Discard(output) => Some(output.clone()),
            _ => None,
        };
        self.log.iter().filter_map(|(_, a)| discard(a)).collect()
    }

    fn output_of(&self, attempt: AttemptId) -> TaskOutput {
        output_for(self.run(attempt).task, attempt, self.reducers)
    }

    /// The attempt succeeds now; returns what it wrote.
    fn succeed(&mut self, attempt: AttemptId) -> TaskOutput {
        let output = self.output_of(attempt);
        self.feed(Event::Succeeded { attempt, output: output.clone() });
        self.run_until_idle();
        output
    }

    fn succeed_task(&mut self, task: TaskId) -> TaskOutput {
        let attempt = self.run_of(task).attempt;
        self.succeed(attempt)
    }

    /// The attempt fails now with a task error.
    fn fail(&mut self, attempt: AttemptId, why: &str) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::Task(why.into()) });
        self.run_until_idle();
    }

    /// The connection breaks under the attempt now.
    fn lose(&mut self, attempt: AttemptId) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::Unreachable("connection reset".into()) });
        self.run_until_idle();
    }

    /// The clock runs to the attempt's deadline, where the runtime gives up on it.
    fn time_out(&mut self, attempt: AttemptId) {
        let run = self.run(attempt);
        self.advance_to(run.sent + run.deadline);
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::TimedOut });
        self.run_until_idle();
    }

    /// The worker stops answering: its calls in flight fail, and so will the next ones.
    fn kill(&mut self, worker: WorkerId) {
        self.health[worker.0 as usize] = Health::Down;
        self.run_until_idle();
    }

    fn revive(&mut self, worker: WorkerId) {
        self.health[worker.0 as usize] = Health::Up;
    }

    /// Succeeds the oldest running attempt, 10ms later, until the job ends.
    fn finish_job(&mut self) -> JobReport {
        for _ in 0..10_000 {
            self.run_until_idle();
            if self.finished.is_some() {
                return self.report();
            }
            let oldest = self.runs.first().expect("the job neither runs nor ends").attempt;
            self.advance(ms(10));
            if self.runs.iter().any(|r| r.attempt == oldest) {
                self.succeed(oldest);
            }
        }
        panic!("the job did not end");
    }

    fn report(&self) -> JobReport {
        match &self.finished {
            Some(Ok(report)) => report.clone(),
            other => panic!("expected a successful job, got {other:?}"),
        }
    }

    fn error(&self) -> JobError {
        match &self.finished {
            Some(Err(e)) => e.clone(),
            other => panic!("expected a failed job, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plans, knobs and pure helpers
// ---------------------------------------------------------------------------------------

#[test]
fn new_rejects_plans_and_knobs_that_cannot_work() {
    let plan = || JobPlan { shards: shards(1), reducers: 1, workers: 1 };
    let knobs = SchedulerConfig::default;
    let cases: Vec<(JobPlan, SchedulerConfig, ConfigError)> = vec![
        (JobPlan { reducers: 0, ..plan() }, knobs(), ConfigError::ZeroReducers),
        (JobPlan { workers: 0, ..plan() }, knobs(), ConfigError::NoWorkers),
        (
            plan(),
            SchedulerConfig { task_timeout: Duration::ZERO, ..knobs() },
            ConfigError::ZeroDuration("task_timeout"),
        ),
        (
            plan(),
            SchedulerConfig { max_task_timeout: Duration::ZERO, ..knobs() },
            ConfigError::ZeroDuration("max_task_timeout"),
        ),
        (plan(), SchedulerConfig { retry_base: Duration::ZERO, ..knobs() }, ConfigError::ZeroDuration("retry_base")),
        (plan(), SchedulerConfig { retry_cap: Duration::ZERO, ..knobs() }, ConfigError::ZeroDuration("retry_cap")),
        (
            plan(),
            SchedulerConfig { no_worker_timeout: Duration::ZERO, ..knobs() },
            ConfigError::ZeroDuration("no_worker_timeout"),
        ),
        (
            plan(),
            SchedulerConfig { probation_base: Duration::ZERO, ..knobs() },
            ConfigError::ZeroDuration("probation_base"),
        ),
        (plan(), SchedulerConfig { idle_wait: Duration::ZERO, ..knobs() }, ConfigError::ZeroDuration("idle_wait")),
        (plan(), SchedulerConfig { max_attempts: 0, ..knobs() }, ConfigError::ZeroAttempts),
        (
            plan(),
            SchedulerConfig { idle_wait: MAX_IDLE_WAIT + ms(1), ..knobs() },
            ConfigError::IdleWaitTooLong(MAX_IDLE_WAIT + ms(1)),
        ),
        (plan(), SchedulerConfig { speculation_factor: 0.5, ..knobs() }, ConfigError::BadSpeculationFactor),
        (plan(), SchedulerConfig { speculation_factor: f64::NAN, ..knobs() }, ConfigError::BadSpeculationFactor),
    ];
    for (plan, config, want) in cases {
        assert_eq!(Scheduler::new(plan.clone(), config.clone()).err(), Some(want), "{plan:?} {config:?}");
    }
    assert!(Scheduler::new(plan(), knobs()).is_ok());
    assert!(Scheduler::new(plan(), SchedulerConfig { idle_wait: MAX_IDLE_WAIT, ..knobs() }).is_ok());
}

#[test]
fn backoff_doubles_from_its_base_and_stops_at_its_cap() {
    let huge = Duration::from_secs(u64::MAX / 2);
    let cases = [
        (0, ms(100), secs(5), ms(100)),
        (1, ms(100), secs(5), ms(200)),
        (5, ms(100), secs(5), ms(3200)),
        (6, ms(100), secs(5), secs(5)),
        (31, secs(1), secs(10), secs(10)),
        (32, secs(1), secs(10), secs(10)),
        (u32::MAX, secs(1), secs(10), secs(10)),
        (2, huge, Duration::MAX, Duration::MAX),
    ];
    for (k, base, cap, want) in cases {
        assert_eq!(backoff(k, base, cap), want, "backoff({k}, {base:?}, {cap:?})");
    }
}

// ---------------------------------------------------------------------------------------
// TODO -> PROCESSING -> DONE, map then reduce
// ---------------------------------------------------------------------------------------

#[test]
fn a_job_runs_every_map_then_every_reduce_and_reports_the_accepted_outputs() {
    let mut sim = Sim::new(3, 2, 2, quiet());
    sim.run_until_idle();
    assert_eq!(sim.running(), [map(0), map(1)]);

    sim.advance(ms(100));
    sim.succeed_task(map(0));
    assert_eq!(sim.running(), [map(1), map(2)]);
    sim.succeed_task(map(1));
    assert_eq!(sim.running(), [map(2)], "no reduce while map-00002 runs");
    sim.succeed_task(map(2));
    // worker-1 was in an idle Wait: it is woken for the second reduce, not left to wait.
    assert_eq!(sim.running(), [reduce(0), reduce(1)]);
    assert!(sim.log.iter().any(|(_, a)| matches!(a, Action::Wake { worker } if *worker == w(1))));

    // Partition 1 finishes first; the report still lists outputs in partition order.
    sim.succeed_task(reduce(1));
    assert!(sim.finished.is_none());
    sim.succeed_task(reduce(0));

    let want = JobReport {
        map_tasks: 3,
        reduce_tasks: 2,
        attempts: AttemptCounts { launched: 5, succeeded: 5, ..AttemptCounts::default() },
        elapsed_ms: 100, // no idle Wait sat out: every task replied at 100 ms
        input_bytes: 1000 + 1001 + 1002,
        intermediate_bytes: 3 * (100 + 101),
        output_records: 5 + 6,
        probations: 0,
        workers_on_probation: 0,
        // worker-0 ran map-0, map-2 and reduce-0; worker-1 ran map-1 and, after its idle
        // Wait, reduce-1.
        workers: vec![
            WorkerReport { launched: 3, accepted: 3, ..WorkerReport::default() },
            WorkerReport { launched: 2, accepted: 2, ..WorkerReport::default() },
        ],
        outputs: vec!["reduce-00000/attempt-3/out".into(), "reduce-00001/attempt-4/out".into()],
    };
    assert_eq!(sim.report(), want);
}

#[test]
fn a_reduce_gets_every_run_of_its_partition_from_every_map() {
    // Map attempts that spilled without combining answer one run of ranges per spill.
    let mut sim = Sim::new(2, 2, 2, quiet());
    sim.run_until_idle();
    let runs = |task: TaskId, n: u32| TaskOutput::Map {
        files: (0..n * 2)
            .map(|i| PartitionFile {
                partition: i % 2,
                path: format!("{task}/out"),
                offset: u64::from(i) * 10,
                bytes: 10,
                records: 1,
            })
            .collect(),
        input_records: 3,
    };
    for (task, n) in [(map(0), 3), (map(1), 1)] {
        let attempt = sim.run_of(task).attempt;
        sim.feed(Event::Succeeded { attempt, output: runs(task, n) });
        sim.run_until_idle();
    }
    let inputs = |p: u32| match sim.run_of(reduce(p)).spec {
        TaskSpec::Reduce { inputs, .. } => inputs.iter().map(|f| (f.path.clone(), f.offset)).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let at = |task: TaskId, offsets: &[u64]| offsets.iter().map(|&o| (format!("{task}/out"), o)).collect::<Vec<_>>();
    assert_eq!(inputs(0), [at(map(0), &[0, 20, 40]), at(map(1), &[0])].concat());
    assert_eq!(inputs(1), [at(map(0), &[10, 30, 50]), at(map(1), &[10])].concat());
    sim.succeed_task(reduce(0));
    sim.succeed_task(reduce(1));
    assert_eq!(sim.report().intermediate_bytes, 80);
}

#[test]
fn status_follows_tasks_from_todo_to_processing_to_done() {
    let mut sim = Sim::new(2, 1, 1, quiet());
    let status = |phase, maps_done, reduces_done, running| JobStatus {
        phase,
        maps_done,
        maps_total: 2,
        reduces_done,
        reduces_total: 1,
        running,
    };
    assert_eq!(sim.sched.status(), status(Phase::Map, 0, 0, 0));
    sim.run_until_idle();
    assert_eq!(sim.sched.status(), status(Phase::Map, 0, 0, 1));
    sim.succeed_task(map(0));
    assert_eq!(sim.sched.status(), status(Phase::Map, 1, 0, 1));
    sim.succeed_task(map(1));
    assert_eq!(sim.sched.status(), status(Phase::Reduce, 2, 0, 1));
    sim.succeed_task(reduce(0));
    assert_eq!(sim.sched.status(), status(Phase::Done, 2, 1, 0));
    assert_eq!(
        sim.calls_to(w(0)),
        [
            (Duration::ZERO, Call::Run(map(0))),
            (Duration::ZERO, Call::Run(map(1))),
            (Duration::ZERO, Call::Run(reduce(0)))
        ]
    );
}

#[test]
fn reduce_tasks_start_after_every_map_is_done_and_read_the_accepted_map_files() {
    let mut sim = Sim::new(2, 2, 3, quiet());
    sim.run_until_idle();
    sim.succeed_task(map(0));
    let first = sim.run_of(map(1)).attempt;
    sim.fail(first, "bad disk");
    sim.advance(secs(5));
    assert!(sim.launched.iter().all(|r| r.task.kind == TaskKind::Map), "a reduce ran before every map was done");
    assert_eq!(sim.sched.status().phase, Phase::Map);

    let retry = sim.run_of(map(1)).attempt;
    assert_eq!(retry, AttemptId(2));
    sim.succeed(retry);
    sim.advance(ms(50));
    let inputs = |p: u32| {
        let range = |path: String| PartitionFile {
            partition: p,
            path,
            offset: 1000 * u64::from(p),
            bytes: 100 + u64::from(p),
            records: 10,
        };
        vec![range(format!("map-00000/attempt-0/part-{p}")), range(format!("map-00001/attempt-2/part-{p}"))]
    };
    for p in 0..2 {
        let spec = TaskSpec::Reduce { partition: p, inputs: inputs(p) };
        assert_eq!(sim.run_of(reduce(p)).spec, spec);
    }
}

#[test]
fn a_job_without_shards_starts_with_its_reduce_tasks() {
    let mut sim = Sim::new(0, 2, 2, quiet());
    assert_eq!(sim.sched.status().phase, Phase::Reduce);
    sim.run_until_idle();
    assert_eq!(sim.running(), [reduce(0), reduce(1)]);
    let no_inputs = TaskSpec::Reduce { partition: 1, inputs: Vec::new() };
    assert_eq!(sim.run_of(reduce(1)).spec, no_inputs);

    let report = sim.finish_job();
    assert_eq!((report.map_tasks, report.reduce_tasks), (0, 2));
    assert_eq!((report.input_bytes, report.intermediate_bytes), (0, 0));
    assert_eq!(report.outputs, ["reduce-00000/attempt-0/out", "reduce-00001/attempt-1/out"]);
}

#[test]
fn a_worker_with_nothing_to_do_waits_idle_wait_and_asks_again() {
    let mut sim = Sim::new(1, 1, 2, quiet());
    sim.run_until_idle();
    let wait = sim.log.iter().find_map(|(_, a)| match a {
        Action::Wait { worker, for_, deadline } if *worker == w(1) => Some((*for_, *deadline)),
        _ => None,
    });
    assert_eq!(wait, Some((ms(50), ms(50) + secs(60))));
    sim.advance(ms(100));
    let idle = [(Duration::ZERO, Call::Idle), (ms(50), Call::Idle), (ms(100), Call::Idle)];
    assert_eq!(sim.calls_to(w(1)), idle);
}

#[test]
fn after_finished_poll_action_returns_none_and_poll_timeout_is_none() {
    let mut sim = Sim::new(1, 1, 2, quiet());
    sim.finish_job();
    let actions = sim.log.len();
    for d in [Duration::ZERO, secs(1), secs(3600)] {
        sim.now += d;
        assert!(sim.sched.poll_action(sim.now).is_none());
        assert_eq!(sim.sched.poll_timeout(), None);
    }
    assert_eq!(sim.log.len(), actions);
}

#[test]
fn after_a_failed_job_late_outputs_are_only_discarded() {
    let config = SchedulerConfig { max_attempts: 1, ..quiet() };
    let mut sim = Sim::new(2, 1, 2, config);
    sim.run_until_idle();
    let doomed = sim.run_of(map(0)).attempt;
    let survivor = sim.run_of(map(1)).attempt;
    sim.fail(doomed, "boom");
    assert!(matches!(sim.error(), JobError::TaskFailed { .. }));
    assert_eq!(sim.sched.poll_timeout(), None);
    sim.advance(secs(60));
    assert!(sim.sched.poll_action(sim.now).is_none());

    let before = sim.log.len();
    let late = sim.succeed(survivor);
    sim.feed(Event::WorkerIdle(w(0)));
    sim.feed(Event::Failed { attempt: doomed, reason: Failure::TimedOut });
    sim.run_until_idle();
    let after: Vec<_> = sim.log[before..].iter().map(|(_, a)| a.clone()).collect();
    assert!(matches!(after.as_slice(), [Action::Discard(o)] if *o == late), "{after:?}");
    assert_eq!(sim.sched.status().phase, Phase::Done);
}

// ---------------------------------------------------------------------------------------
// Failures and the budget
// ---------------------------------------------------------------------------------------

#[test]
fn a_failed_attempt_sends_its_task_back_to_todo_and_it_runs_again() {
    let mut sim = Sim::new(1, 1, 1, quiet());
    sim.run_until_idle();
    let first = sim.run_of(map(0)).attempt;
    sim.fail(first, "out of memory");
    let second = sim.run_of(map(0));
    assert_ne!(second.attempt, first);
    assert_eq!(second.sent, sim.now);
    assert_eq!(sim.sched.status().maps_done, 0);

    let report = sim.finish_job();
    let want = AttemptCounts { launched: 3, succeeded: 2, failed: 1, ..AttemptCounts::default() };
    assert_eq!(report.attempts, want);
}

#[test]
fn a_failed_attempt_requeues_its_task_only_when_no_other_attempt_runs() {
    let mut sim = Sim::new(2, 1, 3, speculative(secs(1), 2.0, 1));
    sim.run_until_idle();
    sim.advance(ms(100));
    sim.succeed_task(map(0));
    sim.advance_to(sim.start + secs(1));
    let [original, backup] = sim.runs_of(map(1)).try_into().expect("a backup of map-00001");

    sim.advance(ms(200));
    sim.fail(original.attempt, "bad record");
    sim.advance(secs(1));
    assert_eq!(sim.launches(map(1)), 2, "requeued though its backup still runs");

    // Both attempts failed on their workers (the original's, then the backup's): worker-2,
    // in an idle Wait, is woken to take it at once; the backup's worker, on which it
    // failed, is not woken for it and waits.
    assert_eq!((backup.worker, original.worker), (w(0), w(1)));
    sim.fail(backup.attempt, "bad record");
    let third = sim.run_of(map(1));
    assert_eq!((sim.launches(map(1)), third.worker, third.sent), (3, w(2), sim.now));
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(sim.elapsed(), Call::Idle)));

    let report = sim.finish_job();
    assert_eq!((report.attempts.failed, report.attempts.speculative), (2, 1));
}

#[test]
fn a_task_failing_max_attempts_times_fails_the_job_naming_it_and_its_last_failure() {
    let cases = [
        (
            vec![Failure::Task("a".into()), Failure::Task("b".into()), Failure::Task("c".into())],
            "attempt-2 on worker-0: c",
        ),
        (
            vec![Failure::TimedOut, Failure::Task("b".into()), Failure::TimedOut],
            "attempt-2 on worker-0: deadline passed",
        ),
    ];
    for (failures, last) in cases {
        let config = SchedulerConfig { max_attempts: 3, probation_after: 0, ..quiet() };
        let mut sim = Sim::new(1, 1, 1, config);
        sim.run_until_idle();
        for failure in &failures {
            assert!(sim.finished.is_none(), "{failures:?}: failed early");
            let attempt = sim.run_of(map(0)).attempt;
            match failure {
                Failure::Task(why) => sim.fail(attempt, why),
                Failure::TimedOut => sim.time_out(attempt),
                Failure::Unreachable(_) => unreachable!(),
            }
        }
        let want =
            JobError::TaskFailed { task: map(0), input: "in/0.txt[0..1000)".into(), attempts: 3, last: last.into() };
        assert_eq!(sim.error(), want);
        assert_eq!(sim.launches(map(0)), 3);
    }
}

#[test]
fn a_failing_reduce_task_names_its_partition() {
    let config = SchedulerConfig { max_attempts: 1, ..quiet() };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    sim.succeed_task(map(0));
    sim.succeed_task(map(1));
    let attempt = sim.run_of(reduce(0)).attempt;
    sim.fail(attempt, "corrupt record");
    let want = JobError::TaskFailed {
        task: reduce(0),
        input: "partition 0 of 2 map outputs".into(),
        attempts: 1,
        last: "attempt-2 on worker-0: corrupt record".into(),
    };
    assert_eq!(sim.error(), want);
}

#[test]
fn losses_to_an_unreachable_worker_do_not_use_the_task_budget() {
    let config = SchedulerConfig { max_attempts: 2, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    for _ in 0..3 {
        let attempt = sim.run_of(map(0)).attempt;
        sim.lose(attempt);
        sim.jump_to_timeout(); // the worker rests, is probed, answers, gets the task
    }
    let attempt = sim.run_of(map(0)).attempt;
    sim.fail(attempt, "flaky");
    assert!(sim.finished.is_none(), "{:?}", sim.finished);

    let report = sim.finish_job();
    assert_eq!((report.attempts.lost, report.attempts.failed), (3, 1));
}

#[test]
fn a_task_lost_four_times_max_attempts_fails_the_job() {
    let config = SchedulerConfig { max_attempts: 2, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    for i in 0..8 {
        assert!(sim.finished.is_none(), "failed after {i} losses");
        let attempt = sim.run_of(map(0)).attempt;
        sim.lose(attempt);
        if i < 7 {
            sim.jump_to_timeout();
        }
    }
    let want = JobError::TaskFailed {
        task: map(0),
        input: "in/0.txt[0..1000)".into(),
        attempts: 8,
        last: "attempt-7 on worker-0: worker unreachable: connection reset".into(),
    };
    assert_eq!(sim.error(), want);
}

// ---------------------------------------------------------------------------------------
// A task avoids the workers it failed on
// ---------------------------------------------------------------------------------------

#[test]
fn a_task_that_failed_on_a_worker_goes_to_another_one_once_it_is_free() {
    let mut sim = Sim::new(3, 1, 2, quiet());
    sim.run_until_idle();
    assert_eq!(sim.running(), [map(0), map(1)]);
    let first = sim.run_of(map(0)).attempt;
    sim.advance(ms(10));
    sim.fail(first, "bad config");
    // worker-1 could take map-00000 once free: worker-0 skips it for the next TODO task.
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(ms(10), Call::Run(map(2)))));
    assert_eq!(sim.launches(map(0)), 1);

    sim.advance(ms(10));
    sim.succeed_task(map(2));
    // Only map-00000 is TODO: worker-0 waits rather than run it again.
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(ms(20), Call::Idle)));
    sim.advance(ms(100));
    assert_eq!(sim.launches(map(0)), 1, "map-00000 went back to the worker it failed on");
    assert!(sim.calls_to(w(0)).iter().skip(2).all(|(_, c)| *c == Call::Idle));

    sim.succeed_task(map(1));
    let second = sim.run_of(map(0));
    assert_eq!((second.worker, second.sent), (w(1), sim.now));

    // It failed on both workers now: no other worker could take it, so it runs again at once
    // on the one that just failed it.
    sim.advance(ms(10));
    sim.fail(second.attempt, "bad input");
    let third = sim.run_of(map(0));
    assert_eq!((third.worker, third.sent), (w(1), sim.now));

    let report = sim.finish_job();
    assert_eq!((report.attempts.failed, report.attempts.launched), (2, 6));
    assert_eq!((report.workers[0].failed, report.workers[1].failed), (1, 1));
}

#[test]
fn a_misconfigured_worker_fails_each_task_at_most_once_and_the_job_finishes() {
    // worker-0 fails every attempt at once; worker-1 takes 2s per task, longer than the
    // probations: without the rule worker-0 would use up map-00000's 4 attempts alone.
    let config = SchedulerConfig { max_attempts: 4, probation_after: 3, probation_base: secs(1), ..quiet() };
    let (maps, reducers) = (6, 3);
    let mut sim = Sim::new(maps, reducers, 2, config);
    for _ in 0..1000 {
        sim.run_until_idle();
        if sim.finished.is_some() {
            break;
        }
        if let Some(bad) = sim.runs.iter().find(|r| r.worker == w(0)).map(|r| r.attempt) {
            sim.fail(bad, "misconfigured");
            continue;
        }
        match sim.runs.iter().find(|r| r.worker == w(1)).cloned() {
            Some(good) => {
                sim.advance_to(good.sent + secs(2));
                if sim.runs.iter().any(|r| r.attempt == good.attempt) {
                    sim.succeed(good.attempt);
                }
            }
            None => sim.advance(ms(50)),
        }
    }
    let report = sim.report();
    let tasks: Vec<TaskId> = (0..maps).map(map).chain((0..reducers).map(reduce)).collect();
    let on_bad = |t: TaskId| sim.launched.iter().filter(|r| r.task == t && r.worker == w(0)).count();
    for &task in &tasks {
        assert!(on_bad(task) <= 1, "{task} ran {} times on the bad worker", on_bad(task));
    }
    let failed: usize = tasks.iter().map(|&t| on_bad(t)).sum();
    assert!(failed >= 3, "the bad worker ran only {failed} attempts");
    assert_eq!(report.attempts.failed, failed as u64);
    assert!(report.probations >= 1);
    assert_eq!((report.workers[0].accepted, report.workers[1].accepted), (0, u64::from(maps + reducers)));
}

#[test]
fn a_lone_worker_runs_the_task_it_failed_again_up_to_the_budget() {
    let config = SchedulerConfig { max_attempts: 3, probation_after: 0, ..quiet() };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    for i in 0..3 {
        assert!(sim.finished.is_none(), "failed after {i} failures");
        let run = sim.run_of(map(0));
        assert_eq!(run.sent, sim.now);
        sim.advance(ms(10));
        sim.fail(run.attempt, "flaky");
    }
    assert_eq!(
        sim.calls_to(w(0)),
        [(ms(0), Call::Run(map(0))), (ms(10), Call::Run(map(0))), (ms(20), Call::Run(map(0)))]
    );
    let want = JobError::TaskFailed {
        task: map(0),
        input: "in/0.txt[0..1000)".into(),
        attempts: 3,
        last: "attempt-2 on worker-0: flaky".into(),
    };
    assert_eq!(sim.error(), want);
}

#[test]
fn a_task_runs_again_where_it_failed_when_the_other_worker_is_unreachable_or_resting() {
    // worker-1 rests after a refused connection.
    let mut sim = Sim::new(2, 1, 2, flaky_network());
    sim.kill(w(1)); // its attempt of map-00001 is lost: map-00001 is TODO, it rests 100ms
    assert_eq!(sim.running(), [map(0)]);
    sim.advance(ms(10));
    let first = sim.run_of(map(0)).attempt;
    sim.fail(first, "bad input");
    let again = sim.run_of(map(0));
    assert_eq!((again.worker, again.sent), (w(0), sim.start + ms(10)));
    assert_eq!(sim.running(), [map(0)], "map-00001 is still TODO");

    // worker-1 rests on probation (it failed map-00001, then map-00002).
    let config = SchedulerConfig { probation_after: 2, probation_base: secs(5), ..quiet() };
    let mut sim = Sim::new(3, 1, 2, config);
    sim.run_until_idle();
    let attempt = sim.run_of(map(1)).attempt;
    sim.fail(attempt, "oom");
    assert_eq!(sim.run_of(map(2)).worker, w(1), "worker-1 skips map-00001 while worker-0 runs");
    let attempt = sim.run_of(map(2)).attempt;
    sim.fail(attempt, "oom");
    assert_eq!(sim.sched.poll_timeout(), Some(sim.now + secs(5)), "worker-1 on probation");
    let attempt = sim.run_of(map(0)).attempt;
    sim.fail(attempt, "oom");
    // TODO: map-00000, map-00002, map-00001. worker-0 failed map-00000, but no other worker
    // can take it now.
    let again = sim.run_of(map(0));
    assert_eq!((again.worker, again.sent), (w(0), sim.now));
    assert_eq!(sim.running(), [map(0)]);

    // worker-1 is unreachable but no longer rests: its probe is in flight.
    let mut sim = Sim::new(2, 1, 2, flaky_network());
    sim.kill(w(1));
    sim.revive(w(1)); // it will answer its next call
    sim.now = sim.start + ms(100); // its rest ends
    sim.step();
    assert_eq!(sim.calls_to(w(1)).last(), Some(&(ms(100), Call::Probe)));
    let first = sim.run_of(map(0)).attempt;
    sim.feed(Event::Failed { attempt: first, reason: Failure::Task("bad input".into()) });
    sim.step();
    let again = sim.run_of(map(0));
    assert_eq!((again.worker, again.sent), (w(0), sim.now));
    sim.run_until_idle(); // worker-1 answers its probe and takes map-00001
    assert_eq!(sim.running(), [map(0), map(1)]);
    sim.finish_job();
}

// ---------------------------------------------------------------------------------------
// Deadlines and probes
// ---------------------------------------------------------------------------------------

#[test]
fn each_missed_deadline_doubles_the_workers_next_deadline_up_to_the_cap_until_a_success() {
    let config = SchedulerConfig {
        task_timeout: secs(10),
        max_task_timeout: secs(35),
        max_attempts: 10,
        probation_after: 0,
        ..quiet()
    };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    let mut deadlines = Vec::new();
    for _ in 0..4 {
        let run = sim.run_of(map(0));
        deadlines.push(run.deadline);
        sim.time_out(run.attempt);
    }
    assert_eq!(deadlines, [secs(10), secs(20), secs(35), secs(35)]);
    assert_eq!(sim.elapsed(), secs(100));

    let run = sim.run_of(map(0));
    assert_eq!(run.deadline, secs(35));
    sim.succeed(run.attempt);
    assert_eq!(sim.run_of(map(1)).deadline, secs(10), "a success resets the deadline");
}

#[test]
fn a_missed_deadline_lengthens_only_that_workers_deadlines() {
    let mut sim = Sim::new(3, 1, 2, quiet());
    sim.run_until_idle();
    let slow = sim.run_of(map(0)).attempt;
    sim.time_out(slow);
    // map-00000 missed its deadline on worker-0, which takes map-00002 instead.
    let next = sim.run_of(map(2));
    assert_eq!((next.worker, next.deadline), (w(0), secs(120)));
    sim.succeed_task(map(1));
    let retry = sim.run_of(map(0));
    assert_eq!((retry.worker, retry.deadline), (w(1), secs(60)));
}

#[test]
fn a_worker_that_missed_a_deadline_is_probed_before_it_gets_more_work() {
    // The deadline (60s) is as long as no_worker_timeout: silence starts at the failed
    // probe, not at the last answer, so the job goes on.
    let mut sim = Sim::new(2, 1, 1, quiet());
    sim.run_until_idle();
    let run = sim.run_of(map(0));
    sim.advance_to(run.sent + run.deadline);
    sim.health[0] = Health::Down; // the probe will fail
    sim.feed(Event::Failed { attempt: run.attempt, reason: Failure::TimedOut });
    sim.run_until_idle();
    assert!(sim.runs.is_empty(), "work given to a worker whose probe failed");

    sim.revive(w(0));
    sim.jump_to_timeout();
    let calls = [
        (Duration::ZERO, Call::Run(map(0))),
        (secs(60), Call::Probe),
        (secs(60) + ms(100), Call::Probe),
        (secs(60) + ms(100), Call::Run(map(0))),
    ];
    assert_eq!(sim.calls_to(w(0)), calls);
    let probe_deadline = sim.log.iter().find_map(|(_, a)| match a {
        Action::Wait { deadline, .. } => Some(*deadline),
        _ => None,
    });
    assert_eq!(probe_deadline, Some(secs(120)));
}

// ---------------------------------------------------------------------------------------
// Unreachable workers
// ---------------------------------------------------------------------------------------

fn flaky_network() -> SchedulerConfig {
    SchedulerConfig { retry_base: ms(100), retry_cap: secs(1), no_worker_timeout: secs(10), ..quiet() }
}

#[test]
fn an_unreachable_worker_rests_with_exponential_backoff_and_works_again_once_it_answers() {
    let mut sim = Sim::new(1, 1, 1, flaky_network());
    sim.kill(w(0));
    assert_eq!(sim.sched.poll_timeout(), Some(sim.start + ms(100)));
    sim.advance(ms(99));
    assert_eq!(sim.calls_to(w(0)).len(), 1, "called before its rest ended");

    let probes: Vec<Duration> = (0..6).map(|_| sim.jump_to_timeout()).collect();
    assert_eq!(probes, [ms(100), ms(300), ms(700), ms(1500), ms(2500), ms(3500)]);
    sim.revive(w(0));
    assert_eq!(sim.jump_to_timeout(), ms(4500));
    let tail = sim.calls_to(w(0)).split_off(7);
    assert_eq!(tail, [(ms(4500), Call::Probe), (ms(4500), Call::Run(map(0)))]);

    let report = sim.finish_job();
    assert_eq!((report.attempts.lost, report.attempts.failed), (1, 0));
}

#[test]
fn the_job_fails_when_no_worker_answers_for_no_worker_timeout() {
    let mut sim = Sim::new(1, 1, 2, flaky_network());
    sim.health = vec![Health::Down; 2];
    sim.run_until_idle();
    assert_eq!(sim.jump_to_end(secs(60)), secs(10));
    match sim.error() {
        JobError::NoWorkers(after, last) => {
            assert_eq!(after, secs(10));
            assert!(last.starts_with("worker-"), "{last}");
        }
        other => panic!("expected NoWorkers, got {other:?}"),
    }
}

#[test]
fn no_worker_timeout_counts_from_when_the_last_worker_fell_silent() {
    let mut sim = Sim::new(1, 1, 2, flaky_network());
    sim.kill(w(0)); // silent from the start; worker-1 takes map-00000 at 50ms
    sim.advance(ms(50));
    assert_eq!(sim.run_of(map(0)).worker, w(1));
    sim.advance_to(sim.start + secs(5));
    sim.kill(w(1)); // the connection breaks under its attempt: silent from 5s
    assert_eq!(sim.jump_to_end(secs(60)), secs(15));
    assert!(matches!(sim.error(), JobError::NoWorkers(after, _) if after == secs(10)), "{:?}", sim.finished);
}

#[test]
fn a_lone_worker_whose_probe_fails_after_a_missed_deadline_has_no_worker_timeout_to_answer() {
    // The deadline (60s) is past no_worker_timeout (10s), counted from the failed probe.
    for answers_at in [None, Some(secs(69))] {
        let mut sim = Sim::new(1, 1, 1, flaky_network());
        sim.run_until_idle();
        let run = sim.run_of(map(0));
        sim.advance_to(run.sent + run.deadline);
        sim.health[0] = Health::Down; // the probe will fail
        sim.feed(Event::Failed { attempt: run.attempt, reason: Failure::TimedOut });
        sim.run_until_idle();
        assert_eq!(sim.calls_to(w(0)).last(), Some(&(secs(60), Call::Probe)));
        assert!(sim.finished.is_none(), "a missed deadline and a failed probe ended the job: {:?}", sim.finished);

        let Some(at) = answers_at else {
            assert_eq!(sim.jump_to_end(secs(120)), secs(70));
            let want = JobError::NoWorkers(secs(10), "worker-0 did not answer a wait".into());
            assert_eq!(sim.error(), want);
            continue;
        };
        sim.advance_to(sim.start + at);
        sim.revive(w(0));
        sim.jump_to_timeout(); // probes go at 60.1s, 60.3s, 60.7s, 61.5s, 62.5s, ... 69.5s
        let calls = sim.calls_to(w(0));
        let want = [(ms(68_500), Call::Probe), (ms(69_500), Call::Probe), (ms(69_500), Call::Run(map(0)))];
        assert_eq!(calls[calls.len() - 3..], want);
        sim.advance_to(sim.start + secs(100));
        assert!(sim.finished.is_none(), "{:?}", sim.finished);
        sim.succeed_task(map(0));
        sim.finish_job();
    }
}

#[test]
fn a_worker_that_answers_before_no_worker_timeout_keeps_the_job_alive() {
    let mut sim = Sim::new(1, 1, 1, flaky_network());
    sim.kill(w(0));
    while sim.elapsed() < secs(8) {
        sim.jump_to_timeout();
    }
    sim.revive(w(0));
    assert_eq!(sim.jump_to_timeout(), ms(9500));
    let run = sim.run_of(map(0));
    sim.advance(secs(10)); // a running attempt is not silence
    assert!(sim.finished.is_none(), "{:?}", sim.finished);
    sim.succeed(run.attempt);
    sim.finish_job();
}

#[test]
fn a_worker_on_probation_beside_an_unreachable_one_does_not_make_poll_timeout_spin() {
    let config = SchedulerConfig { probation_after: 1, probation_base: secs(100), ..flaky_network() };
    let mut sim = Sim::new(2, 1, 2, config);
    sim.run_until_idle();
    let attempt = sim.run_of(map(0)).attempt;
    sim.fail(attempt, "bad input"); // worker-0 rests 100s on probation
    sim.kill(w(1)); // worker-1 is lost
    // Every jump asserts (in run_until_idle) that poll_timeout is in the future.
    while sim.elapsed() < secs(100) {
        sim.jump_to_timeout();
        assert!(sim.finished.is_none(), "{:?}", sim.finished);
    }
    let report = sim.finish_job();
    assert_eq!((report.probations, report.workers_on_probation), (1, 1));
}

// ---------------------------------------------------------------------------------------
// Probation
// ---------------------------------------------------------------------------------------

#[test]
fn a_worker_failing_probation_after_times_in_a_row_rests_for_doubling_periods() {
    let config = SchedulerConfig { probation_after: 2, probation_base: secs(1), max_attempts: 10, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    for period in [secs(1), secs(2)] {
        for _ in 0..2 {
            let attempt = sim.run_of(map(0)).attempt;
            sim.fail(attempt, "oom");
        }
        assert!(sim.runs.is_empty() && sim.waits.is_empty(), "a worker on probation got a call");
        assert_eq!(sim.sched.poll_timeout(), Some(sim.now + period));
        sim.jump_to_timeout();
    }
    let calls = [
        (Duration::ZERO, Call::Run(map(0))),
        (Duration::ZERO, Call::Run(map(0))),
        (secs(1), Call::Probe),
        (secs(1), Call::Run(map(0))),
        (secs(1), Call::Run(map(0))),
        (secs(3), Call::Probe),
        (secs(3), Call::Run(map(0))),
    ];
    assert_eq!(sim.calls_to(w(0)), calls);
    let report = sim.finish_job();
    assert_eq!((report.probations, report.workers_on_probation, report.attempts.failed), (2, 1, 4));
}

#[test]
fn a_success_ends_a_workers_failure_streak() {
    let config = SchedulerConfig { probation_after: 2, ..quiet() };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    let attempt = sim.run_of(map(0)).attempt;
    sim.fail(attempt, "oom");
    sim.succeed_task(map(0));
    let attempt = sim.run_of(map(1)).attempt;
    sim.fail(attempt, "oom");
    assert_eq!(sim.run_of(map(1)).sent, sim.now, "put on probation after one failure since a success");
    assert_eq!(sim.finish_job().probations, 0);
}

#[test]
fn probation_after_zero_never_rests_a_failing_worker() {
    let config = SchedulerConfig { probation_after: 0, max_attempts: 10, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    for _ in 0..9 {
        let attempt = sim.run_of(map(0)).attempt;
        sim.fail(attempt, "oom");
    }
    assert_eq!(sim.elapsed(), Duration::ZERO);
    assert_eq!(sim.finish_job().probations, 0);
}

// ---------------------------------------------------------------------------------------
// Speculation
// ---------------------------------------------------------------------------------------

#[test]
fn a_backup_starts_once_the_task_has_run_past_the_threshold() {
    // (speculation, first map's duration, speculation_min, factor, backup expected at)
    let cases = [
        (true, ms(100), secs(1), 2.0, Some(secs(1))),
        (true, secs(2), secs(1), 2.0, Some(secs(4))),
        (true, secs(2), secs(1), 3.0, Some(secs(6))),
        (false, ms(100), secs(1), 2.0, None),
    ];
    for (on, first, min, factor, at) in cases {
        let config = SchedulerConfig { speculation: on, ..speculative(min, factor, 2) };
        let mut sim = Sim::new(2, 1, 3, config);
        sim.run_until_idle();
        sim.advance(first);
        sim.succeed_task(map(0));
        let Some(at) = at else {
            sim.advance_to(sim.start + secs(59));
            assert_eq!(sim.launches(map(1)), 1, "speculation off, yet a backup ran");
            continue;
        };
        sim.advance_to(sim.start + at - ms(1));
        assert_eq!(sim.launches(map(1)), 1, "backup before {at:?}");
        sim.advance_to(sim.start + at);
        let runs = sim.runs_of(map(1));
        assert_eq!(runs.len(), 2, "no backup at {at:?}");
        assert_eq!(runs[1].sent, sim.start + at);
    }
}

#[test]
fn no_backup_runs_before_a_task_of_the_phase_has_finished() {
    let mut sim = Sim::new(1, 1, 2, speculative(ms(100), 1.0, 2));
    sim.run_until_idle();
    sim.advance(secs(30));
    assert_eq!(sim.launches(map(0)), 1);
    assert!(sim.calls_to(w(1)).iter().all(|(_, c)| *c == Call::Idle));
}

#[test]
fn the_reduce_phase_does_not_speculate_on_map_durations() {
    let mut sim = Sim::new(1, 1, 2, speculative(ms(100), 1.0, 2));
    sim.run_until_idle();
    sim.advance(ms(100));
    sim.succeed_task(map(0));
    sim.advance(secs(30));
    assert_eq!(sim.launches(reduce(0)), 1, "backup of a reduce from map durations");
    assert_eq!(sim.finish_job().attempts.speculative, 0);
}

#[test]
fn a_free_worker_takes_a_todo_task_before_a_backup() {
    let mut sim = Sim::new(3, 1, 2, speculative(ms(100), 1.0, 2));
    sim.run_until_idle();
    sim.advance(ms(200));
    sim.succeed_task(map(0)); // map-00001 has now run past the threshold
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(ms(200), Call::Run(map(2)))));
    assert_eq!(sim.launches(map(1)), 1);

    sim.advance(ms(100));
    sim.succeed_task(map(2)); // nothing is TODO any more
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(ms(300), Call::Run(map(1)))));
    assert_eq!(sim.runs_of(map(1)).len(), 2);
}

#[test]
fn backups_go_to_the_oldest_task_at_most_max_backups_at_once_and_once_per_task() {
    let mut sim = Sim::new(3, 1, 4, speculative(secs(1), 1.0, 1));
    sim.run_until_idle();
    sim.advance(ms(100));
    let first = sim.run_of(map(0)).attempt;
    sim.fail(first, "flaky"); // map-00000 starts again at 100ms: map-00001 is older
    sim.advance(ms(100));
    sim.succeed_task(map(2));

    sim.advance_to(sim.start + secs(1));
    assert_eq!(sim.runs_of(map(1)).len(), 2, "the oldest task gets the backup");
    sim.advance_to(sim.start + secs(2));
    assert_eq!(sim.runs_of(map(0)).len(), 1, "more than max_backups backups");

    let backup = sim.runs_of(map(1))[1].attempt;
    sim.fail(backup, "flaky");
    assert_eq!(sim.runs_of(map(0)).len(), 2, "the next backup goes to map-00000");
    sim.advance(secs(10));
    assert_eq!(sim.launches(map(1)), 2, "map-00001 was backed up twice");
    assert_eq!(sim.launches(map(0)), 3);
}

#[test]
fn the_first_success_wins_and_the_late_one_is_discarded() {
    for backup_wins in [true, false] {
        let mut sim = Sim::new(2, 1, 3, speculative(secs(1), 2.0, 1));
        sim.run_until_idle();
        sim.advance(ms(100));
        let map0 = sim.succeed_task(map(0));
        sim.advance_to(sim.start + secs(1));
        let [original, backup] = sim.runs_of(map(1)).try_into().expect("a backup of map-00001");
        let (winner, loser) = if backup_wins { (backup, original) } else { (original, backup) };

        sim.advance(ms(200));
        let won = sim.succeed(winner.attempt);
        let reduce0 = sim.run_of(reduce(0));
        let inputs = |o: &TaskOutput| match o {
            TaskOutput::Map { files, .. } => files[0].clone(),
            TaskOutput::Reduce { .. } => unreachable!(),
        };
        let spec = TaskSpec::Reduce { partition: 0, inputs: vec![inputs(&map0), inputs(&won)] };
        assert_eq!(reduce0.spec, spec);

        let lost = sim.succeed(loser.attempt);
        assert_eq!(sim.discarded(), [lost]);
        assert_eq!(sim.launches(reduce(0)), 1);

        let report = sim.finish_job();
        let want = AttemptCounts {
            launched: 4,
            succeeded: 4,
            speculative: 1,
            speculative_won: u64::from(backup_wins),
            ..AttemptCounts::default()
        };
        assert_eq!(report.attempts, want, "backup wins: {backup_wins}");
        assert_eq!(report.intermediate_bytes, 2 * 100, "the loser's bytes were counted");
    }
}

// ---------------------------------------------------------------------------------------
// Stale events
// ---------------------------------------------------------------------------------------

#[test]
fn events_about_attempts_never_launched_change_nothing_but_discard_their_files() {
    let config = SchedulerConfig { max_attempts: 1, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    let status = sim.sched.status();
    sim.feed(Event::Failed { attempt: AttemptId(99), reason: Failure::Task("ghost".into()) });
    assert!(sim.step().is_empty());
    assert!(sim.finished.is_none(), "a stray failure used the budget");

    let ghost = TaskOutput::Reduce { path: "ghost".into(), records: 1, bytes: 1 };
    sim.feed(Event::Succeeded { attempt: AttemptId(99), output: ghost.clone() });
    let actions = sim.step();
    assert!(matches!(actions.as_slice(), [Action::Discard(o)] if *o == ghost), "{actions:?}");
    assert_eq!(sim.sched.status(), status);

    let report = sim.finish_job();
    assert_eq!((report.attempts.launched, report.attempts.succeeded), (2, 2));
}

#[test]
fn wait_replies_about_a_worker_without_a_wait_in_flight_are_ignored() {
    let config = SchedulerConfig { probation_after: 1, probation_base: secs(5), ..flaky_network() };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    let run = sim.run_of(map(0));

    // worker-0 runs map-00000: neither reply makes it free, nor rest, nor silent.
    sim.advance(ms(10));
    for event in [Event::WorkerIdle(w(0)), Event::Unreachable(w(0)), Event::WorkerIdle(w(0))] {
        sim.feed(event);
        assert!(sim.step().is_empty(), "a wait reply about a busy worker changed something");
    }
    assert_eq!(sim.sched.poll_timeout(), None);
    sim.advance(secs(30)); // past no_worker_timeout: a running attempt is not silence
    assert!(sim.finished.is_none(), "{:?}", sim.finished);
    assert_eq!(sim.runs_of(map(0)).len(), 1);
    let accepted = sim.succeed(run.attempt);
    assert!(sim.discarded().is_empty());
    assert_eq!(sim.sched.status().maps_done, 1);

    // On probation, it rests its full period whatever replies come.
    let attempt = sim.run_of(map(1)).attempt;
    sim.fail(attempt, "oom");
    let until = sim.sched.poll_timeout();
    assert_eq!(until, Some(sim.now + secs(5)));
    for event in [Event::WorkerIdle(w(0)), Event::Unreachable(w(0))] {
        sim.feed(event);
        assert!(sim.step().is_empty(), "a wait reply about a resting worker changed something");
        assert_eq!(sim.sched.poll_timeout(), until);
    }
    assert_eq!(sim.jump_to_timeout(), ms(30_010) + secs(5));
    assert_eq!(sim.calls_to(w(0)).split_off(2), [(ms(35_010), Call::Probe), (ms(35_010), Call::Run(map(1)))]);

    let report = sim.finish_job();
    assert_eq!(report.attempts, AttemptCounts { launched: 4, succeeded: 3, failed: 1, ..AttemptCounts::default() });
    assert_eq!(report.intermediate_bytes, 2 * 100, "{accepted:?}");
}

#[test]
fn late_replies_of_a_timed_out_attempt_are_ignored_or_discarded() {
    let config = SchedulerConfig { max_attempts: 2, ..quiet() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    let slow = sim.run_of(map(0)).attempt;
    let slow_output = sim.output_of(slow);
    sim.time_out(slow);
    let retry = sim.run_of(map(0)).attempt;

    sim.feed(Event::Failed { attempt: slow, reason: Failure::Task("too late".into()) });
    sim.run_until_idle();
    assert!(sim.finished.is_none(), "a late failure used the budget");
    sim.feed(Event::Succeeded { attempt: slow, output: slow_output.clone() });
    sim.run_until_idle();
    assert_eq!(sim.discarded(), [slow_output]);
    assert_eq!(sim.sched.status().maps_done, 0);

    let accepted = sim.succeed(retry);
    assert!(accepted.paths().iter().all(|p| p.starts_with("map-00000/attempt-1/")));
    let report = sim.finish_job();
    let want = AttemptCounts { launched: 3, succeeded: 2, timed_out: 1, ..AttemptCounts::default() };
    assert_eq!(report.attempts, want);
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// What a worker does with a Run, drawn by proptest. Delays are in milliseconds; a reply
/// slower than the deadline becomes a timeout, as in the runtime.
#[derive(Debug, Clone, Copy)]
enum RunFate {
    Succeed(u64),
    Fail(u64),
    Lose(u64),
    TimeOut,
    /// Times out, then its success arrives anyway this much later (a stale reply).
    TimeOutThenSucceed(u64),
    /// Succeeds, and the same reply comes again later (a stale reply).
    SucceedTwice(u64),
    /// Succeeds, after a failure of an attempt id that never existed.
    SucceedAfterStray(u64),
    /// Succeeds, after a WorkerIdle and an Unreachable about its busy worker (ignored).
    SucceedAfterStrayWait(u64),
}

/// What a worker does with a Wait.
#[derive(Debug, Clone, Copy)]
enum WaitFate {
    Answer,
    /// Fails after this many milliseconds (at most the Wait's deadline).
    Unreachable(u64),
    /// Fails after the first delay, then answers anyway the second later: a stale answer,
    /// accepted only if the worker has a Wait in flight by then.
    UnreachableThenAnswer(u64, u64),
}

#[derive(Debug, Clone)]
struct Scenario {
    shards: u32,
    reducers: u32,
    workers: u32,
    config: SchedulerConfig,
    /// Whether worker 0 answers every call and succeeds every attempt within its deadline.
    reliable: bool,
    /// Fates of Runs in launch order (worker 0's ignored when reliable); then successes.
    runs: Vec<RunFate>,
    /// Fates of Waits in order; then answers.
    waits: Vec<WaitFate>,
    /// From when and for how long (after the start) every call fails at once, as to a
    /// machine that is down, without using up the fates (worker 0 spared when reliable).
    outage: Option<(Duration, Duration)>,
}

fn run_fate() -> impl Strategy<Value = RunFate> {
    let d = || 0u64..800;
    prop_oneof![
        6 => d().prop_map(RunFate::Succeed),
        2 => d().prop_map(RunFate::Fail),
        1 => d().prop_map(RunFate::Lose),
        1 => Just(RunFate::TimeOut),
        1 => d().prop_map(RunFate::TimeOutThenSucceed),
        1 => d().prop_map(RunFate::SucceedTwice),
        1 => d().prop_map(RunFate::SucceedAfterStray),
        1 => d().prop_map(RunFate::SucceedAfterStrayWait),
    ]
}

fn wait_fate() -> impl Strategy<Value = WaitFate> {
    prop_oneof![
        6 => Just(WaitFate::Answer),
        2 => (0u64..300).prop_map(WaitFate::Unreachable),
        1 => (0u64..300, 0u64..300).prop_map(|(d, late)| WaitFate::UnreachableThenAnswer(d, late)),
    ]
}

fn knobs() -> impl Strategy<Value = SchedulerConfig> {
    let budget = (1u32..=5, 0u32..=3, 0u32..4);
    let speculation = (any::<bool>(), 0u32..=2, 1.0f64..3.0, 0u64..400);
    let rests = (50u64..200, 10u64..100, 100u64..500, 1u64..5, 100u64..1000);
    (budget, speculation, rests).prop_map(|(budget, speculation, rests)| {
        let (max_attempts, probation_after, cap_shift) = budget;
        let (speculation, max_backups, speculation_factor, min) = speculation;
        let (idle, retry_base, retry_cap, no_worker_timeout, probation_base) = rests;
        SchedulerConfig {
            task_timeout: ms(500),
            max_task_timeout: ms(500 << cap_shift),
            max_attempts,
            idle_wait: ms(idle),
            retry_base: ms(retry_base),
            retry_cap: ms(retry_cap),
            no_worker_timeout: secs(no_worker_timeout),
            probation_after,
            probation_base: ms(probation_base),
            speculation,
            speculation_factor,
            speculation_min: ms(min),
            max_backups,
        }
    })
}

fn scenario(reliable: bool) -> impl Strategy<Value = Scenario> {
    let shape = (0u32..=20, 1u32..=5, 1u32..=6);
    let outage = prop::option::weighted(0.5, (0u64..3000, 0u64..8000).prop_map(|(from, len)| (ms(from), ms(len))));
    (shape, knobs(), vec(run_fate(), 0..120), vec(wait_fate(), 0..60), outage).prop_map(
        move |((shards, reducers, workers), config, runs, waits, outage)| Scenario {
            shards,
            reducers,
            workers,
            config,
            reliable,
            runs,
            waits,
            outage,
        },
    )
}

/// A running attempt, as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Running {
    task: TaskId,
    worker: WorkerId,
    started: Instant,
    backup: bool,
}

/// A worker, as the model knows it.
#[derive(Debug, Clone, Default)]
struct WorkerModel {
    /// Deadlines missed since its last success.
    timeouts: u32,
    /// Failed attempts (error or deadline) since its last success.
    failures: u32,
    /// Unreachable calls since it last answered.
    unreachable: u32,
    /// When it fell silent (its first unreachable call since it last answered).
    silent_since: Option<Instant>,
    probations: u32,
    /// It owes a probe before its next Run.
    needs_probe: bool,
    /// It rests until then: its next call comes exactly then.
    wake: Option<Instant>,
    /// What the report must say of it.
    stats: WorkerReport,
}

/// What the drain after one event must contain.
#[derive(Debug, Default)]
struct Expect {
    discard: Option<TaskOutput>,
    job_fails: Option<JobError>,
}

/// The rules of the module docs, replayed on what the scheduler is told and asks for.
/// Every action is checked against it the moment it is drained.
struct Model {
    config: SchedulerConfig,
    shards: Vec<Shard>,
    reducers: u32,
    reliable: bool,
    start: Instant,
    accepted: BTreeMap<TaskId, TaskOutput>,
    /// Durations of the accepted attempts of the current phase.
    durations: Vec<Duration>,
    failures: HashMap<TaskId, u32>,
    lost: HashMap<TaskId, u32>,
    /// Workers on which an attempt of the task failed by error or deadline.
    failed_on: HashMap<TaskId, BTreeSet<WorkerId>>,
    /// The TODO tasks in queue order: the phase's tasks in index order at its start, a
    /// task sent back to TODO in front.
    todo: VecDeque<TaskId>,
    backed_up: HashSet<TaskId>,
    running: BTreeMap<AttemptId, Running>,
    waiting: HashSet<WorkerId>,
    /// Those of `waiting` whose Wait is an idle one (not a probe): they may be woken.
    idle: HashSet<WorkerId>,
    launched: HashSet<AttemptId>,
    workers: Vec<WorkerModel>,
    counts: AttemptCounts,
    probations: u32,
}

impl Model {
    fn new(s: &Scenario, start: Instant) -> Model {
        let todo = if s.shards == 0 { (0..s.reducers).map(reduce).collect() } else { (0..s.shards).map(map).collect() };
        Model {
            config: s.config.clone(),
            shards: shards(s.shards),
            reducers: s.reducers,
            reliable: s.reliable,
            start,
            accepted: BTreeMap::new(),
            durations: Vec::new(),
            failures: HashMap::new(),
            lost: HashMap::new(),
            failed_on: HashMap::new(),
            todo,
            backed_up: HashSet::new(),
            running: BTreeMap::new(),
            waiting: HashSet::new(),
            idle: HashSet::new(),
            launched: HashSet::new(),
            workers: vec![WorkerModel::default(); s.workers as usize],
            counts: AttemptCounts::default(),
            probations: 0,
        }
    }

    fn maps(&self) -> u32 {
        self.shards.len() as u32
    }

    fn maps_done(&self) -> bool {
        (0..self.maps()).all(|i| self.accepted.contains_key(&map(i)))
    }

    fn phase_tasks(&self) -> Vec<TaskId> {
        if self.maps_done() { (0..self.reducers).map(reduce).collect() } else { (0..self.maps()).map(map).collect() }
    }

    fn attempts_of(&self, task: TaskId) -> Vec<Running> {
        self.running.values().filter(|r| r.task == task).copied().collect()
    }

    /// The phase's TODO tasks (not accepted, no attempt running), in index order.
    fn todo_tasks(&self) -> Vec<TaskId> {
        let todo = |t: &TaskId| !self.accepted.contains_key(t) && self.attempts_of(*t).is_empty();
        self.phase_tasks().into_iter().filter(todo).collect()
    }

    /// Whether `worker` could take a task now: it answers (no unreachable call since it
    /// last did) and does not rest (on probation or after an unreachable call).
    fn available(&self, now: Instant, worker: WorkerId) -> bool {
        let m = &self.workers[worker.0 as usize];
        m.unreachable == 0 && m.wake.is_none_or(|t| t <= now)
    }

    fn failed_on(&self, task: TaskId, worker: WorkerId) -> bool {
        self.failed_on.get(&task).is_some_and(|ws| ws.contains(&worker))
    }

    /// The TODO task a free `worker` must get now, if any: the first in queue order that
    /// did not fail on it, or that no other worker could take now (every other one failed
    /// it too, is unreachable or rests).
    fn next_todo(&self, now: Instant, worker: WorkerId) -> Option<TaskId> {
        let others = || (0..self.workers.len() as u32).map(w).filter(move |o| *o != worker);
        let elsewhere = |t: TaskId| others().any(|o| !self.failed_on(t, o) && self.available(now, o));
        self.todo.iter().copied().find(|&t| !self.failed_on(t, worker) || !elsewhere(t))
    }

    fn deadline(&self, worker: WorkerId) -> Duration {
        let c = &self.config;
        backoff(self.workers[worker.0 as usize].timeouts, c.task_timeout, c.max_task_timeout)
    }

    /// The task a free worker must back up now, if any: speculation on, fewer than
    /// `max_backups` backups running, a finished task in the phase, and the oldest task
    /// with a single attempt (never backed up) has run past the threshold.
    fn backup_due(&self, now: Instant) -> Option<TaskId> {
        let c = &self.config;
        let backups = self.running.values().filter(|r| r.backup).count() as u32;
        if !c.speculation || backups >= c.max_backups || self.durations.is_empty() {
            return None;
        }
        let single = |t: &TaskId| {
            let attempts = self.attempts_of(*t);
            let eligible = attempts.len() == 1 && !self.backed_up.contains(t) && !self.accepted.contains_key(t);
            eligible.then(|| (attempts[0].started, *t))
        };
        let oldest = self.phase_tasks().iter().filter_map(single).min();
        let (started, task) = oldest?;
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        let threshold = sorted[sorted.len() / 2].mul_f64(c.speculation_factor).max(c.speculation_min);
        (now.saturating_duration_since(started) >= threshold).then_some(task)
    }

    /// Checks the rules a call to `worker` must keep: one call at a time, and a rest
    /// ends exactly when it should.
    fn call(&mut self, now: Instant, worker: WorkerId) {
        let busy = self.running.values().any(|r| r.worker == worker) || self.waiting.contains(&worker);
        assert!(!busy, "{worker} got a second call");
        if let Some(wake) = self.workers[worker.0 as usize].wake.take() {
            assert_eq!(now - self.start, wake - self.start, "{worker} called at the wrong time after its rest");
        }
    }

    fn on_action(&mut self, now: Instant, action: &Action, expect: &mut Expect) {
        match action {
            Action::Run { .. } => self.on_run(now, action),
            Action::Wait { worker, for_, deadline } => {
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
                    self.idle.insert(*worker);
                }
                self.waiting.insert(*worker);
            }
            Action::Wake { worker } => {
                assert!(self.waiting.remove(worker), "woke {worker} with no Wait in flight");
                assert!(self.idle.remove(worker), "woke {worker} out of a probe");
                let for_it = self.todo.iter().any(|&t| !self.failed_on(t, *worker));
                assert!(for_it, "woke {worker} with no TODO task it may take");
            }
            Action::Discard(output) => {
                assert_eq!(expect.discard.take().as_ref(), Some(output), "unexpected discard");
            }
            Action::Finished(result) => self.on_finished(now, result, expect),
        }
    }

    fn on_run(&mut self, now: Instant, action: &Action) {
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
                    TaskOutput::Map { files, .. } => {
                        files.iter().filter(|f| f.partition == task.index).cloned().collect::<Vec<_>>()
                    }
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
        self.workers[worker.0 as usize].stats.launched += 1;
        let started = now;
        self.running.insert(attempt, Running { task, worker, started, backup });
    }

    fn rest_unreachable(&mut self, now: Instant, worker: WorkerId) {
        let c = &self.config;
        let m = &mut self.workers[worker.0 as usize];
        m.wake = Some(now + backoff(m.unreachable, c.retry_base, c.retry_cap));
        m.unreachable += 1;
        m.silent_since.get_or_insert(now);
        m.needs_probe = true;
    }

    /// The worker answered: it is no longer silent.
    fn answered(&mut self, worker: WorkerId) {
        let m = &mut self.workers[worker.0 as usize];
        (m.unreachable, m.silent_since) = (0, None);
    }

    /// When the job must give up: `no_worker_timeout` after the last worker fell silent,
    /// if every worker is silent.
    fn no_worker_deadline(&self) -> Option<Instant> {
        let silent: Option<Vec<Instant>> = self.workers.iter().map(|m| m.silent_since).collect();
        silent?.into_iter().max().map(|t| t + self.config.no_worker_timeout)
    }

    /// Updates the model for an event about to be fed; says what the next drain holds.
    fn on_event(&mut self, now: Instant, event: &Event) -> Expect {
        let mut expect = Expect::default();
        match event {
            // Accepted only from a worker with a Wait in flight; else nothing changes.
            Event::WorkerIdle(worker) => {
                if self.waiting.remove(worker) {
                    self.idle.remove(worker);
                    self.answered(*worker);
                }
            }
            Event::Unreachable(worker) => {
                if self.waiting.remove(worker) {
                    self.idle.remove(worker);
                    self.rest_unreachable(now, *worker);
                }
            }
            Event::Succeeded { attempt, output } => {
                let Some(run) = self.running.remove(attempt) else {
                    expect.discard = Some(output.clone());
                    return expect;
                };
                self.counts.succeeded += 1;
                let m = &mut self.workers[run.worker.0 as usize];
                (m.timeouts, m.failures) = (0, 0);
                self.answered(run.worker);
                if self.accepted.contains_key(&run.task) {
                    expect.discard = Some(output.clone());
                    return expect;
                }
                if run.backup {
                    self.counts.speculative_won += 1;
                }
                self.workers[run.worker.0 as usize].stats.accepted += 1;
                let maps_were_done = self.maps_done();
                self.accepted.insert(run.task, output.clone());
                self.durations.push(now - run.started);
                if !maps_were_done && self.maps_done() {
                    self.durations.clear();
                    self.todo = (0..self.reducers).map(reduce).collect();
                }
            }
            Event::Failed { attempt, reason } => {
                let Some(run) = self.running.remove(attempt) else {
                    return expect;
                };
                let worker = run.worker;
                match reason {
                    Failure::TimedOut => {
                        self.counts.timed_out += 1;
                        self.workers[worker.0 as usize].timeouts += 1;
                        self.workers[worker.0 as usize].stats.timed_out += 1;
                    }
                    Failure::Unreachable(_) => {
                        self.counts.lost += 1;
                        self.workers[worker.0 as usize].stats.lost += 1;
                        self.rest_unreachable(now, worker);
                    }
                    Failure::Task(_) => {
                        self.counts.failed += 1;
                        self.workers[worker.0 as usize].stats.failed += 1;
                        self.answered(worker);
                    }
                }
                if !matches!(reason, Failure::Unreachable(_)) {
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
                let task = run.task;
                if self.accepted.contains_key(&task) {
                    return expect;
                }
                if !matches!(reason, Failure::Unreachable(_)) {
                    self.failed_on.entry(task).or_default().insert(worker);
                }
                let counter = match reason {
                    Failure::Unreachable(_) => &mut self.lost,
                    _ => &mut self.failures,
                };
                *counter.entry(task).or_default() += 1;
                let failures = self.failures.get(&task).copied().unwrap_or(0);
                let lost = self.lost.get(&task).copied().unwrap_or(0);
                let max = self.config.max_attempts;
                assert!(failures <= max && lost <= 4 * max, "{task} past its budget");
                if failures >= max || lost >= 4 * max {
                    let input = match task.kind {
                        TaskKind::Map => self.shards[task.index as usize].to_string(),
                        TaskKind::Reduce => format!("partition {} of {} map outputs", task.index, self.maps()),
                    };
                    expect.job_fails = Some(JobError::TaskFailed {
                        task,
                        input,
                        attempts: failures + lost,
                        last: format!("{attempt} on {worker}: {reason}"),
                    });
                } else if self.attempts_of(task).is_empty() {
                    self.backed_up.remove(&task);
                    self.todo.push_front(task);
                }
            }
        }
        expect
    }

    fn on_finished(&mut self, now: Instant, result: &Result<JobReport, JobError>, expect: &mut Expect) {
        match result {
            Err(e @ JobError::TaskFailed { .. }) => {
                assert_eq!(expect.job_fails.take().as_ref(), Some(e), "a job failure no task earned");
            }
            Err(JobError::NoWorkers(after, _)) => {
                assert!(!self.reliable, "NoWorkers though worker-0 always answers");
                assert_eq!(*after, self.config.no_worker_timeout);
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

    /// The report of a successful job: exactly one accepted output per task.
    fn report(&self, now: Instant) -> JobReport {
        let tasks = (0..self.maps()).map(map).chain((0..self.reducers).map(reduce));
        for task in tasks {
            assert!(self.accepted.contains_key(&task), "the job succeeded without {task}");
        }
        let (mut intermediate_bytes, mut output_records, mut outputs) = (0, 0, Vec::new());
        for output in self.accepted.values() {
            match output {
                TaskOutput::Map { files, .. } => intermediate_bytes += files.iter().map(|f| f.bytes).sum::<u64>(),
                TaskOutput::Reduce { path, records, .. } => {
                    output_records += records;
                    outputs.push(path.clone());
                }
            }
        }
        JobReport {
            map_tasks: self.maps(),
            reduce_tasks: self.reducers,
            attempts: self.counts.clone(),
            elapsed_ms: (now - self.start).as_millis() as u64,
            input_bytes: self.shards.iter().map(Shard::len).sum(),
            intermediate_bytes,
            output_records,
            probations: self.probations,
            workers_on_probation: self.workers.iter().filter(|m| m.probations > 0).count() as u32,
            workers: self.workers.iter().map(|m| m.stats.clone()).collect(),
            outputs,
        }
    }

    /// After a drain that did not end the job: every worker has a call in flight or rests
    /// until later, the model's queue holds exactly the phase's TODO tasks, and the job has
    /// not outlived `no_worker_timeout` after the last worker fell silent.
    fn after_drain(&self, now: Instant) {
        let mut queued: Vec<TaskId> = self.todo.iter().copied().collect();
        queued.sort_unstable();
        assert_eq!(queued, self.todo_tasks(), "the model's TODO queue went astray");
        for (i, m) in self.workers.iter().enumerate() {
            let worker = w(i as u32);
            let busy = self.running.values().any(|r| r.worker == worker) || self.waiting.contains(&worker);
            let resting = m.wake.is_some_and(|t| t > now);
            assert!(busy || resting, "{worker} forgotten: no call in flight and no rest");
        }
        if let Some(deadline) = self.no_worker_deadline() {
            let timeout = self.config.no_worker_timeout;
            assert!(now < deadline, "every worker silent for {timeout:?}, the job goes on");
        }
    }
}

/// The events the simulated workers will send, by time; ties in the order planned.
struct Replies {
    pending: BTreeMap<(Instant, u64), Event>,
    seq: u64,
}

impl Replies {
    fn at(&mut self, when: Instant, event: Event) {
        self.seq += 1;
        self.pending.insert((when, self.seq), event);
    }
}

/// The fates of the calls still to come; once they run out, every call goes well.
struct Fates<R, W> {
    runs: R,
    waits: W,
}

impl<R: Iterator<Item = RunFate>, W: Iterator<Item = WaitFate>> Fates<R, W> {
    /// Plans the replies to `action`, which the scheduler asked for at `now`.
    fn plan(&mut self, s: &Scenario, start: Instant, now: Instant, action: &Action, replies: &mut Replies) {
        let down = |worker: WorkerId| {
            let in_outage = s.outage.is_some_and(|(from, len)| (from..from + len).contains(&(now - start)));
            in_outage && !(s.reliable && worker == w(0))
        };
        match *action {
            Action::Run { worker, attempt, .. } if down(worker) => {
                let reason = Failure::Unreachable("connection refused".into());
                replies.at(now, Event::Failed { attempt, reason });
            }
            Action::Wait { worker, .. } if down(worker) => replies.at(now, Event::Unreachable(worker)),
            Action::Run { worker, attempt, task, deadline, .. } => {
                let fate = self.runs.next().unwrap_or(RunFate::Succeed(10));
                let fate = match fate {
                    _ if !(s.reliable && worker == w(0)) => fate,
                    RunFate::Succeed(d)
                    | RunFate::Fail(d)
                    | RunFate::Lose(d)
                    | RunFate::TimeOutThenSucceed(d)
                    | RunFate::SucceedTwice(d)
                    | RunFate::SucceedAfterStray(d)
                    | RunFate::SucceedAfterStrayWait(d) => RunFate::Succeed(d.min(deadline.as_millis() as u64 - 1)),
                    RunFate::TimeOut => RunFate::Succeed(10),
                };
                let ok = Event::Succeeded { attempt, output: output_for(task, attempt, s.reducers) };
                let failed = |reason| Event::Failed { attempt, reason };
                let in_time = |d: u64| ms(d) < deadline;
                let timeout = now + deadline;
                match fate {
                    RunFate::Succeed(d) if in_time(d) => replies.at(now + ms(d), ok),
                    RunFate::Fail(d) if in_time(d) => {
                        replies.at(now + ms(d), failed(Failure::Task(format!("boom in {attempt}"))));
                    }
                    RunFate::Lose(d) => {
                        replies.at(now + ms(d).min(deadline), failed(Failure::Unreachable("reset".into())));
                    }
                    RunFate::TimeOutThenSucceed(d) => {
                        replies.at(timeout, failed(Failure::TimedOut));
                        replies.at(timeout + ms(d), ok);
                    }
                    RunFate::SucceedTwice(d) if in_time(d) => {
                        replies.at(now + ms(d), ok.clone());
                        replies.at(now + ms(2 * d + 1), ok);
                    }
                    RunFate::SucceedAfterStray(d) if in_time(d) => {
                        let stray = AttemptId(u64::MAX - replies.seq);
                        let reason = Failure::Task("stray".into());
                        replies.at(now + ms(d / 2), Event::Failed { attempt: stray, reason });
                        replies.at(now + ms(d), ok);
                    }
                    RunFate::SucceedAfterStrayWait(d) if in_time(d) => {
                        // The worker is busy until `ok`: both must be ignored.
                        replies.at(now + ms(d / 2), Event::WorkerIdle(worker));
                        replies.at(now + ms(d / 2), Event::Unreachable(worker));
                        replies.at(now + ms(d), ok);
                    }
                    // TimeOut, or any reply slower than the deadline.
                    _ => replies.at(timeout, failed(Failure::TimedOut)),
                }
            }
            Action::Wait { worker, for_, deadline } => {
                let fate = if s.reliable && worker == w(0) {
                    WaitFate::Answer
                } else {
                    self.waits.next().unwrap_or(WaitFate::Answer)
                };
                match fate {
                    WaitFate::Answer => replies.at(now + for_, Event::WorkerIdle(worker)),
                    WaitFate::Unreachable(d) => {
                        replies.at(now + ms(d).min(for_ + deadline), Event::Unreachable(worker));
                    }
                    WaitFate::UnreachableThenAnswer(d, late) => {
                        let failed = now + ms(d).min(for_ + deadline);
                        replies.at(failed, Event::Unreachable(worker));
                        replies.at(failed + ms(late), Event::WorkerIdle(worker));
                    }
                }
            }
            // The runtime drops a woken Wait: what it would have answered never comes.
            Action::Wake { worker } => replies
                .pending
                .retain(|_, e| !matches!(e, Event::WorkerIdle(x) | Event::Unreachable(x) if *x == worker)),
            Action::Discard(_) | Action::Finished(_) => {}
        }
    }
}

/// Runs one scenario to its end, checking the model after every action. Returns how the
/// job ended.
fn drive(s: &Scenario) -> Result<JobReport, JobError> {
    const STEPS: usize = 200_000;
    let mut sim = Sim::new(s.shards, s.reducers, s.workers, s.config.clone());
    let mut model = Model::new(s, sim.start);
    let mut replies = Replies { pending: BTreeMap::new(), seq: 0 };
    let mut fates = Fates { runs: s.runs.iter().copied(), waits: s.waits.iter().copied() };
    let mut expect = Expect::default();
    for _ in 0..STEPS {
        let now = sim.now;
        for action in sim.step() {
            model.on_action(now, &action, &mut expect);
            fates.plan(s, sim.start, now, &action, &mut replies);
        }
        assert!(expect.discard.is_none(), "missing discard of {:?}", expect.discard);
        assert!(expect.job_fails.is_none(), "the job went on after {:?}", expect.job_fails);
        if let Some(result) = sim.finished.clone() {
            after_finished(&mut sim, replies.pending);
            return result;
        }
        model.after_drain(now);

        let timeout = sim.sched.poll_timeout();
        if let Some(t) = timeout {
            assert!(t > now, "poll_timeout {:?} is not after now {:?}", t - sim.start, now - sim.start);
        }
        let reply = replies.pending.keys().next().map(|k| k.0);
        let next = reply.into_iter().chain(timeout).min();
        sim.now = next.expect("the job is stuck: not finished, nothing in flight, no timeout");
        if reply == Some(sim.now) {
            let (_, event) = replies.pending.pop_first().expect("a reply");
            expect = model.on_event(sim.now, &event);
            sim.feed(event);
        }
    }
    panic!("the job did not end within {STEPS} steps");
}

/// After Finished: no timeout, and replies still in flight produce only discards.
fn after_finished(sim: &mut Sim, pending: BTreeMap<(Instant, u64), Event>) {
    assert_eq!(sim.sched.poll_timeout(), None);
    for ((at, _), event) in pending {
        sim.now = sim.now.max(at);
        let discard = match &event {
            Event::Succeeded { output, .. } => Some(output.clone()),
            _ => None,
        };
        sim.feed(event);
        let actions = sim.step();
        match discard {
            Some(output) => assert!(matches!(actions.as_slice(), [Action::Discard(o)] if *o == output)),
            None => assert!(actions.is_empty(), "{actions:?} after Finished"),
        }
    }
    sim.now += secs(3600);
    assert!(sim.step().is_empty());
    assert_eq!(sim.sched.poll_timeout(), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_job_with_a_reliable_worker_ends_as_its_tasks_earned(s in scenario(true)) {
        let result = drive(&s);
        prop_assert!(!matches!(result, Err(JobError::NoWorkers(..))), "{result:?}");
    }

    #[test]
    fn every_job_ends_even_when_every_worker_may_vanish(s in scenario(false)) {
        // Any ending will do, as long as the model agrees it was earned.
        let _ending = drive(&s);
    }
}
