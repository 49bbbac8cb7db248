//! Which worker answers a request, and the requests other workers forward here.
//!
//! A connection hands every decoded request to [`dispatch`]: a request about a stream is handled
//! by the worker that owns the stream ([`owner_of`]), here or after a trip through the mailbox
//! to the owner; LIST_RANGES for every stream is gathered from all workers. Requests that arrive
//! through the mailbox come in through [`receive`]. Dependencies point one way: connections and
//! the server call this, this calls the handlers, and the handlers work on the [`Worker`].

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use serve::Reply;
use wire::msg::{ListRangesRequest, ListRangesResponse, Request, Response};
use wire::StreamId;

use crate::handler;
use crate::metrics::Operation;
use crate::worker::{owner_of, Worker, WorkerMessage};

/// Answers a decoded request: here if this worker owns its range, otherwise by forwarding.
pub async fn dispatch(
    worker: &Rc<Worker>,
    request: Request,
    payload: Bytes,
    received: Instant,
) -> Reply {
    if let Request::ListRanges(header) = &request {
        if header.stream_id.is_none() && worker.worker_count > 1 {
            return list_everywhere(worker, *header, received).await;
        }
    }
    let owner = request_stream(&request).map(|stream| owner_of(stream, worker.worker_count));
    match owner {
        Some(owner) if owner != worker.index => {
            worker.forward(owner, request, payload, received).await
        }
        _ => handler::handle(worker, request, payload, received).await,
    }
}

/// Handles one message from another worker's mailbox: runs a forwarded request and sends its
/// reply back, or completes the connection task waiting for a reply.
pub fn receive(worker: &Rc<Worker>, message: WorkerMessage) {
    match message {
        WorkerMessage::Request {
            from,
            token,
            request,
            payload,
            received,
        } => {
            let worker = Rc::clone(worker);
            runtime::spawn(async move {
                let operation = handler::operation_of(&request);
                let handled = handler::handle(&worker, request, payload, received);
                // The connection's own panic guard is on the worker that forwarded: a panic
                // here is caught here, so this worker and its connections go on.
                let reply = match serve::catch_panic::catch_panic(handled).await {
                    Ok(reply) => reply,
                    Err(message) => {
                        let counters = &worker.metrics.connection;
                        counters.add(&counters.panics, 1);
                        log::error!(
                            "worker {}: the handler of a {} forwarded by worker {from} \
                             panicked: {message}",
                            worker.index,
                            operation.name()
                        );
                        Reply::error(
                            wire::ErrorCode::Internal,
                            "internal error while handling the request; the data node logged it",
                        )
                    }
                };
                if let Err(reason) = worker.reply_to(from, token, reply).await {
                    log::warn!(
                        "worker {}: reply to worker {from} lost: {reason}",
                        worker.index
                    );
                }
            });
        }
        WorkerMessage::Reply { token, reply } => worker.complete_forward(token, reply),
    }
}

/// LIST_RANGES for every stream: this worker's ranges and every other worker's.
async fn list_everywhere(worker: &Worker, header: ListRangesRequest, received: Instant) -> Reply {
    let mut ranges = handler::list_ranges::ranges_of(worker, None);
    for other in (0..worker.worker_count).filter(|other| *other != worker.index) {
        let reply = worker
            .forward(other, Request::ListRanges(header), Bytes::new(), received)
            .await;
        match *reply.response {
            Response::ListRanges(listed) => ranges.extend(listed.ranges),
            _ => return reply,
        }
    }
    ranges.sort_by_key(|range| (range.stream_id, range.index));
    let reply = Reply::new(Response::ListRanges(ListRangesResponse { ranges }));
    worker.count(Operation::ListRanges, &reply);
    reply
}

/// The stream whose owner must handle `request`; `None` for requests any worker answers.
fn request_stream(request: &Request) -> Option<StreamId> {
    match request {
        Request::Append(header) => Some(header.stream_id),
        Request::Fetch(header) => Some(header.stream_id),
        Request::CreateRange(header) => Some(header.stream_id),
        Request::SealRange(header) => Some(header.stream_id),
        Request::DescribeRange(header) => Some(header.stream_id),
        Request::TrimRange(header) => Some(header.stream_id),
        Request::DeleteRange(header) => Some(header.stream_id),
        Request::ListRanges(header) => header.stream_id,
        _ => None,
    }
}
