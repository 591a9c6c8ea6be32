//! Rules of speculation: when a backup starts, which task it backs up, which output wins.

use super::sim::{Call, Sim};
use super::*;

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
            TaskOutput::Map { location, ranges, .. } => {
                ReduceInput { location: location.clone(), range: ranges[0].clone() }
            }
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

#[test]
fn a_backup_starts_the_moment_its_task_becomes_eligible_not_when_an_idle_wait_ends() {
    let config = SchedulerConfig { idle_wait: secs(10), ..speculative(secs(1), 2.0, 1) };
    let mut sim = Sim::new(2, 1, 2, config);
    sim.run_until_idle();
    sim.advance(ms(300));
    // The median is 300 ms: map-00001, running since 0, is eligible at max(1 s, 600 ms).
    sim.succeed_task(map(0));
    assert_eq!(sim.calls_to(w(0)).last(), Some(&(ms(300), Call::Idle)), "worker-0 waits until 10.3 s");
    assert_eq!(sim.sched.poll_timeout(), Some(sim.start + secs(1)));

    assert_eq!(sim.jump_to_timeout(), secs(1));
    let [original, backup] = sim.runs_of(map(1)).try_into().expect("a backup of map-00001");
    assert_eq!((original.worker, backup.worker, backup.sent), (w(1), w(0), sim.start + secs(1)));
    let woken = sim.log.iter().filter(|(_, a)| matches!(a, Action::Wake { worker, .. } if *worker == w(0)));
    assert_eq!(woken.map(|(at, _)| *at).collect::<Vec<_>>(), [secs(1)]);
    assert!(sim.waits.is_empty(), "{:?}", sim.waits);
    assert_eq!(sim.sched.poll_timeout(), None, "a second backup timer though max_backups run");

    sim.advance(ms(100));
    sim.succeed(backup.attempt);
    let report = sim.finish_job();
    assert_eq!((report.attempts.speculative, report.attempts.speculative_won), (1, 1));
}

#[test]
fn the_backup_timer_runs_only_while_a_worker_waits_idle_and_a_backup_may_start() {
    // (max_backups, maps): with 3 maps worker-0 takes map-00002 instead of waiting idle.
    for (max_backups, maps, timer) in [(1, 2, Some(secs(1))), (0, 2, None), (1, 3, None)] {
        let config = SchedulerConfig { idle_wait: secs(10), ..speculative(secs(1), 2.0, max_backups) };
        let mut sim = Sim::new(maps, 1, 2, config);
        sim.run_until_idle();
        sim.advance(ms(300));
        sim.succeed_task(map(0));
        let want = timer.map(|t| sim.start + t);
        assert_eq!(sim.sched.poll_timeout(), want, "max_backups {max_backups}, {maps} maps");
    }
}
