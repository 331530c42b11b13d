//! TLS to the shared PostgreSQL store: libpq's `sslmode` and `sslrootcert`
//! read from the store URL, and a tokio-postgres `MakeTlsConnect` over
//! rustls with the aws-lc-rs provider already in the tree.
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require` and
//! rejects `sslrootcert`, so both are taken out of the URL here; the rest
//! goes to tokio-postgres unchanged. The modes mean what they mean to libpq:
//! `disable` never uses TLS; `prefer` (the default) uses it when the server
//! offers it, `require` insists on it, both without checking the certificate
//! unless `sslrootcert` is given (then as `verify-ca`); `verify-ca` checks
//! the chain against `sslrootcert`; `verify-full` also checks the server's
//! name. `sslrootcert=system` trusts the system's CA certificates.
//! SCRAM logins bind to the TLS channel (`tls-server-end-point`, RFC 5929)
//! when the certificate's signature names one hash.
//!
//! The connector is written here rather than taken from
//! tokio-postgres-rustls / postgres-rustls: those pull in ring and x509
//! parsing crates for channel binding (here: aws-lc-rs's digest and the
//! certificate's signature algorithm read from its DER), and still leave
//! `verify-ca` and the unverified modes to the caller.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    System,
}

/// The TLS settings of a store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub root: Option<RootCert>,
}

/// Split a `postgres://` URL into the URL tokio-postgres is given (without
/// `sslrootcert`, with `sslmode` mapped to one it knows) and the TLS
/// settings. Errors name the parameter.
pub fn split_url(url: &str) -> Result<(String, TlsOptions), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = Some(match percent_decode(value)?.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                        ));
                    }
                })
            }
            "sslrootcert" => {
                root = Some(match percent_decode(value)?.as_str() {
                    "" => return Err("sslrootcert is empty".to_string()),
                    "system" => RootCert::System,
                    path => RootCert::File(PathBuf::from(path)),
                })
            }
            _ => kept.push(pair),
        }
    }
    let mode = mode.unwrap_or(SslMode::Prefer);
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert=FILE (the CA certificate that signed the server's) or sslrootcert=system",
            mode_name(mode)
        ));
    }
    // tokio-postgres: disable, prefer or require; the verification is ours.
    kept.push(match mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((
        format!("{base}?{}", kept.join("&")),
        TlsOptions { mode, root },
    ))
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// A query value, percent-decoded as DMARC report URIs are.
fn percent_decode(text: &str) -> Result<String, String> {
    crate::verify::dmarc::record::percent_decode(text)
        .ok_or_else(|| format!("bad percent-encoding (or not UTF-8) in {text:?}"))
}

/// The rustls client configuration for these settings; `None` for
/// `sslmode=disable`. Reads `sslrootcert`.
pub fn client_config(options: &TlsOptions) -> Result<Option<rustls::ClientConfig>, String> {
    if options.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &options.root {
        // libpq: prefer/require without a root certificate do not verify.
        None => Arc::new(NoVerification(provider.signature_verification_algorithms)),
        Some(root) => {
            let roots = Arc::new(load_roots(root)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            if options.mode == SslMode::VerifyFull {
                webpki
            } else {
                // libpq: require with a root certificate acts as verify-ca.
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    Ok(Some(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sslrootcert {}: no PEM certificate in the file",
                    path.display()
                ));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err("sslrootcert=system: no CA certificate found on this system".into());
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // WebPkiServerVerifier checks the chain (and validity) before the
        // name, so a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without `sslrootcert`: encryption without
/// authentication of the server, as libpq does. The handshake signatures
/// are still checked.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// tokio-postgres' TLS hook: one rustls client configuration for every
/// connection.
#[derive(Clone)]
pub struct MakeRustls(Arc<rustls::ClientConfig>);

impl MakeRustls {
    pub fn new(config: rustls::ClientConfig) -> MakeRustls {
        MakeRustls(Arc::new(config))
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // Called for unix socket hosts too (with an empty name), where TLS
        // is never used: a bad name is an error only when connecting.
        let name = ServerName::try_from(domain.to_string()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("host {domain:?}: {e}"))
        });
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: io::Result<ServerName<'static>>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name?, stream)
                .await
                .map(RustlsStream)
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let cert = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match cert.and_then(|c| end_point_hash(c).map(|alg| (c, alg))) {
            Some((cert, alg)) => ChannelBinding::tls_server_end_point(
                aws_lc_rs::digest::digest(alg, cert.as_ref())
                    .as_ref()
                    .to_vec(),
            ),
            None => ChannelBinding::none(),
        }
    }
}

/// The hash of SCRAM's `tls-server-end-point` channel binding: RFC 5929
/// §4.1: the certificate's signature hash, SHA-256 for MD5 and SHA-1.
/// `None` (no channel binding) for signatures without one hash (RSASSA-PSS,
/// Ed25519), as PostgreSQL cannot bind to those either.
fn end_point_hash(cert: &[u8]) -> Option<&'static aws_lc_rs::digest::Algorithm> {
    use aws_lc_rs::digest::{SHA256, SHA384, SHA512};
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
    // AlgorithmIdentifier ::= SEQUENCE { OID, params }, signature }
    let (cert, _) = der(cert, 0x30)?;
    let (_, rest) = der(cert, 0x30)?;
    let (alg, _) = der(rest, 0x30)?;
    let (oid, _) = der(alg, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]; // 1.2.840.10045.4.1
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03]; // 1.2.840.10045.4.3
    if oid == ECDSA_SHA1 {
        return Some(&SHA256);
    }
    match (oid.strip_prefix(RSA), oid.strip_prefix(ECDSA_SHA2)) {
        // md5, sha1, sha256 WithRSAEncryption
        (Some([0x04 | 0x05 | 0x0b]), _) | (_, Some([0x02])) => Some(&SHA256),
        (Some([0x0c]), _) | (_, Some([0x03])) => Some(&SHA384),
        (Some([0x0d]), _) | (_, Some([0x04])) => Some(&SHA512),
        _ => None,
    }
}

/// One DER element with tag `tag` at the start of `b`: (its contents, what
/// follows it).
fn der(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = b
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((b.get(header..end)?, &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (url, o) = split_url(
            "postgres://u@db.example/r?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem&port=5433",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@db.example/r?port=5433&sslmode=require");
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root, Some(RootCert::File("/etc/ca x.pem".into())));
        let (url, o) = split_url("postgres://u@db.example/r").unwrap();
        assert_eq!(url, "postgres://u@db.example/r?sslmode=prefer");
        assert_eq!((o.mode, o.root), (SslMode::Prefer, None));
        let (_, o) = split_url("postgres://u@h/r?sslrootcert=system&sslmode=verify-ca").unwrap();
        assert_eq!(
            (o.mode, o.root),
            (SslMode::VerifyCa, Some(RootCert::System))
        );
        let (url, _) = split_url("postgres://u@h/r?sslmode=disable").unwrap();
        assert!(url.ends_with("?sslmode=disable"));
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // A certificate's outer layers with only the signature algorithm.
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend(oid);
            let mut inner = vec![0x30, 0x00, 0x30, alg.len() as u8];
            inner.extend(alg);
            inner.extend([0x03, 0x01, 0x00]);
            let mut out = vec![0x30, 0x81, inner.len() as u8];
            out.extend(inner);
            out
        };
        let name = |oid: &[u8]| end_point_hash(&cert(oid)).map(|a| a.output_len());
        let rsa = |n: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n];
        let ecdsa = |n: u8| [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, n];
        assert_eq!(name(&rsa(0x05)), Some(32)); // sha1WithRSA: SHA-256
        assert_eq!(name(&rsa(0x0b)), Some(32));
        assert_eq!(name(&rsa(0x0c)), Some(48));
        assert_eq!(name(&rsa(0x0d)), Some(64));
        assert_eq!(name(&rsa(0x0a)), None); // RSASSA-PSS
        assert_eq!(name(&ecdsa(0x02)), Some(32));
        assert_eq!(name(&ecdsa(0x03)), Some(48));
        assert_eq!(name(&[0x2b, 0x65, 0x70]), None); // Ed25519
        assert_eq!(end_point_hash(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(end_point_hash(&[]), None);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let e = split_url("postgres://h/r?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode=verify"), "{e}");
        let e = split_url("postgres://h/r?sslmode=verify-full").unwrap_err();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = split_url("postgres://h/r?sslmode=require&sslrootcert=").unwrap_err();
        assert!(e.contains("sslrootcert is empty"), "{e}");
    }
}
