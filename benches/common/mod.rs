//! Helpers shared by the harness-less benchmarks.

#![allow(dead_code)] // each benchmark uses its own subset

use std::time::Duration;

/// A file of `word<TAB>count` lines (a single-threaded count's output) as a map.
pub(crate) fn read_counts(path: &std::path::Path) -> std::io::Result<std::collections::BTreeMap<String, u64>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(|l| {
            let (w, n) = l.rsplit_once('\t').expect("a tab");
            (w.to_string(), n.parse().expect("a count"))
        })
        .collect())
}

/// The median of some timings.
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The process's peak resident memory (`VmHWM`), in MiB, where /proc tells.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux 4.0+), so each phase reports its own.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time the hypervisor gave to other guests while this machine's CPUs wanted to run
/// (the `steal` column of `/proc/stat`, summed over CPUs; in clock ticks, assumed to be
/// the usual 100 per second). On a shared VM it grows with how many of our threads run
/// at once, so it weighs on a two-worker run more than on one thread: a bench prints it
/// beside the times it skews.
pub(crate) fn steal_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: u64 = cpu.split_whitespace().nth(7)?.parse().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Runs `f`, returning its result and the steal time ([`steal_time`]) while it ran.
pub(crate) fn stolen_during<T>(f: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = steal_time();
    let out = f();
    (out, before.zip(steal_time()).map(|(b, a)| a.saturating_sub(b)))
}

/// The ratio of the medians `baseline / framework`, then the spread and median of the
/// per-run ratios: `"1.32x of the medians; per run 1.14x to 1.66x, median 1.39x"`.
pub(crate) fn ratio_summary(baseline: Duration, framework: Duration, mut ratios: Vec<f64>) -> String {
    ratios.sort_by(f64::total_cmp);
    format!(
        "{:.2}x of the medians; per run {:.2}x to {:.2}x, median {:.2}x",
        baseline.as_secs_f64() / framework.as_secs_f64(),
        ratios[0],
        ratios[ratios.len() - 1],
        ratios[ratios.len() / 2]
    )
}
