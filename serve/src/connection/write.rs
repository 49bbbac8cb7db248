//! The writer task of a connection: sends whatever answers queued since its last write in one
//! vectored write, releases their bytes from the budgets once the kernel has them, and closes
//! the socket when the reader is done and everything is sent.

use super::*;

/// Sends the queued answers of one connection until it closes.
pub(super) async fn write_loop<S: Service>(
    stream: Rc<runtime::net::TcpStream>,
    shared: Rc<Shared>,
    service: Rc<S>,
) {
    let counters = service.counters();
    // The list of frames handed to each write, reused from write to write.
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        frames.extend(shared.outgoing.borrow_mut().drain(..));
        let responses = shared.queued_responses.replace(0);
        if frames.is_empty() {
            if shared.reading_done.get() && shared.in_flight.get() == 0 {
                break;
            }
            let wake = shared.writer_wake.notified();
            if shared.outgoing.borrow().is_empty()
                && !(shared.reading_done.get() && shared.in_flight.get() == 0)
            {
                wake.await;
            }
            continue;
        }
        // Counted before the write, so a client that has its answer sees it in the metrics.
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        counters.add(&counters.bytes_out, bytes as u64);
        shared.sending_responses.set(responses);
        let abort = shared.abort_write.notified();
        let result = if shared.aborted.get() {
            None
        } else {
            shared.writing.set(true);
            // Dropping the write cancels it; the driver keeps the buffers until the kernel
            // lets go of them.
            match race(stream.writev_all(std::mem::take(&mut frames)), abort).await {
                Either::Left((result, mut sent)) => {
                    sent.clear();
                    frames = sent;
                    Some(result)
                }
                Either::Right(()) => None,
            }
        };
        shared.writing.set(false);
        shared.sending_responses.set(0);
        frames.clear();
        shared.release(bytes);
        match result {
            Some(Ok(())) => shared.last_progress.set(Instant::now()),
            Some(Err(error)) => {
                log::debug!("connection {}: write failed: {error}", shared.peer);
                shared.broken.set(true);
                shared.discard_outgoing();
                break;
            }
            None => {
                log::debug!(
                    "connection {}: write abandoned, the peer reads nothing",
                    shared.peer
                );
                shared.broken.set(true);
                shared.discard_outgoing();
                break;
            }
        }
        shared.request_done.notify();
    }
}
