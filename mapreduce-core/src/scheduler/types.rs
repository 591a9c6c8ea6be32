//! The scheduler's vocabulary: ids, what a task reads and writes, events and actions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{JobError, JobReport};
use crate::counters::Counters;
use crate::shard::Shard;

/// A task: the `index`th map or reduce task of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// Map or reduce.
    pub kind: TaskKind,
    /// Shard index for a map task, partition for a reduce task.
    pub index: u32,
}

/// The two kinds of task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt-{}", self.0)
    }
}

/// One Wait call to a worker; unique within a job, so the reply of a Wait that is no
/// longer the worker's current one (woken, or answered twice) is easy to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaitId(pub u64);

impl fmt::Display for WaitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wait-{}", self.0)
    }
}

/// What the scheduler plans: the shards (one map task each) and the number of reducers.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// One map task per shard.
    pub shards: Vec<Shard>,
    /// Number of reduce tasks (at least 1).
    pub reducers: u32,
    /// Number of workers (at least 1), known as `WorkerId(0..workers)`; more may join
    /// ([`Scheduler::add_worker`](super::Scheduler::add_worker)).
    pub workers: u32,
    /// Whether map outputs stay on the workers that wrote them (read over the network),
    /// so that a worker that leaves or dies takes its outputs with it. `false`: a shared
    /// filesystem, where outputs outlive their workers.
    pub outputs_on_workers: bool,
}

/// One partition's sorted record stream in a map attempt's output. An attempt writes
/// the partitions back to back (as Hadoop does); one that spilled without combining writes
/// one run of such streams per spill, and the reduce merges them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOutputRange {
    /// The map task (its index) that wrote it.
    pub map: u32,
    /// The attempt that wrote it.
    pub attempt: AttemptId,
    /// The partition (reduce task) it feeds.
    pub partition: u32,
    /// Where the stream starts in the attempt's output.
    pub offset: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
}

/// Where a map attempt's output lies: opaque to the scheduler, meaningful to the runtime's
/// shuffle (today a path on the shared filesystem). Cheap to clone: every reduce input
/// of the attempt shares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location(Arc<str>);

impl Location {
    /// A location as the runtime names it.
    pub fn new(location: impl Into<Arc<str>>) -> Self {
        Location(location.into())
    }

    /// The runtime's name of it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutput {
    /// A map attempt's output: where it lies, its ranges (runs of one range per partition
    /// in partition order, one run unless the attempt spilled without combining), the
    /// lines it read and those it skipped.
    Map {
        /// Where the output lies.
        location: Location,
        /// Its sorted record streams.
        ranges: Vec<MapOutputRange>,
        /// Input records (lines) read.
        input_records: u64,
        /// Input records it skipped (lines over the job's maximum length).
        skipped_records: u64,
        /// The attempt's counters, built-in and the user's.
        counters: Counters,
    },
    /// A reduce attempt's output file (not yet committed).
    Reduce {
        /// The attempt's file.
        path: String,
        /// Records written.
        records: u64,
        /// Its size.
        bytes: u64,
        /// The attempt's counters, built-in and the user's.
        counters: Counters,
    },
}

impl TaskOutput {
    /// Where the output lies, which the runtime deletes on [`Action::Discard`]: a map
    /// attempt's location, or a reduce attempt's file.
    pub fn location(&self) -> &str {
        match self {
            TaskOutput::Map { location, .. } => location.as_str(),
            TaskOutput::Reduce { path, .. } => path,
        }
    }
}

/// One input of a reduce: a range and where its map output lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceInput {
    /// Where the map attempt's output lies.
    pub location: Location,
    /// The stream in it.
    pub range: MapOutputRange,
}

/// What a worker is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSpec {
    /// Map this shard.
    Map {
        /// The shard.
        shard: Shard,
    },
    /// Reduce this partition from these map outputs.
    Reduce {
        /// The partition.
        partition: u32,
        /// Every range of the partition from every map, in map task order.
        inputs: Vec<ReduceInput>,
    },
}

/// Why an attempt or a Wait failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The RPC's deadline passed.
    TimedOut,
    /// The worker could not be reached, or the connection broke (the transport's message).
    Unreachable(String),
    /// The worker ran the task and it failed (user error or panic, bad input, I/O; the
    /// worker's message).
    Task(String),
    /// A reduce attempt could not read the output of attempt `attempt` of map task `map`
    /// (a checksum error, a range shorter than named, a missing file, a worker that could
    /// not be reached): not the reduce's fault; the map is re-run if that output is still
    /// the accepted one.
    MapOutputLost {
        /// The map task (its index) whose output could not be read.
        map: u32,
        /// The map attempt that wrote it.
        attempt: AttemptId,
        /// What went wrong (the worker's message).
        why: String,
        /// The worker that holds the output is gone for this job: the reduce could not
        /// reach it (no connection, or it broke), or it does not have the output (it
        /// restarted since, or lost files). Every output that worker holds is lost with
        /// this one, as Spark unregisters an executor's outputs on a fetch failure.
        /// Otherwise (its bytes were corrupt, a range was short) only this one is.
        holder_gone: bool,
    },
    /// The worker cannot run this job as asked, whatever the task: it lacks the job type,
    /// or the job asks more than the worker allows (a sort buffer past its limit). Not
    /// worth another attempt: the job fails at once ([`JobError::Refused`]), naming the
    /// worker and why (the worker's message).
    ///
    /// [`JobError::Refused`]: super::JobError::Refused
    Refused(String),
    /// The worker refused the task: it runs as many tasks as it may at once
    /// (`RESOURCE_EXHAUSTED`). Not a failure of the task nor of the worker.
    Busy(String),
    /// The worker drains (it was told to stop): it refused the task, takes no new one,
    /// and leaves the job, keeping the map outputs it holds readable until the job ends.
    /// Not a failure of the task nor of the worker.
    Draining(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("deadline passed"),
            Failure::Unreachable(why) => write!(f, "worker unreachable: {why}"),
            Failure::Task(why) => f.write_str(why),
            Failure::MapOutputLost { map, attempt, why, .. } => {
                let task = TaskId { kind: TaskKind::Map, index: *map };
                write!(f, "lost output of {task} {attempt}: {why}")
            }
            Failure::Busy(why) => write!(f, "worker busy: {why}"),
            Failure::Refused(why) => write!(f, "the worker cannot run this job: {why}"),
            Failure::Draining(why) => write!(f, "worker draining: {why}"),
        }
    }
}

/// Something that happened, fed to [`Scheduler::handle_event`](super::Scheduler::handle_event).
#[derive(Debug, Clone)]
pub enum Event {
    /// A Wait was answered: its worker is alive and idle.
    WaitAnswered {
        /// Which Wait.
        wait: WaitId,
    },
    /// A Wait failed or passed its deadline.
    WaitFailed {
        /// Which Wait.
        wait: WaitId,
        /// Why: [`Failure::TimedOut`] or [`Failure::Unreachable`].
        reason: Failure,
    },
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
    /// A worker leaves the job (it is removed): it gets no new call, its call in flight
    /// still ends with its event, and the map outputs it holds are lost at once (if they
    /// stay on workers). Ignored for an unknown worker or one that left. (A worker that
    /// drains says so in its answers, [`Failure::Draining`], and keeps its outputs.)
    WorkerLeft {
        /// Which worker.
        worker: WorkerId,
    },
    /// A worker joins: the same as [`Scheduler::add_worker`](super::Scheduler::add_worker),
    /// whose id it gets: the number of workers before it (ids are given in order).
    WorkerJoined,
}

/// What the runtime must do next, drained from
/// [`Scheduler::poll_action`](super::Scheduler::poll_action).
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
    /// Send `worker` a Wait of `for_`; report [`Event::WaitAnswered`] when it answers or
    /// [`Event::WaitFailed`] if it fails or takes longer than `deadline`.
    Wait {
        /// Which worker.
        worker: WorkerId,
        /// The call's id, for its reply.
        wait: WaitId,
        /// How long it waits before answering (zero: a probe).
        for_: Duration,
        /// The RPC's deadline.
        deadline: Duration,
    },
    /// Cut short the idle Wait `wait` in flight to `worker`: drop the call (a reply to it
    /// that still comes is ignored). The worker is ready: the actions that follow give it
    /// work.
    Wake {
        /// Which worker.
        worker: WorkerId,
        /// The Wait cut short.
        wait: WaitId,
    },
    /// Delete this output (see [`TaskOutput::location`]): an attempt's that lost to
    /// another, or that came after the job ended.
    Discard(TaskOutput),
    /// The job is over. Nothing follows.
    Finished(Result<JobReport, JobError>),
}
