//! A session with one server: the blocking connection plus what the shell remembers between
//! commands (the next offset of each range it wrote or looked at). It turns a
//! [`RequestCommand`] into a request, sends it, and decodes the answer into a [`Reply`] that
//! [`crate::output`] renders.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use wire::msg::{
    AllocateIdRequest, AllocateIdResponse, AppendRequest, AppendResponse, ClusterNode,
    CreateRangeRequest, CreateRangeResponse, CreateStreamRequest, CreateStreamResponse,
    DeleteRangeRequest, DeleteRangeResponse, DeleteStreamRequest, DeleteStreamResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeRangeRequest, DescribeRangeResponse,
    DescribeStreamRequest, DescribeStreamResponse, FetchRequest, FetchResponse, HeartbeatRequest,
    HeartbeatResponse, ListRangesRequest, ListRangesResponse, ListStreamsRequest,
    ListStreamsResponse, PingRequest, SealRangeRequest, SealRangeResponse, TrimRangeRequest,
    TrimRangeResponse, TrimStreamRequest, TrimStreamResponse, UpdateStreamRequest,
    UpdateStreamResponse,
};
use wire::{
    Epoch, ErrorCode, Message, NodeId, Offset, Range, RangeIndex, RangeKey, Stream, StreamId,
};

use crate::command::RequestCommand;
use crate::conn::blocking::{self, Connection, Exchange};
use crate::conn::{ClientError, RESPONSE_TIMEOUT};

/// How long raw mode waits for more bytes after the last ones arrived.
const RAW_QUIET: Duration = Duration::from_millis(500);
/// Most bytes raw mode collects from one probe.
const RAW_LIMIT_BYTES: usize = 1 << 20;
/// Ranges whose next offset the session remembers; beyond this it forgets them all and asks
/// the node again when needed.
const REMEMBERED_RANGES_MAX: usize = 4096;

/// A record batch read back by FETCH.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub base_offset: Offset,
    pub record_count: u32,
    pub epoch: wire::Epoch,
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

impl FetchedBatch {
    /// The offset after the batch's last: where the next read of the range starts.
    pub fn next_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(u64::from(self.record_count)),
        )
    }
}

/// The decoded answer to one command.
#[derive(Debug, Clone)]
pub enum Reply {
    Pong {
        payload: Bytes,
    },
    /// CREATE_RANGE and DESCRIBE_RANGE answer with the range record.
    Range(Range),
    Appended {
        base_offset: Offset,
        next_offset: Offset,
    },
    Fetched {
        batches: Vec<FetchedBatch>,
        confirmed_offset: Option<Offset>,
        next_offset: Offset,
        end_offset: Option<Offset>,
    },
    /// SEAL_RANGE answered: the end (absent after a fence-only seal of an open range), the
    /// replica's durable end (absent from the placement manager) and the range's epoch.
    Sealed {
        end_offset: Option<Offset>,
        durable_end: Option<Offset>,
        epoch: Epoch,
    },
    Ranges(Vec<Range>),
    /// TRIM_RANGE succeeded: the range starts at `offset` (or already started above it).
    Trimmed {
        key: RangeKey,
        offset: Offset,
    },
    /// DELETE_RANGE succeeded: the node holds no replica of the range (any more).
    Deleted {
        key: RangeKey,
    },
    /// CREATE/DESCRIBE/UPDATE/TRIM/DELETE_STREAM answer with the stream record.
    Stream(Stream),
    Streams(Vec<Stream>),
    /// DESCRIBE_CLUSTER: the data nodes the placement manager knows.
    Cluster(Vec<ClusterNode>),
    /// ALLOCATE_ID.
    NodeAllocated {
        node_id: NodeId,
    },
    /// HEARTBEAT: what the placement manager asks of the node.
    HeartbeatAnswered {
        heartbeat_interval_ms: u32,
        session_timeout_ms: u32,
    },
    /// The server answered with an error response.
    Failed(wire::msg::ErrorResponse),
    /// Raw mode: what came back, split into frames where it decodes.
    Raw {
        received: Vec<u8>,
        frames: Vec<wire::Frame>,
        /// Why decoding stopped before the end of `received`, and how many bytes were left.
        undecoded: Option<(wire::DecodeError, usize)>,
        ending: blocking::RawEnding,
    },
}

/// How an APPEND of the shell is sent: normal or repair, with which epochs.
#[derive(Debug, Clone, Copy)]
struct AppendForm {
    /// The request's epoch.
    epoch: wire::Epoch,
    /// The epoch in the batch header: the request's, or older for a repair.
    batch_epoch: wire::Epoch,
    repair: bool,
    /// Normal appends: the confirmed offset to report (`None`: the batch's end).
    confirmed_offset: Option<Offset>,
}

/// One command's full result, for rendering.
pub struct Outcome {
    pub operation: &'static str,
    pub request_id: Option<u64>,
    pub latency: Duration,
    /// Bytes as sent and received (for `.hex on`).
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
    pub reply: Reply,
    /// Something the session did on the user's behalf (e.g. asked for the next offset).
    pub note: Option<String>,
}

pub struct Session {
    address: String,
    /// Sent in AUTHENTICATE on every (re)connection; never shown.
    token: Option<String>,
    connection: Option<Connection>,
    next_offsets: HashMap<RangeKey, Offset>,
}

impl Session {
    /// Connects to `address` at once, so a wrong address is reported before any command.
    pub fn connect(address: &str) -> Result<Session, ClientError> {
        Session::connect_with_token(address, None)
    }

    /// Connects and, with a token, authenticates at once, so a wrong token is reported before
    /// any command too.
    pub fn connect_with_token(address: &str, token: Option<&str>) -> Result<Session, ClientError> {
        let token = token.map(str::to_string);
        let connection = open(address, token.as_deref())?;
        Ok(Session {
            address: address.to_string(),
            token,
            connection: Some(connection),
            next_offsets: HashMap::new(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The connection, reconnecting if the previous one failed.
    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.connection.is_none() {
            self.connection = Some(open(&self.address, self.token.as_deref())?);
        }
        Ok(self.connection.as_mut().expect("connection was just set"))
    }

    /// Runs one command. A transport failure drops the connection; the next command
    /// reconnects.
    pub fn execute(&mut self, command: &RequestCommand) -> Result<Outcome, ClientError> {
        let result = self.execute_once(command);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn execute_once(&mut self, command: &RequestCommand) -> Result<Outcome, ClientError> {
        match command {
            RequestCommand::Ping { payload } => {
                let exchange = self.request(&PingRequest {}, payload, RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |_: wire::msg::PingResponse, payload| {
                    Reply::Pong { payload }
                })?;
                Ok(outcome("ping", exchange, reply, None))
            }
            RequestCommand::CreateRange {
                stream_id,
                range_index,
                start_offset,
                epoch,
                replica_count_target,
                ack_count,
            } => {
                let request = CreateRangeRequest {
                    exclude: Vec::new(),
                    stream_id: *stream_id,
                    range_index: *range_index,
                    epoch: *epoch,
                    start_offset: *start_offset,
                    replica_count_target: *replica_count_target,
                    ack_count: *ack_count,
                    replicas: Vec::new(),
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: CreateRangeResponse, _| {
                    Reply::Range(response.range)
                })?;
                self.learn(&reply, RangeKey::new(*stream_id, *range_index));
                Ok(outcome("create-range", exchange, reply, None))
            }
            RequestCommand::Append {
                stream_id,
                range_index,
                payload,
                epoch,
                record_count,
                base_offset,
                confirmed_offset,
            } => self.append(
                RangeKey::new(*stream_id, *range_index),
                AppendForm {
                    epoch: *epoch,
                    batch_epoch: *epoch,
                    repair: false,
                    confirmed_offset: *confirmed_offset,
                },
                payload,
                *record_count,
                *base_offset,
            ),
            RequestCommand::RepairAppend {
                stream_id,
                range_index,
                payload,
                epoch,
                batch_epoch,
                record_count,
                base_offset,
            } => self.append(
                RangeKey::new(*stream_id, *range_index),
                AppendForm {
                    epoch: *epoch,
                    batch_epoch: *batch_epoch,
                    repair: true,
                    confirmed_offset: None,
                },
                payload,
                *record_count,
                *base_offset,
            ),
            RequestCommand::Confirm {
                stream_id,
                range_index,
                epoch,
                confirmed_offset,
            } => {
                let request = AppendRequest {
                    repair: false,
                    stream_id: *stream_id,
                    range_index: *range_index,
                    epoch: *epoch,
                    confirmed_offset: Some(*confirmed_offset),
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: AppendResponse, _| Reply::Appended {
                    base_offset: response.base_offset,
                    next_offset: response.next_offset,
                })?;
                Ok(outcome("confirm", exchange, reply, None))
            }
            RequestCommand::Fence {
                stream_id,
                range_index,
                epoch,
            } => {
                let request = SealRangeRequest {
                    fence_only: true,
                    stream_id: *stream_id,
                    range_index: *range_index,
                    epoch: *epoch,
                    end_offset: None,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: SealRangeResponse, _| Reply::Sealed {
                    end_offset: response.end_offset,
                    durable_end: response.durable_end,
                    epoch: response.epoch,
                })?;
                Ok(outcome("seal", exchange, reply, None))
            }
            RequestCommand::FetchFlagged {
                stream_id,
                range_index,
                start_offset,
                max_bytes,
                max_wait_ms,
                read_durable,
                expect_sealed,
            } => self.fetch(FetchRequest {
                read_durable: *read_durable,
                expect_sealed: *expect_sealed,
                stream_id: *stream_id,
                range_index: *range_index,
                max_bytes: *max_bytes,
                start_offset: *start_offset,
                max_wait_ms: *max_wait_ms,
            }),
            RequestCommand::Fetch {
                stream_id,
                range_index,
                start_offset,
                max_bytes,
                max_wait_ms,
            } => self.fetch(FetchRequest {
                read_durable: false,
                expect_sealed: false,
                stream_id: *stream_id,
                range_index: *range_index,
                max_bytes: *max_bytes,
                start_offset: *start_offset,
                max_wait_ms: *max_wait_ms,
            }),
            RequestCommand::Seal {
                stream_id,
                range_index,
                epoch,
                end_offset,
            } => {
                let request = SealRangeRequest {
                    fence_only: false,
                    stream_id: *stream_id,
                    range_index: *range_index,
                    epoch: *epoch,
                    end_offset: *end_offset,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: SealRangeResponse, _| Reply::Sealed {
                    end_offset: response.end_offset,
                    durable_end: response.durable_end,
                    epoch: response.epoch,
                })?;
                Ok(outcome("seal", exchange, reply, None))
            }
            RequestCommand::DescribeRange {
                stream_id,
                range_index,
            } => {
                let request = DescribeRangeRequest {
                    stream_id: *stream_id,
                    range_index: *range_index,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: DescribeRangeResponse, _| {
                    Reply::Range(response.range)
                })?;
                self.learn(&reply, RangeKey::new(*stream_id, *range_index));
                Ok(outcome("describe-range", exchange, reply, None))
            }
            RequestCommand::ListRanges { stream_id } => {
                let request = ListRangesRequest {
                    stream_id: *stream_id,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: ListRangesResponse, _| {
                    Reply::Ranges(response.ranges)
                })?;
                Ok(outcome("list-ranges", exchange, reply, None))
            }
            RequestCommand::TrimRange {
                stream_id,
                range_index,
                offset,
            } => {
                let key = RangeKey::new(*stream_id, *range_index);
                let request = TrimRangeRequest {
                    stream_id: *stream_id,
                    range_index: *range_index,
                    offset: *offset,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |_: TrimRangeResponse, _| Reply::Trimmed {
                    key,
                    offset: *offset,
                })?;
                Ok(outcome("trim-range", exchange, reply, None))
            }
            RequestCommand::DeleteRange {
                stream_id,
                range_index,
            } => {
                let key = RangeKey::new(*stream_id, *range_index);
                let request = DeleteRangeRequest {
                    stream_id: *stream_id,
                    range_index: *range_index,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |_: DeleteRangeResponse, _| Reply::Deleted {
                    key,
                })?;
                if matches!(reply, Reply::Deleted { .. }) {
                    self.next_offsets.remove(&key);
                }
                Ok(outcome("delete-range", exchange, reply, None))
            }
            RequestCommand::CreateStream {
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
            } => {
                let request = CreateStreamRequest {
                    replica_count: *replica_count,
                    ack_count: *ack_count,
                    retention_ms: *retention_ms,
                    retention_bytes: *retention_bytes,
                };
                self.stream_request("create-stream", &request, |r: CreateStreamResponse| {
                    r.stream
                })
            }
            RequestCommand::DescribeStream { stream_id } => {
                let request = DescribeStreamRequest {
                    stream_id: *stream_id,
                };
                self.stream_request("describe-stream", &request, |r: DescribeStreamResponse| {
                    r.stream
                })
            }
            RequestCommand::UpdateStream {
                stream_id,
                replica_count,
                ack_count,
                retention_ms,
                retention_bytes,
                epoch,
            } => {
                let request = UpdateStreamRequest {
                    stream_id: *stream_id,
                    replica_count: *replica_count,
                    ack_count: *ack_count,
                    retention_ms: *retention_ms,
                    retention_bytes: *retention_bytes,
                    epoch: *epoch,
                };
                self.stream_request("update-stream", &request, |r: UpdateStreamResponse| {
                    r.stream
                })
            }
            RequestCommand::TrimStream {
                stream_id,
                start_offset,
            } => {
                let request = TrimStreamRequest {
                    stream_id: *stream_id,
                    start_offset: *start_offset,
                };
                self.stream_request("trim-stream", &request, |r: TrimStreamResponse| r.stream)
            }
            RequestCommand::DeleteStream { stream_id } => {
                let request = DeleteStreamRequest {
                    stream_id: *stream_id,
                };
                self.stream_request("delete-stream", &request, |r: DeleteStreamResponse| {
                    r.stream
                })
            }
            RequestCommand::ListStreams {
                start_stream_id,
                max_count,
            } => {
                let request = ListStreamsRequest {
                    start_stream_id: *start_stream_id,
                    max_count: *max_count,
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: ListStreamsResponse, _| {
                    Reply::Streams(response.streams)
                })?;
                Ok(outcome("list-streams", exchange, reply, None))
            }
            RequestCommand::DescribeCluster => {
                let exchange = self.request(&DescribeClusterRequest {}, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: DescribeClusterResponse, _| {
                    Reply::Cluster(response.nodes)
                })?;
                Ok(outcome("describe-cluster", exchange, reply, None))
            }
            RequestCommand::AllocateId { address } => {
                let request = AllocateIdRequest {
                    address: address.clone(),
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: AllocateIdResponse, _| {
                    Reply::NodeAllocated {
                        node_id: response.node_id,
                    }
                })?;
                Ok(outcome("allocate-id", exchange, reply, None))
            }
            RequestCommand::Heartbeat {
                node_id,
                address,
                state,
                range_count,
                disk_free_bytes,
                disk_total_bytes,
            } => {
                let request = HeartbeatRequest {
                    node_id: *node_id,
                    range_count: *range_count,
                    disk_free_bytes: *disk_free_bytes,
                    disk_total_bytes: *disk_total_bytes,
                    append_bytes_per_second: 0,
                    state: *state,
                    address: address.clone(),
                };
                let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
                let reply = decode(&exchange, |response: HeartbeatResponse, _| {
                    Reply::HeartbeatAnswered {
                        heartbeat_interval_ms: response.heartbeat_interval_ms,
                        session_timeout_ms: response.session_timeout_ms,
                    }
                })?;
                Ok(outcome("heartbeat", exchange, reply, None))
            }
            RequestCommand::Raw { bytes } => {
                let start = std::time::Instant::now();
                let connection = self.connection()?;
                connection.send_bytes(bytes)?;
                let received = connection.receive_raw(RAW_QUIET, RAW_LIMIT_BYTES);
                let latency = start.elapsed();
                // Whatever happened, this connection's framing can no longer be trusted.
                self.connection = None;
                let (frames, undecoded) = blocking::decode_all(&received.bytes);
                Ok(Outcome {
                    operation: "raw",
                    request_id: None,
                    latency,
                    sent: bytes.clone(),
                    received: received.bytes.clone(),
                    reply: Reply::Raw {
                        received: received.bytes,
                        frames,
                        undecoded,
                        ending: received.ending,
                    },
                    note: None,
                })
            }
        }
    }

    fn request<M: Message>(
        &mut self,
        message: &M,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Exchange, ClientError> {
        self.connection()?.request(message, payload, timeout)
    }

    /// Sends a request the placement manager answers with a Stream record.
    fn stream_request<M: Message, R: Message>(
        &mut self,
        operation: &'static str,
        message: &M,
        stream_of: impl FnOnce(R) -> Stream,
    ) -> Result<Outcome, ClientError> {
        let exchange = self.request(message, &[], RESPONSE_TIMEOUT)?;
        let reply = decode(&exchange, |response: R, _| {
            Reply::Stream(stream_of(response))
        })?;
        Ok(outcome(operation, exchange, reply, None))
    }

    /// DESCRIBE_RANGE to learn where the next append must start.
    fn ask_next_offset(&mut self, key: RangeKey) -> Result<Offset, ClientError> {
        let request = DescribeRangeRequest {
            stream_id: key.stream_id,
            range_index: key.range_index,
        };
        let exchange = self.request(&request, &[], RESPONSE_TIMEOUT)?;
        match decode(&exchange, |response: DescribeRangeResponse, _| {
            Reply::Range(response.range)
        })? {
            Reply::Range(range) => Ok(range.next_offset.unwrap_or(range.start_offset)),
            Reply::Failed(error) => Err(ClientError::Unexpected(format!(
                "cannot learn the next offset of range {key}: {} {}; \
                 give offset=N or create the range first",
                error.code, error.message
            ))),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Remembers the range's next offset from whatever the reply says about it.
    /// APPEND of one batch of `record_count` records at `base_offset` (or the next offset the
    /// session knows, asking the node with DESCRIBE_RANGE if it knows none), in `form`.
    fn append(
        &mut self,
        key: RangeKey,
        form: AppendForm,
        payload: &[u8],
        record_count: u32,
        base_offset: Option<Offset>,
    ) -> Result<Outcome, ClientError> {
        let mut note = None;
        let base_offset = match base_offset.or_else(|| self.next_offsets.get(&key).copied()) {
            Some(offset) => offset,
            None => {
                let offset = self.ask_next_offset(key)?;
                note = Some(format!("next offset {offset} learned with describe-range"));
                offset
            }
        };
        let end_offset = base_offset
            .checked_add(u64::from(record_count))
            .ok_or_else(|| {
                ClientError::Unexpected(format!(
                    "offset {base_offset} + count {record_count} overflows the offset space"
                ))
            })?;
        let batch = build_batch(
            key.stream_id,
            key.range_index,
            form.batch_epoch,
            base_offset,
            record_count,
            payload,
        )?;
        // A normal append reports its own end as confirmed unless told otherwise (a range
        // written directly has one replica); a repair reports nothing (the node ignores it).
        let confirmed_offset = if form.repair {
            None
        } else {
            Some(form.confirmed_offset.unwrap_or(end_offset))
        };
        let request = AppendRequest {
            repair: form.repair,
            stream_id: key.stream_id,
            range_index: key.range_index,
            epoch: form.epoch,
            confirmed_offset,
        };
        let exchange = self.request(&request, &batch, RESPONSE_TIMEOUT)?;
        let reply = decode(&exchange, |response: AppendResponse, _| Reply::Appended {
            base_offset: response.base_offset,
            next_offset: response.next_offset,
        })?;
        self.learn(&reply, key);
        Ok(outcome("append", exchange, reply, note))
    }

    /// FETCH as `request` says, checking every batch returned.
    fn fetch(&mut self, request: FetchRequest) -> Result<Outcome, ClientError> {
        let timeout = RESPONSE_TIMEOUT + Duration::from_millis(u64::from(request.max_wait_ms));
        let exchange = self.request(&request, &[], timeout)?;
        let mut batch_error = None;
        let reply = decode(&exchange, |response: FetchResponse, payload| {
            let batches = match parse_batches(&payload) {
                Ok(batches) => batches,
                Err(error) => {
                    batch_error = Some(error);
                    Vec::new()
                }
            };
            Reply::Fetched {
                batches,
                confirmed_offset: response.confirmed_offset,
                next_offset: response.next_offset,
                end_offset: response.end_offset,
            }
        })?;
        if let Some(error) = batch_error {
            return Err(ClientError::Unexpected(format!(
                "FETCH returned a record batch that does not check out: {error}"
            )));
        }
        self.learn(
            &reply,
            RangeKey::new(request.stream_id, request.range_index),
        );
        Ok(outcome("fetch", exchange, reply, None))
    }

    fn learn(&mut self, reply: &Reply, key: RangeKey) {
        let next = match reply {
            Reply::Range(range) => range.next_offset.or(Some(range.start_offset)),
            Reply::Appended { next_offset, .. } | Reply::Fetched { next_offset, .. } => {
                Some(*next_offset)
            }
            Reply::Failed(error)
                if matches!(
                    error.code,
                    ErrorCode::OffsetDuplicate | ErrorCode::OffsetGap
                ) =>
            {
                Some(Offset(error.detail))
            }
            _ => None,
        };
        if let Some(next) = next {
            if self.next_offsets.len() >= REMEMBERED_RANGES_MAX {
                self.next_offsets.clear();
            }
            self.next_offsets.insert(key, next);
        }
    }
}

/// Decodes the response of an exchange: an error response becomes [`Reply::Failed`], a success
/// is decoded as `M` and turned into a reply by `build`.
/// A connection to `address`, authenticated with `token` when there is one.
fn open(address: &str, token: Option<&str>) -> Result<Connection, ClientError> {
    let mut connection = Connection::connect(address)?;
    if let Some(token) = token {
        connection.authenticate(token)?;
    }
    Ok(connection)
}

fn decode<M: Message>(
    exchange: &Exchange,
    build: impl FnOnce(M, Bytes) -> Reply,
) -> Result<Reply, ClientError> {
    let frame = &exchange.response;
    if frame.is_error() {
        return Ok(Reply::Failed(frame.error_response()?));
    }
    let message = frame.decode_message::<M>()?;
    Ok(build(message, frame.payload.clone()))
}

fn outcome(
    operation: &'static str,
    exchange: Exchange,
    reply: Reply,
    note: Option<String>,
) -> Outcome {
    let mut received = Vec::with_capacity(exchange.response.encoded_len());
    // Re-encoding a decoded frame reproduces the bytes received (same fields, same CRC).
    let _ = wire::msg::encode_raw(&mut received, &exchange.response);
    Outcome {
        operation,
        request_id: Some(exchange.request_id),
        latency: exchange.latency,
        sent: exchange.sent,
        received,
        reply,
        note,
    }
}

/// One record batch holding `payload` (opaque), covering `record_count` offsets from
/// `base_offset`, timestamped now.
pub fn build_batch(
    stream_id: StreamId,
    range_index: RangeIndex,
    epoch: wire::Epoch,
    base_offset: Offset,
    record_count: u32,
    payload: &[u8],
) -> Result<Bytes, ClientError> {
    wire::BatchBuilder::new(stream_id, range_index, epoch, base_offset)
        .finish_with_payload(record_count, payload)
        .map_err(|error| ClientError::Unexpected(format!("cannot build the batch: {error}")))
}

/// Walks the record batches of a FETCH payload, checking each one's CRC.
pub fn parse_batches(payload: &Bytes) -> Result<Vec<FetchedBatch>, wire::BatchError> {
    let mut batches = Vec::new();
    for batch in wire::BatchIter::new(payload.clone()) {
        let batch = batch?;
        let header = batch.header();
        batches.push(FetchedBatch {
            base_offset: header.base_offset,
            record_count: header.record_count,
            epoch: header.epoch,
            timestamp_ms: header.timestamp_ms,
            payload: batch.payload(),
        });
    }
    Ok(batches)
}
