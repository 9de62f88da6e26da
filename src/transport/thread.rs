//! `spawn_named`: the one way this crate starts a thread.
//!
//! The Rust Book's `thread::spawn` panics when the OS refuses a thread; a node that
//! accepts connections from strangers must not, so every thread goes through
//! `thread::Builder`, which also names it (shown by `top -H`, debuggers and panic
//! messages) and sets its stack size (only touched pages cost memory).

use std::io;
use std::thread::{self, JoinHandle};

/// Starts a thread with `name` and `stack_size`, returning the OS's refusal instead of
/// panicking.
pub(crate) fn spawn_named<F, T>(name: String, stack_size: usize, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new()
        .name(name)
        .stack_size(stack_size)
        .spawn(f)
}
