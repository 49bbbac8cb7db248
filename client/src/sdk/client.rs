//! [`Client`]: the SDK's entry point. Stream operations at the placement manager, and the
//! writers and readers of streams.

use std::sync::Arc;

use wire::msg::{
    CreateStreamRequest, CreateStreamResponse, DeleteStreamRequest, DeleteStreamResponse,
    DescribeStreamRequest, DescribeStreamResponse, ListRangesRequest, ListRangesResponse,
    TrimStreamRequest, TrimStreamResponse,
};
use wire::{ErrorCode, Offset, StreamId};

use crate::sdk::config::{ClientConfig, StreamOptions};
use crate::sdk::error::SdkError;
use crate::sdk::io::{IoHandle, PmFailure};
use crate::sdk::reader::{ReadMode, Reader};
use crate::sdk::writer::Writer;

/// A connection to a cluster: cheap to clone, `Send + Sync`, usable from any thread and any
/// executor. The SDK's I/O runs on a thread of its own, which stops once the client and every
/// writer and reader made from it are dropped.
#[derive(Clone)]
pub struct Client {
    io: Arc<IoHandle>,
}

impl Client {
    /// Starts the SDK's I/O thread and checks that a placement manager answers now (a wrong
    /// address fails here at once; later operations retry an unreachable one within
    /// `retry_for`). Blocks the calling thread for that one round trip.
    pub fn connect(config: ClientConfig) -> Result<Client, SdkError> {
        let io = IoHandle::start(config)?;
        let client = Client { io };
        let probe = client.io.submit(|io| async move {
            let started = std::time::Instant::now();
            // Any answer will do, even an error: something listens and speaks the protocol.
            let request = ListRangesRequest {
                stream_id: Some(StreamId(u64::MAX - 1)),
            };
            match io.pm_once::<_, ListRangesResponse>(&request, true).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => match error.code {
                    ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => {
                        Err(SdkError::Unauthenticated(error.message))
                    }
                    _ => Ok(()),
                },
                Err(PmFailure::Unauthenticated(reason)) => Err(SdkError::Unauthenticated(reason)),
                Err(PmFailure::Unreachable(reason) | PmFailure::MaybeApplied(reason)) => {
                    Err(SdkError::PmUnreachable {
                        addresses: io.config.pm_addresses.clone(),
                        reason,
                        waited: started.elapsed(),
                    })
                }
            }
        });
        crate::sdk::io::block_on(probe)?;
        Ok(client)
    }

    /// Creates a stream with R replicas per range, A acknowledgements, and retention.
    pub async fn create_stream(&self, options: StreamOptions) -> Result<wire::Stream, SdkError> {
        if options.ack_count == 0 || options.ack_count > options.replica_count {
            return Err(SdkError::InvalidArgument(format!(
                "ack_count {} must be between 1 and replica_count {}",
                options.ack_count, options.replica_count
            )));
        }
        let request = CreateStreamRequest {
            replica_count: options.replica_count,
            ack_count: options.ack_count,
            retention_ms: options.retention_ms,
            retention_bytes: options.retention_bytes,
        };
        self.io
            .submit(move |io| async move {
                let started = std::time::Instant::now();
                let mut backoff = crate::sdk::io::Backoff::new();
                loop {
                    // Not repeated once sent: a second CREATE_STREAM would create a second
                    // stream. Repeated while no placement manager could be reached at all.
                    match io.pm_once::<_, CreateStreamResponse>(&request, false).await {
                        Ok(Ok(response)) => return Ok(response.stream),
                        Ok(Err(error))
                            if error.code.is_retriable()
                                && started.elapsed() < io.config.retry_for =>
                        {
                            log::info!("create-stream: {}; retrying", error.code);
                        }
                        Ok(Err(error)) => {
                            return Err(match error.code {
                                ErrorCode::InvalidArgument => SdkError::InvalidArgument(format!(
                                    "create-stream: {}",
                                    error.message
                                )),
                                _ => SdkError::server("create-stream", &error),
                            })
                        }
                        Err(PmFailure::Unauthenticated(reason)) => {
                            return Err(SdkError::Unauthenticated(reason))
                        }
                        Err(PmFailure::Unreachable(reason))
                            if started.elapsed() < io.config.retry_for =>
                        {
                            log::warn!("create-stream: {reason}; retrying");
                        }
                        Err(PmFailure::Unreachable(reason) | PmFailure::MaybeApplied(reason)) => {
                            return Err(SdkError::PmUnreachable {
                                addresses: io.config.pm_addresses.clone(),
                                reason,
                                waited: started.elapsed(),
                            })
                        }
                    }
                    backoff.wait().await;
                }
            })
            .await
    }

    /// The stream's record at the placement manager (a deleted stream is described with
    /// `deleted` set until the placement manager forgets it).
    pub async fn describe_stream(&self, stream: StreamId) -> Result<wire::Stream, SdkError> {
        self.io
            .submit(move |io| async move { describe_stream(&io, stream).await })
            .await
    }

    /// The stream's ranges at the placement manager, in index order.
    pub async fn ranges(&self, stream: StreamId) -> Result<Vec<wire::Range>, SdkError> {
        self.io
            .submit(move |io| async move { list_ranges(&io, stream).await })
            .await
    }

    /// Opens the stream for writing: raises its epoch (fencing every older writer), recovers
    /// and seals the range a previous writer left open, and creates a new range to write to.
    pub async fn open_writer(&self, stream: StreamId) -> Result<Writer, SdkError> {
        Writer::open(Arc::clone(&self.io), stream).await
    }

    /// Opens a reader at `from`. It never disturbs the writer.
    pub async fn open_reader(
        &self,
        stream: StreamId,
        from: Offset,
        mode: ReadMode,
    ) -> Result<Reader, SdkError> {
        Reader::open(Arc::clone(&self.io), stream, from, mode).await
    }

    /// Raises the stream's trim point: offsets below `offset` are gone, and the data nodes
    /// free their space.
    pub async fn trim(&self, stream: StreamId, offset: Offset) -> Result<wire::Stream, SdkError> {
        self.io
            .submit(move |io| async move {
                let request = TrimStreamRequest {
                    stream_id: stream,
                    start_offset: offset,
                };
                match io
                    .pm_call::<_, TrimStreamResponse>("trim-stream", &request)
                    .await?
                {
                    Ok(response) => Ok(response.stream),
                    Err(error) if error.code == ErrorCode::OffsetOutOfRange => {
                        Err(SdkError::InvalidArgument(format!(
                            "cannot trim stream {stream} to {offset}: it ends at {}",
                            error.detail
                        )))
                    }
                    Err(error) => Err(SdkError::from_stream_answer("trim-stream", stream, &error)),
                }
            })
            .await
    }

    /// Deletes the stream; its ranges are then removed from the data nodes.
    pub async fn delete(&self, stream: StreamId) -> Result<(), SdkError> {
        self.io
            .submit(move |io| async move {
                let request = DeleteStreamRequest { stream_id: stream };
                match io
                    .pm_call::<_, DeleteStreamResponse>("delete-stream", &request)
                    .await?
                {
                    Ok(_) => Ok(()),
                    // Deleting twice: the stream is gone either way.
                    Err(error) if error.code == ErrorCode::StreamDeleted => Ok(()),
                    Err(error) => Err(SdkError::from_stream_answer(
                        "delete-stream",
                        stream,
                        &error,
                    )),
                }
            })
            .await
    }
}

/// DESCRIBE_STREAM at the placement manager.
pub(crate) async fn describe_stream(
    io: &crate::sdk::io::Io,
    stream: StreamId,
) -> Result<wire::Stream, SdkError> {
    let request = DescribeStreamRequest { stream_id: stream };
    match io
        .pm_call::<_, DescribeStreamResponse>("describe-stream", &request)
        .await?
    {
        Ok(response) => Ok(response.stream),
        Err(error) => Err(SdkError::from_stream_answer(
            "describe-stream",
            stream,
            &error,
        )),
    }
}

/// LIST_RANGES of one stream at the placement manager, in index order.
pub(crate) async fn list_ranges(
    io: &crate::sdk::io::Io,
    stream: StreamId,
) -> Result<Vec<wire::Range>, SdkError> {
    let request = ListRangesRequest {
        stream_id: Some(stream),
    };
    match io
        .pm_call::<_, ListRangesResponse>("list-ranges", &request)
        .await?
    {
        Ok(response) => {
            let mut ranges = response.ranges;
            ranges.retain(|range| range.stream_id == stream);
            ranges.sort_by_key(|range| range.index);
            Ok(ranges)
        }
        Err(error) => Err(SdkError::from_stream_answer("list-ranges", stream, &error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_fails_at_once_when_no_placement_manager_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let started = std::time::Instant::now();
        let result = Client::connect(ClientConfig::new(vec![address.clone()]));
        let Err(error) = result else {
            panic!("nobody listens at {address}, yet the client connected");
        };
        assert!(matches!(error, SdkError::PmUnreachable { .. }), "{error}");
        assert!(error.to_string().contains(&address), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_bad_configuration_is_refused_before_anything_starts() {
        let empty = Client::connect(ClientConfig::new(Vec::new()));
        assert!(matches!(empty, Err(SdkError::InvalidArgument(_))));
        let config = ClientConfig {
            max_in_flight_batches: 0,
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::connect(config),
            Err(SdkError::InvalidArgument(_))
        ));
    }
}
