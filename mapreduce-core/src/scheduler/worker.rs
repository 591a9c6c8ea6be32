//! Worker state: what each worker's one call in flight is, and its record.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::{WaitId, WorkerId, WorkerReport};

/// What a worker is doing, as the scheduler sees it. A worker has at most one call in
/// flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Needs an action from the next `poll_action` (it is in the ready queue).
    Ready,
    /// Needs a probe (a zero Wait) before it gets work (it is in the ready queue).
    NeedsProbe,
    /// A task attempt is in flight.
    Busy,
    /// A probe is in flight: it missed a deadline or rested, and must answer first.
    Probing(WaitId),
    /// An idle Wait is in flight: it had nothing to do, and may be woken.
    IdleWait(WaitId),
    /// Not to be called before its rest timer; then probed if `probe`, else ready (a rest
    /// after a Busy answer: it answered, so it needs no probe).
    Resting {
        /// Whether it is probed when its rest ends.
        probe: bool,
    },
    /// It left the job ([`Event::WorkerLeft`](super::Event::WorkerLeft)): never called
    /// again.
    Left,
}

/// One worker.
#[derive(Debug)]
pub(super) struct Worker {
    state: WorkerState,
    /// Deadlines missed in a row.
    pub(super) timeouts: u32,
    /// Failed calls in a row to it while unreachable; above zero it is silent.
    pub(super) unreachable: u32,
    /// Failed attempts in a row (any task).
    pub(super) failures: u32,
    /// Busy answers since its last success.
    pub(super) busy: u32,
    /// Times it was put on probation.
    pub(super) probations: u32,
    /// When it fell silent (its first unreachable call in a row), while it is silent.
    pub(super) silent_since: Option<Instant>,
    /// Whether it left: once its call in flight ends, it is never called again.
    pub(super) left: bool,
    /// Map tasks whose accepted output it held when they were accepted (some may have
    /// been forgotten or accepted again elsewhere since), when map outputs stay on
    /// their workers.
    pub(super) held: Vec<u32>,
    /// Its counts for the report.
    pub(super) stats: WorkerReport,
}

impl Worker {
    pub(super) fn state(&self) -> WorkerState {
        self.state
    }

    /// Whether it rests (after an unreachable call or a Busy answer, or on probation).
    pub(super) fn rests(&self) -> bool {
        matches!(self.state, WorkerState::Resting { .. })
    }
}

/// Every worker, the ready queue, and the counts the timers need at once.
#[derive(Debug)]
pub(super) struct Workers {
    list: Vec<Worker>,
    /// Workers whose state is Ready or NeedsProbe, in the order they became so.
    ready: VecDeque<WorkerId>,
    /// Workers in an idle Wait and their Waits, by worker (only [`Self::set`] changes a
    /// state).
    idle: BTreeMap<WorkerId, WaitId>,
    /// The worker of each Wait in flight (idle Waits and probes).
    waits: FxHashMap<WaitId, WorkerId>,
    /// Silent workers: those with `unreachable > 0`.
    silent: u32,
}

impl Workers {
    /// `n` workers, all ready.
    pub(super) fn new(n: u32) -> Self {
        let mut workers = Workers {
            list: Vec::with_capacity(n as usize),
            ready: VecDeque::with_capacity(n as usize),
            idle: BTreeMap::new(),
            waits: FxHashMap::default(),
            silent: 0,
        };
        for _ in 0..n {
            workers.add();
        }
        workers
    }

    /// A new worker, ready: the next id in order.
    pub(super) fn add(&mut self) -> WorkerId {
        let w = WorkerId(self.len());
        self.list.push(Worker {
            state: WorkerState::Ready,
            timeouts: 0,
            unreachable: 0,
            failures: 0,
            busy: 0,
            probations: 0,
            silent_since: None,
            left: false,
            held: Vec::new(),
            stats: WorkerReport::default(),
        });
        self.ready.push_back(w);
        w
    }

    pub(super) fn len(&self) -> u32 {
        self.list.len() as u32
    }

    pub(super) fn get(&self, w: WorkerId) -> &Worker {
        &self.list[w.0 as usize]
    }

    pub(super) fn get_mut(&mut self, w: WorkerId) -> &mut Worker {
        &mut self.list[w.0 as usize]
    }

    /// Every worker with its id, in worker order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (WorkerId, &Worker)> {
        self.list.iter().enumerate().map(|(i, worker)| (WorkerId(i as u32), worker))
    }

    pub(super) fn set(&mut self, w: WorkerId, state: WorkerState) {
        let worker = &mut self.list[w.0 as usize];
        match std::mem::replace(&mut worker.state, state) {
            WorkerState::IdleWait(wait) => {
                self.idle.remove(&w);
                self.waits.remove(&wait);
            }
            WorkerState::Probing(wait) => {
                self.waits.remove(&wait);
            }
            _ => {}
        }
        match state {
            WorkerState::IdleWait(wait) => {
                self.idle.insert(w, wait);
                self.waits.insert(wait, w);
            }
            WorkerState::Probing(wait) => {
                self.waits.insert(wait, w);
            }
            _ => {}
        }
    }

    /// Puts `w` in the ready queue, `Ready` or `NeedsProbe`; a worker that left is `Left`
    /// instead, and never ready again.
    pub(super) fn make_ready(&mut self, w: WorkerId, state: WorkerState) {
        debug_assert!(matches!(state, WorkerState::Ready | WorkerState::NeedsProbe));
        if self.get(w).left {
            self.set(w, WorkerState::Left);
            return;
        }
        self.set(w, state);
        self.ready.push_back(w);
    }

    /// The next ready worker (skipping those that left since they became ready).
    pub(super) fn pop_ready(&mut self) -> Option<WorkerId> {
        while let Some(w) = self.ready.pop_front() {
            if self.get(w).state != WorkerState::Left {
                return Some(w);
            }
        }
        None
    }

    /// The workers in an idle Wait, and their Waits, in worker order.
    pub(super) fn idle(&self) -> impl Iterator<Item = (WorkerId, WaitId)> + '_ {
        self.idle.iter().map(|(&w, &wait)| (w, wait))
    }

    pub(super) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Whether some worker is in an idle Wait.
    pub(super) fn any_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    /// The worker whose current Wait is `wait`, if any.
    pub(super) fn waiting(&self, wait: WaitId) -> Option<WorkerId> {
        self.waits.get(&wait).copied()
    }

    /// Counts an unreachable call to `w` at `now`; returns whether `w` fell silent with it
    /// (its first in a row) and whether it was the last worker to: every worker is silent
    /// from now on.
    pub(super) fn fell_silent(&mut self, now: Instant, w: WorkerId) -> (bool, bool) {
        let worker = &mut self.list[w.0 as usize];
        let falls = worker.unreachable == 0;
        worker.unreachable = worker.unreachable.saturating_add(1);
        if falls {
            worker.silent_since = Some(now);
        }
        self.silent += u32::from(falls);
        (falls, falls && self.silent == self.len())
    }

    /// `w` answered: it is no longer silent (unless it left: it stays silent for good).
    /// Returns when it had fallen silent, if it was.
    pub(super) fn answered(&mut self, w: WorkerId) -> Option<Instant> {
        let worker = &mut self.list[w.0 as usize];
        let was_silent = worker.unreachable > 0 && !worker.left;
        if was_silent {
            self.silent -= 1;
            worker.unreachable = 0;
        }
        if was_silent { worker.silent_since.take() } else { None }
    }
}
