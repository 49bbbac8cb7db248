//! Owned buffers for completion-based I/O.
//!
//! With io_uring the kernel reads or writes a buffer *after* the call that submitted the
//! operation has returned, possibly after the future that asked for it has been dropped. So every
//! operation takes its buffer by value and gives it back with the result; a cancelled operation
//! parks the buffer in the driver until the kernel's completion says it is done with it.
//!
//! [`IoBuf`] is a buffer the kernel may read from (writes), [`IoBufMut`] one it may write into
//! (reads). Both are `unsafe` traits: an implementation promises that the pointer it returns
//! stays valid and does not move for as long as the value is not touched, even if the value
//! itself is moved (heap storage). Reads *append*: they fill the spare room after
//! `bytes_init()` and then extend the initialised part, so a frame decoder can keep reading into
//! the same `Vec` until a whole frame is there.
//!
//! [`AlignedBuf`] is the page-aligned buffer O_DIRECT file I/O needs.

use std::alloc::{self, Layout};
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::NonNull;

/// A buffer the kernel may read `bytes_init()` bytes from.
///
/// # Safety
/// `stable_ptr()` must point to at least `bytes_init()` initialised bytes, and that memory must
/// stay valid and unmoved while the value is alive and not accessed mutably, even when the value
/// itself is moved.
pub unsafe trait IoBuf: 'static {
    /// Start of the bytes to send.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialised bytes from `stable_ptr()`.
    fn bytes_init(&self) -> usize;

    /// A view of `range` of the initialised bytes that can be written on its own and gives the
    /// whole buffer back with [`Slice::into_inner`].
    ///
    /// Panics if the range is out of bounds (a programming error, like slice indexing).
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n + 1,
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_init(),
        };
        assert!(
            begin <= end && end <= self.bytes_init(),
            "slice {begin}..{end} out of the {} initialised bytes",
            self.bytes_init()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer the kernel may write into.
///
/// # Safety
/// `stable_mut_ptr()` must point to `bytes_total()` writable bytes with the same stability
/// promise as [`IoBuf`], and `set_init` must only be called with a length whose bytes have been
/// written.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the whole buffer (initialised part first).
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Total room, initialised or not.
    fn bytes_total(&self) -> usize;
    /// Declares the first `init` bytes initialised (never shrinks).
    ///
    /// # Safety
    /// The first `init` bytes must have been written.
    unsafe fn set_init(&mut self, init: usize);
}

// SAFETY: a Vec's heap storage does not move when the Vec is moved, and we never reallocate it
// while an operation owns it.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; `set_init` only grows the length over bytes the kernel wrote.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, init: usize) {
        if init > self.len() {
            // SAFETY: the caller guarantees the first `init` bytes (within capacity) are written.
            unsafe { self.set_len(init) };
        }
    }
}

// SAFETY: boxed slices live on the heap and never move.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: static data never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: static data never moves or goes away.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a String's heap storage does not move when the String is moved.
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "bytes")]
// SAFETY: `Bytes` is immutable and reference counted; its storage never moves.
unsafe impl IoBuf for bytes::Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "bytes")]
// SAFETY: a BytesMut's storage does not move while it is owned and not grown.
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

#[cfg(feature = "bytes")]
// SAFETY: as above; `set_init` only grows the length over bytes the kernel wrote.
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, init: usize) {
        if init > self.len() {
            // SAFETY: the caller guarantees the first `init` bytes (within capacity) are written.
            unsafe { self.set_len(init) };
        }
    }
}

/// A sub-range of an owned buffer's initialised bytes; see [`IoBuf::slice`].
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B> Slice<B> {
    /// The whole buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
    /// Offset of the view's first byte in the buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }
    /// Offset one past the view's last byte in the buffer.
    pub fn end(&self) -> usize {
        self.end
    }
    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }
}

// SAFETY: the view points into `B`'s stable storage, within its initialised bytes (checked at
// construction).
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: `begin <= bytes_init()` was checked when the slice was made.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.end - self.begin
    }
}

/// Alignment O_DIRECT needs on every device this project targets (the page size).
pub const DIRECT_IO_ALIGNMENT: usize = 4096;

/// A zero-filled heap buffer aligned for O_DIRECT, with a length (initialised part, what a write
/// sends) and a fixed capacity (what a read may fill).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    alignment: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `capacity` bytes (rounded up to the alignment) aligned to 4096, length 0.
    pub fn new(capacity: usize) -> Self {
        Self::with_alignment(capacity, DIRECT_IO_ALIGNMENT)
    }

    /// As [`AlignedBuf::new`] with another power-of-two alignment.
    pub fn with_alignment(capacity: usize, alignment: usize) -> Self {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        let capacity = capacity.max(1).div_ceil(alignment) * alignment;
        let layout = Layout::from_size_align(capacity, alignment).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
            alignment,
        }
    }

    /// A buffer of `len` bytes rounded up to whole 4096-byte pages (at least one page), all of
    /// it initialised (zeroed): its length is its capacity. What the store's O_DIRECT writes,
    /// reads and filler use.
    pub fn zeroed(len: usize) -> Self {
        let mut buf = Self::new(len);
        buf.len = buf.capacity;
        buf
    }

    /// Bytes in the initialised part.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when the initialised part is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Total room.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// The alignment of the start of the buffer.
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    /// Sets the initialised length. Every byte of the buffer is always initialised (zeroed at
    /// allocation), so any length up to the capacity is valid.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} above capacity {}",
            self.capacity
        );
        self.len = len;
    }
    /// Empties the initialised part (contents are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Appends `data`; panics if it does not fit (the capacity is fixed).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        assert!(
            end <= self.capacity,
            "{end} bytes exceed capacity {}",
            self.capacity
        );
        let start = self.len;
        self.spare_and_all_mut()[start..end].copy_from_slice(data);
        self.len = end;
    }
    /// The whole capacity as a mutable slice (to fill before `set_len`).
    pub fn spare_and_all_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `capacity` zero-initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes, all initialised, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity, self.alignment).expect("valid layout");
        // SAFETY: allocated in `with_alignment` with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("alignment", &self.alignment)
            .finish()
    }
}

// SAFETY: heap storage owned by the value, never reallocated.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; all `capacity` bytes are writable.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity
    }
    unsafe fn set_init(&mut self, init: usize) {
        if init > self.len {
            self.len = init.min(self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_zeroed_and_rounded_up() {
        let mut buf = AlignedBuf::new(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.stable_ptr() as usize % DIRECT_IO_ALIGNMENT, 0);
        assert!(buf.is_empty());
        buf.set_len(8192);
        assert!(buf.iter().all(|&byte| byte == 0));
        buf.clear();
        buf.extend_from_slice(b"abc");
        assert_eq!(&buf[..], b"abc");
        assert_eq!(buf.bytes_init(), 3);
    }

    #[test]
    fn zeroed_buf_is_whole_pages_all_initialised() {
        let mut buf = AlignedBuf::zeroed(5000);
        assert_eq!((buf.len(), buf.capacity()), (8192, 8192));
        assert_eq!(buf.stable_ptr() as usize % DIRECT_IO_ALIGNMENT, 0);
        assert!(buf.iter().all(|&byte| byte == 0));
        buf[8191] = 7;
        assert_eq!(buf.as_ref()[8191], 7);
        assert_eq!(AlignedBuf::zeroed(0).len(), DIRECT_IO_ALIGNMENT);
    }

    #[test]
    #[should_panic(expected = "exceed capacity")]
    fn aligned_buf_refuses_to_grow() {
        let mut buf = AlignedBuf::new(4096);
        buf.extend_from_slice(&[1u8; 4097]);
    }

    #[test]
    fn slice_views_part_of_the_initialised_bytes() {
        let buf = b"hello world".to_vec();
        let slice = buf.slice(6..);
        assert_eq!(slice.bytes_init(), 5);
        // SAFETY: the slice's pointer covers `bytes_init()` initialised bytes.
        let viewed = unsafe { std::slice::from_raw_parts(slice.stable_ptr(), slice.bytes_init()) };
        assert_eq!(viewed, b"world");
        assert_eq!((slice.begin(), slice.end()), (6, 11));
        assert_eq!(slice.into_inner(), b"hello world");
    }

    #[test]
    #[should_panic(expected = "out of the")]
    fn slice_beyond_initialised_bytes_panics() {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"abc");
        let _ = buf.slice(..10);
    }

    #[test]
    fn vec_set_init_only_grows() {
        let mut buf: Vec<u8> = Vec::with_capacity(8);
        buf.extend_from_slice(b"abcd");
        // SAFETY: shrinking requests are ignored; no bytes are claimed.
        unsafe { buf.set_init(2) };
        assert_eq!(buf.len(), 4);
        assert_eq!(buf.bytes_total(), buf.capacity());
    }
}
