//! Key loading, safety checks, generation and DNS record text.

use super::*;
use crate::config::{KeyAlgorithm, KeySpec};
use std::os::unix::fs::PermissionsExt;

fn spec(path: &Path, algorithm: Option<KeyAlgorithm>) -> KeySpec {
    KeySpec {
        domain: "example.com".into(),
        selector: "s1".into(),
        path: path.to_path_buf(),
        algorithm,
        origin: "key[0]".into(),
        ..Default::default()
    }
}

/// Copy a fixture into a private directory with mode 0600.
fn fixture(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/keys")
        .join(name);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

#[test]
fn generated_keys_are_private_and_load() {
    let dir = tempfile::tempdir().unwrap();
    for (selector, alg, bits, p_len) in [
        ("rsa", KeyAlgorithm::Rsa, 2048, 294),
        ("ed", KeyAlgorithm::Ed25519, 256, 32),
    ] {
        let generated = generate(dir.path(), "example.com", selector, alg, 2048).unwrap();
        let mode = std::fs::metadata(&generated.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = generated.key;
        assert_eq!(
            (key.algorithm, key.bits, key.public_key.len()),
            (alg, bits, p_len)
        );
        let txt = key.txt_value();
        assert!(
            txt.starts_with(&format!("v=DKIM1; k={}; p=", alg.key_type())),
            "{txt}"
        );
    }
    let dir_mode = std::fs::metadata(dir.path().join("example.com"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn generate_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let first = generate(dir.path(), "example.com", "s1", KeyAlgorithm::Ed25519, 0).unwrap();
    let before = std::fs::read(&first.path).unwrap();
    let err = generate(dir.path(), "example.com", "s1", KeyAlgorithm::Ed25519, 0)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .ends_with("already exists; refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&first.path).unwrap(), before);
    // A symlink in the key's place is not followed either.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("example.com/s2.pem")).unwrap();
    let err = generate(dir.path(), "example.com", "s2", KeyAlgorithm::Ed25519, 0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn generate_refuses_odd_rsa_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let err = generate(dir.path(), "example.com", "s1", KeyAlgorithm::Rsa, 1024)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "RSA keys must have 2048, 3072 or 4096 bits, not 1024"
    );
}

#[test]
fn missing_key_file_is_named() {
    let err = LoadedKey::load(&spec(Path::new("/nonexistent/k.pem"), None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/k.pem: key file does not exist"
    );
}

#[test]
fn readable_or_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "2048_testkey_PKCS8.key");
    for (mode, needle) in [
        (0o644, "readable by every user (mode 0644)"),
        (0o604, "readable by every user (mode 0604)"),
        (0o620, "writable by group or others (mode 0620)"),
        (0o602, "writable by group or others (mode 0602)"),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = LoadedKey::load(&spec(&path, None)).unwrap_err().to_string();
        assert!(err.contains(needle), "mode {mode:o}: {err}");
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }
    // Group-readable is allowed (root:rmilter 0640).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    LoadedKey::load(&spec(&path, None)).unwrap();
}

#[test]
fn key_in_a_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let path = fixture(&open, "2048_testkey_PKCS8.key");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = LoadedKey::load(&spec(&path, None)).unwrap_err().to_string();
    assert!(
        err.contains("is writable by every user (mode 0777)"),
        "{err}"
    );
    // A symlink from a safe place into that directory does not help.
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = LoadedKey::load(&spec(&link, None)).unwrap_err().to_string();
    assert!(err.contains("is writable by every user"), "{err}");
    // The sticky bit (as on /tmp) makes a world-writable directory safe.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    LoadedKey::load(&spec(&path, None)).unwrap();
}

#[test]
fn small_rsa_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "1024_testkey.key");
    let err = LoadedKey::load(&spec(&path, None)).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "RSA key has 1024 bits; rmilter signs only with RSA keys of 2048 bits or more"
        ),
        "{err}"
    );
}

#[test]
fn pkcs1_and_pkcs8_rsa_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs1 = LoadedKey::load(&spec(&fixture(dir.path(), "2048_testkey.key"), None)).unwrap();
    let pkcs8 = LoadedKey::load(&spec(
        &fixture(dir.path(), "2048_testkey_PKCS8.key"),
        Some(KeyAlgorithm::Rsa),
    ))
    .unwrap();
    assert_eq!((pkcs1.algorithm, pkcs1.bits), (KeyAlgorithm::Rsa, 2048));
    assert_eq!(pkcs8.bits, 2048);
    // dkimpy's published record for this key pair carries the same SPKI.
    let published = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/third-party/dkim/dkimpy/2048_testkey_wo_markers.pub.txt"),
    );
    let published = published.expect("dkimpy's record is in tests/data/third-party");
    let compact: String = published.split_whitespace().collect();
    let p = compact.rsplit_once("p=").map(|(_, p)| p).unwrap();
    assert!(
        pkcs1.txt_value().ends_with(&format!("p={p}")),
        "{} vs {p}",
        pkcs1.txt_value()
    );
}

#[test]
fn algorithm_mismatch_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path(), "2048_testkey_PKCS8.key");
    let err = LoadedKey::load(&spec(&path, Some(KeyAlgorithm::Ed25519)))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("holds an rsa key, but the key table says ed25519"),
        "{err}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = LoadedKey::load(&spec(&junk, None)).unwrap_err().to_string();
    assert!(err.contains("not a usable private key"), "{err}");
}

#[test]
fn zone_entries_split_long_values() {
    let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(700));
    let entry = zone_entry("example.com", "s1", &value);
    assert!(
        entry.starts_with("s1._domainkey.example.com.\tIN\tTXT\t( \""),
        "{entry}"
    );
    let strings: Vec<&str> = entry.split('"').skip(1).step_by(2).collect();
    assert!(strings.len() >= 3);
    assert!(strings.iter().all(|s| s.len() <= 255));
    assert_eq!(strings.concat(), value);
    let short = zone_entry("example.com", "ed", "v=DKIM1; k=ed25519; p=abc");
    assert_eq!(
        short,
        "ed._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=abc\""
    );
}

#[test]
fn public_key_sizes_from_dns_records() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = generate(dir.path(), "example.com", "rsa", KeyAlgorithm::Rsa, 3072).unwrap();
    assert_eq!(der_rsa_public_bits(&rsa.key.public_key), Some(3072));
    // dkimpy's 1024-bit record, SubjectPublicKeyInfo form.
    let published = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(published)
        .unwrap();
    assert_eq!(der_rsa_public_bits(&der), Some(1024));
    assert_eq!(der_rsa_public_bits(b"junk"), None);
    assert_eq!(der_rsa_public_bits(&[]), None);
}

#[test]
fn rsa_public_key_bits_are_exact() {
    // A 1023-bit and a 1024-bit modulus are both 128 bytes long.
    for (bits, first) in [(1023usize, 0x40u8), (1024, 0x80), (1017, 0x01)] {
        let mut modulus = vec![0u8; 128];
        modulus[0] = first;
        modulus[127] = 1;
        // RSAPublicKey { modulus INTEGER, publicExponent INTEGER 65537 },
        // with the sign octet DER puts before a high first bit.
        let mut int = vec![0x02, 0x81];
        let body: Vec<u8> = if first & 0x80 != 0 {
            [&[0u8][..], &modulus].concat()
        } else {
            modulus.clone()
        };
        int.push(body.len() as u8);
        int.extend_from_slice(&body);
        int.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
        let der = [&[0x30, 0x81, int.len() as u8][..], &int].concat();
        assert_eq!(der_rsa_public_bits(&der), Some(bits), "{bits}");
    }
}

#[test]
fn symlinks_are_checked_where_they_live() {
    let dir = tempfile::tempdir().unwrap();
    let safe = dir.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    let path = fixture(&safe, "2048_testkey_PKCS8.key");
    LoadedKey::load(&spec(&path, None)).unwrap();
    // A link to a safe key, in a directory every user can write: anyone
    // could point it at another key.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = open.join("key.pem");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = LoadedKey::load(&spec(&link, None)).unwrap_err().to_string();
    assert!(
        err.contains("is writable by every user (mode 0777)"),
        "{err}"
    );
    // A directory on the way that is a link out of an unsafe directory.
    let via = open.join("dir");
    std::os::unix::fs::symlink(&safe, &via).unwrap();
    let err = LoadedKey::load(&spec(&via.join("2048_testkey_PKCS8.key"), None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is writable by every user (mode 0777)"),
        "{err}"
    );
    // In a sticky directory, a link someone else owns is theirs to change.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    LoadedKey::load(&spec(&link, None)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
        let err = LoadedKey::load(&spec(&link, None)).unwrap_err().to_string();
        assert!(
            err.contains("symlink") && err.contains("uid 65534"),
            "{err}"
        );
    }
    // A chain of links: each one is checked.
    let second = open.join("second.pem");
    std::os::unix::fs::symlink(&path, &second).unwrap();
    let first = safe.join("first.pem");
    std::os::unix::fs::symlink(&second, &first).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = LoadedKey::load(&spec(&first, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is writable by every user"), "{err}");
}

#[test]
fn the_key_is_checked_through_the_open_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO is refused as not a regular file, without blocking on open.
    let fifo = dir.path().join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = LoadedKey::load(&spec(&fifo, None)).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(matches!(
        LoadedKey::load(&spec(&dir.path().join("missing.pem"), None)),
        Err(KeyError::Missing(_))
    ));
}

/// Many keys are read on several threads: the keys come back in the
/// order of the specs, and the error is the first in that order.
#[test]
fn many_keys_load_in_order_and_the_first_error_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = generate(dir.path(), "example.com", "ed", KeyAlgorithm::Ed25519, 2048)
        .unwrap()
        .path;
    let n = PARALLEL_FROM * 3 + 7;
    let specs: Vec<KeySpec> = (0..n)
        .map(|i| KeySpec {
            domain: format!("d{i}.example"),
            origin: format!("key[{i}]"),
            ..spec(&file, Some(KeyAlgorithm::Ed25519))
        })
        .collect();
    let keys = load_all_trusting(&specs, None).unwrap();
    let domains: Vec<&str> = keys.iter().map(|k| k.domain.as_str()).collect();
    let wanted: Vec<String> = (0..n).map(|i| format!("d{i}.example")).collect();
    assert_eq!(domains, wanted);
    // Two missing files, in different threads' parts: the earlier is named.
    let mut broken = specs.clone();
    for i in [n - 3, PARALLEL_FROM + 5] {
        broken[i].path = dir.path().join(format!("missing-{i}.pem"));
    }
    let (origin, e) = load_all_trusting(&broken, None).unwrap_err();
    assert_eq!(origin, format!("key[{}]", PARALLEL_FROM + 5));
    assert!(matches!(e, KeyError::Missing(_)), "{e}");
}
