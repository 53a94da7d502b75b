//! The always-on totals with the tracker as this process's global allocator, across
//! threads: each thread counts in a slot of its own, slots are handed on when threads
//! exit, threads beyond the slots share one, and the sums stay exact through all of it.
//! The peak, checked per thread every 64 KiB of growth, still sees a high built on
//! several threads at once.
//!
//! Tests in this file share the global counters, so each takes `SERIAL` first.

use std::hint::black_box;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

use heapwatch_tracker::{self as memory, Totals};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

#[path = "support/serial.rs"]
mod serial;
use serial::{in_quiet_window, serial};

/// More threads at once than the tracker has slots of its own (64).
const THREADS: usize = 100;
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The tracker's peak-check step.
const STEP: u64 = 64 * KIB as u64;

/// Bytes thread `i` allocates and hands back: all different, none a round number.
fn size_of(i: usize) -> usize {
    1000 + 37 * i
}

/// One wave: `THREADS` threads alive at once, each allocating one block the main thread
/// frees; then every thread exits. Checks the totals while the blocks are held and after.
fn wave() -> Result<(), String> {
    let t0 = memory::totals();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                // All alive at once: 36 of them find no free slot and share one.
                barrier.wait();
                black_box(vec![7u8; size_of(i)])
            })
        })
        .collect();
    drop(barrier);
    let blocks: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let held = memory::totals();
    let want_bytes: u64 = (0..THREADS).map(|i| size_of(i) as u64).sum::<u64>()
        + (THREADS * std::mem::size_of::<Vec<u8>>()) as u64;
    // The blocks plus the Vec holding them.
    let got = (
        held.current_bytes.wrapping_sub(t0.current_bytes),
        held.live_blocks.wrapping_sub(t0.live_blocks),
    );
    let want = (want_bytes, THREADS as u64 + 1);
    drop(black_box(blocks));
    let after = memory::totals();
    let back = (after.current_bytes, after.live_blocks);
    if got != want {
        return Err(format!("held: got {got:?}, want {want:?}"));
    }
    if back != (t0.current_bytes, t0.live_blocks) {
        return Err(format!(
            "after: got {back:?}, want {:?}",
            (t0.current_bytes, t0.live_blocks)
        ));
    }
    if after.total_allocations < t0.total_allocations + THREADS as u64 + 1 {
        return Err(format!("total allocations: {t0:?} -> {after:?}"));
    }
    Ok(())
}

#[test]
fn totals_stay_exact_across_thread_exits_slot_reuse_and_the_shared_slot() {
    let _serial = serial();
    // Several waves: later waves take the slots earlier threads gave back on exit.
    for _ in 0..4 {
        in_quiet_window(wave);
    }
}

#[test]
fn blocks_freed_on_another_thread_leave_the_totals_exact() {
    let _serial = serial();
    in_quiet_window(|| {
        let t0 = memory::totals();
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(0);
        let producer = thread::spawn(move || {
            for i in 0..1000 {
                tx.send(black_box(vec![1u8; 100 + i]))
                    .expect("consumer alive");
            }
        });
        let consumer = thread::spawn(move || {
            let mut n = 0u64;
            for block in rx {
                n += block.len() as u64;
                drop(black_box(block));
            }
            n
        });
        producer.join().expect("producer");
        let moved = consumer.join().expect("consumer");
        let t1 = memory::totals();
        let want: u64 = (0..1000).map(|i| 100 + i).sum();
        if moved != want {
            return Err(format!("moved {moved}, want {want}"));
        }
        if (t1.current_bytes, t1.live_blocks) != (t0.current_bytes, t0.live_blocks) {
            return Err(format!("{t0:?} -> {t1:?}"));
        }
        Ok(())
    });
}

/// Allocates `bytes` in 1 KiB blocks (without reading the totals). One box per block on
/// purpose: the high must be reached by many small allocations.
#[allow(clippy::vec_box)]
fn fill(bytes: usize) -> Vec<Box<[u8; KIB]>> {
    let mut v = Vec::with_capacity(bytes / KIB);
    for _ in 0..bytes / KIB {
        v.push(black_box(Box::new([3u8; KIB])));
    }
    v
}

fn peak_check() -> Result<(), String> {
    let start: Totals = memory::reset_peak();
    // Thread A fills 8 MiB and frees it (its mark is now far above its bytes unless the
    // free lowered it); thread B fills 8 MiB and holds it; then A fills 8 MiB again, in
    // small blocks, and holds it. The high, ~16 MiB above the start, is reached by A's
    // small allocations only and is never read while it stands.
    let (a_go, a_wait) = mpsc::channel::<()>();
    let (b_go, b_wait) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<&'static str>();
    let a_done = done_tx.clone();
    let a = thread::spawn(move || {
        drop(black_box(fill(8 * MIB)));
        a_done.send("a freed").expect("main");
        a_wait.recv().expect("main");
        let held = fill(8 * MIB);
        a_done.send("a holds").expect("main");
        a_wait.recv().expect("main");
        drop(black_box(held));
    });
    let b = thread::spawn(move || {
        b_wait.recv().expect("main");
        let held = fill(8 * MIB);
        done_tx.send("b holds").expect("main");
        b_wait.recv().expect("main");
        drop(black_box(held));
    });
    let step = |want: &str| {
        let got = done_rx.recv().expect("worker");
        assert_eq!(got, want);
    };
    step("a freed");
    b_go.send(()).expect("b");
    step("b holds");
    a_go.send(()).expect("a");
    step("a holds");
    a_go.send(()).expect("a");
    b_go.send(()).expect("b");
    a.join().expect("a");
    b.join().expect("b");
    let end = memory::totals();
    // The blocks alone: 16 MiB. Each of the two threads may have grown by less than one
    // step since its last check; the two Vecs of pointers add 2 × 64 KiB at the high.
    let low = start.current_bytes + 16 * MIB as u64 - 2 * STEP;
    let high = start.current_bytes + 16 * MIB as u64 + 2 * 64 * KIB as u64 + MIB as u64;
    if (low..=high).contains(&end.peak_bytes) {
        Ok(())
    } else {
        Err(format!(
            "peak {} not in {low}..={high} (start {start:?}, end {end:?})",
            end.peak_bytes
        ))
    }
}

#[test]
fn peak_sees_a_high_built_on_two_threads_from_small_blocks() {
    let _serial = serial();
    in_quiet_window(peak_check);
}
