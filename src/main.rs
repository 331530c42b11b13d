//! The `rmilter` command: parse the command line, dispatch, print errors as
//! a chain and set the exit code (0 success, 1 failure, 78 bad
//! configuration as in sysexits' EX_CONFIG, 2 usage).

use clap::Parser;
use rmilter::cli::{
    Cli, Command, ConfigArg, DEFAULT_CONFIG, GenerateArgs, KeyAlgorithm, KeysCommand,
};
use rmilter::config::{self, ConfigError, Overrides};
use rmilter::daemon::{self, ConfigRef};
use rmilter::keys;
use rmilter::runtime::Runtime;
use std::path::Path;
use std::process::ExitCode;

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config_ref = ConfigRef {
                path: args.config.config,
                default_path: DEFAULT_CONFIG.into(),
                overrides: Overrides {
                    listen: args.listen,
                    keys: args.keys,
                },
            };
            let runtime = match daemon::load_apart(&config_ref) {
                Ok(runtime) => runtime,
                Err(e) => return config_failure(&e),
            };
            init_logging(runtime.config.log_level.as_str());
            // One thread serves every milter connection: per message rmilter
            // does well under a millisecond of CPU between awaits, so a
            // second worker buys no throughput on the cores Postfix shares,
            // only cross-thread wake-ups. The report store writes on its
            // own thread.
            let tokio = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    return failure(&anyhow::Error::new(e).context("cannot start the runtime"));
                }
            };
            let result = tokio.block_on(daemon::run(config_ref, runtime));
            // A reload abandoned at SIGTERM may still be reading on a
            // blocking thread; dropping the runtime would wait for it.
            tokio.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "rmilter stopped");
                    failure(&e)
                }
            }
        }
        Command::CheckConfig(args) => check_config(&args),
        Command::Keys(KeysCommand::Generate(args)) => generate(&args),
        Command::Keys(KeysCommand::Dns(args)) => dns(&args),
        Command::Report(command) => rmilter::report::cli::main(command),
        Command::Doctor(args) => rmilter::doctor::main(args),
        Command::Explain(args) => rmilter::explain::main(args),
        Command::Migrate(args) => rmilter::migrate::main(args),
        Command::Keys(KeysCommand::Lifecycle(command)) => keys::cli::run(command),
        Command::Manual(args) => match rmilter::manual::write_all(&args.out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failure(
                &anyhow::Error::new(e).context(format!("cannot write to {}", args.out.display())),
            ),
        },
    }
}

fn load(args: &ConfigArg) -> Result<Runtime, ConfigError> {
    Runtime::load(
        args.config.as_deref(),
        Path::new(DEFAULT_CONFIG),
        &Overrides::default(),
    )
}

fn check_config(args: &ConfigArg) -> ExitCode {
    let rt = match load(args) {
        Ok(rt) => rt,
        Err(e) => return config_failure(&e),
    };
    let c = &rt.config;
    println!("configuration OK: {}", c.source);
    println!("  listen        {}", c.listen);
    println!("  authserv-id   {}", c.authserv_id);
    println!(
        "  outbound      authenticated={} local_submission={} networks=[{}] daemon_names=[{}]",
        c.outbound.authenticated,
        c.outbound.local_submission,
        c.outbound
            .networks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        c.outbound.daemon_names.join(", ")
    );
    println!(
        "  signing       c={}/{} expire={} subdomains={}",
        c.signing.header_canon.as_str(),
        c.signing.body_canon.as_str(),
        c.signing
            .expire
            .map_or("off".to_string(), |d| humantime::format_duration(d)
                .to_string()),
        c.signing.subdomains
    );
    if !c.signing.rules.is_empty() {
        println!(
            "  signing rules {} (rule_match = {})",
            c.signing.rules.len(),
            c.signing.rule_match.as_str()
        );
    }
    for rule in &c.signing.rules {
        println!(
            "  rule          {} sender={} keys=[{}]",
            rule.origin,
            rule.sender.text,
            rule.keys.join(", ")
        );
    }
    if c.signing.logins.enabled {
        println!(
            "  logins        own_domain={} sender_login_maps={} allow={} action={}",
            c.signing.logins.own_domain,
            c.signing
                .logins
                .sender_login_maps
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string()),
            c.signing.logins.allow.len(),
            c.signing.logins.action.as_str()
        );
    }
    if rt.keys.is_empty() {
        println!("  keys          none (verify only)");
    }
    for key in rt.keys.iter() {
        println!(
            "  key           d={} s={} a={} bits={} file={}{}",
            key.domain,
            key.selector,
            key.algorithm.dkim_name(),
            key.bits,
            key.path.display(),
            key.name
                .as_deref()
                .map(|n| format!(" name={n}"))
                .unwrap_or_default()
        );
    }
    for warning in &rt.warnings {
        println!("  warning       {warning}");
    }
    ExitCode::SUCCESS
}

fn generate(args: &GenerateArgs) -> ExitCode {
    let domain = match config::normalize_domain(&args.domain) {
        Ok(d) => d,
        Err(m) => return failure(&anyhow::anyhow!("--domain: {m}")),
    };
    if let Err(m) = config::check_selector(&args.selector) {
        return failure(&anyhow::anyhow!("--selector: {m}"));
    }
    let algorithm = match args.algorithm {
        KeyAlgorithm::Rsa => config::KeyAlgorithm::Rsa,
        KeyAlgorithm::Ed25519 => config::KeyAlgorithm::Ed25519,
    };
    match keys::generate(&args.dir, &domain, &args.selector, algorithm, args.bits) {
        Ok(generated) => {
            let key = &generated.key;
            println!(
                "; wrote {} ({} {} bits, mode 0600)",
                generated.path.display(),
                key.algorithm.dkim_name(),
                key.bits
            );
            println!("; publish this record in the {domain} zone:");
            println!(
                "{}",
                keys::zone_entry(&key.domain, &key.selector, &key.txt_value())
            );
            println!(";");
            println!("; then add to rmilter.toml:");
            println!("; [[key]]");
            println!("; domain = \"{}\"", key.domain);
            println!("; selector = \"{}\"", key.selector);
            println!("; file = \"{}\"", generated.path.display());
            println!("; algorithm = \"{}\"", key.algorithm.key_type());
            ExitCode::SUCCESS
        }
        Err(e) => failure(&anyhow::Error::new(e)),
    }
}

fn dns(args: &ConfigArg) -> ExitCode {
    let rt = match load(args) {
        Ok(rt) => rt,
        Err(e) => return config_failure(&e),
    };
    if rt.keys.is_empty() {
        eprintln!(
            "rmilter: no signing keys configured in {}",
            rt.config.source
        );
        return ExitCode::from(1);
    }
    for key in rt.keys.iter() {
        println!(
            "; {} {} bits, {}{}",
            key.algorithm.dkim_name(),
            key.bits,
            key.path.display(),
            key.name
                .as_deref()
                .map(|n| format!(", key {n}"))
                .unwrap_or_default()
        );
        // A `%` key: its record at every domain it signs for.
        let domains = if key.domain == config::SENDER_DOMAIN {
            rt.config
                .sender_domain_key_domains(key.name.as_deref(), &key.domains)
                .0
        } else {
            vec![key.domain.clone()]
        };
        for domain in domains {
            println!(
                "{}",
                keys::zone_entry(&domain, &key.selector, &key.txt_value())
            );
        }
    }
    for note in rt
        .config
        .keys
        .iter()
        .filter_map(|k| rt.config.sender_domain_key_note(k))
    {
        println!("; {note}");
    }
    ExitCode::SUCCESS
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn config_failure(e: &ConfigError) -> ExitCode {
    print_chain(e);
    ExitCode::from(EX_CONFIG)
}

fn failure(e: &anyhow::Error) -> ExitCode {
    print_chain(e.as_ref());
    ExitCode::from(1)
}

fn print_chain(e: &(dyn std::error::Error + 'static)) {
    eprintln!("rmilter: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
