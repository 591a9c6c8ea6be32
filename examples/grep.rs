//! A distributed grep: `grep run --pattern REGEX --input PATH... --output DIR`. Map-only:
//! each matching line is written as `path:line:text` (the file's absolute path, the
//! 1-based line number), like `grep -Hn`, in `part-m-00000`... (one per map task, in
//! input order within each). The job-runner's `worker` and `master` run it on a cluster.

use std::process::ExitCode;

use mapreduce::cli::Runner;
use mapreduce_examples::grep::Grep;

fn main() -> ExitCode {
    Runner::<Grep>::new("grep")
        .about("Prints the lines that match a regex, as grep -Hn")
        .configure(Grep::configure)
        .main()
}
