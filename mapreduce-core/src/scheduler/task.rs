//! Task state: TODO, RUNNING with its attempts, or DONE with its accepted output.
//!
//! A DONE map task whose output a reduce could not read is forgotten: it is RUNNING
//! again if attempts of it still run (backups that lost), else TODO. No other DONE task
//! ever changes.
//!
//! A task's state is an enum that carries its data, so a DONE task without an output, or
//! a RUNNING one without an attempt, cannot be written down. Map and reduce tasks are kept
//! apart, each list with its own kind of output: a reduce reads typed map outputs, never
//! one that might be missing or of the wrong kind.

use std::collections::VecDeque;
use std::time::Instant;

use super::{AttemptId, Location, MapOutputRange, ReduceInput, TaskId, TaskKind, WorkerId};

/// Where a task is in its life. DONE never changes again, but for a map whose output was
/// lost ([`TaskList::forget`]).
#[derive(Debug)]
pub(super) enum TaskState<O> {
    /// Waiting in the TODO queue (or not yet queued: a reduce before its phase).
    Todo,
    /// Attempts of it run.
    Running(Running),
    /// The output of one attempt was accepted.
    Done(O),
}

/// The attempts of a RUNNING task.
#[derive(Debug)]
pub(super) struct Running {
    /// The attempts and their starts, oldest first; never empty.
    attempts: Vec<(AttemptId, Instant)>,
    /// Whether a backup was launched since the task last left TODO (one at most).
    backed_up: bool,
}

/// An accepted map output, as reduces read it: small, since a job keeps one per map and
/// one range per partition in each (maps × reducers ranges in all).
#[derive(Debug)]
pub(super) struct MapOutput {
    /// The attempt that wrote it, to tell whether a loss report is about it.
    pub(super) attempt: AttemptId,
    /// Shared by every reduce input of the output (a reference count, not a copy).
    pub(super) location: Location,
    /// Its ranges, by partition (stably: a partition's runs in the order written), so
    /// that a reduce finds its own with a binary search.
    ranges: Box<[Range]>,
    /// The worker that holds it, when map outputs stay on their workers.
    pub(super) holder: Option<WorkerId>,
}

/// One range of an accepted map output, without what its output already says (the map
/// and the attempt): 32 bytes instead of a [`MapOutputRange`]'s 40.
#[derive(Debug, Clone, Copy)]
struct Range {
    partition: u32,
    offset: u64,
    bytes: u64,
    records: u64,
}

impl MapOutput {
    /// The output of `attempt`, holding `ranges`, at `location`, on `holder`.
    pub(super) fn new(
        attempt: AttemptId,
        location: Location,
        ranges: &[MapOutputRange],
        holder: Option<WorkerId>,
    ) -> Self {
        let mut ranges: Box<[Range]> = ranges
            .iter()
            .map(|r| Range { partition: r.partition, offset: r.offset, bytes: r.bytes, records: r.records })
            .collect();
        ranges.sort_by_key(|r| r.partition);
        MapOutput { attempt, location, ranges, holder }
    }

    /// The inputs it gives reduce `partition`, named by map `map` and this output's attempt.
    fn inputs(&self, map: u32, partition: u32) -> impl Iterator<Item = ReduceInput> + '_ {
        let start = self.ranges.partition_point(|r| r.partition < partition);
        let ranges = self.ranges[start..].iter().take_while(move |r| r.partition == partition);
        ranges.map(move |r| ReduceInput {
            location: self.location.clone(),
            range: MapOutputRange {
                map,
                attempt: self.attempt,
                partition,
                offset: r.offset,
                bytes: r.bytes,
                records: r.records,
            },
        })
    }
}

/// An accepted reduce output: the attempt's file.
pub(super) type ReduceOutput = String;

/// One task: its state and how its attempts have failed.
#[derive(Debug)]
pub(super) struct Task<O> {
    state: TaskState<O>,
    /// Failures that count against the budget (errors and missed deadlines).
    failures: u32,
    /// Attempts lost to unreachable workers.
    lost: u32,
    /// Times its accepted output was lost (a map's, that a reduce could not read).
    outputs_lost: u32,
    /// Workers on which an attempt of it failed (by error or deadline), each once.
    failed_on: Vec<WorkerId>,
}

/// How often a task failed, each way: what a job failure reports.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tally {
    /// Failures that count against the budget.
    pub(super) failures: u32,
    /// Attempts lost to unreachable workers.
    pub(super) lost: u32,
    /// Accepted outputs lost.
    pub(super) outputs_lost: u32,
}

impl Tally {
    /// Every failure of the task, of every kind.
    pub(super) fn total(&self) -> u32 {
        self.failures.saturating_add(self.lost).saturating_add(self.outputs_lost)
    }
}

/// How a running attempt ended for its task.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stopped {
    /// When the attempt started.
    pub(super) started: Instant,
    /// Whether it was the task's last attempt: the task is TODO again.
    pub(super) todo: bool,
}

impl<O> Task<O> {
    fn new() -> Self {
        Task { state: TaskState::Todo, failures: 0, lost: 0, outputs_lost: 0, failed_on: Vec::new() }
    }

    /// Where the task belongs in the speculation queue: by its attempt's start, if it has
    /// exactly one and was not backed up yet.
    fn queue_key(&self) -> Option<Instant> {
        match &self.state {
            TaskState::Running(Running { attempts, backed_up: false }) if attempts.len() == 1 => Some(attempts[0].1),
            _ => None,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, TaskState::Done(_))
    }

    fn failed_on(&self, worker: WorkerId) -> bool {
        self.failed_on.contains(&worker)
    }

    fn start(&mut self, id: TaskId, attempt: AttemptId, now: Instant, backup: bool) {
        match &mut self.state {
            TaskState::Todo => {
                debug_assert!(!backup, "a backup of {id}, which is TODO");
                self.state = TaskState::Running(Running { attempts: vec![(attempt, now)], backed_up: false });
            }
            TaskState::Running(running) => {
                running.attempts.push((attempt, now));
                running.backed_up |= backup;
            }
            TaskState::Done(_) => panic!("{id} launched again after it was done"),
        }
    }

    /// Ends a running attempt; `None` if the task is DONE (the attempt lost).
    fn stop(&mut self, id: TaskId, attempt: AttemptId) -> Option<Stopped> {
        let TaskState::Running(running) = &mut self.state else {
            debug_assert!(self.is_done(), "{attempt} of {id} ended, but {id} is TODO");
            return None;
        };
        let i = running.attempts.iter().position(|(a, _)| *a == attempt);
        let (_, started) = running.attempts.remove(i.unwrap_or_else(|| panic!("{attempt} does not run {id}")));
        let todo = running.attempts.is_empty();
        if todo {
            self.state = TaskState::Todo;
        }
        Some(Stopped { started, todo })
    }

    /// Counts a failure on `worker`: against the budget (`counts`) or as a loss. Returns
    /// the tally so far.
    fn charge(&mut self, worker: WorkerId, counts: bool) -> Tally {
        if counts {
            self.failures += 1;
            if !self.failed_on.contains(&worker) {
                self.failed_on.push(worker);
            }
        } else {
            self.lost += 1;
        }
        self.tally()
    }

    fn tally(&self) -> Tally {
        Tally { failures: self.failures, lost: self.lost, outputs_lost: self.outputs_lost }
    }
}

/// The tasks of one kind, by index.
#[derive(Debug)]
pub(super) struct TaskList<O> {
    tasks: Vec<Task<O>>,
    /// How many are DONE (only [`Self::accept`] makes a task DONE).
    done: u32,
}

impl<O> TaskList<O> {
    fn new(n: u32) -> Self {
        TaskList { tasks: (0..n).map(|_| Task::new()).collect(), done: 0 }
    }

    pub(super) fn len(&self) -> u32 {
        self.tasks.len() as u32
    }

    pub(super) fn done(&self) -> u32 {
        self.done
    }

    /// Makes task `index` DONE with `output`; returns whether every task is DONE now.
    pub(super) fn accept(&mut self, index: u32, output: O) -> bool {
        let task = &mut self.tasks[index as usize];
        debug_assert!(!task.is_done(), "task {index} accepted twice");
        task.state = TaskState::Done(output);
        self.done += 1;
        self.done == self.len()
    }

    /// Forgets the accepted output of DONE task `index`: it is RUNNING with `losers` (its
    /// attempts still running, oldest first: each started as a backup of a running
    /// task, so it counts as backed up) or, if there are none, TODO. Returns the tally with
    /// the loss counted.
    pub(super) fn forget(&mut self, index: u32, losers: Vec<(AttemptId, Instant)>) -> Tally {
        let task = &mut self.tasks[index as usize];
        assert!(task.is_done(), "task {index} forgotten, but it is not done");
        task.state = match losers.is_empty() {
            true => TaskState::Todo,
            false => TaskState::Running(Running { attempts: losers, backed_up: true }),
        };
        task.outputs_lost = task.outputs_lost.saturating_add(1);
        self.done -= 1;
        task.tally()
    }

    /// The accepted output of task `index`, if it is DONE.
    pub(super) fn output(&self, index: u32) -> Option<&O> {
        match &self.tasks.get(index as usize)?.state {
            TaskState::Done(output) => Some(output),
            _ => None,
        }
    }

    /// The accepted outputs, in task order (all of them once every task is DONE).
    pub(super) fn outputs(&self) -> impl Iterator<Item = &O> {
        self.tasks.iter().filter_map(|t| match &t.state {
            TaskState::Done(output) => Some(output),
            _ => None,
        })
    }
}

/// Calls `$method` on the task `$id` of either list.
macro_rules! on_task {
    ($tasks:ident, $id:expr, $method:ident($($arg:expr),*)) => {
        match $id.kind {
            TaskKind::Map => $tasks.maps.tasks[$id.index as usize].$method($($arg),*),
            TaskKind::Reduce => $tasks.reduces.tasks[$id.index as usize].$method($($arg),*),
        }
    };
}

/// Every task of the job, and the TODO queue of the current phase.
#[derive(Debug)]
pub(super) struct Tasks {
    pub(super) maps: TaskList<MapOutput>,
    pub(super) reduces: TaskList<ReduceOutput>,
    /// Per partition, the maps whose accepted output had a range of it when accepted (in
    /// acceptance order; a map accepted again is listed again): what a reduce reads is
    /// found without looking at every map, 4 bytes per range.
    by_partition: Vec<Vec<u32>>,
    /// The phase's TODO tasks, in the order they are given out (a task sent back to TODO
    /// goes in front).
    pub(super) todo: Todo,
}

/// The TODO queue, with the count of the maps in it: how many TODO tasks may start now is
/// known without a scan.
#[derive(Debug, Default)]
pub(super) struct Todo {
    queue: VecDeque<TaskId>,
    /// Map tasks in `queue`.
    maps: usize,
}

impl Todo {
    fn new(queue: VecDeque<TaskId>) -> Self {
        let maps = queue.iter().filter(|t| t.kind == TaskKind::Map).count();
        Todo { queue, maps }
    }

    /// Puts `task` in front: it goes first.
    pub(super) fn push_front(&mut self, task: TaskId) {
        self.maps += usize::from(task.kind == TaskKind::Map);
        self.queue.push_front(task);
    }

    /// Takes the `i`th task out.
    pub(super) fn remove(&mut self, i: usize) -> Option<TaskId> {
        let task = self.queue.remove(i)?;
        self.maps -= usize::from(task.kind == TaskKind::Map);
        Some(task)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.queue.iter().copied()
    }

    pub(super) fn clear(&mut self) {
        *self = Todo::default();
    }
}

impl Tasks {
    /// `maps` map tasks, all TODO, and `reduces` reduce tasks waiting for their phase.
    pub(super) fn new(maps: u32, reduces: u32) -> Self {
        let todo = Todo::new((0..maps).map(|index| TaskId { kind: TaskKind::Map, index }).collect());
        let by_partition = (0..reduces).map(|_| Vec::new()).collect();
        Tasks { maps: TaskList::new(maps), reduces: TaskList::new(reduces), by_partition, todo }
    }

    /// Makes map `index` DONE with `output`, listing it under each of its partitions;
    /// returns whether every map is DONE now.
    pub(super) fn accept_map(&mut self, index: u32, output: MapOutput) -> bool {
        let mut last = None;
        for r in &output.ranges {
            if last != Some(r.partition)
                && let Some(maps) = self.by_partition.get_mut(r.partition as usize)
            {
                maps.push(index);
            }
            last = Some(r.partition);
        }
        self.maps.accept(index, output)
    }

    /// Queues every reduce task: the map phase is over.
    pub(super) fn queue_reduces(&mut self) {
        self.todo = Todo::new((0..self.reduces.len()).map(|index| TaskId { kind: TaskKind::Reduce, index }).collect());
    }

    pub(super) fn queue_key(&self, id: TaskId) -> Option<Instant> {
        on_task!(self, id, queue_key())
    }

    pub(super) fn failed_on(&self, id: TaskId, worker: WorkerId) -> bool {
        on_task!(self, id, failed_on(worker))
    }

    pub(super) fn start(&mut self, id: TaskId, attempt: AttemptId, now: Instant, backup: bool) {
        on_task!(self, id, start(id, attempt, now, backup))
    }

    pub(super) fn stop(&mut self, id: TaskId, attempt: AttemptId) -> Option<Stopped> {
        on_task!(self, id, stop(id, attempt))
    }

    pub(super) fn charge(&mut self, id: TaskId, worker: WorkerId, counts: bool) -> Tally {
        on_task!(self, id, charge(worker, counts))
    }

    pub(super) fn tally(&self, id: TaskId) -> Tally {
        on_task!(self, id, tally())
    }

    /// Whether a map task is not DONE: then no reduce may start.
    pub(super) fn maps_pending(&self) -> bool {
        self.maps.done() < self.maps.len()
    }

    /// Whether an attempt of `id` may start now: a map always, a reduce once every map is
    /// DONE.
    pub(super) fn launchable(&self, id: TaskId) -> bool {
        id.kind == TaskKind::Map || !self.maps_pending()
    }

    /// How many TODO tasks may start now: the maps in the queue while a map is not DONE,
    /// else all of them.
    pub(super) fn launchable_todo(&self) -> usize {
        if self.maps_pending() { self.todo.maps } else { self.todo.queue.len() }
    }

    /// What reduce `partition` reads: every range of it from every map, in map order. Only
    /// the maps listed under the partition are looked at (a binary search in each one's
    /// ranges): O(L log L) for the L maps with data for it, not a look at every map: a
    /// job of a million maps whose outputs are sparse builds a reduce's request from its
    /// few thousand.
    pub(super) fn reduce_inputs(&self, partition: u32) -> Vec<ReduceInput> {
        debug_assert_eq!(self.maps.done(), self.maps.len(), "reduce {partition} before every map is done");
        let mut maps = self.by_partition.get(partition as usize).cloned().unwrap_or_default();
        maps.sort_unstable();
        maps.dedup();
        // A map accepted again may have no range of the partition now: it gives none.
        let outputs = maps.into_iter().filter_map(|map| Some((map, self.maps.output(map)?)));
        outputs.flat_map(|(map, m)| m.inputs(map, partition)).collect()
    }
}
