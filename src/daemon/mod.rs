//! The daemon: bind the socket, serve milter connections, reload on SIGHUP
//! (build the new configuration and keys first, then swap; a bad reload is
//! refused and the running configuration stays), and stop gracefully on
//! SIGTERM/SIGINT (stop accepting, let messages in progress finish, exit).

mod listen;
mod pidfile;

pub use listen::{Bound, bind, remove_socket};
pub use pidfile::{PidFile, ReloadRequest, request_reload};

use crate::config::{Config, Overrides, Source};
use crate::milter::{self, MilterState};
use crate::runtime::Runtime;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How `run` finds its configuration, kept for reloads.
#[derive(Debug, Clone)]
pub struct ConfigRef {
    pub path: Option<PathBuf>,
    pub default_path: PathBuf,
    pub overrides: Overrides,
}

impl ConfigRef {
    pub fn load(&self) -> Result<Runtime, crate::config::ConfigError> {
        Runtime::load(self.path.as_deref(), &self.default_path, &self.overrides)
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(config_ref: ConfigRef, runtime: Runtime) -> anyhow::Result<()> {
    let config = runtime.config.clone();
    match &config.source {
        Source::Embedded if runtime.keys.is_empty() => info!(
            default = %config_ref.default_path.display(),
            "no configuration file: running on embedded defaults (verify only, no signing keys)"
        ),
        Source::Embedded => info!(
            default = %config_ref.default_path.display(),
            "no configuration file: running on embedded defaults with the keys given by --key"
        ),
        Source::File(path) => info!(file = %path.display(), "configuration loaded"),
    }
    let _pid_file = config
        .pid_file
        .as_deref()
        .map(PidFile::create)
        .transpose()?;
    let bound = bind(&config.listen, &config.socket)?;
    info!(
        listen = %bound.local,
        keys = runtime.keys.len(),
        authserv_id = %config.authserv_id,
        "rmilter started"
    );
    for key in runtime.keys.iter() {
        info!(d = %key.domain, s = %key.selector, a = key.algorithm.dkim_name(), bits = key.bits, "signing key loaded");
    }
    let state = match crate::report::sink::for_daemon(&config) {
        Some(sink) => MilterState::with_sink(runtime, sink),
        None => MilterState::new(runtime),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(handle_signals(config_ref, state.clone(), stop_tx));
    let Bound {
        listener,
        unix_path,
        local: _,
    } = bound;
    let result = serve(listener, state, wait_true(stop_rx)).await;
    signals.abort();
    remove_socket(unix_path.as_deref());
    result.map_err(Into::into)
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn handle_signals(config_ref: ConfigRef, state: Arc<MilterState>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            error!("cannot install signal handlers; SIGHUP reload is unavailable");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&config_ref, &state),
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break; }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break; }
        }
    }
    let _ = stop.send(true);
}

/// Reload the configuration and keys; swap only when everything loaded.
pub fn reload(config_ref: &ConfigRef, state: &MilterState) {
    match config_ref.load() {
        Ok(new) => {
            let old = state.runtime();
            for key in restart_only_changes(&old.config, &new.config) {
                warn!(key, "changed setting takes effect only after a restart");
            }
            let keys = new.keys.len();
            let source = new.config.source.to_string();
            state.swap(new);
            info!(source, keys, "configuration reloaded");
        }
        Err(e) => error!(error = %e, "reload refused; the running configuration stays in effect"),
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.socket != new.socket {
        changed.push("socket");
    }
    if old.limits.max_connections != new.limits.max_connections {
        changed.push("limits.max_connections");
    }
    if old.limits.idle_timeout != new.limits.idle_timeout {
        changed.push("limits.idle_timeout");
    }
    if old.log_level != new.log_level {
        changed.push("log_level");
    }
    let (a, b) = (&old.report, &new.report);
    if (
        a.enabled,
        &a.store,
        a.queue_size,
        a.period,
        a.schedule_in_daemon,
    ) != (
        b.enabled,
        &b.store,
        b.queue_size,
        b.period,
        b.schedule_in_daemon,
    ) {
        changed.push("report");
    }
    if old.pid_file != new.pid_file {
        changed.push("pid_file");
    }
    changed
}

/// Serve milter connections on `listener` until `shutdown` completes; then
/// stop accepting, wait up to `limits.shutdown_timeout` for messages in
/// progress, and close the remaining connections.
pub async fn serve<L>(
    listener: L,
    state: Arc<MilterState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: indymilter::Listener + Send + 'static,
{
    let limits = state.runtime().config.limits.clone();
    let config = indymilter::Config {
        max_connections: limits.max_connections,
        connection_timeout: limits.idle_timeout,
        ..Default::default()
    };
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let gate = GatedListener {
        inner: Some(listener),
        stop: Box::pin(wait_true(stopping_rx)),
    };
    let drain_state = state.clone();
    let milter_shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
        drain(&drain_state, limits.shutdown_timeout).await;
    };
    indymilter::run(gate, milter::callbacks(state), config, milter_shutdown).await
}

async fn drain(state: &MilterState, timeout: Duration) {
    let start = Instant::now();
    let mut logged = false;
    while state.in_flight() > 0 {
        if start.elapsed() >= timeout {
            warn!(
                in_flight = state.in_flight(),
                "shutdown timeout reached; closing connections with messages in progress"
            );
            return;
        }
        if !logged {
            info!(
                in_flight = state.in_flight(),
                "waiting for messages in progress"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!("no messages in progress; closing connections");
}

/// A listener that stops accepting (and closes its socket) once `stop`
/// completes, while the sessions already accepted keep running.
struct GatedListener<L> {
    inner: Option<L>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<L: indymilter::Listener> indymilter::Listener for GatedListener<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(listener) => listener.poll_accept(cx),
            None => Poll::Pending,
        }
    }
}
