//! Rules of workers: deadlines and probes, unreachable workers, probation, busy workers.

use std::time::Duration;

use super::sim::{Call, Health, Sim};
use super::*;

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
    let attempt = sim.run_of(map(0)).attempt;
    sim.time_out_and_kill(attempt); // the probe will fail
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
    sim.workers = vec![Health::Down; 2];
    sim.run_until_idle();
    assert_eq!(sim.jump_to_end(secs(60)), secs(10));
    match sim.error() {
        JobError::NoWorkers { waited, last: Some(WorkerFailure { reason, .. }) } => {
            assert_eq!(waited, secs(10));
            assert_eq!(reason, Failure::Unreachable("connection refused".into()));
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
    let error = sim.error();
    assert!(matches!(error, JobError::NoWorkers { waited, last: Some(_) } if waited == secs(10)), "{error:?}");
}

#[test]
fn a_lone_worker_whose_probe_fails_after_a_missed_deadline_has_no_worker_timeout_to_answer() {
    // The deadline (60s) is past no_worker_timeout (10s), counted from the failed probe.
    for answers_at in [None, Some(secs(69))] {
        let mut sim = Sim::new(1, 1, 1, flaky_network());
        sim.run_until_idle();
        let attempt = sim.run_of(map(0)).attempt;
        sim.time_out_and_kill(attempt); // the probe will fail
        assert_eq!(sim.calls_to(w(0)).last(), Some(&(secs(60), Call::Probe)));
        assert!(sim.finished.is_none(), "a missed deadline and a failed probe ended the job: {:?}", sim.finished);

        let Some(at) = answers_at else {
            assert_eq!(sim.jump_to_end(secs(120)), secs(70));
            let last = Some(WorkerFailure { worker: w(0), reason: Failure::Unreachable("connection refused".into()) });
            assert_eq!(sim.error(), JobError::NoWorkers { waited: secs(10), last });
            let message = "no worker has been reachable for 10s (every worker unreachable); last error: worker-0: \
                           connection refused";
            assert_eq!(sim.error().to_string(), message);
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

#[test]
fn a_wait_past_its_deadline_makes_its_worker_unreachable_and_the_error_says_so() {
    let config = SchedulerConfig { task_timeout: secs(1), ..flaky_network() };
    let mut sim = Sim::new(1, 1, 1, config);
    sim.run_until_idle();
    let attempt = sim.run_of(map(0)).attempt;
    sim.drop_replies(w(0));
    sim.time_out(attempt);
    // Each probe's deadline is 2 s (one missed deadline); it rests 100 ms, 200 ms, ...
    // after each. Silent since its first probe failed, at 3 s.
    while sim.finished.is_none() {
        assert!(sim.elapsed() < secs(60), "the job still runs at {:?}", sim.elapsed());
        let next = sim.next_wake().expect("a Wait ends, or a timeout is pending");
        sim.advance_to(next);
    }
    assert_eq!(sim.elapsed(), secs(13));
    let probes: Vec<Duration> = sim.calls_to(w(0)).iter().skip(1).map(|(at, _)| *at).collect();
    assert_eq!(probes, [secs(1), ms(3100), ms(5300), ms(7700), ms(10_500)]);
    let last = Some(WorkerFailure { worker: w(0), reason: Failure::TimedOut });
    assert_eq!(sim.error(), JobError::NoWorkers { waited: secs(10), last });
    let message = "no worker has been reachable for 10s (every worker unreachable); last error: worker-0 did not \
                   answer in time";
    assert_eq!(sim.error().to_string(), message);
}

// ---------------------------------------------------------------------------------------
// Busy workers
// ---------------------------------------------------------------------------------------

#[test]
fn a_busy_worker_sends_its_task_back_to_todo_uncharged_and_is_ready_again_after_a_rest() {
    // One attempt and a streak of one: any charge would fail the job or rest the worker.
    let config = SchedulerConfig { max_attempts: 1, probation_after: 1, ..flaky_network() };
    let mut sim = Sim::new(1, 1, 2, config);
    sim.run_until_idle();
    assert_eq!(sim.calls_to(w(1)), [(ms(0), Call::Idle)]);
    sim.advance(ms(10));
    let first = sim.run_of(map(0)).attempt;
    sim.busy(first);
    // worker-1, in its idle Wait, is woken for the task; worker-0 rests retry_base.
    assert_eq!(sim.calls_to(w(1)).last(), Some(&(ms(10), Call::Run(map(0)))));
    assert_eq!(sim.sched.poll_timeout(), Some(sim.now + ms(100)));
    sim.jump_to_timeout();
    // It answered, so no probe: it is ready, and with nothing to do it waits idle.
    assert_eq!(sim.calls_to(w(0)), [(ms(0), Call::Run(map(0))), (ms(110), Call::Idle)]);

    let report = sim.finish_job();
    let want = AttemptCounts { launched: 3, succeeded: 2, busy: 1, ..AttemptCounts::default() };
    assert_eq!(report.attempts, want);
    assert_eq!((report.probations, report.workers[0].failed), (0, 0));
}

#[test]
fn busy_answers_in_a_row_back_off_up_to_retry_cap_and_a_success_resets_them() {
    let mut sim = Sim::new(1, 1, 1, flaky_network()); // retry_base 100 ms, retry_cap 1 s
    sim.run_until_idle();
    let mut runs = vec![ms(0)];
    for _ in 0..5 {
        let attempt = sim.run_of(map(0)).attempt;
        sim.busy(attempt);
        runs.push(sim.jump_to_timeout());
    }
    assert_eq!(runs, [ms(0), ms(100), ms(300), ms(700), ms(1500), ms(2500)]);
    let calls: Vec<(Duration, Call)> = runs.iter().map(|&at| (at, Call::Run(map(0)))).collect();
    assert_eq!(sim.calls_to(w(0)), calls, "a probe or an idle Wait after a Busy answer");
    sim.succeed_task(map(0));
    let attempt = sim.run_of(reduce(0)).attempt;
    sim.busy(attempt);
    assert_eq!(sim.sched.poll_timeout(), Some(sim.now + ms(100)), "the backoff starts over after a success");

    // Busy answers count as answers: a cluster of busy workers never times out.
    let mut sim = Sim::new(1, 1, 1, SchedulerConfig { no_worker_timeout: secs(1), ..flaky_network() });
    sim.run_until_idle();
    for _ in 0..10 {
        let attempt = sim.run_of(map(0)).attempt;
        sim.busy(attempt);
        sim.jump_to_timeout();
    }
    assert!(sim.elapsed() > secs(5) && sim.finished.is_none(), "{:?}", sim.finished);
    assert_eq!(sim.finish_job().attempts.busy, 10);
}
