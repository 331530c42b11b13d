//! A private, throw-away Postfix instance for rmilter's end-to-end tests.
//!
//! [`Postfix::start`] writes a `main.cf`/`master.cf` into a fresh temporary directory (config,
//! queue, data directory and maillog all live there), wires the milters under test into
//! `smtpd_milters`/`non_smtpd_milters`, relays every message to an in-process [`Sink`], and
//! starts `postfix -c DIR start`. Tests then submit mail the ways real clients do (SMTP from the
//! internal network, from "the internet" via XCLIENT, with real SMTP AUTH against a Cyrus SASL
//! sasldb, or locally through `sendmail(1)` and pickup), look at the queue (`postqueue -j`) and
//! the instance's own log, and read what the sink received. Dropping the value stops this
//! instance (and only this one), also when a test panics. Needs root and Debian's `postfix`
//! and `sasl2-bin` packages. Several instances run side by side in one test process: each has
//! its own ports, directories and `smtpd_banner` tag.
#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::sink::Sink;
use super::smtp::{self, SmtpOutcome, Submission};

/// Upper bound for Postfix to come up, for commands like `postqueue`, and for the default waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// `myhostname` of every test instance (macro `j`, the Received header, the SASL realm).
pub const MYHOSTNAME: &str = "mta.rmilter.test";

const POSTFIX: &str = "/usr/sbin/postfix";
const SENDMAIL: &str = "/usr/sbin/sendmail";
const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";

/// What differs between test instances; everything else is fixed in [`Postfix::start`].
#[derive(Clone, Debug)]
pub struct PostfixConfig {
    /// e.g. "inet:127.0.0.1:40123" or "unix:/path/sock"; several separated by ", "; "" = none.
    /// smtpd and cleanup run as user `postfix`: a unix socket must be connectable by it (a
    /// directory of mode 0755, the socket 0666 or owned by postfix).
    pub smtpd_milters: String,
    /// Milters for local submission (sendmail/pickup); "" = none.
    pub non_smtpd_milters: String,
    /// What Postfix does when a milter is unreachable or times out ("tempfail", "accept", ...).
    pub milter_default_action: String,
    /// Clients allowed to relay without AUTH.
    pub mynetworks: String,
    /// SASL users (name, password) created in the instance's sasldb before start.
    pub sasl_users: Vec<(String, String)>,
    /// `Some(overrides)` adds a second smtpd on its own port, like master.cf's `submission`
    /// service, with these `-o name=value` overrides, e.g.
    /// `("milter_macro_daemon_name", "ORIGINATING")`. See [`Postfix::submission_port`].
    pub submission: Option<Vec<(String, String)>>,
    /// Further main.cf settings; they replace the harness's value for the same name.
    pub extra_main_cf: Vec<(String, String)>,
}

impl Default for PostfixConfig {
    fn default() -> PostfixConfig {
        PostfixConfig {
            smtpd_milters: String::new(),
            non_smtpd_milters: String::new(),
            milter_default_action: "tempfail".into(),
            mynetworks: "127.0.0.0/8".into(),
            sasl_users: Vec::new(),
            submission: None,
            extra_main_cf: Vec::new(),
        }
    }
}

impl PostfixConfig {
    /// The same milter(s) for SMTP and for local submission.
    pub fn with_milters(milters: &str) -> PostfixConfig {
        PostfixConfig {
            smtpd_milters: milters.into(),
            non_smtpd_milters: milters.into(),
            ..PostfixConfig::default()
        }
    }
}

/// One message in the Postfix queue, from `postqueue -j`.
#[derive(Clone, Debug)]
pub struct QueueEntry {
    pub queue_id: String,
    /// "maildrop", "incoming", "active", "deferred" or "hold".
    pub queue_name: String,
    pub sender: String,
    pub recipients: Vec<String>,
    /// The first recipient's delay reason (deferred mail), if any.
    pub reason: Option<String>,
}

/// A running private Postfix instance; dropping it stops the instance (`Drop::drop` runs before
/// the temporary directory and the sink are dropped).
pub struct Postfix {
    dir: tempfile::TempDir,
    config_dir: PathBuf,
    queue_dir: PathBuf,
    log_path: PathBuf,
    sasldb: PathBuf,
    sasl_realm: String,
    smtp_port: u16,
    submission_port: Option<u16>,
    sink: Sink,
}

impl Postfix {
    /// Writes the configuration and starts Postfix; panics with the reason (and the log) if it
    /// cannot. A start that fails is retried with fresh ports, since a port picked as free can
    /// be taken by a parallel test before Postfix binds it.
    pub fn start(cfg: PostfixConfig) -> Postfix {
        preflight(&cfg);
        let mut last_error = String::new();
        for attempt in 1..=3 {
            let pf = Postfix::configure(&cfg);
            match pf.launch() {
                Ok(()) => return pf,
                Err(e) => {
                    eprintln!("postfix test instance: start attempt {attempt} failed: {e}");
                    last_error = format!("{e}\n{}", pf.diag());
                }
            }
        }
        panic!("could not start a private Postfix instance:\n{last_error}");
    }

    /// Port of the smtpd listening on 127.0.0.1.
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// Port of the second smtpd configured with [`PostfixConfig::submission`].
    pub fn submission_port(&self) -> Option<u16> {
        self.submission_port
    }

    /// One SMTP session against the main smtpd.
    pub fn submit(&self, s: &Submission) -> SmtpOutcome {
        smtp::submit(self.smtp_port, s)
    }

    /// One SMTP session against the submission smtpd; panics if none was configured.
    pub fn submit_submission(&self, s: &Submission) -> SmtpOutcome {
        let port = self
            .submission_port
            .expect("PostfixConfig::submission was not set");
        smtp::submit(port, s)
    }

    /// Submits like a local program (cron, a report mailer): Postfix's sendmail(1) with
    /// `-C <config dir>` drops the message into this instance's maildrop; pickup and cleanup
    /// then run `non_smtpd_milters`. `message` may use LF or CRLF line ends.
    pub fn sendmail(&self, from: &str, rcpts: &[&str], message: &[u8]) -> Output {
        let mut cmd = Command::new(SENDMAIL);
        cmd.arg("-C")
            .arg(&self.config_dir)
            .args(["-i", "-f", from, "--"])
            .args(rcpts);
        run_bounded(cmd, Some(message), WAIT)
    }

    /// Makes pickup scan the maildrop directory now (postdrop already does this on submit).
    pub fn kick_pickup(&self) {
        let mut cmd = Command::new("/usr/sbin/postkick");
        cmd.arg("-c")
            .arg(&self.config_dir)
            .args(["public", "pickup", "W"]);
        run_bounded(cmd, None, WAIT);
    }

    /// `postqueue -f`: attempt delivery of all queued mail now.
    pub fn flush(&self) {
        let mut cmd = Command::new("/usr/sbin/postqueue");
        cmd.arg("-c").arg(&self.config_dir).arg("-f");
        let out = run_bounded(cmd, None, WAIT);
        assert!(
            out.status.success(),
            "postqueue -f failed: {}\n{}",
            show(&out),
            self.diag()
        );
    }

    /// `postsuper -r ALL`/`-H`/`-d` style maintenance: runs postsuper with the given arguments.
    pub fn postsuper(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("/usr/sbin/postsuper");
        cmd.arg("-c").arg(&self.config_dir).args(args);
        run_bounded(cmd, None, WAIT)
    }

    /// The queue as `postqueue -j` reports it.
    pub fn queue(&self) -> Vec<QueueEntry> {
        let mut cmd = Command::new("/usr/sbin/postqueue");
        cmd.arg("-c").arg(&self.config_dir).arg("-j");
        let out = run_bounded(cmd, None, WAIT);
        assert!(
            out.status.success(),
            "postqueue -j failed: {}\n{}",
            show(&out),
            self.diag()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("postqueue -j printed {l:?}: {e}"));
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                let rcpts = v["recipients"].as_array().cloned().unwrap_or_default();
                QueueEntry {
                    queue_id: text(&v["queue_id"]),
                    queue_name: text(&v["queue_name"]),
                    sender: text(&v["sender"]),
                    recipients: rcpts.iter().map(|r| text(&r["address"])).collect(),
                    reason: rcpts
                        .iter()
                        .find_map(|r| r["delay_reason"].as_str().map(String::from)),
                }
            })
            .collect()
    }

    /// Polls the queue until `done` holds or `timeout` passes; returns the last listing.
    pub fn wait_queue(
        &self,
        timeout: Duration,
        done: impl Fn(&[QueueEntry]) -> bool,
    ) -> Vec<QueueEntry> {
        let deadline = Instant::now() + timeout;
        loop {
            let q = self.queue();
            if done(&q) || Instant::now() >= deadline {
                return q;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// This instance's maillog so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`; false after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Text for assertion messages: where the instance lives and the tail of its log.
    pub fn diag(&self) -> String {
        format!(
            "--- Postfix test instance {} (smtpd 127.0.0.1:{}, sink 127.0.0.1:{}), last log lines ---\n{}\n---",
            self.dir.path().display(),
            self.smtp_port,
            self.sink.port(),
            self.log_tail(40)
        )
    }

    /// The in-process SMTP server Postfix relays to.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The instance's `config_directory` (main.cf, master.cf, sasl/).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The instance's temporary root; tests may put their own files (keys, sockets) here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates or updates a SASL user in the instance's sasldb (takes effect immediately).
    pub fn add_sasl_user(&self, user: &str, password: &str) {
        add_sasl_user(&self.sasldb, &self.sasl_realm, user, password);
    }

    /// Writes config files and directories, without starting anything.
    fn configure(cfg: &PostfixConfig) -> Postfix {
        // RMILTER_TEST_KEEP=1 keeps the directory (config, queue, maillog) for a post-mortem.
        let keep = std::env::var_os("RMILTER_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("rmilter-postfix-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("create temporary directory for Postfix");
        if keep {
            eprintln!(
                "RMILTER_TEST_KEEP: Postfix test instance in {}",
                dir.path().display()
            );
        }
        // The postfix user must reach the queue, the log and the sasldb below this directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().to_path_buf();
        let config_dir = root.join("etc");
        let queue_dir = root.join("spool");
        let log_path = root.join("maillog");
        let sasl_dir = config_dir.join("sasl");
        // Outside config_directory: `postfix check` wants everything there owned by root.
        let sasldb = root.join("sasldb2");
        std::fs::create_dir_all(&sasl_dir).unwrap();
        std::fs::create_dir_all(&queue_dir).unwrap();
        std::fs::write(&log_path, b"").unwrap();

        let sink = Sink::start();
        let smtp_port = free_port();
        let submission_port = cfg.submission.as_ref().map(|_| free_port());
        // Tags the banner and main.cf, to tell instances apart when debugging.
        let tag = root.file_name().unwrap().to_string_lossy().into_owned();

        let mut main: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| main.push((k.to_string(), v.to_string()));
        set("compatibility_level", "3.6");
        set("queue_directory", &queue_dir.display().to_string());
        // Must not exist before start: postfix creates it owned by the postfix user.
        set("data_directory", &root.join("data").display().to_string());
        set("mail_owner", "postfix");
        set("setgid_group", "postdrop");
        set("myhostname", MYHOSTNAME);
        set("mydomain", "rmilter.test");
        set("myorigin", "$myhostname");
        set("mydestination", "");
        set(
            "local_transport",
            "error:5.1.1 no local delivery in rmilter tests",
        );
        set("local_recipient_maps", "");
        set("alias_maps", "");
        set("alias_database", "");
        set("inet_interfaces", "127.0.0.1");
        set("inet_protocols", "ipv4");
        set("mynetworks", &cfg.mynetworks);
        set("relayhost", &format!("[127.0.0.1]:{}", sink.port()));
        set("smtp_dns_support_level", "disabled");
        set("smtp_host_lookup", "native");
        set("smtpd_peername_lookup", "no");
        set("smtpd_banner", &format!("$myhostname ESMTP {tag}"));
        set(
            "smtpd_relay_restrictions",
            "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        );
        set("smtpd_recipient_restrictions", "");
        set("smtpd_authorized_xclient_hosts", "127.0.0.1");
        set("smtpd_client_connection_count_limit", "0");
        set("smtpd_error_sleep_time", "0");
        set("smtpd_sasl_auth_enable", "yes");
        set("smtpd_sasl_type", "cyrus");
        set("smtpd_sasl_path", "smtpd");
        // Debian's Postfix reads <config_directory>/sasl/smtpd.conf; say so explicitly too.
        set("cyrus_sasl_config_path", &sasl_dir.display().to_string());
        set("smtpd_sasl_local_domain", "");
        set("smtpd_sasl_security_options", "noanonymous");
        set("maillog_file", &log_path.display().to_string());
        set("maillog_file_prefixes", &root.display().to_string());
        set("milter_protocol", "6");
        set("milter_default_action", &cfg.milter_default_action);
        set("smtpd_milters", &cfg.smtpd_milters);
        set("non_smtpd_milters", &cfg.non_smtpd_milters);
        // Deferred mail is retried within seconds (and at once on `postqueue -f`). The backoff
        // stays above a second: a retry that races the previous attempt's delivery agent finds
        // the queue file locked ("skipped, still being delivered") and waits in `incoming` for
        // qmgr's next wakeup (1 s in master.cf below, 300 s by default).
        set("queue_run_delay", "1s");
        set("minimal_backoff_time", "2s");
        set("maximal_backoff_time", "4s");
        // Keep the sink free of postmaster notices; bounces are still sent (to the sink).
        set("notify_classes", "");
        set("biff", "no");
        set("append_dot_mydomain", "no");
        set("readme_directory", "no");
        for (k, v) in &cfg.extra_main_cf {
            match main.iter_mut().find(|(name, _)| name == k) {
                Some(entry) => entry.1 = v.clone(),
                None => main.push((k.clone(), v.clone())),
            }
        }
        let mut main_cf = format!("# rmilter test instance {tag}\n");
        for (k, v) in &main {
            main_cf.push_str(&format!("{k} = {v}\n"));
        }
        write_config(&config_dir.join("main.cf"), &main_cf);

        let mut master_cf = format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n");
        if let (Some(port), Some(overrides)) = (submission_port, &cfg.submission) {
            master_cf.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
            master_cf.push_str("  -o syslog_name=postfix/submission\n");
            for (k, v) in overrides {
                master_cf.push_str(&format!("  -o {{{k}={v}}}\n"));
            }
        }
        master_cf.push_str(MASTER_CF_SERVICES);
        write_config(&config_dir.join("master.cf"), &master_cf);

        std::fs::write(
            sasl_dir.join("smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {}\n",
                sasldb.display()
            ),
        )
        .unwrap();
        // Cyrus looks users up in the realm smtpd passes: myhostname when
        // smtpd_sasl_local_domain is empty (so the login name stays "alice", not "alice@realm").
        let sasl_realm = main
            .iter()
            .find(|(k, _)| k == "myhostname")
            .map(|(_, v)| v.clone())
            .unwrap();
        for (user, password) in &cfg.sasl_users {
            add_sasl_user(&sasldb, &sasl_realm, user, password);
        }

        Postfix {
            dir,
            config_dir,
            queue_dir,
            log_path,
            sasldb,
            sasl_realm,
            smtp_port,
            submission_port,
            sink,
        }
    }

    /// `postfix start`. It returns only after master bound every listener (it fails if a port
    /// is taken), so no probe connection is needed: a probe would show up at the milters as
    /// an extra connect/quit.
    fn launch(&self) -> Result<(), String> {
        let mut cmd = Command::new(POSTFIX);
        cmd.arg("-c").arg(&self.config_dir).arg("start");
        let out = run_bounded(cmd, None, WAIT);
        if !out.status.success() {
            return Err(format!("postfix start failed: {}", show(&out)));
        }
        match self.master_pid() {
            Some(pid) if alive(pid) => Ok(()),
            _ => Err("postfix start succeeded but no master process is running".into()),
        }
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.queue_dir.join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let master = self.master_pid();
        let mut cmd = Command::new(POSTFIX);
        cmd.arg("-c").arg(&self.config_dir).arg("stop");
        let _ = try_run_bounded(cmd, None, Duration::from_secs(15));
        if let Some(pid) = master {
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                signal_kill(pid);
            }
        }
        // Postfix daemons carry MAIL_CONFIG=<this config dir>; kill any that outlived master.
        for pid in processes_with_env(&format!("MAIL_CONFIG={}", self.config_dir.display())) {
            signal_kill(pid);
        }
    }
}

/// master.cf services besides the smtpd listeners (the Debian defaults without chroot,
/// local delivery or content filters, plus postlogd for `maillog_file`).
const MASTER_CF_SERVICES: &str = "\
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 1     1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
";

/// Writes a Postfix config file dated a minute back: Postfix re-reads a file modified in the
/// current second, sleeping 300 ms per round, which made every start take seconds.
fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

fn preflight(cfg: &PostfixConfig) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(String::from));
    assert_eq!(
        euid.as_deref(),
        Some("0"),
        "the Postfix end-to-end tests must run as root (they start a private Postfix instance)"
    );
    assert!(
        Path::new(POSTFIX).exists() && Path::new(SENDMAIL).exists(),
        "Postfix is not installed ({POSTFIX}); install Debian's `postfix` package"
    );
    assert!(
        cfg.sasl_users.is_empty() || Path::new(SASLPASSWD2).exists(),
        "{SASLPASSWD2} is missing; install Debian's `sasl2-bin` and `libsasl2-modules`"
    );
}

fn add_sasl_user(sasldb: &Path, realm: &str, user: &str, password: &str) {
    let mut cmd = Command::new(SASLPASSWD2);
    cmd.arg("-f")
        .arg(sasldb)
        .args(["-p", "-c", "-u", realm, user]);
    let out = run_bounded(cmd, Some(password.as_bytes()), WAIT);
    assert!(
        out.status.success(),
        "saslpasswd2 for {user} failed: {}",
        show(&out)
    );
    // smtpd runs as the postfix user and opens the sasldb itself.
    let uid = user_id("postfix").expect("no user `postfix` in /etc/passwd");
    std::os::unix::fs::chown(sasldb, Some(uid), None).unwrap();
    std::fs::set_permissions(sasldb, std::fs::Permissions::from_mode(0o640)).unwrap();
}

fn user_id(name: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command with optional stdin, killing it after `timeout`; panics on spawn failure or
/// timeout (a hung Postfix tool is a test failure, not something to wait out).
pub fn run_bounded(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    try_run_bounded(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

fn try_run_bounded(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    // Output goes to unnamed temporary files, not pipes: `postfix start` leaves master
    // running with the command's stdout/stderr, and a pipe would never reach EOF.
    let mut stdout = tempfile::tempfile().map_err(|e| format!("{what}: {e}"))?;
    let mut stderr = tempfile::tempfile().map_err(|e| format!("{what}: {e}"))?;
    let stdout_for_child = stdout.try_clone().map_err(|e| format!("{what}: {e}"))?;
    let stderr_for_child = stderr.try_clone().map_err(|e| format!("{what}: {e}"))?;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(stdout_for_child)
    .stderr(stderr_for_child);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // A separate thread, so a child that does not read its input cannot block us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read_all = |f: &mut std::fs::File| {
        let mut b = Vec::new();
        let _ = f
            .seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_end(&mut b));
        b
    };
    Ok(Output {
        status,
        stdout: read_all(&mut stdout),
        stderr: read_all(&mut stderr),
    })
}

/// "exit status: stdout / stderr" for failure messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; it only waits for its (possibly foreign) parent to reap it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .map(|s| s.trim_start().chars().next()),
            Some(Some('Z'))
        ),
        Err(_) => false,
    }
}

/// SIGKILL one process by id.
pub fn signal_kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Ids of live processes whose environment contains exactly `entry` ("NAME=value").
fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|&pid| alive(pid))
        .collect()
}
