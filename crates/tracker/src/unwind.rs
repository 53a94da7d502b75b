//! Frame-pointer stack walking for the allocation path.
//!
//! Reads the frame-pointer register (`rbp` on x86-64, `x29` on aarch64) and follows the
//! chain of frame records: `[fp]` is the caller's frame pointer, `[fp + 8]` the return
//! address. No DWARF unwinding, no allocation, no locks: about 2 ns a frame, hash
//! included. Each step is guarded: the frame pointer must be aligned, inside this thread's
//! stack and strictly above the previous one; the walk stops at the first that is not
//! (code built without frame pointers, C entry points, a signal handler on an alternate
//! stack). Other architectures record no frames.
//!
//! Stack bounds come from `pthread_getattr_np` once per thread and are cached in a
//! const thread-local. The caller (`recorder`) holds the reentrancy guard while
//! they are filled, because glibc allocates (with its own malloc) and reads
//! /proc/self/maps for the main thread.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::mem::MaybeUninit;

/// Frames counted (not recorded) when measuring the true depth of a stack. Deeper stacks
/// report this depth; 128 is beyond any useful traceback and keeps the walk bounded.
pub(crate) const MAX_DEPTH: usize = 128;

/// Frame records are pointer-aligned on every supported ABI.
const FP_ALIGN: usize = std::mem::align_of::<usize>();

/// A frame record is two words: saved frame pointer, return address.
const RECORD_BYTES: usize = 2 * std::mem::size_of::<usize>();

/// Bounds not known yet (the thread has not walked before).
const UNKNOWN: (usize, usize) = (0, 0);
/// Bounds could not be determined: every walk stops at once.
const FAILED: (usize, usize) = (usize::MAX, 0);

thread_local! {
    /// This thread's stack as [low, high). Const, no destructor.
    static BOUNDS: Cell<(usize, usize)> = const { Cell::new(UNKNOWN) };
}

/// Result of one walk.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Walk {
    /// Frames seen in all, up to [`MAX_DEPTH`].
    pub depth: usize,
    /// [`crate::stacks::hash`] of the frames recorded.
    pub hash: u64,
}

/// Room for up to `N` return addresses, left uninitialised (zeroing 576 bytes on every
/// tracked allocation showed in profiles); only the recorded prefix is readable.
pub(crate) struct Frames<const N: usize> {
    buf: [MaybeUninit<usize>; N],
    len: usize,
}

impl<const N: usize> Frames<N> {
    pub(crate) fn new() -> Self {
        Frames {
            buf: [const { MaybeUninit::uninit() }; N],
            len: 0,
        }
    }

    /// The recorded return addresses, innermost first.
    pub(crate) fn as_slice(&self) -> &[usize] {
        // SAFETY: `capture` initialised buf[..len] and len never exceeds N.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<usize>(), self.len) }
    }
}

fn bounds() -> (usize, usize) {
    let cached = BOUNDS.get();
    if cached != UNKNOWN {
        return cached;
    }
    let found = query_bounds().unwrap_or(FAILED);
    BOUNDS.set(found);
    found
}

#[cfg(target_os = "linux")]
fn query_bounds() -> Option<(usize, usize)> {
    // SAFETY: `attr` is plain storage that pthread_getattr_np initialises on success; it
    // is destroyed exactly once, after that success. The out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 || addr.is_null() || size == 0 {
            return None;
        }
        let low = addr as usize;
        Some((low, low.checked_add(size)?))
    }
}

#[cfg(not(target_os = "linux"))]
fn query_bounds() -> Option<(usize, usize)> {
    None
}

/// The frame pointer of the function this is inlined into (always inlined): the address of
/// its frame record, where a walk can start. 0 on architectures without a walk.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: copies a register; touches no memory, stack or flags.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: copies a register; touches no memory, stack or flags.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
pub(crate) fn frame_pointer() -> usize {
    0
}

/// The frame record at `fp`: (saved frame pointer, return address). Reads are volatile:
/// this is foreign memory the compiler knows nothing about.
///
/// # Safety
/// `[fp, fp + 16)` must be mapped, readable memory aligned for `usize`.
#[inline(always)]
unsafe fn read_record(fp: usize) -> (usize, usize) {
    // SAFETY: the caller's promise.
    unsafe {
        (
            std::ptr::read_volatile(fp as *const usize),
            std::ptr::read_volatile((fp + std::mem::size_of::<usize>()) as *const usize),
        )
    }
}

/// Whether a walk may go from the record at `fp` to the one at `next`: above this one (so
/// above the bottom), a whole record below the top (`top` is the highest address one may
/// start at), aligned. Three compares, each fused with its branch into one operation: one
/// range compare, `next − fp − 1 < top − fp`, took two instructions more a frame and
/// ~3 ns more an exact pair.
#[inline(always)]
fn may_follow(next: usize, fp: usize, top: usize) -> bool {
    next > fp && next <= top && next.is_multiple_of(FP_ALIGN)
}

/// Walks this thread's stack from the frame record at `from`, recording at most `keep`
/// return addresses (innermost first) into `out`, hashing them, and counting the depth up
/// to [`MAX_DEPTH`].
///
/// `from` is a [`frame_pointer`] read further up this stack (the allocator reads its own
/// at its entry, so the tracker's frames below it are not walked), or 0: a `from` below
/// `capture`'s own frame, or not a record at all, starts the walk at `capture`'s caller.
/// The first frame pointer is checked against the stack's bounds and alignment; each
/// next one must be aligned, strictly above the last (which keeps it above the bottom)
/// and leave a whole record below the top. Past `keep` frames the walk only counts.
///
/// The walk does as little per frame as it can (it runs on every tracked allocation, and
/// its cost is the instructions per frame, not waiting for memory): two loads, the end
/// test, one store, the checks on the next record. The frames are hashed afterwards, in a
/// loop of their own.
///
/// Must run with the reentrancy guard raised (it may fill the bounds cache).
#[inline(never)]
pub(crate) fn capture<const N: usize>(out: &mut Frames<N>, keep: usize, from: usize) -> Walk {
    out.len = 0;
    let (low, high) = bounds();
    let Some(top) = high.checked_sub(RECORD_BYTES) else {
        return Walk {
            depth: 0,
            hash: crate::stacks::hash(&[]),
        };
    };
    let here = frame_pointer();
    // Only a record between this frame and the top: the stack below the current frame
    // need not be mapped.
    let fp = if from >= here && from <= top && from.is_multiple_of(FP_ALIGN) {
        from
    } else {
        here
    };
    let keep = keep.min(N).min(MAX_DEPTH);
    let mut len = 0;
    let mut depth = 0;
    if fp >= low && fp <= top && fp.is_multiple_of(FP_ALIGN) {
        // SAFETY: fp is aligned and the record [fp, fp + 16) lies inside this thread's
        // stack, between our own frame (at or below this first fp) and the stack's top
        // (each next one checked by `may_follow`): that range is mapped.
        let mut at = fp;
        'walk: {
            if keep > 0 {
                loop {
                    // SAFETY: as above.
                    let (next, ret) = unsafe { read_record(at) };
                    if ret == 0 {
                        break 'walk;
                    }
                    out.buf[len] = MaybeUninit::new(ret);
                    len += 1;
                    if !may_follow(next, at, top) {
                        break 'walk;
                    }
                    at = next;
                    if len == keep {
                        break;
                    }
                }
            }
            // Past `keep` frames, only counted.
            depth = len;
            while depth < MAX_DEPTH {
                // SAFETY: as above.
                let (next, ret) = unsafe { read_record(at) };
                if ret == 0 {
                    break;
                }
                depth += 1;
                if !may_follow(next, at, top) {
                    break;
                }
                at = next;
            }
        }
        depth = depth.max(len);
    }
    out.len = len;
    Walk {
        depth,
        hash: crate::stacks::hash(out.as_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{Guard, GuardLevel};
    use crate::stacks::hash;

    #[test]
    fn the_walk_hashes_exactly_what_it_records() {
        let _inside = Guard::enter(GuardLevel::Inside);
        for keep in [1, 3, 72] {
            let mut out = Frames::<72>::new();
            let walk = capture(&mut out, keep, 0);
            let frames = out.as_slice();
            assert!(!frames.is_empty() && frames.len() <= keep, "{frames:?}");
            assert!(walk.depth >= frames.len());
            assert_eq!(walk.hash, hash(frames));
        }
    }

    /// Walks three times from inside `inner`: from `capture`'s caller, from `outer`'s
    /// frame, and from an address below the stack's frames (which falls back to the first).
    #[inline(never)]
    fn inner(from: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let mut here = Frames::<72>::new();
        let mut there = Frames::<72>::new();
        let mut below = Frames::<72>::new();
        capture(&mut here, 72, 0);
        capture(&mut there, 72, from);
        // A record below capture's own frame is not a valid start: the walk starts here.
        capture(&mut below, 72, 8);
        let v = |f: &Frames<72>| f.as_slice().to_vec();
        std::hint::black_box((v(&here), v(&there), v(&below)))
    }

    #[inline(never)]
    fn outer() -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let r = inner(frame_pointer());
        std::hint::black_box(r)
    }

    #[test]
    fn a_walk_from_a_frame_further_up_skips_the_frames_below_it() {
        let _inside = Guard::enter(GuardLevel::Inside);
        let (here, there, below) = outer();
        assert!(there.len() < here.len(), "{here:x?} / {there:x?}");
        assert_eq!(
            here[here.len() - there.len()..],
            there[..],
            "the same outer frames"
        );
        // `here` starts with inner's call into capture, then outer's call into inner;
        // `there` with the test's call into outer.
        assert_eq!(here.len() - there.len(), 2, "{here:x?} / {there:x?}");
        // From another call in inner: only the first return address differs.
        assert_eq!(below.len(), here.len());
        assert_eq!(below[1..], here[1..]);
        assert_ne!(below[0], here[0]);
    }
}
