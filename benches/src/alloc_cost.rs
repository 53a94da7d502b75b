//! The allocation workload of the allocator-cost benchmark, identical in every allocator
//! binary so the only difference between processes is the `#[global_allocator]`.
//!
//! Each measuring thread first descends [`DEPTH`] non-inlined frames (allocation stacks of
//! realistic depth: the stack walk of a tracker pays per frame), fills a ring of
//! [`RING`] live blocks, then replaces one ring slot per operation: one allocation of the
//! block size and one free of the block it replaces. The reported figure is the thread's
//! CPU time per alloc+free pair (`CLOCK_THREAD_CPUTIME_ID`: time the thread spent
//! descheduled while other work ran on this shared machine does not count); with 2
//! threads both run at once (contention on allocator locks and cache lines shows up there
//! as CPU time, spinning included).
//!
//! Command line (what `driver` passes): `<config> <sizes> <threads> <millis>`, e.g.
//! `exact 16,64,4096,65536 1,2 200`. `config` is only read by the binary's setup hook.
//! Output: one line per case, `size threads cpu_ns wall_ns process_ns` per pair (wall: each
//! measuring thread's own elapsed time over its loop, averaged like the CPU time; with 2
//! threads on 2 shared cores, waiting on a lock shows as wall time above CPU time;
//! process: the CPU time of the whole process over the measured phase, helper threads of
//! a profiler included, per pair of all measuring threads), then `depth D` (the frames on
//! the stack of the function that allocates, itself included, down to the thread's start:
//! what a full stack walk sees) and `pairs P` (alloc+free pairs the process did in all,
//! calibration included, for whoever counts CPU time from outside).

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Frames the workload descends before allocating. With the thread's own start-up
/// frames below it, the allocator sees stacks of about 25 frames.
pub const DEPTH: usize = 20;

/// Live blocks each thread keeps: a free is of a block allocated `RING` operations
/// earlier, not the one just allocated, so exact tracking works on a non-empty table and
/// malloc cannot hand back the same chunk every time.
pub const RING: usize = 128;

/// One measurement: block size and thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub size: usize,
    pub threads: usize,
}

/// Descends `n` frames, then runs `work` at the bottom.
#[inline(never)]
fn descend(n: usize, work: &mut dyn FnMut()) -> usize {
    if black_box(n) == 0 {
        work();
        0
    } else {
        // Using the result after the call keeps this from becoming a tail call (which
        // would reuse the frame and flatten the stack).
        black_box(descend(n - 1, work)) + 1
    }
}

/// Time one thread took: its own CPU time and the wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
struct Took {
    cpu: Duration,
    wall: Duration,
}

/// Pairs done by this process so far (calibration included).
static PAIRS: AtomicU64 = AtomicU64::new(0);
/// Frames seen at the allocating function by the last [`churn`] (see [`frame_depth`]).
static DEPTH_SEEN: AtomicUsize = AtomicUsize::new(0);

/// `ops` alloc+free pairs of `size` bytes on a ring of live blocks; returns the time.
#[inline(never)]
fn churn(size: usize, ops: u64, start: Option<&Barrier>) -> Took {
    DEPTH_SEEN.store(frame_depth(), Relaxed);
    PAIRS.fetch_add(ops + RING as u64, Relaxed);
    let mut ring: Vec<Vec<u8>> = (0..RING).map(|_| Vec::with_capacity(size)).collect();
    if let Some(b) = start {
        b.wait();
    }
    let t = thread_cpu_time();
    let wall = Instant::now();
    let mut slot = 0;
    for _ in 0..ops {
        // black_box: the compiler may otherwise pair the allocation with its free and
        // remove both.
        let block = black_box(Vec::<u8>::with_capacity(size));
        // The assignment frees the block this slot held.
        ring[slot] = block;
        slot += 1;
        if slot == RING {
            slot = 0;
        }
    }
    let took = Took {
        cpu: thread_cpu_time().saturating_sub(t),
        wall: wall.elapsed(),
    };
    black_box(&ring);
    took
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time the whole process has used (every thread).
fn process_cpu_time() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

#[allow(unsafe_code)]
fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local;
    // the thread and process CPU clocks are supported on every Linux this runs on.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock})");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Frames on the stack of the caller (itself included), found by following frame
/// pointers to the outermost frame (the thread's start zeroes the frame pointer; these
/// binaries are built with frame pointers). 0 where that cannot be done.
#[inline(never)]
#[allow(unsafe_code)]
fn frame_depth() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut fp: usize;
        // SAFETY: copies a register; touches no memory, stack or flags.
        unsafe {
            std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        }
        let mut depth = 0usize;
        while fp != 0 && fp.is_multiple_of(8) && depth < 1000 {
            // SAFETY: fp is a frame record of this thread's own stack: the chain starts at
            // this function's frame and each link must point strictly upwards (checked
            // below); the outermost record's link is 0, which ends the walk.
            let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            if ret == 0 {
                break;
            }
            depth += 1;
            if next <= fp {
                break;
            }
            fp = next;
        }
        // Not counting frame_depth itself.
        depth.saturating_sub(1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// Runs `ops` pairs at depth on one thread.
fn churn_at_depth(size: usize, ops: u64, start: Option<&Barrier>) -> Took {
    let mut took = Took::default();
    descend(DEPTH, &mut || took = churn(size, ops, start));
    took
}

/// Nanoseconds per alloc+free pair for `case` (CPU time, wall time), measured for about
/// `target`.
///
/// Calibrates the operation count on one thread first (doubling until a run takes
/// 20 ms), then runs `case.threads` threads that start together and averages what each
/// measured.
pub fn measure(case: Case, target: Duration) -> (f64, f64, f64) {
    let mut ops = 1_000u64;
    let per_op = loop {
        let took = std::thread::scope(|s| {
            s.spawn(|| churn_at_depth(case.size, ops, None))
                .join()
                .expect("calibration thread")
                .cpu
        });
        if took >= Duration::from_millis(20) || ops >= 1 << 30 {
            break took.as_secs_f64() / ops as f64;
        }
        ops *= 2;
    };
    let ops = ((target.as_secs_f64() / per_op) as u64).max(1_000);
    let barrier = Barrier::new(case.threads);
    let process = process_cpu_time();
    let times: Vec<Took> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..case.threads)
            .map(|_| s.spawn(|| churn_at_depth(case.size, ops, Some(&barrier))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("measuring thread"))
            .collect()
    });
    let per_pair = |d: fn(&Took) -> Duration| {
        let total: f64 = times.iter().map(|t| d(t).as_secs_f64()).sum();
        total / times.len() as f64 / ops as f64 * 1e9
    };
    // Every thread's pairs: the process's CPU time is spent on all of them.
    let process = process_cpu_time().saturating_sub(process).as_secs_f64()
        / (ops * case.threads as u64) as f64
        * 1e9;
    (per_pair(|t| t.cpu), per_pair(|t| t.wall), process)
}

/// Parsed command line of an allocator binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub cases: Vec<Case>,
    pub target: Duration,
}

/// Parses `<config> <sizes> <threads> <millis>`.
///
/// # Errors
/// A message naming the bad argument.
pub fn parse_args(args: &[String]) -> Result<Args, String> {
    let [config, sizes, threads, millis] = args else {
        return Err(format!(
            "usage: <config> <sizes,...> <threads,...> <millis> (got {} arguments)",
            args.len()
        ));
    };
    let list = |what: &str, s: &str| -> Result<Vec<usize>, String> {
        s.split(',')
            .map(|x| {
                x.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{what}: {x:?} is not a positive integer"))
            })
            .collect()
    };
    let sizes = list("sizes", sizes)?;
    let threads = list("threads", threads)?;
    let millis: u64 = millis
        .parse()
        .map_err(|_| format!("millis: {millis:?} is not an integer"))?;
    let cases = sizes
        .iter()
        .flat_map(|&size| threads.iter().map(move |&threads| Case { size, threads }))
        .collect();
    Ok(Args {
        config: config.clone(),
        cases,
        target: Duration::from_millis(millis),
    })
}

/// The whole program of an allocator binary: parse the command line, let `setup` turn on
/// the allocator's mode for `config` (it returns a guard kept alive while measuring, and
/// an error for a config it does not know), measure every case, print the lines.
pub fn run_cli<G>(setup: impl FnOnce(&str) -> Result<G, String>) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let guard = match setup(&args.config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut lines = Vec::new();
    for case in &args.cases {
        let (cpu, wall, process) = measure(*case, args.target);
        lines.push(format!(
            "{} {} {cpu:.2} {wall:.2} {process:.2}",
            case.size, case.threads
        ));
    }
    lines.push(format!("depth {}", DEPTH_SEEN.load(Relaxed)));
    lines.push(format!("pairs {}", PAIRS.load(Relaxed)));
    drop(guard);
    for l in lines {
        println!("{l}");
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line() {
        let a: Vec<String> = ["exact", "16,64", "1,2", "50"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let args = parse_args(&a).unwrap();
        assert_eq!(args.config, "exact");
        assert_eq!(args.cases.len(), 4);
        assert_eq!(
            args.cases[1],
            Case {
                size: 16,
                threads: 2
            }
        );
        assert_eq!(args.target, Duration::from_millis(50));
        assert!(parse_args(&a[..3]).is_err());
        let bad: Vec<String> = ["x", "16,0", "1", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(parse_args(&bad).unwrap_err().contains("sizes"));
    }

    #[test]
    fn measures_something_positive() {
        let (cpu, wall, _) = measure(
            Case {
                size: 64,
                threads: 1,
            },
            Duration::from_millis(5),
        );
        assert!(cpu > 0.0 && cpu < 1e6, "{cpu}");
        assert!(wall > 0.0 && wall < 1e6, "{wall}");
    }
}
