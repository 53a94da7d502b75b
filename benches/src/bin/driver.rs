//! The benchmark driver: runs every measurement interleaved and repeated, prints progress
//! on stderr, and writes medians and side-by-side ratios into BENCHMARKS.md between the
//! `<!-- results:begin -->` and `<!-- results:end -->` markers.
//!
//! Run it through `bash benches/run.sh` (which builds the add-on and the bench binaries
//! first). Options: `--quick` (fewer repetitions, for trying things out), `--only
//! alloc,load,snapshot,accuracy,size` (a subset), `--no-write` (print, leave BENCHMARKS.md
//! alone), `--addon PATH` (load another build of the add-on, e.g. to try a change).
//!
//! Why interleaved: absolute times drift on a shared machine (other processes, CPU
//! frequency), so each repetition runs every configuration once, in a rotated order, and
//! ratios are formed within a repetition before taking their median.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use heapwatch_bench::load::{self, Plan, RunResult, Tracking};
use heapwatch_bench::stats::{median, percentile, range};

const BEGIN: &str = "<!-- results:begin -->";
const END: &str = "<!-- results:end -->";

const SIZES: [usize; 4] = [16, 64, 4096, 65536];
const THREADS: [usize; 2] = [1, 2];

/// One allocator process to run: a label, the binary and its config argument, an
/// environment variable to set, and whether to run it under heaptrack.
#[derive(Clone, Copy)]
struct AllocConfig {
    label: &'static str,
    bin: &'static str,
    config: &'static str,
    env: Option<(&'static str, &'static str)>,
    heaptrack: bool,
}

const fn cfg(label: &'static str, bin: &'static str, config: &'static str) -> AllocConfig {
    AllocConfig {
        label,
        bin,
        config,
        env: None,
        heaptrack: false,
    }
}

/// Every allocator configuration, heapwatch's and its peers', run interleaved.
const ALLOC_CONFIGS: [AllocConfig; 11] = [
    cfg("system", "alloc_system", "system"),
    cfg("off", "alloc_tracker", "off"),
    cfg("sampled 512 KiB", "alloc_tracker", "sampled512k"),
    cfg("sampled 64 KiB", "alloc_tracker", "sampled64k"),
    cfg("exact, 32 frames", "alloc_tracker", "exact"),
    cfg("dhat-rs, 10 frames", "alloc_dhat", "dhat"),
    cfg("dhat-rs, 32 frames", "alloc_dhat", "dhat32"),
    cfg("jemalloc", "alloc_jemalloc", "jemalloc"),
    AllocConfig {
        env: Some(("_RJEM_MALLOC_CONF", "")),
        ..cfg(
            "jemalloc, profiling built in, off",
            "alloc_jemalloc_prof",
            "off",
        )
    },
    AllocConfig {
        env: Some((
            "_RJEM_MALLOC_CONF",
            "prof:true,prof_active:true,lg_prof_sample:19",
        )),
        ..cfg(
            "jemalloc, profiling at 512 KiB",
            "alloc_jemalloc_prof",
            "prof512k",
        )
    },
    AllocConfig {
        heaptrack: true,
        ..cfg("heaptrack (System)", "alloc_system", "system")
    },
];

struct Opts {
    quick: bool,
    /// The add-on binary to load (default: the repository's release build).
    addon: Option<PathBuf>,
    only: Vec<String>,
    write: bool,
    alloc_reps: usize,
    case_ms: u64,
    load_reps: usize,
    snapshot_reps: usize,
    accuracy_runs: usize,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut o = Opts {
            quick: false,
            addon: None,
            only: Vec::new(),
            write: true,
            alloc_reps: 7,
            case_ms: 150,
            load_reps: 5,
            snapshot_reps: 3,
            accuracy_runs: 100,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => {
                    o.quick = true;
                    o.alloc_reps = 3;
                    o.case_ms = 60;
                    o.load_reps = 2;
                    o.snapshot_reps = 1;
                    o.accuracy_runs = 20;
                }
                "--only" => {
                    let list = args.next().ok_or("--only needs a list")?;
                    o.only = list.split(',').map(str::to_owned).collect();
                }
                "--no-write" => o.write = false,
                "--addon" => o.addon = Some(args.next().ok_or("--addon needs a path")?.into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }

    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// The repository root (this package lives in `benches/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// Where the bench binaries are: next to this driver.
fn bench_bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .expect("own path")
        .with_file_name(name)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb as f64 / 1048576.0));
    format!(
        "{cpu}, {cores} cores, {mem} RAM; {}; {}",
        sh("uname", &["-srm"]),
        sh("rustc", &["-V"])
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

/// Per pair, in nanoseconds: the measuring thread's CPU time, its wall time, and the
/// CPU time of its whole process.
#[derive(Clone, Copy, Default)]
struct PerPair {
    cpu: f64,
    wall: f64,
    process: f64,
}

/// What one allocator process reported.
#[derive(Default)]
struct AllocRun {
    cases: HashMap<(usize, usize), PerPair>,
    /// Frames on the stack at the allocating function (see `alloc_cost`).
    depth: usize,
    /// CPU time of everything the run started (heaptrack: its recorder and interpreter
    /// processes too), per pair the process did (calibration included).
    tree_cpu_per_pair: f64,
}

/// CPU time of the children this process has waited for, in seconds.
#[allow(unsafe_code)]
fn children_cpu() -> f64 {
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs one allocator process (under heaptrack if the config says so, in a scratch
/// directory whose recording is removed afterwards).
fn run_alloc(c: &AllocConfig, case_ms: u64) -> Result<AllocRun, String> {
    let join = |xs: &[usize]| {
        xs.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let args = [
        c.config.to_owned(),
        join(&SIZES),
        join(&THREADS),
        case_ms.to_string(),
    ];
    let scratch = std::env::temp_dir().join(format!("heapwatch-bench-{}", std::process::id()));
    let mut cmd = if c.heaptrack {
        std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let mut cmd = Command::new("heaptrack");
        cmd.arg("-o")
            .arg(scratch.join("heaptrack.%p"))
            .arg(bench_bin(c.bin))
            .args(&args)
            .current_dir(&scratch);
        cmd
    } else {
        let mut cmd = Command::new(bench_bin(c.bin));
        cmd.args(&args);
        cmd
    };
    if let Some((k, v)) = c.env {
        cmd.env(k, v);
    }
    let before = children_cpu();
    let out = cmd
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{} ({}): {e}", c.bin, c.label))?;
    let tree_cpu = children_cpu() - before;
    if c.heaptrack {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    if !out.status.success() {
        return Err(format!("{} {} failed: {}", c.bin, c.config, out.status));
    }
    let mut run = AllocRun::default();
    let mut pairs = 0u64;
    // Lines of the workload; heaptrack prints lines of its own in between.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["depth", d] => run.depth = d.parse().map_err(|_| line.to_owned())?,
            ["pairs", p] => pairs = p.parse().map_err(|_| line.to_owned())?,
            [s, t, cpu, wall, process] => {
                let (Ok(s), Ok(t)) = (s.parse(), t.parse()) else {
                    continue;
                };
                let num = |x: &str| x.parse::<f64>().map_err(|_| line.to_owned());
                run.cases.insert(
                    (s, t),
                    PerPair {
                        cpu: num(cpu)?,
                        wall: num(wall)?,
                        process: num(process)?,
                    },
                );
            }
            _ => {}
        }
    }
    if run.cases.len() != SIZES.len() * THREADS.len() {
        return Err(format!("{} {}: missing cases", c.bin, c.config));
    }
    run.tree_cpu_per_pair = tree_cpu / pairs.max(1) as f64 * 1e9;
    Ok(run)
}

fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Probability that a block of `size` bytes holds a sampling point at mean interval
/// `interval` (heapwatch's and jemalloc's Poisson sampling alike).
fn sample_probability(size: usize, interval: f64) -> f64 {
    -(-(size as f64) / interval).exp_m1()
}

/// Section 1: allocator cost, heapwatch's and its peers'.
fn alloc_section(o: &Opts, targets: &mut Vec<[String; 3]>) -> Result<String, String> {
    // per config label: one run per repetition
    let mut reps: HashMap<&str, Vec<AllocRun>> = HashMap::new();
    for rep in 0..o.alloc_reps {
        for i in 0..ALLOC_CONFIGS.len() {
            let c = &ALLOC_CONFIGS[(i + rep) % ALLOC_CONFIGS.len()];
            eprintln!("alloc rep {}/{}: {}", rep + 1, o.alloc_reps, c.label);
            let run = run_alloc(c, o.case_ms)?;
            reps.entry(c.label).or_default().push(run);
        }
    }
    let figure = |label: &str, case: (usize, usize), f: fn(&PerPair) -> f64| -> Vec<f64> {
        reps[label].iter().map(|r| f(&r.cases[&case])).collect()
    };
    let cpu = |label: &str, case| median(&figure(label, case, |p| p.cpu));
    let wall = |label: &str, case| median(&figure(label, case, |p| p.wall));
    // Within-repetition ratio and difference of `f` to `base`, then medians.
    let paired = |label: &str, base: &str, case, f: fn(&PerPair) -> f64| -> (f64, f64) {
        let a = figure(label, case, f);
        let b = figure(base, case, f);
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
        let diffs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        (median(&ratios), median(&diffs))
    };
    let depth = |label: &str| {
        median(
            &reps[label]
                .iter()
                .map(|r| r.depth as f64)
                .collect::<Vec<_>>(),
        )
    };
    let mut s = String::new();
    writeln!(
        s,
        "Nanoseconds of CPU time per alloc+free pair (the measuring thread's own clock), \
         median of {} interleaved runs; in brackets the median of the per-run ratio to \
         `System` and of the per-run difference. Each run is one process per allocator, {} ms \
         per case, a ring of {} live blocks per thread, allocations {} frames below the \
         thread's entry ({} frames on the stack at the allocating function, counted by \
         following frame pointers). With 2 threads both run at once; the figure is per \
         thread.\n",
        o.alloc_reps,
        o.case_ms,
        heapwatch_bench::alloc_cost::RING,
        heapwatch_bench::alloc_cost::DEPTH,
        depth("system"),
    )
    .unwrap();
    const OURS: [&str; 7] = [
        "system",
        "off",
        "sampled 512 KiB",
        "sampled 64 KiB",
        "exact, 32 frames",
        "dhat-rs, 10 frames",
        "dhat-rs, 32 frames",
    ];
    s.push_str("| block | threads |");
    for label in OURS {
        write!(s, " {label} |").unwrap();
    }
    s.push_str(" dhat-rs 32 frames ÷ exact |\n|---|---|");
    for _ in 0..=OURS.len() {
        s.push_str("---|");
    }
    s.push('\n');
    let mut off_diff = Vec::new();
    let mut small_diff = Vec::new();
    let mut big_diff = Vec::new();
    let mut exact_ns = Vec::new();
    let mut dhat_over_exact = Vec::new();
    for &size in &SIZES {
        for &threads in &THREADS {
            let case = (size, threads);
            write!(
                s,
                "| {} | {threads} | {:.1} |",
                size_label(size),
                cpu("system", case)
            )
            .unwrap();
            for label in &OURS[1..] {
                let ns = cpu(label, case);
                let (ratio, diff) = paired(label, "system", case, |p| p.cpu);
                write!(s, " {ns:.1} ({ratio:.2}×, {diff:+.1}) |").unwrap();
                match *label {
                    "off" => off_diff.push(diff),
                    "sampled 512 KiB" if size <= 64 => small_diff.push(diff),
                    "sampled 512 KiB" if size == 65536 => big_diff.push(diff),
                    "exact, 32 frames" => exact_ns.push(ns),
                    _ => {}
                }
            }
            let (d_over_e, _) = paired("dhat-rs, 32 frames", "exact, 32 frames", case, |p| p.cpu);
            dhat_over_exact.push(d_over_e);
            writeln!(s, " {d_over_e:.0}× |").unwrap();
        }
    }

    // Wall time: waiting (on a lock, for a core) shows here and not in CPU time.
    writeln!(
        s,
        "\nWall-clock time per pair (each measuring thread's own elapsed time over its loop), \
         same runs, medians; for 2 threads, in brackets, the median per-run ratio to the \
         1-thread figure of the same process. Two threads on the 2 cores share them with \
         anything else running, so wall time is noisier than CPU time.\n"
    )
    .unwrap();
    let walled = ["system", "off", "sampled 512 KiB", "exact, 32 frames"];
    s.push_str("| block | threads |");
    for label in walled {
        write!(s, " {label} |").unwrap();
    }
    s.push_str("\n|---|---|");
    for _ in walled {
        s.push_str("---|");
    }
    s.push('\n');
    let mut exact_wall_ratio = Vec::new();
    let mut exact2_cpu = Vec::new();
    for &size in &SIZES {
        for &threads in &THREADS {
            write!(s, "| {} | {threads} |", size_label(size)).unwrap();
            for label in walled {
                let w = wall(label, (size, threads));
                if threads == 1 {
                    write!(s, " {w:.1} |").unwrap();
                    continue;
                }
                let ratios: Vec<f64> = reps[label]
                    .iter()
                    .map(|r| r.cases[&(size, 2)].wall / r.cases[&(size, 1)].wall)
                    .collect();
                let ratio = median(&ratios);
                write!(s, " {w:.1} ({ratio:.2}×) |").unwrap();
                if label == "exact, 32 frames" {
                    exact_wall_ratio.push(ratio);
                    exact2_cpu.push(cpu(label, (size, 2)));
                }
            }
            s.push('\n');
        }
    }

    // The peers, each against its own baseline allocator.
    writeln!(
        s,
        "\nThe peers, same runs, each against its own baseline allocator: jemalloc 5.3 \
         (`tikv-jemallocator` 0.6) plain, with profiling built in but off, and profiling at a \
         sample every 512 KiB (`prof:true,prof_active:true,lg_prof_sample:19`), against plain \
         jemalloc; heaptrack (LD_PRELOAD on the `System` binary, every allocation) and \
         heapwatch against `System`. CPU time per pair (the measuring thread's), then wall \
         time; for heaptrack also its process's CPU time per pair over the measured phase \
         (every thread of the program), and its whole run: the CPU time of everything it \
         started (the program, the `heaptrack_interpret` process and compression) over every \
         pair the program did, start-up included.\n"
    )
    .unwrap();
    s.push_str(
        "| block | threads | jemalloc | jemalloc, prof. off | jemalloc, prof. 512 KiB | \
         heapwatch sampled 512 KiB | heaptrack in-thread | heaptrack whole run | \
         heapwatch exact |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for &size in &SIZES {
        for &threads in &THREADS {
            let case = (size, threads);
            let vs = |label: &str, base: &str| {
                let (_, d) = paired(label, base, case, |p| p.cpu);
                let (_, dw) = paired(label, base, case, |p| p.wall);
                format!(
                    "{:.1} ({d:+.1}); wall {:.1} ({dw:+.1})",
                    cpu(label, case),
                    wall(label, case)
                )
            };
            let process = median(&figure("heaptrack (System)", case, |p| p.process));
            let tree = median(
                &reps["heaptrack (System)"]
                    .iter()
                    .map(|r| r.tree_cpu_per_pair)
                    .collect::<Vec<_>>(),
            );
            writeln!(
                s,
                "| {} | {threads} | {:.1}; wall {:.1} | {} | {} | {} | {}; process {process:.1} | {tree:.0} (all cases) | {} |",
                size_label(size),
                cpu("jemalloc", case),
                wall("jemalloc", case),
                vs("jemalloc, profiling built in, off", "jemalloc"),
                vs("jemalloc, profiling at 512 KiB", "jemalloc"),
                vs("sampled 512 KiB", "system"),
                vs("heaptrack (System)", "system"),
                vs("exact, 32 frames", "system"),
            )
            .unwrap();
        }
    }
    // One sample's cost: the extra cost of 64 KiB pairs over the unsampled configuration
    // of the same allocator, divided by the share of such blocks sampled.
    let p64 = sample_probability(65536, 512.0 * 1024.0);
    let per_sample = |label: &str, base: &str| paired(label, base, (65536, 1), |p| p.cpu).1 / p64;
    writeln!(
        s,
        "\nOne sample's cost (64 KiB blocks, 1 thread: the difference to the same allocator \
         unsampled, divided by the share of blocks sampled, 1 − e^(−64/512) = {:.1}%): \
         jemalloc's profiler {:.0} ns (against profiling built in but off), heapwatch {:.0} ns \
         (against tracking off).\n",
        p64 * 100.0,
        per_sample(
            "jemalloc, profiling at 512 KiB",
            "jemalloc, profiling built in, off"
        ),
        per_sample("sampled 512 KiB", "off"),
    )
    .unwrap();
    let d = depth("system");
    writeln!(
        s,
        "Depth each stack walk saw: the allocating function has {d:.0} frames on the stack \
         (down to the thread's start). heapwatch keeps up to 32 frames below its own (here \
         all {d:.0}); dhat-rs stops after 10 or 32 frames, its own included (10, or all); \
         jemalloc's profiler (libgcc's unwinder, up to 128) and heaptrack (libunwind) walk \
         the whole stack, {d:.0} frames and the allocator's own above them.\n"
    )
    .unwrap();

    let verdict = |ok: usize, n: usize| {
        if ok == n {
            "met".to_string()
        } else {
            format!("missed in {} of {n} cases", n - ok)
        }
    };
    let mut target =
        |what: &str, values: &[f64], unit: &dyn Fn(f64) -> String, ok: &dyn Fn(f64) -> bool| {
            let (lo, hi) = range(values);
            targets.push([
                what.into(),
                format!("{} … {}", unit(lo), unit(hi)),
                verdict(values.iter().filter(|&&v| ok(v)).count(), values.len()),
            ]);
        };
    let ns = |v: f64| format!("{v:+.1} ns");
    target("tracking off: ≤ +1 ns per pair", &off_diff, &ns, &|d| {
        d <= 1.0
    });
    target(
        "sampled 512 KiB, 16 and 64 B blocks: ≤ +1.5 ns per pair",
        &small_diff,
        &ns,
        &|d| d <= 1.5,
    );
    target(
        "sampled 512 KiB, 64 KiB blocks: ≤ +15 ns per pair",
        &big_diff,
        &ns,
        &|d| d <= 15.0,
    );
    target(
        "exact, 2 threads: wall time per pair ≤ 1.25× 1 thread's",
        &exact_wall_ratio,
        &|v| format!("{v:.2}×"),
        &|r| r <= 1.25,
    );
    target(
        "exact, 2 threads: CPU time ≤ 150 ns per pair",
        &exact2_cpu,
        &|v| format!("{v:.0} ns"),
        &|v| v <= 150.0,
    );
    target(
        "exact (32 frames): ≤ 150 ns per pair",
        &exact_ns,
        &|v| format!("{v:.0} ns"),
        &|v| v <= 150.0,
    );
    target(
        "exact ≥ 30× faster than dhat-rs at the same depth (32 frames)",
        &dhat_over_exact,
        &|v| format!("{v:.0}×"),
        &|v| v >= 30.0,
    );
    Ok(s)
}

/// Section 2 (and the idle RSS of section 4): the add-on under load.
fn load_section(o: &Opts, targets: &mut Vec<[String; 3]>) -> Result<String, String> {
    let bin = o.addon.clone().unwrap_or_else(shipped_binary);
    if !bin.exists() {
        return Err(format!(
            "{} is missing: bash .ci/build-static",
            bin.display()
        ));
    }
    let plan = Plan {
        ws_sockets: 32,
        http_conns: 4,
        idle_wait: Duration::from_secs(2),
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(if o.quick { 2 } else { 4 }),
        snapshot_phase: Duration::from_secs(3),
        snapshot_every: Duration::from_millis(250),
    };
    let mut runs: HashMap<&str, Vec<RunResult>> = HashMap::new();
    for rep in 0..o.load_reps {
        for i in 0..Tracking::ALL.len() {
            let t = Tracking::ALL[(i + rep) % Tracking::ALL.len()];
            eprintln!(
                "load rep {}/{}: tracking {}",
                rep + 1,
                o.load_reps,
                t.name()
            );
            let r = load::run(&bin, t, &plan, rep * 3 + i)?;
            eprintln!(
                "  ws {:.0}/s p99 {:.0} µs, http {:.0}/s, server CPU {:.1} µs and {:.0} \
                 allocations per request, idle RSS {}",
                r.ws_ops_per_s,
                percentile(&r.ws_latency_us, 99.0),
                r.http_ops_per_s,
                r.server_cpu_us_per_request,
                r.allocations_per_request,
                mib(r.idle_rss as f64)
            );
            runs.entry(t.name()).or_default().push(r);
        }
    }
    let per_run = |mode: &str, f: &dyn Fn(&RunResult) -> f64| -> Vec<f64> {
        runs[mode].iter().map(f).collect()
    };
    let ratio_to_off = |mode: &str, f: &dyn Fn(&RunResult) -> f64| -> f64 {
        let a = per_run(mode, f);
        let b = per_run("off", f);
        median(&a.iter().zip(&b).map(|(x, y)| x / y).collect::<Vec<_>>())
    };
    let total = |r: &RunResult| r.ws_ops_per_s + r.http_ops_per_s;
    let mut s = String::new();
    writeln!(
        s,
        "The release binary on loopback, {} WebSocket sockets (alternating `ping` and \
         `system/info`) and {} keep-alive HTTP connections (`GET /healthz`), one request in \
         flight on each (closed loop), {} s warm-up then {} s measured; the client runs on one \
         thread of the same machine. Modes interleaved, {} repetitions; medians of per-run \
         figures, ratios formed within a repetition. Tracking modes use the add-on's \
         defaults (32 frames; sampled at 512 KiB).\n",
        plan.ws_sockets,
        plan.http_conns,
        plan.warmup.as_secs(),
        plan.measure.as_secs(),
        o.load_reps
    )
    .unwrap();
    s.push_str(
        "| tracking | requests/s (WS + HTTP) | ratio to off | WS p50 | WS p99 | HTTP p99 |\n\
         |---|---|---|---|---|---|\n",
    );
    for t in Tracking::ALL {
        let m = t.name();
        writeln!(
            s,
            "| {m} | {:.0} | {:.3} | {:.0} µs | {:.0} µs | {:.0} µs |",
            median(&per_run(m, &total)),
            ratio_to_off(m, &total),
            median(&per_run(m, &|r| percentile(&r.ws_latency_us, 50.0))),
            median(&per_run(m, &|r| percentile(&r.ws_latency_us, 99.0))),
            median(&per_run(m, &|r| percentile(&r.http_latency_us, 99.0))),
        )
        .unwrap();
    }
    s.push_str(
        "\nWhere the time goes, and memory. Server CPU is user + system time of the add-on's \
         process over the measured phase (/proc/PID/stat), divided by the requests served; \
         allocations are the add-on's own `total_allocations` counter over the same phase \
         (read with `debug/memory_reset_peak`, which does not turn tracking on). Tracker \
         cost per allocation = (CPU per request − CPU per request with tracking off) ÷ \
         allocations per request, paired within a repetition.\n\n\
         | tracking | server CPU per request | ratio to off | allocations per request | \
         tracker cost per allocation | idle RSS | RSS after load | RSS after snapshots |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let cpu = |r: &RunResult| r.server_cpu_us_per_request;
    for t in Tracking::ALL {
        let m = t.name();
        let per_alloc: Vec<f64> = runs[m]
            .iter()
            .zip(&runs["off"])
            .map(|(r, off)| (cpu(r) - cpu(off)) * 1e3 / r.allocations_per_request)
            .collect();
        writeln!(
            s,
            "| {m} | {:.1} µs | {:.2} | {:.0} | {} | {} | {} | {} |",
            median(&per_run(m, &cpu)),
            ratio_to_off(m, &cpu),
            median(&per_run(m, &|r| r.allocations_per_request)),
            if t == Tracking::Off {
                "–".to_string()
            } else {
                format!("{:.0} ns", median(&per_alloc))
            },
            mib(median(&per_run(m, &|r| r.idle_rss as f64))),
            mib(median(&per_run(m, &|r| r.rss_after_load as f64))),
            if t == Tracking::Off {
                "–".to_string()
            } else {
                mib(median(&per_run(m, &|r| r.rss_at_end as f64)))
            },
        )
        .unwrap();
    }
    writeln!(
        s,
        "\nSnapshot latency under the same load (`debug/memory_snapshot`, top 25, every {} ms \
         for {} s while the load runs; all snapshots of all repetitions pooled):\n",
        plan.snapshot_every.as_millis(),
        plan.snapshot_phase.as_secs()
    )
    .unwrap();
    s.push_str(
        "| tracking | snapshots | median | p90 | max | WS requests/s meanwhile (÷ measured phase) |\n\
         |---|---|---|---|---|---|\n",
    );
    for t in [Tracking::Sampled, Tracking::Exact] {
        let m = t.name();
        let all: Vec<f64> = runs[m]
            .iter()
            .flat_map(|r| r.snapshot_ms.iter().copied())
            .collect();
        let during = median(&per_run(m, &|r| {
            r.ws_ops_per_s_during_snapshots / r.ws_ops_per_s
        }));
        writeln!(
            s,
            "| {m} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ({:.2}) |",
            all.len(),
            median(&all),
            percentile(&all, 90.0),
            range(&all).1,
            median(&per_run(m, &|r| r.ws_ops_per_s_during_snapshots)),
            during
        )
        .unwrap();
    }
    let sampled = ratio_to_off("sampled", &total);
    let exact = ratio_to_off("exact", &total);
    targets.push([
        "add-on throughput, sampled ≥ 0.97× of off".into(),
        format!("{sampled:.3}×"),
        if sampled >= 0.97 { "met" } else { "missed" }.into(),
    ]);
    targets.push([
        "add-on throughput, exact ≥ 0.75× of off".into(),
        format!("{exact:.3}×"),
        if exact >= 0.75 { "met" } else { "missed" }.into(),
    ]);
    let idle_off = median(&per_run("off", &|r| r.idle_rss as f64));
    let idle_sampled = median(&per_run("sampled", &|r| r.idle_rss as f64));
    targets.push([
        "idle RSS, tracking off ≤ 15 MiB".into(),
        mib(idle_off),
        if idle_off <= 15.0 * 1048576.0 {
            "met"
        } else {
            "missed"
        }
        .into(),
    ]);
    targets.push([
        "idle RSS, sampled ≤ 20 MiB".into(),
        mib(idle_sampled),
        if idle_sampled <= 20.0 * 1048576.0 {
            "met"
        } else {
            "missed"
        }
        .into(),
    ]);
    Ok(s)
}

/// `key value` lines of a bench binary.
fn run_kv(bin: &str, args: &[&str]) -> Result<HashMap<String, String>, String> {
    let out = Command::new(bench_bin(bin))
        .args(args)
        .output()
        .map_err(|e| format!("{bin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{bin} failed: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Section 3 (and metadata per block of section 4): snapshot cost at scale.
fn snapshot_section(o: &Opts, targets: &mut Vec<[String; 3]>) -> Result<String, String> {
    let mut reps = Vec::new();
    for rep in 0..o.snapshot_reps {
        eprintln!("snapshot rep {}/{}", rep + 1, o.snapshot_reps);
        reps.push(run_kv("snapshot_cost", &["1000000", "10000", "5"])?);
    }
    let num = |k: &str| -> f64 {
        median(
            &reps
                .iter()
                .map(|m| m.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        )
    };
    let mut s = String::new();
    writeln!(
        s,
        "Exact mode, 32 frames: {:.0} live tracked blocks of 32 B over {:.0} distinct stacks \
         (generated code, about 11,000 distinct return addresses, stacks about 25 frames \
         deep). Time for `take_snapshot()` plus `statistics(GroupBy::Site, 25)` (symbolized \
         top 25), median of {} processes; warm = median of 5 repeats after the first. Extra \
         memory = peak of the allocator's own counter (Rust heap) and of VmHWM (RSS, includes \
         mapped debug info) above their values before the snapshot.\n",
        num("blocks"),
        num("stacks"),
        o.snapshot_reps
    )
    .unwrap();
    s.push_str(
        "| snapshot | take_snapshot | statistics (symbolize + group, top 25) | total | \
         extra heap (peak) | extra RSS (peak) |\n|---|---|---|---|---|---|\n",
    );
    for (label, p) in [("cold (first)", "cold"), ("warm (repeated)", "warm")] {
        writeln!(
            s,
            "| {label} | {:.2} ms | {:.1} ms | {:.1} ms | {} | {} |",
            num(&format!("{p}_snapshot_ms")),
            num(&format!("{p}_statistics_ms")),
            num(&format!("{p}_total_ms")),
            mib(num(&format!("{p}_heap_extra_bytes"))),
            mib(num(&format!("{p}_rss_extra_bytes"))),
        )
        .unwrap();
    }
    writeln!(
        s,
        "\nGrouped by whole traceback instead (10,000 groups, warm): {:.1} ms. Filling the \
         million blocks took {:.0} ms. Tracker overhead with the blocks live: {} in all \
         ({} with tracking on and nothing recorded), **{:.1} bytes of metadata per tracked \
         live block** (block table, stack table and filter together; {:.1} bytes marginal).",
        num("warm_traceback_total_ms"),
        num("fill_ms"),
        mib(num("overhead_bytes")),
        mib(num("overhead_empty_bytes")),
        num("metadata_bytes_per_block"),
        num("metadata_marginal_bytes_per_block"),
    )
    .unwrap();
    let cold = num("cold_total_ms");
    let warm = num("warm_total_ms");
    targets.push([
        "snapshot + symbolized top 25 at 1M blocks / 10k stacks: ≤ 100 ms".into(),
        format!("cold {cold:.0} ms, warm {warm:.0} ms"),
        match (cold <= 100.0, warm <= 100.0) {
            (true, true) => "met",
            (false, true) => "met warm, missed cold",
            _ => "missed",
        }
        .into(),
    ]);
    let per_block = num("metadata_bytes_per_block");
    targets.push([
        "metadata per tracked live block ≤ 32 B".into(),
        format!("{per_block:.1} B"),
        if per_block <= 32.0 { "met" } else { "missed" }.into(),
    ]);
    Ok(s)
}

/// Section 5: sampled-mode accuracy.
fn accuracy_section(o: &Opts, targets: &mut Vec<[String; 3]>) -> Result<String, String> {
    eprintln!("accuracy: {} runs per interval", o.accuracy_runs);
    let out = Command::new(bench_bin("sampling_accuracy"))
        .args([&o.accuracy_runs.to_string(), "524288,65536"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("sampling_accuracy failed: {}", out.status));
    }
    // (interval, truth) → relative errors
    let mut errs: Vec<((u64, u64), Vec<f64>)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [interval, truth, estimate] = v[..] else {
            continue;
        };
        let e = (estimate as f64 - truth as f64) / truth as f64;
        match errs.iter_mut().find(|(k, _)| *k == (interval, truth)) {
            Some((_, list)) => list.push(e),
            None => errs.push(((interval, truth), vec![e])),
        }
    }
    let mut s = String::new();
    writeln!(
        s,
        "{} independent sessions per interval; three sites hold 1, 10 and 100 MiB in blocks \
         of 16 B to 8 KiB (cycling). Relative error of each site's estimated bytes. Expected \
         spread for blocks much smaller than the interval R: σ ≈ √(R / site bytes).\n",
        o.accuracy_runs
    )
    .unwrap();
    s.push_str(
        "| interval | site | mean error (bias) | RMS error | median abs error | 90th pct abs \
         error | √(R/B) | runs with no sample |\n|---|---|---|---|---|---|---|---|\n",
    );
    for ((interval, truth), e) in &errs {
        let abs: Vec<f64> = e.iter().map(|x| x.abs()).collect();
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        let rms = (e.iter().map(|x| x * x).sum::<f64>() / e.len() as f64).sqrt();
        let zero = e.iter().filter(|&&x| x <= -0.999_999).count();
        writeln!(
            s,
            "| {} KiB | {} MiB | {:+.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {zero} |",
            interval / 1024,
            truth / 1048576,
            mean * 100.0,
            rms * 100.0,
            median(&abs) * 100.0,
            percentile(&abs, 90.0) * 100.0,
            ((*interval as f64) / (*truth as f64)).sqrt() * 100.0
        )
        .unwrap();
        if *interval == 524288 && *truth == 100 * 1048576 {
            targets.push([
                "sampled 512 KiB, 100 MiB site: RMS relative error (report)".into(),
                format!("{:.1}% (√(R/B) = 7.1%)", rms * 100.0),
                "reported".into(),
            ]);
        }
    }
    Ok(s)
}

/// The binary the add-on image ships, as `.ci/build-static` builds it for this machine.
fn shipped_binary() -> PathBuf {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    repo_root()
        .join("target")
        .join(triple)
        .join("release/heapwatch")
}

/// Section 4 (sizes): the shipped binary, gzipped (about what the image layer weighs),
/// and without line tables or symbols.
fn size_section() -> Result<String, String> {
    let bin = shipped_binary();
    let full = std::fs::metadata(&bin)
        .map_err(|e| format!("{}: {e}", bin.display()))?
        .len();
    let gzipped = Command::new("gzip")
        .args(["-6", "-c"])
        .arg(&bin)
        .output()
        .map_err(|e| format!("gzip: {e}"))?
        .stdout
        .len() as u64;
    let tmp = std::env::temp_dir().join(format!("heapwatch-bench-size-{}", std::process::id()));
    let size_after = |flag: &str| -> Result<u64, String> {
        std::fs::copy(&bin, &tmp).map_err(|e| e.to_string())?;
        let ok = Command::new("strip")
            .arg(flag)
            .arg(&tmp)
            .status()
            .map_err(|e| format!("strip: {e}"))?
            .success();
        let len = std::fs::metadata(&tmp).map_err(|e| e.to_string())?.len();
        let _ = std::fs::remove_file(&tmp);
        if ok {
            Ok(len)
        } else {
            Err("strip failed".into())
        }
    };
    let no_debug = size_after("--strip-debug")?;
    let stripped = size_after("--strip-all")?;
    Ok(format!(
        "| `target/<host>/release/heapwatch` (`.ci/build-static`) | size |\n|---|---|\n\
         | as shipped (static, own line tables, debug sections zstd-compressed) | {} |\n\
         | as shipped, gzipped (about the image layer's download) | {} |\n\
         | without line tables (`strip --strip-debug` of a copy) | {} |\n\
         | without line tables or symbols (`strip --strip-all`; snapshots would show only addresses) | {} |\n\n\
         Line tables cost {} ({:.0}% of the binary).",
        mib(full as f64),
        mib(gzipped as f64),
        mib(no_debug as f64),
        mib(stripped as f64),
        mib((full - no_debug) as f64),
        (full - no_debug) as f64 / full as f64 * 100.0
    ))
}

fn main() -> std::process::ExitCode {
    let o = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("driver: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let load_before = loadavg();
    let mut targets: Vec<[String; 3]> = Vec::new();
    let mut sections = Vec::new();
    if o.wants("alloc") {
        sections.push(("1. Allocation cost", alloc_section(o, &mut targets)?));
    }
    if o.wants("load") {
        sections.push(("2. The add-on under load", load_section(o, &mut targets)?));
    }
    if o.wants("snapshot") {
        sections.push((
            "3. Snapshot cost at scale",
            snapshot_section(o, &mut targets)?,
        ));
    }
    if o.wants("size") {
        sections.push(("4. Binary size", size_section()?));
    }
    if o.wants("accuracy") {
        sections.push((
            "5. Sampled-mode accuracy",
            accuracy_section(o, &mut targets)?,
        ));
    }
    let mut md = String::new();
    writeln!(md, "{BEGIN}").unwrap();
    writeln!(
        md,
        "_Generated by `bash benches/run.sh{}` on {} (commit {}{}), in {:.0} s. Load average \
         {} before, {} after._\n\n**Machine:** {}\n",
        if o.quick { " --quick" } else { "" },
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh(
            "git",
            &[
                "-C",
                &repo_root().display().to_string(),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        ),
        if sh(
            "git",
            &[
                "-C",
                &repo_root().display().to_string(),
                "status",
                "--porcelain",
                "--untracked-files=no"
            ]
        )
        .is_empty()
        {
            ""
        } else {
            ", uncommitted changes"
        },
        started.elapsed().as_secs_f64(),
        load_before,
        loadavg(),
        machine()
    )
    .unwrap();
    md.push_str("### Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    for [t, m, v] in &targets {
        writeln!(md, "| {t} | {m} | {v} |").unwrap();
    }
    for (title, body) in &sections {
        writeln!(md, "\n### {title}\n\n{body}").unwrap();
    }
    writeln!(md, "{END}").unwrap();
    println!("{md}");
    if o.write {
        let path = repo_root().join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{}{}", &old[..b], md.trim_end(), &old[e + END.len()..])
            }
            _ => format!("{old}\n{md}"),
        };
        std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
