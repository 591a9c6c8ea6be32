//! Tests of the scheduler, driven by [`Sim`](sim::Sim): a fake cluster with a fake clock in
//! the style of quinn-proto's `Pair`. The clock starts at one `Instant::now()` and only
//! moves when a test moves it, jumping straight to the next reply or to `poll_timeout()`.
//! Nothing sleeps, so every run is the same.
//!
//! - [`sim`]: the simulator.
//! - `rules*`: scenarios and tables, one rule of the module docs each, by topic.
//! - [`hostile`]: plans and knobs past every limit are refused or work, never panic.
//! - [`model`] (with [`model_failures`]) and [`properties`]: random plans, knobs and
//!   worker behaviour (busy workers and lost map outputs included), checked against a
//!   model of the rules after every action the scheduler takes.

mod hostile;
mod model;
mod model_failures;
mod properties;
mod rules;
mod rules_failures;
mod rules_lost_output;
mod rules_membership;
mod rules_speculation;
mod rules_workers;
mod sim;

use std::time::Duration;

use super::*;
use crate::counters::Counters;
use crate::shard::Segment;

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn map(index: u32) -> TaskId {
    TaskId { kind: TaskKind::Map, index }
}

pub(super) fn reduce(index: u32) -> TaskId {
    TaskId { kind: TaskKind::Reduce, index }
}

pub(super) fn w(index: u32) -> WorkerId {
    WorkerId(index)
}

/// `n` shards; shard `i` is `in/i.txt[0..1000 + i)`.
pub(super) fn shards(n: u32) -> Vec<Shard> {
    (0..n)
        .map(|i| Shard { segments: vec![Segment { path: format!("in/{i}.txt"), start: 0, end: 1000 + u64::from(i) }] })
        .collect()
}

/// The defaults without speculation, so that no backup joins a scenario uninvited.
pub(super) fn quiet() -> SchedulerConfig {
    SchedulerConfig { speculation: false, ..SchedulerConfig::default() }
}

/// Speculation on, with the given threshold and limit.
pub(super) fn speculative(min: Duration, factor: f64, max_backups: u32) -> SchedulerConfig {
    SchedulerConfig {
        speculation: true,
        speculation_min: min,
        speculation_factor: factor,
        max_backups,
        ..SchedulerConfig::default()
    }
}

/// What a worker writes for an attempt: an output named after the task and the attempt;
/// a map's has one range per partition (a reduce gets every range of its partition).
pub(super) fn output_for(task: TaskId, attempt: AttemptId, reducers: u32) -> TaskOutput {
    let name = format!("{task}/{attempt}");
    match task.kind {
        TaskKind::Map => TaskOutput::Map {
            location: Location::new(name),
            ranges: (0..reducers).map(|partition| range(task.index, attempt, partition)).collect(),
            input_records: 7,
            skipped_records: attempt.0 % 3,
            // Every attempt counts one "attempts" and its task's index as "index".
            counters: Counters::from([("attempts".into(), 1), ("index".into(), u64::from(task.index))]),
        },
        TaskKind::Reduce => TaskOutput::Reduce {
            path: format!("{name}/out"),
            records: 5 + u64::from(task.index),
            bytes: 50,
            counters: Counters::from([("attempts".into(), 1)]),
        },
    }
}

/// The range of `partition` in the output of `attempt` of map `map`, as [`output_for`]
/// writes it.
pub(super) fn range(map: u32, attempt: AttemptId, partition: u32) -> MapOutputRange {
    let p = u64::from(partition);
    MapOutputRange { map, attempt, partition, offset: 1000 * p, bytes: 100 + p, records: 10 }
}

/// How attempt `attempt` on worker `worker` failed.
pub(super) fn failed(attempt: u64, worker: u32, reason: Failure) -> AttemptFailure {
    AttemptFailure { attempt: AttemptId(attempt), worker: w(worker), reason }
}

/// Short retries and a short `no_worker_timeout`, for scenarios of unreachable workers.
pub(super) fn flaky_network() -> SchedulerConfig {
    SchedulerConfig { retry_base: ms(100), retry_cap: secs(1), no_worker_timeout: secs(10), ..quiet() }
}
