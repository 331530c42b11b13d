//! Key file safety checks, after OpenDKIM's `RequireSafeKeys`: a private key
//! that others can read, or a file, symlink or directory that others can
//! replace, is refused at start and at reload, never discovered per message.
//!
//! Every directory on the way to the real file is checked, and so is every
//! symlink on the way (its owner and the directories holding it): a link in
//! a directory others can write is as good as a key others can write. The
//! file itself is opened without following a symlink and checked through
//! the open descriptor (`fstat`), and the key is read from that descriptor,
//! so nothing can be swapped between the check and the read.

use super::KeyError;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most symlinks followed on the way to one key file (Linux allows 40).
const MAX_LINKS: usize = 16;

/// Who may own a key file, a symlink to it or a directory on the way.
struct Owners {
    euid: u32,
    egid: u32,
    trusted: Option<u32>,
}

impl Owners {
    fn allows(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid || Some(uid) == self.trusted
    }
}

/// Check `path` and read the key file it names.
///
/// `trusted`: one more uid (besides root and this process's user) that may
/// own the file, its symlinks and its directories: `keys.owner`, when
/// `rmilter keys` runs as root on keys the daemon's user owns.
pub(super) fn read(path: &Path, trusted: Option<u32>) -> Result<Vec<u8>, KeyError> {
    let io = |error: std::io::Error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            KeyError::Missing(path.to_path_buf())
        } else {
            KeyError::Io {
                path: path.to_path_buf(),
                error,
            }
        }
    };
    let unsafe_ = |reason: String| KeyError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let owners = Owners {
        euid: nix::unistd::geteuid().as_raw(),
        egid: nix::unistd::getegid().as_raw(),
        trusted,
    };
    std::fs::metadata(path).map_err(io)?;
    let absolute = std::path::absolute(path).map_err(io)?;
    let mut links = 0;
    check_links(&absolute, &owners, &mut links).map_err(|e| match e {
        Refusal::Io(error) => io(error),
        Refusal::Unsafe(reason) => unsafe_(reason),
    })?;
    // Every directory on the way to the real file must be safe too: whoever
    // can write to one of them can swap the key.
    let real = std::fs::canonicalize(path).map_err(io)?;
    if let Some(parent) = real.parent() {
        check_dirs(parent, &owners).map_err(|e| match e {
            Refusal::Io(error) => io(error),
            Refusal::Unsafe(reason) => unsafe_(reason),
        })?;
    }
    // The real file, opened without following a symlink; what is checked is
    // what is read (no second lookup by name).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(&real)
        .map_err(|error| {
            if error.raw_os_error() == Some(nix::libc::ELOOP) {
                unsafe_(format!("{} was replaced by a symlink", real.display()))
            } else {
                io(error)
            }
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(unsafe_("not a regular file".to_string()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(unsafe_(format!(
            "readable by every user (mode {mode:04o}); run: chmod 600 {}",
            path.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(unsafe_(format!(
            "writable by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display()
        )));
    }
    if !owners.allows(meta.uid()) {
        return Err(unsafe_(format!(
            "owned by uid {}, not by root or the user rmilter runs as (uid {})",
            meta.uid(),
            owners.euid
        )));
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem).map_err(io)?;
    Ok(pem)
}

enum Refusal {
    Io(std::io::Error),
    Unsafe(String),
}

impl From<std::io::Error> for Refusal {
    fn from(error: std::io::Error) -> Self {
        Refusal::Io(error)
    }
}

/// Every symlink met on the way along `path` (absolute): owned by an
/// allowed user, held by a safe directory chain, and its target checked the
/// same way.
fn check_links(path: &Path, owners: &Owners, links: &mut usize) -> Result<(), Refusal> {
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let meta = std::fs::symlink_metadata(&prefix)?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        *links += 1;
        if *links > MAX_LINKS {
            return Err(Refusal::Unsafe(format!(
                "more than {MAX_LINKS} symlinks on the way"
            )));
        }
        if !owners.allows(meta.uid()) {
            return Err(Refusal::Unsafe(format!(
                "symlink {} is owned by uid {}, not by root or the user rmilter runs as",
                prefix.display(),
                meta.uid()
            )));
        }
        let holder = prefix.parent().unwrap_or(Path::new("/"));
        check_dirs(&std::fs::canonicalize(holder)?, owners)?;
        let target = holder.join(std::fs::read_link(&prefix)?);
        check_links(&target, owners, links)?;
    }
    Ok(())
}

/// `dir` (a real path) and every directory above it: not writable by users
/// other than root, this process's user or `trusted` (a sticky directory
/// such as /tmp excepted), and owned by one of them.
fn check_dirs(dir: &Path, owners: &Owners) -> Result<(), Refusal> {
    for dir in dir.ancestors() {
        let meta = std::fs::metadata(dir)?;
        let mode = meta.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky {
            return Err(Refusal::Unsafe(format!(
                "directory {} is writable by every user (mode {:04o})",
                dir.display(),
                mode & 0o7777
            )));
        }
        if mode & 0o020 != 0 && !sticky && meta.gid() != 0 && meta.gid() != owners.egid {
            return Err(Refusal::Unsafe(format!(
                "directory {} is writable by group {} (mode {:04o})",
                dir.display(),
                meta.gid(),
                mode & 0o7777
            )));
        }
        if !owners.allows(meta.uid()) {
            return Err(Refusal::Unsafe(format!(
                "directory {} is owned by uid {}, not by root or the user rmilter runs as",
                dir.display(),
                meta.uid()
            )));
        }
    }
    Ok(())
}
