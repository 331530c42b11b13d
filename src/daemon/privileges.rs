//! Dropping root: after the milter socket is bound (and its owner, group
//! and mode set), the pid file written and the metrics socket bound, a
//! daemon started as root switches for good to the configured `user` and
//! `group` (with the user's supplementary groups from /etc/group). glibc
//! applies the change to every thread of the process. Started as another
//! user, rmilter keeps running as that user when it is the configured one,
//! and refuses to start otherwise.

use crate::config::RunAs;
use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use tracing::info;

/// Switch to `run_as` when running as root. Returns whether it switched.
pub fn drop_to(run_as: &RunAs) -> anyhow::Result<bool> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        if euid.as_raw() == run_as.uid {
            return Ok(false);
        }
        bail!(
            "cannot run as user {} (uid {}): rmilter was started as uid {}, not as root",
            run_as.user,
            run_as.uid,
            euid
        );
    }
    let uid = Uid::from_raw(run_as.uid);
    let gid = Gid::from_raw(run_as.gid);
    let name = CString::new(run_as.user.as_str()).context("user name holds a NUL byte")?;
    nix::unistd::initgroups(&name, gid)
        .with_context(|| format!("cannot set the supplementary groups of {}", run_as.user))?;
    nix::unistd::setresgid(gid, gid, gid)
        .with_context(|| format!("cannot switch to group {} (gid {gid})", run_as.group))?;
    nix::unistd::setresuid(uid, uid, uid)
        .with_context(|| format!("cannot switch to user {} (uid {uid})", run_as.user))?;
    // Nothing may be left to switch back with.
    let ids = nix::unistd::getresuid().context("cannot read the user ids")?;
    if [ids.real, ids.effective, ids.saved] != [uid, uid, uid]
        || nix::unistd::setuid(Uid::from_raw(0)).is_ok()
    {
        bail!("switching to user {} did not drop root", run_as.user);
    }
    info!(
        user = %run_as.user,
        uid = run_as.uid,
        group = %run_as.group,
        gid = run_as.gid,
        "switched to the unprivileged user"
    );
    Ok(true)
}
