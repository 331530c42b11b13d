//! The key lifecycle operations behind `rmilter keys rotate`, `activate`,
//! `retire`, `status` and `check`, and the managed keys the daemon signs
//! with.
//!
//! A managed domain is a `[[key]]` row with `domain` and `dir`: the
//! directory holds the domain's key files and `state.toml` (see
//! [`super::state`]). Its active keys sign, exactly like `[[key]]` rows with
//! a `file`, which keep working unchanged ("static" keys: always signing,
//! never changed by these commands). Every change takes the directory's
//! lock, writes files crash-safely, and never makes a key sign whose record
//! `rmilter keys check` has not found in the DNS (unless forced).

use super::check::{Checker, Verdict, VerdictJson, record_name};
use super::files::{self, Owner, crash_point};
use super::state::{self, Change, DomainState, KeyState, LockError, ManagedKey, StateError};
use super::{GenerateError, KeyError, LoadedKey, private_key_pem, txt_value, zone_entry};
use crate::config::{Config, KeyAlgorithm, KeySpec, ManagedDomain};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a command waits for another one holding a directory's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(
        "{domain} is not a managed domain in {config}: add a [[key]] table with domain = \"{domain}\" and dir = \"DIR\""
    )]
    NotManaged { domain: String, config: String },
    #[error("{domain}: no keys in {config}")]
    NoKeys { domain: String, config: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Transition(#[from] state::TransitionError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Unsafe(String),
    #[error("{0}")]
    Nothing(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LifecycleError + '_ {
    move |error| LifecycleError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn owner(config: &Config) -> Owner {
    config
        .lifecycle
        .owner
        .as_ref()
        .map(|(_, uid, gid)| (*uid, *gid))
}

fn trusted(config: &Config) -> Option<u32> {
    config.lifecycle.owner.as_ref().map(|(_, uid, _)| *uid)
}

fn managed<'a>(config: &'a Config, domain: &str) -> Result<&'a ManagedDomain, LifecycleError> {
    config
        .managed
        .iter()
        .find(|m| m.domain == domain)
        .ok_or_else(|| LifecycleError::NotManaged {
            domain: domain.to_string(),
            config: config.source.to_string(),
        })
}

/// The key table row of a managed key. A key file that is a symlink out
/// of the key directory is refused.
pub fn key_spec(m: &ManagedDomain, key: &ManagedKey) -> Result<KeySpec, String> {
    let path = m.dir.join(&key.file);
    files::check_inside(&m.dir, &path)?;
    Ok(KeySpec {
        name: m.name.clone(),
        domain: m.domain.clone(),
        domains: Vec::new(),
        selector: key.selector.clone(),
        path,
        algorithm: Some(key.algorithm),
        origin: format!("{} (selector {})", m.origin, key.selector),
    })
}

/// The key table rows of every active managed key, for the daemon:
/// `Err((origin, message))` names the `[[key]]` row whose state is unusable.
pub fn signing_specs(config: &Config) -> Result<Vec<KeySpec>, (String, String)> {
    let mut specs = Vec::new();
    for m in &config.managed {
        // The daemon's `user` may own the key directory: it switches to
        // that user after loading, and reloads run as it.
        let st = state::read(&m.dir, &m.domain, config.run_as.as_ref().map(|r| r.uid))
            .map_err(|e| (format!("{}.dir", m.origin), e.to_string()))?;
        for key in st.signing() {
            specs.push(key_spec(m, key).map_err(|e| (m.origin.clone(), e))?);
        }
    }
    Ok(specs)
}

/// One key as `rotate` reports it: what to publish.
#[derive(Debug, Clone, Serialize)]
pub struct RotatedKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    pub bits: usize,
    pub state: &'static str,
    /// Whether this run made the key (false: an earlier run did, and the
    /// key is still pending).
    pub new: bool,
    pub file: PathBuf,
    pub record_name: String,
    pub record_value: String,
    pub zone_entry: String,
}

/// Start a rotation of `domain`: make sure a pending key exists for each
/// algorithm (the one given, else those of the active keys, else RSA and
/// Ed25519). A pending key of that algorithm already there is reused, so a
/// re-run — also after a crash — completes the rotation instead of adding
/// keys.
///
/// The state is written before the key file: a crash in between leaves a
/// pending entry without a file (which never signs), and the next run
/// writes the file.
pub fn rotate(
    config: &Config,
    domain: &str,
    algorithm: Option<KeyAlgorithm>,
    bits: Option<u32>,
    now: SystemTime,
) -> Result<Vec<RotatedKey>, LifecycleError> {
    let m = managed(config, domain)?;
    let (owner, trusted) = (owner(config), trusted(config));
    let rsa_bits = bits.unwrap_or(config.lifecycle.rsa_bits);
    if ![2048, 3072, 4096].contains(&rsa_bits) {
        return Err(GenerateError::Bits(rsa_bits).into());
    }
    files::ensure_dir(&m.dir, owner).map_err(io(&m.dir))?;
    let lock = state::lock(&m.dir, LOCK_WAIT, owner)?;
    files::remove_stale_temps(&m.dir).map_err(io(&m.dir))?;
    let mut st = state::read(&m.dir, &m.domain, trusted)?;

    let algorithms = match algorithm {
        Some(a) => vec![a],
        None => {
            let mut active: Vec<KeyAlgorithm> = st.signing().map(|k| k.algorithm).collect();
            active.extend(
                config
                    .keys
                    .iter()
                    .filter(|k| k.domain == m.domain)
                    .filter_map(|k| k.algorithm),
            );
            if active.is_empty() {
                // The recommended pair: RSA for every verifier, Ed25519 for the future.
                vec![KeyAlgorithm::Rsa, KeyAlgorithm::Ed25519]
            } else {
                [KeyAlgorithm::Rsa, KeyAlgorithm::Ed25519]
                    .into_iter()
                    .filter(|a| active.contains(a))
                    .collect()
            }
        }
    };

    let mut targets: Vec<(String, bool)> = Vec::new();
    for alg in algorithms {
        if let Some(k) = st
            .keys
            .iter()
            .find(|k| k.state == KeyState::Pending && k.algorithm == alg)
        {
            targets.push((k.selector.clone(), false));
            continue;
        }
        let selector = unique_selector(config, m, &st, alg, now);
        let bits = match alg {
            KeyAlgorithm::Rsa => rsa_bits,
            KeyAlgorithm::Ed25519 => 256,
        };
        st.add_pending(&selector, alg, bits, &format!("{selector}.pem"), now);
        targets.push((selector, true));
    }
    if targets.iter().any(|(_, new)| *new) {
        state::write(&lock, &st, owner).map_err(io(&m.dir.join(state::STATE_FILE)))?;
        crash_point("rotate:state-written");
    }

    let mut out = Vec::new();
    for (selector, new) in targets {
        let key = st.get(&selector).expect("target is in the state").clone();
        let spec = key_spec(m, &key).map_err(LifecycleError::Unsafe)?;
        let missing = matches!(std::fs::symlink_metadata(&spec.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if missing {
            let pem = private_key_pem(key.algorithm, key.bits)?;
            files::write_new(&m.dir, &key.file, pem.as_bytes(), owner).map_err(|error| {
                GenerateError::Io {
                    path: spec.path.clone(),
                    error,
                }
            })?;
            crash_point("rotate:key-written");
        }
        let loaded = LoadedKey::load_trusting(&spec, trusted)?;
        out.push(RotatedKey {
            domain: m.domain.clone(),
            selector: key.selector.clone(),
            algorithm: key.algorithm.key_type(),
            bits: loaded.bits,
            state: key.state.as_str(),
            new: new || missing,
            file: spec.path.clone(),
            record_name: record_name(&m.domain, &key.selector),
            record_value: loaded.txt_value(),
            zone_entry: zone_entry(&m.domain, &key.selector, &loaded.txt_value()),
        });
    }
    drop(lock);
    Ok(out)
}

/// The template's selector for `algorithm` today, with `-2`, `-3`, …
/// appended while it is taken (in the state, by a static key of the
/// domain, or by a file in the directory).
fn unique_selector(
    config: &Config,
    m: &ManagedDomain,
    st: &DomainState,
    algorithm: KeyAlgorithm,
    now: SystemTime,
) -> String {
    let base = config.lifecycle.selector(algorithm, &state::date(now));
    let taken = |s: &str| {
        st.get(s).is_some()
            || config
                .keys
                .iter()
                .any(|k| k.domain == m.domain && k.selector == s)
            || std::fs::symlink_metadata(m.dir.join(format!("{s}.pem"))).is_ok()
    };
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|s| !taken(s))
        .expect("some suffix is free")
}

/// One key `activate` considered.
#[derive(Debug, Clone, Serialize)]
pub struct ActivatedKey {
    pub selector: String,
    pub algorithm: &'static str,
    /// State before the command.
    pub from: &'static str,
    /// `activated`, `already active` or `refused`.
    pub outcome: &'static str,
    pub dns: VerdictJson,
    #[serde(skip)]
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActivateOutcome {
    pub domain: String,
    /// Nothing changed because a key's record did not pass the check (or
    /// its file cannot be used).
    pub refused: bool,
    /// Whether the state changed, so a running daemon must reload.
    pub changed: bool,
    pub keys: Vec<ActivatedKey>,
    /// Active keys that a newer active key of the same algorithm overlaps:
    /// `rmilter keys retire --domain D` retires them.
    pub overlap: Vec<String>,
    /// Every active key after the command.
    pub active: Vec<String>,
}

/// Make pending keys of `domain` active (all of them, or `selector`, which
/// may also be a retiring key to roll back to). Refused, with nothing
/// changed, unless every key's record passes the DNS check, or `force`.
/// A key whose file cannot be loaded is refused even with `force`: the
/// daemon would refuse the reload.
pub async fn activate(
    config: &Config,
    checker: &Checker,
    domain: &str,
    selector: Option<&str>,
    force: bool,
    now: SystemTime,
) -> Result<ActivateOutcome, LifecycleError> {
    let m = managed(config, domain)?;
    let (owner, trusted) = (owner(config), trusted(config));
    files::ensure_dir(&m.dir, owner).map_err(io(&m.dir))?;
    let lock = state::lock(&m.dir, LOCK_WAIT, owner)?;
    files::remove_stale_temps(&m.dir).map_err(io(&m.dir))?;
    let mut st = state::read(&m.dir, &m.domain, trusted)?;

    let targets: Vec<ManagedKey> = match selector {
        Some(s) => {
            let key = st.get(s).cloned().ok_or(state::TransitionError::Unknown {
                domain: m.domain.clone(),
                selector: s.to_string(),
            })?;
            if key.state == KeyState::Retired {
                return Err(state::TransitionError::RetiredForever {
                    selector: s.to_string(),
                }
                .into());
            }
            vec![key]
        }
        None => st
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Pending)
            .cloned()
            .collect(),
    };

    let mut keys = Vec::new();
    for key in &targets {
        let name = record_name(&m.domain, &key.selector);
        let verdict = if key.state == KeyState::Active {
            Verdict::Ok
        } else {
            match key_spec(m, key).map_err(Verdict::KeyFile).and_then(|spec| {
                LoadedKey::load_trusting(&spec, trusted)
                    .map_err(|e| Verdict::KeyFile(interrupted_hint(&m.domain, key, e)))
            }) {
                Ok(loaded) => {
                    checker
                        .check(&m.domain, &key.selector, key.algorithm, &loaded.public_key)
                        .await
                }
                Err(verdict) => verdict,
            }
        };
        keys.push(ActivatedKey {
            selector: key.selector.clone(),
            algorithm: key.algorithm.key_type(),
            from: key.state.as_str(),
            outcome: "",
            dns: VerdictJson::new(&verdict, &name),
            verdict,
        });
    }
    let refused = keys
        .iter()
        .any(|k| matches!(k.verdict, Verdict::KeyFile(_)) || (!force && !k.verdict.is_ok()));
    let mut changed = false;
    for k in &mut keys {
        k.outcome = if refused {
            "refused"
        } else {
            match st.activate(&k.selector, now)? {
                Change::Moved(..) => {
                    changed = true;
                    "activated"
                }
                Change::Already(_) => "already active",
            }
        };
    }
    if changed {
        state::write(&lock, &st, owner).map_err(io(&m.dir.join(state::STATE_FILE)))?;
        crash_point("activate:state-written");
    }
    drop(lock);
    Ok(ActivateOutcome {
        domain: m.domain.clone(),
        refused,
        changed,
        keys,
        overlap: st.superseded(),
        active: st.signing().map(|k| k.selector.clone()).collect(),
    })
}

/// A key file error, with a hint when the file of a pending key is
/// missing (a rotate that was interrupted before it wrote the key).
fn interrupted_hint(domain: &str, key: &ManagedKey, e: KeyError) -> String {
    match e {
        KeyError::Missing(_) if key.state == KeyState::Pending => format!(
            "{e} (an interrupted rotate? run `rmilter keys rotate --domain {domain} --algorithm {}` again)",
            key.algorithm.key_type()
        ),
        e => e.to_string(),
    }
}

/// One key `retire` changed.
#[derive(Debug, Clone, Serialize)]
pub struct RetiredKey {
    pub selector: String,
    pub algorithm: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub changed: bool,
    pub record_name: String,
    /// For a retiring key: until when its record must stay published.
    pub keep_record_until: Option<String>,
    /// For a retired key: the revocation record that may replace its record.
    pub revocation_value: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetireOutcome {
    pub domain: String,
    pub keys: Vec<RetiredKey>,
    /// Whether the signing keys changed, so a running daemon must reload.
    pub signing_changed: bool,
    /// Every active key after the command.
    pub active: Vec<String>,
}

/// Retire `selector` of `domain` one step (active → retiring, retiring →
/// retired, pending → retired). Without a selector: every active key that
/// a newer active key of its algorithm overlaps, and every retiring key
/// whose `keys.retiring_period` has passed.
pub fn retire(
    config: &Config,
    domain: &str,
    selector: Option<&str>,
    force: bool,
    now: SystemTime,
) -> Result<RetireOutcome, LifecycleError> {
    let m = managed(config, domain)?;
    let (owner, trusted) = (owner(config), trusted(config));
    let period = config.lifecycle.retiring_period;
    files::ensure_dir(&m.dir, owner).map_err(io(&m.dir))?;
    let lock = state::lock(&m.dir, LOCK_WAIT, owner)?;
    files::remove_stale_temps(&m.dir).map_err(io(&m.dir))?;
    let mut st = state::read(&m.dir, &m.domain, trusted)?;
    let static_keys = config.keys.iter().filter(|k| k.domain == m.domain).count();

    let targets: Vec<String> = match selector {
        Some(s) => vec![s.to_string()],
        None => {
            let mut t = st.superseded();
            t.extend(
                st.keys
                    .iter()
                    .filter(|k| k.state == KeyState::Retiring && k.since() + period <= now)
                    .map(|k| k.selector.clone()),
            );
            if t.is_empty() {
                return Err(LifecycleError::Nothing(format!(
                    "{}: nothing to retire: no active key is overlapped by a newer active key of its algorithm, and no key has been retiring for {}; name one with --selector",
                    m.domain,
                    humantime::format_duration(period)
                )));
            }
            t
        }
    };
    let mut keys = Vec::new();
    let mut signing_changed = false;
    for s in &targets {
        let change = st.retire(s, now, period, static_keys, force)?;
        let key = st.get(s).expect("retired key exists");
        let (from, to) = match change {
            Change::Moved(from, to) => (from, to),
            Change::Already(state) => (state, state),
        };
        signing_changed |= from.signs() != to.signs();
        keys.push(RetiredKey {
            selector: s.clone(),
            algorithm: key.algorithm.key_type(),
            from: from.as_str(),
            to: to.as_str(),
            changed: change.changed(),
            record_name: record_name(&m.domain, s),
            keep_record_until: (to == KeyState::Retiring)
                .then(|| state::timestamp(key.since() + period)),
            revocation_value: (to == KeyState::Retired)
                .then(|| super::revocation_value(key.algorithm)),
        });
    }
    if keys.iter().any(|k| k.changed) {
        state::write(&lock, &st, owner).map_err(io(&m.dir.join(state::STATE_FILE)))?;
        crash_point("retire:state-written");
    }
    drop(lock);
    Ok(RetireOutcome {
        domain: m.domain.clone(),
        keys,
        signing_changed,
        active: st.signing().map(|k| k.selector.clone()).collect(),
    })
}

/// One key as `status` and `check` show it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    pub bits: Option<usize>,
    /// pending, active, retiring, retired, or `static` for a `[[key]]` row
    /// with a file (always signs).
    pub state: &'static str,
    pub signs: bool,
    /// When the key entered its state (managed keys).
    pub since: Option<String>,
    pub file: PathBuf,
    pub record_name: String,
    /// The record to publish (or, for a retired key, the revocation record).
    pub record_value: Option<String>,
    /// The DNS verdict, when the DNS was asked.
    pub dns: Option<VerdictJson>,
    /// Whether this key needs attention: its record is not right while the
    /// key needs it (retired keys never count), or its file is unusable.
    pub problem: bool,
    #[serde(skip)]
    pub verdict: Option<Verdict>,
}

/// The keys of every domain (or `domain`): static `[[key]]` rows and
/// managed keys, with the DNS verdict of each when `checker` is given.
pub async fn status(
    config: &Config,
    checker: Option<&Checker>,
    domain: Option<&str>,
) -> Result<Vec<StatusRow>, LifecycleError> {
    let trusted = trusted(config);
    let wanted = |d: &str| domain.is_none_or(|w| w == d);
    // (spec, managed key)
    // A `%` key gives a row per domain it is known to sign for.
    let mut keys: Vec<(KeySpec, Option<ManagedKey>)> = config
        .keys_by_domain()
        .into_iter()
        .filter(|k| wanted(&k.domain))
        .map(|k| (k, None))
        .collect();
    for m in config.managed.iter().filter(|m| wanted(&m.domain)) {
        let st = state::read(&m.dir, &m.domain, trusted)?;
        for key in st.keys {
            let spec = match key_spec(m, &key) {
                Ok(spec) => spec,
                Err(e) => return Err(LifecycleError::Unsafe(e)),
            };
            keys.push((spec, Some(key)));
        }
    }
    if let Some(d) = domain
        && keys.is_empty()
        && !config.managed.iter().any(|m| m.domain == d)
    {
        return Err(LifecycleError::NoKeys {
            domain: d.to_string(),
            config: config.source.to_string(),
        });
    }
    let mut rows = Vec::with_capacity(keys.len());
    for (spec, managed_key) in keys {
        let name = record_name(&spec.domain, &spec.selector);
        let state = managed_key.as_ref().map(|k| k.state);
        let loaded = LoadedKey::load_trusting(&spec, trusted).map_err(|e| match &managed_key {
            Some(k) => interrupted_hint(&spec.domain, k, e),
            None => e.to_string(),
        });
        let verdict = match (&loaded, checker) {
            (Err(e), _) => Some(Verdict::KeyFile(e.clone())),
            (Ok(key), Some(checker)) => Some(
                checker
                    .check(&spec.domain, &spec.selector, key.algorithm, &key.public_key)
                    .await,
            ),
            (Ok(_), None) => None,
        };
        let retired = state == Some(KeyState::Retired);
        let problem = !retired && verdict.as_ref().is_some_and(|v| !v.is_ok());
        let algorithm = match (&loaded, &managed_key) {
            (Ok(k), _) => Some(k.algorithm),
            (Err(_), Some(k)) => Some(k.algorithm),
            (Err(_), None) => spec.algorithm,
        };
        rows.push(StatusRow {
            domain: spec.domain.clone(),
            selector: spec.selector.clone(),
            algorithm: algorithm.map_or("?", KeyAlgorithm::key_type),
            bits: loaded.as_ref().ok().map(|k| k.bits),
            state: state.map_or("static", KeyState::as_str),
            signs: state.is_none_or(KeyState::signs),
            since: managed_key.as_ref().map(|k| state::timestamp(k.since())),
            file: spec.path.clone(),
            record_value: match (&loaded, retired) {
                (_, true) => algorithm.map(super::revocation_value),
                (Ok(k), false) => Some(txt_value(k.algorithm, &k.public_key)),
                (Err(_), false) => None,
            },
            record_name: name.clone(),
            dns: verdict.as_ref().map(|v| VerdictJson::new(v, &name)),
            problem,
            verdict,
        });
    }
    rows.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
    Ok(rows)
}
