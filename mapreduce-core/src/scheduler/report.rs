//! The job report.

use serde::{Deserialize, Serialize};

/// What happened in a finished job: shape, attempts, bytes, and the uncommitted outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// Map tasks (shards).
    pub map_tasks: u32,
    /// Reduce tasks (partitions).
    pub reduce_tasks: u32,
    /// Attempt counts.
    pub attempts: AttemptCounts,
    /// Wall time from the first scheduling decision to the last reply, in milliseconds.
    pub elapsed_ms: u64,
    /// Bytes of input.
    pub input_bytes: u64,
    /// Bytes of the accepted map outputs.
    pub intermediate_bytes: u64,
    /// Records in the accepted reduce outputs.
    pub output_records: u64,
    /// Times a worker was put on probation.
    pub probations: u32,
    /// Workers put on probation at least once.
    pub workers_on_probation: u32,
    /// What each worker did, in worker order.
    pub workers: Vec<WorkerReport>,
    /// The accepted reduce outputs, by partition; the runtime commits them as
    /// `part-NNNNN` (and then lists the committed names here).
    pub outputs: Vec<String>,
}

/// What one worker did in a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Attempts started on it, backups included.
    pub launched: u64,
    /// Its attempts whose output was accepted (a task won).
    pub accepted: u64,
    /// Its attempts that failed with a task error.
    pub failed: u64,
    /// Its attempts that passed their deadline.
    pub timed_out: u64,
    /// Its attempts lost because it was unreachable.
    pub lost: u64,
    /// Times it was put on probation.
    pub probations: u32,
}

/// Attempt counts of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCounts {
    /// Attempts started, backups included.
    pub launched: u64,
    /// Attempts that succeeded (late losers included).
    pub succeeded: u64,
    /// Attempts whose task failed on the worker (error or panic).
    pub failed: u64,
    /// Attempts that passed their deadline.
    pub timed_out: u64,
    /// Attempts lost to an unreachable worker.
    pub lost: u64,
    /// Backup (speculative) attempts started.
    pub speculative: u64,
    /// Backup attempts whose output was the one accepted.
    pub speculative_won: u64,
}
