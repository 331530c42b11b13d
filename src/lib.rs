//! rmilter: one Postfix milter that DKIM-signs outbound mail (RSA and Ed25519)
//! and, for inbound mail, verifies DKIM, SPF, DMARC and ARC.
//!
//! The binary in `main.rs` is a thin shell over this library; integration
//! tests start the same milter server in-process through [`daemon::serve`].

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod doctor;
pub mod explain;
pub mod identity;
pub mod keys;
pub mod manual;
pub mod metrics;
pub mod migrate;
pub mod milter;
pub mod report;
pub mod runtime;
pub mod sign;
pub mod verify;
