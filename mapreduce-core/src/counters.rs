//! Counters: named totals a job's tasks keep, built-in (with Hadoop's names) and the
//! user's own ([`Emitter::count`](crate::Emitter::count), [`Output::count`](crate::Output::count)).
//!
//! A task attempt counts into its thread's counters (the worker clears them when the
//! attempt starts and takes them when it ends; user code runs on that one thread). The
//! master adds up only the accepted attempt of each task, whatever the retries, backups
//! and re-runs: Google MapReduce's rule, so a job's counters are the same however often
//! its tasks ran.

use std::cell::RefCell;
use std::collections::BTreeMap;

/// Counter totals by name.
pub type Counters = BTreeMap<String, u64>;

/// The most counters one task may keep (Hadoop's default limit is 120): past it, the
/// attempt fails naming the limit, rather than growing the master's report unbounded.
pub const MAX_COUNTERS: usize = 1000;

/// The longest counter name, in bytes.
pub const MAX_COUNTER_NAME: usize = 200;

/// Built-in counter names, as Hadoop's `TaskCounter`s (lower case).
pub mod builtin {
    /// Records (lines) a map read.
    pub const MAP_INPUT_RECORDS: &str = "map_input_records";
    /// Input bytes a map read.
    pub const MAP_INPUT_BYTES: &str = "map_input_bytes";
    /// Input lines skipped: longer than the limit, or not UTF-8 (as the job said).
    pub const MAP_SKIPPED_RECORDS: &str = "map_skipped_records";
    /// Records a map emitted.
    pub const MAP_OUTPUT_RECORDS: &str = "map_output_records";
    /// Bytes of map output written (after combining, compressed as stored).
    pub const MAP_OUTPUT_BYTES: &str = "map_output_bytes";
    /// Records into the map-side combining buffer (every emitted record).
    pub const COMBINE_INPUT_RECORDS: &str = "combine_input_records";
    /// Records out of it: written to the map output.
    pub const COMBINE_OUTPUT_RECORDS: &str = "combine_output_records";
    /// Records written to disk on the map side: spills and the map output itself.
    pub const SPILLED_RECORDS: &str = "spilled_records";
    /// Distinct keys a reduce was called with.
    pub const REDUCE_INPUT_GROUPS: &str = "reduce_input_groups";
    /// Values a reduce read.
    pub const REDUCE_INPUT_RECORDS: &str = "reduce_input_records";
    /// Bytes of map output a reduce read (fetched or from disk).
    pub const REDUCE_SHUFFLE_BYTES: &str = "reduce_shuffle_bytes";
    /// Records a reduce wrote.
    pub const REDUCE_OUTPUT_RECORDS: &str = "reduce_output_records";
    /// Bytes a reduce wrote.
    pub const REDUCE_OUTPUT_BYTES: &str = "reduce_output_bytes";
}

thread_local! {
    static TASK: RefCell<Counters> = const { RefCell::new(BTreeMap::new()) };
}

/// Adds `n` to counter `name` of the task running on this thread.
pub(crate) fn add(name: &str, n: u64) {
    TASK.with_borrow_mut(|c| match c.get_mut(name) {
        Some(total) => *total = total.saturating_add(n),
        None => {
            c.insert(name.to_string(), n);
        }
    });
}

/// Clears this thread's counters: a task attempt starts on it.
pub fn start_task() {
    TASK.with_borrow_mut(BTreeMap::clear);
}

/// Takes this thread's counters: the task attempt on it has ended. An error names a
/// limit passed (too many counters, a name too long).
pub fn end_task() -> Result<Counters, String> {
    let counters = TASK.with_borrow_mut(std::mem::take);
    check(&counters)?;
    Ok(counters)
}

/// Whether `counters` keep within [`MAX_COUNTERS`] and [`MAX_COUNTER_NAME`].
pub fn check(counters: &Counters) -> Result<(), String> {
    if counters.len() > MAX_COUNTERS {
        return Err(format!("{} counters, more than the limit of {MAX_COUNTERS}", counters.len()));
    }
    match counters.keys().find(|name| name.is_empty() || name.len() > MAX_COUNTER_NAME) {
        Some(name) => Err(format!(
            "counter name {:?} is empty or longer than {MAX_COUNTER_NAME} bytes",
            name.chars().take(40).collect::<String>()
        )),
        None => Ok(()),
    }
}

/// Adds `from` into `into`, saturating.
pub fn merge(into: &mut Counters, from: &Counters) {
    for (name, n) in from {
        let total = into.entry(name.clone()).or_default();
        *total = total.saturating_add(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_counts_on_its_thread_and_limits_are_checked() {
        start_task();
        add("docs", 2);
        add("docs", u64::MAX);
        add("pages", 1);
        let counters = end_task().unwrap();
        assert_eq!(counters, Counters::from([("docs".into(), u64::MAX), ("pages".into(), 1)]));
        assert!(end_task().unwrap().is_empty(), "taken");
        std::thread::spawn(|| add("elsewhere", 1)).join().unwrap();
        assert!(end_task().unwrap().is_empty(), "another thread's counts are its own");

        start_task();
        for i in 0..=MAX_COUNTERS {
            add(&format!("c{i}"), 1);
        }
        assert!(end_task().unwrap_err().contains("limit of 1000"));
        start_task();
        add(&"x".repeat(MAX_COUNTER_NAME + 1), 1);
        assert!(end_task().unwrap_err().contains("longer than 200 bytes"));

        let mut total = Counters::from([("docs".into(), 1)]);
        merge(&mut total, &Counters::from([("docs".into(), 2), ("new".into(), 3)]));
        assert_eq!(total, Counters::from([("docs".into(), 3), ("new".into(), 3)]));
    }
}
