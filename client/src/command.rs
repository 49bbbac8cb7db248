//! The command grammar shared by the shell and the one-shot subcommands.
//!
//! A line is split into words (double quotes group a word and allow `\" \\ \n \t \xNN`
//! escapes); the first word names the command, positional words follow, then `key=value`
//! options in any order. Every error names what was wrong and repeats the expected form.

use std::fmt;

use wire::{Epoch, NodeId, NodeState, Offset, RangeIndex, StreamId};

/// FETCH `max_bytes` when none is given (docs/protocol.md §8).
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1 << 20;
/// Largest PING payload a node echoes (docs/protocol.md §4).
pub const MAX_PING_PAYLOAD_BYTES: usize = 64 * 1024;

/// A line of shell input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request(RequestCommand),
    /// `help` or `help COMMAND`.
    Help(Option<String>),
    /// `.hex on|off`: also print the raw bytes sent and received.
    Hex(bool),
    /// `.quit`, `.exit`, `quit`, `exit`.
    Quit,
}

/// A command that sends one request to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestCommand {
    Ping {
        payload: Vec<u8>,
    },
    CreateRange {
        stream_id: StreamId,
        range_index: RangeIndex,
        start_offset: Offset,
        epoch: Epoch,
        /// R and A recorded with the range; 0 = unknown (what a client sends).
        replica_count_target: u8,
        ack_count: u8,
    },
    Append {
        stream_id: StreamId,
        range_index: RangeIndex,
        payload: Vec<u8>,
        epoch: Epoch,
        record_count: u32,
        /// `None`: the session uses the next offset it knows for the range (asking the node
        /// with DESCRIBE_RANGE first if it knows none).
        base_offset: Option<Offset>,
        /// `None`: the end of this batch, which suits a single-replica range written directly
        /// (the node never serves beyond its durable end, whatever the writer reports).
        confirmed_offset: Option<Offset>,
    },
    Fetch {
        stream_id: StreamId,
        range_index: RangeIndex,
        start_offset: Offset,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    Seal {
        stream_id: StreamId,
        range_index: RangeIndex,
        epoch: Epoch,
        /// `None`: seal at the node's next offset.
        end_offset: Option<Offset>,
    },
    /// SEAL_RANGE with `FENCE_ONLY` (`seal ... --fence`): adopt the epoch, refuse new appends,
    /// answer the durable end; no end is fixed.
    Fence {
        stream_id: StreamId,
        range_index: RangeIndex,
        epoch: Epoch,
    },
    /// APPEND with `REPAIR` (`append ... --repair`): one batch copied into a fenced range at the
    /// fencing `epoch`; the batch header carries `batch_epoch` (the epoch it was first written
    /// with, at most `epoch`).
    RepairAppend {
        stream_id: StreamId,
        range_index: RangeIndex,
        payload: Vec<u8>,
        epoch: Epoch,
        batch_epoch: Epoch,
        record_count: u32,
        /// `None`: the next offset the session knows for the range, as for `append`.
        base_offset: Option<Offset>,
    },
    /// A confirm-only APPEND (no batch): the writer's acknowledged prefix.
    Confirm {
        stream_id: StreamId,
        range_index: RangeIndex,
        epoch: Epoch,
        confirmed_offset: Offset,
    },
    /// FETCH with its `DURABLE` and/or `SEALED` flags (`fetch ... --durable --sealed`).
    FetchFlagged {
        stream_id: StreamId,
        range_index: RangeIndex,
        start_offset: Offset,
        max_bytes: u32,
        max_wait_ms: u32,
        read_durable: bool,
        expect_sealed: bool,
    },
    DescribeRange {
        stream_id: StreamId,
        range_index: RangeIndex,
    },
    ListRanges {
        stream_id: Option<StreamId>,
    },
    /// TRIM_RANGE: drop the range's whole batches below `offset`.
    TrimRange {
        stream_id: StreamId,
        range_index: RangeIndex,
        offset: Offset,
    },
    /// DELETE_RANGE: delete the node's replica of the range.
    DeleteRange {
        stream_id: StreamId,
        range_index: RangeIndex,
    },
    /// CREATE_STREAM at a placement manager.
    CreateStream {
        replica_count: u8,
        ack_count: u8,
        /// 0 keeps data forever.
        retention_ms: u64,
        /// 0 = unlimited.
        retention_bytes: u64,
    },
    DescribeStream {
        stream_id: StreamId,
    },
    /// UPDATE_STREAM: only the fields given change.
    UpdateStream {
        stream_id: StreamId,
        replica_count: Option<u8>,
        ack_count: Option<u8>,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        epoch: Option<Epoch>,
    },
    /// TRIM_STREAM: move the stream's trim point up to `start_offset`.
    TrimStream {
        stream_id: StreamId,
        start_offset: Offset,
    },
    DeleteStream {
        stream_id: StreamId,
    },
    ListStreams {
        start_stream_id: StreamId,
        /// 0 = the placement manager's page limit.
        max_count: u32,
    },
    DescribeCluster,
    /// ALLOCATE_ID, as a data node registering at `address` would send it.
    AllocateId {
        address: String,
    },
    /// HEARTBEAT, as data node `node_id` would send it.
    Heartbeat {
        node_id: NodeId,
        address: String,
        state: NodeState,
        range_count: u32,
        disk_free_bytes: u64,
        disk_total_bytes: u64,
    },
    /// Send these bytes as they are (a frame typed in hex) and dump whatever comes back.
    Raw {
        bytes: Vec<u8>,
    },
}

/// One entry of `help`: the command's name, its form, and what it does.
pub struct Usage {
    pub name: &'static str,
    pub form: &'static str,
    pub summary: &'static str,
}

pub const USAGES: &[Usage] = &[
    Usage {
        name: "ping",
        form: "ping [PAYLOAD]",
        summary: "round trip to the server; the payload is echoed back",
    },
    Usage {
        name: "create-range",
        form: "create-range stream=ID index=N start=OFFSET [epoch=N] [replica-count-target=N] \
               [ack-count=N]",
        summary: "create a range replica on the node; R and A default to 0 (unknown); \
                  repeating it with the same values succeeds",
    },
    Usage {
        name: "append",
        form: "append STREAM INDEX PAYLOAD [epoch=N] [count=N] [offset=N] [confirmed=N] \
               [--repair [batch-epoch=N]]",
        summary: "append one record batch; PAYLOAD is \"text\", a bare word or hex:0A0B..; \
                  offset defaults to the range's next offset; --repair copies it into a range \
                  fenced at epoch, its header at batch-epoch (default: epoch)",
    },
    Usage {
        name: "confirm",
        form: "confirm STREAM INDEX EPOCH OFFSET",
        summary: "confirm-only append: tell the replica every offset below OFFSET is \
                  acknowledged, so readers may fetch it",
    },
    Usage {
        name: "fetch",
        form: "fetch STREAM INDEX offset=N [max-bytes=N] [wait-ms=N] [--durable] [--sealed]",
        summary: "read record batches from an offset, waiting up to wait-ms for new ones; \
                  --durable reads a fenced or sealed range up to its durable end, --sealed \
                  answers OFFSET_NOT_HELD instead of waiting",
    },
    Usage {
        name: "seal",
        form: "seal STREAM INDEX [epoch=N] [end=N] [--fence]",
        summary: "seal a range; it accepts no more appends; --fence only fences it (no end, \
                  answers the durable end)",
    },
    Usage {
        name: "describe-range",
        form: "describe-range STREAM INDEX",
        summary: "show a range's offsets and state",
    },
    Usage {
        name: "list-ranges",
        form: "list-ranges [STREAM]",
        summary: "list the ranges the server holds",
    },
    Usage {
        name: "trim-range",
        form: "trim-range STREAM INDEX OFFSET",
        summary: "drop the range's whole batches below OFFSET (what the placement manager \
                  sends for retention); reads below it then fail",
    },
    Usage {
        name: "delete-range",
        form: "delete-range STREAM INDEX",
        summary: "delete the node's replica of the range, data and catalog entry; deleting a \
                  missing range succeeds",
    },
    Usage {
        name: "create-stream",
        form: "create-stream R A [retention-ms=N] [retention-bytes=N]",
        summary: "placement manager: create a stream with R replicas per range, A of which \
                  acknowledge; retention 0 = forever / unlimited",
    },
    Usage {
        name: "describe-stream",
        form: "describe-stream STREAM",
        summary: "placement manager: show a stream (a deleted one shows `deleted`)",
    },
    Usage {
        name: "list-streams",
        form: "list-streams [from=ID] [max=N]",
        summary: "placement manager: list streams in id order from `from` (max=0: the PM's \
                  page limit)",
    },
    Usage {
        name: "update-stream",
        form: "update-stream STREAM [replica-count=N] [ack-count=N] [retention-ms=N] \
               [retention-bytes=N] [epoch=N]",
        summary: "placement manager: change the fields given; a new epoch must be above the \
                  current one and fences older writers",
    },
    Usage {
        name: "trim-stream",
        form: "trim-stream STREAM OFFSET",
        summary: "placement manager: raise the stream's trim point to OFFSET (lower is a no-op)",
    },
    Usage {
        name: "delete-stream",
        form: "delete-stream STREAM",
        summary: "placement manager: delete the stream; its ranges are removed from the nodes",
    },
    Usage {
        name: "describe-cluster",
        form: "describe-cluster",
        summary: "placement manager: the data nodes it knows, their state, liveness and load",
    },
    Usage {
        name: "allocate-id",
        form: "allocate-id ADDR",
        summary: "placement manager: allocate a node id as a data node serving on ADDR would",
    },
    Usage {
        name: "heartbeat",
        form: "heartbeat NODE ADDR [state=read-write|read-only|offline] [ranges=N] \
               [disk-free=N] [disk-total=N]",
        summary: "placement manager: heartbeat as data node NODE would (the PM believes it: \
                  for testing)",
    },
    Usage {
        name: "raw",
        form: "raw HEX",
        summary:
            "send bytes typed in hex as they are (a whole frame, or garbage) and dump the reply",
    },
    Usage {
        name: "help",
        form: "help [COMMAND]",
        summary: "list the commands, or show one",
    },
    Usage {
        name: ".hex",
        form: ".hex on|off",
        summary: "also show the raw bytes sent and received",
    },
    Usage {
        name: ".quit",
        form: ".quit",
        summary: "leave the shell (also .exit, quit, exit, end of input)",
    },
];

/// The usage entry of a command, if it exists.
pub fn usage(name: &str) -> Option<&'static Usage> {
    USAGES.iter().find(|usage| usage.name == name)
}

/// A parse failure: what was wrong and the form that was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub expected: Option<&'static str>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(form) => write!(formatter, "{}; expected: {form}", self.message),
            None => write!(formatter, "{}", self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one line. `Ok(None)` for a blank line or a `#` comment.
pub fn parse_line(line: &str) -> Result<Option<Command>, ParseError> {
    let words = split_words(line).map_err(|message| ParseError {
        message,
        expected: None,
    })?;
    let Some((name, arguments)) = words.split_first() else {
        return Ok(None);
    };
    if name.text.starts_with('#') && !name.quoted {
        return Ok(None);
    }
    let name = name.text.as_str();
    let command = match name {
        "help" | "?" => match arguments {
            [] => Command::Help(None),
            [topic] => Command::Help(Some(topic.text.clone())),
            _ => return Err(error("help takes at most one command name", "help")),
        },
        ".hex" => match arguments
            .iter()
            .map(|word| word.text.as_str())
            .collect::<Vec<_>>()[..]
        {
            ["on"] => Command::Hex(true),
            ["off"] => Command::Hex(false),
            _ => return Err(error("`.hex` needs `on` or `off`", ".hex")),
        },
        ".quit" | ".exit" | "quit" | "exit" => Command::Quit,
        _ => Command::Request(parse_request(name, arguments)?),
    };
    Ok(Some(command))
}

fn error(message: impl Into<String>, command: &str) -> ParseError {
    ParseError {
        message: message.into(),
        expected: usage(command).map(|usage| usage.form),
    }
}

fn parse_request(name: &str, arguments: &[Word]) -> Result<RequestCommand, ParseError> {
    let mut arguments = Arguments::split(name, arguments)?;
    let command = match name {
        "ping" => {
            let payload = match arguments.positional(0) {
                Some(word) => parse_payload(name, word)?,
                None => Vec::new(),
            };
            if payload.len() > MAX_PING_PAYLOAD_BYTES {
                return Err(error(
                    format!(
                        "PING payload of {} bytes is above the {MAX_PING_PAYLOAD_BYTES}-byte limit",
                        payload.len()
                    ),
                    name,
                ));
            }
            arguments.expect_positionals(if arguments.positionals.is_empty() {
                0
            } else {
                1
            })?;
            RequestCommand::Ping { payload }
        }
        "create-range" => {
            arguments.expect_positionals(0)?;
            RequestCommand::CreateRange {
                stream_id: StreamId(arguments.required_number("stream")?),
                range_index: RangeIndex(arguments.required_number("index")?),
                start_offset: Offset(arguments.required_number("start")?),
                epoch: Epoch(arguments.number("epoch")?.unwrap_or(0)),
                replica_count_target: arguments.number("replica-count-target")?.unwrap_or(0),
                ack_count: arguments.number("ack-count")?.unwrap_or(0),
            }
        }
        "append" => {
            arguments.expect_positionals(3)?;
            let (stream_id, range_index) = arguments.range()?;
            let payload = parse_payload(name, &arguments.positionals[2])?;
            let record_count = arguments.number("count")?.unwrap_or(1);
            if record_count == 0 {
                return Err(error("count=0: a batch covers at least one offset", name));
            }
            let epoch = Epoch(arguments.number("epoch")?.unwrap_or(0));
            let base_offset = arguments.number("offset")?.map(Offset);
            if arguments.flag("repair") {
                let batch_epoch = arguments.number("batch-epoch")?.map_or(epoch, Epoch);
                if batch_epoch > epoch {
                    return Err(error(
                        format!(
                            "batch-epoch={batch_epoch} is above epoch={epoch}: a repair carries \
                             batches of the fencing epoch or older"
                        ),
                        name,
                    ));
                }
                if arguments.number::<u64>("confirmed")?.is_some() {
                    return Err(error(
                        "a repair append reports no confirmed offset (the node ignores it)",
                        name,
                    ));
                }
                RequestCommand::RepairAppend {
                    stream_id,
                    range_index,
                    payload,
                    epoch,
                    batch_epoch,
                    record_count,
                    base_offset,
                }
            } else {
                RequestCommand::Append {
                    stream_id,
                    range_index,
                    payload,
                    epoch,
                    record_count,
                    base_offset,
                    confirmed_offset: arguments.number("confirmed")?.map(Offset),
                }
            }
        }
        "confirm" => {
            arguments.expect_positionals(4)?;
            let (stream_id, range_index) = arguments.range()?;
            RequestCommand::Confirm {
                stream_id,
                range_index,
                epoch: Epoch(arguments.positional_number(2, "EPOCH")?),
                confirmed_offset: Offset(arguments.positional_number(3, "OFFSET")?),
            }
        }
        "fetch" => {
            arguments.expect_positionals(2)?;
            let (stream_id, range_index) = arguments.range()?;
            let max_bytes = arguments
                .number("max-bytes")?
                .unwrap_or(DEFAULT_FETCH_MAX_BYTES);
            if max_bytes == 0 {
                return Err(error(
                    "max-bytes=0: the budget must allow at least one byte",
                    name,
                ));
            }
            let start_offset = Offset(arguments.required_number("offset")?);
            let max_wait_ms = arguments.number("wait-ms")?.unwrap_or(0);
            let read_durable = arguments.flag("durable");
            let expect_sealed = arguments.flag("sealed");
            if read_durable || expect_sealed {
                RequestCommand::FetchFlagged {
                    stream_id,
                    range_index,
                    start_offset,
                    max_bytes,
                    max_wait_ms,
                    read_durable,
                    expect_sealed,
                }
            } else {
                RequestCommand::Fetch {
                    stream_id,
                    range_index,
                    start_offset,
                    max_bytes,
                    max_wait_ms,
                }
            }
        }
        "seal" => {
            arguments.expect_positionals(2)?;
            let (stream_id, range_index) = arguments.range()?;
            let epoch = Epoch(arguments.number("epoch")?.unwrap_or(0));
            let end_offset = arguments.number("end")?.map(Offset);
            if arguments.flag("fence") {
                if end_offset.is_some() {
                    return Err(error("--fence fixes no end: leave out end=", name));
                }
                RequestCommand::Fence {
                    stream_id,
                    range_index,
                    epoch,
                }
            } else {
                RequestCommand::Seal {
                    stream_id,
                    range_index,
                    epoch,
                    end_offset,
                }
            }
        }
        "describe-range" => {
            arguments.expect_positionals(2)?;
            let (stream_id, range_index) = arguments.range()?;
            RequestCommand::DescribeRange {
                stream_id,
                range_index,
            }
        }
        "list-ranges" => {
            let stream_id = match arguments.positionals.len() {
                0 => None,
                1 => Some(StreamId(arguments.positional_number(0, "STREAM")?)),
                _ => return Err(error("too many arguments", name)),
            };
            RequestCommand::ListRanges { stream_id }
        }
        "trim-range" => {
            arguments.expect_positionals(3)?;
            let (stream_id, range_index) = arguments.range()?;
            RequestCommand::TrimRange {
                stream_id,
                range_index,
                offset: Offset(arguments.positional_number(2, "OFFSET")?),
            }
        }
        "delete-range" => {
            arguments.expect_positionals(2)?;
            let (stream_id, range_index) = arguments.range()?;
            RequestCommand::DeleteRange {
                stream_id,
                range_index,
            }
        }
        "create-stream" => {
            arguments.expect_positionals(2)?;
            RequestCommand::CreateStream {
                replica_count: arguments.positional_number(0, "R")?,
                ack_count: arguments.positional_number(1, "A")?,
                retention_ms: arguments.number("retention-ms")?.unwrap_or(0),
                retention_bytes: arguments.number("retention-bytes")?.unwrap_or(0),
            }
        }
        "describe-stream" => {
            arguments.expect_positionals(1)?;
            RequestCommand::DescribeStream {
                stream_id: StreamId(arguments.positional_number(0, "STREAM")?),
            }
        }
        "list-streams" => {
            arguments.expect_positionals(0)?;
            RequestCommand::ListStreams {
                start_stream_id: StreamId(arguments.number("from")?.unwrap_or(0)),
                max_count: arguments.number("max")?.unwrap_or(0),
            }
        }
        "update-stream" => {
            arguments.expect_positionals(1)?;
            let command = RequestCommand::UpdateStream {
                stream_id: StreamId(arguments.positional_number(0, "STREAM")?),
                replica_count: arguments.number("replica-count")?,
                ack_count: arguments.number("ack-count")?,
                retention_ms: arguments.number("retention-ms")?,
                retention_bytes: arguments.number("retention-bytes")?,
                epoch: arguments.number("epoch")?.map(Epoch),
            };
            if arguments.options.is_empty() {
                return Err(error(
                    "update-stream needs at least one field to change",
                    name,
                ));
            }
            command
        }
        "trim-stream" => {
            arguments.expect_positionals(2)?;
            RequestCommand::TrimStream {
                stream_id: StreamId(arguments.positional_number(0, "STREAM")?),
                start_offset: Offset(arguments.positional_number(1, "OFFSET")?),
            }
        }
        "delete-stream" => {
            arguments.expect_positionals(1)?;
            RequestCommand::DeleteStream {
                stream_id: StreamId(arguments.positional_number(0, "STREAM")?),
            }
        }
        "describe-cluster" => {
            arguments.expect_positionals(0)?;
            RequestCommand::DescribeCluster
        }
        "allocate-id" => {
            arguments.expect_positionals(1)?;
            RequestCommand::AllocateId {
                address: arguments.positionals[0].text.clone(),
            }
        }
        "heartbeat" => {
            arguments.expect_positionals(2)?;
            let state = match arguments.text("state") {
                None => NodeState::ReadWrite,
                Some(text) => parse_node_state(&text).ok_or_else(|| {
                    error(
                        format!("state must be read-write, read-only or offline, found `{text}`"),
                        name,
                    )
                })?,
            };
            RequestCommand::Heartbeat {
                node_id: NodeId(arguments.positional_number(0, "NODE")?),
                address: arguments.positionals[1].text.clone(),
                state,
                range_count: arguments.number("ranges")?.unwrap_or(0),
                disk_free_bytes: arguments.number("disk-free")?.unwrap_or(0),
                disk_total_bytes: arguments.number("disk-total")?.unwrap_or(0),
            }
        }
        "raw" => {
            let hex: String = arguments
                .positionals
                .iter()
                .map(|word| word.text.as_str())
                .collect();
            if hex.is_empty() {
                return Err(error("raw needs the bytes to send, in hex", name));
            }
            RequestCommand::Raw {
                bytes: parse_hex(&hex).map_err(|message| error(message, name))?,
            }
        }
        _ => {
            return Err(ParseError {
                message: format!("unknown command `{name}`; type `help` for the list"),
                expected: None,
            })
        }
    };
    arguments.finish()?;
    Ok(command)
}

/// A word of the line and whether it was quoted (a quoted word is never an option).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// Positional words, `key=value` options and `--flag`s of one command.
struct Arguments<'a> {
    command: &'a str,
    positionals: Vec<Word>,
    options: Vec<(String, String, bool)>,
    /// Unquoted words `--name`, and whether a command asked for each.
    flags: Vec<(String, bool)>,
}

impl<'a> Arguments<'a> {
    fn split(command: &'a str, words: &[Word]) -> Result<Arguments<'a>, ParseError> {
        let mut positionals = Vec::new();
        let mut options: Vec<(String, String, bool)> = Vec::new();
        let mut flags: Vec<(String, bool)> = Vec::new();
        for word in words {
            if let Some(flag) = word.text.strip_prefix("--").filter(|_| !word.quoted) {
                if flag.is_empty() || flag.contains('=') {
                    return Err(error(
                        format!("`{}` is not a flag: flags are `--name`", word.text),
                        command,
                    ));
                }
                if flags.iter().any(|(other, _)| other == flag) {
                    return Err(error(format!("flag `--{flag}` given twice"), command));
                }
                flags.push((flag.to_string(), false));
                continue;
            }
            match word.text.split_once('=') {
                Some((key, value)) if !word.quoted && !key.is_empty() => {
                    if options.iter().any(|(other, _, _)| other == key) {
                        return Err(error(format!("option `{key}` given twice"), command));
                    }
                    options.push((key.to_string(), value.to_string(), false));
                }
                _ => positionals.push(word.clone()),
            }
        }
        Ok(Arguments {
            command,
            positionals,
            options,
            flags,
        })
    }

    /// Whether `--name` was given.
    fn flag(&mut self, name: &str) -> bool {
        match self.flags.iter_mut().find(|(flag, _)| flag == name) {
            Some(flag) => {
                flag.1 = true;
                true
            }
            None => false,
        }
    }

    fn positional(&self, index: usize) -> Option<&Word> {
        self.positionals.get(index)
    }

    fn expect_positionals(&self, count: usize) -> Result<(), ParseError> {
        match self.positionals.len() {
            found if found == count => Ok(()),
            found if found < count => Err(error(
                format!(
                    "{} needs {count} positional argument(s), found {found}",
                    self.command
                ),
                self.command,
            )),
            _ => Err(error(
                format!("unexpected argument `{}`", self.positionals[count].text),
                self.command,
            )),
        }
    }

    fn positional_number<T: std::str::FromStr>(
        &self,
        index: usize,
        what: &str,
    ) -> Result<T, ParseError> {
        let text = &self.positionals[index].text;
        text.parse().map_err(|_| {
            error(
                format!("{what} must be a non-negative integer, found `{text}`"),
                self.command,
            )
        })
    }

    /// The `STREAM INDEX` pair that starts most commands.
    fn range(&self) -> Result<(StreamId, RangeIndex), ParseError> {
        Ok((
            StreamId(self.positional_number(0, "STREAM")?),
            RangeIndex(self.positional_number(1, "INDEX")?),
        ))
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, ParseError> {
        let Some(option) = self.options.iter_mut().find(|(name, _, _)| name == key) else {
            return Ok(None);
        };
        option.2 = true;
        let value = &option.1;
        value.parse().map(Some).map_err(|_| {
            error(
                format!("{key} must be a non-negative integer, found `{value}`"),
                self.command,
            )
        })
    }

    /// An option's value as text.
    fn text(&mut self, key: &str) -> Option<String> {
        let option = self.options.iter_mut().find(|(name, _, _)| name == key)?;
        option.2 = true;
        Some(option.1.clone())
    }

    fn required_number<T: std::str::FromStr>(&mut self, key: &str) -> Result<T, ParseError> {
        self.number(key)?
            .ok_or_else(|| error(format!("missing `{key}=`"), self.command))
    }

    /// Fails on an option or flag no accessor asked for (a typo must not be ignored silently).
    fn finish(self) -> Result<(), ParseError> {
        if let Some((key, _, _)) = self.options.iter().find(|(_, _, used)| !used) {
            return Err(error(format!("unknown option `{key}=`"), self.command));
        }
        match self.flags.iter().find(|(_, used)| !used) {
            Some((flag, _)) => Err(error(format!("unknown flag `--{flag}`"), self.command)),
            None => Ok(()),
        }
    }
}

/// `read-write`, `read-only` or `offline` (also the protocol's `READ_WRITE` spelling).
pub fn parse_node_state(text: &str) -> Option<NodeState> {
    match text.to_ascii_lowercase().replace('_', "-").as_str() {
        "read-write" => Some(NodeState::ReadWrite),
        "read-only" => Some(NodeState::ReadOnly),
        "offline" => Some(NodeState::Offline),
        _ => None,
    }
}

/// A payload word: `hex:0a0b..` for bytes, anything else as its UTF-8 text.
fn parse_payload(command: &str, word: &Word) -> Result<Vec<u8>, ParseError> {
    match word.text.strip_prefix("hex:") {
        Some(hex) if !word.quoted => parse_hex(hex).map_err(|message| error(message, command)),
        _ => Ok(word.text.as_bytes().to_vec()),
    }
}

/// Hex digits, optionally separated by spaces, `:` or `_`, optionally prefixed `0x`.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    let digits: Vec<u8> = text
        .bytes()
        .filter(|byte| !matches!(byte, b' ' | b':' | b'_' | b'\t'))
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let high = hex_value(pair[0]);
            let low = hex_value(pair[1]);
            match (high, low) {
                (Some(high), Some(low)) => Ok(high << 4 | low),
                _ => Err(format!(
                    "`{}` is not a hex byte",
                    String::from_utf8_lossy(pair)
                )),
            }
        })
        .collect()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// Splits a line into words. Double quotes group; inside them `\"`, `\\`, `\n`, `\t`, `\r`,
/// `\0` and `\xNN` are escapes. A quote may start mid-word (`key="a b"`).
fn split_words(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut characters = line.chars().peekable();
    loop {
        while characters
            .peek()
            .is_some_and(|character| character.is_whitespace())
        {
            characters.next();
        }
        if characters.peek().is_none() {
            return Ok(words);
        }
        let mut text = String::new();
        let mut bytes_escape: Vec<u8> = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while let Some(&character) = characters.peek() {
            if !in_quotes && character.is_whitespace() {
                break;
            }
            characters.next();
            match character {
                '"' => {
                    in_quotes = !in_quotes;
                    quoted = true;
                }
                '\\' if in_quotes => {
                    let escaped = characters.next().ok_or("line ends inside an escape")?;
                    match escaped {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        '0' => text.push('\0'),
                        '\\' => text.push('\\'),
                        '"' => text.push('"'),
                        'x' => {
                            let high = characters.next().and_then(|c| c.to_digit(16));
                            let low = characters.next().and_then(|c| c.to_digit(16));
                            match (high, low) {
                                (Some(high), Some(low)) => {
                                    bytes_escape.push((high << 4 | low) as u8);
                                    // \xNN sequences that form UTF-8 are kept; anything else is
                                    // rejected so a payload is never silently altered.
                                    if let Ok(decoded) = std::str::from_utf8(&bytes_escape) {
                                        text.push_str(decoded);
                                        bytes_escape.clear();
                                    }
                                    continue;
                                }
                                _ => return Err("`\\x` needs two hex digits".into()),
                            }
                        }
                        other => return Err(format!("unknown escape `\\{other}`")),
                    }
                }
                other => text.push(other),
            }
            if !bytes_escape.is_empty() {
                return Err("`\\x` escapes must form UTF-8 text; use hex:... for bytes".into());
            }
        }
        if in_quotes {
            return Err("unterminated double quote".into());
        }
        if !bytes_escape.is_empty() {
            return Err("`\\x` escapes must form UTF-8 text; use hex:... for bytes".into());
        }
        words.push(Word { text, quoted });
    }
}

#[cfg(test)]
mod tests;
