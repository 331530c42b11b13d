//! `rmilter report send`: mail every finished report to its policy
//! domain's `rua=` addresses through the local MTA, at least once and never
//! with a new identity.
//!
//! For each (policy domain, period) that has ended: keep the report in the
//! store (generated once; every send uses the stored bytes), look up the
//! domain's DMARC record for its `rua=` `mailto:` addresses, drop those
//! whose `!size` the report exceeds, check foreign destinations with the
//! RFC 9990 §4 authorisation record (`<policy-domain>._report._dmarc.<dest>`;
//! a temporary DNS error postpones), and then, per destination: claim the
//! delivery row with a lease, hand the message to `sendmail` (Postfix
//! queues, retries and DKIM-signs it through rmilter as local submission),
//! and mark it sent. A run that dies after the MTA took the message but
//! before marking it sent leaves the claim to expire; the next run sends the
//! same message again (at-least-once: exactly-once over SMTP cannot be had).
//! Concurrent runs, on one host or several sharing a PostgreSQL store,
//! cannot both hold a claim, so each destination gets one report.

use super::generate;
use super::store::{self, Store, StoredReport};
use super::unix_time;
use crate::config::{DnsSettings, ReportSettings, normalize_domain};
use crate::verify::dmarc::AtName;
use crate::verify::spf::{HickoryDns, Lookup, SpfDns};
use base64::Engine as _;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long `report send` waits for a locked SQLite store.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sendmail may take to accept one message.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(120);

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Reports (policy domain, period) looked at.
    pub reports: usize,
    /// Messages handed to the MTA.
    pub sent: usize,
    /// Deliveries already done by an earlier run (or another host).
    pub done: usize,
    /// Deliveries claimed by another run right now.
    pub busy: usize,
    /// Destinations refused for good (not authorised, too large, own address, given up).
    pub skipped: usize,
    /// Deliveries put off: temporary DNS error, retry not yet due.
    pub postponed: usize,
    /// Hand-overs to the MTA that failed (retried later).
    pub failed: usize,
    /// Dry run: deliveries that would be sent.
    pub would_send: usize,
    /// The failure reports (RFC 9991) of the run.
    pub failures: super::failures::Summary,
}

pub struct Options {
    pub dry_run: bool,
    /// The current time (Unix seconds); settable for catching up and tests.
    pub now: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            dry_run: false,
            now: unix_time(SystemTime::now()),
        }
    }
}

/// One reporting destination from `rua=`.
#[derive(Debug, Clone)]
struct Destination {
    address: String,
    max_size: usize,
}

enum Rua {
    Found(Vec<Destination>),
    None,
    TempError(String),
}

pub(crate) enum Authorised {
    Yes,
    No(String),
    TempError(String),
}

/// Send every report due. `progress` gets one line per delivery.
pub fn run(
    settings: &ReportSettings,
    dns: &DnsSettings,
    options: &Options,
    progress: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let now = options.now;
    let mut store = Store::open(&settings.store, BUSY_TIMEOUT)?;
    if !options.dry_run {
        let cutoff = now - settings.retention.as_secs() as i64;
        store.purge(cutoff)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let auth = rt.block_on(async { crate::dns::authenticator(dns) })?;
    let resolver = HickoryDns::new(auth.resolver().clone());
    let owner = lease_owner();
    let retry_for = settings.retry_for.as_secs() as i64;
    let since = now - retry_for - settings.period.as_secs() as i64;
    let periods = store.periods(now, since)?;
    let mut summary = Summary::default();
    let mut work: Vec<(StoredReport, Destination, Vec<u8>)> = Vec::new();

    for (domain, begin, end) in periods {
        if normalize_domain(&domain).ok().as_deref() != Some(domain.as_str()) {
            let _ = writeln!(progress, "{domain}: not a valid domain name, not reported");
            continue;
        }
        // Nothing left to do for this report?
        let deliveries = store.deliveries(&domain, begin)?;
        if !deliveries.is_empty()
            && deliveries
                .iter()
                .all(|d| d.state == store::SENT || d.state == store::SKIPPED)
        {
            summary.done += deliveries.iter().filter(|d| d.state == store::SENT).count();
            continue;
        }
        let Some(report) = generate::ensure(
            &mut store,
            settings,
            &domain,
            begin,
            end,
            now,
            !options.dry_run,
        )?
        else {
            continue;
        };
        summary.reports += 1;
        kill_point("generated");
        let label = format!("{} {}", domain, period_label(begin, end));
        let destinations = match rt.block_on(rua(&resolver, &domain, settings.max_rua_addresses)) {
            Rua::Found(list) => list,
            Rua::None => {
                let _ = writeln!(
                    progress,
                    "{label}: no rua= in the DMARC record, nothing to send"
                );
                continue;
            }
            Rua::TempError(e) => {
                summary.postponed += 1;
                let _ = writeln!(
                    progress,
                    "{label}: DMARC record lookup failed ({e}); postponed"
                );
                continue;
            }
        };
        for dest in destinations {
            let message = message(settings, &report, &dest.address);
            let address = dest.address.clone();
            if let Some(existing) = deliveries.iter().find(|d| d.destination == address)
                && (existing.state == store::SENT || existing.state == store::SKIPPED)
            {
                if existing.state == store::SENT {
                    summary.done += 1;
                }
                continue;
            }
            let skip =
                |store: &mut Store, summary: &mut Summary, progress: &mut dyn Write, why: &str| {
                    summary.skipped += 1;
                    let _ = writeln!(progress, "{label} -> {address}: not sent: {why}");
                    if !options.dry_run {
                        store.add_delivery(&domain, begin, &address, now)?;
                        store.set_state(&domain, begin, &address, store::SKIPPED, why, 0, now)?;
                    }
                    Ok::<(), store::StoreError>(())
                };
            if let Some(why) = refused_locally(settings, &domain, &address, false) {
                skip(&mut store, &mut summary, progress, why)?;
                continue;
            }
            let dest_domain = address
                .rsplit_once('@')
                .map(|(_, d)| d)
                .unwrap_or_default()
                .to_string();
            // RFC 9990 §2.5: a URI whose size limit the report exceeds MUST NOT be used.
            if dest.max_size > 0 && message.len() > dest.max_size {
                let why = format!(
                    "the report ({} bytes) exceeds the destination's limit of {} bytes",
                    message.len(),
                    dest.max_size
                );
                skip(&mut store, &mut summary, progress, &why)?;
                continue;
            }
            if !within(&dest_domain, &domain) {
                match rt.block_on(authorised(&resolver, &domain, &dest_domain)) {
                    Authorised::Yes => {}
                    Authorised::No(why) => {
                        skip(&mut store, &mut summary, progress, &why)?;
                        continue;
                    }
                    Authorised::TempError(e) => {
                        // RFC 9990 §4 step 5: a temporary error postpones.
                        // Keep the delivery pending so the report is not
                        // taken as done.
                        if !options.dry_run {
                            store.add_delivery(&domain, begin, &address, now)?;
                        }
                        summary.postponed += 1;
                        let _ = writeln!(
                            progress,
                            "{label} -> {address}: authorisation lookup failed ({e}); postponed"
                        );
                        continue;
                    }
                }
            }
            if !options.dry_run {
                store.add_delivery(&domain, begin, &address, now)?;
            }
            work.push((report.clone(), dest, message));
        }
    }

    // Round robin over destinations, so the per-destination interval does
    // not hold up the others.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ordered: Vec<(usize, usize)> = work
        .iter()
        .enumerate()
        .map(|(i, (_, d, _))| {
            let n = seen.entry(d.address.clone()).or_insert(0);
            *n += 1;
            (*n, i)
        })
        .collect();
    ordered.sort();
    let total = ordered.len();
    let mut last_sent: HashMap<String, Instant> = HashMap::new();
    for (position, (_, i)) in ordered.into_iter().enumerate() {
        let (report, dest, message) = &work[i];
        let domain = &report.policy_domain;
        let begin = report.period_begin;
        let label = format!(
            "[{}/{}] {} {} -> {}",
            position + 1,
            total,
            domain,
            period_label(begin, report.period_end),
            dest.address
        );
        if options.dry_run {
            summary.would_send += 1;
            let _ = writeln!(
                progress,
                "{label}: would send {} ({} bytes, {} messages, Report-ID {})",
                report.filename,
                message.len(),
                report.messages,
                report.report_id
            );
            continue;
        }
        if report.period_end + retry_for < now {
            summary.skipped += 1;
            store.set_state(
                domain,
                begin,
                &dest.address,
                store::SKIPPED,
                "gave up (report.retry_for)",
                0,
                now,
            )?;
            let _ = writeln!(
                progress,
                "{label}: gave up, the period ended more than report.retry_for ago"
            );
            tracing::warn!(domain = %domain, destination = %dest.address, "report given up after report.retry_for");
            continue;
        }
        if let Some(last) = last_sent.get(&dest.address) {
            let wait = settings.destination_interval.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let lease_until = now.max(unix_time(SystemTime::now())) + settings.lease.as_secs() as i64;
        if !store.claim(domain, begin, &dest.address, &owner, now, lease_until)? {
            let state = store
                .deliveries(domain, begin)?
                .into_iter()
                .find(|d| d.destination == dest.address);
            match state {
                Some(d) if d.state == store::SENT => {
                    summary.done += 1;
                    let _ = writeln!(progress, "{label}: already sent");
                }
                Some(d) if d.state == store::SENDING => {
                    summary.busy += 1;
                    let _ = writeln!(
                        progress,
                        "{label}: being sent by {} (claim until {})",
                        d.owner, d.lease_until
                    );
                }
                Some(d) if d.state == store::PENDING => {
                    summary.postponed += 1;
                    let _ = writeln!(
                        progress,
                        "{label}: retry due at {} (last error: {})",
                        d.next_attempt, d.last_error
                    );
                }
                _ => {
                    summary.skipped += 1;
                }
            }
            continue;
        }
        kill_point("claimed");
        last_sent.insert(dest.address.clone(), Instant::now());
        match sendmail(&settings.sendmail, &settings.email, &dest.address, message) {
            Ok(()) => {
                kill_point("accepted");
                store.finish(
                    domain,
                    begin,
                    &dest.address,
                    &owner,
                    store::SENT,
                    "",
                    0,
                    now,
                )?;
                summary.sent += 1;
                let _ = writeln!(
                    progress,
                    "{label}: sent {} ({} bytes, {} messages)",
                    report.filename,
                    message.len(),
                    report.messages
                );
                tracing::info!(domain = %domain, destination = %dest.address, report_id = %report.report_id, "DMARC report handed to the MTA");
            }
            Err(e) => {
                let attempts = store
                    .deliveries(domain, begin)?
                    .into_iter()
                    .find(|d| d.destination == dest.address)
                    .map_or(1, |d| d.attempts.max(1));
                let next = now + backoff(attempts);
                store.finish(
                    domain,
                    begin,
                    &dest.address,
                    &owner,
                    store::PENDING,
                    &e,
                    next,
                    now,
                )?;
                summary.failed += 1;
                let _ = writeln!(
                    progress,
                    "{label}: sendmail failed: {e}; retry after {next}"
                );
                tracing::warn!(domain = %domain, destination = %dest.address, error = %e, "DMARC report not handed to the MTA");
            }
        }
    }
    // RFC 9991 failure reports queued by the milter go out with the same
    // sender, store and claims.
    let run = super::failures::Run {
        settings,
        rt: &rt,
        resolver: &resolver,
        owner: &owner,
        now,
        dry_run: options.dry_run,
        print: false,
    };
    summary.failures = super::failures::send_due(&mut store, &run, progress)?;
    Ok(summary)
}

impl Summary {
    pub fn line(&self, dry_run: bool) -> String {
        let base = if dry_run {
            format!(
                "report send (dry run): {} reports, would send {}, already sent {}, skipped {}, postponed {}",
                self.reports, self.would_send, self.done, self.skipped, self.postponed
            )
        } else {
            format!(
                "report send: {} reports, sent {}, already sent {}, being sent elsewhere {}, skipped {}, postponed {}, failed {}",
                self.reports,
                self.sent,
                self.done,
                self.busy,
                self.skipped,
                self.postponed,
                self.failed
            )
        };
        if self.failures.reports > 0 {
            format!("{base}; {}", self.failures.line(dry_run))
        } else {
            base
        }
    }
}

/// Retry delay after `attempts` failed hand-overs: 5 minutes, doubling, at most 6 hours.
pub(crate) fn backoff(attempts: i64) -> i64 {
    let shift = (attempts - 1).clamp(0, 10) as u32;
    (300i64 << shift).min(6 * 3600)
}

/// Why a report about `domain` must not go to `address`, known without
/// asking DNS: it is rmilter's own report address (the report would be
/// verified and reported again), or, for a report rather than the
/// operator's own copy (`copy`), one about our own domain to our own
/// domain (a loop). Aggregate and failure reports both ask this first.
pub(crate) fn refused_locally(
    settings: &ReportSettings,
    domain: &str,
    address: &str,
    copy: bool,
) -> Option<&'static str> {
    if address.eq_ignore_ascii_case(&settings.email) {
        return Some("this is rmilter's own report address");
    }
    let dest_domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    if !copy
        && within(domain, &settings.reporting_domain)
        && within(dest_domain, &settings.reporting_domain)
    {
        return Some("a report about our own domain to our own domain (loop)");
    }
    None
}

/// `name` is `parent` or below it.
pub(crate) fn within(name: &str, parent: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let parent = parent.to_ascii_lowercase();
    name == parent || name.ends_with(&format!(".{parent}"))
}

fn period_label(begin: i64, end: i64) -> String {
    let at = |t: i64| {
        humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64),
        )
        .to_string()
    };
    format!("{}..{}", at(begin), at(end + 1))
}

/// The `rua=` mailto: destinations of the domain's DMARC record (read with
/// rmilter's parser; several records at the name count as none, RFC 9989
/// §4.10), at most `max` of them, in the record's order.
async fn rua(dns: &HickoryDns, domain: &str, max: usize) -> Rua {
    match dns.txt(&format!("_dmarc.{domain}")).await {
        Lookup::Found(records) => match crate::verify::dmarc::record::at_name(&records) {
            AtName::One(record) => {
                let list: Vec<Destination> = record
                    .rua_addresses()
                    .filter(|(address, _)| valid_address(address))
                    .take(max)
                    .map(|(address, max_size)| Destination {
                        address: address.to_string(),
                        max_size,
                    })
                    .collect();
                if list.is_empty() {
                    Rua::None
                } else {
                    Rua::Found(list)
                }
            }
            AtName::Nothing | AtName::Several(_) => Rua::None,
        },
        Lookup::NxDomain | Lookup::NoData => Rua::None,
        Lookup::TempError(e) => Rua::TempError(e),
    }
}

/// RFC 9990 §4 "Verifying External Destinations".
pub(crate) async fn authorised(dns: &HickoryDns, domain: &str, dest_domain: &str) -> Authorised {
    let name = format!("{domain}._report._dmarc.{dest_domain}");
    // Step 4: a name over the DNS limit cannot be authorised.
    if name.len() > 253 {
        return Authorised::No(format!("{name} is too long to be an authorisation record"));
    }
    match dns.txt(&name).await {
        Lookup::Found(records) => {
            // Step 6: "v=DMARC1" first.
            let ok = records.iter().any(|r| {
                let text = String::from_utf8_lossy(r);
                text.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("v=DMARC1"))
            });
            if ok {
                Authorised::Yes
            } else {
                Authorised::No(format!(
                    "{dest_domain} has not authorised reports for {domain} ({name} has no v=DMARC1 record)"
                ))
            }
        }
        Lookup::NxDomain | Lookup::NoData => Authorised::No(format!(
            "{dest_domain} has not authorised reports for {domain} (no TXT record at {name})"
        )),
        Lookup::TempError(e) => Authorised::TempError(e),
    }
}

/// An address safe to put on a command line and in a header: local@domain
/// with no whitespace, controls or header specials.
pub(crate) fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.starts_with('-')
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@".contains(&b))
        && normalize_domain(domain).is_ok_and(|d| d.eq_ignore_ascii_case(domain))
}

/// The report mail (RFC 9990 §2.5.2): Subject, Message-ID and attachment
/// derived from the stored report only, so a re-send is the same message.
pub fn message(settings: &ReportSettings, report: &StoredReport, to: &str) -> Vec<u8> {
    let id = &report.report_id;
    let boundary = format!("=_rmilter_{id}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&report.gz);
    let mut m = String::new();
    m.push_str(&format!("From: {}\n", settings.email));
    m.push_str(&format!("To: {to}\n"));
    m.push_str(&format!(
        "Subject: Report Domain: {}\n Submitter: {}\n Report-ID: <{id}>\n",
        report.policy_domain, settings.reporting_domain
    ));
    m.push_str(&format!("Date: {}\n", rfc5322_date(report.generated)));
    m.push_str(&format!(
        "Message-ID: <{id}@{}>\n",
        settings.reporting_domain
    ));
    m.push_str("MIME-Version: 1.0\n");
    // RFC 3834: automatic replies must not answer this.
    m.push_str("Auto-Submitted: auto-generated\n");
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n"
    ));
    m.push_str("This is a multi-part message in MIME format.\n\n");
    m.push_str(&format!("--{boundary}\n"));
    m.push_str("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
    m.push_str(&format!(
        "This is a DMARC aggregate report (RFC 9990) for {} from {},\ncovering {} (UTC): {} messages.\nReport-ID: {id}\n\n",
        report.policy_domain,
        settings.org_name,
        period_label(report.period_begin, report.period_end),
        report.messages
    ));
    m.push_str(&format!("--{boundary}\n"));
    m.push_str(&format!(
        "Content-Type: application/gzip; name=\"{}\"\nContent-Disposition: attachment; filename=\"{}\"\nContent-Transfer-Encoding: base64\n\n",
        report.filename, report.filename
    ));
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        m.push('\n');
    }
    m.push_str(&format!("--{boundary}--\n"));
    m.into_bytes()
}

/// RFC 5322 §3.3 date-time in UTC.
pub fn rfc5322_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Hand one message to the local MTA: `sendmail -i -f FROM -- TO`. Exit
/// status 0 means the MTA has queued it.
pub(crate) fn sendmail(
    command: &[String],
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("report.sendmail is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .args(["-i", "-f", from, "--", to])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(message)
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let deadline = Instant::now() + SENDMAIL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within {SENDMAIL_TIMEOUT:?}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{program} exited with {}: {}",
            out.status,
            text.trim()
        ))
    }
}

/// Crash testing: the steps of a send (after the report was stored, after
/// the delivery was claimed, after the MTA accepted the message and before
/// it was marked sent) are crash points `report:generated`,
/// `report:claimed` and `report:accepted` (see `keys::files::crash_point`:
/// debug builds only).
fn kill_point(step: &str) {
    crate::keys::files::crash_point(&format!("report:{step}"));
}

/// Who holds a delivery claim in the store: host name, process id and a
/// random tag, so that a crashed run's claims are told from a live one's.
pub(super) fn lease_owner() -> String {
    format!(
        "{}:{}:{}",
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        std::process::id(),
        &store::random_id()[..8]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_refused_before_any_lookup() {
        let text = "[report]\nemail = \"dmarc@example.org\"\nreporting_domain = \"example.org\"\n";
        let config = crate::config::from_text(
            crate::config::Source::Embedded,
            text,
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let s = &config.report;
        let own = Some("this is rmilter's own report address");
        let looped = Some("a report about our own domain to our own domain (loop)");
        for (domain, address, copy, want) in [
            ("sender.example", "DMARC@Example.org", false, own),
            ("sender.example", "dmarc@example.org", true, own),
            ("example.org", "postmaster@example.org", false, looped),
            ("mail.example.org", "rua@reports.example.org", false, looped),
            // The operator's copy of a report about our own domain.
            ("example.org", "copies@example.org", true, None),
            ("example.org", "rua@reports.example", false, None),
            ("sender.example", "rua@sender.example", false, None),
        ] {
            assert_eq!(
                refused_locally(s, domain, address, copy),
                want,
                "{domain} -> {address} (copy: {copy})"
            );
        }
    }
}
