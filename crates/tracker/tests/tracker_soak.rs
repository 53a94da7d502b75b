//! Soak: 8 threads allocating mixed sizes, growing and shrinking with realloc and freeing
//! blocks on another thread, for 60 s (HEAPWATCH_SOAK_SECS overrides), while the main
//! thread snapshots every 100 ms and symbolizes every tenth — in both modes, each in its
//! own process. No deadlock, no crash, and once quiet the totals are consistent: every
//! soak site is back to exactly zero and the heap is back where it started.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use heapwatch_tracker::{self as memory, GroupBy, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

const THREADS: usize = 8;

fn soak_duration() -> Duration {
    let secs = std::env::var("HEAPWATCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[inline(never)]
fn soak_alloc(size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.push(1u8);
    black_box(v)
}

#[inline(never)]
fn soak_grow(v: &mut Vec<u8>, extra: usize) {
    v.reserve_exact(v.capacity() + extra);
}

#[inline(never)]
fn soak_shrink(v: &mut Vec<u8>) {
    let keep = v.capacity() / 2;
    v.shrink_to(keep.max(1));
}

fn worker(
    seed: u64,
    stop: Arc<AtomicBool>,
    give: mpsc::SyncSender<Vec<u8>>,
    take: mpsc::Receiver<Vec<u8>>,
    ops: Arc<AtomicU64>,
) {
    let mut rng = seed | 1;
    let mut next = move |below: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below as u64) as usize
    };
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let size = match next(100) {
                0..=59 => 16 + next(240),
                60..=89 => 256 + next(8 * 1024),
                90..=98 => 16 * 1024 + next(64 * 1024),
                _ => 256 * 1024 + next(1024 * 1024),
            };
            match next(10) {
                0..=3 if held.len() < 2000 => held.push(soak_alloc(size)),
                4 if !held.is_empty() => {
                    let i = next(held.len());
                    soak_grow(&mut held[i], size);
                }
                5 if !held.is_empty() => {
                    let i = next(held.len());
                    soak_shrink(&mut held[i]);
                }
                6 if !held.is_empty() => {
                    // Freed on the neighbour thread.
                    let i = next(held.len());
                    let _ = give.try_send(held.swap_remove(i));
                }
                _ if !held.is_empty() => {
                    let i = next(held.len());
                    drop(held.swap_remove(i));
                }
                _ => {}
            }
            while let Ok(v) = take.try_recv() {
                drop(v);
            }
        }
        ops.fetch_add(256, Ordering::Relaxed);
    }
    drop(held);
    drop(give);
    while let Ok(v) = take.recv_timeout(Duration::from_millis(200)) {
        drop(v);
    }
}

#[path = "support/serial.rs"]
mod serial;

fn soak(mode: Mode) {
    let _turn = serial::serial();
    let heap_before = memory::totals().current_bytes;
    memory::start(TrackingConfig {
        mode,
        frames: 32,
        sample_interval_bytes: 64 * 1024,
        seed: None,
    })
    .expect("tracker installed");
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::sync_channel(64);
        senders.push(Some(tx));
        receivers.push(Some(rx));
    }
    let mut handles = Vec::new();
    for id in 0..THREADS {
        let give = senders[(id + 1) % THREADS].take().unwrap();
        let take = receivers[id].take().unwrap();
        let (stop, ops) = (stop.clone(), ops.clone());
        handles.push(std::thread::spawn(move || {
            worker(0x9e37_79b9 * (id as u64 + 1), stop, give, take, ops)
        }));
    }
    let until = Instant::now() + soak_duration();
    let mut snapshots = 0u64;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let snap = memory::take_snapshot();
        if snapshots.is_multiple_of(10) {
            let rows = snap.statistics(GroupBy::Site, 25);
            assert!(rows.len() <= 25);
        }
        snapshots += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("worker did not panic");
    }
    let total_ops = ops.load(Ordering::Relaxed);
    eprintln!("{mode:?}: {total_ops} operations, {snapshots} snapshots");
    assert!(total_ops > 0 && snapshots > 0);

    // Quiet: every soak site is back to exactly zero.
    let rows = memory::take_snapshot().statistics(GroupBy::Function, 200);
    if let Some(row) = rows.iter().find(|r| r.traceback[0].contains("soak_")) {
        panic!(
            "{mode:?}: soak site still holds {} B / {} blocks: {}",
            row.size_bytes, row.count, row.traceback[0]
        );
    }
    memory::stop();
    let heap_after = memory::totals().current_bytes;
    // What remains is this thread's own bookkeeping (channels are gone, threads joined).
    assert!(
        heap_after < heap_before + 256 * 1024,
        "{mode:?}: heap {heap_before} → {heap_after}"
    );
    let t = memory::totals();
    assert!(t.peak_bytes >= t.current_bytes);
}

#[test]
fn soak_exact() {
    soak(Mode::Exact);
}

#[test]
fn soak_sampled() {
    soak(Mode::Sampled);
}
