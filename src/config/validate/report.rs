//! Validation of the `[report]` section (DMARC aggregate reports, RFC 9990).

use super::super::raw::{RawFailureReports, RawReport};
use super::super::{FailureSettings, ReportFormat, ReportSettings, ReportStore};
use super::{Ctx, count, duration, host_name, normalize_domain};
use crate::config::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

const DAY: u64 = 86_400;

pub(super) fn report(ctx: &Ctx, raw: RawReport) -> Result<ReportSettings, ConfigError> {
    let store_text = raw
        .store
        .unwrap_or_else(|| "/var/lib/rmilter/reports.db".to_string());
    let store = if store_text.starts_with("postgres://") || store_text.starts_with("postgresql://")
    {
        // sslmode and sslrootcert are read when the store is opened; a typo
        // is refused here, at load.
        crate::report::store::tls::split_url(&store_text)
            .map_err(|m| ctx.err("report.store", m))?;
        ReportStore::Postgres(store_text)
    } else if store_text.contains("://") {
        return Err(ctx.err(
            "report.store",
            format!(
                "expected a file path or a postgres:// URL, got {:?}",
                crate::config::redact_url(&store_text)
            ),
        ));
    } else if store_text.is_empty() {
        return Err(ctx.err("report.store", "empty path"));
    } else {
        let path = PathBuf::from(&store_text);
        ReportStore::Sqlite(match &ctx.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        })
    };

    let reporting_domain = match raw.reporting_domain.as_deref().unwrap_or("") {
        "" => host_name().to_ascii_lowercase(),
        text => normalize_domain(text).map_err(|m| ctx.err("report.reporting_domain", m))?,
    };
    let email = match raw.email.as_deref().unwrap_or("") {
        "" => format!("noreply-dmarc@{reporting_domain}"),
        text => check_address(text).map_err(|m| ctx.err("report.email", m))?,
    };
    let org_name = match raw.org_name.as_deref().unwrap_or("") {
        "" => reporting_domain.clone(),
        text => one_line(text).map_err(|m| ctx.err("report.org_name", m))?,
    };
    let extra_contact_info = one_line(raw.extra_contact_info.as_deref().unwrap_or(""))
        .map_err(|m| ctx.err("report.extra_contact_info", m))?;

    let period = duration(ctx, "report.period", raw.period.as_deref(), "1d")?;
    // RFC 9990 §2.1: periods should align to hour boundaries and divide a day.
    let secs = period.as_secs();
    if period.subsec_nanos() != 0 || !(3600..=DAY).contains(&secs) || !DAY.is_multiple_of(secs) {
        return Err(ctx.err(
            "report.period",
            "must be a whole number of hours between 1h and 1d that divides a day (1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d)",
        ));
    }
    let retention = duration(ctx, "report.retention", raw.retention.as_deref(), "30d")?;
    let retry_for = duration(ctx, "report.retry_for", raw.retry_for.as_deref(), "3d")?;
    if retention < period + retry_for {
        return Err(ctx.err(
            "report.retention",
            "must be at least report.period plus report.retry_for, or unsent reports would be deleted",
        ));
    }
    let queue_size = count(
        ctx,
        "report.queue_size",
        raw.queue_size,
        10_000,
        1,
        10_000_000,
    )?;
    let format = match raw.format.as_deref().unwrap_or("rfc9990") {
        "rfc9990" => ReportFormat::Rfc9990,
        "rfc7489" => ReportFormat::Rfc7489,
        other => {
            return Err(ctx.err(
                "report.format",
                format!("expected \"rfc9990\" or \"rfc7489\", got {other:?}"),
            ));
        }
    };
    let sendmail = raw
        .sendmail
        .unwrap_or_else(|| vec!["/usr/sbin/sendmail".to_string()]);
    match sendmail.first() {
        None => return Err(ctx.err("report.sendmail", "empty command")),
        Some(program) if !program.starts_with('/') => {
            return Err(ctx.err(
                "report.sendmail",
                format!("the program must be an absolute path, got {program:?}"),
            ));
        }
        Some(_) => {}
    }
    let destination_interval = duration(
        ctx,
        "report.destination_interval",
        raw.destination_interval.as_deref(),
        "1s",
    )?;
    if destination_interval > Duration::from_secs(3600) {
        return Err(ctx.err("report.destination_interval", "must be at most 1h"));
    }
    let lease = duration(ctx, "report.lease", raw.lease.as_deref(), "10m")?;
    if lease < Duration::from_secs(1) {
        return Err(ctx.err("report.lease", "must be at least 1s"));
    }
    let schedule_in_daemon = match raw.schedule.as_deref().unwrap_or("timer") {
        "timer" => false,
        "daemon" => true,
        other => {
            return Err(ctx.err(
                "report.schedule",
                format!("expected \"timer\" or \"daemon\", got {other:?}"),
            ));
        }
    };
    // RFC 7489 §6.2 let receivers cap a record's rua= list (at two or
    // more): one record cannot fan one report out to many mailboxes.
    let max_rua_addresses = count(
        ctx,
        "report.max_rua_addresses",
        raw.max_rua_addresses,
        2,
        1,
        100,
    )?;
    let enabled = raw.enabled.unwrap_or(false);
    let failure = failure(ctx, raw.failure)?;
    if failure.enabled && !enabled {
        return Err(ctx.err(
            "report.failure.enabled",
            "failure reports are queued in the report store: set report.enabled = true too",
        ));
    }
    Ok(ReportSettings {
        enabled,
        store,
        org_name,
        email,
        extra_contact_info,
        reporting_domain,
        period,
        retention,
        queue_size,
        format,
        sendmail,
        destination_interval,
        lease,
        retry_for,
        schedule_in_daemon,
        max_rua_addresses,
        failure,
    })
}

/// `[report.failure]` (RFC 9991 failure reports).
fn failure(ctx: &Ctx, raw: RawFailureReports) -> Result<FailureSettings, ConfigError> {
    let queue_size = count(
        ctx,
        "report.failure.queue_size",
        raw.queue_size,
        1000,
        1,
        1_000_000,
    )?;
    let mut drop_headers = Vec::new();
    for name in raw.drop_headers.unwrap_or_default() {
        // RFC 5322 §3.6.8: a field name is printable ASCII except ':'.
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(ctx.err(
                "report.failure.drop_headers",
                format!("{name:?} is not a header field name"),
            ));
        }
        drop_headers.push(name.to_ascii_lowercase());
    }
    let max_body_bytes = count(
        ctx,
        "report.failure.max_body_bytes",
        raw.max_body_bytes,
        65_536,
        0,
        10 << 20,
    )?;
    let max_ruf_addresses = count(
        ctx,
        "report.failure.max_ruf_addresses",
        raw.max_ruf_addresses,
        2,
        1,
        100,
    )?;
    let per_source = count(
        ctx,
        "report.failure.per_source",
        raw.per_source,
        1,
        0,
        1_000_000,
    )?;
    let per_source_period = duration(
        ctx,
        "report.failure.per_source_period",
        raw.per_source_period.as_deref(),
        "1h",
    )?;
    if per_source_period < Duration::from_secs(1) || per_source_period > Duration::from_secs(DAY) {
        return Err(ctx.err(
            "report.failure.per_source_period",
            "must be between 1s and 1d",
        ));
    }
    let per_destination_per_day = count(
        ctx,
        "report.failure.per_destination_per_day",
        raw.per_destination_per_day,
        50,
        0,
        1_000_000,
    )?;
    let max_per_day = count(
        ctx,
        "report.failure.max_per_day",
        raw.max_per_day,
        1000,
        0,
        10_000_000,
    )?;
    let mut bcc = Vec::new();
    for address in raw.bcc.unwrap_or_default() {
        bcc.push(check_address(&address).map_err(|m| ctx.err("report.failure.bcc", m))?);
    }
    Ok(FailureSettings {
        enabled: raw.enabled.unwrap_or(false),
        queue_size,
        policy_none: raw.policy_none.unwrap_or(true),
        redact: raw.redact.unwrap_or(true),
        drop_headers,
        include_body: raw.include_body.unwrap_or(false),
        max_body_bytes,
        max_ruf_addresses,
        include_rcpt_to: raw.include_rcpt_to.unwrap_or(false),
        per_source: per_source as u64,
        per_source_period,
        per_destination_per_day: per_destination_per_day as u64,
        max_per_day: max_per_day as u64,
        bcc,
    })
}

/// A plain `local@domain` address (no display name, no comments): it goes
/// into the report, the From field and the envelope sender.
fn check_address(text: &str) -> Result<String, String> {
    let bad = || format!("expected an address such as \"dmarc@example.com\", got {text:?}");
    let (local, domain) = text.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    if !local_ok {
        return Err(bad());
    }
    let domain = normalize_domain(domain).map_err(|_| bad())?;
    Ok(format!("{local}@{domain}"))
}

fn one_line(text: &str) -> Result<String, String> {
    if text.chars().any(char::is_control) {
        Err("must be one line without control characters".to_string())
    } else {
        Ok(text.to_string())
    }
}
