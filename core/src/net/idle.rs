//! The keep-alive connections of the caller's-thread path: a stack per client, each
//! connection closed once idle longer than [`IDLE_CONN`], all given up when any work of
//! the process waits for a descriptor.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::host::process::PerProcess;
use crate::net::conn::Conn;

/// Idle connections kept for the blocking path.
pub(crate) const MAX_IDLE: usize = 128;

/// How long an idle keep-alive connection is kept, on either path (while the engine
/// runs: all of its close when it exits, after `host::pool::IDLE_EXIT` without work).
pub(crate) const IDLE_CONN: Duration = Duration::from_secs(30);

/// The client's idle connections for the blocking path, most recent last, with the time
/// each went idle. One idle longer than the engine's [`IDLE_CONN`] is closed when the
/// stack is next used (no thread watches it: a client nobody uses keeps them until then).
/// In a forked child the parent's stack is left alone (its sockets are the parent's, and
/// were closed in the child at the fork): the child starts an empty one. Each stack is
/// known to `fds`, which empties it when any client's work waits for a descriptor.
pub(crate) struct IdleStack(PerProcess<Arc<Mutex<Idle>>>);

impl Default for IdleStack {
    fn default() -> IdleStack {
        IdleStack(PerProcess::new(registered()))
    }
}

/// A new empty stack, known to `fds`.
fn registered() -> Arc<Mutex<Idle>> {
    let stack = Arc::new(Mutex::new(Idle::default()));
    let weak: std::sync::Weak<dyn crate::host::fds::Shed> =
        Arc::downgrade(&stack) as std::sync::Weak<Mutex<Idle>>;
    crate::host::fds::register_idle(weak);
    stack
}

#[derive(Default)]
struct Idle {
    conns: Vec<(Conn, Instant)>,
    /// `fds::wanted()` when last used: when it changes, work (of any client) waits for
    /// a descriptor, and the idle connections give theirs up.
    seen_wanted: u64,
}

impl crate::host::fds::Shed for Mutex<Idle> {
    fn shed(&self) {
        let conns = match self.try_lock() {
            Ok(mut idle) => std::mem::take(&mut idle.conns),
            Err(std::sync::TryLockError::Poisoned(e)) => std::mem::take(&mut e.into_inner().conns),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        drop(conns); // closed outside the lock
    }
}

impl IdleStack {
    fn stack(&self) -> &Mutex<Idle> {
        self.0.get(registered)
    }

    /// Closes this process's idle connections (the client is being freed: in a forked
    /// child its `Core` outlives it, held by the parent's leaked runtime).
    pub(crate) fn release(&self) {
        if let Some(stack) = self.0.current() {
            let conns = std::mem::take(&mut stack.lock().unwrap_or_else(|e| e.into_inner()).conns);
            drop(conns);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        let mut idle = self.stack().lock().unwrap_or_else(|e| e.into_inner());
        let wanted = crate::host::fds::wanted();
        if idle.seen_wanted != wanted {
            idle.seen_wanted = wanted;
            idle.conns.clear();
        }
        // Oldest first: close what the server has most likely closed already.
        let stale = idle
            .conns
            .iter()
            .take_while(|(_, since)| since.elapsed() >= IDLE_CONN)
            .count();
        idle.conns.drain(..stale);
        idle
    }

    pub(crate) fn take(&self) -> Option<Conn> {
        loop {
            let (c, _) = self.lock().conns.pop()?;
            // A connection the server closed, or that holds unasked bytes, is dropped.
            if c.is_reusable() {
                return Some(c);
            }
        }
    }

    pub(crate) fn put(&self, c: Conn) {
        let mut idle = self.lock();
        if idle.conns.len() < MAX_IDLE {
            idle.conns.push((c, Instant::now()));
        }
    }
}
