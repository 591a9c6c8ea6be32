//! What the scheduler tells of a job: its progress, its report, or why it failed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AttemptId, Failure, TaskId, WorkerId};

/// What happened in a finished job: shape, attempts, bytes, and the uncommitted outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Map tasks (shards).
    pub map_tasks: u32,
    /// Reduce tasks (partitions).
    pub reduce_tasks: u32,
    /// Attempt counts.
    pub attempts: AttemptCounts,
    /// Wall time of the whole run, in milliseconds: `Cluster::run` sets it (listing the
    /// input and committing the outputs included); the scheduler fills in its own span,
    /// from its first call to the last reply.
    pub elapsed_ms: u64,
    /// Bytes of input.
    pub input_bytes: u64,
    /// Bytes of the accepted map outputs: of the last accepted output of each map task
    /// (a re-run replaces its lost output).
    pub intermediate_bytes: u64,
    /// Input records the map tasks skipped (lines over the job's maximum length): of the
    /// last accepted output of each map task, as `intermediate_bytes`.
    pub skipped_records: u64,
    /// Accepted map outputs that a reduce could not read and that were re-run.
    pub map_outputs_lost: u64,
    /// Records in the accepted reduce outputs.
    pub output_records: u64,
    /// Times a worker was put on probation.
    pub probations: u32,
    /// Workers put on probation at least once.
    pub workers_on_probation: u32,
    /// What each worker did, in worker order.
    pub workers: Vec<WorkerReport>,
    /// Counters summed over the accepted attempt of every task (built-in, with Hadoop's
    /// names, and the user's: see [`crate::counters`]), by name.
    #[serde(default)]
    pub counters: crate::counters::Counters,
    /// The accepted reduce outputs, by partition; the runtime commits them as
    /// `part-NNNNN` (and then lists the committed names here).
    pub outputs: Vec<String>,
}

/// What one worker did in a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Its address, as the master dialled it (filled in by the runtime; the scheduler
    /// knows workers by index only).
    pub addr: String,
    /// Attempts started on it, backups included.
    pub launched: u64,
    /// Its attempts whose output was accepted (a task won).
    pub accepted: u64,
    /// Its attempts that failed with a task error, or (a reduce) could not read a map output.
    pub failed: u64,
    /// Its attempts that passed their deadline.
    pub timed_out: u64,
    /// Its attempts lost because it was unreachable.
    pub lost: u64,
    /// Times it was put on probation.
    pub probations: u32,
    /// Whether it drained during the job (told to stop, it finished its attempt, took no
    /// new one and left, keeping its map outputs readable).
    #[serde(default)]
    pub drained: bool,
}

/// Attempt counts of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCounts {
    /// Attempts started, backups included.
    pub launched: u64,
    /// Attempts that succeeded (late losers included).
    pub succeeded: u64,
    /// Attempts whose task failed on the worker (error or panic), or reduce attempts that
    /// could not read a map output ([`Failure::MapOutputLost`]).
    pub failed: u64,
    /// Attempts that passed their deadline.
    pub timed_out: u64,
    /// Attempts lost to an unreachable worker.
    pub lost: u64,
    /// Backup (speculative) attempts started.
    pub speculative: u64,
    /// Backup attempts whose output was the one accepted.
    pub speculative_won: u64,
    /// Map attempts launched after the map phase to re-run maps whose output was lost
    /// (included in `launched`).
    pub map_reruns: u64,
    /// Attempts a worker refused because it ran as many tasks as it may ([`Failure::Busy`]).
    pub busy: u64,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A task used up its attempts.
    #[error("task {task} failed {attempts} times (input: {input}); last failure: {last}")]
    TaskFailed {
        /// The task.
        task: TaskId,
        /// What it reads.
        input: String,
        /// Attempts that failed (lost ones included).
        attempts: u32,
        /// The last failure.
        last: AttemptFailure,
    },
    /// A worker cannot run the job as asked ([`Failure::Refused`]): it lacks the job type,
    /// or the job asks more than the worker allows. The job stops at its first refusal.
    #[error("{task} could not run: {last}")]
    Refused {
        /// The task whose attempt was refused.
        task: TaskId,
        /// The refusal.
        last: AttemptFailure,
    },
    /// Every worker was unreachable for `no_worker_timeout`.
    #[error("no worker has been reachable for {waited:?} (every worker unreachable){}", last_error(.last))]
    NoWorkers {
        /// How long: `no_worker_timeout`.
        waited: Duration,
        /// The last call that found a worker unreachable.
        last: Option<WorkerFailure>,
    },
}

fn last_error(last: &Option<WorkerFailure>) -> String {
    last.as_ref().map(|l| format!("; last error: {l}")).unwrap_or_default()
}

/// How an attempt failed: `attempt-7 on worker-1: deadline passed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attempt} on {worker}: {reason}")]
pub struct AttemptFailure {
    /// The attempt.
    pub attempt: AttemptId,
    /// Where it ran.
    pub worker: WorkerId,
    /// Why it failed.
    pub reason: Failure,
}

/// A call that found a worker unreachable (a Wait, or an attempt lost with its connection):
/// `worker-1: connection refused`, `worker-1 did not answer in time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailure {
    /// The worker.
    pub worker: WorkerId,
    /// Why: [`Failure::TimedOut`] or [`Failure::Unreachable`].
    pub reason: Failure,
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Failure::TimedOut => write!(f, "{} did not answer in time", self.worker),
            Failure::Unreachable(why)
            | Failure::Task(why)
            | Failure::Busy(why)
            | Failure::Draining(why)
            | Failure::Refused(why) => {
                write!(f, "{}: {why}", self.worker)
            }
            reason @ Failure::MapOutputLost { .. } => write!(f, "{}: {reason}", self.worker),
        }
    }
}

/// Which phase the job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Map tasks run.
    Map,
    /// Every map task was done: reduce tasks run (a map whose output was lost runs again
    /// first, and no reduce starts until it is done).
    Reduce,
    /// Finished, with success or error.
    Done,
}

/// A read-only view of progress, from [`Scheduler::status`](super::Scheduler::status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The phase.
    pub phase: Phase,
    /// Map tasks done, of `maps_total`.
    pub maps_done: u32,
    /// Map tasks in all.
    pub maps_total: u32,
    /// Reduce tasks done, of `reduces_total`.
    pub reduces_done: u32,
    /// Reduce tasks in all.
    pub reduces_total: u32,
    /// Attempts running now.
    pub running: u32,
    /// Attempts that have failed so far: by error, deadline or a lost connection.
    pub failed: u64,
    /// Backup attempts launched so far.
    pub backups: u64,
    /// Map outputs lost so far (their maps ran again).
    pub map_outputs_lost: u64,
}
