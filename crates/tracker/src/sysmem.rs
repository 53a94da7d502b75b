//! Fixed-size arrays allocated straight from [`std::alloc::System`].
//!
//! The tracker's tables live here so that growing them never re-enters the global
//! allocator (which is the tracker itself) and never shows up in its own numbers. Only
//! plain integer element types are allowed, so an all-zero allocation is a valid value.
//! Used by `table` (blocks) and `stacks` (interned stacks); freed on drop, which is how
//! [`stop`](crate::stop) releases the tables.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

/// Element types for which all-zero bytes are a valid value and that own no resources.
///
/// # Safety
/// Implement only for plain integer types and arrays of them.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: plain integers and arrays of plain integers: every bit pattern (and so all
// zeroes) is valid, and none of them owns anything.
unsafe impl Zeroable for u16 {}
// SAFETY: as above.
unsafe impl Zeroable for u64 {}
// SAFETY: as above.
unsafe impl<const N: usize> Zeroable for [u64; N] {}

/// A zero-initialised `[T]` of fixed length allocated with `System` (like a `Box<[T]>`
/// that bypasses the global allocator).
pub(crate) struct RawBuf<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: a RawBuf owns its allocation exclusively, like Box<[T]>; T is plain data.
unsafe impl<T: Zeroable + Send> Send for RawBuf<T> {}

impl<T: Zeroable> RawBuf<T> {
    /// Allocates `len` zeroed elements; `None` if `len` is 0 or `System` is out of memory.
    pub(crate) fn zeroed(len: usize) -> Option<Self> {
        let layout = Layout::array::<T>(len).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        NonNull::new(ptr.cast::<T>()).map(|ptr| RawBuf { ptr, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by this buffer (reported as tracker overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Grows to `new_len` elements keeping the contents; new elements are zero.
    /// Returns false (and keeps the old buffer) if `System` cannot provide the memory.
    pub(crate) fn grow(&mut self, new_len: usize) -> bool {
        if new_len <= self.len {
            return true;
        }
        let Some(new) = Self::zeroed(new_len) else {
            return false;
        };
        let mut new = new;
        new.as_mut_slice()[..self.len].copy_from_slice(self.as_slice());
        *self = new;
        true
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: ptr points to `len` initialised (zeroed or since written) elements that
        // this RawBuf owns; the borrow of self keeps them alive and unaliased by writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for RawBuf<T> {
    fn drop(&mut self) {
        let layout = Layout::array::<T>(self.len).expect("layout was valid when allocated");
        // SAFETY: ptr was allocated by System with exactly this layout in `zeroed`.
        unsafe { System.dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}
