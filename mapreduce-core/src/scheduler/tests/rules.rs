//! Rules of a job's course: plans and knobs, TODO -> PROCESSING -> DONE, stale events.

use std::time::Duration;

use super::sim::{Call, Sim};
use super::*;

// ---------------------------------------------------------------------------------------
// Plans, knobs and pure helpers
// ---------------------------------------------------------------------------------------

#[test]
fn new_rejects_plans_and_knobs_that_cannot_work() {
    let plan = || JobPlan { shards: shards(1), reducers: 1, workers: 1, outputs_on_workers: false };
    let knobs = SchedulerConfig::default;
    let cases: Vec<(JobPlan, SchedulerConfig, ConfigError)> = vec![
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
    assert!(sim.log.iter().any(|(_, a)| matches!(a, Action::Wake { worker, .. } if *worker == w(1))));

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
        skipped_records: 1 + 2, // map attempts 0, 1 and 2 skip attempt % 3 records
        map_outputs_lost: 0,
        output_records: 5 + 6,
        probations: 0,
        workers_on_probation: 0,
        // worker-0 ran map-0, map-2 and reduce-0; worker-1 ran map-1 and, after its idle
        // Wait, reduce-1.
        workers: vec![
            WorkerReport { launched: 3, accepted: 3, ..WorkerReport::default() },
            WorkerReport { launched: 2, accepted: 2, ..WorkerReport::default() },
        ],
        // One per accepted attempt, whatever ran; the maps' indices summed.
        counters: Counters::from([("attempts".into(), 5), ("index".into(), 1 + 2)]),
        outputs: vec!["reduce-00000/attempt-3/out".into(), "reduce-00001/attempt-4/out".into()],
    };
    assert_eq!(sim.report(), want);
}

#[test]
fn a_reduce_gets_every_run_of_its_partition_from_every_map() {
    // Map attempts that spilled without combining answer one run of ranges per spill.
    let mut sim = Sim::new(2, 2, 2, quiet());
    sim.run_until_idle();
    let runs = |task: TaskId, attempt: AttemptId, n: u32| TaskOutput::Map {
        location: Location::new(format!("{task}/out")),
        ranges: (0..n * 2)
            .map(|i| MapOutputRange {
                map: task.index,
                attempt,
                partition: i % 2,
                offset: u64::from(i) * 10,
                bytes: 10,
                records: 1,
            })
            .collect(),
        input_records: 3,
        skipped_records: 0,
        counters: Counters::new(),
    };
    for (task, n) in [(map(0), 3), (map(1), 1)] {
        let attempt = sim.run_of(task).attempt;
        sim.feed(Event::Succeeded { attempt, output: runs(task, attempt, n) });
        sim.run_until_idle();
    }
    let inputs = |p: u32| match sim.run_of(reduce(p)).spec {
        TaskSpec::Reduce { inputs, .. } => {
            inputs.iter().map(|i| (i.location.to_string(), i.range.map, i.range.offset)).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let at = |task: TaskId, offsets: &[u64]| {
        offsets.iter().map(|&o| (format!("{task}/out"), task.index, o)).collect::<Vec<_>>()
    };
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
        failed: 0,
        backups: 0,
        map_outputs_lost: 0,
    };
    assert_eq!(sim.sched.status(), status(Phase::Map, 0, 0, 0));
    sim.run_until_idle();
    assert_eq!(sim.sched.status(), status(Phase::Map, 0, 0, 1));
    // A failed attempt is counted; the map runs again.
    let first = sim.run_of(map(0)).attempt;
    sim.fail(first, "disk full");
    assert_eq!(sim.sched.status(), JobStatus { failed: 1, ..status(Phase::Map, 0, 0, 1) });
    sim.succeed_task(map(0));
    assert_eq!(sim.sched.status(), JobStatus { failed: 1, ..status(Phase::Map, 1, 0, 1) });
    sim.succeed_task(map(1));
    assert_eq!(sim.sched.status(), JobStatus { failed: 1, ..status(Phase::Reduce, 2, 0, 1) });
    sim.succeed_task(reduce(0));
    assert_eq!(sim.sched.status(), JobStatus { failed: 1, ..status(Phase::Done, 2, 1, 0) });
    assert_eq!(
        sim.calls_to(w(0)),
        [
            (Duration::ZERO, Call::Run(map(0))),
            (Duration::ZERO, Call::Run(map(0))),
            (Duration::ZERO, Call::Run(map(1))),
            (Duration::ZERO, Call::Run(reduce(0)))
        ]
    );
}

#[test]
fn reduce_tasks_start_after_every_map_is_done_and_read_the_accepted_map_outputs() {
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
        let input = |m: u32, attempt: u64| ReduceInput {
            location: Location::new(format!("map-0000{m}/attempt-{attempt}")),
            range: range(m, AttemptId(attempt), p),
        };
        vec![input(0, 0), input(1, 2)]
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
        Action::Wait { worker, for_, deadline, .. } if *worker == w(1) => Some((*for_, *deadline)),
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
    sim.feed(Event::WaitAnswered { wait: WaitId(0) });
    sim.feed(Event::Failed { attempt: doomed, reason: Failure::TimedOut });
    sim.run_until_idle();
    let after: Vec<_> = sim.log[before..].iter().map(|(_, a)| a.clone()).collect();
    assert!(matches!(after.as_slice(), [Action::Discard(o)] if *o == late), "{after:?}");
    assert_eq!(sim.sched.status().phase, Phase::Done);
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

    let ghost = TaskOutput::Reduce { path: "ghost".into(), records: 1, bytes: 1, counters: Counters::new() };
    sim.feed(Event::Succeeded { attempt: AttemptId(99), output: ghost.clone() });
    let actions = sim.step();
    assert!(matches!(actions.as_slice(), [Action::Discard(o)] if *o == ghost), "{actions:?}");
    assert_eq!(sim.sched.status(), status);

    let report = sim.finish_job();
    assert_eq!((report.attempts.launched, report.attempts.succeeded), (2, 2));
}

#[test]
fn wait_replies_that_are_not_a_workers_current_wait_are_ignored() {
    let config = SchedulerConfig { probation_after: 1, probation_base: secs(5), ..flaky_network() };
    let mut sim = Sim::new(2, 1, 1, config);
    sim.run_until_idle();
    let run = sim.run_of(map(0));

    // worker-0 runs map-00000, no Wait was ever sent: no reply makes it free, nor rest,
    // nor silent.
    sim.advance(ms(10));
    let unreachable = || Failure::Unreachable("connection refused".into());
    let answered = |wait| Event::WaitAnswered { wait: WaitId(wait) };
    let failed = |wait| Event::WaitFailed { wait: WaitId(wait), reason: unreachable() };
    for event in [answered(0), failed(0), failed(7), answered(0)] {
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
    for event in [answered(0), failed(0), Event::WaitFailed { wait: WaitId(1), reason: Failure::TimedOut }] {
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
    assert_eq!(accepted.location(), "map-00000/attempt-1");
    let report = sim.finish_job();
    let want = AttemptCounts { launched: 3, succeeded: 2, timed_out: 1, ..AttemptCounts::default() };
    assert_eq!(report.attempts, want);
}

// ---------------------------------------------------------------------------------------

#[test]
fn the_late_answer_of_a_woken_wait_and_a_second_answer_of_a_wait_are_ignored() {
    let mut sim = Sim::new(1, 2, 2, quiet());
    sim.run_until_idle();
    let woken = sim.wait_of(w(1));
    sim.advance(ms(10));
    sim.succeed_task(map(0));
    let wake = Action::Wake { worker: w(1), wait: woken.wait };
    assert!(sim.log.iter().any(|(_, a)| format!("{a:?}") == format!("{wake:?}")), "{wake:?} missing");
    assert_eq!(sim.running(), [reduce(0), reduce(1)]);
    let status = sim.sched.status();

    // The woken Wait's replies come after all: worker-1 runs reduce-00001, it is neither
    // idle nor unreachable.
    sim.feed(Event::WaitAnswered { wait: woken.wait });
    assert!(sim.step().is_empty(), "the answer of a woken Wait changed something");
    sim.feed(Event::WaitFailed { wait: woken.wait, reason: Failure::TimedOut });
    assert!(sim.step().is_empty(), "the failure of a woken Wait changed something");
    assert_eq!(sim.sched.poll_timeout(), None, "the failure of a woken Wait made its worker rest");
    assert_eq!(sim.sched.status(), status);

    // worker-1 finishes and waits idle; its Wait is answered, then answered again.
    sim.succeed_task(reduce(1));
    let first = sim.wait_of(w(1));
    sim.advance(ms(50));
    let second = sim.wait_of(w(1));
    assert_ne!(first.wait, second.wait);
    assert_eq!(second.sent, sim.start + ms(60));
    sim.feed(Event::WaitAnswered { wait: first.wait });
    assert!(sim.step().is_empty(), "a second answer of a Wait changed something");
    assert_eq!(sim.wait_of(w(1)).wait, second.wait);

    sim.succeed_task(reduce(0));
    assert_eq!(sim.report().attempts, AttemptCounts { launched: 3, succeeded: 3, ..AttemptCounts::default() });
}
