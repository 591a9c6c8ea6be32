//! The filesystem side of a job: listing inputs, preparing and committing the output
//! directory, and the names of intermediate and attempt files.
//!
//! Layout of an output directory while a job runs and after it succeeds:
//! ```text
//! out/_temporary/                    the claim of one job run (mode 0700)
//! out/_temporary/<job>/m00003-a17    map task 3, attempt 17: runs of R sorted record streams
//! out/_temporary/<job>/r00001-a42    reduce of partition 1, attempt 42 (text)
//! out/part-00000 ... part-{R-1}      committed by the master, one per partition
//! out/part-m-00000 ...               a map-only job's: one per map task
//! out/_SUCCESS                       written last
//! ```
//! Workers write every file under a temporary name and rename it into place, so a name
//! above always holds a complete file. `_temporary` is removed when the job ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use mapreduce_core::shard::{InputFile, MAX_PATH_BYTES};

use crate::confine;
use crate::error::RunError;

/// Name of the work directory inside the output directory.
pub const TEMPORARY: &str = "_temporary";
/// Name of the marker written last into a complete output directory.
pub const SUCCESS: &str = "_SUCCESS";

/// The committed name of partition `r`'s output.
pub fn part_name(partition: u32) -> String {
    format!("part-{partition:05}")
}

/// The output file of map task `map` of a map-only job: `part-m-00003`, Hadoop's name.
pub fn map_part_name(map: u32) -> String {
    format!("part-m-{map:05}")
}

/// The name of map task `task`'s output file (all partitions), written by `attempt`.
pub fn map_file_name(task: u32, attempt: u64) -> String {
    format!("m{task:05}-a{attempt}")
}

/// The name of reduce attempt `attempt`'s output for `partition`.
pub fn reduce_file_name(partition: u32, attempt: u64) -> String {
    format!("r{partition:05}-a{attempt}")
}

/// Whether a file or directory name is hidden from input listing (as in Hadoop).
fn hidden(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name.starts_with('_')
}

/// Lists the input files under `paths` (directories recursively, in name order), with
/// absolute paths and their lengths, checking that each can be opened and is a regular
/// file with real contents: a FIFO, a device, a socket or a file of procfs or sysfs is
/// refused by name (without blocking on it), and so is a path longer than
/// [`MAX_PATH_BYTES`].
pub fn list_inputs(paths: &[PathBuf]) -> Result<Vec<InputFile>, RunError> {
    let mut files = Vec::new();
    for path in paths {
        let abs = absolute(path).map_err(|source| RunError::Input { path: path.clone(), error: source })?;
        collect(&abs, &mut files)?;
    }
    Ok(files)
}

/// `path` made absolute against the current directory, with `.` and `..` resolved
/// lexically (as Hadoop and Spark normalise paths): `../in/./a.txt` from `/home/u/job`
/// is `/home/u/in/a.txt`. Workers accept only such paths.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in std::path::absolute(path)?.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn collect(path: &Path, out: &mut Vec<InputFile>) -> Result<(), RunError> {
    let err = |source| RunError::Input { path: path.to_path_buf(), error: source };
    // `stat`, not `open`: it never blocks, whatever the file is.
    let meta = fs::metadata(path).map_err(err)?;
    if meta.is_dir() {
        let mut entries = fs::read_dir(path)
            .map_err(err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        entries.sort();
        for entry in entries {
            if !entry.file_name().is_some_and(hidden) {
                collect(&entry, out)?;
            }
        }
        return Ok(());
    }
    let not_regular = |what| RunError::NotRegular { path: path.to_path_buf(), what };
    if let Some(what) = confine::not_regular(meta.file_type()) {
        return Err(not_regular(what));
    }
    let file = confine::open_nonblocking(path).map_err(err)?;
    if let Some(what) = confine::irregular(&file).map_err(err)? {
        return Err(not_regular(what));
    }
    let path_str =
        path.to_str().ok_or_else(|| err(io::Error::new(io::ErrorKind::InvalidInput, "path is not valid UTF-8")))?;
    if path_str.len() > MAX_PATH_BYTES {
        let start = path_str.chars().take(100).collect();
        return Err(RunError::PathTooLong { path: start, bytes: path_str.len(), limit: MAX_PATH_BYTES });
    }
    out.push(InputFile { path: path_str.to_string(), len: meta.len() });
    Ok(())
}

/// A job run's identity: 128 random bits, as 32 hex digits. It names the run's work
/// directory, so that nobody can guess the names its attempts will write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(String);

impl JobId {
    /// A new random id.
    pub fn random() -> JobId {
        let mut bytes = [0u8; 16];
        // The OS's generator; failing that (no /dev/urandom, say), the clock and the
        // process id still give every run its own name, if a guessable one.
        if getrandom::fill(&mut bytes).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..8].copy_from_slice(&(now.as_nanos() as u64).to_le_bytes());
            bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        JobId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id written as `text`, if it is one: 32 lower-case hex digits.
    pub fn parse(text: &str) -> Option<JobId> {
        let ok = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| JobId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An output directory claimed by one job run. Dropped without a commit (the job failed,
/// or its future was dropped), it cleans up what it made, like [`OutputDir::abort`].
#[derive(Debug)]
pub struct OutputDir {
    /// The output directory (absolute).
    pub root: PathBuf,
    /// The run's work directory: `root/_temporary/<job id>`.
    pub work: PathBuf,
    /// The run that holds the claim.
    pub job: JobId,
    /// Its claim: `root/_temporary`, made by this run.
    claim: PathBuf,
    /// Whether this run created `root` itself.
    created: bool,
    /// Committed or aborted: nothing left to clean up.
    settled: AtomicBool,
}

impl OutputDir {
    /// Claims the output directory for a new job run, in one atomic step: creating its
    /// `_temporary` directory (mode 0700), with the run's work directory inside, named
    /// after its [`JobId`]. Of two runs on one directory exactly one gets the claim; the
    /// other is refused with [`RunError::OutputClaimed`] and touches nothing. A directory
    /// that holds anything else is refused too (as Hadoop does) and left alone.
    pub fn prepare(path: &Path) -> Result<Self, RunError> {
        let root = absolute(path).map_err(|source| RunError::Output { path: path.to_path_buf(), error: source })?;
        let err = |source| RunError::Output { path: root.clone(), error: source };
        if root.to_str().is_none() {
            return Err(err(io::Error::new(io::ErrorKind::InvalidInput, "path is not valid UTF-8")));
        }
        let created = match fs::create_dir(&root) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent() {
                    fs::create_dir_all(parent).map_err(err)?;
                }
                match fs::create_dir(&root) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) => return Err(err(e)),
        };
        if !root.is_dir() {
            return Err(RunError::OutputExists { path: root });
        }
        let claim = root.join(TEMPORARY);
        if let Some(e) = check_only_claim(&root, false)? {
            return Err(e);
        }
        match claim_dir(&claim) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RunError::OutputClaimed { path: root, job: claim_holder(&claim) });
            }
            Err(e) => return Err(err(e)),
        }
        let job = JobId::random();
        let work = claim.join(job.as_str());
        let out = OutputDir { root, work, job, claim, created, settled: AtomicBool::new(false) };
        // Something else may have appeared between the check and the claim (not another
        // run: it would have needed the claim): give the claim back and refuse.
        if let Some(e) = check_only_claim(&out.root, true)? {
            return Err(e);
        }
        claim_dir(&out.work).map_err(|source| RunError::Output { path: out.work.clone(), error: source })?;
        Ok(out)
    }

    /// The work directory as a string, for requests.
    pub fn work_str(&self) -> &str {
        self.work.to_str().expect("checked in prepare")
    }

    /// Commits the accepted reduce outputs as `part-NNNNN` in partition order, removes
    /// the work directory and writes `_SUCCESS` last. Returns the committed paths. If a
    /// rename fails, the parts already committed are moved back, so a failed commit leaves
    /// no `part-*` file.
    pub fn commit(&self, outputs: &[String], map_only: bool) -> Result<Vec<String>, RunError> {
        let mut committed: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(outputs.len());
        for (r, from) in outputs.iter().enumerate() {
            let name = if map_only { map_part_name(r as u32) } else { part_name(r as u32) };
            let to = self.root.join(name);
            if let Err(source) = fs::rename(from, &to) {
                for (from, to) in committed.iter().rev() {
                    let _ = fs::rename(to, from);
                }
                return Err(RunError::Commit { path: PathBuf::from(from), error: source });
            }
            committed.push((PathBuf::from(from), to));
        }
        self.settled.store(true, Ordering::SeqCst);
        self.remove_work();
        let success = self.root.join(SUCCESS);
        fs::write(&success, b"").map_err(|source| RunError::Commit { path: success, error: source })?;
        Ok(committed.into_iter().map(|(_, to)| to.to_string_lossy().into_owned()).collect())
    }

    /// Removes the work directory. It is first renamed away in one step, so an attempt
    /// still running on a worker (a loser of a race, or one past its deadline) can no
    /// longer create or rename a file in it, then deleted.
    fn remove_work(&self) {
        let doomed = self.root.join(format!("{TEMPORARY}.removing-{}", self.job));
        let target = match fs::rename(&self.claim, &doomed) {
            Ok(()) => doomed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => self.claim.clone(),
        };
        for round in 0..5 {
            match fs::remove_dir_all(&target) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if round == 4 => {
                    tracing::warn!(path = %target.display(), error = %e, "cannot remove work directory");
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    /// Cleans up after a failed job: removes the work directory, and the output
    /// directory too if this job created it and nothing else is in it.
    pub fn abort(&self) {
        if self.settled.swap(true, Ordering::SeqCst) {
            return;
        }
        self.remove_work();
        if self.created {
            let _ = fs::remove_dir(&self.root);
        }
    }
}

/// Creates a directory that only its owner may enter.
fn claim_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// The refusal for an output directory that holds more than a claim (`_temporary`), if it
/// does; `ours` says the claim is this run's (then it is removed before refusing).
fn check_only_claim(root: &Path, ours: bool) -> Result<Option<RunError>, RunError> {
    let err = |source| RunError::Output { path: root.to_path_buf(), error: source };
    let mut others = false;
    let mut claimed = false;
    for entry in fs::read_dir(root).map_err(err)? {
        match entry.map_err(err)?.file_name() {
            name if name == TEMPORARY => claimed = true,
            _ => others = true,
        }
    }
    let claim = root.join(TEMPORARY);
    if others {
        if ours {
            let _ = fs::remove_dir_all(&claim);
        }
        return Ok(Some(RunError::OutputExists { path: root.to_path_buf() }));
    }
    if claimed && !ours {
        return Ok(Some(RunError::OutputClaimed { path: root.to_path_buf(), job: claim_holder(&claim) }));
    }
    Ok(None)
}

/// The job id in another run's claim: the name of the one directory inside it, if it
/// has made it yet.
fn claim_holder(claim: &Path) -> Option<String> {
    let mut names = fs::read_dir(claim).ok()?.filter_map(|e| e.ok()?.file_name().into_string().ok());
    names.find(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_directories_recursively_in_order_skipping_hidden() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("b.txt"), "bb").unwrap();
        fs::write(dir.path().join("sub/a.txt"), "a").unwrap();
        fs::write(dir.path().join(".hidden"), "x").unwrap();
        fs::write(dir.path().join("_SUCCESS"), "").unwrap();
        let files = list_inputs(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<(&str, u64)> = files.iter().map(|f| (f.path.rsplit('/').next().unwrap(), f.len)).collect();
        assert_eq!(names, vec![("b.txt", 2), ("a.txt", 1)]);
        assert!(files.iter().all(|f| Path::new(&f.path).is_absolute()));
    }

    #[test]
    fn fifos_devices_and_pseudo_files_are_refused_by_name_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        for (path, what) in [
            (fifo.clone(), "a FIFO"),
            (PathBuf::from("/proc/cpuinfo"), "a file of procfs"),
            (PathBuf::from("/dev/zero"), "a character device"),
        ] {
            let err = list_inputs(std::slice::from_ref(&path)).unwrap_err();
            assert_eq!(err.to_string(), format!("input {} is {what}, not a regular file", path.display()));
        }
        // In a directory too.
        let err = list_inputs(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(&err, RunError::NotRegular { path, .. } if *path == fifo), "{err}");
    }

    #[test]
    fn a_missing_input_names_the_path() {
        let err = list_inputs(&[PathBuf::from("/definitely/not/here.txt")]).unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here.txt"), "{err}");
    }

    #[test]
    fn an_output_dropped_without_commit_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(&dir.path().join("out")).unwrap();
        fs::write(out.work.join("leftover"), "x").unwrap();
        drop(out);
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn a_failed_commit_moves_committed_parts_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::prepare(&dir.path().join("out")).unwrap();
        let a = out.work.join(reduce_file_name(0, 1));
        fs::write(&a, "x\t1\n").unwrap();
        let missing = out.work.join(reduce_file_name(1, 2));
        let err = out.commit(&[a.to_string_lossy().into(), missing.to_string_lossy().into()], false).unwrap_err();
        assert!(err.to_string().contains("r00001-a2"), "{err}");
        assert!(a.exists(), "part-00000 moved back");
        assert!(!out.root.join("part-00000").exists());
        assert!(!out.root.join(SUCCESS).exists());
    }

    #[test]
    fn refuses_a_non_empty_output_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old"), "x").unwrap();
        assert!(matches!(OutputDir::prepare(dir.path()), Err(RunError::OutputExists { .. })));

        let out = OutputDir::prepare(&dir.path().join("out")).unwrap();
        let a = out.work.join(reduce_file_name(0, 3));
        let b = out.work.join(reduce_file_name(1, 4));
        fs::write(&a, "x\t1\n").unwrap();
        fs::write(&b, "").unwrap();
        let committed = out.commit(&[a.to_string_lossy().into(), b.to_string_lossy().into()], false).unwrap();
        assert_eq!(committed.len(), 2);
        let mut names: Vec<String> =
            fs::read_dir(&out.root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["_SUCCESS", "part-00000", "part-00001"]);
        assert_eq!(fs::read_to_string(out.root.join("part-00000")).unwrap(), "x\t1\n");
    }

    #[test]
    fn a_second_run_on_a_claimed_directory_is_refused_naming_the_holder_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputDir::prepare(&dir.path().join("out")).unwrap();
        fs::write(first.work.join("m00000-a0"), "x").unwrap();
        let err = OutputDir::prepare(&dir.path().join("out")).unwrap_err();
        assert!(matches!(&err, RunError::OutputClaimed { job: Some(j), .. } if *j == first.job.to_string()), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(first.job.as_str()) && msg.contains("_temporary"), "{msg}");
        assert!(first.work.join("m00000-a0").exists(), "the holder's files are untouched");
        drop(first);
        assert!(!dir.path().join("out").exists(), "the holder cleans up after itself");
    }

    #[test]
    fn a_claim_left_by_a_killed_run_is_named_with_how_to_clear_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let stale = OutputDir::prepare(&out).unwrap();
        let job = stale.job.clone();
        std::mem::forget(stale); // killed: no cleanup
        let err = OutputDir::prepare(&out).unwrap_err();
        assert!(err.to_string().contains(&format!("job {job}")), "{err}");
        assert!(err.to_string().contains(&format!("remove {}/_temporary", out.display())), "{err}");
        fs::remove_dir_all(out.join(TEMPORARY)).unwrap();
        let again = OutputDir::prepare(&out).unwrap();
        assert_ne!(again.job, job, "every run has its own id");
        assert_eq!(again.job.as_str().len(), 32);
    }

    #[test]
    fn of_two_runs_claiming_at_once_exactly_one_wins() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<_> = std::thread::scope(|s| {
                let runs: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            OutputDir::prepare(&out)
                        })
                    })
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let won: Vec<&OutputDir> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(
                won.len(),
                1,
                "round {round}: {:?}",
                results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
            );
            assert!(won[0].work.is_dir(), "round {round}: the winner's work directory stands");
            for r in &results {
                if let Err(e) = r {
                    assert!(matches!(e, RunError::OutputClaimed { .. }), "round {round}: {e}");
                }
            }
        }
    }

    #[test]
    fn relative_paths_with_dots_are_made_absolute_and_normal() {
        let cwd = std::env::current_dir().unwrap();
        let parent = cwd.parent().unwrap_or(&cwd).to_path_buf();
        assert_eq!(absolute(Path::new("../in/./a.txt")).unwrap(), parent.join("in/a.txt"));
        assert_eq!(absolute(Path::new("/a/b/../../../c")).unwrap(), PathBuf::from("/c"));
        assert_eq!(absolute(Path::new("/a/./b/")).unwrap(), PathBuf::from("/a/b"));
        let p = absolute(Path::new("x/../y")).unwrap();
        assert!(p.is_absolute() && !p.components().any(|c| matches!(c, std::path::Component::ParentDir)));
    }
}
