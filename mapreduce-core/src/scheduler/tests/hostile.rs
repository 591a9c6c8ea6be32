//! Hostile plans and knobs: `Scheduler::new` refuses them or the scheduler works, and
//! never panics (sizes past every limit, durations at `Duration::MAX`, segments that end
//! before they start).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::job::MAX_REDUCERS;
use crate::shard::Segment;

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        24 => 1u32..4,
        1 => Just(0),
        1 => Just(MAX_WORKERS + 1),
        1 => Just(MAX_REDUCERS + 1),
        1 => Just(u32::MAX),
    ]
}

/// Mostly `usual`, sometimes an extreme.
fn duration(usual: Duration) -> impl Strategy<Value = Duration> {
    prop_oneof![
        40 => Just(usual),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::from_nanos(1)),
        1 => Just(MAX_IDLE_WAIT),
        2 => Just(MAX_DURATION),
        1 => Just(MAX_DURATION + Duration::from_nanos(1)),
        1 => Just(Duration::MAX),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 1u64..5000, Just(u64::MAX / 2), Just(u64::MAX - 1), Just(u64::MAX)]
}

fn hostile_shards() -> impl Strategy<Value = Vec<Shard>> {
    let segment = (offset(), offset()).prop_map(|(start, end)| Segment { path: "in/x".into(), start, end });
    let shard = proptest::collection::vec(segment, 0..4).prop_map(|segments| Shard { segments });
    proptest::collection::vec(shard, 0..5)
}

fn hostile_config() -> impl Strategy<Value = SchedulerConfig> {
    let d = SchedulerConfig::default();
    let durations = (
        (duration(d.task_timeout), duration(d.max_task_timeout), duration(d.idle_wait), duration(d.retry_base)),
        (duration(d.retry_cap), duration(d.no_worker_timeout), duration(d.probation_base), duration(ms(1))),
    );
    let attempts = prop_oneof![12 => Just(4u32), 1 => Just(0), 1 => Just(1), 1 => Just(u32::MAX)];
    let factor = prop_oneof![
        12 => Just(2.0),
        1 => Just(f64::NAN),
        1 => Just(0.5),
        1 => Just(1.0),
        1 => Just(1e300),
        1 => Just(f64::INFINITY),
    ];
    let small = || prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)];
    (durations, attempts, factor, small(), small(), any::<bool>()).prop_map(
        |(((t, max_t, idle, base), (cap, no_worker, probation, min)), max_attempts, factor, after, backups, spec)| {
            SchedulerConfig {
                task_timeout: t,
                max_task_timeout: max_t,
                max_attempts,
                idle_wait: idle,
                retry_base: base,
                retry_cap: cap,
                no_worker_timeout: no_worker,
                dead_after: no_worker,
                probation_after: after,
                probation_base: probation,
                speculation: spec,
                speculation_factor: factor,
                speculation_min: min,
                max_backups: backups,
            }
        },
    )
}

/// How the fake workers answer, drawn in turn: 0 succeed, 1 task error, 2 unreachable,
/// 3 time out, 4 busy, 5 lose the reduce's first input; a Wait is answered unless 2.
fn drive_a_little(mut sched: Scheduler, fates: &[u8]) {
    let mut now = Instant::now();
    let mut calls: Vec<Action> = Vec::new();
    let mut fates = fates.iter().copied().cycle();
    for _ in 0..200 {
        for _ in 0..64 {
            match sched.poll_action(now) {
                Some(Action::Finished(_)) => return,
                Some(call @ (Action::Run { .. } | Action::Wait { .. })) => calls.push(call),
                Some(_) => {}
                None => break,
            }
        }
        let Some(call) = calls.pop() else {
            match sched.poll_timeout() {
                Some(t) => now = now.max(t),
                None => return,
            }
            continue;
        };
        now += ms(7);
        let fate = fates.next().unwrap_or(0);
        let event = match call {
            Action::Run { attempt, task, spec, .. } => {
                let reason = match (fate, spec) {
                    (1, _) => Failure::Task("boom".into()),
                    (2, _) => Failure::Unreachable("refused".into()),
                    (3, _) => Failure::TimedOut,
                    (4, _) => Failure::Busy("full".into()),
                    (5, TaskSpec::Reduce { inputs, .. }) if !inputs.is_empty() => {
                        let r = &inputs[0].range;
                        Failure::MapOutputLost {
                            map: r.map,
                            attempt: r.attempt,
                            why: "gone".into(),
                            holder_gone: false,
                        }
                    }
                    _ => {
                        // Few ranges, whatever the number of reducers.
                        let output = match output_for(task, attempt, 1) {
                            TaskOutput::Map { location, ranges, input_records, counters, .. } => {
                                TaskOutput::Map { location, ranges, input_records, skipped_records: u64::MAX, counters }
                            }
                            reduce => reduce,
                        };
                        sched.handle_event(now, Event::Succeeded { attempt, output });
                        continue;
                    }
                };
                Event::Failed { attempt, reason }
            }
            Action::Wait { wait, .. } if fate == 2 => {
                Event::WaitFailed { wait, reason: Failure::Unreachable("refused".into()) }
            }
            Action::Wait { wait, .. } => Event::WaitAnswered { wait },
            _ => unreachable!("only calls are kept"),
        };
        sched.handle_event(now, event);
        let _ = sched.status();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn new_refuses_or_works_and_never_panics_on_hostile_plans_and_knobs(
        shards in hostile_shards(),
        reducers in count(),
        workers in count(),
        config in hostile_config(),
        fates in proptest::collection::vec(0u8..6, 1..40),
    ) {
        let plan = JobPlan { shards, reducers, workers, outputs_on_workers: false };
        match Scheduler::new(plan.clone(), config.clone()) {
            Ok(sched) => {
                prop_assert!(config.validate().is_ok());
                prop_assert!(plan.reducers <= MAX_REDUCERS && plan.workers <= MAX_WORKERS);
                drive_a_little(sched, &fates);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn plans_past_the_limits_name_the_limit() {
    let plan = |reducers, workers| JobPlan { shards: shards(1), reducers, workers, outputs_on_workers: false };
    let err = |p| Scheduler::new(p, SchedulerConfig::default()).err().map(|e| e.to_string());
    assert_eq!(err(plan(MAX_REDUCERS + 1, 1)).as_deref(), Some("1048577 reducers is more than the maximum of 1048576"));
    assert_eq!(err(plan(1, MAX_WORKERS + 1)).as_deref(), Some("65537 workers is more than the maximum of 65536"));
    assert_eq!(
        err(plan(u32::MAX, u32::MAX)).as_deref(),
        Some("4294967295 reducers is more than the maximum of 1048576")
    );
    let too_long = SchedulerConfig { no_worker_timeout: Duration::MAX, ..SchedulerConfig::default() };
    let got = Scheduler::new(plan(1, 1), too_long).err();
    assert_eq!(got, Some(ConfigError::DurationTooLong("no_worker_timeout")));
    assert_eq!(got.unwrap().to_string(), "no_worker_timeout exceeds a year");
    // At the limits, a job runs.
    let longest = SchedulerConfig {
        task_timeout: MAX_DURATION,
        max_task_timeout: MAX_DURATION,
        retry_base: MAX_DURATION,
        retry_cap: MAX_DURATION,
        no_worker_timeout: MAX_DURATION,
        probation_base: MAX_DURATION,
        speculation_min: MAX_DURATION,
        speculation_factor: f64::INFINITY,
        ..SchedulerConfig::default()
    };
    let mut sim = sim::Sim::new(2, 3, 2, longest);
    sim.finish_job();
}

#[test]
fn a_plan_at_max_reducers_and_max_workers_is_accepted() {
    let plan = JobPlan { shards: Vec::new(), reducers: MAX_REDUCERS, workers: MAX_WORKERS, outputs_on_workers: false };
    let mut sched = Scheduler::new(plan, SchedulerConfig::default()).expect("at the limits");
    let now = Instant::now();
    assert!(matches!(sched.poll_action(now), Some(Action::Run { .. })));
    assert_eq!(sched.status().reduces_total, MAX_REDUCERS);
}
