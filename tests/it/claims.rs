//! Two masters on one output directory: exactly one runs, and the other touches nothing.

use mapreduce::{Cluster, JobSpec, RunError};
use mapreduce_examples::corpus::generate_corpus;
use mapreduce_examples::wordcount::WordCount;

use crate::support::{assert_wordcount_output, init_tracing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_masters_on_one_output_directory_exactly_one_runs_and_its_files_survive() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    generate_corpus(&input, 64 << 10, 2_000, 9).unwrap();
    let (a, b) = (Cluster::local(2).await.unwrap(), Cluster::local(2).await.unwrap());
    for round in 0..20 {
        let out = dir.path().join(format!("out-{round}"));
        let spec = || JobSpec::new(WordCount, [&input], &out).reducers(2).shard_size(16 << 10);
        let (ra, rb) = tokio::join!(a.run(spec()), b.run(spec()));
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {:?} / {:?}", ra.as_ref().err(), rb.as_ref().err());
        let loser = [ra, rb].into_iter().find_map(Result::err).unwrap();
        // Refused for the claim, or, if the winner was already done, for its output.
        assert!(
            matches!(loser, RunError::OutputClaimed { .. } | RunError::OutputExists { .. }),
            "round {round}: {loser}"
        );
        assert!(loser.to_string().contains(&out.display().to_string()), "{loser}");
        // The winner's output is whole: nothing of it was removed by the loser.
        assert_wordcount_output(&out, 2, std::slice::from_ref(&input));
    }
}
