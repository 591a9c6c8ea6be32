//! The scheduler's vocabulary: ids, what a task reads and writes, events and actions.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{JobError, JobReport};
use crate::shard::Shard;

/// A task: the `index`th map or reduce task of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// Map or reduce.
    pub kind: TaskKind,
    /// Shard index for a map task, partition for a reduce task.
    pub index: u32,
}

/// The two kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    /// Reads a shard, writes one file of sorted record streams, one or more per partition.
    Map,
    /// Merges one partition of every map output, writes one output file.
    Reduce,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TaskKind::Map => write!(f, "map-{:05}", self.index),
            TaskKind::Reduce => write!(f, "reduce-{:05}", self.index),
        }
    }
}

/// A worker, by its index in the cluster's worker list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u32);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker-{}", self.0)
    }
}

/// One attempt to run a task; unique within a job, so a stale reply is easy to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt-{}", self.0)
    }
}

/// What the scheduler plans: the shards (one map task each) and the number of reducers.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// One map task per shard.
    pub shards: Vec<Shard>,
    /// Number of reduce tasks (at least 1).
    pub reducers: u32,
    /// Number of workers (at least 1), known as `WorkerId(0..workers)`.
    pub workers: u32,
}

/// A sorted record stream of one partition of a map attempt's output: a range of the
/// attempt's file (one file per map attempt, the partitions back to back, as Hadoop
/// writes them). An attempt that spilled without combining writes one run of such
/// streams per spill, and the reduce merges them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionFile {
    /// The partition (reduce task) it feeds.
    pub partition: u32,
    /// The file.
    pub path: String,
    /// Where the partition's records start in the file.
    pub offset: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutput {
    /// A map attempt's files: runs of one range per partition in partition order (one run
    /// unless the attempt spilled without combining), and the lines it read.
    Map {
        /// The files.
        files: Vec<PartitionFile>,
        /// Input records (lines) read.
        input_records: u64,
    },
    /// A reduce attempt's output file (not yet committed).
    Reduce {
        /// The attempt's file.
        path: String,
        /// Records written.
        records: u64,
        /// Its size.
        bytes: u64,
    },
}

impl TaskOutput {
    /// The files this output consists of, each once.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            TaskOutput::Map { files, .. } => {
                let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                paths.dedup();
                paths
            }
            TaskOutput::Reduce { path, .. } => vec![path.as_str()],
        }
    }
}

/// What a worker is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSpec {
    /// Map this shard.
    Map {
        /// The shard.
        shard: Shard,
    },
    /// Reduce this partition from these map outputs (one file per map task).
    Reduce {
        /// The partition.
        partition: u32,
        /// The partition's range of every map output, in map task order.
        inputs: Vec<PartitionFile>,
    },
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The RPC's deadline passed.
    TimedOut,
    /// The worker could not be reached, or the connection broke.
    Unreachable(String),
    /// The worker ran the task and it failed (user error or panic, bad input, I/O).
    Task(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("deadline passed"),
            Failure::Unreachable(why) => write!(f, "worker unreachable: {why}"),
            Failure::Task(why) => f.write_str(why),
        }
    }
}

/// Something that happened, fed to [`Scheduler::handle_event`].
#[derive(Debug, Clone)]
pub enum Event {
    /// The worker answered a Wait: it is alive and idle.
    WorkerIdle(WorkerId),
    /// The worker's Wait failed or passed its deadline.
    Unreachable(WorkerId),
    /// An attempt succeeded.
    Succeeded {
        /// Which attempt.
        attempt: AttemptId,
        /// What it wrote.
        output: TaskOutput,
    },
    /// An attempt failed.
    Failed {
        /// Which attempt.
        attempt: AttemptId,
        /// Why.
        reason: Failure,
    },
}

/// What the runtime must do next, drained from [`Scheduler::poll_action`].
#[derive(Debug, Clone)]
pub enum Action {
    /// Run `task` as `attempt` on `worker`; fail it if no reply comes within `deadline`.
    Run {
        /// Where.
        worker: WorkerId,
        /// The attempt's id (name its files after it).
        attempt: AttemptId,
        /// Which task.
        task: TaskId,
        /// What to run.
        spec: TaskSpec,
        /// The RPC's deadline.
        deadline: Duration,
    },
    /// Send `worker` a Wait of `for_`; report [`Event::WorkerIdle`] when it answers or
    /// [`Event::Unreachable`] if it fails or takes longer than `deadline`.
    Wait {
        /// Which worker.
        worker: WorkerId,
        /// How long it waits before answering (zero: a probe).
        for_: Duration,
        /// The RPC's deadline.
        deadline: Duration,
    },
    /// Cut short the idle Wait in flight to `worker`: drop the call, and report nothing
    /// for it, ever (a reply to it would be taken for the answer to the worker's next
    /// Wait). The worker is ready: the actions that follow give it work.
    Wake {
        /// Which worker.
        worker: WorkerId,
    },
    /// Delete these files: the output of an attempt that lost to another.
    Discard(TaskOutput),
    /// The job is over. Nothing follows.
    Finished(Result<JobReport, JobError>),
}
