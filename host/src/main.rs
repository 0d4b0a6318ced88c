//! The `avtomatika` server binary.
//!
//! - `avtomatika`: configuration from the environment, then serve until
//!   Ctrl-C or SIGTERM, drain for up to `SHUTDOWN_GRACE_SECONDS` (then send
//!   the spans still batched for export).
//! - `avtomatika check-config`: load and validate the environment, the
//!   configuration files and the blueprints, then exit 0 (all good) or 1.
//! - `avtomatika new <name> --lang <lang> [--dir <path>]`: write a new
//!   blueprint project (see `avtomatika::scaffold`), then exit.

use std::process::ExitCode;

use avtomatika::config::Config;
use avtomatika::scaffold::{self, Request};
use avtomatika::{App, Setup};
use tokio_util::sync::CancellationToken;

// The request path allocates many small, short-lived objects across threads;
// measured in benches/e2e.rs, glibc's allocator spent ~17% of the server's
// CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: avtomatika [check-config | new <name> --lang <lang> [--dir <path>]]\n\
    \n  (no argument)   run the server, configured by environment variables\
    \n  check-config    validate the environment, clients/workers/schedules files and blueprints, then exit\
    \n  new             write a new blueprint project <name> in <path> (default ./<name>); <lang>: ";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check_only = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => false,
        ["check-config"] => true,
        ["new", rest @ ..] => return new_project(rest),
        ["-h" | "--help" | "help"] => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("avtomatika: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    let trace_export = match avtomatika::logging::init(&config) {
        Ok(export) => export,
        Err(e) => {
            eprintln!("avtomatika: configuration error: {e}");
            return ExitCode::from(1);
        }
    };

    let setup = match Setup::load(config).await {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("avtomatika: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    if check_only {
        println!("configuration OK: {}", setup.summary());
        return ExitCode::SUCCESS;
    }
    tracing::info!(summary = setup.summary(), "configuration loaded");

    let app = match App::from_setup(setup).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("avtomatika: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match app.bind().await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("avtomatika: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let served = app.serve(listener, shutdown).await;
    // After the server has stopped, so the last requests' and steps' spans
    // are in the final batch.
    if let Some(export) = trace_export {
        export.shutdown().await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avtomatika: server error: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> String {
    let languages: Vec<&str> = scaffold::LANGUAGES.iter().map(|l| l.name).collect();
    format!("{USAGE}{}", languages.join(", "))
}

/// `new <name> --lang <lang> [--dir <path>]` (options also as `--lang=<lang>`).
fn new_project(args: &[&str]) -> ExitCode {
    let mut name = None;
    let mut lang = None;
    let mut dir = None;
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg, None),
        };
        let slot = match flag {
            "--lang" => &mut lang,
            "--dir" => &mut dir,
            "-h" | "--help" => {
                println!("{}", usage());
                return ExitCode::SUCCESS;
            }
            _ if !arg.starts_with('-') && name.is_none() => {
                name = Some(arg);
                continue;
            }
            _ => return usage_error(&format!("unexpected argument {arg:?}")),
        };
        match inline.or_else(|| args.next().copied()) {
            Some(value) => *slot = Some(value),
            None => return usage_error(&format!("{flag} needs a value")),
        }
    }
    let Some(name) = name else { return usage_error("new needs the blueprint's name") };
    let Some(lang) = lang else { return usage_error("new needs --lang") };
    let request = Request { name: name.to_owned(), lang: lang.to_owned(), dir: dir.map(Into::into) };
    match scaffold::scaffold(&request) {
        Ok(project) => {
            println!(
                "Created blueprint {name} ({lang}) in {}. Build it:\n\n{}",
                project.dir.display(),
                project.next_steps
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("avtomatika new: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("avtomatika new: {problem}\n\n{}", usage());
    ExitCode::from(2)
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM, which starts the graceful stop
/// (`SHUTDOWN_GRACE_SECONDS`); a second signal exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    signal().await;
    tracing::warn!("second signal: exiting without waiting for the drain");
    std::process::exit(130);
}

/// The next Ctrl-C or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
