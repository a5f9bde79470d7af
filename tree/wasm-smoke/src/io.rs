//! The calling convention: one input and one output buffer owned by the module, and status codes.

use std::cell::RefCell;

use canopy_tree::ReplicaId;

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Status: success.
pub const OK: i32 = 0;
/// Status: the input is malformed for this export (wrong length, not UTF-8, unknown handle or node
/// reference, unknown placement code).
pub const BAD_INPUT: i32 = -1;
/// Status: the library returned a typed error; its `Debug` form (variant name first) is in the output.
pub const LIB_ERROR: i32 = 1;

/// Resizes the input buffer to `len` zero bytes and returns its address for the host to write into.
#[no_mangle]
pub extern "C" fn smoke_input(len: u32) -> *mut u8 {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.resize(len as usize, 0);
        b.as_mut_ptr()
    })
}

/// Address of the output buffer (valid until the next export call).
#[no_mangle]
pub extern "C" fn smoke_output_ptr() -> *const u8 {
    OUTPUT.with(|b| b.borrow().as_ptr())
}

/// Length of the output buffer.
#[no_mangle]
pub extern "C" fn smoke_output_len() -> u32 {
    OUTPUT.with(|b| b.borrow().len() as u32)
}

/// A copy of the output buffer (for native callers).
pub fn output() -> Vec<u8> {
    OUTPUT.with(|b| b.borrow().clone())
}

/// Copies `bytes` into the input buffer, as the host does (for native callers).
pub fn put(bytes: &[u8]) {
    INPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.extend_from_slice(bytes);
    });
}

pub(crate) fn input() -> Vec<u8> {
    INPUT.with(|b| b.borrow().clone())
}

pub(crate) fn input_str() -> Option<String> {
    String::from_utf8(input()).ok()
}

pub(crate) fn set_output(bytes: &[u8]) {
    OUTPUT.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        b.extend_from_slice(bytes);
    });
}

/// Output: little-endian `u32`s.
pub(crate) fn set_output_u32s(values: impl IntoIterator<Item = u32>) {
    let bytes: Vec<u8> = values.into_iter().flat_map(u32::to_le_bytes).collect();
    set_output(&bytes);
}

/// Writes `result`'s `Display` text (value) or the error's `Debug` form and returns the status.
pub(crate) fn report<T: std::fmt::Display, E: std::fmt::Debug>(result: Result<T, E>) -> i32 {
    match result {
        Ok(v) => {
            set_output(v.to_string().as_bytes());
            OK
        }
        Err(e) => fail(e),
    }
}

/// Writes the error's `Debug` form (variant name first) to the output; returns [`LIB_ERROR`].
pub(crate) fn fail<E: std::fmt::Debug>(e: E) -> i32 {
    set_output(format!("{e:?}").as_bytes());
    LIB_ERROR
}

/// A replica id made of one repeated byte (replica `n` of a scenario).
pub(crate) fn replica(n: u32) -> ReplicaId {
    ReplicaId::from_bytes([n as u8; 32])
}
