//! The simulator: a fake cluster of workers around the scheduler, and a fake clock.

use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------

/// A Run the scheduler asked for that has not ended yet.
#[derive(Debug, Clone)]
pub(super) struct RunCall {
    pub(super) worker: WorkerId,
    pub(super) attempt: AttemptId,
    pub(super) task: TaskId,
    pub(super) spec: TaskSpec,
    pub(super) deadline: Duration,
    pub(super) sent: Instant,
}

/// A Wait the scheduler asked for that has not ended yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct WaitCall {
    pub(super) worker: WorkerId,
    pub(super) wait: WaitId,
    pub(super) for_: Duration,
    pub(super) deadline: Duration,
    pub(super) sent: Instant,
}

impl WaitCall {
    /// When the worker answers it.
    fn answer_at(&self) -> Instant {
        self.sent + self.for_
    }

    /// When the runtime gives up on it.
    fn deadline_at(&self) -> Instant {
        self.sent + self.deadline
    }
}

/// A call as a test reads it in a worker's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Run(TaskId),
    /// A zero Wait.
    Probe,
    /// A Wait of `idle_wait`.
    Idle,
}

/// How a simulated worker answers on its own. Runs are never answered on their own by an
/// `Up` worker: the test decides (succeed, fail, time out, lose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// Answers a Wait when it is over.
    Up,
    /// Every call to it fails at once, as a refused connection does.
    Down,
    /// It takes calls but its replies are lost: a Wait fails when its deadline passes.
    Mute,
}

/// The scheduler, a fake clock, the workers and the calls in flight.
pub(super) struct Sim {
    pub(super) sched: Scheduler,
    /// The one real `Instant` of the test; `now` is `start` plus what the test advanced.
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) reducers: u32,
    /// How each worker answers.
    pub(super) workers: Vec<Health>,
    pub(super) runs: Vec<RunCall>,
    pub(super) waits: Vec<WaitCall>,
    /// Waits cut short by a Wake: the runtime dropped them, their replies never come
    /// unless a test sends one late.
    pub(super) woken: Vec<WaitCall>,
    /// Every Run ever asked for, in order.
    pub(super) launched: Vec<RunCall>,
    /// Every action drained, with the time since `start`.
    pub(super) log: Vec<(Duration, Action)>,
    pub(super) finished: Option<Result<JobReport, JobError>>,
}

impl Sim {
    pub(super) fn new(shards_n: u32, reducers: u32, workers: u32, config: SchedulerConfig) -> Sim {
        Sim::with_outputs(shards_n, reducers, workers, config, false)
    }

    /// [`Sim::new`], with map outputs on the workers that wrote them if `on_workers`.
    pub(super) fn with_outputs(
        shards_n: u32,
        reducers: u32,
        workers: u32,
        config: SchedulerConfig,
        on_workers: bool,
    ) -> Sim {
        let plan = JobPlan { shards: shards(shards_n), reducers, workers, outputs_on_workers: on_workers };
        let sched = Scheduler::new(plan, config).expect("a valid plan and config");
        let start = Instant::now();
        Sim {
            sched,
            start,
            now: start,
            reducers,
            workers: vec![Health::Up; workers as usize],
            runs: Vec::new(),
            waits: Vec::new(),
            woken: Vec::new(),
            launched: Vec::new(),
            log: Vec::new(),
            finished: None,
        }
    }

    /// Two maps, one reducer, three workers, backups after 1 s: map-00000 succeeds at
    /// 100 ms, and at 1 s map-00001 gets a backup. Returns map-00001's original and backup.
    pub(super) fn with_a_backup_of_map_1() -> (Sim, RunCall, RunCall) {
        let mut sim = Sim::new(2, 1, 3, speculative(secs(1), 2.0, 1));
        sim.run_until_idle();
        sim.advance(ms(100));
        sim.succeed_task(map(0));
        sim.advance_to(sim.start + secs(1));
        let [original, backup] = sim.runs_of(map(1)).try_into().expect("a backup of map-00001");
        (sim, original, backup)
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Drains `poll_action` at `now` and records what it asked for.
    pub(super) fn step(&mut self) -> Vec<Action> {
        let mut drained = Vec::new();
        while let Some(action) = self.sched.poll_action(self.now) {
            self.record(&action);
            drained.push(action);
            assert!(drained.len() < 10_000, "poll_action never returns None");
        }
        drained
    }

    pub(super) fn record(&mut self, action: &Action) {
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
            Action::Wait { worker, wait, for_, deadline } => {
                self.assert_free(*worker, action);
                assert!(self.waits.iter().chain(&self.woken).all(|c| c.wait != *wait), "{wait} given twice");
                let call = WaitCall { worker: *worker, wait: *wait, for_: *for_, deadline: *deadline, sent: self.now };
                self.waits.push(call);
            }
            Action::Wake { worker, wait } => {
                // The runtime drops the call: it never answers.
                let i = self.waits.iter().position(|c| c.wait == *wait);
                let i = i.unwrap_or_else(|| panic!("woke {worker} out of {wait}, which is not in flight"));
                let call = self.waits.remove(i);
                assert_eq!(call.worker, *worker, "{wait} is not {worker}'s");
                assert!(!call.for_.is_zero(), "woke {worker} out of a probe");
                self.woken.push(call);
            }
            Action::Discard(_) => {}
            Action::Finished(result) => self.finished = Some(result.clone()),
        }
        self.log.push((self.elapsed(), action.clone()));
    }

    /// One RPC per worker at a time: the runtime holds one call per worker.
    pub(super) fn assert_free(&self, worker: WorkerId, action: &Action) {
        let busy = self.runs.iter().any(|r| r.worker == worker) || self.waits.iter().any(|c| c.worker == worker);
        assert!(!busy, "{action:?} while {worker} has a call in flight");
    }

    /// Feeds `event` at `now` without draining; forgets the call it ends, if in flight.
    pub(super) fn feed(&mut self, event: Event) {
        match &event {
            Event::Succeeded { attempt, .. } | Event::Failed { attempt, .. } => {
                self.runs.retain(|r| r.attempt != *attempt);
            }
            Event::WaitAnswered { wait } | Event::WaitFailed { wait, .. } => {
                self.waits.retain(|c| c.wait != *wait);
            }
            Event::WorkerJoined => self.workers.push(Health::Up),
            Event::WorkerLeft { .. } => {}
        }
        self.sched.handle_event(self.now, event);
    }

    /// Delivers one reply that workers give on their own and that is due by `now`.
    pub(super) fn deliver_due(&mut self) -> bool {
        if let Some(run) = self.runs.iter().find(|r| self.workers[r.worker.0 as usize] == Health::Down) {
            let reason = Failure::Unreachable("connection refused".into());
            let attempt = run.attempt;
            self.feed(Event::Failed { attempt, reason });
            return true;
        }
        let health = |c: &WaitCall| self.workers[c.worker.0 as usize];
        if let Some(call) = self.waits.iter().find(|c| health(c) == Health::Down) {
            let reason = Failure::Unreachable("connection refused".into());
            self.feed(Event::WaitFailed { wait: call.wait, reason });
            return true;
        }
        let timed_out = self.waits.iter().filter(|c| health(c) == Health::Mute && c.deadline_at() <= self.now);
        if let Some(call) = timed_out.min_by_key(|c| (c.deadline_at(), c.worker)) {
            self.feed(Event::WaitFailed { wait: call.wait, reason: Failure::TimedOut });
            return true;
        }
        let due = self.waits.iter().filter(|c| health(c) == Health::Up && c.answer_at() <= self.now);
        if let Some(call) = due.min_by_key(|c| (c.answer_at(), c.worker)) {
            self.feed(Event::WaitAnswered { wait: call.wait });
            return true;
        }
        false
    }

    /// Drains, delivers the replies due now, drains again, until nothing changes without
    /// time passing. Then `poll_timeout` must be in the future: a timeout at or before
    /// `now` with nothing to do would make the runtime spin.
    pub(super) fn run_until_idle(&mut self) {
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

    /// The next moment something happens without the test: a Wait ends, fails at its
    /// deadline, or a timeout.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let reply = |c: &WaitCall| match self.workers[c.worker.0 as usize] {
            Health::Up => Some(c.answer_at()),
            Health::Mute => Some(c.deadline_at()),
            Health::Down => None,
        };
        self.waits.iter().filter_map(reply).chain(self.sched.poll_timeout()).min()
    }

    /// Moves the clock to `until`, stopping at every reply and timeout on the way.
    pub(super) fn advance_to(&mut self, until: Instant) {
        assert!(until >= self.now, "time goes forward only");
        self.run_until_idle();
        while let Some(t) = self.next_wake().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            self.run_until_idle();
        }
        self.now = until;
        self.run_until_idle();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Jumps from timeout to timeout until the job ends, which must be by `limit` after
    /// the start; returns the time since the start.
    pub(super) fn jump_to_end(&mut self, limit: Duration) -> Duration {
        while self.finished.is_none() {
            assert!(self.elapsed() <= limit, "the job still runs at {:?}", self.elapsed());
            self.jump_to_timeout();
        }
        self.elapsed()
    }

    /// Jumps to `poll_timeout()`; returns the time since the start.
    pub(super) fn jump_to_timeout(&mut self) -> Duration {
        let t = self.sched.poll_timeout().expect("a timeout is pending");
        self.advance_to(t);
        self.elapsed()
    }

    pub(super) fn run(&self, attempt: AttemptId) -> RunCall {
        let run = self.runs.iter().find(|r| r.attempt == attempt);
        run.cloned().unwrap_or_else(|| panic!("{attempt} is not running"))
    }

    pub(super) fn runs_of(&self, task: TaskId) -> Vec<RunCall> {
        self.runs.iter().filter(|r| r.task == task).cloned().collect()
    }

    /// The one running attempt of `task`.
    pub(super) fn run_of(&self, task: TaskId) -> RunCall {
        match self.runs_of(task).as_slice() {
            [run] => run.clone(),
            runs => panic!("{task} has {} running attempts, not one", runs.len()),
        }
    }

    /// The tasks running, in the order they were launched.
    pub(super) fn running(&self) -> Vec<TaskId> {
        self.runs.iter().map(|r| r.task).collect()
    }

    /// How often `task` was launched.
    pub(super) fn launches(&self, task: TaskId) -> usize {
        self.launched.iter().filter(|r| r.task == task).count()
    }

    /// The calls `worker` got, with their times.
    pub(super) fn calls_to(&self, worker: WorkerId) -> Vec<(Duration, Call)> {
        let call = |action: &Action| match action {
            Action::Run { worker: w, task, .. } if *w == worker => Some(Call::Run(*task)),
            Action::Wait { worker: w, for_, .. } if *w == worker => {
                Some(if for_.is_zero() { Call::Probe } else { Call::Idle })
            }
            _ => None,
        };
        self.log.iter().filter_map(|(at, a)| call(a).map(|c| (*at, c))).collect()
    }

    pub(super) fn discarded(&self) -> Vec<TaskOutput> {
        let discard = |a: &Action| match a {
            Action::Discard(output) => Some(output.clone()),
            _ => None,
        };
        self.log.iter().filter_map(|(_, a)| discard(a)).collect()
    }

    pub(super) fn output_of(&self, attempt: AttemptId) -> TaskOutput {
        output_for(self.run(attempt).task, attempt, self.reducers)
    }

    /// The attempt succeeds now; returns what it wrote.
    pub(super) fn succeed(&mut self, attempt: AttemptId) -> TaskOutput {
        let output = self.output_of(attempt);
        self.feed(Event::Succeeded { attempt, output: output.clone() });
        self.run_until_idle();
        output
    }

    pub(super) fn succeed_task(&mut self, task: TaskId) -> TaskOutput {
        let attempt = self.run_of(task).attempt;
        self.succeed(attempt)
    }

    /// The attempt fails now with a task error.
    pub(super) fn fail(&mut self, attempt: AttemptId, why: &str) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::Task(why.into()) });
        self.run_until_idle();
    }

    /// The worker refuses the attempt now: it runs as many tasks as it may.
    pub(super) fn busy(&mut self, attempt: AttemptId) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::Busy("at its limit of 2 tasks".into()) });
        self.run_until_idle();
    }

    /// The reduce attempt reports now that it could not read the output of `lost` of map
    /// `map`.
    pub(super) fn lose_input(&mut self, attempt: AttemptId, map: u32, lost: AttemptId) {
        let why = "checksum mismatch in block at byte 4".into();
        self.fail_input(attempt, Failure::MapOutputLost { map, attempt: lost, why, holder_gone: false });
    }

    /// Running reduce `attempt` could not reach the worker that holds attempt `lost` of
    /// map `map`.
    pub(super) fn gone_input(&mut self, attempt: AttemptId, map: u32, lost: AttemptId) {
        let why = "fetch from 10.0.0.1:7000: tcp connect error: No route to host".into();
        self.fail_input(attempt, Failure::MapOutputLost { map, attempt: lost, why, holder_gone: true });
    }

    fn fail_input(&mut self, attempt: AttemptId, reason: Failure) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason });
        self.run_until_idle();
    }

    /// The map attempts whose outputs a running reduce attempt reads, in map order.
    pub(super) fn inputs_of(&self, attempt: AttemptId) -> Vec<AttemptId> {
        let TaskSpec::Reduce { inputs, .. } = &self.run(attempt).spec else { panic!("{attempt} is not a reduce") };
        let mut attempts: Vec<AttemptId> = inputs.iter().map(|i| i.range.attempt).collect();
        attempts.dedup();
        attempts
    }

    /// The connection breaks under the attempt now.
    pub(super) fn lose(&mut self, attempt: AttemptId) {
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::Unreachable("connection reset".into()) });
        self.run_until_idle();
    }

    /// The clock runs to the attempt's deadline, where the runtime gives up on it.
    pub(super) fn time_out(&mut self, attempt: AttemptId) {
        let run = self.run(attempt);
        self.advance_to(run.sent + run.deadline);
        self.run(attempt);
        self.feed(Event::Failed { attempt, reason: Failure::TimedOut });
        self.run_until_idle();
    }

    /// As [`Self::time_out`], but the worker is down by the deadline: the probe that
    /// follows fails.
    pub(super) fn time_out_and_kill(&mut self, attempt: AttemptId) {
        let run = self.run(attempt);
        self.advance_to(run.sent + run.deadline);
        self.workers[run.worker.0 as usize] = Health::Down;
        self.feed(Event::Failed { attempt, reason: Failure::TimedOut });
        self.run_until_idle();
    }

    /// The worker stops answering: its calls in flight fail, and so will the next ones.
    pub(super) fn kill(&mut self, worker: WorkerId) {
        self.workers[worker.0 as usize] = Health::Down;
        self.run_until_idle();
    }

    /// The worker's replies are lost from now on: its Waits fail at their deadline, its
    /// attempts answer only as the test says.
    pub(super) fn drop_replies(&mut self, worker: WorkerId) {
        self.workers[worker.0 as usize] = Health::Mute;
    }

    pub(super) fn revive(&mut self, worker: WorkerId) {
        self.workers[worker.0 as usize] = Health::Up;
    }

    /// The Wait in flight to `worker`.
    pub(super) fn wait_of(&self, worker: WorkerId) -> WaitCall {
        let call = self.waits.iter().find(|c| c.worker == worker);
        *call.unwrap_or_else(|| panic!("{worker} has no Wait in flight"))
    }

    /// Succeeds the oldest running attempt, 10ms later, until the job ends.
    pub(super) fn finish_job(&mut self) -> JobReport {
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

    pub(super) fn report(&self) -> JobReport {
        match &self.finished {
            Some(Ok(report)) => report.clone(),
            other => panic!("expected a successful job, got {other:?}"),
        }
    }

    pub(super) fn error(&self) -> JobError {
        match &self.finished {
            Some(Err(e)) => e.clone(),
            other => panic!("expected a failed job, got {other:?}"),
        }
    }
}
