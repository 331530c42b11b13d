//! The pid file (`pid_file`): `rmilter run` writes its pid there and holds
//! an exclusive lock on the file while it runs; `rmilter keys` reads it to
//! send SIGHUP after changing which keys sign. The lock tells a live
//! daemon from a stale file (a daemon killed with SIGKILL leaves the file,
//! but its lock is gone), so a stale pid is never signalled; a second
//! daemon with the same pid file refuses to start.

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The daemon's pid file, locked until dropped (then removed).
pub struct PidFile {
    path: PathBuf,
    lock: Flock<File>,
}

fn open(path: &Path, create: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

impl PidFile {
    /// Create (or take over a stale) pid file and write this process's pid.
    pub fn create(path: &Path) -> anyhow::Result<PidFile> {
        let file =
            open(path, true).map_err(|e| anyhow::anyhow!("pid file {}: {e}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                anyhow::bail!(
                    "pid file {}: another rmilter is running (pid {})",
                    path.display(),
                    text.trim()
                );
            }
            Err((_, errno)) => anyhow::bail!("pid file {}: cannot lock: {errno}", path.display()),
        };
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut lock).map_err(|e| anyhow::anyhow!("pid file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            lock,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so nobody sees an unlocked file with
        // this pid.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.lock;
    }
}

/// What asking the daemon to reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadRequest {
    /// SIGHUP was sent to this pid.
    Signalled(i32),
    /// The pid file is missing or stale: no rmilter runs with it. The
    /// change takes effect when rmilter starts.
    NotRunning(PathBuf),
    /// No `pid_file` is configured: reload by hand.
    NoPidFile,
}

/// Send SIGHUP to the rmilter that holds the pid file's lock.
pub fn request_reload(pid_file: Option<&Path>) -> anyhow::Result<ReloadRequest> {
    let Some(path) = pid_file else {
        return Ok(ReloadRequest::NoPidFile);
    };
    let file = match open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ReloadRequest::NotRunning(path.to_path_buf()));
        }
        Err(e) => anyhow::bail!("pid file {}: {e}", path.display()),
    };
    let mut file = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds the lock: a stale file.
        Ok(_) => return Ok(ReloadRequest::NotRunning(path.to_path_buf())),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, errno)) => anyhow::bail!("pid file {}: cannot lock: {errno}", path.display()),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("pid file {}: {e}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| anyhow::anyhow!("pid file {}: no pid in {:?}", path.display(), text))?;
    // Never signal a process that is not rmilter.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "rmilter" {
        anyhow::bail!(
            "pid file {}: process {pid} is {:?}, not rmilter; not signalling it",
            path.display(),
            comm.trim()
        );
    }
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|e| anyhow::anyhow!("cannot signal rmilter (pid {pid}): {e}"))?;
    Ok(ReloadRequest::Signalled(pid))
}
