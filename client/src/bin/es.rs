//! `es`: talk to ElasticStream servers from the command line.
//!
//! `es shell [ADDR]` opens an interactive, telnet-style shell (or runs a script from stdin);
//! the other subcommands send one request each, for scripts (`--output json`).
//!
//! Exit status of a one-shot command: 0 success; 1 the server answered with an error; 2 bad
//! usage; 3 the server could not be reached or the connection failed. `es shell` exits 0 when
//! every line parsed and was sent (error answers from the server included), 1 otherwise, 3 if
//! it cannot connect at all.

use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{value_parser, Parser, Subcommand};
use client::command::{parse_hex, RequestCommand, DEFAULT_FETCH_MAX_BYTES};
use client::output::{self, Format};
use client::session::{Outcome, Reply, Session};
use client::shell::Shell;
use wire::{Epoch, Offset, RangeIndex, StreamId};

const DEFAULT_ADDRESS: &str = "127.0.0.1:10911";
/// Long-poll wait of each FETCH issued by `fetch --follow`.
const FOLLOW_WAIT_MS: u32 = 1_000;

const EXIT_SERVER_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
/// `es shell`: some line did not parse or could not be sent (server errors do not count).
const EXIT_SHELL_FAILURES: u8 = 1;

#[derive(Parser)]
#[command(
    name = "es",
    version,
    about = "Talk to ElasticStream data nodes: a shell and one-shot commands"
)]
struct Cli {
    /// How results are printed: text for people, json (one object per command) for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "text", global = true)]
    output: Format,
    /// Token to authenticate every connection with (AUTHENTICATE), for servers that have tokens
    /// configured. Default: the ES_TOKEN environment variable, which keeps the token out of the
    /// process list. Never printed.
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(clap::Args)]
struct Target {
    /// Server address, host:port.
    #[arg(long, short = 'a', default_value = DEFAULT_ADDRESS)]
    addr: String,
}

#[derive(clap::Args)]
struct RangeArgs {
    /// Stream id.
    #[arg(value_parser = value_parser!(u64).map(StreamId))]
    stream: StreamId,
    /// Range index within the stream.
    #[arg(value_parser = value_parser!(u32).map(RangeIndex))]
    index: RangeIndex,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Interactive shell (line editing, history); reads a script when stdin is not a terminal.
    Shell {
        /// Server address, host:port.
        #[arg(default_value = DEFAULT_ADDRESS)]
        addr: String,
    },
    /// Round trip to a server.
    Ping {
        /// Server address, host:port.
        #[arg(default_value = DEFAULT_ADDRESS)]
        addr: String,
        /// Bytes to have echoed back (text).
        #[arg(long, default_value = "")]
        payload: String,
    },
    /// Create a range replica on a data node.
    CreateRange {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        #[arg(long, value_parser = value_parser!(u32).map(RangeIndex))]
        index: RangeIndex,
        /// First offset of the range.
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Offset))]
        start: Offset,
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Epoch))]
        epoch: Epoch,
        /// R recorded with the range; 0 = unknown.
        #[arg(long, default_value_t = 0)]
        replica_count_target: u8,
        /// A recorded with the range; 0 = unknown.
        #[arg(long, default_value_t = 0)]
        ack_count: u8,
    },
    /// Append one record batch.
    Append {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
        /// The batch payload, as text (or hex with --hex).
        payload: String,
        /// PAYLOAD is hex digits.
        #[arg(long)]
        hex: bool,
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Epoch))]
        epoch: Epoch,
        /// Offsets the batch covers.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Base offset; default: the range's next offset, asked with DESCRIBE_RANGE.
        #[arg(long, value_parser = value_parser!(u64).map(Offset))]
        offset: Option<Offset>,
        /// Confirmed offset to report; default: the end of this batch.
        #[arg(long, value_parser = value_parser!(u64).map(Offset))]
        confirmed: Option<Offset>,
    },
    /// Read record batches from an offset; --follow keeps reading like `tail -f`.
    Fetch {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Offset))]
        offset: Offset,
        #[arg(long, default_value_t = DEFAULT_FETCH_MAX_BYTES)]
        max_bytes: u32,
        /// Wait up to this long for data (long poll).
        #[arg(long, default_value_t = 0)]
        wait_ms: u32,
        /// Keep fetching as batches arrive, until the range is sealed and read to its end.
        #[arg(long)]
        follow: bool,
    },
    /// Seal a range.
    Seal {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Epoch))]
        epoch: Epoch,
        /// End offset; default: the node's next offset.
        #[arg(long, value_parser = value_parser!(u64).map(Offset))]
        end: Option<Offset>,
    },
    /// Show a range's offsets and state.
    DescribeRange {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Drop a range's whole batches below an offset (TRIM_RANGE).
    TrimRange {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
        /// New start of the range.
        #[arg(value_parser = value_parser!(u64).map(Offset))]
        offset: Offset,
    },
    /// Delete a data node's replica of a range (DELETE_RANGE); a missing range succeeds.
    DeleteRange {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// List the ranges a server holds.
    ListRanges {
        #[command(flatten)]
        target: Target,
        /// Only this stream's ranges.
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: Option<StreamId>,
    },
    /// Send bytes typed in hex as they are and dump whatever comes back.
    Raw {
        #[command(flatten)]
        target: Target,
        /// Hex digits; spaces, ':' and '_' are ignored.
        hex: Vec<String>,
        /// Also dump the bytes sent.
        #[arg(long)]
        show_sent: bool,
    },
}

/// The token every connection authenticates with: `--token`, else `ES_TOKEN`, else none.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let token = cli
        .token
        .clone()
        .or_else(|| std::env::var("ES_TOKEN").ok())
        .filter(|token| !token.is_empty());
    TOKEN.get_or_init(|| token);
    let format = cli.output;
    let result = match cli.command {
        CliCommand::Shell { addr } => return run_shell(&addr, format),
        CliCommand::Ping { addr, payload } => one_shot(
            &addr,
            format,
            false,
            RequestCommand::Ping {
                payload: payload.into_bytes(),
            },
        ),
        CliCommand::CreateRange {
            target,
            stream,
            index,
            start,
            epoch,
            replica_count_target,
            ack_count,
        } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::CreateRange {
                stream_id: stream,
                range_index: index,
                start_offset: start,
                epoch,
                replica_count_target,
                ack_count,
            },
        ),
        CliCommand::Append {
            target,
            range,
            payload,
            hex,
            epoch,
            count,
            offset,
            confirmed,
        } => {
            let payload = if hex {
                match parse_hex(&payload) {
                    Ok(bytes) => bytes,
                    Err(message) => return usage_error(&format!("PAYLOAD: {message}")),
                }
            } else {
                payload.into_bytes()
            };
            if count == 0 {
                return usage_error("--count must be at least 1");
            }
            one_shot(
                &target.addr,
                format,
                false,
                RequestCommand::Append {
                    stream_id: range.stream,
                    range_index: range.index,
                    payload,
                    epoch,
                    record_count: count,
                    base_offset: offset,
                    confirmed_offset: confirmed,
                },
            )
        }
        CliCommand::Fetch {
            target,
            range,
            offset,
            max_bytes,
            wait_ms,
            follow,
        } => {
            if max_bytes == 0 {
                return usage_error("--max-bytes must be at least 1");
            }
            let fetch = RequestCommand::Fetch {
                stream_id: range.stream,
                range_index: range.index,
                start_offset: offset,
                max_bytes,
                max_wait_ms: wait_ms,
            };
            if follow {
                return follow_range(&target.addr, format, fetch);
            }
            one_shot(&target.addr, format, false, fetch)
        }
        CliCommand::Seal {
            target,
            range,
            epoch,
            end,
        } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::Seal {
                stream_id: range.stream,
                range_index: range.index,
                epoch,
                end_offset: end,
            },
        ),
        CliCommand::DescribeRange { target, range } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::DescribeRange {
                stream_id: range.stream,
                range_index: range.index,
            },
        ),
        CliCommand::TrimRange {
            target,
            range,
            offset,
        } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::TrimRange {
                stream_id: range.stream,
                range_index: range.index,
                offset,
            },
        ),
        CliCommand::DeleteRange { target, range } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::DeleteRange {
                stream_id: range.stream,
                range_index: range.index,
            },
        ),
        CliCommand::ListRanges { target, stream } => one_shot(
            &target.addr,
            format,
            false,
            RequestCommand::ListRanges { stream_id: stream },
        ),
        CliCommand::Raw {
            target,
            hex,
            show_sent,
        } => match parse_hex(&hex.concat()) {
            Ok(bytes) if !bytes.is_empty() => one_shot(
                &target.addr,
                format,
                show_sent,
                RequestCommand::Raw { bytes },
            ),
            Ok(_) => return usage_error("raw needs the bytes to send, in hex"),
            Err(message) => return usage_error(&format!("HEX: {message}")),
        },
    };
    result
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("es: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn connect(address: &str, format: Format) -> Result<Session, ExitCode> {
    let token = TOKEN.get().and_then(Option::as_deref);
    Session::connect_with_token(address, token).map_err(|error| {
        print_failure(format, "connect", &error.to_string());
        ExitCode::from(EXIT_UNREACHABLE)
    })
}

fn print_failure(format: Format, operation: &str, message: &str) {
    match format {
        Format::Text => eprintln!("es: {message}"),
        Format::Json => println!("{}", output::error_json(operation, message)),
    }
}

fn print_outcome(format: Format, outcome: &Outcome, show_hex: bool) {
    match format {
        Format::Text => print!("{}", output::text(outcome, show_hex)),
        Format::Json => println!("{}", output::json_value(outcome, show_hex)),
    }
}

fn one_shot(address: &str, format: Format, show_hex: bool, command: RequestCommand) -> ExitCode {
    let mut session = match connect(address, format) {
        Ok(session) => session,
        Err(code) => return code,
    };
    match session.execute(&command) {
        Ok(outcome) => {
            print_outcome(format, &outcome, show_hex);
            if matches!(outcome.reply, Reply::Failed(_)) {
                ExitCode::from(EXIT_SERVER_ERROR)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            print_failure(format, "request", &error.to_string());
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// `fetch --follow`: fetch, print, move past what was read, long-poll again; stop once the
/// range is sealed and read to its end.
fn follow_range(address: &str, format: Format, first: RequestCommand) -> ExitCode {
    let RequestCommand::Fetch {
        stream_id,
        range_index,
        start_offset,
        max_bytes,
        max_wait_ms,
    } = first
    else {
        unreachable!("follow_range is only called with a fetch");
    };
    let mut session = match connect(address, format) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let wait_ms = if max_wait_ms == 0 {
        FOLLOW_WAIT_MS
    } else {
        max_wait_ms
    };
    let mut offset = start_offset;
    loop {
        let command = RequestCommand::Fetch {
            stream_id,
            range_index,
            start_offset: offset,
            max_bytes,
            max_wait_ms: wait_ms,
        };
        let outcome = match session.execute(&command) {
            Ok(outcome) => outcome,
            Err(error) => {
                print_failure(format, "fetch", &error.to_string());
                return ExitCode::from(EXIT_UNREACHABLE);
            }
        };
        match &outcome.reply {
            Reply::Fetched {
                batches,
                end_offset,
                ..
            } => {
                if !batches.is_empty() {
                    print_outcome(format, &outcome, false);
                }
                if let Some(last) = batches.last() {
                    offset = last.next_offset();
                }
                if end_offset.is_some_and(|end| offset >= end) {
                    return ExitCode::SUCCESS;
                }
            }
            Reply::Failed(_) => {
                print_outcome(format, &outcome, false);
                return ExitCode::from(EXIT_SERVER_ERROR);
            }
            _ => {
                print_outcome(format, &outcome, false);
                return ExitCode::from(EXIT_SERVER_ERROR);
            }
        }
    }
}

fn run_shell(address: &str, format: Format) -> ExitCode {
    let session = match connect(address, format) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let shell = Shell::new(session, format, std::io::stdout().lock());
    match shell.run_stdin() {
        Ok(summary) if summary.failures == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_SHELL_FAILURES),
        Err(error) => {
            eprintln!("es: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}
