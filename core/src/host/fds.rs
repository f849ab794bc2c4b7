//! Every descriptor the library opens (sockets, each engine's epoll and waker): counted
//! against one budget for the whole process, and known to the fork handler.
//!
//! **The budget.** All clients of the process together may hold at most half of the
//! descriptors the host leaves free: `(soft RLIMIT_NOFILE - descriptors the host has
//! open) / 2`, where the host's are those open in the process less the library's own.
//! The other half is always the host's (its files, its calls' media sockets). The figure
//! is re-read at most once a second while sockets are opened, and when the budget is
//! found full (at most every 100 ms), so a host that opens more files, or raises its
//! limit, is followed. A socket is opened only within the budget; work that finds it
//! full waits (queued, holding nothing) until a socket frees up or its deadline passes,
//! and idle connections of every client (engines', and each client's caller's-thread
//! stack) are closed for it. An engine's epoll and waker take places too, when it
//! starts: sockets leave the last two to them, and an engine that cannot have them does
//! not start (its hangup is refused BUSY: waiting is not possible on the caller's
//! thread, and taking them anyway would eat into the host's half).
//!
//! **Fork.** Each tracked descriptor has a bit in a lock-free bitmap; the `fork()` child
//! handler closes every marked descriptor (async-signal-safe) and starts the count
//! afresh. A descriptor is marked after it is opened and unmarked before it is closed, so
//! a marked number is always the library's (never a number the host reused); a fork in
//! between leaves one descriptor open in the child, unused.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::host::process::generation;

/// Called once when a lookup the engine waits for has answered.
pub(crate) type Notify = Arc<dyn Fn() + Send + Sync>;

/// How often a client waiting for the budget looks again (another client, or the
/// caller's-thread path, may have freed a socket).
pub(crate) const ROOM_POLL: Duration = Duration::from_millis(10);

/// Why a hangup that waited for a place in the budget until its deadline ended TIMEOUT.
pub(crate) const WAITED_FOR_DESCRIPTOR: &str =
    "the deadline passed waiting for a file descriptor, \
     not for the server: the library's share of the process's descriptors stayed in use \
     (nothing was sent)";

/// Why an engine could not start: its two descriptors did not fit in the budget.
pub(crate) const FULL: &str = "the library's share of the process's file descriptors \
     is in use (an engine needs two to start)";

/// The most descriptors the library takes, whatever the limit.
pub(crate) const MAX_BUDGET: usize = 1 << 20;

const WORDS: usize = 1024; // 65,536 descriptors per chunk
const CHUNKS: usize = 64; // numbers below 4,194,304 are tracked
type Chunk = [AtomicU64; WORDS];

/// Descriptors below 65,536 (every host but a few): static, so that an unload
/// (`dlclose`) loses no heap memory to it.
static FIRST: Chunk = [const { AtomicU64::new(0) }; WORDS];
/// Higher chunks, made on first use (`CHUNK[0]` stays null: it is `FIRST`).
static CHUNK: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(null_mut()) }; CHUNKS];
/// Descriptors the library holds now.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The budget, and when it was computed (ms since `epoch()`, plus one; 0: never).
static BUDGET: AtomicUsize = AtomicUsize::new(0);
static READ_AT: AtomicU64 = AtomicU64::new(0);
/// Bumped each time work finds the budget full: idle keep-alive connections (of any
/// client) are closed when it changes, so they do not hold places that work waits for.
static WANTED: AtomicU64 = AtomicU64::new(0);

/// Changes whenever work waits for a place in the budget.
#[inline]
pub(crate) fn wanted() -> u64 {
    WANTED.load(Ordering::Relaxed)
}

/// Waiters for a place now: each engine with work the budget holds back, and each
/// caller's-thread hangup waiting for a descriptor, counts once (see [`Waiting`]).
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// One waiter for a place in the budget, while it lives. Fairness between clients: a
/// client busy enough to reuse every keep-alive connection at once would never free a
/// place; seeing another waiter (`others_wait`), an engine closes a connection when its
/// exchange ends instead of reusing it, and opens none for a moment (`YIELD`), so that
/// the other waiter, polling every `ROOM_POLL`, takes that place.
pub(crate) struct Waiting {
    generation: u64,
}

impl Waiting {
    pub(crate) fn new() -> Waiting {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Waiting {
            generation: generation(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // A parent's waiter does not count in a forked child (which starts at 0).
        if self.generation == generation() {
            WAITING.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// True when a waiter other than the caller's own (`mine`) waits for a place.
#[inline]
pub(crate) fn others_wait(mine: bool) -> bool {
    WAITING.load(Ordering::Relaxed) > usize::from(mine)
}

/// How long an engine that gave a place up for another waiter opens no connection.
pub(crate) const YIELD: Duration = Duration::from_millis(25);

type Holders = crate::host::process::PerProcess<Mutex<Vec<Weak<dyn Fn() + Send + Sync>>>>;

/// Engines sleeping with idle connections, to wake when work waits for the budget (of
/// this process: a forked child's engines are its own).
fn holders() -> &'static Mutex<Vec<Weak<dyn Fn() + Send + Sync>>> {
    static HOLDERS: OnceLock<Holders> = OnceLock::new();
    HOLDERS.get_or_init(Holders::default).get(Default::default)
}

/// An engine holds idle connections: `wake` is called (once) when work waits for a
/// place in the budget, so it gives them up without polling meanwhile.
pub(crate) fn hold_idle(wake: &crate::host::fds::Notify) {
    let mut h = holders().lock().unwrap_or_else(|e| e.into_inner());
    h.retain(|w| w.strong_count() > 0);
    h.push(Arc::downgrade(wake));
}

/// Idle connections no thread watches (each client's caller's-thread stack): closed by
/// `want` itself.
pub(crate) trait Shed: Send + Sync {
    /// Closes the idle connections, unless the stack is in use this moment (its user
    /// sees `wanted()` changed; a waiter asks again).
    fn shed(&self);
}

type Stacks = crate::host::process::PerProcess<Mutex<Vec<Weak<dyn Shed>>>>;

/// Every client's caller's-thread idle stack, of this process.
fn stacks() -> &'static Mutex<Vec<Weak<dyn Shed>>> {
    static STACKS: OnceLock<Stacks> = OnceLock::new();
    STACKS.get_or_init(Stacks::default).get(Default::default)
}

/// A client's idle stack of the caller's-thread path, shed when work waits for a place.
pub(crate) fn register_idle(stack: Weak<dyn Shed>) {
    let mut s = stacks().lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|w| w.strong_count() > 0);
    s.push(stack);
}

/// Work found the budget full: idle connections everywhere are asked to close (engines
/// are woken to close theirs; the caller's-thread stacks are shed here). No lock is
/// held while another is taken, and a stack's own lock only tried: callable with any
/// of the library's locks held.
fn want() {
    WANTED.fetch_add(1, Ordering::Relaxed);
    let woken = std::mem::take(&mut *holders().lock().unwrap_or_else(|e| e.into_inner()));
    for w in woken {
        if let Some(w) = w.upgrade() {
            w();
        }
    }
    let stacks: Vec<Weak<dyn Shed>> = stacks().lock().unwrap_or_else(|e| e.into_inner()).clone();
    for s in stacks {
        if let Some(s) = s.upgrade() {
            s.shed();
        }
    }
}

fn chunk(c: usize, create: bool) -> Option<&'static Chunk> {
    if c == 0 {
        return Some(&FIRST);
    }
    let mut p = CHUNK[c].load(Ordering::Acquire);
    if p.is_null() {
        if !create {
            return None;
        }
        let fresh = Box::into_raw(Box::new([const { AtomicU64::new(0) }; WORDS]));
        p = match CHUNK[c].compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(theirs) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                theirs
            }
        };
    }
    // SAFETY: a chunk, once installed, is never freed.
    Some(unsafe { &*p })
}

fn mark(fd: RawFd, on: bool) {
    let Ok(fd) = usize::try_from(fd) else { return };
    let (c, w, bit) = (fd >> 16, (fd >> 6) & (WORDS - 1), 1u64 << (fd & 63));
    if c >= CHUNKS {
        return; // not tracked: left open in a forked child
    }
    if let Some(ch) = chunk(c, on) {
        if on {
            ch[w].fetch_or(bit, Ordering::Release);
        } else {
            ch[w].fetch_and(!bit, Ordering::Release);
        }
    }
}

/// In a forked child (from the atfork handler, single-threaded): closes every descriptor
/// the library had open; the child's clients start with none.
pub(crate) fn after_fork_in_child() {
    for c in 0..CHUNKS {
        let Some(ch) = chunk(c, false) else { continue };
        for (w, word) in ch.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let fd = (c << 16) | (w << 6) | b;
                // SAFETY: a marked descriptor is the library's (see the module's notes);
                // close() is async-signal-safe.
                unsafe {
                    libc::close(fd as RawFd);
                }
            }
        }
    }
    OPEN.store(0, Ordering::Relaxed);
    READ_AT.store(0, Ordering::Relaxed);
    WAITING.store(0, Ordering::Relaxed);
}

/// Makes this module's lazy statics (see `host::init`).
pub(crate) fn init() {
    epoch();
    holders();
    stacks();
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// The budget, re-read if older than `max_age`.
fn budget(max_age: u64) -> usize {
    let at = READ_AT.load(Ordering::Relaxed);
    let now = now_ms();
    if at != 0 && now.saturating_sub(at) < max_age {
        return BUDGET.load(Ordering::Relaxed);
    }
    // One thread reads; the others keep the last figure meanwhile (none yet: they read too).
    if at != 0
        && READ_AT
            .compare_exchange(at, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return BUDGET.load(Ordering::Relaxed);
    }
    let b = compute_budget();
    BUDGET.store(b, Ordering::Relaxed);
    READ_AT.store(now, Ordering::Relaxed);
    b
}

fn compute_budget() -> usize {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return 1024;
    }
    let soft = usize::try_from(l.rlim_cur).unwrap_or(usize::MAX);
    let ours = OPEN.load(Ordering::Relaxed);
    let host = match std::fs::read_dir("/proc/self/fd") {
        // Less the directory's own descriptor, and ours.
        Ok(d) => d.count().saturating_sub(1).saturating_sub(ours),
        // Where it cannot be read: assume the host uses a quarter of its limit.
        Err(_) => soft / 4,
    };
    (soft.saturating_sub(host) / 2).min(MAX_BUDGET)
}

/// Places of a budget that sockets leave to engines starting (an engine needs two: its
/// epoll and its waker), so that a client whose engine is not running can start it
/// while other clients' connections fill the rest. None under a very small budget.
fn engine_reserve(budget: usize) -> usize {
    if budget >= 8 {
        2
    } else {
        0
    }
}

/// True if a new socket fits in the budget beside `coming` more already admitted.
pub(crate) fn room(coming: usize) -> bool {
    let b = budget(1000);
    let room = OPEN.load(Ordering::Relaxed) + coming + engine_reserve(b) < b;
    if !room {
        want();
    }
    room
}

/// Takes one place in the budget (for a socket, or for an engine's descriptor: those
/// may use the places sockets leave); false when it is full (re-read first, if it is
/// more than 100 ms old).
fn reserve(engine: bool) -> bool {
    let take = |b: usize| {
        let limit = if engine { b } else { b - engine_reserve(b) };
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
    };
    take(budget(1000)) || take(budget(100)) || {
        want();
        false
    }
}

/// A descriptor the library opened: counted, marked for the fork handler, and closed when
/// dropped, unless dropped in a forked child (then it was closed there already and its
/// number may be someone else's: it is left alone).
pub(crate) struct Tracked<T: AsRawFd> {
    inner: ManuallyDrop<T>,
    generation: u64,
}

impl<T: AsRawFd> Tracked<T> {
    /// Tracks a descriptor opened outside the budget (tests).
    #[cfg(test)]
    pub(crate) fn new(inner: T) -> Tracked<T> {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Tracked::reserved(inner)
    }

    /// Opens a descriptor (an engine's epoll and waker) within the budget: refused
    /// (`FULL`) when the budget has no place for it.
    pub(crate) fn open(open: impl FnOnce() -> io::Result<T>) -> io::Result<Tracked<T>> {
        if !reserve(true) {
            return Err(io::Error::other(FULL));
        }
        match open() {
            Ok(inner) => Ok(Tracked::reserved(inner)),
            Err(e) => {
                OPEN.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Tracks a descriptor whose place in the budget is already taken.
    fn reserved(inner: T) -> Tracked<T> {
        mark(inner.as_raw_fd(), true);
        Tracked {
            inner: ManuallyDrop::new(inner),
            generation: generation(),
        }
    }

    /// True in the process that opened it.
    pub(crate) fn is_ours(&self) -> bool {
        self.generation == generation()
    }
}

impl<T: AsRawFd> Drop for Tracked<T> {
    fn drop(&mut self) {
        if !self.is_ours() {
            return; // leaked: see above
        }
        mark(self.inner.as_raw_fd(), false);
        OPEN.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

impl<T: AsRawFd> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsRawFd> std::ops::DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsRawFd> AsRawFd for Tracked<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<T: AsRawFd + Read> Read for Tracked<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<T: AsRawFd + Write> Write for Tracked<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: AsRawFd + mio::event::Source> mio::event::Source for Tracked<T> {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.inner.register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.inner.reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.inner.deregister(registry)
    }
}

/// A socket of the library's.
pub(crate) type Sock = Tracked<mio::net::TcpStream>;

/// Starts a non-blocking connect to `addr` within the budget: None when it is full.
pub(crate) fn connect(addr: SocketAddr) -> io::Result<Option<Sock>> {
    if !reserve(false) {
        return Ok(None);
    }
    match mio::net::TcpStream::connect(addr) {
        Ok(s) => Ok(Some(Tracked::reserved(s))),
        Err(e) => {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Wakes an engine's `poll`: an eventfd of the library's (mio's own waker hides its
/// descriptor from the fork handler).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) struct Waker(Tracked<std::os::fd::OwnedFd>);

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Waker {
    pub(crate) fn new(registry: &mio::Registry, token: mio::Token) -> io::Result<Waker> {
        use std::os::fd::FromRawFd;
        let owned = Tracked::open(|| {
            // SAFETY: eventfd returns a new descriptor or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is ours and open.
            Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        })?;
        let fd = owned.as_raw_fd();
        registry.register(
            &mut mio::unix::SourceFd(&fd),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(Waker(owned))
    }

    /// Each write is a new edge for the (edge-triggered) poll; nothing needs reading,
    /// unless the counter is full.
    pub(crate) fn wake(&self) -> io::Result<()> {
        if !self.0.is_ours() {
            return Ok(()); // the parent's, in a forked child: its number may be reused
        }
        let fd = self.0.as_raw_fd();
        let one = 1u64.to_ne_bytes();
        loop {
            // SAFETY: writes 8 bytes from a live buffer to our eventfd.
            let n = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let mut buf = [0u8; 8];
                    // SAFETY: reads 8 bytes into a live buffer: resets the counter.
                    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
                }
                _ => return Err(e),
            }
        }
    }
}

/// Elsewhere, mio's waker (its descriptor is not closed in a forked child).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) struct Waker(mio::Waker);

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl Waker {
    pub(crate) fn new(registry: &mio::Registry, token: mio::Token) -> io::Result<Waker> {
        mio::Waker::new(registry, token).map(Waker)
    }
    pub(crate) fn wake(&self) -> io::Result<()> {
        self.0.wake()
    }
}
