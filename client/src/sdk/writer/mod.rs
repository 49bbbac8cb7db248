//! [`Writer`]: appends to a stream, replicated by chasing writes, sealed and moved to a new
//! range when a replica fails.
//!
//! The application side is a queue under a mutex ([`Shared`]): `append` assigns the batch its
//! offsets and encodes it there, under the lock, so the order of calls is the order in the
//! stream. The writer's driver ([`driver`]) on the SDK's I/O thread takes batches from the
//! queue while the in-flight bounds allow, sends each to every replica of the open range,
//! acknowledges them in order ([`pipeline`]), and seals with repair when a replica fails
//! ([`seal`]). Futures resolve through [`crate::sdk::completion`].

mod driver;
pub(crate) mod end;
mod open;
pub(crate) mod pipeline;
pub(crate) mod seal;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use wire::{BatchBuilder, Epoch, Offset, RangeIndex, StreamId};

use crate::sdk::completion::{Completion, Wait};
use crate::sdk::error::SdkError;
use crate::sdk::io::IoHandle;

/// Where an acknowledged batch landed in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendAck {
    /// The batch's first record's offset.
    pub base_offset: Offset,
    /// One past its last record's offset.
    pub next_offset: Offset,
}

pub(crate) type AppendSlot = Arc<Completion<Result<AppendAck, SdkError>>>;
type CloseSlot = Arc<Completion<Result<Offset, SdkError>>>;
type FlushSlot = Arc<Completion<Result<(), SdkError>>>;

/// A batch appended and not yet taken by the driver.
pub(crate) struct Submitted {
    pub(crate) base: Offset,
    pub(crate) next: Offset,
    /// The batch, stamped for `range_index` as it was when appended.
    pub(crate) batch: Bytes,
    pub(crate) range_index: RangeIndex,
    pub(crate) completion: AppendSlot,
}

/// What the application threads and the driver share.
pub(crate) struct Shared {
    /// Keeps the I/O thread running while anything of this writer is alive.
    _io: Arc<IoHandle>,
    pub(crate) stream: StreamId,
    pub(crate) epoch: Epoch,
    state: Mutex<Queue>,
}

pub(crate) struct Queue {
    /// The offset the next append gets.
    next_offset: Offset,
    /// The range appends are stamped for (the driver moves it on after a seal).
    pub(crate) range_index: RangeIndex,
    /// Appended, not yet taken by the driver; bounded by the futures the application holds.
    pub(crate) incoming: VecDeque<Submitted>,
    /// Everything below it is acknowledged.
    pub(crate) acked: Offset,
    /// Set once the writer failed: every pending and later append fails with it.
    pub(crate) failed: Option<SdkError>,
    /// `close()` was called: no more appends; the driver seals once everything is acknowledged.
    pub(crate) close: Option<CloseSlot>,
    /// The application dropped its `Writer`: the driver finishes what is queued and stops.
    pub(crate) dropped: bool,
    /// `flush()` callers, each with the offset it waits for.
    pub(crate) flushes: Vec<(Offset, FlushSlot)>,
    /// The driver's waker, woken when something arrives.
    pub(crate) driver_waker: Option<Waker>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn wake_driver(queue: &mut Queue) {
        if let Some(waker) = queue.driver_waker.take() {
            waker.wake();
        }
    }
}

/// A stream's writer: `Send + Sync`, so several threads may append through one `Arc<Writer>`.
/// Batches are acknowledged in the order `append` was called.
pub struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) async fn open(io: Arc<IoHandle>, stream: StreamId) -> Result<Writer, SdkError> {
        let opened = io
            .submit(move |io| async move { open::open(&io, stream).await })
            .await?;
        let shared = Arc::new(Shared {
            _io: Arc::clone(&io),
            stream,
            epoch: opened.epoch,
            state: Mutex::new(Queue {
                next_offset: opened.range.start_offset,
                range_index: opened.range.index,
                incoming: VecDeque::new(),
                acked: opened.range.start_offset,
                failed: None,
                close: None,
                dropped: false,
                flushes: Vec::new(),
                driver_waker: None,
            }),
        });
        let driver_shared = Arc::clone(&shared);
        let range = opened.range;
        let started = io.spawn(move |io| {
            let driver = driver::Driver::new(std::rc::Rc::clone(io), driver_shared, range);
            runtime::spawn(driver.run());
        });
        if !started {
            return Err(SdkError::Closed);
        }
        Ok(Writer { shared })
    }

    /// Appends one batch of `records`. Its offsets are fixed now, in the order of calls; the
    /// future resolves once the batch is acknowledged (A replicas of its range made it and
    /// every earlier batch durable). Call several times and await later to pipeline; batches
    /// beyond the in-flight bounds wait in the writer's queue, so the memory they hold is
    /// bounded by the futures the application keeps unresolved. Dropping the future does not
    /// cancel the batch.
    pub fn append(&self, records: Vec<Bytes>) -> AppendFuture {
        match self.enqueue(records) {
            Ok(slot) => AppendFuture {
                state: FutureState::Waiting(Wait::new(slot)),
            },
            Err(error) => AppendFuture {
                state: FutureState::Ready(Some(error)),
            },
        }
    }

    fn enqueue(&self, records: Vec<Bytes>) -> Result<AppendSlot, SdkError> {
        if records.is_empty() {
            return Err(SdkError::InvalidArgument(
                "append needs at least one record".into(),
            ));
        }
        let count = u32::try_from(records.len()).map_err(|_| {
            SdkError::InvalidArgument(format!("{} records in one batch", records.len()))
        })?;
        let mut queue = self.shared.lock();
        if let Some(error) = &queue.failed {
            return Err(error.clone());
        }
        if queue.close.is_some() {
            return Err(SdkError::Closed);
        }
        let base = queue.next_offset;
        let next = base
            .checked_add(u64::from(count))
            .ok_or_else(|| SdkError::InvalidArgument("the stream's offsets are used up".into()))?;
        let mut builder = BatchBuilder::new(
            self.shared.stream,
            queue.range_index,
            self.shared.epoch,
            base,
        );
        for record in &records {
            builder
                .push_record(record)
                .map_err(|error| SdkError::InvalidArgument(error.to_string()))?;
        }
        let batch = builder
            .finish()
            .map_err(|error| SdkError::InvalidArgument(error.to_string()))?;
        let max_frame = crate::conn::MAX_FRAME_BYTES - 4096;
        if batch.len() > max_frame {
            return Err(SdkError::InvalidArgument(format!(
                "a batch of {} bytes is over the {max_frame} bytes one request carries; \
                 append fewer or smaller records",
                batch.len()
            )));
        }
        let slot = Completion::new();
        queue.next_offset = next;
        let range_index = queue.range_index;
        queue.incoming.push_back(Submitted {
            base,
            next,
            batch,
            range_index,
            completion: Arc::clone(&slot),
        });
        Shared::wake_driver(&mut queue);
        Ok(slot)
    }

    /// Waits until every batch appended so far is acknowledged.
    pub async fn flush(&self) -> Result<(), SdkError> {
        let slot = {
            let mut queue = self.shared.lock();
            if let Some(error) = &queue.failed {
                return Err(error.clone());
            }
            let target = queue.next_offset;
            if queue.acked >= target {
                return Ok(());
            }
            let slot: FlushSlot = Completion::new();
            queue.flushes.push((target, Arc::clone(&slot)));
            Shared::wake_driver(&mut queue);
            slot
        };
        Wait::new(slot).await.unwrap_or(Err(SdkError::Closed))
    }

    /// Flushes, then seals the last range (fence, repair, commit at the placement manager,
    /// seal the replicas) and returns the stream's end: one past the last offset written.
    pub async fn close(self) -> Result<Offset, SdkError> {
        let slot = {
            let mut queue = self.shared.lock();
            if let Some(error) = &queue.failed {
                return Err(error.clone());
            }
            if queue.close.is_some() {
                return Err(SdkError::Closed);
            }
            let slot: CloseSlot = Completion::new();
            queue.close = Some(Arc::clone(&slot));
            Shared::wake_driver(&mut queue);
            slot
        };
        Wait::new(slot).await.unwrap_or(Err(SdkError::Closed))
    }

    pub fn stream_id(&self) -> StreamId {
        self.shared.stream
    }

    /// The epoch this writer raised the stream to when it opened it.
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> Offset {
        self.shared.lock().next_offset
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.dropped = true;
        Shared::wake_driver(&mut queue);
    }
}

/// The future of one append: resolves to the batch's offsets once it is acknowledged. `Send`;
/// works under any executor.
pub struct AppendFuture {
    state: FutureState,
}

enum FutureState {
    Ready(Option<SdkError>),
    Waiting(Wait<Result<AppendAck, SdkError>>),
}

impl Future for AppendFuture {
    type Output = Result<AppendAck, SdkError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutureState::Ready(error) => Poll::Ready(Err(error.take().unwrap_or(SdkError::Closed))),
            FutureState::Waiting(wait) => Pin::new(wait)
                .poll(context)
                .map(|result| result.unwrap_or(Err(SdkError::Closed))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_cross_threads() {
        assert_send_sync::<Writer>();
        assert_send::<AppendFuture>();
    }
}
