//! Rules of lost map output: a reduce that cannot read a map's output has the map re-run,
//! at no cost to itself, and a map lost too often ends the job.

use super::sim::{Call, Sim};
use super::*;

/// A job of `maps` maps (each done at once), in the reduce phase with one reduce attempt
/// running per worker.
fn in_reduce_phase(maps: u32, reducers: u32, workers: u32, config: SchedulerConfig) -> Sim {
    let mut sim = Sim::new(maps, reducers, workers, config);
    sim.run_until_idle();
    for m in 0..maps {
        sim.succeed_task(map(m));
    }
    assert_eq!(sim.sched.status().phase, Phase::Reduce);
    sim
}

#[test]
fn a_reduce_that_reports_a_lost_map_output_has_the_map_re_run_and_then_succeeds() {
    let mut sim = in_reduce_phase(2, 2, 2, quiet());
    assert_eq!(sim.running(), [reduce(0), reduce(1)]);
    let r0 = sim.run_of(reduce(0));
    let lost = sim.inputs_of(r0.attempt)[1];
    sim.advance(ms(10));
    sim.lose_input(r0.attempt, 1, lost);

    // The reduce's worker re-runs map-00001 at once; reduce-00000 waits for it, and
    // reduce-00001 keeps running.
    let rerun = sim.run_of(map(1));
    assert_eq!((rerun.worker, rerun.sent), (r0.worker, sim.now));
    assert_eq!(sim.running(), [reduce(1), map(1)]);
    let status = sim.sched.status();
    assert_eq!((status.phase, status.maps_done, status.reduces_done), (Phase::Reduce, 1, 0));
    sim.advance(ms(100));
    assert_eq!(sim.running(), [reduce(1), map(1)], "a reduce started while a map is not done");

    sim.succeed(rerun.attempt);
    let again = sim.run_of(reduce(0));
    assert_eq!(again.sent, sim.now);
    assert_eq!(sim.inputs_of(again.attempt), [AttemptId(0), rerun.attempt], "reads the re-run's output");

    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (1, 1));
    let want = AttemptCounts { launched: 6, succeeded: 5, failed: 1, map_reruns: 1, ..AttemptCounts::default() };
    assert_eq!(report.attempts, want);
    // The lost output is forgotten, never discarded: it may be gone or corrupt.
    assert_eq!(sim.discarded(), []);
    // Bytes and skipped records of the last accepted output of each map.
    assert_eq!(report.intermediate_bytes, 2 * (100 + 101));
    assert_eq!(report.skipped_records, rerun.attempt.0 % 3);
}

#[test]
fn reduces_wait_while_a_lost_map_re_runs_then_an_idle_worker_is_woken_for_them() {
    let mut sim = in_reduce_phase(1, 2, 2, quiet());
    let (r0, r1) = (sim.run_of(reduce(0)), sim.run_of(reduce(1)));
    sim.lose_input(r0.attempt, 0, AttemptId(0));
    sim.lose_input(r1.attempt, 0, AttemptId(0));
    // One worker re-runs the map; the other has nothing it may start and waits idle.
    assert_eq!(sim.running(), [map(0)]);
    let idle = w(1 - sim.run_of(map(0)).worker.0);
    assert_eq!(sim.calls_to(idle).last(), Some(&(sim.elapsed(), Call::Idle)));

    sim.advance(ms(30));
    sim.succeed_task(map(0));
    assert_eq!(sim.running(), [reduce(1), reduce(0)], "both reduces start at once");
    assert!(sim.runs.iter().all(|r| r.sent == sim.now));
    let woken = |(_, a): &(std::time::Duration, Action)| matches!(a, Action::Wake { worker, .. } if *worker == idle);
    assert!(sim.log.iter().any(woken));
    sim.finish_job();
}

#[test]
fn duplicate_loss_reports_re_run_the_map_once() {
    let mut sim = in_reduce_phase(1, 3, 3, quiet());
    let reduces: Vec<AttemptId> = (0..3).map(|r| sim.run_of(reduce(r)).attempt).collect();
    sim.lose_input(reduces[0], 0, AttemptId(0));
    sim.lose_input(reduces[1], 0, AttemptId(0));
    assert_eq!(sim.launches(map(0)), 2);
    sim.succeed_task(map(0));
    // A late report from the reduce that still read the first output changes nothing
    // for the map.
    sim.lose_input(reduces[2], 0, AttemptId(0));
    assert_eq!(sim.launches(map(0)), 2);

    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (1, 1));
    assert_eq!(report.attempts.failed, 3);
}

#[test]
fn a_loss_report_about_a_superseded_attempt_is_ignored_for_the_map_and_costs_the_reduce_nothing() {
    // One attempt each: any charge to a reduce would fail the job.
    let config = SchedulerConfig { max_attempts: 1, probation_after: 1, ..quiet() };
    let mut sim = in_reduce_phase(1, 2, 2, config);
    let (r0, r1) = (sim.run_of(reduce(0)).attempt, sim.run_of(reduce(1)).attempt);
    sim.lose_input(r0, 0, AttemptId(0));
    let rerun = sim.run_of(map(0)).attempt;
    sim.succeed(rerun);
    sim.lose_input(r1, 0, AttemptId(0));
    assert_eq!(sim.launches(map(0)), 2, "the map ran again for a report about an output it replaced");
    assert!(sim.finished.is_none(), "{:?}", sim.finished);
    for r in 0..2 {
        let attempt = sim.run_of(reduce(r)).attempt;
        assert_eq!(sim.inputs_of(attempt), [rerun]);
    }
    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.probations), (1, 0));
}

#[test]
fn a_loss_report_naming_an_output_the_map_never_accepted_is_the_reduces_own_failure() {
    for (map_index, named) in [(0, AttemptId(77)), (5, AttemptId(0))] {
        let config = SchedulerConfig { max_attempts: 1, ..quiet() };
        let mut sim = in_reduce_phase(1, 1, 1, config);
        let r0 = sim.run_of(reduce(0)).attempt;
        sim.lose_input(r0, map_index, named);
        let why = "checksum mismatch in block at byte 4".to_string();
        let reason = Failure::MapOutputLost { map: map_index, attempt: named, why, holder_gone: false };
        let want = JobError::TaskFailed {
            task: reduce(0),
            input: "partition 0 of 1 map outputs".into(),
            attempts: 1,
            last: failed(r0.0, 0, reason),
        };
        assert_eq!(sim.error(), want);
        assert_eq!(sim.launches(map(0)), 1);
    }
}

#[test]
fn losses_do_not_burn_the_reduces_budget_nor_the_workers_streak() {
    let config = SchedulerConfig { max_attempts: 2, probation_after: 1, ..quiet() };
    let mut sim = in_reduce_phase(1, 1, 1, config);
    for _ in 0..5 {
        let r0 = sim.run_of(reduce(0)).attempt;
        let lost = sim.inputs_of(r0)[0];
        sim.lose_input(r0, 0, lost);
        assert!(sim.finished.is_none(), "{:?}", sim.finished);
        // No probation: the worker gets the re-run at once.
        assert_eq!(sim.run_of(map(0)).sent, sim.now);
        sim.succeed_task(map(0));
    }
    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns, report.probations), (5, 5, 0));
    assert_eq!(report.workers[0].failed, 5);
}

#[test]
fn a_map_lost_every_time_fails_the_job_naming_it() {
    let config = SchedulerConfig { max_attempts: 2, ..quiet() };
    let mut sim = in_reduce_phase(1, 1, 1, config);
    for i in 0..8 {
        assert!(sim.finished.is_none(), "failed after {i} losses");
        if i > 0 {
            sim.succeed_task(map(0));
        }
        let r0 = sim.run_of(reduce(0)).attempt;
        let lost = sim.inputs_of(r0)[0];
        sim.lose_input(r0, 0, lost);
    }
    let JobError::TaskFailed { task, input, attempts, last } = sim.error() else { panic!("{:?}", sim.error()) };
    assert_eq!((task, input.as_str(), attempts), (map(0), "in/0.txt[0..1000)", 8));
    assert!(matches!(last.reason, Failure::MapOutputLost { map: 0, .. }), "{last:?}");
    // Loss i is reported by reduce attempt 2i + 1 about map attempt 2i.
    let message = "task map-00000 failed 8 times (input: in/0.txt[0..1000)); last failure: attempt-15 on worker-0: \
                   lost output of map-00000 attempt-14: checksum mismatch in block at byte 4";
    assert_eq!(sim.error().to_string(), message);
}

#[test]
fn a_lost_map_whose_losing_backup_still_runs_waits_for_that_backup() {
    let (mut sim, original, backup) = Sim::with_a_backup_of_map_1();
    sim.advance(ms(100));
    sim.succeed(original.attempt);
    let r0 = sim.run_of(reduce(0)).attempt;
    sim.lose_input(r0, 1, original.attempt);

    // The backup still runs: the map is RUNNING again, not launched a third time.
    assert_eq!(sim.launches(map(1)), 2);
    assert_eq!(sim.running(), [map(1)]);
    assert_eq!(sim.sched.status().maps_done, 1);
    sim.advance(ms(100));
    sim.succeed(backup.attempt);
    let again = sim.run_of(reduce(0)).attempt;
    assert_eq!(sim.inputs_of(again), [AttemptId(0), backup.attempt]);

    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (1, 0));
    assert_eq!((report.attempts.speculative, report.attempts.speculative_won), (1, 1));
    assert_eq!(sim.discarded(), []);
}

#[test]
fn failure_messages_name_the_lost_output_and_the_busy_worker() {
    let lost = Failure::MapOutputLost { map: 3, attempt: AttemptId(7), why: "no such file".into(), holder_gone: false };
    assert_eq!(lost.to_string(), "lost output of map-00003 attempt-7: no such file");
    assert_eq!(Failure::Busy("at its limit of 2 tasks".into()).to_string(), "worker busy: at its limit of 2 tasks");
    let on = |reason| WorkerFailure { worker: w(1), reason }.to_string();
    assert_eq!(on(lost), "worker-1: lost output of map-00003 attempt-7: no such file");
    assert_eq!(on(Failure::Busy("full".into())), "worker-1: full");
}

/// Map `m`'s running attempt succeeds with ranges of `partitions` only.
fn succeed_sparse(sim: &mut Sim, m: u32, partitions: &[u32]) -> AttemptId {
    let attempt = sim.run_of(map(m)).attempt;
    let ranges = partitions.iter().map(|&p| range(m, attempt, p)).collect();
    let location = Location::new(format!("{}/{attempt}", map(m)));
    let output = TaskOutput::Map { location, ranges, input_records: 1, skipped_records: 0, counters: Counters::new() };
    sim.feed(Event::Succeeded { attempt, output });
    sim.run_until_idle();
    attempt
}

#[test]
fn a_reduce_reads_the_maps_with_data_for_it_in_map_order_also_after_a_re_run_with_other_partitions() {
    // map-00000 writes partitions 0 and 1, map-00001 only 1, map-00002 only 0.
    let mut sim = Sim::new(3, 2, 3, quiet());
    sim.run_until_idle();
    let a2 = succeed_sparse(&mut sim, 2, &[0]);
    let a1 = succeed_sparse(&mut sim, 1, &[1]);
    let a0 = succeed_sparse(&mut sim, 0, &[0, 1]);
    let (r0, r1) = (sim.run_of(reduce(0)).attempt, sim.run_of(reduce(1)).attempt);
    assert_eq!(sim.inputs_of(r0), [a0, a2]);
    assert_eq!(sim.inputs_of(r1), [a0, a1]);

    // map-00000's output is lost; run again, it writes partition 1 only.
    sim.lose_input(r1, 0, a0);
    let again = succeed_sparse(&mut sim, 0, &[1]);
    let r1 = sim.run_of(reduce(1)).attempt;
    assert_eq!(sim.inputs_of(r1), [again, a1]);
    // A reduce-00000 started now would read map-00002 only.
    let old = sim.run_of(reduce(0)).attempt;
    sim.fail(old, "disk full");
    let r0 = sim.run_of(reduce(0)).attempt;
    assert_eq!(sim.inputs_of(r0), [a2]);
}
