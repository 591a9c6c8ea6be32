//! The most frequent words, as a pipeline of two jobs that pass typed records:
//! `topwords run --input PATH... --output DIR [--top N]`. The first job counts words into
//! record files (`OutputFormat::Records`) under `DIR.stages/counts`; the second reads
//! those records (`InputFormat::Records`, no text parsed again) and writes
//! `count<TAB>word` lines, most frequent first, into `DIR/part-00000`.

use std::process::ExitCode;

use mapreduce::cli::{Runner, Stage, Stages};
use mapreduce::{InputFormat, OutputFormat};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::topwords::{CountWords, TopWords};

fn main() -> ExitCode {
    Runner::<TopWords>::new("topwords")
        .about("Counts words, then ranks them by count: two jobs passing typed records")
        .register::<CountWords>()
        .sample_input(|path| generate_corpus(path, 4 << 20, 20_000, 42))
        .driver(pipeline)
        .main()
}

/// Counts, then ranks the counts with one reducer.
fn pipeline(top: TopWords, stages: &Stages) -> Stage<'_> {
    Box::pin(async move {
        let counts = stages.scratch("counts")?;
        let count = stages.spec(CountWords, stages.inputs().to_vec(), &counts).output_format(OutputFormat::Records);
        stages.run(count).await?;
        let rank =
            stages.spec(top, vec![counts.clone()], stages.output()).input_format(InputFormat::Records).reducers(1);
        let report = stages.run(rank).await?;
        let _ = std::fs::remove_dir_all(counts.parent().unwrap_or(&counts));
        Ok(report)
    })
}
