//! Rules of membership: workers that join, leave or are declared dead, and the map
//! outputs they hold when outputs stay on workers.

use super::sim::{Health, Sim};
use super::*;

/// Two maps (map-00000 on worker-0, map-00001 on worker-1, both done), one reduce running
/// on worker-1, worker-0 and worker-2 waiting idle; map outputs on workers if
/// `on_workers`.
fn maps_done(on_workers: bool) -> Sim {
    let mut sim = Sim::with_outputs(2, 1, 3, quiet(), on_workers);
    sim.run_until_idle();
    assert_eq!((sim.run_of(map(0)).worker, sim.run_of(map(1)).worker), (w(0), w(1)));
    sim.advance(ms(10));
    sim.succeed_task(map(0));
    sim.succeed_task(map(1));
    assert_eq!(sim.run_of(reduce(0)).worker, w(1));
    assert_eq!(sim.sched.status().maps_done, 2);
    sim
}

#[test]
fn a_worker_silent_for_dead_after_loses_its_map_outputs_and_they_run_again() {
    let mut sim = maps_done(true);
    let killed = sim.now;
    sim.kill(w(0));
    sim.advance_to(killed + secs(10) - ms(1));
    assert_eq!(sim.sched.status().maps_done, 2, "declared dead too early");
    assert_eq!(sim.running(), [reduce(0)]);
    sim.advance_to(killed + secs(10));
    let rerun = sim.run_of(map(0));
    assert_eq!((rerun.worker, rerun.sent), (w(2), killed + secs(10)), "the idle worker is woken for it");
    assert_eq!(sim.sched.status().maps_done, 1);

    // It comes back: it is used again, but its old output stays forgotten.
    sim.revive(w(0));
    sim.succeed(rerun.attempt);
    let r0 = sim.run_of(reduce(0)).attempt;
    assert_eq!(sim.inputs_of(r0), [AttemptId(0), AttemptId(1)], "the running reduce keeps its inputs");
    sim.lose_input(r0, 0, AttemptId(0));
    let again = sim.run_of(reduce(0));
    assert_eq!(sim.inputs_of(again.attempt), [rerun.attempt, AttemptId(1)], "reads the re-run's output");
    sim.advance(secs(10));
    assert!(sim.calls_to(w(0)).iter().any(|(t, _)| *t > sim.elapsed() - secs(10)), "worker-0 is called again");
    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (1, 1));
}

#[test]
fn a_worker_that_answers_before_dead_after_keeps_its_outputs() {
    let mut sim = maps_done(true);
    let killed = sim.now;
    sim.kill(w(0));
    sim.advance_to(killed + secs(5));
    sim.revive(w(0));
    sim.advance_to(killed + secs(30));
    assert_eq!(sim.sched.status().maps_done, 2);
    assert_eq!(sim.finish_job().map_outputs_lost, 0);
}

#[test]
fn on_a_shared_filesystem_a_dead_or_departed_worker_keeps_its_outputs() {
    let mut sim = maps_done(false);
    sim.kill(w(0));
    sim.advance(secs(60));
    sim.feed(Event::WorkerLeft { worker: w(2) });
    sim.run_until_idle();
    assert_eq!(sim.sched.status().maps_done, 2);
    assert_eq!(sim.running(), [reduce(0)]);
    assert_eq!(sim.finish_job().map_outputs_lost, 0);
}

#[test]
fn a_worker_that_leaves_loses_its_map_outputs_at_once_and_is_never_called_again() {
    let mut sim = maps_done(true);
    sim.feed(Event::WorkerLeft { worker: w(0) });
    sim.run_until_idle();
    let rerun = sim.run_of(map(0));
    assert_eq!((rerun.worker, rerun.sent), (w(2), sim.now));
    // worker-0's idle Wait is forgotten: its answer is ignored, and it is not called again.
    let left = sim.elapsed();
    sim.advance(secs(30));
    sim.succeed(rerun.attempt);
    let report = sim.finish_job();
    assert!(sim.calls_to(w(0)).iter().all(|(t, _)| *t <= left), "worker-0 called after it left");
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (1, 1));
}

#[test]
fn a_map_that_succeeds_on_a_worker_that_left_meanwhile_runs_again() {
    let mut sim = Sim::with_outputs(2, 1, 2, quiet(), true);
    sim.run_until_idle();
    let gone = sim.run_of(map(1));
    sim.feed(Event::WorkerLeft { worker: gone.worker });
    sim.succeed_task(map(0));
    sim.succeed(gone.attempt);
    let rerun = sim.run_of(map(1));
    assert_eq!(rerun.worker, w(0));
    assert_eq!(sim.finish_job().map_outputs_lost, 1);
}

#[test]
fn a_finished_job_is_not_disturbed_by_a_worker_leaving() {
    let mut sim = Sim::with_outputs(1, 1, 2, quiet(), true);
    let report = sim.finish_job();
    let actions = sim.log.len();
    sim.feed(Event::WorkerLeft { worker: w(0) });
    sim.advance(secs(60));
    assert_eq!(sim.log.len(), actions, "actions after the job ended");
    assert_eq!(report.map_outputs_lost, 0);
}

#[test]
fn a_joined_worker_gets_a_task_on_the_next_poll() {
    let mut sim = Sim::new(3, 1, 1, quiet());
    sim.run_until_idle();
    assert_eq!(sim.running(), [map(0)]);
    assert_eq!(sim.sched.add_worker(sim.now), Some(w(1)));
    sim.workers.push(Health::Up);
    sim.run_until_idle();
    assert_eq!((sim.run_of(map(1)).worker, sim.run_of(map(1)).sent), (w(1), sim.now));
    // The same as an event: the next id in order.
    sim.feed(Event::WorkerJoined);
    sim.run_until_idle();
    assert_eq!(sim.run_of(map(2)).worker, w(2));
    let report = sim.finish_job();
    assert_eq!(report.workers.len(), 3);
}

#[test]
fn dead_after_must_be_positive() {
    let config = SchedulerConfig { dead_after: Duration::ZERO, ..quiet() };
    assert_eq!(config.validate(), Err(ConfigError::ZeroDuration("dead_after")));
}

#[test]
fn a_draining_worker_keeps_its_map_outputs_and_its_refused_attempt_costs_nothing() {
    // worker-1 drains while its reduce runs: the reduce is refused (not charged), runs on
    // another worker, and still reads worker-1's map output; worker-1 is never called again.
    let mut sim = maps_done(true);
    let r = sim.run_of(reduce(0));
    let calls = sim.calls_to(w(1)).len();
    sim.feed(Event::Failed { attempt: r.attempt, reason: Failure::Draining("SIGTERM".into()) });
    sim.run_until_idle();
    let again = sim.run_of(reduce(0));
    assert_ne!(again.worker, w(1));
    assert_eq!(sim.inputs_of(again.attempt), [AttemptId(0), AttemptId(1)], "worker-1's output is still read");
    let report = sim.finish_job();
    assert_eq!(sim.calls_to(w(1)).len(), calls, "worker-1 called after it drained");
    assert_eq!((report.map_outputs_lost, report.attempts.failed, report.attempts.map_reruns), (0, 0, 0));
    assert!(report.workers[1].drained && !report.workers[0].drained);
}

#[test]
fn a_wait_answered_draining_takes_the_worker_out_of_the_job() {
    let mut sim = maps_done(true);
    let wait = sim.wait_of(w(2)).wait;
    let calls = sim.calls_to(w(2)).len();
    sim.feed(Event::WaitFailed { wait, reason: Failure::Draining("SIGTERM".into()) });
    sim.advance(secs(60));
    let report = sim.finish_job();
    assert_eq!(sim.calls_to(w(2)).len(), calls, "worker-2 called after it drained");
    assert_eq!(report.map_outputs_lost, 0);
    assert!(report.workers[2].drained);
}

#[test]
fn a_plan_of_no_workers_waits_for_one_to_join() {
    let mut sim = Sim::new(2, 1, 0, quiet());
    sim.run_until_idle();
    assert_eq!(sim.sched.poll_timeout(), Some(sim.start + quiet().no_worker_timeout));
    sim.advance(secs(5));
    sim.feed(Event::WorkerJoined);
    sim.run_until_idle();
    assert_eq!(sim.run_of(map(0)).worker, w(0));
    assert_eq!(sim.finish_job().workers.len(), 1);

    // With none, it gives up after no_worker_timeout.
    let mut sim = Sim::new(2, 1, 0, quiet());
    sim.run_until_idle();
    let took = sim.jump_to_end(secs(3600));
    assert_eq!(took, quiet().no_worker_timeout);
    assert!(matches!(sim.error(), JobError::NoWorkers { .. }), "{}", sim.error());
}

#[test]
fn a_reduce_that_cannot_reach_a_holder_loses_every_output_it_holds_at_once() {
    // Four maps on two workers, two outputs each, then two reduces.
    let mut sim = Sim::with_outputs(4, 2, 2, quiet(), true);
    sim.run_until_idle();
    let mut held: [Vec<u32>; 2] = Default::default();
    for m in 0..4 {
        held[sim.run_of(map(m)).worker.0 as usize].push(m);
        sim.advance(ms(10));
        sim.succeed_task(map(m));
    }
    assert_eq!(held, [vec![0, 2], vec![1, 3]]);
    let r1 = sim.run_of(reduce(1));
    let h = 1 - r1.worker.0 as usize;
    let named = held[h][1];
    let lost = sim.inputs_of(r1.attempt)[named as usize];
    sim.gone_input(r1.attempt, named, lost);
    // Both of the holder's outputs run again, not only the one the reduce named.
    assert_eq!(sim.sched.status().maps_done, 2);
    let rerun = sim.running().into_iter().find(|t| t.kind == TaskKind::Map).expect("a map runs again at once");
    assert!(held[h].contains(&rerun.index), "{rerun} is one of the holder's");
    let report = sim.finish_job();
    assert_eq!((report.map_outputs_lost, report.attempts.map_reruns), (2, 2));

    // An unreachable holder of an output already forgotten changes nothing.
    let mut sim = Sim::with_outputs(2, 1, 2, quiet(), true);
    sim.run_until_idle();
    let (old0, _) = (sim.run_of(map(0)).attempt, sim.run_of(map(1)).attempt);
    sim.succeed_task(map(0));
    sim.succeed_task(map(1));
    let r0 = sim.run_of(reduce(0)).attempt;
    sim.lose_input(r0, 0, old0);
    let rerun = sim.run_of(map(0)).attempt;
    sim.succeed(rerun);
    let again = sim.run_of(reduce(0)).attempt;
    sim.gone_input(again, 0, old0);
    assert_eq!(sim.sched.status().maps_done, 2, "a report about a forgotten output loses nothing");
}
