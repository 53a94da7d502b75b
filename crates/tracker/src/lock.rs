//! The spin lock guarding the tracker's tables.
//!
//! Why a spin lock: `std::sync::Mutex` does not allocate on Linux today, but nothing
//! promises that, and a lock that allocates inside an allocator deadlocks (dhat-rs issues
//! 18, 25, 38). This one is an `AtomicBool`; waiters spin briefly, then yield the CPU
//! (important on a 2-core box with more threads than cores). Holding the lock also raises
//! the thread's reentrancy guard to "inside", so any allocation made while holding it
//! passes straight to `System` and can never try to take the lock again.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::guard::{Guard, GuardLevel};

/// Spins before yielding: a critical section is a few hundred nanoseconds, so 64 pause
/// iterations usually cover it; past that the holder was probably descheduled.
const SPINS_BEFORE_YIELD: u32 = 64;

pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a SpinGuard, and `locked` admits one guard at
// a time (acquire on lock, release on unlock), so T moves between threads but is never
// shared.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let inside = Guard::enter(GuardLevel::Inside);
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        SpinGuard {
            lock: self,
            _inside: inside,
        }
    }
}

/// Holds the lock; releases it on drop (before the reentrancy guard is restored).
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _inside: Guard,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock and &mut self makes this the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
