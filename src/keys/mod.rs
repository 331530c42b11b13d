//! Signing keys: loading key files (with OpenDKIM-style safety checks),
//! generating new keys, and the DNS record text of each key.
//!
//! Keys are read and parsed once, when the configuration is loaded or
//! reloaded; nothing here runs per message.

pub mod check;
pub mod cli;
pub mod files;
mod generate;
pub mod lifecycle;
mod record;
mod safety;
pub mod state;

pub use generate::{GenerateError, GeneratedKey, generate, private_key_pem, write_key};
pub use record::{revocation_value, txt_value, zone_entry};

use crate::config::{KeyAlgorithm, KeySpec};
use aws_lc_rs::encoding::AsDer;
use mail_auth::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The smallest RSA key rmilter signs with (RFC 8301 §3.2 allows 1024 for
/// verifying, but 1024-bit signing keys are considered breakable).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: key file does not exist")]
    Missing(PathBuf),
    #[error("{path}: cannot read key file: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: unsafe key file: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: not a usable private key: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "{path}: RSA key has {bits} bits; rmilter signs only with RSA keys of {MIN_RSA_BITS} bits or more"
    )]
    TooSmall { path: PathBuf, bits: usize },
    #[error("{path}: holds an {found} key, but the key table says {expected}")]
    WrongAlgorithm {
        path: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
}

/// A private key shared by every message that signs with it.
#[derive(Clone)]
pub struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl mail_auth::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// A signing key, loaded and checked.
pub struct LoadedKey {
    /// The `[[key]]` name, when it has one.
    pub name: Option<String>,
    /// The signing domain, or `%` (the From domain of each message).
    pub domain: String,
    /// For a `%` key: the domains it is said to sign for (`domains`).
    pub domains: Vec<String>,
    pub selector: String,
    pub algorithm: KeyAlgorithm,
    /// RSA modulus size; 256 for Ed25519.
    pub bits: usize,
    /// What the `p=` tag publishes: SubjectPublicKeyInfo DER for RSA
    /// (RFC 6376 §3.6.1), the raw 32-byte key for Ed25519 (RFC 8463 §4).
    pub public_key: Vec<u8>,
    pub path: PathBuf,
    pub key: SharedKey,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("bits", &self.bits)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    /// Read, check and parse the key file of one key table row.
    pub fn load(spec: &KeySpec) -> Result<LoadedKey, KeyError> {
        LoadedKey::load_trusting(spec, None)
    }

    /// Like [`LoadedKey::load`], also accepting files and directories
    /// owned by the uid `trusted` (see `keys.owner`).
    pub fn load_trusting(spec: &KeySpec, trusted: Option<u32>) -> Result<LoadedKey, KeyError> {
        let pem = safety::read(&spec.path, trusted)?;
        let parsed = parse_private_key(&spec.path, &pem)?;
        if let Some(expected) = spec.algorithm
            && expected != parsed.algorithm
        {
            return Err(KeyError::WrongAlgorithm {
                path: spec.path.clone(),
                found: parsed.algorithm.key_type(),
                expected: expected.key_type(),
            });
        }
        Ok(LoadedKey {
            name: spec.name.clone(),
            domain: spec.domain.clone(),
            domains: spec.domains.clone(),
            selector: spec.selector.clone(),
            algorithm: parsed.algorithm,
            bits: parsed.bits,
            public_key: parsed.public_key,
            path: spec.path.clone(),
            key: SharedKey(Arc::new(parsed.key)),
        })
    }

    /// The TXT record value to publish at `selector._domainkey.domain`.
    pub fn txt_value(&self) -> String {
        txt_value(self.algorithm, &self.public_key)
    }
}

struct ParsedKey {
    algorithm: KeyAlgorithm,
    bits: usize,
    public_key: Vec<u8>,
    key: DkimKey,
}

fn parse_private_key(path: &Path, pem: &[u8]) -> Result<ParsedKey, KeyError> {
    let format = |reason: &str| KeyError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let der = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| format("expected a PEM \"PRIVATE KEY\" (PKCS#8) block"))?;
    match der {
        PrivateKeyDer::Pkcs8(ref pkcs8) => {
            let bytes = pkcs8.secret_pkcs8_der();
            if let Ok(pair) = aws_lc_rs::rsa::KeyPair::from_pkcs8(bytes) {
                rsa_key(path, pair, der.clone_key())
            } else if let Some(bits) = der_rsa_bits(bytes, true) {
                // aws-lc refuses small RSA keys outright; say why.
                Err(if bits < MIN_RSA_BITS {
                    KeyError::TooSmall {
                        path: path.to_path_buf(),
                        bits,
                    }
                } else {
                    format("invalid RSA key")
                })
            } else if let Ok(pair) =
                aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
            {
                let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes)
                    .map_err(|e| format(&e.to_string()))?;
                Ok(ParsedKey {
                    algorithm: KeyAlgorithm::Ed25519,
                    bits: 256,
                    public_key: aws_lc_rs::signature::KeyPair::public_key(&pair)
                        .as_ref()
                        .to_vec(),
                    key: DkimKey::Ed25519(key),
                })
            } else {
                Err(format("the PKCS#8 key is neither RSA nor Ed25519"))
            }
        }
        // The "RSA PRIVATE KEY" format written by opendkim-genkey, accepted
        // so that existing OpenDKIM keys work unchanged.
        PrivateKeyDer::Pkcs1(ref pkcs1) => {
            let bytes = pkcs1.secret_pkcs1_der();
            match aws_lc_rs::rsa::KeyPair::from_der(bytes) {
                Ok(pair) => rsa_key(path, pair, der.clone_key()),
                Err(_) => Err(match der_rsa_bits(bytes, false) {
                    Some(bits) if bits < MIN_RSA_BITS => KeyError::TooSmall {
                        path: path.to_path_buf(),
                        bits,
                    },
                    _ => format("invalid PKCS#1 RSA key"),
                }),
            }
        }
        _ => Err(format("only RSA and Ed25519 keys can sign DKIM mail")),
    }
}

fn rsa_key(
    path: &Path,
    pair: aws_lc_rs::rsa::KeyPair,
    der: PrivateKeyDer<'static>,
) -> Result<ParsedKey, KeyError> {
    let bits = pair.public_modulus_len() * 8;
    if bits < MIN_RSA_BITS {
        return Err(KeyError::TooSmall {
            path: path.to_path_buf(),
            bits,
        });
    }
    let spki = aws_lc_rs::signature::KeyPair::public_key(&pair)
        .as_der()
        .map_err(|_| KeyError::Format {
            path: path.to_path_buf(),
            reason: "cannot encode the public key".to_string(),
        })?;
    let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| KeyError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(ParsedKey {
        algorithm: KeyAlgorithm::Rsa,
        bits,
        public_key: spki.as_ref().to_vec(),
        key: DkimKey::Rsa(key),
    })
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Bits of a DER INTEGER's magnitude, exactly: a 1023-bit modulus is 1023,
/// not the 1024 its 128 bytes hold.
fn integer_bits(int: &[u8]) -> usize {
    let mut significant = int.iter().skip_while(|&&b| b == 0);
    match significant.next() {
        Some(&first) => significant.count() * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

/// The modulus size of a DER RSA private key (PKCS#1 `RSAPrivateKey`, or
/// that wrapped in PKCS#8), read with a minimal DER walk; `None` when the
/// bytes are not shaped like one.
fn der_rsa_bits(der: &[u8], pkcs8: bool) -> Option<usize> {
    let (tag, mut body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    if pkcs8 {
        // PrivateKeyInfo: version, AlgorithmIdentifier, OCTET STRING.
        let (_, _, rest) = tlv(body)?;
        let (_, _, rest) = tlv(rest)?;
        let (tag, inner, _) = tlv(rest)?;
        if tag != 0x04 {
            return None;
        }
        let (tag, inner_body, _) = tlv(inner)?;
        if tag != 0x30 {
            return None;
        }
        body = inner_body;
    }
    // RSAPrivateKey: version INTEGER, modulus INTEGER, ...
    let (_, _, rest) = tlv(body)?;
    let (tag, modulus, _) = tlv(rest)?;
    (tag == 0x02).then(|| integer_bits(modulus))
}

/// The modulus size of a DER RSA public key as published in DKIM records:
/// SubjectPublicKeyInfo (RFC 6376 §3.6.1) or a bare PKCS#1 `RSAPublicKey`.
pub fn der_rsa_public_bits(der: &[u8]) -> Option<usize> {
    let (tag, body, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, first, rest) = tlv(body)?;
    match tag {
        // RSAPublicKey: modulus INTEGER, publicExponent INTEGER.
        0x02 => Some(integer_bits(first)),
        // SubjectPublicKeyInfo: AlgorithmIdentifier, BIT STRING.
        0x30 => {
            let (tag, bits, _) = tlv(rest)?;
            if tag != 0x03 {
                return None;
            }
            let (_unused, key) = bits.split_first()?;
            let (tag, key_body, _) = tlv(key)?;
            if tag != 0x30 {
                return None;
            }
            let (tag, modulus, _) = tlv(key_body)?;
            (tag == 0x02).then(|| integer_bits(modulus))
        }
        _ => None,
    }
}

/// Load every key of a key table; the first failure names its row.
pub fn load_all(specs: &[KeySpec]) -> Result<Vec<Arc<LoadedKey>>, (String, KeyError)> {
    load_all_trusting(specs, None)
}

/// Like [`load_all`], also accepting key files and directories owned by
/// the uid `trusted` (the daemon's `user`, which it runs as after start).
///
/// Many keys are read on every CPU: each file is opened, checked and
/// parsed on its own (an RSA key's consistency check is about 0.4 ms), so
/// 10,000 keys take a fraction of the time in a row. The result and the
/// first error are in `specs` order either way.
pub fn load_all_trusting(
    specs: &[KeySpec],
    trusted: Option<u32>,
) -> Result<Vec<Arc<LoadedKey>>, (String, KeyError)> {
    // Each part stops at its first error.
    let load = |specs: &[KeySpec]| -> Result<Vec<Arc<LoadedKey>>, (String, KeyError)> {
        specs
            .iter()
            .map(|spec| {
                LoadedKey::load_trusting(spec, trusted)
                    .map(Arc::new)
                    .map_err(|e| (spec.origin.clone(), e))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || specs.len() < PARALLEL_FROM {
        return load(specs);
    }
    let chunk = specs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = specs
            .chunks(chunk)
            .map(|part| scope.spawn(move || load(part)))
            .collect();
        let mut out = Vec::with_capacity(specs.len());
        for (worker, part) in workers.into_iter().zip(specs.chunks(chunk)) {
            // A worker that panicked loaded nothing: say which keys.
            let loaded = worker.join().map_err(|_| {
                (
                    part[0].origin.clone(),
                    KeyError::Io {
                        path: part[0].path.clone(),
                        error: std::io::Error::other(
                            "the thread reading this key and the next failed",
                        ),
                    },
                )
            })?;
            out.extend(loaded?);
        }
        Ok(out)
    })
}

/// Fewer keys than this are read on the calling thread.
const PARALLEL_FROM: usize = 64;

#[cfg(test)]
mod tests;
