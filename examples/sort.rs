//! A distributed sort of 100-byte records (TeraSort in text form): `sort run
//! [--input PATH...] [--output DIR] [--reducers R]`. The driver samples the inputs for
//! the `R - 1` range boundaries first, so `part-00000`, `part-00001`... concatenated are
//! the sorted input. Without `--input`, `run` sorts 100,000 generated records.

use std::process::ExitCode;

use mapreduce::cli::{Runner, Stage, Stages};
use mapreduce::{JobReport, RunError};
use mapreduce_examples::corpus::generate_records;
use mapreduce_examples::sort::Sort;

fn main() -> ExitCode {
    Runner::<Sort>::new("sort")
        .about("Sorts 100-byte records by their 10-byte keys, range-partitioned")
        .sample_input(|path| generate_records(path, 100_000, 42))
        .driver(sampled)
        .main()
}

/// Samples the inputs for the boundaries, then sorts.
fn sampled(_: Sort, stages: &Stages) -> Stage<'_> {
    Box::pin(async move {
        let inputs = stages.inputs().to_vec();
        let reducers = stages.reducers();
        let sampling = tokio::task::spawn_blocking(move || Sort::sampled(&inputs, reducers, 10_000))
            .await
            .map_err(|e| RunError::Input { path: "(sampling)".into(), error: std::io::Error::other(e.to_string()) })?;
        let job = sampling.map_err(|error| RunError::Input { path: stages.inputs()[0].clone(), error })?;
        let report: JobReport = stages.run(stages.spec(job, stages.inputs().to_vec(), stages.output())).await?;
        Ok(report)
    })
}
