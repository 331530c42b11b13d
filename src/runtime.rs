//! The loaded state the milter works with: the validated configuration and
//! the signing keys parsed from their files. Built by one loader for `run`,
//! `check-config` and reload; a message keeps the `Runtime` it started with
//! until it ends, so a reload never changes a message half-way.

use crate::config::{self, Config, ConfigError, Overrides};
use crate::keys;
use crate::sign::KeyTable;
use crate::verify::Verifier;
use std::path::Path;

pub struct Runtime {
    pub config: Config,
    pub keys: KeyTable,
    pub verifier: Verifier,
    /// One signature counter per key (see [`crate::metrics`]).
    pub key_counters: crate::metrics::KeyCounters,
    /// Which SASL logins may have which senders signed.
    pub logins: crate::sign::logins::LoginTable,
    /// What is probably a mistake but not an error (keys no signing rule
    /// names): printed by check-config, logged at start and reload.
    pub warnings: Vec<String>,
}

impl Runtime {
    /// Load the configuration (see [`config::load`]) and every key file.
    pub fn load(
        path: Option<&Path>,
        default_path: &Path,
        overrides: &Overrides,
    ) -> Result<Runtime, ConfigError> {
        Runtime::from_config(config::load(path, default_path, overrides)?)
    }

    /// Load the key files of a validated configuration.
    pub fn from_config(config: Config) -> Result<Runtime, ConfigError> {
        // Static `[[key]]` rows, then the active keys of managed directories.
        let mut specs = config.keys.clone();
        specs.extend(
            keys::lifecycle::signing_specs(&config).map_err(|(origin, message)| {
                ConfigError::Invalid {
                    file: config.source.to_string(),
                    key: origin,
                    message,
                }
            })?,
        );
        let mut seen = std::collections::HashMap::with_capacity(specs.len());
        if let Some((a, b)) = specs
            .iter()
            .find_map(|a| seen.insert((&a.domain, &a.selector), a).map(|b| (a, b)))
        {
            return Err(ConfigError::Invalid {
                file: config.source.to_string(),
                key: a.origin.clone(),
                message: format!(
                    "selector {} of {} is already used by {}",
                    a.selector, a.domain, b.origin
                ),
            });
        }
        // The daemon's `user` may own the key files: it runs as that user
        // after start, and reloads read them as it.
        let trusted = config.run_as.as_ref().map(|r| r.uid);
        let keys = keys::load_all_trusting(&specs, trusted).map_err(|(origin, e)| {
            ConfigError::Invalid {
                file: if origin.starts_with("--key") {
                    "command line".to_string()
                } else {
                    config.source.to_string()
                },
                key: origin,
                message: e.to_string(),
            }
        })?;
        let verifier = Verifier::new(&config.dns).map_err(|e| ConfigError::Invalid {
            file: config.source.to_string(),
            key: "dns".to_string(),
            message: format!("{e:#}"),
        })?;
        let keys = KeyTable::with_rules(keys, &config.signing);
        let logins =
            crate::sign::logins::LoginTable::load(&config.signing.logins).map_err(|message| {
                ConfigError::Invalid {
                    file: config.source.to_string(),
                    key: "signing.logins.sender_login_maps".to_string(),
                    message,
                }
            })?;
        let mut warnings = keys.warnings();
        warnings.extend(logins.warnings().iter().cloned());
        Ok(Runtime {
            key_counters: crate::metrics::KeyCounters::fresh(&keys),
            config,
            keys,
            verifier,
            logins,
            warnings,
        })
    }
}
