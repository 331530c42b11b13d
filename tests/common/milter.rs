//! The real rmilter server started in-process for tests: its own tokio
//! runtime on a background thread, a socket bound like the daemon binds it
//! (127.0.0.1:0 by default), and a clean stop.

#![allow(dead_code)]

use rmilter::config::{self, ListenAddr, Overrides, Source};
use rmilter::daemon;
use rmilter::milter::MilterState;
use rmilter::report::{Discard, EvaluationSink, MemorySink};
use rmilter::runtime::Runtime;
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct TestMilter {
    pub listen: ListenAddr,
    pub state: Arc<MilterState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestMilter {
    /// Start on a configuration given as TOML text, listening on
    /// 127.0.0.1 with a free port unless the text sets `listen`.
    ///
    /// Without a `[dns]` section the resolver points at a closed loopback
    /// port: tests never reach live DNS, and a lookup fails within 0.5 s.
    pub fn start_toml(toml: &str) -> TestMilter {
        TestMilter::start(runtime_from_toml(toml))
    }

    /// Like [`TestMilter::start_toml`], keeping every evaluation record.
    pub fn start_toml_recording(toml: &str) -> (TestMilter, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::default());
        let milter = TestMilter::start_with(runtime_from_toml(toml), sink.clone());
        (milter, sink)
    }

    pub fn start(runtime: Runtime) -> TestMilter {
        TestMilter::start_with(runtime, Arc::new(Discard))
    }

    pub fn start_with(runtime: Runtime, sink: Arc<dyn EvaluationSink>) -> TestMilter {
        let listen = runtime.config.listen.clone();
        let socket = runtime.config.socket.clone();
        let state = MilterState::with_sink(runtime, sink);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let bound = match daemon::bind(&listen, &socket) {
                    Ok(bound) => bound,
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!("{e:#}")));
                        return Ok(());
                    }
                };
                let _ = bound_tx.send(Ok(bound.local.clone()));
                let unix_path = bound.unix_path.clone();
                let result = daemon::serve(bound.listener, thread_state, async move {
                    let _ = stop_rx.await;
                })
                .await;
                daemon::remove_socket(unix_path.as_deref());
                result
            })
        });
        let local = bound_rx
            .recv()
            .expect("milter thread ended before binding")
            .unwrap_or_else(|e| panic!("milter bind: {e}"));
        TestMilter {
            listen: local,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The socket address in Postfix's `smtpd_milters` syntax.
    pub fn postfix_spec(&self) -> String {
        match &self.listen {
            ListenAddr::Inet(addr) => format!("inet:{}:{}", addr.ip(), addr.port()),
            ListenAddr::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    pub fn inet_addr(&self) -> std::net::SocketAddr {
        match &self.listen {
            ListenAddr::Inet(addr) => *addr,
            ListenAddr::Unix(_) => panic!("milter listens on a unix socket"),
        }
    }

    /// Stop gracefully and wait for the server to end.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("milter thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestMilter {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A runtime from TOML text, as [`TestMilter::start_toml`] uses it.
pub fn runtime_from_toml(toml: &str) -> Runtime {
    let owned;
    let toml = if toml.contains("[dns]") {
        toml
    } else {
        owned = format!(
            "{toml}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\nattempts = 1\n"
        );
        &owned
    };
    let overrides = if toml.lines().any(|l| l.trim_start().starts_with("listen")) {
        Overrides::default()
    } else {
        Overrides {
            listen: Some("inet:127.0.0.1:0".to_string()),
            keys: Vec::new(),
        }
    };
    let config = config::from_text(Source::Embedded, toml, &overrides)
        .unwrap_or_else(|e| panic!("test configuration: {e}"));
    Runtime::from_config(config).unwrap_or_else(|e| panic!("test keys: {e}"))
}
