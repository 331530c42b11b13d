//! `rmilter keys generate` and `rotate`: a new private key written with
//! mode 0600 at creation (never chmod afterwards), through a temporary file
//! so a crash leaves no partial key, refusing to overwrite anything.

use super::files::{self, Owner};
use super::{KeyError, LoadedKey};
use crate::config::{KeyAlgorithm, KeySpec};
use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use std::path::{Path, PathBuf};

/// A key written by [`generate`].
pub struct GeneratedKey {
    pub path: PathBuf,
    pub key: LoadedKey,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("RSA keys must have 2048, 3072 or 4096 bits, not {0}")]
    Bits(u32),
    #[error("{0}: already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key generation failed")]
    Crypto,
    #[error("{0}")]
    Unsafe(String),
    #[error(transparent)]
    Load(#[from] KeyError),
}

/// A new private key as PKCS#8 PEM ("PRIVATE KEY").
pub fn private_key_pem(algorithm: KeyAlgorithm, bits: u32) -> Result<String, GenerateError> {
    let pkcs8 = match algorithm {
        KeyAlgorithm::Rsa => {
            let size = match bits {
                2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                other => return Err(GenerateError::Bits(other)),
            };
            let pair =
                aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| GenerateError::Crypto)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der =
                pair.as_der().map_err(|_| GenerateError::Crypto)?;
            der.as_ref().to_vec()
        }
        KeyAlgorithm::Ed25519 => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate()
                .map_err(|_| GenerateError::Crypto)?;
            // PKCS#8 v1, the form `openssl genpkey -algorithm ed25519` writes.
            pair.to_pkcs8v1()
                .map_err(|_| GenerateError::Crypto)?
                .as_ref()
                .to_vec()
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Write `pem` to `dir/selector.pem` (the directory must exist): mode 0600
/// from creation (never chmod afterwards), written to a temporary file
/// first so that a crash never leaves half a key under the final name, and
/// never replacing an existing file or symlink.
pub fn write_key(
    dir: &Path,
    selector: &str,
    pem: &str,
    owner: Owner,
) -> Result<PathBuf, GenerateError> {
    let name = format!("{selector}.pem");
    let path = dir.join(&name);
    match files::write_new(dir, &name, pem.as_bytes(), owner) {
        Ok(path) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(GenerateError::Exists(path)),
        Err(error) => Err(GenerateError::Io { path, error }),
    }
}

/// Generate a key for `domain`/`selector` into `dir/domain/selector.pem`.
/// `domain` and `selector` must already be validated.
pub fn generate(
    dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: KeyAlgorithm,
    bits: u32,
) -> Result<GeneratedKey, GenerateError> {
    let pem = private_key_pem(algorithm, bits)?;
    let domain_dir = dir.join(domain);
    // A domain directory that is a symlink out of the key directory would
    // put the key where others may control it.
    files::check_inside(dir, &domain_dir).map_err(GenerateError::Unsafe)?;
    files::ensure_dir(&domain_dir, None).map_err(|error| GenerateError::Io {
        path: domain_dir.clone(),
        error,
    })?;
    let path = write_key(&domain_dir, selector, &pem, None)?;
    let key = LoadedKey::load(&KeySpec {
        domain: domain.to_string(),
        selector: selector.to_string(),
        path: path.clone(),
        algorithm: Some(algorithm),
        origin: "generated key".to_string(),
        ..Default::default()
    })?;
    Ok(GeneratedKey { path, key })
}
