//! Crash-safe file writes for key directories: a new file is written to a
//! private temporary file (mode 0600, O_EXCL, random name) in the same
//! directory, flushed to disk, given its owner, and only then linked to its
//! name (never replacing anything) or renamed over the old version; the
//! directory is flushed after. A kill at any point leaves either the old
//! file or the complete new one, plus at most a stray temporary file that
//! the next locked run removes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Prefix and suffix of the temporary files written here.
const TEMP_PREFIX: &str = ".rmilter-";
const TEMP_SUFFIX: &str = ".tmp";

/// Who should own created files: (uid, gid), applied only when running as
/// root.
pub type Owner = Option<(u32, u32)>;

/// Test hook: in a debug build, `RMILTER_CRASH_AT=POINT` kills the process
/// with SIGKILL when it reaches `POINT`, so tests can show that a crash
/// between two steps leaves consistent files. Release builds ignore it.
pub(crate) fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("RMILTER_CRASH_AT").is_some_and(|v| v == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; never continue past a crash point.
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chown(file: &File, owner: Owner) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner
        && as_root()
    {
        nix::unistd::fchown(file, Some(uid.into()), Some(gid.into()))?;
    }
    Ok(())
}

/// Create `dir` and any missing parents with mode 0700, giving each one
/// created here to `owner`. An existing directory is left as it is.
pub fn ensure_dir(dir: &Path, owner: Owner) -> std::io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path.to_path_buf());
        cursor = path.parent();
    }
    for path in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {
                let handle = File::open(path)?;
                chown(&handle, owner)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    Ok(())
}

/// Flush a directory's entries (a new link or rename) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn temp_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    // tempfile creates with O_CREAT|O_EXCL and mode 0600 under a random name.
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
}

/// Write `bytes` to a temporary file in `dir`, flushed and owned by `owner`.
/// `crash` names the test crash point reached half-way through the write.
fn write_temp(
    dir: &Path,
    bytes: &[u8],
    owner: Owner,
    crash: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    let mut temp = temp_in(dir)?;
    let half = bytes.len() / 2;
    temp.write_all(&bytes[..half])?;
    temp.flush()?;
    crash_point(crash);
    temp.write_all(&bytes[half..])?;
    temp.as_file().sync_all()?;
    chown(temp.as_file(), owner)?;
    Ok(temp)
}

/// Create `dir/name` holding `bytes` (mode 0600); an existing file or
/// symlink of that name is never replaced (`AlreadyExists`).
pub fn write_new(dir: &Path, name: &str, bytes: &[u8], owner: Owner) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let temp = write_temp(dir, bytes, owner, "key:temp-half-written")?;
    crash_point("key:temp-written");
    // link(2), or renameat2(RENAME_NOREPLACE): fails when `path` exists.
    temp.persist_noclobber(&path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Replace `dir/name` with `bytes` (mode 0600) atomically: readers see the
/// old or the new content, never a mix.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], owner: Owner) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let temp = write_temp(dir, bytes, owner, "state:temp-half-written")?;
    crash_point("state:temp-written");
    temp.persist(&path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Remove the temporary files an interrupted run left in `dir`. Call only
/// with the directory's lock held.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX)
            && name.ends_with(TEMP_SUFFIX)
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// A plain file name: no directory part, not hidden, not `.` or `..`.
pub fn is_plain_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none()
        && !name.starts_with('.')
        && !name.contains('/')
}

/// Refuse `path` when it is a symlink whose target lies outside `dir`
/// (after resolving every link): whoever controls that target would
/// control the key.
pub fn check_inside(dir: &Path, path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Missing files are reported by whoever opens them.
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_symlink() {
        return Ok(());
    }
    let real_dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if target.starts_with(&real_dir) {
        Ok(())
    } else {
        Err(format!(
            "{} is a symlink out of the key directory {} (to {}); refusing it",
            path.display(),
            dir.display(),
            target.display()
        ))
    }
}

/// Open `path` read-write without following a symlink, creating it with
/// mode 0600 (for lock files).
pub fn open_nofollow(path: &Path, owner: Owner) -> std::io::Result<File> {
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    if !existed {
        chown(&file, owner)?;
    }
    Ok(file)
}
