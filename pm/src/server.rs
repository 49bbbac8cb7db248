//! Starting and stopping a placement manager: recover the state from the command log, bind the
//! listeners, and serve on a runtime thread of its own until told to stop.
//!
//! The same code runs the `pm` daemon and the placement manager embedded in a data node
//! (`pm.embedded: true`): both call [`start`] and later [`PmHandle::stop`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use runtime::mailbox;
use runtime::net::TcpListener;
use runtime::{race, Either};
use serve::local::Notify;

use crate::command_log::{CommandLog, LogOptions};
use crate::config::{parse_socket_address, PmConfig};
use crate::metrics::Gauges;
use crate::service::Pm;
use crate::state::{Command, NodeState, PmState};

/// Messages to the placement manager's thread.
enum Control {
    Shutdown,
}

/// A running placement manager.
pub struct PmHandle {
    address: SocketAddr,
    control: mailbox::Sender<Control>,
    thread: Option<JoinHandle<std::io::Result<Result<(), String>>>>,
    grace: Duration,
}

impl PmHandle {
    /// The address it serves on (the bound one: port 0 in the config is resolved).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether its thread ended on its own (its log failed, say).
    pub fn has_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops serving: connections get GOAWAY, accepted requests are answered within the grace
    /// period, the log is closed. Returns what ended the thread.
    pub fn stop(mut self) -> Result<(), String> {
        let _ = self.control.send(Control::Shutdown);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + self.grace + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !thread.is_finished() {
            return Err("the placement manager did not stop within its grace period".to_string());
        }
        match thread.join() {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => Err(format!(
                "cannot build the placement manager's runtime: {error}"
            )),
            Err(_) => Err("the placement manager's thread panicked".to_string()),
        }
    }
}

/// Recovers the state under `config.storage.path`, binds the listeners and starts serving on a
/// thread named `pm`. Errors are start-up failures.
pub fn start(config: PmConfig) -> Result<PmHandle, String> {
    config.validate().map_err(|error| error.to_string())?;
    let path = config.storage.path.clone();
    std::fs::create_dir_all(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    let options = LogOptions {
        segment_size_bytes: config.storage.segment_size_bytes,
        ..LogOptions::default()
    };
    let started = Instant::now();
    let (log, recovered) = CommandLog::open(&path, options)
        .map_err(|error| format!("cannot open the command log in {}: {error}", path.display()))?;
    let mut state = match &recovered.snapshot {
        Some((index, bytes)) => PmState::decode_snapshot(bytes).map_err(|error| {
            format!(
                "the snapshot at command {index} in {} is unusable: {error}",
                path.display()
            )
        })?,
        None => PmState::new(),
    };
    for (index, record) in &recovered.records {
        let command = Command::decode(record).map_err(|error| {
            format!(
                "command {index} of the log in {} does not decode: {error}",
                path.display()
            )
        })?;
        state.apply(&command).map_err(|rejection| {
            format!(
                "command {index} of the log in {} was accepted once but is refused on replay \
                 ({rejection}); the log does not match this build",
                path.display()
            )
        })?;
    }
    if let Some(torn) = &recovered.report.torn_tail {
        log::warn!("placement manager log: cut a torn tail: {torn:?}");
    }
    log::info!(
        "placement manager state recovered from {} in {:?}: revision {}, {} command(s) replayed{}",
        path.display(),
        started.elapsed(),
        state.revision(),
        recovered.records.len(),
        recovered
            .snapshot
            .as_ref()
            .map_or(String::new(), |(index, _)| format!(
                " after the snapshot at command {index}"
            ))
    );

    let listen = parse_socket_address(&config.server.listen)
        .ok_or_else(|| format!("server.listen: cannot resolve {:?}", config.server.listen))?;
    let listener =
        TcpListener::bind(listen).map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listen address: {error}"))?;
    serve::auth::warn_if_open("placement manager", address, &config.auth.tokens());
    let metrics_listener = if config.metrics.enabled {
        let metrics = parse_socket_address(&config.metrics.addr)
            .ok_or_else(|| format!("metrics.addr: cannot resolve {:?}", config.metrics.addr))?;
        Some(
            TcpListener::bind(metrics)
                .map_err(|error| format!("cannot serve metrics on {metrics}: {error}"))?,
        )
    } else {
        None
    };
    let (control_sender, control) =
        mailbox::channel(4).map_err(|error| format!("cannot create a control mailbox: {error}"))?;
    let grace = Duration::from_millis(config.server.grace_period_ms);
    let thread = runtime::thread::spawn_runtime("pm", None, runtime::Builder::new(), move || {
        serve_main(config, state, log, listener, metrics_listener, control)
    })
    .map_err(|error| format!("cannot start the placement manager's thread: {error}"))?;
    log::info!("placement manager serving on {address}");
    Ok(PmHandle {
        address,
        control: control_sender,
        thread: Some(thread),
        grace,
    })
}

async fn serve_main(
    config: PmConfig,
    state: PmState,
    log: CommandLog,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    mut control: mailbox::Receiver<Control>,
) -> Result<(), String> {
    let grace = Duration::from_millis(config.server.grace_period_ms);
    let max_connections = config.server.max_connections;
    let pm = Rc::new(Pm::new(config, state, log));
    let metrics_task = metrics_listener.map(|listener| {
        // A weak handle: the endpoint must not keep the placement manager (and its log) alive
        // past shutdown.
        let pm = Rc::downgrade(&pm);
        runtime::spawn(serve::http::serve_metrics(listener, move || {
            pm.upgrade()
                .map(|pm| pm.metrics.render(&gauges(&pm)))
                .unwrap_or_default()
        }))
    });
    let maintenance = runtime::spawn(crate::maintenance::run(Rc::clone(&pm)));

    let active = Rc::new(std::cell::Cell::new(0usize));
    let closed = Notify::default();
    loop {
        // Ends the accept loop on a shutdown request, or when the log failed.
        let stop = async {
            let _: Either<Option<Control>, ()> = race(control.recv(), pm.shutdown_wait()).await;
        };
        match race(listener.accept(), stop).await {
            Either::Left(Ok((stream, peer))) => {
                if active.get() >= max_connections {
                    log::warn!(
                        "connection from {peer} refused: server.max-connections \
                         ({max_connections}) reached"
                    );
                    drop(stream);
                    continue;
                }
                active.set(active.get() + 1);
                let pm = Rc::clone(&pm);
                let active = Rc::clone(&active);
                let closed = closed.clone();
                runtime::spawn(async move {
                    serve::connection::serve(pm, stream, peer).await;
                    active.set(active.get() - 1);
                    closed.notify();
                });
            }
            Either::Left(Err(error)) => {
                log::warn!("placement manager: accept failed: {error}");
                runtime::time::sleep(Duration::from_millis(10)).await;
            }
            Either::Right(()) => break,
        }
    }
    drop(listener);
    pm.begin_shutdown();
    maintenance.abort();
    let drained = async {
        while active.get() > 0 {
            let notified = closed.notified();
            if active.get() > 0 {
                notified.await;
            }
        }
    };
    if runtime::time::timeout(grace, drained).await.is_err() {
        log::warn!("grace period over with requests still in flight; stopping anyway");
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    // Requests to data nodes started by earlier requests (deletes, trims) end within the node
    // request timeout; the log is closed once the last of them let go.
    let deadline =
        Instant::now() + Duration::from_millis(pm.config.cluster.node_request_timeout_ms);
    while Rc::strong_count(&pm) > 1 && Instant::now() < deadline {
        runtime::time::sleep(Duration::from_millis(5)).await;
    }
    let failed = pm.has_failed();
    let pm =
        Rc::try_unwrap(pm).map_err(|_| "requests still hold the placement manager".to_string());
    match pm {
        Ok(pm) => pm
            .into_log()
            .close()
            .map_err(|error| format!("closing the command log: {error}"))?,
        Err(message) => log::warn!("{message}; the log is closed as the thread ends"),
    }
    if failed {
        return Err("the command log failed".to_string());
    }
    log::info!("placement manager stopped");
    Ok(())
}

fn gauges(pm: &Pm) -> Gauges {
    let now = Instant::now();
    let state = pm.state.borrow();
    let mut gauges = Gauges {
        revision: state.revision(),
        log_durable_index: pm.log.durable_index(),
        log_data_syncs: pm.log.stats().data_syncs,
        ..Gauges::default()
    };
    for stream in state.list_streams(ids::StreamId(0), usize::MAX) {
        gauges.streams += 1;
        for range in state.ranges_of(stream.id) {
            gauges.ranges += 1;
            gauges.ranges_under_replicated += u64::from(range.under_replicated);
        }
    }
    for node in state.nodes() {
        match node.state {
            NodeState::ReadWrite => gauges.nodes_read_write += 1,
            NodeState::ReadOnly => gauges.nodes_read_only += 1,
            NodeState::Offline => gauges.nodes_offline += 1,
        }
        gauges.nodes_alive += u64::from(pm.is_alive(node.id, now));
    }
    gauges
}
