//! Properties: random plans, knobs and worker behaviour, driven through the scheduler and
//! checked against the [`Model`] after every action.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;

use super::model::{Expect, Model};
use super::sim::Sim;
use super::*;

/// What a worker does with a Run, drawn by proptest. Delays are in milliseconds; a reply
/// slower than the deadline becomes a timeout, as in the runtime.
#[derive(Debug, Clone, Copy)]
pub(super) enum RunFate {
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
    /// Succeeds, after an answer and a failure of its busy worker's last Wait (or of a
    /// Wait never sent): stale replies, ignored.
    SucceedAfterStrayWait(u64),
    /// The worker answers Busy after this long.
    Busy(u64),
    /// A reduce reports a lost map output after this long: of its input picked by the
    /// second number, or (when it is 6 or 7 mod 8) one that map never accepted or a map
    /// that does not exist. A map succeeds instead.
    LoseInput(u64, u8),
}

/// What a worker does with a Wait.
#[derive(Debug, Clone, Copy)]
pub(super) enum WaitFate {
    Answer,
    /// Fails after this many milliseconds (unreachable), or at the Wait's deadline (timed
    /// out) if that comes first.
    Unreachable(u64),
    /// Fails as `Unreachable`, then answers anyway the second delay later: a second reply
    /// to the same Wait, ignored.
    UnreachableThenAnswer(u64, u64),
}

#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) shards: u32,
    pub(super) reducers: u32,
    pub(super) workers: u32,
    pub(super) config: SchedulerConfig,
    /// Whether worker 0 answers every call and succeeds every attempt within its deadline.
    pub(super) reliable: bool,
    /// Fates of Runs in launch order (worker 0's ignored when reliable); then successes.
    pub(super) runs: Vec<RunFate>,
    /// Fates of Waits in order; then answers.
    pub(super) waits: Vec<WaitFate>,
    /// From when and for how long (after the start) every call fails at once, as to a
    /// machine that is down, without using up the fates (worker 0 spared when reliable).
    pub(super) outage: Option<(Duration, Duration)>,
}

pub(super) fn run_fate() -> impl Strategy<Value = RunFate> {
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
        1 => d().prop_map(RunFate::Busy),
        3 => (d(), any::<u8>()).prop_map(|(d, which)| RunFate::LoseInput(d, which)),
    ]
}

pub(super) fn wait_fate() -> impl Strategy<Value = WaitFate> {
    prop_oneof![
        6 => Just(WaitFate::Answer),
        2 => (0u64..300).prop_map(WaitFate::Unreachable),
        1 => (0u64..300, 0u64..300).prop_map(|(d, late)| WaitFate::UnreachableThenAnswer(d, late)),
    ]
}

pub(super) fn knobs() -> impl Strategy<Value = SchedulerConfig> {
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
            dead_after: secs(10),
            probation_after,
            probation_base: ms(probation_base),
            speculation,
            speculation_factor,
            speculation_min: ms(min),
            max_backups,
        }
    })
}

pub(super) fn scenario(reliable: bool) -> impl Strategy<Value = Scenario> {
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

/// The events the simulated workers will send, by time; ties in the order planned.
pub(super) struct Replies {
    pub(super) pending: BTreeMap<(Instant, u64), Event>,
    pub(super) seq: u64,
}

impl Replies {
    pub(super) fn at(&mut self, when: Instant, event: Event) {
        self.seq += 1;
        self.pending.insert((when, self.seq), event);
    }
}

/// The fates of the calls still to come; once they run out, every call goes well.
pub(super) struct Fates<R, W> {
    pub(super) runs: R,
    pub(super) waits: W,
    /// Each worker's last Wait, for stale replies.
    pub(super) last_wait: BTreeMap<WorkerId, WaitId>,
}

impl<R: Iterator<Item = RunFate>, W: Iterator<Item = WaitFate>> Fates<R, W> {
    /// Plans the replies to `action`, which the scheduler asked for at `now`.
    pub(super) fn plan(&mut self, s: &Scenario, start: Instant, now: Instant, action: &Action, replies: &mut Replies) {
        let down = |worker: WorkerId| {
            let in_outage = s.outage.is_some_and(|(from, len)| (from..from + len).contains(&(now - start)));
            in_outage && !(s.reliable && worker == w(0))
        };
        match *action {
            Action::Run { worker, attempt, .. } if down(worker) => {
                let reason = Failure::Unreachable("connection refused".into());
                replies.at(now, Event::Failed { attempt, reason });
            }
            Action::Wait { worker, wait, .. } if down(worker) => {
                self.last_wait.insert(worker, wait);
                let reason = Failure::Unreachable("connection refused".into());
                replies.at(now, Event::WaitFailed { wait, reason });
            }
            Action::Run { worker, attempt, task, deadline, ref spec } => {
                let fate = self.runs.next().unwrap_or(RunFate::Succeed(10));
                let fate = match fate {
                    _ if !(s.reliable && worker == w(0)) => fate,
                    RunFate::Succeed(d)
                    | RunFate::Fail(d)
                    | RunFate::Lose(d)
                    | RunFate::TimeOutThenSucceed(d)
                    | RunFate::SucceedTwice(d)
                    | RunFate::SucceedAfterStray(d)
                    | RunFate::SucceedAfterStrayWait(d)
                    | RunFate::Busy(d)
                    | RunFate::LoseInput(d, _) => RunFate::Succeed(d.min(deadline.as_millis() as u64 - 1)),
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
                        let stale = self.last_wait.get(&worker).copied();
                        let wait = stale.unwrap_or(WaitId(u64::MAX - replies.seq));
                        let reason = Failure::Unreachable("stray".into());
                        replies.at(now + ms(d / 2), Event::WaitAnswered { wait });
                        replies.at(now + ms(d / 2), Event::WaitFailed { wait, reason });
                        replies.at(now + ms(d), ok);
                    }
                    RunFate::Busy(d) if in_time(d) => {
                        replies.at(now + ms(d), failed(Failure::Busy("at its limit of 4 tasks".into())));
                    }
                    RunFate::LoseInput(d, which) if in_time(d) => {
                        let reply = match lost_input(spec, which, AttemptId(u64::MAX - replies.seq)) {
                            Some(reason) => failed(reason),
                            None => ok,
                        };
                        replies.at(now + ms(d), reply);
                    }
                    // TimeOut, or any reply slower than the deadline.
                    _ => replies.at(timeout, failed(Failure::TimedOut)),
                }
            }
            Action::Wait { worker, wait, for_, deadline } => {
                self.last_wait.insert(worker, wait);
                let fate = if s.reliable && worker == w(0) {
                    WaitFate::Answer
                } else {
                    self.waits.next().unwrap_or(WaitFate::Answer)
                };
                // Fails after `d` ms, or at the deadline if that comes first.
                let failure = |d: u64| {
                    let reason = match ms(d) < for_ + deadline {
                        true => Failure::Unreachable("reset".into()),
                        false => Failure::TimedOut,
                    };
                    (now + ms(d).min(for_ + deadline), Event::WaitFailed { wait, reason })
                };
                match fate {
                    WaitFate::Answer => replies.at(now + for_, Event::WaitAnswered { wait }),
                    WaitFate::Unreachable(d) => {
                        let (at, failed) = failure(d);
                        replies.at(at, failed);
                    }
                    WaitFate::UnreachableThenAnswer(d, late) => {
                        let (at, failed) = failure(d);
                        replies.at(at, failed);
                        replies.at(at + ms(late), Event::WaitAnswered { wait });
                    }
                }
            }
            // A woken Wait's reply is not dropped here: if it comes, it must be ignored.
            Action::Wake { .. } => {}
            Action::Discard(_) | Action::Finished(_) => {}
        }
    }
}

/// The loss a reduce with `spec` reports for fate `LoseInput(_, which)`: of one of its
/// inputs, or of an output never accepted (`never`) or of a map that does not exist.
/// `None` for a map, or a reduce without inputs.
fn lost_input(spec: &TaskSpec, which: u8, never: AttemptId) -> Option<Failure> {
    let TaskSpec::Reduce { inputs, .. } = spec else { return None };
    let input = inputs.get(usize::from(which) % inputs.len().max(1))?;
    let (map, attempt) = match which % 8 {
        7 => (input.range.map, never),
        6 => (u32::MAX, input.range.attempt),
        _ => (input.range.map, input.range.attempt),
    };
    Some(Failure::MapOutputLost {
        map,
        attempt,
        why: "checksum mismatch in block at byte 4".into(),
        holder_gone: false,
    })
}

/// Runs one scenario to its end, checking the model after every action. Returns how the
/// job ended.
pub(super) fn drive(s: &Scenario) -> Result<JobReport, JobError> {
    const STEPS: usize = 200_000;
    let mut sim = Sim::new(s.shards, s.reducers, s.workers, s.config.clone());
    let mut model = Model::new(s, sim.start);
    let mut replies = Replies { pending: BTreeMap::new(), seq: 0 };
    let mut fates = Fates { runs: s.runs.iter().copied(), waits: s.waits.iter().copied(), last_wait: BTreeMap::new() };
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
        // A worker waits idle: the moment a backup becomes due must be a timeout.
        if let Some(moment) = model.backup_moment().filter(|_| model.waits.values().any(|(_, idle)| *idle)) {
            let at = |t: Instant| t - sim.start;
            assert!(
                timeout.is_some_and(|t| t <= moment),
                "backup due at {:?}, timeout {:?}",
                at(moment),
                timeout.map(at)
            );
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
pub(super) fn after_finished(sim: &mut Sim, pending: BTreeMap<(Instant, u64), Event>) {
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
        prop_assert!(!matches!(result, Err(JobError::NoWorkers { .. })), "{result:?}");
    }

    #[test]
    fn every_job_ends_even_when_every_worker_may_vanish(s in scenario(false)) {
        // Any ending will do, as long as the model agrees it was earned.
        let _ending = drive(&s);
    }
}
