//! The `switchyard` binary: parse arguments, set up logging, load the config, then
//! either check it (`--check`) or bind and serve until SIGINT/SIGTERM.
//! Exit codes: 0 ok, 64 bad config, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A reverse proxy and load balancer that routes requests to named pools.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "\
Signals:
  HUP          reload the config (an invalid one is refused; the old one keeps serving)
  USR1         reopen the access log (logrotate)
  USR2         hand the listening sockets to a new binary (upgrade without downtime)
  TERM, INT    stop: close the listeners (after lame_duck), let requests in flight
               finish (drain_timeout), exit 0
  QUIT         the same graceful stop, without a core dump

Files (Debian package):
  /etc/switchyard/switchyard.toml     config (a conffile)
  /var/log/switchyard/access.log      access log, nginx combined + fields
  /run/switchyard/control.sock        where --takeover asks for the sockets
  /usr/share/doc/switchyard/          README.md, examples, keepalived files

Admin API (default 127.0.0.1:9901): /health/live, /health/ready[?pool=NAME],
/upstreams, /metrics (Prometheus), /config.

Exit codes: 0 ok, 64 bad config or arguments, 1 runtime failure (e.g. a port in use)."
)]
struct Args {
    /// Config file.
    #[arg(short, long, default_value = "config/switchyard.toml")]
    config: PathBuf,
    /// Validate the config, print a summary and exit (like `nginx -t`).
    #[arg(short = 't', long)]
    check: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    /// Overrides RUST_LOG; default info.
    #[arg(long)]
    log_level: Option<String>,
    /// Diagnostics as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Take the listening sockets over from the switchyard running on the same config
    /// (via `[runtime] control_socket`), serve, then let the old process drain and exit.
    /// Without it, a port already in use is an error.
    #[arg(long)]
    takeover: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Read a Frappe bench and print a complete config that does what the nginx config
    /// of `bench setup nginx` does, plus health checks, request classes that keep a
    /// gunicorn worker free of reports, uploads up to max_file_size and, with
    /// --report-pool, the report split. Check it with `switchyard --config FILE --check`.
    FrappeBench {
        /// The bench directory (with apps/ and sites/).
        path: PathBuf,
        /// Write the config here (and 502.html beside it) instead of to stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Servers for a report pool; the read-only report methods go there.
        #[arg(long = "report-pool", value_name = "ADDR", num_args = 1..)]
        report_pool: Vec<String>,
        /// App servers of the web pool (default 127.0.0.1:<webserver_port>).
        #[arg(long, value_name = "ADDR", num_args = 1..)]
        web: Vec<String>,
        /// A socketio server (default 127.0.0.1:<socketio_port>); give it several
        /// times for several nodes, kept sticky by cookie.
        #[arg(long, value_name = "ADDR")]
        socketio: Vec<String>,
        /// gunicorn workers per app server (default: gunicorn_workers of
        /// common_site_config.json, else bench's 2 x CPU + 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        workers: Option<u32>,
        /// Report requests in flight per app server (default: workers - 1).
        #[arg(long = "report-cap", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        report_cap: Option<u32>,
        /// No request classes: reports may take every worker (the report split only
        /// with --report-pool).
        #[arg(long = "no-classes")]
        no_classes: bool,
        /// Read frappe_docker's frontend environment (BACKEND, SOCKETIO,
        /// FRAPPE_SITE_NAME_HEADER, UPSTREAM_REAL_IP_*, PROXY_READ_TIMEOUT,
        /// CLIENT_MAX_BODY_SIZE) with that image's defaults; listen on :8080.
        #[arg(long = "from-env")]
        from_env: bool,
    },
}

/// `switchyard frappe-bench`: the config on stdout or in a file, a summary on stderr.
fn frappe_bench(cmd: Command) -> ExitCode {
    let Command::FrappeBench {
        path,
        output,
        report_pool,
        web,
        socketio,
        workers,
        report_cap,
        no_classes,
        from_env,
    } = cmd;
    let docker = match from_env
        .then(|| switchyard::frappe::DockerEnv::read(|k| std::env::var(k).ok()))
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("switchyard frappe-bench: {e}");
            return ExitCode::from(64);
        }
    };
    let opts = switchyard::frappe::Options {
        web,
        report_pool,
        socketio,
        workers,
        report_cap,
        no_classes,
        docker,
        ..Default::default()
    };
    let (text, summary) = match switchyard::frappe::generate(&path, output.as_deref(), opts) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("switchyard frappe-bench: {e}");
            return ExitCode::from(64);
        }
    };
    match &output {
        Some(f) => {
            if let Err(e) = std::fs::write(f, &text) {
                eprintln!("switchyard frappe-bench: {}: {e}", f.display());
                return ExitCode::from(1);
            }
        }
        None => print!("{text}"),
    }
    eprint!("{summary}");
    ExitCode::SUCCESS
}

/// `--check`: resolve the config's server names once, as the resolver will.
fn check_names(config: &switchyard::config::Config) -> Vec<String> {
    if config.pools.iter().all(|p| p.names.is_empty()) {
        return Vec::new();
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(switchyard::resolve::check(config)),
        Err(e) => vec![format!("warning: names not checked: {e}")],
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(cmd) = args.command.take() {
        return frappe_bench(cmd);
    }
    if let Err(code) = init_logging(&args) {
        return code;
    }
    let config = match switchyard::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    if args.check {
        print!("{}", config.summary());
        let idle: usize = config
            .pools
            .iter()
            .map(|p| p.keepalive * p.servers.len().max(1))
            .sum();
        for line in switchyard::process::limits::check_lines(config.server.max_connections, idle) {
            println!("{line}");
        }
        for line in check_names(&config) {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    // The per-worker scheduler starts its own threads; this runtime keeps the rest.
    let main_threads = match config.scheduler {
        switchyard::config::Scheduler::PerWorker => 1,
        switchyard::config::Scheduler::WorkStealing => config.workers,
    };
    let rt = match runtime(main_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match serve(&rt, &args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "switchyard failed");
            eprintln!("switchyard: {e}");
            ExitCode::from(1)
        }
    }
}

/// tracing to stderr, at `--log-level` (or `RUST_LOG`, else `info`); exit 64 on a bad level.
fn init_logging(args: &Args) -> Result<(), ExitCode> {
    if let Some(l) = &args.log_level
        && let Err(e) = check_level(l)
    {
        eprintln!("switchyard: {e}");
        return Err(ExitCode::from(64));
    }
    let filter = match &args.log_level {
        Some(l) => EnvFilter::try_new(l),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = filter.map_err(|e| {
        eprintln!("switchyard: bad log filter: {e}");
        ExitCode::from(64)
    })?;
    // Colour only for a person at a terminal: journald and files get plain text.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    Ok(())
}

/// The runtime of `[runtime] workers` threads. One worker runs on the current thread:
/// no cross-thread scheduler at all.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build()
}

/// Bind (or take over) the listeners and serve until a stop signal.
fn serve(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    config: switchyard::config::Config,
) -> std::io::Result<()> {
    let (before, now) = switchyard::process::limits::raise_nofile();
    if now != before {
        tracing::info!(
            from = before,
            to = now,
            "raised the descriptor limit (soft RLIMIT_NOFILE) to the hard limit"
        );
    } else {
        tracing::info!(descriptors = now, "descriptor limit");
    }
    let mut taken = args.takeover.then(|| take_over(&config)).flatten();
    let (sockets, udp) = taken
        .as_mut()
        .map(|t| (std::mem::take(&mut t.sockets), std::mem::take(&mut t.udp)))
        .unwrap_or_default();
    rt.block_on(async {
        let mut listeners = switchyard::bind_taking(&config, sockets).await?;
        listeners.took_over = taken.is_some();
        listeners.udp.extend(udp);
        let ready = move || {
            if let Some(t) = taken {
                std::thread::spawn(move || t.ready());
            }
        };
        switchyard::run_with_ready(listeners, config, shutdown_signal(), ready).await
    })
}

/// `--takeover`: the running process's sockets, or `None` (a warning) when no process
/// answers, so that this one binds the ports itself.
fn take_over(config: &switchyard::config::Config) -> Option<switchyard::process::takeover::Taken> {
    let Some(path) = &config.control_socket else {
        tracing::warn!("--takeover: no [runtime] control_socket in the config; binding the ports");
        return None;
    };
    match switchyard::process::takeover::request(path) {
        Ok(t) => {
            tracing::info!(sockets = t.sockets.len(), path = %path.display(), "took the listening sockets over");
            Some(t)
        }
        Err(e) => {
            tracing::warn!("{e}; binding the ports");
            None
        }
    }
}

/// Resolves on SIGINT, SIGTERM or SIGQUIT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    // TERM and QUIT both stop gracefully (QUIT without a core dump, as operators expect).
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::quit())) {
            (Ok(mut t), Ok(mut q)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = q.recv() => {}
                }
            }
            _ => {
                tracing::error!("cannot listen for SIGTERM/SIGQUIT");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// A bare word must be a level: `warning` would otherwise be read as a target name
/// and turn logging off without a word.
fn check_level(l: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if l.contains(['=', ',', ':', '[']) || LEVELS.contains(&l.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let hint = match l.to_ascii_lowercase().as_str() {
        "warning" => " (did you mean `warn`?)",
        "err" => " (did you mean `error`?)",
        "information" => " (did you mean `info`?)",
        _ => "",
    };
    Err(format!(
        "--log-level {l:?} is not a level{hint}; use off, error, warn, info, debug or trace, or a tracing directive such as `switchyard=debug`"
    ))
}
