//! The job types a worker can run: the registry, and a job erased behind the worker's two
//! operations (its fields decoded off the async threads).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use mapreduce_core::Job;

use super::map::{self, MapResult, MapTask};
use super::reduce::{self, ReduceResult, ReduceTask};
use crate::error::{TaskError, panic_message};
use crate::shuffle::ShuffleSource;

/// A job type erased behind the worker's two operations.
pub(super) trait ErasedJob: Send + Sync {
    fn map(&self, task: &MapTask) -> Result<MapResult, TaskError>;
    fn reduce(&self, task: &ReduceTask, source: &dyn ShuffleSource) -> Result<ReduceResult, TaskError>;
}

struct Typed<J>(J);

impl<J: Job> ErasedJob for Typed<J> {
    fn map(&self, task: &MapTask) -> Result<MapResult, TaskError> {
        // Records are guarded one by one; this catches panics elsewhere in user code (the
        // partitioner, the combiner while merging spills) with the task's name.
        catch_unwind(AssertUnwindSafe(|| map::run_map(&self.0, task))).unwrap_or_else(|payload| {
            Err(TaskError::Panic { at: format!("map-{:05}", task.task), message: panic_message(&*payload) })
        })
    }
    fn reduce(&self, task: &ReduceTask, source: &dyn ShuffleSource) -> Result<ReduceResult, TaskError> {
        catch_unwind(AssertUnwindSafe(|| reduce::run_reduce(&self.0, task, source))).unwrap_or_else(|payload| {
            Err(TaskError::Panic { at: format!("reduce-{:05}", task.partition), message: panic_message(&*payload) })
        })
    }
}

pub(super) type Decoder = fn(&[u8]) -> Result<Arc<dyn ErasedJob>, postcard::Error>;

fn decode<J: Job>(bytes: &[u8]) -> Result<Arc<dyn ErasedJob>, postcard::Error> {
    Ok(Arc::new(Typed(postcard::from_bytes::<J>(bytes)?)))
}

/// A request's job, found in the registry but not decoded yet.
pub(super) struct PendingJob {
    pub(super) decoder: Decoder,
    pub(super) name: String,
    pub(super) payload: Vec<u8>,
}

impl PendingJob {
    pub(super) fn decode(self) -> Result<Arc<dyn ErasedJob>, TaskError> {
        (self.decoder)(&self.payload).map_err(|source| TaskError::BadPayload { job: self.name, error: source })
    }
}

/// The job types a worker can run, by [`Job::NAME`]. The master ships each task with its
/// job's fields, which the worker decodes into the registered type.
#[derive(Clone, Default)]
pub struct Registry {
    pub(super) jobs: HashMap<&'static str, Decoder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.jobs.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers job type `J` under `J::NAME` (replacing any type of that name).
    pub fn register<J: Job>(mut self) -> Self {
        self.insert::<J>();
        self
    }

    pub(crate) fn insert<J: Job>(&mut self) {
        self.jobs.insert(J::NAME, decode::<J>);
    }

    /// Whether a job type of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }
}

/// A worker's registry, shared with an in-process cluster that adds job types to it.
pub(crate) type SharedRegistry = Arc<RwLock<Registry>>;
