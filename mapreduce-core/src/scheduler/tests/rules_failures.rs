//! Rules of failed attempts: the budget, and a task avoiding the workers it failed on.

use super::sim::{Call, Sim};
use super::*;

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
    let (mut sim, original, backup) = Sim::with_a_backup_of_map_1();

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
            "task map-00000 failed 3 times (input: in/0.txt[0..1000)); last failure: attempt-2 on worker-0: c",
        ),
        (
            vec![Failure::TimedOut, Failure::Task("b".into()), Failure::TimedOut],
            "task map-00000 failed 3 times (input: in/0.txt[0..1000)); last failure: attempt-2 on worker-0: \
             deadline passed",
        ),
    ];
    for (failures, message) in cases {
        let config = SchedulerConfig { max_attempts: 3, probation_after: 0, ..quiet() };
        let mut sim = Sim::new(1, 1, 1, config);
        sim.run_until_idle();
        for failure in &failures {
            assert!(sim.finished.is_none(), "{failures:?}: failed early");
            let attempt = sim.run_of(map(0)).attempt;
            match failure {
                Failure::Task(why) => sim.fail(attempt, why),
                Failure::TimedOut => sim.time_out(attempt),
                _ => unreachable!(),
            }
        }
        let last = failed(2, 0, failures[2].clone());
        let want = JobError::TaskFailed { task: map(0), input: "in/0.txt[0..1000)".into(), attempts: 3, last };
        assert_eq!(sim.error(), want);
        assert_eq!(sim.error().to_string(), message);
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
        last: failed(2, 0, Failure::Task("corrupt record".into())),
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
        last: failed(7, 0, Failure::Unreachable("connection reset".into())),
    };
    assert_eq!(sim.error(), want);
    let message = "task map-00000 failed 8 times (input: in/0.txt[0..1000)); last failure: attempt-7 on worker-0: \
                   worker unreachable: connection reset";
    assert_eq!(sim.error().to_string(), message);
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
        last: failed(2, 0, Failure::Task("flaky".into())),
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

#[test]
fn job_errors_print_each_cause_once_naming_the_task_or_the_worker() {
    let cases = [
        (
            JobError::TaskFailed {
                task: map(3),
                input: "in/3.txt[0..1003)".into(),
                attempts: 4,
                last: failed(7, 1, Failure::TimedOut),
            },
            "task map-00003 failed 4 times (input: in/3.txt[0..1003)); last failure: attempt-7 on worker-1: \
             deadline passed",
        ),
        (
            JobError::TaskFailed {
                task: reduce(0),
                input: "partition 0 of 2 map outputs".into(),
                attempts: 1,
                last: failed(2, 0, Failure::Task("corrupt block in map-00001/attempt-1".into())),
            },
            "task reduce-00000 failed 1 times (input: partition 0 of 2 map outputs); last failure: attempt-2 on \
             worker-0: corrupt block in map-00001/attempt-1",
        ),
        (
            JobError::NoWorkers {
                waited: secs(10),
                last: Some(WorkerFailure { worker: w(2), reason: Failure::Unreachable("connection refused".into()) }),
            },
            "no worker has been reachable for 10s (every worker unreachable); last error: worker-2: connection refused",
        ),
        (
            JobError::NoWorkers { waited: secs(10), last: None },
            "no worker has been reachable for 10s (every worker unreachable)",
        ),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn a_worker_that_cannot_run_the_job_fails_it_at_once_naming_the_worker() {
    let mut sim = Sim::new(4, 1, 2, quiet());
    sim.run_until_idle();
    let refused = sim.run_of(map(1));
    let why = "job \"grep\" is not registered on this worker";
    sim.feed(Event::Failed { attempt: refused.attempt, reason: Failure::Refused(why.into()) });
    sim.run_until_idle();
    let want = JobError::Refused {
        task: map(1),
        last: AttemptFailure { attempt: refused.attempt, worker: refused.worker, reason: Failure::Refused(why.into()) },
    };
    assert_eq!(sim.error(), want);
    let text = want.to_string();
    assert!(text.contains("map-00001") && text.contains(&refused.worker.to_string()) && text.contains(why), "{text}");
    assert_eq!(sim.launches(map(1)), 1, "no second attempt");
}
