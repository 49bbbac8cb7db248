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
        form: "append STREAM INDEX PAYLOAD [epoch=N] [count=N] [offset=N] [confirmed=N]",
        summary: "append one record batch; PAYLOAD is \"text\", a bare word or hex:0A0B..; \
                  offset defaults to the range's next offset",
    },
    Usage {
        name: "fetch",
        form: "fetch STREAM INDEX offset=N [max-bytes=N] [wait-ms=N]",
        summary: "read record batches from an offset, waiting up to wait-ms for new ones",
    },
    Usage {
        name: "seal",
        form: "seal STREAM INDEX [epoch=N] [end=N]",
        summary: "seal a range; it accepts no more appends",
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
            RequestCommand::Append {
                stream_id,
                range_index,
                payload,
                epoch: Epoch(arguments.number("epoch")?.unwrap_or(0)),
                record_count,
                base_offset: arguments.number("offset")?.map(Offset),
                confirmed_offset: arguments.number("confirmed")?.map(Offset),
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
            RequestCommand::Fetch {
                stream_id,
                range_index,
                start_offset: Offset(arguments.required_number("offset")?),
                max_bytes,
                max_wait_ms: arguments.number("wait-ms")?.unwrap_or(0),
            }
        }
        "seal" => {
            arguments.expect_positionals(2)?;
            let (stream_id, range_index) = arguments.range()?;
            RequestCommand::Seal {
                stream_id,
                range_index,
                epoch: Epoch(arguments.number("epoch")?.unwrap_or(0)),
                end_offset: arguments.number("end")?.map(Offset),
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

/// Positional words and `key=value` options of one command.
struct Arguments<'a> {
    command: &'a str,
    positionals: Vec<Word>,
    options: Vec<(String, String, bool)>,
}

impl<'a> Arguments<'a> {
    fn split(command: &'a str, words: &[Word]) -> Result<Arguments<'a>, ParseError> {
        let mut positionals = Vec::new();
        let mut options: Vec<(String, String, bool)> = Vec::new();
        for word in words {
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
        })
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

    /// Fails on an option no accessor asked for (a typo must not be ignored silently).
    fn finish(self) -> Result<(), ParseError> {
        match self.options.iter().find(|(_, _, used)| !used) {
            Some((key, _, _)) => Err(error(format!("unknown option `{key}=`"), self.command)),
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
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        parse_line(line).expect("parses").expect("not blank")
    }

    fn request(line: &str) -> RequestCommand {
        match parse(line) {
            Command::Request(request) => request,
            other => panic!("{line}: not a request: {other:?}"),
        }
    }

    fn parse_error(line: &str) -> String {
        parse_line(line).expect_err("must not parse").to_string()
    }

    #[test]
    fn blank_lines_and_comments_are_nothing() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   \t ").unwrap(), None);
        assert_eq!(parse_line("# a comment").unwrap(), None);
    }

    #[test]
    fn ping_with_and_without_payload() {
        assert_eq!(request("ping"), RequestCommand::Ping { payload: vec![] });
        assert_eq!(
            request("ping \"hi there\""),
            RequestCommand::Ping {
                payload: b"hi there".to_vec()
            }
        );
        assert!(parse_error(&format!("ping {}", "x".repeat(70_000))).contains("limit"));
    }

    #[test]
    fn create_range_takes_named_options_in_any_order() {
        assert_eq!(
            request(
                "create-range start=10 index=2 stream=7 epoch=3 ack-count=2 replica-count-target=3"
            ),
            RequestCommand::CreateRange {
                stream_id: StreamId(7),
                range_index: RangeIndex(2),
                start_offset: Offset(10),
                epoch: Epoch(3),
                replica_count_target: 3,
                ack_count: 2,
            }
        );
        assert_eq!(
            request("create-range stream=1 index=0 start=0"),
            RequestCommand::CreateRange {
                stream_id: StreamId(1),
                range_index: RangeIndex(0),
                start_offset: Offset(0),
                epoch: Epoch(0),
                replica_count_target: 0,
                ack_count: 0,
            }
        );
        assert!(
            parse_error("create-range stream=1 index=0 start=0 ack-count=256")
                .contains("ack-count must be a non-negative integer")
        );
    }

    #[test]
    fn create_range_names_the_missing_option_and_the_form() {
        let message = parse_error("create-range stream=1 index=0");
        assert!(message.contains("missing `start=`"), "{message}");
        assert!(
            message.contains("expected: create-range stream=ID index=N start=OFFSET"),
            "{message}"
        );
    }

    #[test]
    fn append_defaults_and_options() {
        assert_eq!(
            request("append 1 0 \"hello\""),
            RequestCommand::Append {
                stream_id: StreamId(1),
                range_index: RangeIndex(0),
                payload: b"hello".to_vec(),
                epoch: Epoch(0),
                record_count: 1,
                base_offset: None,
                confirmed_offset: None,
            }
        );
        assert_eq!(
            request("append 1 0 hex:00ff10 epoch=2 count=3 offset=5 confirmed=4"),
            RequestCommand::Append {
                stream_id: StreamId(1),
                range_index: RangeIndex(0),
                payload: vec![0x00, 0xff, 0x10],
                epoch: Epoch(2),
                record_count: 3,
                base_offset: Some(Offset(5)),
                confirmed_offset: Some(Offset(4)),
            }
        );
    }

    #[test]
    fn quoted_payload_keeps_spaces_equals_and_escapes() {
        let RequestCommand::Append { payload, .. } = request(r#"append 1 0 "a=b \"c\"\n\x41\\""#)
        else {
            panic!("not an append")
        };
        assert_eq!(payload, b"a=b \"c\"\nA\\".to_vec());
        // A quoted hex: prefix is text, not bytes.
        let RequestCommand::Append { payload, .. } = request(r#"append 1 0 "hex:41""#) else {
            panic!("not an append")
        };
        assert_eq!(payload, b"hex:41".to_vec());
    }

    #[test]
    fn append_errors_say_what_and_how() {
        assert!(parse_error("append 1 0").contains("needs 3 positional argument(s), found 2"));
        assert!(parse_error("append x 0 hi")
            .contains("STREAM must be a non-negative integer, found `x`"));
        assert!(parse_error("append 1 0 hi count=0").contains("at least one offset"));
        assert!(
            parse_error("append 1 0 hi epoch=-1").contains("epoch must be a non-negative integer")
        );
        assert!(parse_error("append 1 0 hi colour=red").contains("unknown option `colour=`"));
        assert!(parse_error("append 1 0 hi epoch=1 epoch=2").contains("given twice"));
        assert!(parse_error("append 1 0 \"unterminated").contains("unterminated double quote"));
        assert!(parse_error("append 1 0 hex:abc").contains("odd number of hex digits"));
        let message = parse_error("append 1 0 a b");
        assert!(message.contains("unexpected argument `b`"), "{message}");
        assert!(
            message.contains("expected: append STREAM INDEX PAYLOAD"),
            "{message}"
        );
    }

    #[test]
    fn fetch_requires_an_offset() {
        assert_eq!(
            request("fetch 1 0 offset=3 max-bytes=100 wait-ms=250"),
            RequestCommand::Fetch {
                stream_id: StreamId(1),
                range_index: RangeIndex(0),
                start_offset: Offset(3),
                max_bytes: 100,
                max_wait_ms: 250,
            }
        );
        let RequestCommand::Fetch {
            max_bytes,
            max_wait_ms,
            ..
        } = request("fetch 1 0 offset=0")
        else {
            panic!("not a fetch")
        };
        assert_eq!((max_bytes, max_wait_ms), (DEFAULT_FETCH_MAX_BYTES, 0));
        assert!(parse_error("fetch 1 0").contains("missing `offset=`"));
        assert!(parse_error("fetch 1 0 offset=0 max-bytes=0").contains("max-bytes=0"));
    }

    #[test]
    fn seal_describe_and_list() {
        assert_eq!(
            request("seal 4 1 epoch=2"),
            RequestCommand::Seal {
                stream_id: StreamId(4),
                range_index: RangeIndex(1),
                epoch: Epoch(2),
                end_offset: None,
            }
        );
        assert_eq!(
            request("seal 4 1 end=9"),
            RequestCommand::Seal {
                stream_id: StreamId(4),
                range_index: RangeIndex(1),
                epoch: Epoch(0),
                end_offset: Some(Offset(9)),
            }
        );
        assert_eq!(
            request("describe-range 4 1"),
            RequestCommand::DescribeRange {
                stream_id: StreamId(4),
                range_index: RangeIndex(1)
            }
        );
        assert_eq!(
            request("list-ranges"),
            RequestCommand::ListRanges { stream_id: None }
        );
        assert_eq!(
            request("list-ranges 3"),
            RequestCommand::ListRanges {
                stream_id: Some(StreamId(3))
            }
        );
        assert!(parse_error("describe-range 4").contains("expected: describe-range STREAM INDEX"));
    }

    #[test]
    fn trim_and_delete_range() {
        assert_eq!(
            request("trim-range 4 1 100"),
            RequestCommand::TrimRange {
                stream_id: StreamId(4),
                range_index: RangeIndex(1),
                offset: Offset(100),
            }
        );
        assert_eq!(
            request("delete-range 4 1"),
            RequestCommand::DeleteRange {
                stream_id: StreamId(4),
                range_index: RangeIndex(1),
            }
        );
        assert!(parse_error("trim-range 4 1").contains("expected: trim-range STREAM INDEX OFFSET"));
        assert!(parse_error("trim-range 4 1 x").contains("OFFSET must be a non-negative integer"));
        assert!(parse_error("delete-range 4 1 2").contains("unexpected argument `2`"));
    }

    #[test]
    fn create_stream_takes_r_a_and_optional_retention() {
        assert_eq!(
            request("create-stream 3 2"),
            RequestCommand::CreateStream {
                replica_count: 3,
                ack_count: 2,
                retention_ms: 0,
                retention_bytes: 0,
            }
        );
        assert_eq!(
            request("create-stream 1 1 retention-bytes=1048576 retention-ms=60000"),
            RequestCommand::CreateStream {
                replica_count: 1,
                ack_count: 1,
                retention_ms: 60_000,
                retention_bytes: 1 << 20,
            }
        );
        let message = parse_error("create-stream 3");
        assert!(
            message.contains("needs 2 positional argument(s), found 1"),
            "{message}"
        );
        assert!(message.contains("expected: create-stream R A"), "{message}");
        assert!(parse_error("create-stream 300 1").contains("R must be a non-negative integer"));
        assert!(
            parse_error("create-stream 1 1 retention=5").contains("unknown option `retention=`")
        );
    }

    #[test]
    fn stream_commands_take_the_stream_id() {
        assert_eq!(
            request("describe-stream 9"),
            RequestCommand::DescribeStream {
                stream_id: StreamId(9)
            }
        );
        assert_eq!(
            request("trim-stream 9 100"),
            RequestCommand::TrimStream {
                stream_id: StreamId(9),
                start_offset: Offset(100),
            }
        );
        assert_eq!(
            request("delete-stream 9"),
            RequestCommand::DeleteStream {
                stream_id: StreamId(9)
            }
        );
        assert!(parse_error("describe-stream").contains("expected: describe-stream STREAM"));
        assert!(parse_error("trim-stream 9").contains("expected: trim-stream STREAM OFFSET"));
        assert!(parse_error("delete-stream x").contains("STREAM must be a non-negative integer"));
    }

    #[test]
    fn list_streams_defaults_to_everything_from_zero() {
        assert_eq!(
            request("list-streams"),
            RequestCommand::ListStreams {
                start_stream_id: StreamId(0),
                max_count: 0,
            }
        );
        assert_eq!(
            request("list-streams max=10 from=4"),
            RequestCommand::ListStreams {
                start_stream_id: StreamId(4),
                max_count: 10,
            }
        );
        assert!(parse_error("list-streams 4").contains("unexpected argument `4`"));
    }

    #[test]
    fn update_stream_changes_only_the_fields_given() {
        assert_eq!(
            request("update-stream 5 epoch=3"),
            RequestCommand::UpdateStream {
                stream_id: StreamId(5),
                replica_count: None,
                ack_count: None,
                retention_ms: None,
                retention_bytes: None,
                epoch: Some(Epoch(3)),
            }
        );
        assert_eq!(
            request("update-stream 5 replica-count=3 ack-count=2 retention-ms=0 retention-bytes=7"),
            RequestCommand::UpdateStream {
                stream_id: StreamId(5),
                replica_count: Some(3),
                ack_count: Some(2),
                retention_ms: Some(0),
                retention_bytes: Some(7),
                epoch: None,
            }
        );
        assert!(parse_error("update-stream 5").contains("at least one field to change"));
        assert!(parse_error("update-stream 5 colour=red").contains("unknown option `colour=`"));
    }

    #[test]
    fn cluster_commands() {
        assert_eq!(
            parse("describe-cluster"),
            Command::Request(RequestCommand::DescribeCluster)
        );
        assert!(parse_error("describe-cluster 1").contains("unexpected argument `1`"));
        assert_eq!(
            request("allocate-id 127.0.0.1:10911"),
            RequestCommand::AllocateId {
                address: "127.0.0.1:10911".into()
            }
        );
        assert!(parse_error("allocate-id").contains("expected: allocate-id ADDR"));
        assert_eq!(
            request("heartbeat 4 127.0.0.1:10911 state=read-only ranges=2 disk-free=10"),
            RequestCommand::Heartbeat {
                node_id: NodeId(4),
                address: "127.0.0.1:10911".into(),
                state: NodeState::ReadOnly,
                range_count: 2,
                disk_free_bytes: 10,
                disk_total_bytes: 0,
            }
        );
        let RequestCommand::Heartbeat { state, .. } = request("heartbeat 4 a:1") else {
            panic!("not a heartbeat")
        };
        assert_eq!(state, NodeState::ReadWrite);
        assert!(parse_error("heartbeat 4 a:1 state=sleepy")
            .contains("state must be read-write, read-only or offline, found `sleepy`"));
        assert_eq!(parse_node_state("READ_WRITE"), Some(NodeState::ReadWrite));
        assert_eq!(parse_node_state("offline"), Some(NodeState::Offline));
    }

    #[test]
    fn range_index_must_fit_in_32_bits() {
        assert!(parse_error("describe-range 1 4294967296")
            .contains("INDEX must be a non-negative integer"));
    }

    #[test]
    fn raw_takes_hex_with_separators() {
        assert_eq!(
            request("raw 0x45 53:01 00_ff"),
            RequestCommand::Raw {
                bytes: vec![0x45, 0x53, 0x01, 0x00, 0xff]
            }
        );
        assert!(parse_error("raw zz").contains("`zz` is not a hex byte"));
        assert!(parse_error("raw").contains("expected: raw HEX"));
    }

    #[test]
    fn meta_commands() {
        assert_eq!(parse(".hex on"), Command::Hex(true));
        assert_eq!(parse(".hex off"), Command::Hex(false));
        assert!(parse_error(".hex maybe").contains("expected: .hex on|off"));
        assert_eq!(parse(".quit"), Command::Quit);
        assert_eq!(parse("exit"), Command::Quit);
        assert_eq!(parse("help"), Command::Help(None));
        assert_eq!(parse("help append"), Command::Help(Some("append".into())));
    }

    #[test]
    fn unknown_command_points_to_help() {
        assert!(parse_error("frobnicate 1 2").contains("unknown command `frobnicate`; type `help`"));
    }

    #[test]
    fn every_usage_form_starts_with_its_name() {
        for usage in USAGES {
            assert!(usage.form.starts_with(usage.name), "{}", usage.form);
        }
    }
}
