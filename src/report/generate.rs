//! From stored rows to a stored report: the Report-ID and file name are
//! derived from (store, reporting domain, policy domain, period) alone, and
//! the gzip bytes are kept in the store the first time they are made, so a
//! re-send — after a crash, by another run or another host — carries the
//! same Report-ID, file name and bytes (RFC 9990 §2.5: "If a report
//! generator needs to re-send a report, the system MUST use the same
//! filename").

use super::store::{Store, StoreError, StoredReport, sha256_hex};
use super::xml::{self, Metadata};
use crate::config::ReportSettings;

/// The Report-ID: 32 hex digits. RFC 9990 §2.5.1 wants it unique among
/// reports to one domain; it is also the file name's unique-id, which
/// RFC 9990 requires to be identical to it and to be alphanumeric.
pub fn report_id(
    store_id: &str,
    reporting_domain: &str,
    domain: &str,
    begin: i64,
    end: i64,
) -> String {
    sha256_hex(
        format!("rmilter-report\n{store_id}\n{reporting_domain}\n{domain}\n{begin}\n{end}")
            .as_bytes(),
    )[..32]
        .to_string()
}

/// RFC 9990 §2.5.2: receiver "!" policy-domain "!" begin "!" end "!" unique-id ".xml.gz".
pub fn filename(reporting_domain: &str, domain: &str, begin: i64, end: i64, id: &str) -> String {
    format!("{reporting_domain}!{domain}!{begin}!{end}!{id}.xml.gz")
}

/// Build the report of (domain, period) from the store's rows, without
/// keeping it. `None` when the store has no data for it.
pub fn build(
    store: &mut Store,
    settings: &ReportSettings,
    domain: &str,
    begin: i64,
    end: i64,
    now: i64,
) -> Result<Option<(StoredReport, String)>, StoreError> {
    let Some((policy, rows)) = store.contents(domain, begin)? else {
        return Ok(None);
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let store_id = store.store_id()?;
    let id = report_id(&store_id, &settings.reporting_domain, domain, begin, end);
    let meta = Metadata {
        org_name: settings.org_name.clone(),
        email: settings.email.clone(),
        extra_contact_info: settings.extra_contact_info.clone(),
        report_id: id.clone(),
        begin,
        end,
    };
    let text = xml::render(&meta, &policy, &rows, settings.format);
    let messages = rows.iter().map(|(_, c)| *c).sum();
    Ok(Some((
        StoredReport {
            policy_domain: domain.to_string(),
            period_begin: begin,
            period_end: end,
            filename: filename(&settings.reporting_domain, domain, begin, end, &id),
            report_id: id,
            generated: now,
            messages,
            gz: xml::gzip(text.as_bytes()),
        },
        text,
    )))
}

/// The stored report of (domain, period), generating and keeping it first
/// when there is none. With `keep` false nothing is written (dry runs).
pub fn ensure(
    store: &mut Store,
    settings: &ReportSettings,
    domain: &str,
    begin: i64,
    end: i64,
    now: i64,
    keep: bool,
) -> Result<Option<StoredReport>, StoreError> {
    if let Some(report) = store.report(domain, begin)? {
        return Ok(Some(report));
    }
    match build(store, settings, domain, begin, end, now)? {
        None => Ok(None),
        Some((report, _)) if !keep => Ok(Some(report)),
        Some((report, _)) => store.keep_report(&report).map(Some),
    }
}
