//! The state machine, the state file format and the directory lock.

use super::*;
use std::time::UNIX_EPOCH;

const DAY: Duration = Duration::from_secs(86400);

fn t(days: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_000_000) + DAY * days as u32
}

fn domain() -> DomainState {
    let mut st = DomainState::empty("example.com");
    st.add_pending("old", KeyAlgorithm::Rsa, 2048, "old.pem", t(0));
    st.add_pending("new", KeyAlgorithm::Rsa, 2048, "new.pem", t(10));
    st.add_pending("ed", KeyAlgorithm::Ed25519, 256, "ed.pem", t(10));
    st
}

fn states(st: &DomainState) -> Vec<(&str, KeyState)> {
    st.keys
        .iter()
        .map(|k| (k.selector.as_str(), k.state))
        .collect()
}

#[test]
fn keys_activated_in_the_same_second_are_ordered_by_creation() {
    let mut st = DomainState::empty("example.com");
    st.add_pending("first", KeyAlgorithm::Ed25519, 256, "first.pem", t(0));
    st.add_pending("second", KeyAlgorithm::Ed25519, 256, "second.pem", t(0));
    st.activate("first", t(0)).unwrap();
    st.activate("second", t(0)).unwrap();
    assert_eq!(st.superseded(), ["first"]);
}

#[test]
fn a_full_rotation_walks_every_state() {
    use KeyState::*;
    let mut st = domain();
    assert_eq!(st.signing().count(), 0, "pending keys never sign");
    assert_eq!(st.activate("old", t(1)), Ok(Change::Moved(Pending, Active)));
    assert_eq!(st.activate("old", t(2)), Ok(Change::Already(Active)));
    assert!(st.superseded().is_empty());
    // The new RSA key overlaps the old one: both sign.
    assert_eq!(
        st.activate("new", t(11)),
        Ok(Change::Moved(Pending, Active))
    );
    assert_eq!(
        st.signing()
            .map(|k| k.selector.as_str())
            .collect::<Vec<_>>(),
        ["old", "new"]
    );
    assert_eq!(st.superseded(), ["old"]);
    // Another algorithm does not overlap.
    st.activate("ed", t(11)).unwrap();
    assert_eq!(st.superseded(), ["old"]);
    let week = 7 * DAY;
    assert_eq!(
        st.retire("old", t(12), week, 0, false),
        Ok(Change::Moved(Active, Retiring))
    );
    assert!(st.superseded().is_empty());
    assert_eq!(st.get("old").unwrap().since(), t(12));
    assert!(!st.get("old").unwrap().state.signs());
    assert!(st.get("old").unwrap().state.needs_record());
    // Retiring -> retired only after the period.
    assert_eq!(
        st.retire("old", t(18), week, 0, false),
        Err(TransitionError::TooEarly {
            selector: "old".into(),
            since: timestamp(t(12)),
            until: timestamp(t(19)),
        })
    );
    assert_eq!(
        st.retire("old", t(19), week, 0, false),
        Ok(Change::Moved(Retiring, Retired))
    );
    assert_eq!(
        st.retire("old", t(20), week, 0, false),
        Ok(Change::Already(Retired))
    );
    assert!(!st.get("old").unwrap().state.needs_record());
    // Retired keys never come back.
    assert_eq!(
        st.activate("old", t(21)),
        Err(TransitionError::RetiredForever {
            selector: "old".into()
        })
    );
    assert_eq!(
        states(&st),
        [("old", Retired), ("new", Active), ("ed", Active)]
    );
}

#[test]
fn refusals_and_their_overrides() {
    use KeyState::*;
    let week = 7 * DAY;
    let mut st = domain();
    st.activate("old", t(1)).unwrap();
    // The last active key is not retired without --force…
    assert_eq!(
        st.retire("old", t(2), week, 0, false),
        Err(TransitionError::LastActive {
            domain: "example.com".into(),
            selector: "old".into()
        })
    );
    // …unless static [[key]] rows of the domain keep signing.
    let mut with_static = st.clone();
    assert_eq!(
        with_static.retire("old", t(2), week, 1, false),
        Ok(Change::Moved(Active, Retiring))
    );
    assert_eq!(
        st.retire("old", t(2), week, 0, true),
        Ok(Change::Moved(Active, Retiring))
    );
    // Forced early retirement.
    assert_eq!(
        st.retire("old", t(3), week, 0, true),
        Ok(Change::Moved(Retiring, Retired))
    );
    // A pending key is discarded straight to retired.
    assert_eq!(
        st.retire("ed", t(3), week, 0, false),
        Ok(Change::Moved(Pending, Retired))
    );
    // Rollback: a retiring key may sign again.
    st.activate("new", t(11)).unwrap();
    st.retire("new", t(12), week, 1, false).unwrap();
    assert_eq!(
        st.activate("new", t(13)),
        Ok(Change::Moved(Retiring, Active))
    );
    assert_eq!(
        st.activate("nope", t(13)),
        Err(TransitionError::Unknown {
            domain: "example.com".into(),
            selector: "nope".into()
        })
    );
    assert!(
        st.retire("nope", t(13), week, 0, true).is_err(),
        "unknown selectors are refused"
    );
}

#[test]
fn the_state_file_round_trips_and_reads_like_prose() {
    let mut st = domain();
    st.activate("old", t(1)).unwrap();
    st.retire("old", t(2), DAY, 1, false).unwrap();
    let text = to_text(&st);
    assert!(text.starts_with("# rmilter key state"), "{text}");
    assert!(text.contains("domain = \"example.com\""), "{text}");
    assert!(text.contains("[[key]]\nselector = \"old\""), "{text}");
    assert!(text.contains("state = \"retiring\""), "{text}");
    assert!(text.contains("retiring = \"2026-"), "{text}");
    let back = from_text(Path::new("state.toml"), &text, "example.com").unwrap();
    assert_eq!(back, st);
    // An empty domain round-trips too.
    let empty = DomainState::empty("example.com");
    assert_eq!(
        from_text(Path::new("s"), &to_text(&empty), "example.com").unwrap(),
        empty
    );
}

#[test]
fn bad_state_files_are_refused_with_the_reason() {
    let key = |extra: &str| {
        format!(
            "version = 1\ndomain = \"example.com\"\n[[key]]\nselector = \"s1\"\nalgorithm = \"rsa\"\nbits = 2048\nfile = \"s1.pem\"\nstate = \"active\"\ncreated = \"2026-05-22T10:00:00Z\"\n{extra}"
        )
    };
    let err = |text: &str, domain: &str| {
        from_text(Path::new("/k/state.toml"), text, domain)
            .unwrap_err()
            .to_string()
    };
    assert!(from_text(Path::new("s"), &key(""), "example.com").is_ok());
    for (text, domain, expected) in [
        (
            key(""),
            "example.org",
            "/k/state.toml: holds the keys of example.com, but the configuration uses it for example.org",
        ),
        (
            key("").replace("version = 1", "version = 2"),
            "example.com",
            "/k/state.toml: version 2 is not understood (this rmilter reads version 1)",
        ),
        (
            key("").replace("\"active\"", "\"signing\""),
            "example.com",
            "/k/state.toml: key[0]: state \"signing\": expected pending, active, retiring or retired",
        ),
        (
            key("").replace("\"s1.pem\"", "\"../s1.pem\""),
            "example.com",
            "/k/state.toml: key[0]: file \"../s1.pem\" must be a file name inside the key directory",
        ),
        (
            key("").replace("\"s1.pem\"", "\"/etc/shadow\""),
            "example.com",
            "/k/state.toml: key[0]: file \"/etc/shadow\" must be a file name inside the key directory",
        ),
        (
            key("").replace("selector = \"s1\"", "selector = \"a/b\""),
            "example.com",
            "/k/state.toml: key[0]: invalid selector \"a/b\" (letters, digits, hyphens and dots)",
        ),
        (
            key("").replace("2026-05-22T10:00:00Z", "yesterday"),
            "example.com",
            "/k/state.toml: key[0]: created \"yesterday\" is not an RFC 3339 UTC time",
        ),
        (
            key("").replace("\"rsa\"", "\"dsa\""),
            "example.com",
            "/k/state.toml: key[0]: expected \"rsa\" or \"ed25519\", got \"dsa\"",
        ),
        (
            format!(
                "{}[[key]]\nselector = \"s1\"\nalgorithm = \"rsa\"\nbits = 2048\nfile = \"x.pem\"\nstate = \"pending\"\ncreated = \"2026-05-22T10:00:00Z\"\n",
                key("")
            ),
            "example.com",
            "/k/state.toml: key[1]: selector s1 is listed twice",
        ),
        (
            key("colour = \"blue\"\n"),
            "example.com",
            "/k/state.toml: line 10: unknown field `colour`, expected one of `selector`, `algorithm`, `bits`, `file`, `state`, `created`, `activated`, `retiring`, `retired`",
        ),
        (
            "version = 1\ndomain = ".to_string(),
            "example.com",
            "/k/state.toml: line 2: string values must be quoted, expected literal string",
        ),
    ] {
        assert_eq!(err(&text, domain), expected, "{text}");
    }
}

#[test]
fn read_refuses_unsafe_state_files_and_treats_none_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        read(dir.path(), "example.com", None).unwrap(),
        DomainState::empty("example.com")
    );
    assert_eq!(
        read(&dir.path().join("missing"), "example.com", None).unwrap(),
        DomainState::empty("example.com")
    );
    let path = dir.path().join(STATE_FILE);
    std::fs::write(&path, to_text(&domain())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(dir.path(), "example.com", None).unwrap(), domain());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = read(dir.path(), "example.com", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("writable by group or others (mode 0666)"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, to_text(&domain())).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let err = read(dir.path(), "example.com", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn writes_replace_atomically_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock(dir.path(), Duration::ZERO, None).unwrap();
    // A second lock on the same directory is refused while the first is held.
    let busy = super::lock(dir.path(), Duration::from_millis(120), None)
        .err()
        .unwrap()
        .to_string();
    assert!(busy.contains("another `rmilter keys` command"), "{busy}");
    write(&lock, &domain(), None).unwrap();
    let mut st = domain();
    st.activate("old", t(1)).unwrap();
    write(&lock, &st, None).unwrap();
    assert_eq!(read(dir.path(), "example.com", None).unwrap(), st);
    let mode = std::fs::metadata(dir.path().join(STATE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, [LOCK_FILE, STATE_FILE]);
    drop(lock);
    super::lock(dir.path(), Duration::ZERO, None).unwrap();
}

#[test]
fn dates_for_selector_templates() {
    let when = humantime::parse_rfc3339("2026-05-22T23:59:59Z").unwrap();
    assert_eq!(date(when), "20260522");
    assert_eq!(timestamp(when), "2026-05-22T23:59:59Z");
}
