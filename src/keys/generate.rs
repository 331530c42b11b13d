//! `rmilter keys generate`: a new private key written with mode 0600 at
//! creation (never chmod afterwards), refusing to overwrite anything.

use super::{KeyError, LoadedKey};
use crate::config::{KeyAlgorithm, KeySpec};
use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    #[error(transparent)]
    Load(#[from] KeyError),
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

    let domain_dir = dir.join(domain);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&domain_dir)
        .map_err(|error| GenerateError::Io {
            path: domain_dir.clone(),
            error,
        })?;
    let path = domain_dir.join(format!("{selector}.pem"));
    // O_CREAT|O_EXCL with mode 0600: no window with looser permissions, and
    // an existing file or symlink is never replaced.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(GenerateError::Exists(path));
        }
        Err(error) => return Err(GenerateError::Io { path, error }),
    };
    file.write_all(pem.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|error| GenerateError::Io {
            path: path.clone(),
            error,
        })?;
    let key = LoadedKey::load(&KeySpec {
        domain: domain.to_string(),
        selector: selector.to_string(),
        path: path.clone(),
        algorithm: Some(algorithm),
        origin: "generated key".to_string(),
    })?;
    Ok(GeneratedKey { path, key })
}
