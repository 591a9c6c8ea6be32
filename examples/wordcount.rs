//! Word count, in-process or across worker processes: a job-runner binary
//! ([`mapreduce::cli`]), whose `main` is a few lines.
//!
//! ```text
//! wordcount run    [--input PATH]... [--output DIR] [--workers N] [--reducers R]
//!                  [--shard-size SIZE] [--worker-shuffle] [--report FILE] [--config FILE]
//! wordcount worker --listen ADDR [--root DIR]... [--work-dir DIR] [--join MASTER_ADDR]
//!                  [--drain-timeout DURATION] [--token-file FILE] [--insecure]
//!                  [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
//! wordcount master [--worker ADDR]... [--listen ADDR] --input PATH... --output DIR
//!                  [--reducers R] [--shard-size SIZE] [--shared-shuffle]
//!                  [--task-timeout DURATION] [--report FILE]
//!                  [--token-file FILE] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
//! ```
//!
//! A master needs `--worker` or `--listen` (or both): with `--listen`, workers started
//! with `--join` offer themselves to it and get tasks at once, even mid-job. A worker
//! drains on SIGTERM: it finishes its running task, takes no new one, serves its map
//! output until the master's job ends (or `--drain-timeout`), and exits 0. `run` and
//! `master` show progress on stderr and stop the job on SIGINT or SIGTERM (exit status
//! 130 or 143, its partial output removed).

use std::path::Path;
use std::process::ExitCode;

use mapreduce::cli::Runner;
use mapreduce::{BoxError, JobReport};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::reference::top_words;
use mapreduce_examples::wordcount::WordCount;

fn main() -> ExitCode {
    Runner::<WordCount>::new("wordcount")
        .about("Counts words with mapreduce-rs")
        .sample_input(|path| generate_corpus(path, 4 << 20, 20_000, 42))
        .summarize(most_frequent)
        .main()
}

/// Prints the job's shape and its five most frequent words.
fn most_frequent(report: &JobReport, output: &Path) -> Result<(), BoxError> {
    let top: Vec<String> = top_words(output, 5)?.iter().map(|(w, c)| format!("{w} {c}")).collect();
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(
        out,
        "wordcount: {} distinct words from {} input bytes in {} ms ({} map, {} reduce tasks, {} attempts); output in {}",
        report.output_records,
        report.input_bytes,
        report.elapsed_ms,
        report.map_tasks,
        report.reduce_tasks,
        report.attempts.launched,
        output.display()
    )?;
    writeln!(out, "wordcount: most frequent: {}", top.join(", "))?;
    Ok(())
}
