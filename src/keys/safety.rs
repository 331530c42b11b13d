//! Key file safety checks, after OpenDKIM's `RequireSafeKeys`: a private key
//! that others can read, or a file or directory that others can replace, is
//! refused at start and at reload, never discovered per message.

use super::KeyError;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// `trusted`: one more uid (besides root and this process's user) that may
/// own the file and its directories: `keys.owner`, when `rmilter keys`
/// runs as root on keys the daemon's user owns.
pub(super) fn check(path: &Path, trusted: Option<u32>) -> Result<(), KeyError> {
    let unsafe_ = |reason: String| KeyError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing(path.to_path_buf()));
        }
        Err(error) => {
            return Err(KeyError::Io {
                path: path.to_path_buf(),
                error,
            });
        }
    };
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
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid && Some(meta.uid()) != trusted {
        return Err(unsafe_(format!(
            "owned by uid {}, not by root or the user rmilter runs as (uid {euid})",
            meta.uid()
        )));
    }
    // Every directory on the way to the real file must be safe too: whoever
    // can write to one of them can swap the key.
    let real = std::fs::canonicalize(path).map_err(|error| KeyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    for dir in real.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|error| KeyError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let mode = meta.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o002 != 0 && !sticky {
            return Err(unsafe_(format!(
                "directory {} is writable by every user (mode {:04o})",
                dir.display(),
                mode & 0o7777
            )));
        }
        if mode & 0o020 != 0 && !sticky && meta.gid() != 0 && meta.gid() != egid {
            return Err(unsafe_(format!(
                "directory {} is writable by group {} (mode {:04o})",
                dir.display(),
                meta.gid(),
                mode & 0o7777
            )));
        }
        if meta.uid() != 0 && meta.uid() != euid && Some(meta.uid()) != trusted {
            return Err(unsafe_(format!(
                "directory {} is owned by uid {}, not by root or the user rmilter runs as",
                dir.display(),
                meta.uid()
            )));
        }
    }
    Ok(())
}
