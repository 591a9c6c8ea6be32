//! Worker state: what each worker's one call in flight is, and its record.

use std::collections::VecDeque;

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
    /// Workers in an idle Wait (only [`Self::set`] changes a state).
    idle: u32,
    /// Silent workers: those with `unreachable > 0`.
    silent: u32,
}

impl Workers {
    /// `n` workers, all ready.
    pub(super) fn new(n: u32) -> Self {
        let worker = || Worker {
            state: WorkerState::Ready,
            timeouts: 0,
            unreachable: 0,
            failures: 0,
            busy: 0,
            probations: 0,
            stats: WorkerReport::default(),
        };
        Workers { list: (0..n).map(|_| worker()).collect(), ready: (0..n).map(WorkerId).collect(), idle: 0, silent: 0 }
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
        let was_idle = matches!(worker.state, WorkerState::IdleWait(_));
        let is_idle = matches!(state, WorkerState::IdleWait(_));
        worker.state = state;
        self.idle = self.idle + u32::from(is_idle) - u32::from(was_idle);
    }

    /// Puts `w` in the ready queue, `Ready` or `NeedsProbe`.
    pub(super) fn make_ready(&mut self, w: WorkerId, state: WorkerState) {
        debug_assert!(matches!(state, WorkerState::Ready | WorkerState::NeedsProbe));
        self.set(w, state);
        self.ready.push_back(w);
    }

    pub(super) fn pop_ready(&mut self) -> Option<WorkerId> {
        self.ready.pop_front()
    }

    pub(super) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Whether some worker is in an idle Wait.
    pub(super) fn any_idle(&self) -> bool {
        self.idle > 0
    }

    /// The worker whose current Wait is `wait`, if any.
    pub(super) fn waiting(&self, wait: WaitId) -> Option<WorkerId> {
        let current = |w: &Worker| matches!(w.state, WorkerState::Probing(x) | WorkerState::IdleWait(x) if x == wait);
        self.iter().find(|(_, w)| current(w)).map(|(id, _)| id)
    }

    /// Counts an unreachable call to `w`; returns whether `w` was the last worker to fall
    /// silent: every worker is silent from now on.
    pub(super) fn fell_silent(&mut self, w: WorkerId) -> bool {
        let worker = &mut self.list[w.0 as usize];
        let falls = worker.unreachable == 0;
        worker.unreachable = worker.unreachable.saturating_add(1);
        self.silent += u32::from(falls);
        falls && self.silent == self.len()
    }

    /// `w` answered: it is no longer silent. Returns whether it was.
    pub(super) fn answered(&mut self, w: WorkerId) -> bool {
        let worker = &mut self.list[w.0 as usize];
        let was_silent = worker.unreachable > 0;
        if was_silent {
            self.silent -= 1;
            worker.unreachable = 0;
        }
        was_silent
    }
}
