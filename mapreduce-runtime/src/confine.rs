//! Where a worker may read and write, and what it agrees to read.
//!
//! A worker that serves the network is confined to its data roots ([`Files::Confined`]):
//! each root is opened once as a directory (cap-std's `Dir`), and a path in a request,
//! absolute as always, is opened *relative to the root it lies under*, resolved beneath
//! that directory by cap-std (`openat2` with `RESOLVE_BENEATH` where the kernel has it).
//! So `..`, absolute paths elsewhere and symlinks that point out of the root are refused
//! by the walk itself, not by comparing strings. The in-process workers of
//! `Cluster::local` run the user's own job in the user's own process and are not
//! confined ([`Files::Unconfined`]).
//!
//! Only regular files with real contents are read, by the master when it lists inputs
//! and again by workers: a file is opened with `O_NONBLOCK` (so opening a FIFO or a
//! device never blocks), its type checked with `fstat`, and files of pseudo filesystems
//! (procfs, sysfs and the like, whose files say 0 bytes and yet produce bytes) refused by
//! their filesystem's magic (`fstatfs`).

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::{Dir, OpenOptionsExt};
use rustix::fs::OFlags;

/// The filesystem as a worker may use it.
#[derive(Debug, Clone, Default)]
pub(crate) enum Files {
    /// Any absolute path (the in-process workers of `Cluster::local`).
    #[default]
    Unconfined,
    /// Only beneath these roots.
    Confined(Arc<[Root]>),
}

/// A data root: its path and the directory opened there.
#[derive(Debug)]
pub(crate) struct Root {
    /// The path as given, made absolute.
    path: PathBuf,
    /// The same, with symlinks resolved (requests may name either).
    real: PathBuf,
    dir: Dir,
}

/// Why a file was not opened.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The path lies outside every data root (lexically, or a symlink pointed out).
    Outside,
    /// It is not a regular file: what it is instead ("a FIFO", "a file of procfs").
    NotRegular(&'static str),
    /// The open or `fstat` failed.
    Io(io::Error),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        // cap-std reports a path that would leave its directory as a permission error of
        // its own making, with no OS error code.
        if e.kind() == io::ErrorKind::PermissionDenied && e.raw_os_error().is_none() {
            Refused::Outside
        } else {
            Refused::Io(e)
        }
    }
}

impl Refused {
    /// The task error of refusing `path`; `io` makes the error of a failed open.
    pub(crate) fn into_task_error(
        self,
        path: &Path,
        files: &Files,
        io: impl FnOnce(io::Error) -> crate::error::TaskError,
    ) -> crate::error::TaskError {
        use crate::error::TaskError;
        match self {
            Refused::Outside => {
                TaskError::OutsideRoots { path: path.display().to_string(), roots: files.describe_roots() }
            }
            Refused::NotRegular(what) => TaskError::NotRegular { path: path.to_path_buf(), what },
            Refused::Io(e) => io(e),
        }
    }
}

impl Files {
    /// Opens each of `roots` as a data root; an error names the root that cannot be opened.
    pub(crate) fn confined(roots: &[PathBuf]) -> Result<Files, (PathBuf, io::Error)> {
        let open = |root: &PathBuf| {
            let path = std::path::absolute(root)?;
            let real = std::fs::canonicalize(&path)?;
            let dir = Dir::open_ambient_dir(&real, cap_std::ambient_authority())?;
            Ok(Root { path, real, dir })
        };
        let roots = roots.iter().map(|r| open(r).map_err(|e| (r.clone(), e))).collect::<Result<Vec<_>, _>>()?;
        Ok(Files::Confined(roots.into()))
    }

    /// The roots, for messages: at most three, then how many more.
    pub(crate) fn describe_roots(&self) -> String {
        match self {
            Files::Unconfined => "(none: unconfined)".into(),
            Files::Confined(roots) => {
                let mut s = roots.iter().take(3).map(|r| r.path.display().to_string()).collect::<Vec<_>>().join(", ");
                if roots.len() > 3 {
                    s.push_str(&format!(" and {} more", roots.len() - 3));
                }
                s
            }
        }
    }

    /// The root `path` lies under, lexically, and the rest of it: `None` if it lies under
    /// none. (Only a check of the name; opening resolves it beneath the root.)
    fn locate<'a>(&'a self, path: &'a Path) -> Option<(&'a Dir, &'a Path)> {
        let Files::Confined(roots) = self else { return None };
        roots
            .iter()
            .flat_map(|r| [&r.path, &r.real].map(|base| (r, base)))
            .filter_map(|(r, base)| Some((&r.dir, path.strip_prefix(base).ok()?)))
            .min_by_key(|(_, rest)| rest.components().count())
    }

    /// Whether `path` is absolute, has no `..` and lies under a root (when confined): the
    /// cheap check of a request, before anything is opened.
    pub(crate) fn admits(&self, path: &Path) -> bool {
        let plain = path.is_absolute() && !path.components().any(|c| matches!(c, Component::ParentDir));
        plain && (matches!(self, Files::Unconfined) || self.locate(path).is_some())
    }

    /// Opens `path` to read it, if it is a regular file with real contents; never blocks.
    pub(crate) fn open_regular(&self, path: &Path) -> Result<File, Refused> {
        let file = match self {
            Files::Unconfined => open_nonblocking(path)?,
            Files::Confined(_) => {
                let (dir, rest) = self.locate(path).filter(|_| self.admits(path)).ok_or(Refused::Outside)?;
                let mut options = cap_std::fs::OpenOptions::new();
                options.read(true).custom_flags(OFlags::NONBLOCK.bits() as i32);
                dir.open_with(dot(rest), &options)?.into_std()
            }
        };
        match irregular(&file)? {
            Some(what) => Err(Refused::NotRegular(what)),
            None => Ok(file),
        }
    }

    /// Opens the directory `path` to write attempt files in.
    pub(crate) fn open_dir(&self, path: &Path) -> Result<Dir, Refused> {
        match self {
            Files::Unconfined => Ok(Dir::open_ambient_dir(path, cap_std::ambient_authority())?),
            Files::Confined(_) => {
                let (dir, rest) = self.locate(path).filter(|_| self.admits(path)).ok_or(Refused::Outside)?;
                Ok(dir.open_dir(dot(rest))?)
            }
        }
    }
}

/// `rest`, or `.` for the root itself.
fn dot(rest: &Path) -> &Path {
    if rest.as_os_str().is_empty() { Path::new(".") } else { rest }
}

/// Opens `path` for reading with `O_NONBLOCK`, so that a FIFO without a writer or a device
/// does not block the open (for a regular file the flag changes nothing).
pub(crate) fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().read(true).custom_flags(OFlags::NONBLOCK.bits() as i32).open(path)
}

/// What an open file is, if not a regular file with real contents.
pub(crate) fn irregular(file: &File) -> io::Result<Option<&'static str>> {
    if let Some(what) = not_regular(file.metadata()?.file_type()) {
        return Ok(Some(what));
    }
    pseudo_fs(file)
}

/// What a file of this type is, if not a regular file.
pub(crate) fn not_regular(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if t.is_file() => None,
        _ if t.is_dir() => Some("a directory"),
        _ if t.is_fifo() => Some("a FIFO"),
        _ if t.is_char_device() => Some("a character device"),
        _ if t.is_block_device() => Some("a block device"),
        _ if t.is_socket() => Some("a socket"),
        _ if t.is_symlink() => Some("a symbolic link"),
        _ => Some("not a file"),
    }
}

/// Filesystems whose files are generated on read (their sizes say nothing of what a read
/// returns), by `f_type` magic (`linux/magic.h`).
const PSEUDO_FILESYSTEMS: &[(u32, &str)] = &[
    (0x9fa0, "a file of procfs"),
    (0x6265_6572, "a file of sysfs"),
    (0x6462_6720, "a file of debugfs"),
    (0x7472_6163, "a file of tracefs"),
    (0x7363_6673, "a file of securityfs"),
    (0x0027_e0eb, "a file of cgroupfs"),
    (0x6367_7270, "a file of cgroup2fs"),
    (0xcafe_4a11, "a file of bpffs"),
    (0x6265_6570, "a file of configfs"),
    (0x6165_676c, "a file of pstorefs"),
    (0xde5e_81e4, "a file of efivarfs"),
    (0xf97c_ff8c, "a file of selinuxfs"),
    (0x4341_5d53, "a file of smackfs"),
    (0x6573_5543, "a file of fusectl"),
    (0x4249_4e4d, "a file of binfmt_misc"),
    (0x6e73_6673, "a file of nsfs"),
];

/// The kind of pseudo file `file` is, if its filesystem is one of [`PSEUDO_FILESYSTEMS`].
fn pseudo_fs(file: &File) -> io::Result<Option<&'static str>> {
    let stat = rustix::fs::fstatfs(file)?;
    // `f_type`'s width differs by platform; the magics are 32-bit.
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as u32;
    Ok(PSEUDO_FILESYSTEMS.iter().find(|(m, _)| *m == magic).map(|(_, what)| *what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<File, Refused>) -> Refused {
        r.expect_err("refused")
    }

    #[test]
    fn a_confined_worker_opens_beneath_its_roots_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/in.txt"), "x\n").unwrap();
        std::fs::write(dir.path().join("secret"), "s\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out-link")).unwrap();
        std::os::unix::fs::symlink("sub/in.txt", root.join("in-link")).unwrap();
        let files = Files::confined(std::slice::from_ref(&root)).unwrap();
        assert!(files.open_regular(&root.join("sub/in.txt")).is_ok());
        assert!(files.open_regular(&root.join("./sub//in.txt")).is_ok());
        assert!(files.open_regular(&root.join("in-link")).is_ok(), "a symlink within the root is followed");
        for outside in [dir.path().join("secret"), root.join("out-link"), root.join("sub/../../secret")] {
            assert!(matches!(refused(files.open_regular(&outside)), Refused::Outside), "{}", outside.display());
        }
        assert!(matches!(refused(files.open_regular(Path::new("/etc/passwd"))), Refused::Outside));
        assert!(matches!(refused(files.open_regular(&root.join("sub"))), Refused::NotRegular("a directory")));
        assert!(files.open_dir(&root).is_ok() && files.open_dir(&root.join("sub")).is_ok());
        assert!(matches!(files.open_dir(Path::new("/etc")), Err(Refused::Outside)));
        assert!(!files.admits(Path::new("relative")) && !files.admits(&root.join("..")));
        assert_eq!(files.describe_roots(), root.display().to_string());
    }

    #[test]
    fn devices_fifos_and_pseudo_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let files = Files::Unconfined;
        for (path, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/proc/cpuinfo"), "a file of procfs"),
            (Path::new("/proc/self/environ"), "a file of procfs"),
        ] {
            assert!(matches!(refused(files.open_regular(path)), Refused::NotRegular(w) if w == what), "{path:?}");
        }
        if Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            let r = refused(files.open_regular(Path::new("/sys/kernel/mm/transparent_hugepage/enabled")));
            assert!(matches!(r, Refused::NotRegular("a file of sysfs")), "{r:?}");
        }
    }
}
