//! The metrics endpoint: a tiny HTTP/1.0 responder on a worker's runtime. `GET /metrics` gets
//! the Prometheus text page, rendered afresh by the daemon's `render` at each scrape; anything
//! else a 404. One request per connection, bounded in size
//! and time, and at most [`MAX_OPEN_SCRAPES`] connections at once (more are closed at accept),
//! so neither a stuck scraper nor a flood of connections can hold much.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Largest request head accepted.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrape connections served at once; a scraper needs one.
pub const MAX_OPEN_SCRAPES: usize = 16;

/// Accepts scrapes until the listener fails (the worker drops this task at shutdown); each
/// `GET /metrics` is answered with what `render` returns then.
pub async fn serve_metrics(
    listener: runtime::net::TcpListener,
    render: impl Fn() -> String + 'static,
) {
    let render: Rc<dyn Fn() -> String> = Rc::new(render);
    let open = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if open.get() >= MAX_OPEN_SCRAPES {
                    log::debug!("metrics endpoint: {MAX_OPEN_SCRAPES} scrapes open, closing the connection from {peer}");
                    drop(stream);
                    continue;
                }
                open.set(open.get() + 1);
                let render = Rc::clone(&render);
                let open = Rc::clone(&open);
                runtime::spawn(async move {
                    let _ = runtime::time::timeout(REQUEST_TIMEOUT, answer(stream, &*render)).await;
                    open.set(open.get() - 1);
                });
            }
            Err(error) => {
                log::warn!("metrics endpoint: accept failed: {error}");
                runtime::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(stream: runtime::net::TcpStream, render: &dyn Fn() -> String) {
    let mut request = Vec::with_capacity(MAX_REQUEST_BYTES);
    loop {
        let (result, buf) = stream.read(request).await;
        request = buf;
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) if request.windows(4).any(|window| window == b"\r\n\r\n") => break,
            Ok(_) if request.len() >= MAX_REQUEST_BYTES => return,
            Ok(_) => {}
        }
    }
    let first_line = request
        .split(|byte| *byte == b'\n')
        .next()
        .unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    let mut parts = first_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = render();
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "only GET /metrics is served here\n";
        format!(
            "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (_, _) = stream.write_all(response).await;
    let _ = stream.close().await;
}
