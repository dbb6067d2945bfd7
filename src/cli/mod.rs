//! The command line: `run` (default), `check`, `clear-sessions`, `keygen`,
//! `demo`, and `sessions` (a client of a running instance's admin API).

mod sessions;

use crate::app::{Listeners, run};
use crate::config::{self, Config, DEFAULT_CONFIG_PATH, StoreConfig};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sessiongate",
    version,
    about = "Server-side sessions at a reverse proxy, in front of any backend"
)]
pub struct Cli {
    /// Path of the YAML config.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy until SIGINT or SIGTERM (the default).
    Run,
    /// Validate the config: prints `ok`, or every problem with its YAML path (on stderr).
    Check {
        /// Also print, per route, what its upstream reads of the session and may write.
        #[arg(long)]
        explain: bool,
    },
    /// Delete expired sessions from the configured store and print how many.
    ClearSessions,
    /// Print a new random secret for `secrets`; with --ed25519, write a key pair for EdDSA signing.
    Keygen {
        /// Write an Ed25519 key pair (PREFIX.pem and PREFIX.pub.pem) for `forward.private_key`.
        #[arg(long)]
        ed25519: bool,
        /// Path prefix of the key pair files.
        #[arg(long, default_value = "sessiongate-ed25519", requires = "ed25519")]
        out: PathBuf,
    },
    /// List or revoke sessions through a running instance's admin API.
    Sessions {
        #[command(subcommand)]
        command: sessions::SessionsCommand,
        /// The admin listener's URL (default: admin.addr from the config).
        #[arg(long, global = true)]
        admin: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Run the proxy in front of a bundled demo app, to see sessions work in a browser.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin endpoints listen.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => with_config(&cli.config, |config| block_on(serve(config))),
        Command::Check { explain } => match config::load(&cli.config) {
            Ok(config) => {
                if explain {
                    print!("{}", config::explain(&config));
                }
                for warning in &config.warnings {
                    eprintln!("warning: {warning}");
                }
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::ClearSessions => {
            with_config(&cli.config, |config| block_on(clear_sessions(config)))
        }
        Command::Keygen { ed25519: false, .. } => {
            println!("{}", crate::config::secret::generate());
            ExitCode::SUCCESS
        }
        Command::Keygen { ed25519: true, out } => write_ed25519_pair(&out),
        Command::Demo { listen, admin } => block_on(crate::demo::run_demo(listen, admin)),
        Command::Sessions {
            command,
            admin,
            json,
        } => block_on(sessions::main(command, admin, json, &cli.config)),
    }
}

fn write_ed25519_pair(prefix: &std::path::Path) -> ExitCode {
    let (private, public, kid) = crate::keys::ed25519::generate();
    let private_path = PathBuf::from(format!("{}.pem", prefix.display()));
    let public_path = PathBuf::from(format!("{}.pub.pem", prefix.display()));
    let write = |path: &std::path::Path, text: &str, mode: u32| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        let _ = mode;
        std::io::Write::write_all(&mut opts.open(path)?, text.as_bytes())
    };
    for (path, text, mode) in [
        (&private_path, &private, 0o600),
        (&public_path, &public, 0o644),
    ] {
        if let Err(e) = write(path, text, mode) {
            eprintln!("sessiongate: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "private key: {} (for forward.private_key)",
        private_path.display()
    );
    println!("public key:  {}", public_path.display());
    println!("kid:         {kid}");
    ExitCode::SUCCESS
}

fn with_config(path: &std::path::Path, f: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match config::load(path) {
        Ok(config) => f(config),
        Err(e) => {
            eprintln!("sessiongate: invalid config {}:\n{e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The environment variable tokio's multi-threaded runtime sizes itself by.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    // One worker thread asked for: tokio's single-threaded scheduler does the
    // same work with less bookkeeping per wake-up (no work stealing, no
    // hand-off between the main thread and a worker), as one nginx worker.
    let single = std::env::var(WORKER_THREADS_VAR).is_ok_and(|v| v.trim() == "1");
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("sessiongate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn serve(config: Config) -> ExitCode {
    crate::logging::init(config.log.format, config.tracing.as_ref());
    let shutdown = crate::server::shutdown_signal();
    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %crate::logging::Chain(&e), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let result = run(config, listeners, shutdown).await;
    crate::telemetry::shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %crate::logging::Chain(&e), "cannot start");
            ExitCode::FAILURE
        }
    }
}

async fn clear_sessions(config: Config) -> ExitCode {
    if let StoreConfig::Memory { .. } = config.session.store {
        println!("0");
        eprintln!(
            "the memory store lives inside the running proxy process, which sweeps its expired sessions itself"
        );
        return ExitCode::SUCCESS;
    }
    let store = match crate::store::open(&config.session, &config.secrets).await {
        Ok(crate::store::Store::Cookie(_)) => {
            println!("0");
            eprintln!(
                "the cookie store keeps each session in its browser, sealed with its own deadline"
            );
            return ExitCode::SUCCESS;
        }
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "sessiongate: cannot clear sessions: {}",
                crate::logging::Chain(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    use crate::store::SessionStore;
    match store.clear_expired(crate::record::now_ms()).await {
        Ok(n) => {
            println!("{n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sessiongate: clearing expired sessions failed: {}",
                crate::logging::Chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}
