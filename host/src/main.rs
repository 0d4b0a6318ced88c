//! The `avtomatika` server binary: configuration from the environment, then serve
//! until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use avtomatika::App;
use avtomatika::config::Config;
use tokio_util::sync::CancellationToken;

// The request path allocates many small, short-lived objects across threads;
// measured in benches/e2e.rs, glibc's allocator spent ~17% of the server's
// CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("avtomatika: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    avtomatika::logging::init(config.log_level, config.log_format);

    let app = match App::new(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
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
    match app.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avtomatika: server error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
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
    tracing::info!("shutting down");
    shutdown.cancel();
}
