//! What a connection records: the SMTP client as the MTA describes it, and
//! the message in progress (created at MAIL, dropped at its end or abort).

use super::InFlight;
use super::direction::Direction;
use super::spool::Spool;
use super::wire;
use crate::identity::{Author, Refusal};
use crate::runtime::Runtime;
use crate::sign::MessageSigner;
use std::net::SocketAddr;
use std::sync::Arc;

/// Envelope recipients kept per message for failure reports at most.
pub(super) const MAX_RCPT: usize = 100;

/// The SMTP client as the MTA describes it.
#[derive(Debug, Default, Clone)]
pub(super) struct Client {
    pub(super) hostname: String,
    pub(super) addr: Option<SocketAddr>,
    pub(super) helo: String,
}

impl Client {
    /// Postfix's cleanup(8) simulates non-SMTP mail (sendmail(1), pickup)
    /// as a connection from "localhost" at 127.0.0.1 port 0; a real SMTP
    /// client never has port 0.
    pub(super) fn is_local_submission(&self) -> bool {
        matches!(self.addr, Some(addr) if addr.port() == 0 && addr.ip().is_loopback())
            && self.hostname.eq_ignore_ascii_case("localhost")
    }
}

/// One header field as received: name without colon, value with its
/// leading space (when negotiated) and "\n" + WSP folding.
pub(super) struct Header {
    pub(super) name: Vec<u8>,
    pub(super) value: Vec<u8>,
}

/// The message in progress.
pub(super) struct Message {
    pub(super) runtime: Arc<Runtime>,
    pub(super) _in_flight: InFlight,
    pub(super) queue_id: String,
    pub(super) sender: String,
    /// Envelope recipients, kept only for failure reports that include
    /// them (`[report.failure] include_rcpt_to`), at most [`MAX_RCPT`].
    pub(super) rcpt_to: Vec<String>,
    pub(super) auth_user: Option<String>,
    /// `{daemon_name}` as the SMTP server set it. Postfix's cleanup, which
    /// sends the header and body events, reports main.cf's value instead.
    pub(super) daemon_name: Option<String>,
    pub(super) headers: Vec<Header>,
    pub(super) header_bytes: usize,
    pub(super) headers_too_big: bool,
    pub(super) signer: Option<MessageSigner>,
    pub(super) author_domain: String,
    pub(super) direction: Direction,
    /// Postfix's per-name index (from 1) of every Authentication-Results
    /// field carrying rmilter's authserv-id: forged, to be deleted.
    pub(super) forged_results: Vec<i32>,
    pub(super) results_seen: i32,
    /// Inbound: the author the From gate found, or why it refused.
    pub(super) author: Option<Author>,
    pub(super) refusal: Option<Refusal>,
    /// Inbound: the message as verification needs it (header section, empty
    /// line, body), bounded by `limits.max_message_bytes`.
    pub(super) spool: Option<Spool>,
    pub(super) truncated: bool,
    /// The spool could not be written: the message cannot be verified.
    pub(super) spool_error: Option<String>,
    /// Set when a configured action is quarantine: the hold-queue reason.
    pub(super) hold: Option<String>,
    /// End of headers has been processed.
    pub(super) headers_done: bool,
}

/// The header section in wire form (see [`wire::header_section`]).
pub(super) fn header_block(headers: &[Header], leading_space: bool) -> Vec<u8> {
    wire::header_section(
        headers.iter().map(|h| (&h.name[..], &h.value[..])),
        leading_space,
    )
}

/// The client as log lines name it: `host[address]`.
pub(super) fn client_text(client: &Client) -> String {
    match client.addr {
        Some(addr) => format!("{}[{}]", client.hostname, addr.ip()),
        None => client.hostname.clone(),
    }
}
