//! What the job runner shows on stderr: the progress of a job, and its summary at the end.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::{JobReport, JobStatus, Phase};

/// How often a plain progress line is printed when nothing changes phase.
const EVERY: Duration = Duration::from_secs(5);

/// Shows `progress` on stderr until `run` ends: on a terminal, a bar per phase
/// (indicatif: tasks done of total, running, failed, backups, ETA); otherwise a plain line
/// at each phase change and every 5 s, `map D/T, reduce D/T`, with no escape codes.
pub(crate) async fn with_progress<T>(
    name: &'static str,
    progress: watch::Receiver<Option<JobStatus>>,
    run: impl std::future::Future<Output = T>,
) -> T {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let shown = show_progress(name, progress, stopped);
    let done = run.await;
    let _ = stop.send(());
    let _ = shown.await;
    done
}

/// The task of [`with_progress`]: it shows the last state once more when `stop` fires.
fn show_progress(
    name: &'static str,
    mut progress: watch::Receiver<Option<JobStatus>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = Instant::now();
    tokio::spawn(async move {
        let bars = terminal.then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>6} [{bar:40}] {pos}/{len} {msg} ({elapsed}, ETA {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            let bar = |name: &str| {
                let bar = multi.add(indicatif::ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(name.to_string());
                bar
            };
            (bar("map"), bar("reduce"))
        });
        // The last line printed, and when.
        let mut last: Option<(JobStatus, Instant)> = None;
        let mut tick = tokio::time::interval(EVERY);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
                _ = &mut stop => stopping = true,
            }
            let Some(s) = progress.borrow_and_update().clone() else { continue };
            let msg = format!("running {}, failed {}, backups {}", s.running, s.failed, s.backups);
            match &bars {
                Some((map, reduce)) => {
                    map.set_length(u64::from(s.maps_total));
                    map.set_position(u64::from(s.maps_done));
                    reduce.set_length(u64::from(s.reduces_total));
                    reduce.set_position(u64::from(s.reduces_done));
                    let (now, other) = if s.phase == Phase::Map { (map, reduce) } else { (reduce, map) };
                    now.set_message(msg);
                    other.set_message("");
                    if stopping {
                        map.finish();
                        reduce.finish();
                    }
                }
                None => {
                    let due = match &last {
                        None => true,
                        Some((shown, _)) if stopping => *shown != s,
                        Some((shown, at)) => shown.phase != s.phase || at.elapsed() >= EVERY,
                    };
                    if due {
                        eprintln!(
                            "{name}: map {}/{}, reduce {}/{} ({msg}) after {:.1} s",
                            s.maps_done,
                            s.maps_total,
                            s.reduces_done,
                            s.reduces_total,
                            started.elapsed().as_secs_f64()
                        );
                        last = Some((s, Instant::now()));
                    }
                }
            }
        }
    })
}

/// The built-in counters, in the order Hadoop prints its own.
const BUILTIN_ORDER: &[&str] = &[
    "map_input_records",
    "map_input_bytes",
    "map_skipped_records",
    "map_output_records",
    "map_output_bytes",
    "combine_input_records",
    "combine_output_records",
    "spilled_records",
    "reduce_input_groups",
    "reduce_input_records",
    "reduce_shuffle_bytes",
    "reduce_output_records",
    "reduce_output_bytes",
];

/// The job summary, as Hadoop prints it at a job's end: the job's shape and attempts, the
/// built-in counters, then the job's own.
pub(crate) fn summary(name: &str, report: &JobReport) -> String {
    let a = &report.attempts;
    let mut out = format!(
        "{name}: job done in {:.2} s: {} maps, {} reduces; attempts {} launched, {} failed, {} backups ({} won); {} map outputs lost\n",
        report.elapsed_ms as f64 / 1000.0,
        report.map_tasks,
        report.reduce_tasks,
        a.launched,
        a.failed,
        a.speculative,
        a.speculative_won,
        report.map_outputs_lost,
    );
    let width = report.counters.keys().map(String::len).max().unwrap_or(0).max(24);
    let mut section = |title: &str, names: &mut dyn Iterator<Item = (&String, &u64)>| {
        let mut names = names.peekable();
        if names.peek().is_some() {
            out.push_str(&format!("{name}:   {title}\n"));
            for (counter, n) in names {
                out.push_str(&format!("{name}:     {counter:<width$} {n:>16}\n"));
            }
        }
    };
    let builtin = |c: &str| BUILTIN_ORDER.contains(&c);
    let mut framework: Vec<(&String, &u64)> = report.counters.iter().filter(|(c, _)| builtin(c)).collect();
    framework.sort_by_key(|(c, _)| BUILTIN_ORDER.iter().position(|b| b == c));
    section("Map-Reduce framework", &mut framework.into_iter());
    section("Job counters", &mut report.counters.iter().filter(|(c, _)| !builtin(c)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_built_in_counters_in_hadoop_order_then_the_jobs() {
        let mut report = JobReport { map_tasks: 2, reduce_tasks: 1, elapsed_ms: 1500, ..JobReport::default() };
        for (c, n) in [("reduce_output_records", 5), ("map_input_records", 10), ("bad_lines", 1)] {
            report.counters.insert(c.to_string(), n);
        }
        let text = summary("wc", &report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("wc: job done in 1.50 s: 2 maps, 1 reduces"), "{text}");
        assert_eq!(lines[1], "wc:   Map-Reduce framework");
        assert!(lines[2].contains("map_input_records") && lines[2].ends_with(" 10"), "{text}");
        assert!(lines[3].contains("reduce_output_records"), "{text}");
        assert_eq!(lines[4], "wc:   Job counters");
        assert!(lines[5].contains("bad_lines"), "{text}");
        assert!(!text.contains('\x1b'), "no escape codes");
    }
}
