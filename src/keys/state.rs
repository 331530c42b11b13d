//! The key lifecycle state of one managed signing domain, kept in
//! `state.toml` in the domain's key directory, next to the key files.
//!
//! Each key is `pending` (generated; its record may not be published yet;
//! never signs) → `active` (signs) → `retiring` (no longer signs; its record
//! must stay published while mail signed with it may still be verified) →
//! `retired` (the record may be removed or replaced by the revocation
//! record `p=`). A pending key may be retired without ever signing, and a
//! retiring key may be activated again (a rollback: its record is still
//! published).
//!
//! The file is human-readable TOML, replaced atomically on every change
//! (see [`super::files`]), and changed only under the directory's lock, so
//! two `rmilter keys` runs never interleave. The daemon reads it without
//! the lock at start and on reload: a rename is atomic, so it sees either
//! the old or the new state.

use super::files::{self, Owner};
use crate::config::{KeyAlgorithm, check_selector};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Name of the state file in a managed key directory.
pub const STATE_FILE: &str = "state.toml";
/// Name of the lock file in a managed key directory.
pub const LOCK_FILE: &str = ".lock";
/// Version of the state file format.
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyState {
    Pending,
    Active,
    Retiring,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }

    fn parse(text: &str) -> Option<KeyState> {
        Some(match text {
            "pending" => KeyState::Pending,
            "active" => KeyState::Active,
            "retiring" => KeyState::Retiring,
            "retired" => KeyState::Retired,
            _ => return None,
        })
    }

    /// Whether keys in this state sign mail.
    pub fn signs(self) -> bool {
        self == KeyState::Active
    }

    /// Whether the key's record must be published in this state.
    pub fn needs_record(self) -> bool {
        self != KeyState::Retired
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key of a managed domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKey {
    pub selector: String,
    pub algorithm: KeyAlgorithm,
    /// RSA modulus size; 256 for Ed25519.
    pub bits: u32,
    /// File name of the private key, inside the key directory.
    pub file: String,
    pub state: KeyState,
    pub created: SystemTime,
    pub activated: Option<SystemTime>,
    pub retiring: Option<SystemTime>,
    pub retired: Option<SystemTime>,
}

impl ManagedKey {
    /// When the key entered its current state.
    pub fn since(&self) -> SystemTime {
        match self.state {
            KeyState::Pending => Some(self.created),
            KeyState::Active => self.activated,
            KeyState::Retiring => self.retiring,
            KeyState::Retired => self.retired,
        }
        .unwrap_or(self.created)
    }
}

/// The state of one managed domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainState {
    pub domain: String,
    pub keys: Vec<ManagedKey>,
}

/// A state change that was made, or found already made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key moved from the first state to the second.
    Moved(KeyState, KeyState),
    /// The key already was in this state; nothing changed.
    Already(KeyState),
}

impl Change {
    pub fn changed(self) -> bool {
        matches!(self, Change::Moved(..))
    }
}

/// Why a state change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("{domain} has no key with selector {selector}")]
    Unknown { domain: String, selector: String },
    #[error(
        "{selector} is retired and never signs again (its record may be gone); rotate a new key"
    )]
    RetiredForever { selector: String },
    #[error(
        "retiring {selector} would leave {domain} without an active key, so its mail would \
         leave unsigned; activate another key first (or pass --force)"
    )]
    LastActive { domain: String, selector: String },
    #[error(
        "{selector} has been retiring only since {since}; its record must stay published \
         until {until} while mail signed with it may still be verified (or pass --force)"
    )]
    TooEarly {
        selector: String,
        since: String,
        until: String,
    },
}

impl DomainState {
    pub fn empty(domain: &str) -> DomainState {
        DomainState {
            domain: domain.to_string(),
            keys: Vec::new(),
        }
    }

    pub fn get(&self, selector: &str) -> Option<&ManagedKey> {
        self.keys.iter().find(|k| k.selector == selector)
    }

    fn get_mut(&mut self, selector: &str) -> Result<&mut ManagedKey, TransitionError> {
        let domain = self.domain.clone();
        self.keys
            .iter_mut()
            .find(|k| k.selector == selector)
            .ok_or_else(|| TransitionError::Unknown {
                domain,
                selector: selector.to_string(),
            })
    }

    /// The keys that sign: every active key.
    pub fn signing(&self) -> impl Iterator<Item = &ManagedKey> {
        self.keys.iter().filter(|k| k.state.signs())
    }

    /// Active keys for which a more recently activated key of the same
    /// algorithm is active too: the old halves of an overlap.
    ///
    /// Times are kept to the second, so two keys activated in the same
    /// second (a script running rotate and activate --force back to back)
    /// are ordered by their place in the state: keys are appended as they
    /// are created.
    pub fn superseded(&self) -> Vec<String> {
        let signing: Vec<(usize, &ManagedKey)> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.state.signs())
            .collect();
        let order =
            |(i, k): &(usize, &ManagedKey)| (k.activated.unwrap_or(k.created), k.created, *i);
        signing
            .iter()
            .filter(|old| {
                signing
                    .iter()
                    .any(|new| new.1.algorithm == old.1.algorithm && order(new) > order(old))
            })
            .map(|(_, k)| k.selector.clone())
            .collect()
    }

    /// Add a pending key.
    pub fn add_pending(
        &mut self,
        selector: &str,
        algorithm: KeyAlgorithm,
        bits: u32,
        file: &str,
        now: SystemTime,
    ) {
        self.keys.push(ManagedKey {
            selector: selector.to_string(),
            algorithm,
            bits,
            file: file.to_string(),
            state: KeyState::Pending,
            created: now,
            activated: None,
            retiring: None,
            retired: None,
        });
    }

    /// pending → active, or retiring → active (a rollback).
    pub fn activate(&mut self, selector: &str, now: SystemTime) -> Result<Change, TransitionError> {
        let key = self.get_mut(selector)?;
        match key.state {
            KeyState::Pending | KeyState::Retiring => {
                let from = key.state;
                key.state = KeyState::Active;
                key.activated = Some(now);
                Ok(Change::Moved(from, KeyState::Active))
            }
            KeyState::Active => Ok(Change::Already(KeyState::Active)),
            KeyState::Retired => Err(TransitionError::RetiredForever {
                selector: selector.to_string(),
            }),
        }
    }

    /// active → retiring (refused when it is the domain's last signing key
    /// and `other_signing` is 0), retiring → retired (refused before
    /// `period` has passed), pending → retired. `force` lifts both refusals.
    pub fn retire(
        &mut self,
        selector: &str,
        now: SystemTime,
        period: Duration,
        other_signing: usize,
        force: bool,
    ) -> Result<Change, TransitionError> {
        let active_others =
            self.signing().filter(|k| k.selector != selector).count() + other_signing;
        let domain = self.domain.clone();
        let key = self.get_mut(selector)?;
        match key.state {
            KeyState::Active => {
                if active_others == 0 && !force {
                    return Err(TransitionError::LastActive {
                        domain,
                        selector: selector.to_string(),
                    });
                }
                key.state = KeyState::Retiring;
                key.retiring = Some(now);
                Ok(Change::Moved(KeyState::Active, KeyState::Retiring))
            }
            KeyState::Retiring => {
                let since = key.since();
                let until = since + period;
                if now < until && !force {
                    return Err(TransitionError::TooEarly {
                        selector: selector.to_string(),
                        since: timestamp(since),
                        until: timestamp(until),
                    });
                }
                key.state = KeyState::Retired;
                key.retired = Some(now);
                Ok(Change::Moved(KeyState::Retiring, KeyState::Retired))
            }
            KeyState::Pending => {
                key.state = KeyState::Retired;
                key.retired = Some(now);
                Ok(Change::Moved(KeyState::Pending, KeyState::Retired))
            }
            KeyState::Retired => Ok(Change::Already(KeyState::Retired)),
        }
    }
}

/// RFC 3339 UTC time, seconds precision: `2026-05-22T10:00:00Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Today's date as YYYYMMDD (UTC), for selector templates.
pub fn date(t: SystemTime) -> String {
    timestamp(t)[..10].replace('-', "")
}

/// A state file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    version: u32,
    domain: String,
    #[serde(default, rename = "key", skip_serializing_if = "Vec::is_empty")]
    keys: Vec<RawStateKey>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStateKey {
    selector: String,
    algorithm: String,
    bits: u32,
    file: String,
    state: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retiring: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired: Option<String>,
}

const HEADER: &str = "\
# rmilter key state: which keys of this domain sign. Written by `rmilter keys
# rotate`, `activate` and `retire`; read by rmilter at start and on reload.
# pending: not signing yet (publish its record, then `rmilter keys activate`)
# active: signing; retiring: not signing, record must stay published;
# retired: the record may be removed or replaced by the revocation record.
";

/// The state file text of `state`.
pub fn to_text(state: &DomainState) -> String {
    let raw = RawState {
        version: VERSION,
        domain: state.domain.clone(),
        keys: state
            .keys
            .iter()
            .map(|k| RawStateKey {
                selector: k.selector.clone(),
                algorithm: k.algorithm.key_type().to_string(),
                bits: k.bits,
                file: k.file.clone(),
                state: k.state.as_str().to_string(),
                created: timestamp(k.created),
                activated: k.activated.map(timestamp),
                retiring: k.retiring.map(timestamp),
                retired: k.retired.map(timestamp),
            })
            .collect(),
    };
    let body = toml::to_string(&raw).expect("the state serializes");
    format!("{HEADER}\n{body}")
}

/// Parse state file text; `domain` is the domain the configuration says
/// the directory belongs to.
pub fn from_text(path: &Path, text: &str, domain: &str) -> Result<DomainState, StateError> {
    let err = |message: String| StateError {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawState = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                format!("line {}: ", before.matches('\n').count() + 1)
            })
            .unwrap_or_default();
        err(format!("{at}{}", e.message().trim().replace('\n', " ")))
    })?;
    if raw.version != VERSION {
        return Err(err(format!(
            "version {} is not understood (this rmilter reads version {VERSION})",
            raw.version
        )));
    }
    if raw.domain != domain {
        return Err(err(format!(
            "holds the keys of {}, but the configuration uses it for {domain}",
            raw.domain
        )));
    }
    let mut keys: Vec<ManagedKey> = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = |m: String| err(format!("key[{i}]: {m}"));
        check_selector(&k.selector).map_err(at)?;
        if keys.iter().any(|o| o.selector == k.selector) {
            return Err(at(format!("selector {} is listed twice", k.selector)));
        }
        let algorithm = crate::config::parse_algorithm(&k.algorithm).map_err(at)?;
        if !files::is_plain_name(&k.file) {
            return Err(at(format!(
                "file {:?} must be a file name inside the key directory",
                k.file
            )));
        }
        let state = KeyState::parse(&k.state).ok_or_else(|| {
            at(format!(
                "state {:?}: expected pending, active, retiring or retired",
                k.state
            ))
        })?;
        let time = |name: &str, v: &str| {
            humantime::parse_rfc3339(v)
                .map_err(|_| at(format!("{name} {v:?} is not an RFC 3339 UTC time")))
        };
        let optional = |name: &str, v: &Option<String>| -> Result<Option<SystemTime>, StateError> {
            v.as_deref().map(|v| time(name, v)).transpose()
        };
        keys.push(ManagedKey {
            created: time("created", &k.created)?,
            activated: optional("activated", &k.activated)?,
            retiring: optional("retiring", &k.retiring)?,
            retired: optional("retired", &k.retired)?,
            selector: k.selector,
            algorithm,
            bits: k.bits,
            file: k.file,
            state,
        });
    }
    Ok(DomainState {
        domain: raw.domain,
        keys,
    })
}

/// Read the state of the managed directory `dir` for `domain`. A missing
/// directory or state file is an empty state (no keys yet). The file must
/// be a regular file (not a symlink) that only its owner (root or this
/// process's user, or `trusted`) can write.
pub fn read(dir: &Path, domain: &str, trusted: Option<u32>) -> Result<DomainState, StateError> {
    let path = dir.join(STATE_FILE);
    let err = |message: String| StateError {
        path: path.clone(),
        message,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DomainState::empty(domain));
        }
        Err(e) => return Err(err(e.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(err(
            "not a regular file (a symlink or other file is refused)".to_string(),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(err(format!(
            "writable by group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid && Some(meta.uid()) != trusted {
        return Err(err(format!(
            "owned by uid {}, not by root or the user rmilter runs as (uid {euid})",
            meta.uid()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    from_text(&path, &text, domain)
}

/// Held while a `rmilter keys` command changes a managed directory.
pub struct DirLock {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl DirLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{0}: another `rmilter keys` command is changing this key directory; try again when it has finished"
    )]
    Busy(PathBuf),
    #[error("{path}: cannot lock: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Take the exclusive lock of the managed directory `dir`, waiting up to
/// `wait` for another command to finish.
pub fn lock(dir: &Path, wait: Duration, owner: Owner) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + wait;
    let mut file = files::open_nofollow(&path, owner).map_err(|error| LockError::Io {
        path: path.clone(),
        error,
    })?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                return Ok(DirLock {
                    dir: dir.to_path_buf(),
                    _lock: lock,
                });
            }
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    return Err(LockError::Busy(path));
                }
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => {
                return Err(LockError::Io {
                    path,
                    error: errno.into(),
                });
            }
        }
    }
}

/// Replace the state file of the locked directory.
pub fn write(lock: &DirLock, state: &DomainState, owner: Owner) -> std::io::Result<PathBuf> {
    files::replace(lock.dir(), STATE_FILE, to_text(state).as_bytes(), owner)
}

#[cfg(test)]
mod tests;
