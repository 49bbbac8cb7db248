//! Many tasks and timers on one runtime: join handles, ordering of timers, timeouts, intervals,
//! abort, and wakes from other threads.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::time::{interval, sleep, sleep_until, timeout, Elapsed};
use runtime::{spawn, yield_now, Builder, Runtime};

#[test]
fn thousands_of_tasks_return_their_outputs() {
    let mut runtime = Runtime::new().unwrap();
    let total = runtime.block_on(async {
        let handles: Vec<_> = (0..5_000u64)
            .map(|n| {
                spawn(async move {
                    yield_now().await;
                    n * 2
                })
            })
            .collect();
        let mut total = 0;
        for handle in handles {
            total += handle.await;
        }
        total
    });
    assert_eq!(total, (0..5_000u64).map(|n| n * 2).sum::<u64>());
    assert_eq!(runtime.stats().tasks, 0);
}

#[test]
fn timers_fire_in_deadline_order_and_not_early() {
    let mut runtime = Runtime::new().unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    let started = Instant::now();
    runtime.block_on({
        let order = order.clone();
        async move {
            let mut handles = Vec::new();
            // 500 timers with shuffled deadlines between 1 and 50 ms after a common start, so
            // their order does not depend on when each task first ran.
            let start = Instant::now();
            for index in 0..500u64 {
                let delay_ms = (index * 37) % 50 + 1;
                let order = order.clone();
                handles.push(spawn(async move {
                    let deadline = start + Duration::from_millis(delay_ms);
                    sleep_until(deadline).await;
                    assert!(Instant::now() >= deadline, "timer fired early");
                    order.borrow_mut().push(delay_ms);
                }));
            }
            for handle in handles {
                handle.await;
            }
        }
    });
    let order = order.borrow();
    assert_eq!(order.len(), 500);
    assert!(
        order.windows(2).all(|pair| pair[0] <= pair[1]),
        "timers fired out of order"
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(runtime.stats().timers, 0);
}

#[test]
fn sleep_precision_is_within_a_few_milliseconds() {
    let mut runtime = Runtime::new().unwrap();
    let mut late = Vec::new();
    runtime.block_on(async {
        for _ in 0..20 {
            let begin = Instant::now();
            sleep(Duration::from_millis(2)).await;
            late.push(begin.elapsed() - Duration::from_millis(2));
        }
    });
    late.sort();
    // The median is robust to the hypervisor's occasional multi-ms stalls.
    assert!(
        late[10] < Duration::from_millis(1),
        "median lateness {:?}",
        late[10]
    );
}

#[test]
fn timeout_returns_elapsed_and_drops_the_future() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let result = timeout(Duration::from_millis(5), sleep(Duration::from_secs(10))).await;
        assert_eq!(result, Err(Elapsed));
        let result = timeout(Duration::from_secs(10), async { 7 }).await;
        assert_eq!(result, Ok(7));
    });
    assert_eq!(runtime.stats().timers, 0);
}

#[test]
fn a_sleep_longer_than_the_clock_can_count_waits_instead_of_panicking() {
    let mut runtime = Runtime::new().unwrap();
    let result =
        runtime.block_on(async { timeout(Duration::from_millis(5), sleep(Duration::MAX)).await });
    assert_eq!(result, Err(Elapsed));
    let result =
        runtime.block_on(async { timeout(Duration::MAX, sleep(Duration::from_millis(1))).await });
    assert_eq!(result, Ok(()));
}

#[test]
fn interval_ticks_at_its_period() {
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let mut ticks = interval(Duration::from_millis(3));
        let mut previous = ticks.tick().await;
        for _ in 0..5 {
            let tick = ticks.tick().await;
            assert!(tick - previous >= Duration::from_millis(3));
            previous = tick;
        }
        assert!(started.elapsed() >= Duration::from_millis(18));
    });
}

#[test]
fn aborted_task_never_finishes_and_detached_task_does() {
    let mut runtime = Runtime::new().unwrap();
    let counter = Rc::new(RefCell::new(0));
    runtime.block_on({
        let counter = counter.clone();
        async move {
            let aborted = {
                let counter = counter.clone();
                spawn(async move {
                    sleep(Duration::from_millis(20)).await;
                    *counter.borrow_mut() += 100;
                })
            };
            {
                let counter = counter.clone();
                // Detached: the handle is dropped at once.
                drop(spawn(async move {
                    sleep(Duration::from_millis(5)).await;
                    *counter.borrow_mut() += 1;
                }));
            }
            yield_now().await;
            aborted.abort();
            sleep(Duration::from_millis(40)).await;
        }
    });
    assert_eq!(*counter.borrow(), 1);
    assert_eq!(runtime.stats().tasks, 0);
    assert_eq!(runtime.stats().timers, 0);
}

#[test]
fn busy_task_does_not_starve_others() {
    let mut runtime = Builder::new().build().unwrap();
    runtime.block_on(async {
        let flag = Rc::new(RefCell::new(false));
        let observer = {
            let flag = flag.clone();
            spawn(async move {
                *flag.borrow_mut() = true;
            })
        };
        // A task that yields keeps running, but the observer gets its turn.
        while !*flag.borrow() {
            yield_now().await;
        }
        observer.await;
    });
}

#[test]
fn wakes_from_other_threads_reach_a_sleeping_runtime() {
    let mut runtime = Runtime::new().unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        for round in 0..200usize {
            let waker_slot = Arc::new(std::sync::Mutex::new(None::<std::task::Waker>));
            let done = Arc::new(AtomicUsize::new(0));
            let thread = {
                let waker_slot = waker_slot.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    // Wait until the task parked its waker, then set the flag and wake it.
                    loop {
                        if let Some(waker) = waker_slot.lock().unwrap().take() {
                            if round % 2 == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            done.store(1, Ordering::SeqCst);
                            waker.wake();
                            return;
                        }
                        std::thread::yield_now();
                    }
                })
            };
            let polls = polls.clone();
            std::future::poll_fn(|cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                if done.load(Ordering::SeqCst) == 1 {
                    return std::task::Poll::Ready(());
                }
                *waker_slot.lock().unwrap() = Some(cx.waker().clone());
                std::task::Poll::Pending
            })
            .await;
            thread.join().unwrap();
        }
    });
    assert!(polls.load(Ordering::Relaxed) >= 400);
}

#[test]
fn budget_makes_an_always_ready_consumer_yield() {
    // The mailbox never runs dry, so without the cooperative budget the consumer would finish
    // all 50 000 items in a single poll before the other task got a turn.
    const ITEMS: usize = 50_000;
    let (mut sender, mut receiver) = runtime::mailbox::channel::<usize>(ITEMS).unwrap();
    let mut items: Vec<usize> = (0..ITEMS).collect();
    assert_eq!(sender.send_batch(&mut items).unwrap(), ITEMS);
    let mut runtime = Builder::new().budget(64).build().unwrap();
    let consumed_when_other_ran = runtime.block_on(async move {
        let consumed = Rc::new(RefCell::new(0usize));
        let consumer = {
            let consumed = consumed.clone();
            spawn(async move {
                for _ in 0..ITEMS {
                    receiver.recv().await.unwrap();
                    *consumed.borrow_mut() += 1;
                }
            })
        };
        let other = {
            let consumed = consumed.clone();
            spawn(async move { *consumed.borrow() })
        };
        let seen = other.await;
        consumer.await;
        drop(sender);
        seen
    });
    assert!(
        consumed_when_other_ran < ITEMS,
        "the consumer ran to completion before the other task got a turn"
    );
}

#[test]
fn spawned_tasks_woken_from_other_threads_never_miss_a_wake() {
    // Four tasks each wait for a flag that a plain thread sets and then wakes them through their
    // Waker; the runtime is usually asleep in the kernel when the wake arrives.
    const TASKS: usize = 4;
    const ROUNDS: usize = 500;
    type Slot = Arc<std::sync::Mutex<(bool, Option<std::task::Waker>)>>;
    let slots: Vec<Slot> = (0..TASKS)
        .map(|_| Arc::new(std::sync::Mutex::new((false, None))))
        .collect();
    let wakers = {
        let slots = slots.clone();
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                for slot in &slots {
                    // Wait until the task parked itself for this round.
                    loop {
                        let mut guard = slot.lock().unwrap();
                        if let Some(waker) = guard.1.take() {
                            guard.0 = true;
                            drop(guard);
                            if round % 7 == 0 {
                                std::thread::sleep(Duration::from_micros(50));
                            }
                            waker.wake();
                            break;
                        }
                        drop(guard);
                        std::thread::yield_now();
                    }
                }
            }
        })
    };
    let mut runtime = Runtime::new().unwrap();
    runtime.block_on(async move {
        let tasks: Vec<_> = slots
            .into_iter()
            .map(|slot| {
                spawn(async move {
                    for _ in 0..ROUNDS {
                        std::future::poll_fn(|cx| {
                            let mut guard = slot.lock().unwrap();
                            if guard.0 {
                                guard.0 = false;
                                return std::task::Poll::Ready(());
                            }
                            guard.1 = Some(cx.waker().clone());
                            std::task::Poll::Pending
                        })
                        .await;
                    }
                })
            })
            .collect();
        for task in tasks {
            timeout(Duration::from_secs(30), task)
                .await
                .expect("a cross-thread wake was lost");
        }
    });
    wakers.join().unwrap();
}
