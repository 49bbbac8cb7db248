//! The `pm` binary: parses the command line, loads the configuration and runs a placement
//! manager until SIGTERM or SIGINT.
//!
//! Exit codes (as the data node's): 0 after a clean shutdown, 2 for a usage or configuration
//! error, 1 when it failed while running (or could not open its log or listener).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pm::config::PmConfig;
use runtime::signal::{Signal, Signals};
use runtime::{race, Either};

/// ElasticStream placement manager: keeps streams, ranges and data nodes, and decides where
/// each new range lives.
#[derive(Debug, Parser)]
#[command(name = "pm", version, about)]
struct Arguments {
    /// Configuration file (YAML); built-in defaults when omitted.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the command log and snapshots, overriding storage.path.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

const EXIT_RUNTIME_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let mut config = match &arguments.config {
        Some(path) => match PmConfig::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("pm: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => PmConfig::default(),
    };
    if let Some(listen) = arguments.listen {
        config.server.listen = listen;
    }
    if let Some(data_dir) = arguments.data_dir {
        config.storage.path = data_dir;
    }
    if let Err(error) = config.validate() {
        eprintln!("pm: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    env_logger::Builder::new()
        .filter_level(config.log_level())
        .parse_default_env()
        .format_timestamp_micros()
        .init();
    // Before any thread exists, so every thread inherits the blocked mask.
    let mut signals = match Signals::new(&[Signal::INTERRUPT, Signal::TERMINATE]) {
        Ok(signals) => signals,
        Err(error) => {
            log::error!("cannot set up signal handling: {error}");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    let handle = match pm::server::start(config) {
        Ok(handle) => handle,
        Err(error) => {
            log::error!("pm could not start: {error}");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    let mut main_runtime = match runtime::Runtime::new() {
        Ok(main_runtime) => main_runtime,
        Err(error) => {
            log::error!("cannot start the main runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME_FAILURE);
        }
    };
    main_runtime.block_on(async {
        // The placement manager also stops on its own when its log fails.
        let stopped = async {
            while !handle.has_stopped() {
                runtime::time::sleep(Duration::from_millis(100)).await;
            }
        };
        match race(signals.recv(), stopped).await {
            Either::Left(Ok(signal)) => log::info!("{signal} received: shutting down"),
            Either::Left(Err(error)) => {
                log::error!("waiting for signals failed: {error}; shutting down")
            }
            Either::Right(()) => log::error!("the placement manager stopped on its own"),
        }
    });
    match handle.stop() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("pm stopped: {error}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}
