//! The `data-node` binary: parses the command line, loads the configuration and runs the node.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a usage or configuration error, 1 when the node
//! failed while running (or could not start its threads, store or listener).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use node::config::Config;

/// ElasticStream data node: stores stream ranges and serves them over the wire protocol.
#[derive(Debug, Parser)]
#[command(name = "data-node", version, about)]
struct Arguments {
    /// Configuration file (YAML); built-in defaults when omitted.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding server.listen.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory, overriding store.path.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

const EXIT_RUNTIME_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let mut config = match &arguments.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("data-node: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Config::default(),
    };
    if let Some(listen) = arguments.listen {
        config.server.listen = listen;
    }
    if let Some(data_dir) = arguments.data_dir {
        config.store.path = data_dir;
    }
    if let Err(error) = config.validate() {
        eprintln!("data-node: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    env_logger::Builder::new()
        .filter_level(config.log_level())
        .parse_default_env()
        .format_timestamp_micros()
        .init();
    match node::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("data-node stopped: {error}");
            ExitCode::from(EXIT_RUNTIME_FAILURE)
        }
    }
}
