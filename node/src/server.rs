//! Starts the node's threads and runs until shutdown.
//!
//! The main thread blocks SIGINT and SIGTERM (so every thread it spawns inherits the mask and
//! the signals queue on its signalfd), loads the range files, opens the store (which starts the
//! IO thread), binds the listeners (one per worker with SO_REUSEPORT, so the kernel spreads
//! connections) and the metrics endpoint, then starts `server.workers` worker threads, each with
//! its own runtime, pinned when a CPU set is configured. It then waits on its own small runtime
//! for a signal, publishing store gauges meanwhile.
//!
//! Shutdown, on the first SIGTERM or SIGINT: every worker stops accepting, sends GOAWAY on its
//! connections and lets the requests in flight finish; workers keep serving each other's
//! forwarded requests until all of them are drained. The main thread waits for that up to
//! `server.grace-period-ms`, then shuts the store down (final checkpoint, clean marker) and the
//! process exits 0. A second signal exits at once with code 1.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::mailbox;
use runtime::net::TcpListener;
use runtime::signal::{Signal, Signals};
use runtime::{race, Either};
use serve::connection;
use store::SyncMode;

use crate::catalog::{Catalog, CatalogHandle};
use crate::config::Config;
use crate::dispatch;
use crate::membership::Member;
use crate::metrics::{Registry, StoreGauges};
use crate::ranges_file::RangeRecord;
use crate::storage::Storage;
use crate::worker::{owner_of, Worker, WorkerMessage};

/// Messages from the main thread to a worker.
enum Control {
    Shutdown,
}

/// Capacity of each worker-to-worker mailbox.
const PEER_MAILBOX_CAPACITY: usize = 1024;

/// The one start-up line: workers, pinning, ring modes, sync mode and data directory.
pub fn startup_summary(config: &Config) -> String {
    let pinning = if config.server.cpu_set.is_empty() {
        "unpinned".to_string()
    } else {
        format!("pinned to cpus {:?}", config.server.cpu_set)
    };
    let io_pinning = match config.store.io_thread_cpu {
        Some(cpu) => format!("io thread on cpu {cpu}"),
        None => "io thread unpinned".to_string(),
    };
    let uring = &config.store.uring;
    let sqpoll = if uring.sqpoll {
        format!("on (idle {} ms)", uring.sqpoll_idle_ms)
    } else {
        "off".to_string()
    };
    format!(
        "data-node {}: listen {}, {} worker(s) {pinning}, {io_pinning}, sqpoll {sqpoll}, iopoll {}, sync {}{}, prewrite {}, data dir {}",
        env!("CARGO_PKG_VERSION"),
        config.server.listen,
        config.server.workers,
        if uring.iopoll { "on" } else { "off" },
        config.store.sync,
        if config.store.sync == SyncMode::Never {
            " (acknowledged appends may be lost on a machine crash)"
        } else {
            ""
        },
        config.store.prewrite,
        config.store.path.display(),
    )
}

/// Everything a worker thread needs, moved to it at start.
struct WorkerSetup {
    index: usize,
    config: Arc<Config>,
    registry: Registry,
    store: store::WorkerStore,
    catalog: CatalogHandle,
    records: Vec<RangeRecord>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    peers: Vec<Option<mailbox::Sender<WorkerMessage>>>,
    inbound: Vec<mailbox::Receiver<WorkerMessage>>,
    control: mailbox::Receiver<Control>,
    open_connections: Arc<AtomicUsize>,
    largest_append_bytes: Arc<AtomicUsize>,
    drained_workers: Arc<AtomicUsize>,
}

/// Runs the node until SIGTERM or SIGINT. Errors are start-up or runtime failures (exit 1).
pub fn run(config: Config) -> Result<(), String> {
    // The binary validated already; a caller of the library may not have, and the address
    // accessors rely on it.
    config.validate().map_err(|error| error.to_string())?;
    log::info!("{}", startup_summary(&config));
    // Before any thread exists, so all of them inherit the blocked mask.
    let mut signals = Signals::new(&[Signal::INTERRUPT, Signal::TERMINATE])
        .map_err(|error| format!("cannot set up signal handling: {error}"))?;

    let config = Arc::new(config);
    let workers = config.server.workers;
    std::fs::create_dir_all(&config.store.path).map_err(|error| {
        format!(
            "cannot create data directory {}: {error}",
            config.store.path.display()
        )
    })?;
    let (mut store, worker_stores) = store::Store::open(config.store_config(), workers, |key| {
        owner_of(key.stream_id, workers)
    })
    .map_err(|error| format!("cannot open the store: {error}"))?;
    // Only after the store holds the directory lock: a second node on the same directory
    // must fail before it touches anything.
    let registry = Registry::new(
        workers,
        Arc::new(serve::NodeBudget::new(config.server.max_buffered_bytes)),
    );
    let mut catalog = Catalog::open(&config.store.path, Arc::clone(&registry.catalog))?;
    let records = catalog.take_records();

    log::info!(
        "{} range(s) on disk, store recovered in {:?}",
        records.len(),
        store.recovery().duration
    );

    let listen = config.listen_address();
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        let listener = TcpListener::bind_with(listen, workers > 1, 1024)
            .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
        listeners.push(listener);
    }
    // Before any worker accepts: the warning is in the log by the time anyone can connect.
    serve::auth::warn_if_open("data node", listen, &config.auth.tokens());
    let metrics_listener = match config.metrics_address() {
        Some(address) => Some(
            TcpListener::bind(address)
                .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?,
        ),
        None => None,
    };

    // Worker i sends to worker j through mailbox [i][j].
    let mut senders: Vec<Vec<Option<mailbox::Sender<WorkerMessage>>>> = (0..workers)
        .map(|_| (0..workers).map(|_| None).collect())
        .collect();
    let mut receivers: Vec<Vec<mailbox::Receiver<WorkerMessage>>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (from, row) in senders.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (sender, receiver) = mailbox::channel(PEER_MAILBOX_CAPACITY)
                    .map_err(|error| format!("cannot create a worker mailbox: {error}"))?;
                *slot = Some(sender);
                receivers[to].push(receiver);
            }
        }
    }

    let open_connections = Arc::new(AtomicUsize::new(0));
    let largest_append_bytes = Arc::new(AtomicUsize::new(0));
    let drained_workers = Arc::new(AtomicUsize::new(0));
    let mut records_by_worker: Vec<Vec<RangeRecord>> = (0..workers).map(|_| Vec::new()).collect();
    for record in records {
        records_by_worker[owner_of(record.key.stream_id, workers)].push(record);
    }
    let mut controls = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    let mut metrics_listener = metrics_listener;
    let setups = worker_stores
        .into_iter()
        .zip(listeners)
        .zip(senders)
        .zip(receivers)
        .zip(records_by_worker)
        .enumerate();
    for (index, ((((worker_store, listener), peers), inbound), records)) in setups {
        let (control_sender, control) = mailbox::channel(4)
            .map_err(|error| format!("cannot create a control mailbox: {error}"))?;
        controls.push(control_sender);
        let setup = WorkerSetup {
            index,
            config: Arc::clone(&config),
            registry: registry.clone(),
            store: worker_store,
            catalog: catalog.handle(),
            records,
            listener,
            metrics_listener: if index == 0 {
                metrics_listener.take()
            } else {
                None
            },
            peers,
            inbound,
            control,
            open_connections: Arc::clone(&open_connections),
            largest_append_bytes: Arc::clone(&largest_append_bytes),
            drained_workers: Arc::clone(&drained_workers),
        };
        let builder = runtime::Builder::new();
        let thread = runtime::thread::spawn_runtime(
            format!("worker-{index}"),
            config.worker_cpu(index),
            builder,
            move || worker_main(setup),
        )
        .map_err(|error| format!("cannot start worker {index}: {error}"))?;
        threads.push(thread);
    }
    log::info!("serving on {listen}");

    // The embedded placement manager starts once the node serves, so that its first placement
    // can reach this node; it stops after the node drained, so the node's OFFLINE report
    // reaches it.
    let embedded_pm = if config.pm.embedded {
        match pm::server::start(config.embedded_pm_config()) {
            Ok(handle) => Some(handle),
            Err(error) => {
                for control in &mut controls {
                    let _ = control.send(Control::Shutdown);
                }
                return Err(format!(
                    "cannot start the embedded placement manager: {error}"
                ));
            }
        }
    } else {
        None
    };
    let mut member = Member::new(&config, registry.clone());
    let node_id: std::cell::Cell<Option<wire::NodeId>> = std::cell::Cell::new(None);

    let mut main_runtime = runtime::Runtime::new()
        .map_err(|error| format!("cannot start the main runtime: {error}"))?;
    let outcome = main_runtime.block_on(async {
        let config = &config;
        let membership = async {
            let Some(member) = member.as_mut() else {
                return std::future::pending::<String>().await;
            };
            match member.node_id().await {
                Ok(id) => {
                    node_id.set(Some(id));
                    member.heartbeat_forever(id).await;
                    std::future::pending::<String>().await
                }
                Err(error) => error,
            }
        };
        // Publish store gauges while waiting for the first signal, and watch the workers: one
        // that stops on its own (its ring could not be built, say) stops the node.
        let publish = async {
            loop {
                if let Some(index) = threads.iter().position(|thread| thread.is_finished()) {
                    return index;
                }
                let stats = store.stats();
                registry.store.publish(StoreGauges {
                    wal_bytes_used: stats
                        .durable_position
                        .saturating_sub(stats.oldest_segment_start),
                    wal_bytes_capacity: stats.disk_usage_bytes,
                    cache_bytes_used: stats.block_cache_bytes,
                    cache_bytes_capacity: config.store.cache_size_bytes as u64,
                    group_writes: stats.groups,
                    group_write_micros: stats.group_write_micros,
                    data_syncs: stats.data_syncs,
                    data_sync_micros: stats.data_sync_micros,
                    damaged_regions: stats.damaged_regions,
                    corrupt_reads: stats.corrupt_reads,
                });
                runtime::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let first = match race(signals.recv(), race(publish, membership)).await {
            Either::Left(Ok(signal)) => signal,
            Either::Left(Err(error)) => return Err(format!("waiting for signals failed: {error}")),
            Either::Right(Either::Left(index)) => {
                return Err(format!("worker {index} stopped unexpectedly"))
            }
            Either::Right(Either::Right(error)) => {
                return Err(format!("cannot join the cluster: {error}"))
            }
        };
        if let (Some(member), Some(id)) = (member.as_mut(), node_id.get()) {
            member.report_offline(id).await;
        }
        log::info!(
            "{first} received: shutting down (grace period {} ms; send it again to exit at once)",
            config.server.grace_period_ms
        );
        for control in &mut controls {
            let _ = control.send(Control::Shutdown);
        }
        let grace = Duration::from_millis(config.server.grace_period_ms);
        let started = Instant::now();
        let drained = async {
            while !threads.iter().all(|thread| thread.is_finished()) {
                if started.elapsed() >= grace {
                    return false;
                }
                runtime::time::sleep(Duration::from_millis(5)).await;
            }
            true
        };
        match race(signals.recv(), drained).await {
            Either::Left(_) => Ok(false),
            Either::Right(all_drained) => {
                if !all_drained {
                    log::warn!("grace period over with requests still in flight; stopping anyway");
                }
                Ok(true)
            }
        }
    });
    let mut failures = Vec::new();
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            log::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
        Err(message) => failures.push(message),
    }
    for (index, thread) in threads.into_iter().enumerate() {
        if !thread.is_finished() {
            // Past the grace period: the thread is abandoned with the process.
            continue;
        }
        match thread.join() {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(message))) => failures.push(format!("worker {index}: {message}")),
            Ok(Err(error)) => {
                failures.push(format!("worker {index}: cannot build its runtime: {error}"))
            }
            Err(_) => failures.push(format!("worker {index} panicked")),
        }
    }
    let _ = store.request_checkpoint();
    store.shutdown();
    catalog.close();
    if let Some(handle) = embedded_pm {
        if let Err(error) = handle.stop() {
            failures.push(format!("embedded placement manager: {error}"));
        }
    }
    if failures.is_empty() {
        log::info!("stopped cleanly");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// A worker thread's life: start its store front end, install its ranges, serve connections
/// and forwarded requests, and drain on shutdown.
async fn worker_main(setup: WorkerSetup) -> Result<(), String> {
    let WorkerSetup {
        index,
        config,
        registry,
        store,
        catalog,
        records,
        listener,
        metrics_listener,
        peers,
        inbound,
        mut control,
        open_connections,
        largest_append_bytes,
        drained_workers,
    } = setup;
    let (handle, driver) = store.start();
    runtime::spawn(driver.run());
    let storage = Storage::new(handle);
    let workers = config.server.workers;
    let metrics = registry.worker(index);
    let worker = Rc::new(
        Worker::new(
            index,
            workers,
            Arc::clone(&config),
            metrics,
            storage,
            catalog,
            peers,
        )
        .with_node_budget(
            Arc::clone(&registry.node_budget),
            Arc::clone(&largest_append_bytes),
        ),
    );
    worker
        .largest_append_bytes
        .fetch_max(worker.storage.largest_append_bytes(), Ordering::Relaxed);
    // The epoch is the larger of the saved one and that of the range's last stored batch: a
    // writer's raise is in its batches even where a crash beat every other save. A raise
    // found this way is saved before the node serves, so a later trim cannot lose it.
    let mut raised_saves = Vec::new();
    for record in &records {
        let durable_end = worker
            .storage
            .durable_end(record.key)
            .unwrap_or(record.start);
        let batch_epoch = worker
            .storage
            .last_batch_epoch(record.key)
            .await
            .map_err(|error| {
                format!(
                    "worker {index}: cannot read the last batch of range {}: {}",
                    record.key, error.message
                )
            })?;
        let epoch = batch_epoch.map_or(record.epoch, |batch| batch.max(record.epoch));
        worker.install_range(record, durable_end, epoch);
        if epoch > record.epoch {
            log::info!(
                "worker {index}: range {} is at epoch {epoch} (its last batch), above its saved \
                 epoch {}; saving it",
                record.key,
                record.epoch
            );
            if let Some(raised) = worker.range_record(record.key) {
                raised_saves.push(worker.catalog.save(raised));
            }
        }
    }
    for save in raised_saves {
        save.await
            .map_err(|error| format!("worker {index}: cannot save a recovered epoch: {error}"))?;
    }
    for key in worker.storage.ranges() {
        if !worker.contains_range(key) {
            log::warn!(
                "worker {index}: the WAL holds data of range {key} but the range catalog does \
                 not name it; its data is not served (create the range again to serve it)"
            );
        }
    }

    let depths: Rc<Vec<std::cell::Cell<usize>>> =
        Rc::new(inbound.iter().map(|_| std::cell::Cell::new(0)).collect());
    for (slot, mut receiver) in inbound.into_iter().enumerate() {
        let worker = Rc::clone(&worker);
        let depths = Rc::clone(&depths);
        runtime::spawn(async move {
            while let Some(message) = receiver.recv().await {
                depths[slot].set(receiver.len());
                dispatch::receive(&worker, message);
            }
        });
    }
    if let Some(metrics_listener) = metrics_listener {
        let registry = registry.clone();
        runtime::spawn(serve::http::serve_metrics(metrics_listener, move || {
            registry.render(registry.store.load())
        }));
    }
    {
        let worker = Rc::clone(&worker);
        let depths = Rc::clone(&depths);
        runtime::spawn(async move {
            loop {
                let metrics = &worker.metrics;
                metrics.set(&metrics.fetch_waiters, worker.fetch_waiters() as u64);
                metrics.set(
                    &metrics.mailbox_depth,
                    depths.iter().map(std::cell::Cell::get).sum::<usize>() as u64,
                );
                runtime::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    let active = Rc::new(std::cell::Cell::new(0usize));
    let connection_closed = serve::local::Notify::default();
    let max_connections = config.server.max_connections;
    loop {
        match race(listener.accept(), control.recv()).await {
            Either::Left(Ok((stream, peer))) => {
                let metrics = &worker.metrics;
                if open_connections.fetch_add(1, Ordering::AcqRel) >= max_connections {
                    open_connections.fetch_sub(1, Ordering::AcqRel);
                    metrics.add(&metrics.connections_rejected, 1);
                    log::warn!("connection from {peer} refused: server.max-connections ({max_connections}) reached");
                    runtime::spawn(async move {
                        let goaway = wire::msg::Goaway {
                            reason: wire::msg::GoawayReason::Overloaded,
                            message: format!(
                                "the node serves at most {max_connections} connections; retry later or elsewhere"
                            ),
                        };
                        let mut frame = bytes::BytesMut::new();
                        if wire::codec::encode_goaway(&mut frame, &goaway).is_ok() {
                            let _ = runtime::time::timeout(
                                Duration::from_secs(1),
                                stream.write_all(frame.freeze()),
                            )
                            .await;
                        }
                        let _ = stream.close().await;
                    });
                    continue;
                }
                metrics.add(&metrics.connections_accepted, 1);
                active.set(active.get() + 1);
                let worker = Rc::clone(&worker);
                let active = Rc::clone(&active);
                let closed = connection_closed.clone();
                let open_connections = Arc::clone(&open_connections);
                runtime::spawn(async move {
                    connection::serve(Rc::clone(&worker), stream, peer).await;
                    worker.metrics.add(&worker.metrics.connections_closed, 1);
                    open_connections.fetch_sub(1, Ordering::AcqRel);
                    active.set(active.get() - 1);
                    closed.notify();
                });
            }
            Either::Left(Err(error)) => {
                log::warn!("worker {index}: accept failed: {error}");
                runtime::time::sleep(Duration::from_millis(10)).await;
            }
            Either::Right(Some(Control::Shutdown)) | Either::Right(None) => break,
        }
    }
    drop(listener);
    worker.begin_shutdown();
    while active.get() > 0 {
        let closed = connection_closed.notified();
        if active.get() > 0 {
            closed.await;
        }
    }
    worker.persist_confirmed_offsets().await;
    // Keep answering requests other workers forward until every worker has drained.
    drained_workers.fetch_add(1, Ordering::AcqRel);
    while drained_workers.load(Ordering::Acquire) < workers {
        runtime::time::sleep(Duration::from_millis(2)).await;
    }
    log::debug!("worker {index} stopped");
    Ok(())
}
