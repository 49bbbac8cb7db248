//! `es`: talk to ElasticStream servers from the command line.
//!
//! `es shell [ADDR]` opens an interactive, telnet-style shell (or runs a script from stdin);
//! the other subcommands send one request each, for scripts (`--output json`). `es stream ...`
//! and `es cluster` talk to the placement manager (`--pm ADDR[,ADDR...]`, tried in order).
//!
//! Exit status of a one-shot command: 0 success; 1 the server answered with an error; 2 bad
//! usage; 3 the server could not be reached or the connection failed. `es shell` exits 0 when
//! every line parsed and was sent (error answers from the server included), 1 otherwise, 3 if
//! it cannot connect at all.

use std::process::ExitCode;

use bytes::Bytes;
use clap::builder::TypedValueParser;
use clap::{value_parser, Parser, Subcommand};
use client::command::{parse_hex, RequestCommand, DEFAULT_FETCH_MAX_BYTES};
use client::output::{self, Format};
use client::pm::{parse_addresses, PlacementManagers, DEFAULT_PM_ADDRESS};
use client::records::{self, Shape};
use client::session::{Outcome, Reply, Session};
use client::shell::Shell;
use client::{block_on, AppendFuture, Client, ClientConfig, ReadMode, SdkError};
use wire::{Epoch, Offset, RangeIndex, RangeKey, StreamId};

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
    about = "Talk to ElasticStream data nodes and placement managers: a shell and one-shot commands"
)]
struct Cli {
    /// How results are printed: text for people, json (one object per command) for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "text", global = true)]
    output: Format,
    /// Placement manager(s) for `stream` and `cluster`, tried in order until one answers.
    #[arg(
        long,
        global = true,
        value_name = "ADDR[,ADDR...]",
        default_value = DEFAULT_PM_ADDRESS
    )]
    pm: String,
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
    /// The data nodes the placement manager knows: state, liveness, free disk, ranges.
    Cluster,
    /// Streams and their ranges, at the placement manager (--pm).
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
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

#[derive(Subcommand)]
enum StreamCommand {
    /// Create a stream; prints its id (text) or its record (json).
    Create {
        /// R: replicas per range, 1..=16.
        #[arg(long)]
        replica: u8,
        /// A: replicas that must make a batch durable before it is acknowledged, 1..=R.
        #[arg(long)]
        ack: u8,
        /// Trim data older than this; 0 keeps it forever.
        #[arg(long, default_value_t = 0)]
        retention_ms: u64,
        /// Trim the oldest data while the stream holds more than this; 0 = unlimited.
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
    },
    /// Show a stream's record.
    Describe {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
    },
    /// List streams in id order.
    List {
        /// First stream id to list.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most streams to list; 0 = the placement manager's page limit.
        #[arg(long, default_value_t = 0)]
        max: u32,
    },
    /// Raise a stream's trim point: offsets below OFFSET are gone.
    Trim {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        #[arg(value_parser = value_parser!(u64).map(Offset))]
        offset: Offset,
    },
    /// Delete a stream; its ranges are then removed from the data nodes.
    Delete {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
    },
    /// A stream's ranges: offsets, R/A, the nodes holding them.
    Ranges {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
    },
    /// Raise the stream's epoch by one, fencing older writers; prints the new epoch.
    Open {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
    },
    /// Create the stream's next range; the placement manager picks its nodes.
    NewRange {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        /// The stream's current epoch.
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Epoch))]
        epoch: Epoch,
        /// First offset: the previous range's end, 0 for the first range.
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Offset))]
        start: Offset,
        /// The previous range's index + 1, 0 for the first range.
        #[arg(long, value_parser = value_parser!(u32).map(RangeIndex))]
        index: RangeIndex,
    },
    /// Append records through the SDK: opens a writer (raising the epoch, fencing older
    /// writers), prints each acknowledged batch's offset as it is acknowledged (json: one
    /// object per line), and seals its range when done.
    Append {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        /// Records to append, one batch each.
        payloads: Vec<String>,
        /// Read the records from standard input instead, one batch per line, like a console
        /// producer.
        #[arg(long)]
        stdin: bool,
    },
    /// Read records through the SDK across ranges: each record's payload on its own line and
    /// nothing else (json: one object per batch with its offset and records), up to the end
    /// as of now, or tailing with --follow.
    Read {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        /// First offset to read.
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Offset))]
        from: Offset,
        /// Keep reading as records are appended (never ends).
        #[arg(long)]
        follow: bool,
    },
    /// Record a range's end at the placement manager (SEAL_RANGE).
    SealRange {
        #[arg(value_parser = value_parser!(u64).map(StreamId))]
        stream: StreamId,
        #[arg(value_parser = value_parser!(u32).map(RangeIndex))]
        index: RangeIndex,
        /// The sealing writer's epoch, at least the stream's current one.
        #[arg(long, default_value = "0", value_parser = value_parser!(u64).map(Epoch))]
        epoch: Epoch,
        /// One past the range's last offset.
        #[arg(long, value_parser = value_parser!(u64).map(Offset))]
        end: Offset,
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
        CliCommand::Cluster => {
            return with_pm(&cli.pm, |managers| {
                pm_one_shot(
                    managers,
                    format,
                    Shape::Cluster,
                    RequestCommand::DescribeCluster,
                )
            })
        }
        CliCommand::Stream { command } => {
            return with_pm(&cli.pm, |managers| {
                stream_command(managers, format, command)
            })
        }
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

/// Runs `body` with the placement managers `--pm` names, or fails with a usage error.
fn with_pm(addresses: &str, body: impl FnOnce(&PlacementManagers) -> ExitCode) -> ExitCode {
    match parse_addresses(addresses) {
        Ok(addresses) => body(&PlacementManagers::new(addresses)),
        Err(message) => usage_error(&message),
    }
}

fn stream_command(
    managers: &PlacementManagers,
    format: Format,
    command: StreamCommand,
) -> ExitCode {
    let (shape, request) = match command {
        StreamCommand::Create {
            replica,
            ack,
            retention_ms,
            retention_bytes,
        } => (
            Shape::StreamId,
            RequestCommand::CreateStream {
                replica_count: replica,
                ack_count: ack,
                retention_ms,
                retention_bytes,
            },
        ),
        StreamCommand::Describe { stream } => (
            Shape::Stream,
            RequestCommand::DescribeStream { stream_id: stream },
        ),
        StreamCommand::List { from, max } => (
            Shape::Streams,
            RequestCommand::ListStreams {
                start_stream_id: StreamId(from),
                max_count: max,
            },
        ),
        StreamCommand::Trim { stream, offset } => (
            Shape::Stream,
            RequestCommand::TrimStream {
                stream_id: stream,
                start_offset: offset,
            },
        ),
        StreamCommand::Delete { stream } => (
            Shape::Stream,
            RequestCommand::DeleteStream { stream_id: stream },
        ),
        StreamCommand::Ranges { stream } => (
            Shape::Ranges,
            RequestCommand::ListRanges {
                stream_id: Some(stream),
            },
        ),
        StreamCommand::Open { stream } => return open_stream(managers, format, stream),
        StreamCommand::Append {
            stream,
            payloads,
            stdin,
        } => return sdk_append(managers, format, stream, payloads, stdin),
        StreamCommand::Read {
            stream,
            from,
            follow,
        } => return sdk_read(managers, format, stream, from, follow),
        StreamCommand::NewRange {
            stream,
            epoch,
            start,
            index,
        } => (
            Shape::Range,
            RequestCommand::CreateRange {
                stream_id: stream,
                range_index: index,
                start_offset: start,
                epoch,
                // The placement manager fills in the stream's R and A and picks the nodes.
                replica_count_target: 0,
                ack_count: 0,
            },
        ),
        StreamCommand::SealRange {
            stream,
            index,
            epoch,
            end,
        } => (
            Shape::Sealed(RangeKey::new(stream, index)),
            RequestCommand::Seal {
                stream_id: stream,
                range_index: index,
                epoch,
                end_offset: Some(end),
            },
        ),
    };
    pm_one_shot(managers, format, shape, request)
}

/// Batches `stream append` keeps in flight before it waits for acknowledgements.
const APPEND_WINDOW: usize = 256;
/// How long `stream append` and `stream read` retry an unreachable cluster.
const SDK_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// An SDK client of the placement managers, or the exit code after saying why not.
fn sdk_client(managers: &PlacementManagers, format: Format) -> Result<Client, ExitCode> {
    let mut config = ClientConfig::new(managers.addresses().to_vec());
    config.token = TOKEN.get().cloned().flatten();
    config.retry_for = SDK_RETRY_FOR;
    Client::connect(config).map_err(|error| sdk_failure(format, "connect", &error))
}

/// Prints `error` and returns the exit code it means.
fn sdk_failure(format: Format, operation: &str, error: &SdkError) -> ExitCode {
    print_failure(format, operation, &error.to_string());
    match error {
        SdkError::PmUnreachable { .. }
        | SdkError::Unavailable { .. }
        | SdkError::Timeout { .. } => ExitCode::from(EXIT_UNREACHABLE),
        SdkError::InvalidArgument(_) => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::from(EXIT_SERVER_ERROR),
    }
}

/// `stream append`: one batch per PAYLOAD or per stdin line, pipelined; a printer thread
/// prints each acknowledgement in order as it arrives.
fn sdk_append(
    managers: &PlacementManagers,
    format: Format,
    stream: StreamId,
    payloads: Vec<String>,
    stdin: bool,
) -> ExitCode {
    if stdin != payloads.is_empty() {
        return usage_error("stream append takes PAYLOAD... or --stdin (one of them)");
    }
    let client = match sdk_client(managers, format) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let writer = match block_on(client.open_writer(stream)) {
        Ok(writer) => writer,
        Err(error) => return sdk_failure(format, "open-writer", &error),
    };
    let (sender, acknowledgements) = std::sync::mpsc::sync_channel::<AppendFuture>(APPEND_WINDOW);
    let printer = std::thread::spawn(move || -> Result<(), SdkError> {
        use std::io::Write;
        for future in acknowledgements {
            let ack = block_on(future)?;
            let mut out = std::io::stdout().lock();
            let written = match format {
                Format::Text => writeln!(out, "{}", ack.base_offset),
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "offset": ack.base_offset.0,
                        "next_offset": ack.next_offset.0,
                    })
                ),
            };
            // A closed stdout (`| head`) stops the printing, not the appends.
            let _ = written.and_then(|()| out.flush());
        }
        Ok(())
    });
    let append = |record: Vec<u8>| {
        sender
            .send(writer.append(vec![Bytes::from(record)]))
            .is_ok()
    };
    if stdin {
        use std::io::BufRead;
        let mut input = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if !append(line.clone()) {
                        break;
                    }
                }
                Err(error) => {
                    print_failure(format, "append", &format!("reading stdin: {error}"));
                    break;
                }
            }
        }
    } else {
        for payload in payloads {
            if !append(payload.into_bytes()) {
                break;
            }
        }
    }
    drop(sender);
    match printer.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return sdk_failure(format, "append", &error),
        Err(_) => {
            print_failure(format, "append", "the printing thread panicked");
            return ExitCode::from(EXIT_SERVER_ERROR);
        }
    }
    match block_on(writer.close()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => sdk_failure(format, "close", &error),
    }
}

/// `stream read`: every record from `from`, across ranges, to the end as of now or forever.
fn sdk_read(
    managers: &PlacementManagers,
    format: Format,
    stream: StreamId,
    from: Offset,
    follow: bool,
) -> ExitCode {
    use std::io::Write;
    let client = match sdk_client(managers, format) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mode = if follow {
        ReadMode::Follow
    } else {
        ReadMode::ToEnd
    };
    let mut reader = match block_on(client.open_reader(stream, from, mode)) {
        Ok(reader) => reader,
        Err(error) => return sdk_failure(format, "read", &error),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        let batch = match block_on(reader.next()) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(error) => {
                let _ = out.flush();
                return sdk_failure(format, "read", &error);
            }
        };
        let written = match format {
            Format::Text => batch.records.iter().try_for_each(|record| {
                out.write_all(record)?;
                out.write_all(b"\n")
            }),
            Format::Json => {
                let records: Vec<serde_json::Value> = batch
                    .records
                    .iter()
                    .map(|record| record_json(record))
                    .collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "offset": batch.base_offset.0,
                        "next_offset": batch.next_offset().0,
                        "payload": records,
                    })
                )
            }
        };
        // Flushed per batch so a follower shows records as they come; a closed stdout ends
        // the read quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// A record in JSON: its text when it is UTF-8, else its bytes in hex.
fn record_json(record: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(record) {
        Ok(text) => serde_json::json!({ "text": text }),
        Err(_) => {
            let hex: String = record.iter().map(|byte| format!("{byte:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// `stream open`: DESCRIBE_STREAM for the current epoch, then UPDATE_STREAM to one above it. A
/// writer that opened the stream in between makes the update fail with STALE_EPOCH.
fn open_stream(managers: &PlacementManagers, format: Format, stream_id: StreamId) -> ExitCode {
    let current = match pm_request(
        managers,
        format,
        RequestCommand::DescribeStream { stream_id },
    ) {
        Ok(Reply::Stream(stream)) => stream,
        Ok(other) => return unexpected_reply(format, "describe-stream", &other),
        Err(code) => return code,
    };
    let Some(epoch) = current.epoch.0.checked_add(1) else {
        print_failure(
            format,
            "update-stream",
            &format!("stream {stream_id} is at the last epoch and cannot be opened again"),
        );
        return ExitCode::from(EXIT_SERVER_ERROR);
    };
    let update = RequestCommand::UpdateStream {
        stream_id,
        replica_count: None,
        ack_count: None,
        retention_ms: None,
        retention_bytes: None,
        epoch: Some(Epoch(epoch)),
    };
    pm_one_shot(managers, format, Shape::Epoch, update)
}

/// Sends one request to the placement managers and prints the reply in `shape`.
fn pm_one_shot(
    managers: &PlacementManagers,
    format: Format,
    shape: Shape,
    request: RequestCommand,
) -> ExitCode {
    let operation = request_operation(&request);
    match pm_request(managers, format, request) {
        Ok(reply) => match records::render(shape, &reply, format) {
            Some(rendered) => {
                print!("{rendered}");
                ExitCode::SUCCESS
            }
            None => unexpected_reply(format, operation, &reply),
        },
        Err(code) => code,
    }
}

/// The successful reply of one request, or the exit code after printing why there is none: an
/// error response (its code name and message), or no placement manager reachable.
fn pm_request(
    managers: &PlacementManagers,
    format: Format,
    request: RequestCommand,
) -> Result<Reply, ExitCode> {
    let operation = request_operation(&request);
    match managers.execute(&request) {
        Ok(outcome) => match outcome.reply {
            Reply::Failed(error) => {
                match format {
                    Format::Text => eprintln!(
                        "es: {operation}: ERROR {} detail={}: {}",
                        error.code, error.detail, error.message
                    ),
                    Format::Json => println!("{}", output::failed_json(&error)),
                }
                Err(ExitCode::from(EXIT_SERVER_ERROR))
            }
            reply => Ok(reply),
        },
        Err(error) => {
            print_failure(format, operation, &error.to_string());
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
    }
}

fn request_operation(request: &RequestCommand) -> &'static str {
    match request {
        RequestCommand::CreateStream { .. } => "create-stream",
        RequestCommand::DescribeStream { .. } => "describe-stream",
        RequestCommand::UpdateStream { .. } => "update-stream",
        RequestCommand::TrimStream { .. } => "trim-stream",
        RequestCommand::DeleteStream { .. } => "delete-stream",
        RequestCommand::ListStreams { .. } => "list-streams",
        RequestCommand::DescribeCluster => "describe-cluster",
        RequestCommand::ListRanges { .. } => "list-ranges",
        RequestCommand::CreateRange { .. } => "create-range",
        RequestCommand::Seal { .. } => "seal-range",
        _ => "request",
    }
}

fn unexpected_reply(format: Format, operation: &str, reply: &Reply) -> ExitCode {
    print_failure(
        format,
        operation,
        &format!("unexpected answer from the placement manager: {reply:?}"),
    );
    ExitCode::from(EXIT_UNREACHABLE)
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
