//! Debian's OpenDKIM as a second, independent milter for rmilter's interoperability tests.
//!
//! In sign mode it DKIM-signs mail from 127.0.0.1 and from SASL-authenticated clients with one
//! key (RSA or Ed25519; OpenDKIM 2.11 uses one signature algorithm per process, so a test that
//! wants both signatures chains two instances in `smtpd_milters`). In verify mode it adds an
//! `Authentication-Results: opendkim.rmilter.test; dkim=...` header, with public keys read from
//! a local `TestPublicKeys` file instead of DNS, so mail rmilter signed can be checked by
//! OpenDKIM and mail OpenDKIM signed can be fed to rmilter. Each instance runs in the
//! foreground on 127.0.0.1 with its own temporary directory and is killed on drop.
//! [`DkimKey`] makes test keys with `opendkim-genkey` (RSA) and `openssl genpkey` (Ed25519).
//! Needs Debian's `opendkim`, `opendkim-tools` and `openssl`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dkimpy::zone_txt_record;
use super::postfix::{free_port, run_bounded, show};
use super::smtp::base64;

const OPENDKIM: &str = "/usr/sbin/opendkim";

/// The authserv-id of the Authentication-Results header OpenDKIM adds in verify mode.
pub const AUTHSERV_ID: &str = "opendkim.rmilter.test";

/// A DKIM key pair on disk plus the DNS record that publishes it.
#[derive(Clone, Debug)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// "rsa-sha256" or "ed25519-sha256".
    pub algorithm: &'static str,
    /// PEM private key (PKCS#1 for RSA from opendkim-genkey, PKCS#8 for Ed25519).
    pub private_key: PathBuf,
    /// "selector._domainkey.domain".
    pub dns_name: String,
    /// "v=DKIM1; ...; p=...".
    pub dns_value: String,
}

impl DkimKey {
    /// An RSA key of `bits` made by `opendkim-genkey` in `dir/<domain>/<selector>/`; the DNS
    /// value is read back from the `.txt` zone snippet it writes.
    pub fn rsa(dir: &Path, domain: &str, selector: &str, bits: u32) -> DkimKey {
        let kdir = key_dir(dir, domain, selector);
        let mut cmd = Command::new("/usr/sbin/opendkim-genkey");
        cmd.args(["-b", &bits.to_string(), "-d", domain, "-s", selector, "-D"])
            .arg(&kdir);
        let out = run_bounded(cmd, None, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "opendkim-genkey failed: {}",
            show(&out)
        );
        let zone = std::fs::read_to_string(kdir.join(format!("{selector}.txt"))).unwrap();
        let (dns_name, dns_value) = zone_txt_record(&zone, domain);
        DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: "rsa-sha256",
            private_key: kdir.join(format!("{selector}.private")),
            dns_name,
            dns_value,
        }
    }

    /// An Ed25519 key (RFC 8463) made by `openssl genpkey` in `dir/<domain>/<selector>/`.
    pub fn ed25519(dir: &Path, domain: &str, selector: &str) -> DkimKey {
        let kdir = key_dir(dir, domain, selector);
        let private_key = kdir.join(format!("{selector}.private"));
        let mut cmd = Command::new("openssl");
        cmd.args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private_key);
        let out = run_bounded(cmd, None, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "openssl genpkey failed: {}",
            show(&out)
        );
        let mut cmd = Command::new("openssl");
        cmd.args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&private_key);
        let out = run_bounded(cmd, None, Duration::from_secs(30));
        assert!(
            out.status.success() && out.stdout.len() >= 32,
            "openssl pkey failed: {}",
            show(&out)
        );
        // RFC 8463 §4.2: p= is the raw 32-byte public key, the tail of the DER SubjectPublicKeyInfo.
        let raw = &out.stdout[out.stdout.len() - 32..];
        DkimKey {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: "ed25519-sha256",
            private_key,
            dns_name: format!("{selector}._domainkey.{domain}"),
            dns_value: format!("v=DKIM1; k=ed25519; p={}", base64(raw)),
        }
    }

    /// (owner name, TXT value), as `dkimpy::verify` and [`OpenDkim::verify`] take it.
    pub fn dns(&self) -> (String, String) {
        (self.dns_name.clone(), self.dns_value.clone())
    }
}

fn key_dir(dir: &Path, domain: &str, selector: &str) -> PathBuf {
    let kdir = dir.join(domain).join(selector);
    std::fs::create_dir_all(&kdir).unwrap();
    kdir
}

/// A running opendkim milter on 127.0.0.1; dropping it kills the process.
pub struct OpenDkim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl OpenDkim {
    /// Signs mail whose From domain is `key.domain`, if it comes from 127.0.0.1 or from a
    /// SASL-authenticated client, with relaxed/relaxed canonicalization and From oversigned.
    pub fn sign(key: &DkimKey) -> OpenDkim {
        OpenDkim::sign_with(key, &[])
    }

    /// Like [`OpenDkim::sign`] with further opendkim.conf lines (replacing same-named ones),
    /// e.g. `("Canonicalization", "simple/simple")`.
    pub fn sign_with(key: &DkimKey, extra: &[(&str, &str)]) -> OpenDkim {
        let mut conf = vec![
            ("Mode", "s".to_string()),
            ("Domain", key.domain.clone()),
            ("Selector", key.selector.clone()),
            ("KeyFile", key.private_key.display().to_string()),
            ("SignatureAlgorithm", key.algorithm.to_string()),
            ("Canonicalization", "relaxed/relaxed".to_string()),
            ("OversignHeaders", "From".to_string()),
            ("InternalHosts", "127.0.0.1".to_string()),
        ];
        for (k, v) in extra {
            match conf.iter_mut().find(|(name, _)| name == k) {
                Some(entry) => entry.1 = v.to_string(),
                None => conf.push((k, v.to_string())),
            }
        }
        OpenDkim::start(&conf, None)
    }

    /// Verifies DKIM signatures and adds Authentication-Results (authserv-id [`AUTHSERV_ID`]),
    /// looking keys up in `dns` (owner name -> TXT value) only. 127.0.0.1 is not an internal
    /// host here, so mail submitted from it is verified, not signed.
    pub fn verify(dns: &[(String, String)]) -> OpenDkim {
        let keys: String = dns
            .iter()
            .map(|(name, value)| format!("{} {value}\n", name.trim_end_matches('.')))
            .collect();
        let conf = vec![
            ("Mode", "v".to_string()),
            ("AuthservID", AUTHSERV_ID.to_string()),
            ("AlwaysAddARHeader", "yes".to_string()),
            // TEST-NET-1, i.e. nobody: every client counts as external.
            ("InternalHosts", "192.0.2.255".to_string()),
        ];
        OpenDkim::start(&conf, Some(&keys))
    }

    /// The `smtpd_milters` value for this instance.
    pub fn milter(&self) -> String {
        format!("inet:127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What opendkim printed on stdout/stderr (it logs to syslog; this holds startup errors).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("opendkim.out")).unwrap_or_default()
    }

    /// Runs a complete opendkim.conf as written (e.g. a migrate corpus file), with the socket,
    /// pid file and foreground settings of the other instances appended (the last value wins)
    /// and `UserID`, `AutoRestart` neutralised so the test owns exactly one process.
    pub fn from_conf(conf: &str) -> OpenDkim {
        OpenDkim::start_from(
            &format!("{conf}\n# rmilter test overrides\nAutoRestart no\nUserID root\n"),
            &[],
            None,
        )
    }

    fn start(settings: &[(&str, String)], test_keys: Option<&str>) -> OpenDkim {
        OpenDkim::start_from("", settings, test_keys)
    }

    fn start_from(base: &str, settings: &[(&str, String)], test_keys: Option<&str>) -> OpenDkim {
        assert!(
            Path::new(OPENDKIM).exists(),
            "{OPENDKIM} missing; install Debian's `opendkim` package"
        );
        let mut last_error = String::new();
        for _attempt in 1..=3 {
            let dir = tempfile::Builder::new()
                .prefix("rmilter-opendkim-")
                .tempdir()
                .unwrap();
            let port = free_port();
            let mut conf = String::from(base);
            conf.push_str("# OpenDKIM for rmilter's interoperability tests\n");
            for (k, v) in settings {
                conf.push_str(&format!("{k} {v}\n"));
            }
            conf.push_str(&format!("Socket inet:{port}@127.0.0.1\n"));
            conf.push_str(&format!(
                "PidFile {}\n",
                dir.path().join("opendkim.pid").display()
            ));
            conf.push_str("Background no\nSyslog yes\nSyslogSuccess yes\nLogWhy yes\n");
            // The temporary directory lives under world-writable /tmp, which OpenDKIM's
            // key-safety check rejects (every signature would tempfail).
            conf.push_str("RequireSafeKeys no\n");
            if let Some(keys) = test_keys {
                let path = dir.path().join("test-public-keys");
                std::fs::write(&path, keys).unwrap();
                conf.push_str(&format!("TestPublicKeys {}\n", path.display()));
            }
            let conf_path = dir.path().join("opendkim.conf");
            std::fs::write(&conf_path, &conf).unwrap();
            let out = std::fs::File::create(dir.path().join("opendkim.out")).unwrap();
            let child = Command::new(OPENDKIM)
                .arg("-f")
                .arg("-x")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn opendkim");
            let mut od = OpenDkim { child, port, dir };
            match od.wait_ready() {
                Ok(()) => return od,
                Err(e) => last_error = format!("{e}\nconfig:\n{conf}\noutput:\n{}", od.output()),
            }
        }
        panic!("opendkim did not start: {last_error}");
    }

    /// Waits until opendkim answers a milter option negotiation on its port. A bare TCP
    /// connect is not enough: the port was only free a moment ago, and if opendkim lost it to
    /// another listener, that listener would answer the connect.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("opendkim exited with {status}"));
            }
            if milter_answers(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "opendkim not answering on 127.0.0.1:{} after 30 s",
            self.port
        ))
    }
}

/// Sends SMFIC_OPTNEG (milter protocol version 6) and expects an SMFIC_OPTNEG reply.
fn milter_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut packet = 13u32.to_be_bytes().to_vec();
    packet.push(b'O');
    for field in [6u32, 0x1ff, 0x1f_ffff] {
        packet.extend_from_slice(&field.to_be_bytes());
    }
    let mut reply = [0u8; 5];
    s.write_all(&packet).is_ok() && s.read_exact(&mut reply).is_ok() && reply[4] == b'O'
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dkim=` results (e.g. "pass", "fail") of the Authentication-Results header fields with
/// authserv-id [`AUTHSERV_ID`] in an unfolded header value list.
pub fn dkim_results(authentication_results: &[String]) -> Vec<String> {
    authentication_results
        .iter()
        .filter(|v| v.split(';').next().map(str::trim) == Some(AUTHSERV_ID))
        .flat_map(|v| {
            v.split(';')
                .skip(1)
                .filter_map(|part| part.trim().strip_prefix("dkim="))
                .map(|r| r.split_whitespace().next().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}
