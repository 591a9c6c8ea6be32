//! The filesystem side of a job: listing inputs, preparing and committing the output
//! directory, and the names of intermediate and attempt files.
//!
//! Layout of an output directory while a job runs and after it succeeds:
//! ```text
//! out/_temporary/m00003-a17          map task 3, attempt 17: runs of R sorted record streams
//! out/_temporary/r00001-a42          reduce of partition 1, attempt 42 (text)
//! out/part-00000 ... part-{R-1}      committed by the master, one per partition
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
        let abs = std::path::absolute(path).map_err(|source| RunError::Input { path: path.clone(), source })?;
        collect(&abs, &mut files)?;
    }
    Ok(files)
}

fn collect(path: &Path, out: &mut Vec<InputFile>) -> Result<(), RunError> {
    let err = |source| RunError::Input { path: path.to_path_buf(), source };
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

/// An output directory being written by a job. Dropped without a commit (the job failed,
/// or its future was dropped), it cleans up after itself, like [`OutputDir::abort`].
#[derive(Debug)]
pub struct OutputDir {
    /// The output directory (absolute).
    pub root: PathBuf,
    /// Its `_temporary` directory.
    pub work: PathBuf,
    created: bool,
    /// Committed or aborted: nothing left to clean up.
    settled: AtomicBool,
}

impl OutputDir {
    /// Refuses an output directory that holds anything (as Hadoop does), else creates it
    /// and its work directory.
    pub fn prepare(path: &Path) -> Result<Self, RunError> {
        let root = std::path::absolute(path).map_err(|source| RunError::Output { path: path.to_path_buf(), source })?;
        let err = |source| RunError::Output { path: root.clone(), source };
        if root.to_str().is_none() {
            return Err(err(io::Error::new(io::ErrorKind::InvalidInput, "path is not valid UTF-8")));
        }
        let created = match fs::read_dir(&root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(RunError::OutputExists { path: root });
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&root).map_err(err)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(RunError::OutputExists { path: root }),
            Err(e) => return Err(err(e)),
        };
        let work = root.join(TEMPORARY);
        let out = OutputDir { root, work, created, settled: AtomicBool::new(false) };
        fs::create_dir(&out.work).map_err(|source| RunError::Output { path: out.work.clone(), source })?;
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
    pub fn commit(&self, outputs: &[String]) -> Result<Vec<String>, RunError> {
        let mut committed: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(outputs.len());
        for (r, from) in outputs.iter().enumerate() {
            let to = self.root.join(part_name(r as u32));
            if let Err(source) = fs::rename(from, &to) {
                for (from, to) in committed.iter().rev() {
                    let _ = fs::rename(to, from);
                }
                return Err(RunError::Commit { path: PathBuf::from(from), source });
            }
            committed.push((PathBuf::from(from), to));
        }
        self.settled.store(true, Ordering::SeqCst);
        self.remove_work();
        let success = self.root.join(SUCCESS);
        fs::write(&success, b"").map_err(|source| RunError::Commit { path: success, source })?;
        Ok(committed.into_iter().map(|(_, to)| to.to_string_lossy().into_owned()).collect())
    }

    /// Removes the work directory. It is first renamed away in one step, so an attempt
    /// still running on a worker (a loser of a race, or one past its deadline) can no
    /// longer create or rename a file in it, then deleted.
    fn remove_work(&self) {
        let doomed = self.root.join(format!("{TEMPORARY}.removing-{}", std::process::id()));
        let target = match fs::rename(&self.work, &doomed) {
            Ok(()) => doomed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => self.work.clone(),
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
        let err = out.commit(&[a.to_string_lossy().into(), missing.to_string_lossy().into()]).unwrap_err();
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
        let committed = out.commit(&[a.to_string_lossy().into(), b.to_string_lossy().into()]).unwrap();
        assert_eq!(committed.len(), 2);
        let mut names: Vec<String> =
            fs::read_dir(&out.root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, vec!["_SUCCESS", "part-00000", "part-00001"]);
        assert_eq!(fs::read_to_string(out.root.join("part-00000")).unwrap(), "x\t1\n");
    }
}
