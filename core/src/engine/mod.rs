//! The event-driven engine under `hangup_async` and `hangup_many`: one loop thread per
//! client on `mio` (epoll), non-blocking sockets, the connection state machine of
//! `conn.rs` (ureq-proto framing, rustls), and timers for deadlines, connect races and
//! retry waits, so a waiting retry holds no connection and no slot.
//!
//! - The caller's thread only validates and enqueues (a lock, a push, a wake).
//! - Callbacks never run on the loop: they go to the client's callback pool
//!   (`pool.rs`), so a callback may call any function of the client, bulk included.
//! - A bulk call is a batch with its own `max_parallel` budget, admitted beside the
//!   async queue (whose own budget is the client's `max_connections`, at most
//!   [`ASYNC_PARALLEL`]): it never waits behind async backlog.
//! - The thread starts on first use and exits after [`IDLE_EXIT`] with nothing to do,
//!   closing its idle connections; `stop` (the client's drop) lets every queued hangup
//!   start at once, waits for the last, and joins the thread.
//! - DNS never blocks the loop: a lookup runs on a helper thread of the address book,
//!   which wakes the loop when it answers; every hangup waiting for it takes its answer,
//!   a failure too, by its ticket.
//! - Connections to the server (one host per client): async hangups hold at most
//!   `max_connections` (the client's option, 64 by default), each bulk call at most its
//!   own `max_parallel` beside them (so it never waits behind async backlog); new
//!   connections are set up (resolved, connected) within a connect window that starts
//!   small and grows with each connect that succeeds (see [`MAX_CONNECTING`]), so a burst
//!   does not overflow a small server's listen backlog, nor crawl over a WAN. Hangups beyond wait in
//!   order and take the next connection that comes free (an idle keep-alive one at once).

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use ureq_proto::http::{Method, Uri};

use crate::contract::error::HangupResult;
use crate::contract::error::{Error, Status};
use crate::contract::options::LogLevel;
use crate::contract::options::ASYNC_PARALLEL;
use crate::host::fds::Notify;
use crate::host::fds::{Tracked, Waker};
use crate::host::pool::{WorkerPool, IDLE_EXIT};
use crate::net::conn::{AttemptError, Conn, Fail};
use crate::net::idle::IDLE_CONN;
use crate::net::resolve::{Lookup, Ticket};
use crate::net::transport::{Race, Raced};
use crate::policy::response::MAX_BODY;
use crate::policy::retry::Aimd;
use crate::state::Core;

/// The connect window: how many new connections may be set up (resolving, or
/// connecting) at once. A server that accepts slowly with a small listen backlog
/// (Python's `http.server`: 5) drops the SYNs beyond it, and a dropped SYN is sent again
/// only after 1 s, then 3 s: a connect timeout. So the window starts at
/// `INITIAL_CONNECTING` (4), which such a backlog holds, grows by one per connect that
/// succeeds (it doubles per round trip, as TCP's slow start: a fast server, or one across
/// a WAN, gets its connections within a few round trips, not four at a time) up to this
/// limit, and halves, not below the start, when a connect times out.
pub const MAX_CONNECTING: usize = 256;

/// Where the connect window starts (and how small it shrinks).
pub(crate) const INITIAL_CONNECTING: usize = 4;

/// How an async hangup's outcome reaches its caller.
pub(crate) type Done = Box<dyn FnOnce(HangupResult) + Send + 'static>;

/// Work handed to the engine.
pub(crate) enum Work {
    /// One async hangup of a validated id.
    One { id: String, done: Done },
    /// A bulk call: its validated ids, at most `max` in flight; the outcomes go back as
    /// `reply` says (None: not started, `stop_at` had passed or `control` said stop). A
    /// hangup started ends by `stop_at` too (TIMEOUT if it has no outcome by then).
    Batch {
        ids: Vec<String>,
        max: usize,
        stop_at: Option<Instant>,
        reply: Reply,
        /// A sweep's: its stop flag, rate and AIMD parallelism (None: a fixed `max`).
        control: Option<Arc<BatchControl>>,
    },
}

/// How a batch's outcomes go back to the caller.
pub(crate) enum Reply {
    /// All at once in the ids' order when the last is in (one wake-up of the waiting
    /// caller, not one per hangup): `hangup_many`.
    AtEnd(Sender<Vec<Option<HangupResult>>>),
    /// Each as it comes, with its index: sweeps, whose caller reports every call as it
    /// settles.
    Each(Sender<(usize, Option<HangupResult>)>),
}

/// What a sweep's caller steers in its running batch, and what the batch tells back.
#[derive(Debug, Default)]
pub(crate) struct BatchControl {
    /// Set by the caller: start no more hangups (those started finish).
    pub stop: AtomicBool,
    /// Hangups started per second at most (0: no limit).
    pub max_rate: u32,
    /// 429 answers seen (retried or not).
    pub rate_limited: AtomicU64,
    /// Times a 429 halved the parallelism.
    pub backoffs: AtomicU64,
    /// The parallelism now.
    pub parallel: AtomicUsize,
}

const WAKER: Token = Token(usize::MAX);

/// The client's handle on its engine.
pub(crate) struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    core: Arc<Core>,
    callbacks: Arc<WorkerPool>,
    inbox: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    queue: Vec<Work>,
    /// The loop thread is alive (and will look at the queue again before it exits).
    running: bool,
    waker: Option<Arc<Waker>>,
    thread: Option<JoinHandle<()>>,
    /// Threads that exited when idle, until joined.
    exited: Vec<JoinHandle<()>>,
    stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    pub(crate) fn new(core: Arc<Core>, callbacks: Arc<WorkerPool>) -> Engine {
        Engine {
            shared: Arc::new(Shared {
                core,
                callbacks,
                inbox: Mutex::new(Inbox::default()),
            }),
        }
    }

    /// Writes the engine's log lines queued so far on this thread, unless another
    /// thread is writing them now (a bulk caller's lines come before its return); lines
    /// queued meanwhile are left to a callback thread, the loop woken to schedule one.
    pub(crate) fn write_queued_log(&self) {
        let core = &self.shared.core;
        core.drain_log_until(Some(core.log_mark()));
        if core.log_orphaned() {
            if let Some(w) = &lock(&self.shared.inbox).waker {
                let _ = w.wake();
            }
        }
    }

    /// Hands `work` to the loop, starting its thread if need be. Refused (the work
    /// handed back, nothing sent) once the client is being dropped, or when no thread
    /// can be started.
    pub(crate) fn submit(&self, work: Work) -> Result<(), (String, Work)> {
        let mut inbox = lock(&self.shared.inbox);
        if inbox.stopping {
            return Err(("the client is being freed".into(), work));
        }
        if !inbox.running {
            if let Err(e) = self.start(&mut inbox) {
                return Err((format!("the engine could not start: {e}"), work));
            }
        }
        inbox.queue.push(work);
        // Only the first of a burst wakes the loop: it takes the whole queue at once.
        if inbox.queue.len() == 1 {
            if let Some(w) = &inbox.waker {
                let _ = w.wake();
            }
        }
        Ok(())
    }

    /// Wakes the loop to look at its batches again (a sweep's stop flag was set).
    pub(crate) fn nudge(&self) {
        if let Some(w) = &lock(&self.shared.inbox).waker {
            let _ = w.wake();
        }
    }

    fn start(&self, inbox: &mut Inbox) -> std::io::Result<()> {
        // A thread that exited when idle is finished or about to be: not joined here (on
        // the caller's thread, perhaps a media thread), only kept for `stop` to join.
        if let Some(old) = inbox.thread.take() {
            inbox.exited.push(old);
        }
        inbox.exited.retain(|h| !h.is_finished());
        // Both descriptors are the library's: taken in the process's budget (refused,
        // BUSY, when it is full: the host's half is never touched), and closed in a
        // forked child.
        let poll = Tracked::open(Poll::new)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shared = Arc::clone(&self.shared);
        let w = Arc::clone(&waker);
        let handle = std::thread::Builder::new()
            .name("tryvox-engine".into())
            .stack_size(crate::host::pool::WORKER_STACK)
            .spawn(move || run(shared, poll, w))?;
        inbox.thread = Some(handle);
        inbox.waker = Some(waker);
        inbox.running = true;
        Ok(())
    }

    /// True once the client is being dropped.
    pub(crate) fn is_stopping(&self) -> bool {
        lock(&self.shared.inbox).stopping
    }

    /// Refuses new work, lets every queued hangup start at once, and returns when the
    /// last has finished and handed its callback to the pool.
    pub(crate) fn stop(&self) {
        let handle = {
            let mut inbox = lock(&self.shared.inbox);
            inbox.stopping = true;
            if let Some(w) = &inbox.waker {
                let _ = w.wake();
            }
            let mut all = std::mem::take(&mut inbox.exited);
            all.extend(inbox.thread.take());
            all
        };
        for h in handle {
            let _ = h.join();
        }
    }
}

/// The loop thread: runs until stopped or idle, every panic caught (the jobs it held
/// still get an outcome, INTERNAL_ERROR).
fn run(shared: Arc<Shared>, poll: Tracked<Poll>, waker: Arc<Waker>) {
    let w = Arc::clone(&waker);
    let notify: Notify = Arc::new(move || {
        let _ = w.wake();
    });
    let mut lp = Loop::new(
        Arc::clone(&shared.core),
        Arc::clone(&shared.callbacks),
        poll,
        notify,
    );
    let mut events = Events::with_capacity(1024);
    let mut idle_since = Instant::now();
    crate::host::pool::set_engine_thread(true);
    loop {
        let turn = catch_unwind(AssertUnwindSafe(|| {
            lp.turn(&shared, &mut events, &mut idle_since)
        }));
        match turn {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => lp.fail_everything(),
        }
    }
    lp.close_all();
    crate::host::pool::set_engine_thread(false);
    lp.deliver_stragglers();
    // Lines the callback threads did not write yet: written here, in order.
    lp.core.drain_log();
}

/// A job's attempt ended: the place it held in its budget (async, or its batch's) is free.
/// A controlled batch's attempt was answered: 429 halves its parallelism (once per window
/// of attempts, `retry::Aimd`), any other answer counts toward raising it again.
fn adapt(batches: &mut Slab<Batch>, b: usize, sent_seq: u64, rate_limited: bool) {
    let Some(batch) = batches.get_mut(b) else {
        return;
    };
    let Some(control) = &batch.control else {
        return;
    };
    if rate_limited {
        control.rate_limited.fetch_add(1, Ordering::Relaxed);
        if batch.aimd.rate_limited(sent_seq, batch.sent) {
            control.backoffs.fetch_add(1, Ordering::Relaxed);
        }
    } else {
        batch.aimd.answered();
    }
    control
        .parallel
        .store(batch.aimd.limit(), Ordering::Relaxed);
}

fn release_budget(async_active: &mut usize, batches: &mut Slab<Batch>, origin: &Origin) {
    match origin {
        Origin::Async(_) => *async_active -= 1,
        Origin::Batch { batch, .. } => {
            if let Some(b) = batches.get_mut(*batch) {
                b.active -= 1;
            }
        }
    }
}

/// A timer's purpose; each is removed when what it guards ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The job's deadline.
    Deadline(usize),
    /// The job's retry wait is over.
    Retry(usize),
    /// A connecting slot: its connect timeout, or its next Happy Eyeballs address.
    Slot(usize),
    /// Callbacks the pool refused are offered again.
    Redeliver,
    /// A paced batch may start its next id.
    Pace(usize),
}

type TimerKey = (Instant, u64);

enum Origin {
    Async(Done),
    Batch { batch: usize, index: usize },
}

struct Job {
    serial: u64,
    id: String,
    uri: Uri,
    origin: Origin,
    start: Instant,
    deadline: Instant,
    deadline_key: TimerKey,
    retries: u32,
    attempt_start: Instant,
    slot: Option<usize>,
    retry_key: Option<TimerKey>,
    /// Waiting in its batch's `ready` queue (counted in its `queued`).
    queued: bool,
    /// Its batch's sequence number of its latest attempt.
    sent_seq: u64,
}

enum SlotState {
    Resolving,
    Racing(Race),
    Open(Box<Conn>),
}

struct Slot {
    state: SlotState,
    job: Option<usize>,
    /// Connect deadline while resolving or racing.
    connect_until: Instant,
    timer: Option<TimerKey>,
    /// Counted in `idle` (not carrying a request), since `idle_at`.
    idle: bool,
    idle_at: Instant,
    /// The engine's turn in which it went idle.
    idle_turn: u64,
    /// An event reported the peer's hang-up (or an error): never reused unprobed.
    hup: bool,
    serial: u64,
}

struct Batch {
    ids: Vec<String>,
    next: usize,
    /// Jobs on a connection.
    active: usize,
    /// Jobs (index, serial) waiting for a connection: admitted ids and those whose retry
    /// wait is over; stale entries (ended by their deadline) are skipped.
    ready: VecDeque<(usize, u64)>,
    /// The live jobs in `ready`. An id is admitted (its deadline starts) while `active +
    /// queued` is below `max`: whether a connection is to be had or not, so a server that
    /// never accepts, or a lookup that never answers, costs a batch one timeout, not one
    /// per connect window's worth of ids.
    queued: usize,
    /// Outcomes still to come.
    left: usize,
    stop_at: Option<Instant>,
    /// `Reply::AtEnd`'s outcomes so far.
    out: Vec<Option<HangupResult>>,
    reply: Reply,
    control: Option<Arc<BatchControl>>,
    /// The parallelism: `max`, or less after 429s (`control`'s batches only).
    aimd: Aimd,
    /// With a `max_rate`: when the next id may start, and whether a timer waits for it.
    pace_next: Option<Instant>,
    pace_timer: bool,
    /// Attempts sent so far (each attempt's sequence number, for the AIMD window).
    sent: u64,
    /// Jobs waiting out a retry's wait (after a 429's `Retry-After`, say). A controlled
    /// batch counts them in its parallelism: a server that asked for time gets no new
    /// ids meanwhile. A plain bulk call gives their place to the next id.
    retrying: usize,
}

impl Batch {
    /// In flight at once now.
    fn limit(&self) -> usize {
        self.aimd.limit()
    }

    /// Jobs that hold a place against `limit` when admitting a new id.
    fn holding(&self) -> usize {
        self.active
            + self.queued
            + if self.control.is_some() {
                self.retrying
            } else {
                0
            }
    }

    fn stopped(&self, now: Instant) -> bool {
        self.stop_at.is_some_and(|t| now >= t)
            || self
                .control
                .as_ref()
                .is_some_and(|c| c.stop.load(Ordering::Relaxed))
    }

    /// One outcome (None: not started).
    fn record(&mut self, index: usize, result: Option<HangupResult>) {
        self.left -= 1;
        match &self.reply {
            Reply::AtEnd(_) => self.out[index] = result,
            Reply::Each(tx) => {
                let _ = tx.send((index, result));
            }
        }
    }
}

/// A slab: indices stay valid while their entry lives; freed ones are reused.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
    fn insert(&mut self, t: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(t);
                i
            }
            None => {
                self.items.push(Some(t));
                self.items.len() - 1
            }
        }
    }
    fn remove(&mut self, i: usize) -> Option<T> {
        let t = self.items.get_mut(i)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(t)
    }
    fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }
    fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        self.items.drain(..).flatten().collect()
    }
}

struct Loop {
    core: Arc<Core>,
    callbacks: Arc<WorkerPool>,
    poll: Tracked<Poll>,
    notify: Notify,
    jobs: Slab<Job>,
    slots: Slab<Slot>,
    batches: Slab<Batch>,
    /// Idle connections (slot, serial), most recent last (reused first); stale entries
    /// are skipped; the oldest, at the front, are closed after [`IDLE_CONN`].
    idle: VecDeque<(usize, u64)>,
    last_reap: Instant,
    /// Counts the loop's turns (each one poll for events).
    turn_no: u64,
    /// Async jobs (index, serial) waiting for a slot, in order (retries first).
    waiting: VecDeque<(usize, u64)>,
    async_active: usize,
    /// Slots waiting for a DNS answer, with their lookup's ticket.
    resolving: Vec<(usize, u64, Ticket)>,
    timers: BTreeMap<TimerKey, Timer>,
    serial: u64,
    /// Connections that may be open at once. Descriptors are bounded by the process's
    /// budget (`fds.rs`), shared by every client, which `has_room` asks too.
    conn_cap: usize,
    /// Async hangups in flight, each on its connection, at once (the client's
    /// `max_connections`: the per-host limit; batches have their own `max_parallel`).
    host_limit: usize,
    /// Slots being set up: resolving or racing (at most `connect_window`).
    connecting: usize,
    /// How many may be set up at once: [`INITIAL_CONNECTING`] up to [`MAX_CONNECTING`].
    connect_window: usize,
    /// This turn's callbacks, for the pool.
    ready_callbacks: Vec<(Done, HangupResult)>,
    /// Callbacks the pool could not take yet.
    undelivered: Vec<(Done, HangupResult)>,
    stopping: bool,
    /// `fds::wanted()` when idle connections were last shed.
    seen_wanted: u64,
    /// This loop is on the list of engines woken when work waits for a descriptor.
    holding: bool,
    /// Counted as a waiter while work of this loop waits for a place in the budget.
    budget_waiter: Option<crate::host::fds::Waiting>,
    /// After giving a place up to another client's waiter: no new connection before.
    yield_until: Option<Instant>,
}

impl Loop {
    fn new(
        core: Arc<Core>,
        callbacks: Arc<WorkerPool>,
        poll: Tracked<Poll>,
        notify: Notify,
    ) -> Loop {
        // Not a share of the descriptors free when this engine starts (three clients
        // would leave the host none): the process's one budget governs.
        let conn_cap = crate::host::fds::MAX_BUDGET;
        let host_limit = core.max_connections.clamp(1, ASYNC_PARALLEL);
        Loop {
            core,
            callbacks,
            poll,
            notify,
            jobs: Slab::new(),
            slots: Slab::new(),
            batches: Slab::new(),
            idle: VecDeque::new(),
            last_reap: Instant::now(),
            turn_no: 0,
            waiting: VecDeque::new(),
            async_active: 0,
            resolving: Vec::new(),
            timers: BTreeMap::new(),
            serial: 0,
            conn_cap,
            host_limit,
            connecting: 0,
            connect_window: INITIAL_CONNECTING,
            ready_callbacks: Vec::new(),
            undelivered: Vec::new(),
            stopping: false,
            seen_wanted: crate::host::fds::wanted(),
            budget_waiter: None,
            yield_until: None,
            holding: false,
        }
    }

    /// Work waits for a place in the process's descriptor budget: idle connections
    /// give theirs up (reused, they would only save a connect).
    fn shed_idle_if_wanted(&mut self) {
        let w = crate::host::fds::wanted();
        if w == self.seen_wanted {
            return;
        }
        self.seen_wanted = w;
        self.holding = false; // the list was emptied by whoever woke it
        while let Some((s, serial)) = self.idle.pop_front() {
            if self
                .slots
                .get(s)
                .is_some_and(|slot| slot.serial == serial && slot.idle)
            {
                self.close_slot(s);
            }
        }
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn add_timer(&mut self, at: Instant, t: Timer) -> TimerKey {
        let key = (at, self.next_serial());
        self.timers.insert(key, t);
        key
    }

    fn busy(&self) -> bool {
        self.jobs.len > 0
            || self.batches.len > 0
            || !self.undelivered.is_empty()
            || !self.ready_callbacks.is_empty()
    }

    /// One turn of the loop: take new work, wait for events or the next timer, handle
    /// them, admit what may start. False when the thread should exit.
    fn turn(&mut self, shared: &Shared, events: &mut Events, idle_since: &mut Instant) -> bool {
        let (work, stopping) = {
            let mut inbox = lock(&shared.inbox);
            let work = std::mem::take(&mut inbox.queue);
            if work.is_empty() && !self.busy() {
                if inbox.stopping {
                    inbox.running = false;
                    inbox.waker = None;
                    return false;
                }
                if idle_since.elapsed() >= IDLE_EXIT {
                    // Idle: exit. A submit from now on starts a new thread.
                    inbox.running = false;
                    inbox.waker = None;
                    return false;
                }
            }
            (work, inbox.stopping)
        };
        self.stopping = stopping;
        for w in work {
            self.accept(w);
        }
        self.pump();
        // Outcomes from outside a turn (a caught panic's) must not wait for an event.
        self.flush_callbacks();
        let now = Instant::now();
        let mut timeout = self
            .timers
            .keys()
            .next()
            .map(|(at, _)| at.saturating_duration_since(now));
        if !self.busy() {
            let exit_in = IDLE_EXIT.saturating_sub(idle_since.elapsed());
            timeout = Some(timeout.map_or(exit_in, |t| t.min(exit_in)));
        }
        let waits = self.busy() && self.waits_for_room();
        if waits != self.budget_waiter.is_some() {
            self.budget_waiter = waits.then(crate::host::fds::Waiting::new);
        }
        if waits {
            let poll = crate::host::fds::ROOM_POLL;
            timeout = Some(timeout.map_or(poll, |t| t.min(poll)));
        }
        // A yield ends by itself: the work it held back starts then.
        match self.yield_until {
            Some(t) if t <= now => self.yield_until = None,
            Some(t) if self.busy() => {
                let left = t - now;
                timeout = Some(timeout.map_or(left, |x| x.min(left)));
            }
            _ => {}
        }
        // epoll counts milliseconds: round up so a timer is not polled for in a spin.
        let timeout = timeout.map(|t| {
            let ms = t.as_micros().div_ceil(1000);
            Duration::from_millis(ms.min(u64::MAX as u128) as u64)
        });
        if !self.idle.is_empty() && !self.holding {
            // Woken, without polling, when another client's work waits for a descriptor.
            crate::host::fds::hold_idle(&self.notify);
            self.holding = true;
        }
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.core
                    .log(LogLevel::Error, || format!("the engine's poll failed: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Connections that go idle from here on have not been polled since.
        self.turn_no += 1;
        let mut woken = false;
        for ev in events.iter() {
            if ev.token() == WAKER {
                woken = true;
            } else {
                // Error and hang-up count as readable: the read reports them.
                let hup = ev.is_read_closed() || ev.is_error();
                let readable = ev.is_readable() || hup;
                let s = ev.token().0;
                if hup {
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.hup = true;
                    }
                }
                // A panic here (a bug of ours) costs this slot's hangup, not the others.
                if catch_unwind(AssertUnwindSafe(|| self.on_ready(s, readable))).is_err() {
                    self.fail_slot(s);
                }
            }
        }
        if woken {
            self.resolved();
        }
        self.fire_timers();
        self.reap_idle();
        self.shed_idle_if_wanted();
        self.pump();
        self.flush_callbacks();
        self.schedule_log_drain();
        if self.busy() {
            *idle_since = Instant::now();
        }
        true
    }

    /// Hands queued log lines to a callback thread (never written on the loop).
    fn schedule_log_drain(&mut self) {
        if self.core.schedule_log_drain(true) {
            let core = Arc::clone(&self.core);
            if self
                .callbacks
                .submit(Box::new(move || core.drain_log()))
                .is_err()
            {
                self.core.schedule_log_drain(false);
            }
        }
    }

    /// Closes connections idle for [`IDLE_CONN`] (checked once a second): after a burst
    /// of 1,000, a client that goes on with a trickle keeps what the trickle uses.
    fn reap_idle(&mut self) {
        if self.last_reap.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_reap = Instant::now();
        while let Some(&(s, serial)) = self.idle.front() {
            match self.slots.get(s) {
                Some(slot) if slot.serial == serial && slot.idle => {
                    if slot.idle_at.elapsed() < IDLE_CONN {
                        break;
                    }
                    self.idle.pop_front();
                    self.close_slot(s);
                }
                _ => {
                    self.idle.pop_front();
                }
            }
        }
    }

    fn accept(&mut self, work: Work) {
        match work {
            Work::One { id, done } => {
                if let Some(j) = self.new_job(id, Origin::Async(done)) {
                    let serial = self.jobs.get(j).map_or(0, |job| job.serial);
                    self.waiting.push_back((j, serial));
                }
            }
            Work::Batch {
                ids,
                max,
                stop_at,
                reply,
                control,
            } => {
                let left = ids.len();
                if left == 0 {
                    if let Reply::AtEnd(tx) = reply {
                        let _ = tx.send(Vec::new());
                    }
                    return;
                }
                let max = max.max(1);
                if let Some(c) = &control {
                    c.parallel.store(max, Ordering::Relaxed);
                }
                self.batches.insert(Batch {
                    out: match reply {
                        Reply::AtEnd(_) => (0..left).map(|_| None).collect(),
                        Reply::Each(_) => Vec::new(),
                    },
                    pace_next: control
                        .as_ref()
                        .filter(|c| c.max_rate > 0)
                        .map(|_| Instant::now()),
                    pace_timer: false,
                    sent: 0,
                    retrying: 0,
                    aimd: Aimd::new(max),
                    ids,
                    next: 0,
                    active: 0,
                    ready: VecDeque::new(),
                    queued: 0,
                    left,
                    stop_at,
                    reply,
                    control,
                });
            }
        }
    }

    /// A job for a validated id, counted in flight from now; None if its URL does not
    /// parse (delivered at once as INTERNAL_ERROR).
    fn new_job(&mut self, id: String, origin: Origin) -> Option<usize> {
        let start = Instant::now();
        self.core.stats.in_flight_add(1);
        let uri = match format!("{}{}", self.core.calls_url, id).parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                self.core.stats.in_flight_add(-1);
                self.core
                    .stats
                    .finished(Status::InternalError, Duration::ZERO);
                self.deliver(
                    origin,
                    Err(Error::internal("the request URL did not parse")),
                );
                return None;
            }
        };
        let deadline = crate::policy::retry::later(start, self.core.timeout);
        // A sweep's hangup ends by the sweep's deadline too (its batch's `stop_at`).
        let deadline = match &origin {
            Origin::Batch { batch, .. } => self
                .batches
                .get(*batch)
                .and_then(|b| b.stop_at)
                .map_or(deadline, |stop| deadline.min(stop)),
            _ => deadline,
        };
        let serial = self.next_serial();
        let deadline_key = (deadline, serial);
        let j = self.jobs.insert(Job {
            serial,
            id,
            uri,
            origin,
            start,
            deadline,
            deadline_key,
            retries: 0,
            attempt_start: start,
            slot: None,
            retry_key: None,
            queued: false,
            sent_seq: 0,
        });
        self.timers.insert(deadline_key, Timer::Deadline(j));
        Some(j)
    }

    /// True if another connection may be used now (an idle one, or room for a new one:
    /// within `conn_cap`, and in the process's descriptor budget beside the slots that
    /// will open a socket when their lookup answers).
    fn has_room(&self) -> bool {
        !self.idle.is_empty() || self.room_for_new()
    }

    /// True if a new connection may be opened now: within `conn_cap`, fewer than the
    /// connect window being set up, and in the process's descriptor budget beside the
    /// slots that will open a socket when their lookup answers.
    fn room_for_new(&self) -> bool {
        self.slots.len < self.conn_cap
            && self.connecting < self.connect_window
            && self.yield_until.is_none_or(|t| Instant::now() >= t)
            && crate::host::fds::room(self.resolving.len())
    }

    /// Work is queued that only a free descriptor would start: the budget is shared by
    /// every client, which do not wake each other, so the loop looks again shortly. (A
    /// full connect window needs no look: a connect ending is an event of this loop.)
    fn waits_for_room(&self) -> bool {
        if !self.idle.is_empty()
            || self.slots.len >= self.conn_cap
            || self.connecting >= self.connect_window
            || crate::host::fds::room(self.resolving.len())
        {
            return false;
        }
        (!self.waiting.is_empty() && (self.stopping || self.async_active < self.host_limit))
            || self
                .batches
                .items
                .iter()
                .flatten()
                .any(|b| b.active < b.limit() && (b.next < b.ids.len() || !b.ready.is_empty()))
    }

    /// Starts what the budgets allow: each batch up to its `max_parallel`, async jobs up
    /// to the client's `max_connections` (no limit while stopping: every queued hangup
    /// as soon as it can connect), new connections as the connect window allows.
    fn pump(&mut self) {
        for b in 0..self.batches.items.len() {
            // Admit up to `max_parallel` (less after 429s), no faster than its rate: each
            // admitted id's deadline starts now.
            while let Some(batch) = self.batches.get_mut(b) {
                if batch.next >= batch.ids.len() {
                    break;
                }
                let now = Instant::now();
                let index = batch.next;
                if batch.stopped(now) {
                    // Not started: its outcome is None.
                    batch.next += 1;
                    batch.record(index, None);
                    self.batch_maybe_done(b);
                    continue;
                }
                if batch.holding() >= batch.limit() {
                    break;
                }
                if let Some(at) = batch.pace_next {
                    if now < at {
                        if !batch.pace_timer {
                            batch.pace_timer = true;
                            // By the batch's deadline at the latest: what is not started
                            // then is not started at all, and the caller hears so then.
                            let wake = batch.stop_at.map_or(at, |t| t.min(at));
                            self.add_timer(wake, Timer::Pace(b));
                        }
                        break;
                    }
                    let rate = batch.control.as_ref().map_or(1, |c| c.max_rate.max(1));
                    batch.pace_next = Some(crate::policy::retry::next_start(at, now, rate));
                }
                batch.next += 1;
                let id = std::mem::take(&mut batch.ids[index]);
                if let Some(j) = self.new_job(id, Origin::Batch { batch: b, index }) {
                    self.queue_in_batch(b, j, false);
                }
            }
            // Then connections, as there is room, in order, never more than the limit on
            // the wire (a plain bulk call's jobs back from a retry wait are not in its
            // admission's count: they may find more queued than the limit).
            while self.has_room() {
                let Some(batch) = self.batches.get_mut(b) else {
                    break;
                };
                if batch.active >= batch.limit() {
                    break;
                }
                let Some((j, serial)) = batch.ready.pop_front() else {
                    break;
                };
                let Some(job) = self.jobs.get_mut(j).filter(|job| job.serial == serial) else {
                    continue; // ended meanwhile (its deadline)
                };
                job.queued = false;
                batch.queued -= 1;
                if !self.start_attempt(j) {
                    // No connection after all (the idle ones were stale, or setups are
                    // at their limit): first in line for the next.
                    self.queue_in_batch(b, j, true);
                    break;
                }
            }
        }
        while self.stopping || self.async_active < self.host_limit {
            if !self.has_room() {
                break;
            }
            let Some((j, serial)) = self.waiting.pop_front() else {
                break;
            };
            if self.jobs.get(j).is_none_or(|job| job.serial != serial) {
                continue; // ended meanwhile (its deadline)
            }
            if !self.start_attempt(j) {
                self.waiting.push_front((j, serial));
                break;
            }
        }
    }

    /// A batch job's retry wait ended early (its hangup ended meanwhile).
    fn retry_wait_ended(&mut self, origin: &Origin) {
        if let Origin::Batch { batch, .. } = origin {
            if let Some(b) = self.batches.get_mut(*batch) {
                b.retrying = b.retrying.saturating_sub(1);
            }
        }
    }

    /// Job `j` of batch `b` waits for a connection (at the front: it had its turn).
    fn queue_in_batch(&mut self, b: usize, j: usize, front: bool) {
        let (Some(batch), Some(job)) = (self.batches.get_mut(b), self.jobs.get_mut(j)) else {
            return;
        };
        if job.queued {
            return;
        }
        job.queued = true;
        batch.queued += 1;
        if front {
            batch.ready.push_front((j, job.serial));
        } else {
            batch.ready.push_back((j, job.serial));
        }
    }

    fn batch_maybe_done(&mut self, b: usize) {
        if self.batches.get(b).is_some_and(|bt| bt.left == 0) {
            if let Some(bt) = self.batches.remove(b) {
                if let Reply::AtEnd(tx) = bt.reply {
                    let _ = tx.send(bt.out);
                }
            }
        }
    }

    /// One attempt of `j`: on an idle connection, or a new one if there is room; its
    /// place in its budget (async or its batch's) is taken. False if there is neither
    /// (nothing done, the job is as it was).
    fn start_attempt(&mut self, j: usize) -> bool {
        // The most recent idle connection that is still good.
        while let Some((s, serial)) = self.idle.pop_back() {
            let good = match self.slots.get(s) {
                // A connection that went idle in this turn, whose last read emptied the
                // socket and whose event did not report a hang-up, was read to its end
                // moments ago: no probe (a system call per hangup in a bulk run). Any
                // other is asked whether the server closed it or sent more meanwhile.
                Some(slot) if slot.serial == serial && slot.idle => match &slot.state {
                    SlotState::Open(c) if slot.idle_turn == self.turn_no && !slot.hup => {
                        c.is_clean_and_drained() || c.is_reusable()
                    }
                    SlotState::Open(c) => c.is_reusable(),
                    _ => false,
                },
                _ => continue,
            };
            if !good {
                self.close_slot(s);
                continue;
            }
            if let Some(slot) = self.slots.get_mut(s) {
                slot.idle = false;
                slot.job = Some(j);
            }
            self.attempt_begins(j, Instant::now());
            if let Some(job) = self.jobs.get_mut(j) {
                job.slot = Some(s);
            }
            self.send_request(s, j);
            return true;
        }
        // A new connection.
        if !self.room_for_new() {
            return false;
        }
        let now = Instant::now();
        let until = {
            let job = match self.jobs.get(j) {
                Some(job) => job,
                None => return true,
            };
            job.deadline
                .min(crate::policy::retry::later(now, self.core.connect_timeout))
        };
        self.attempt_begins(j, now);
        let serial = self.next_serial();
        let s = self.slots.insert(Slot {
            state: SlotState::Resolving,
            job: Some(j),
            connect_until: until,
            timer: None,
            idle: false,
            idle_at: now,
            idle_turn: 0,
            hup: false,
            serial,
        });
        self.connecting += 1;
        if let Some(job) = self.jobs.get_mut(j) {
            job.slot = Some(s);
        }
        let key = self.add_timer(until, Timer::Slot(s));
        if let Some(slot) = self.slots.get_mut(s) {
            slot.timer = Some(key);
        }
        self.resolve(s);
        true
    }

    /// Job `j` has a connection: its attempt is counted and takes its place in its
    /// budget.
    fn attempt_begins(&mut self, j: usize, now: Instant) {
        let Some(job) = self.jobs.get_mut(j) else {
            return;
        };
        job.attempt_start = now;
        match job.origin {
            Origin::Async(_) => self.async_active += 1,
            Origin::Batch { batch, .. } => {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.active += 1;
                    job.sent_seq = b.sent;
                    b.sent += 1;
                }
            }
        }
        self.core.stats.attempt();
    }

    /// Asks the address book for the slot's addresses; a race starts when they are known.
    fn resolve(&mut self, s: usize) {
        let route = &self.core.route;
        match self
            .core
            .book
            .poll_addresses(&route.dial_host, route.dial_port, &self.notify)
        {
            Lookup::Pending(ticket) => {
                if let Some(slot) = self.slots.get(s) {
                    self.resolving.push((s, slot.serial, ticket));
                }
            }
            Lookup::Ready(answer) => self.addresses_known(s, answer),
        }
    }

    /// The slot's lookup answered: its race starts, or its attempt fails.
    fn addresses_known(
        &mut self,
        s: usize,
        answer: Result<Vec<std::net::SocketAddr>, crate::net::resolve::ResolveError>,
    ) {
        match answer {
            Err(e) => {
                let e = match e {
                    crate::net::resolve::ResolveError::Timeout => AttemptError::ConnectTimeout,
                    e => AttemptError::Resolve(e),
                };
                self.attempt_failed(s, e);
            }
            Ok(addrs) => {
                if let Some(slot) = self.slots.get_mut(s) {
                    slot.state = SlotState::Racing(Race::new(&addrs));
                }
                self.step_race(s);
            }
        }
    }

    /// A DNS answer arrived (or new work woke the loop): each slot waiting for one takes
    /// its own lookup's answer, by ticket; a failure ends every hangup that waited for
    /// it, once, and starts no new lookup.
    fn resolved(&mut self) {
        if self.resolving.is_empty() {
            return;
        }
        for (s, serial, ticket) in std::mem::take(&mut self.resolving) {
            let live = self
                .slots
                .get(s)
                .is_some_and(|sl| sl.serial == serial && matches!(sl.state, SlotState::Resolving));
            if !live {
                continue;
            }
            match self.core.book.answer(&ticket) {
                Some(answer) => self.addresses_known(s, answer),
                None => self.resolving.push((s, serial, ticket)),
            }
        }
    }

    fn step_race(&mut self, s: usize) {
        let registry = self.poll.registry();
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Racing(race) = &mut slot.state else {
            return;
        };
        let mut reg_error = None;
        let outcome = race.step(&mut |sock| {
            if let Err(e) =
                registry.register(sock, Token(s), Interest::READABLE | Interest::WRITABLE)
            {
                reg_error = Some(e);
            }
        });
        if let Some(e) = reg_error {
            race.abandon();
            self.core.demote_all(race);
            self.attempt_failed(s, AttemptError::Conn(Fail::Io(e)));
            return;
        }
        match outcome {
            Raced::Pending => {
                // The next address, or the connect timeout, whichever comes first.
                let at = race
                    .next_start()
                    .map_or(slot.connect_until, |n| n.min(slot.connect_until));
                let old = slot.timer.take();
                if let Some(k) = old {
                    self.timers.remove(&k);
                }
                let key = self.add_timer(at, Timer::Slot(s));
                if let Some(slot) = self.slots.get_mut(s) {
                    slot.timer = Some(key);
                }
            }
            Raced::Lost(e) => {
                self.core.demote_all(race);
                self.attempt_failed(s, AttemptError::Conn(Fail::Io(e)));
            }
            Raced::Won(sock, peer) => {
                self.core.demote_all(race);
                // The connect timeout goes on covering the proxy's tunnel and TLS.
                if let Some(k) = slot.timer.take() {
                    self.timers.remove(&k);
                }
                let until = slot.connect_until;
                if self.core.route.needs_setup() {
                    let key = self.add_timer(until, Timer::Slot(s));
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.timer = Some(key);
                    }
                }
                let Some(slot) = self.slots.get_mut(s) else {
                    return;
                };
                match Conn::new(
                    sock,
                    peer,
                    &self.core.route,
                    self.core.stats.connection_opened(),
                ) {
                    Ok(conn) => {
                        slot.state = SlotState::Open(Box::new(conn));
                        // Connected: the next setup may start (the tunnel and TLS, if
                        // any, follow on an accepted connection), and the window grows.
                        self.connecting -= 1;
                        self.connect_window = (self.connect_window + 1).min(MAX_CONNECTING);
                        if let Some(j) = slot.job {
                            self.send_request(s, j);
                        }
                    }
                    Err(e) => self.attempt_failed(s, AttemptError::Conn(e)),
                }
            }
        }
    }

    fn send_request(&mut self, s: usize, j: usize) {
        let Some(job) = self.jobs.get(j) else { return };
        let request = self.core.request(Method::DELETE, &job.uri);
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Open(conn) = &mut slot.state else {
            return;
        };
        if let Err(e) = conn.start(request, MAX_BODY) {
            self.attempt_failed(s, AttemptError::Conn(e));
            return;
        }
        self.drive(s, false);
    }

    /// A socket of slot `s` is ready.
    fn on_ready(&mut self, s: usize, readable: bool) {
        let Some(slot) = self.slots.get(s) else {
            return;
        };
        match &slot.state {
            SlotState::Resolving => {}
            SlotState::Racing(_) => self.step_race(s),
            SlotState::Open(c) if slot.job.is_none() => {
                // An idle connection stirred: the server closed it, or sent what was
                // not asked for. Either way it is not reused.
                if !c.is_reusable() {
                    self.close_slot(s);
                }
            }
            SlotState::Open(_) => self.drive(s, readable),
        }
    }

    fn drive(&mut self, s: usize, readable: bool) {
        let Some(slot) = self.slots.get_mut(s) else {
            return;
        };
        let SlotState::Open(conn) = &mut slot.state else {
            return;
        };
        match conn.drive(readable) {
            Ok(None) => {
                // A decided 2xx waits a moment for the rest of its body (see `conn.rs`).
                if let Some(until) = conn.new_grace() {
                    if let Some(k) = slot.timer.take() {
                        self.timers.remove(&k);
                    }
                    let key = self.add_timer(until, Timer::Slot(s));
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.timer = Some(key);
                    }
                }
            }
            Ok(Some((answer, reusable))) => {
                let j = slot.job.take();
                // Another client waits for a descriptor: this one goes back to the
                // budget rather than to the next queued hangup (see `fds::Waiting`).
                let give_up = crate::host::fds::others_wait(self.budget_waiter.is_some());
                if give_up {
                    self.yield_until = Some(Instant::now() + crate::host::fds::YIELD);
                }
                if reusable && !give_up {
                    slot.idle = true;
                    slot.idle_at = Instant::now();
                    slot.idle_turn = self.turn_no;
                    let serial = slot.serial;
                    self.idle.push_back((s, serial));
                } else {
                    self.close_slot(s);
                }
                if let Some(j) = j {
                    self.attempt_done(j, Ok(answer));
                }
            }
            Err(e) => {
                self.core.failed(conn, &e);
                self.attempt_failed(s, AttemptError::Conn(e));
            }
        }
    }

    /// The attempt on slot `s` failed: the slot is closed and its job goes on.
    fn attempt_failed(&mut self, s: usize, e: AttemptError) {
        let j = self.slots.get_mut(s).and_then(|slot| slot.job.take());
        self.close_slot(s);
        if let Some(j) = j {
            self.attempt_done(j, Err(e));
        }
    }

    fn close_slot(&mut self, s: usize) {
        if let Some(mut slot) = self.slots.remove(s) {
            if let Some(k) = slot.timer.take() {
                self.timers.remove(&k);
            }
            match &mut slot.state {
                SlotState::Open(c) => {
                    let _ = self.poll.registry().deregister(&mut c.sock);
                }
                SlotState::Racing(r) => {
                    r.abandon();
                    self.connecting -= 1;
                }
                SlotState::Resolving => self.connecting -= 1,
            }
        }
    }

    /// An attempt of job `j` ended: the outcome, or a retry after a wait (a timer; the
    /// job holds no slot meanwhile).
    fn attempt_done(&mut self, j: usize, outcome: Result<crate::net::wire::Answer, AttemptError>) {
        let Some(job) = self.jobs.get_mut(j) else {
            return;
        };
        job.slot = None;
        let took = job.attempt_start.elapsed();
        release_budget(&mut self.async_active, &mut self.batches, &job.origin);
        if let Origin::Batch { batch, .. } = job.origin {
            let rate_limited = matches!(&outcome, Ok(a) if a.http_status == 429);
            adapt(&mut self.batches, batch, job.sent_seq, rate_limited);
        }
        let attempt = match &outcome {
            Ok(answer) => {
                self.core.log(LogLevel::Debug, || {
                    format!(
                        "DELETE {} -> HTTP {} in {} us",
                        job.uri,
                        answer.http_status,
                        took.as_micros()
                    )
                });
                self.core.hangup_outcome(answer, &job.id)
            }
            Err(e) => self.core.no_response(&Method::DELETE, &job.uri, e),
        };
        let err = match attempt.result {
            Ok(code) => return self.complete(j, Ok(code)),
            Err(e) => e,
        };
        let (retries, deadline) = (job.retries, job.deadline);
        let next = self.core.after_failure(
            format_args!("hangup {}", job.id),
            true,
            err,
            attempt.failure,
            retries,
            deadline,
            took,
        );
        match next {
            Err(e) => self.complete(j, Err(e)),
            Ok(wait) => {
                let key = self.add_timer(Instant::now() + wait, Timer::Retry(j));
                if let Some(job) = self.jobs.get_mut(j) {
                    job.retries += 1;
                    job.retry_key = Some(key);
                    if let Origin::Batch { batch, .. } = job.origin {
                        if let Some(b) = self.batches.get_mut(batch) {
                            b.retrying += 1;
                        }
                    }
                }
            }
        }
    }

    /// The job's outcome: counted, and handed to its caller.
    fn complete(&mut self, j: usize, result: HangupResult) {
        let Some(job) = self.jobs.remove(j) else {
            return;
        };
        self.timers.remove(&job.deadline_key);
        if let Some(k) = job.retry_key {
            self.timers.remove(&k);
            self.retry_wait_ended(&job.origin);
        }
        if job.queued {
            // Its entry in `ready` is stale from now on.
            if let Origin::Batch { batch, .. } = job.origin {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.queued -= 1;
                }
            }
        }
        if let Some(s) = job.slot {
            // Still on a connection (the deadline passed mid-exchange): it goes.
            if let Some(slot) = self.slots.get_mut(s) {
                slot.job = None;
            }
            self.close_slot(s);
            release_budget(&mut self.async_active, &mut self.batches, &job.origin);
        }
        let status = match &result {
            Ok(_) => Status::Ok,
            Err(e) => e.status(),
        };
        self.core.stats.finished(status, job.start.elapsed());
        self.core.stats.in_flight_add(-1);
        self.deliver(job.origin, result);
    }

    fn deliver(&mut self, origin: Origin, result: HangupResult) {
        match origin {
            Origin::Async(done) => self.offer(done, result),
            Origin::Batch { batch, index } => {
                if let Some(b) = self.batches.get_mut(batch) {
                    b.record(index, Some(result));
                }
                self.batch_maybe_done(batch);
            }
        }
    }

    /// Queues a callback with its outcome; the turn's callbacks go to the pool together.
    fn offer(&mut self, done: Done, result: HangupResult) {
        self.ready_callbacks.push((done, result));
    }

    /// Hands this turn's callbacks to the pool as one job, run in order on one callback
    /// thread after the queued log lines: one wake-up per turn, not one per hangup, and
    /// no new thread per burst. If no thread can take them, they are offered again
    /// shortly.
    fn flush_callbacks(&mut self) {
        if self.ready_callbacks.is_empty() {
            return;
        }
        let batch = Arc::new(Mutex::new(std::mem::take(&mut self.ready_callbacks)));
        let theirs = Arc::clone(&batch);
        let core = Arc::clone(&self.core);
        // This job writes the queued lines: no separate job for them this turn.
        let marked = self.core.schedule_log_drain(true);
        let mark = self.core.log_mark();
        let job = Box::new(move || {
            // The lines logged before these outcomes are written before their callbacks
            // run (unless another thread is writing the queue this moment); lines logged
            // later wait for the callbacks, not the other way round.
            core.drain_log_until(Some(mark));
            let generation = crate::host::process::generation();
            let mut list = std::mem::take(&mut *lock(&theirs)).into_iter();
            for (done, result) in list.by_ref() {
                // A panicking callback (a Rust caller's) loses nothing but itself.
                let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
                // It forked, and this is the child: the other callbacks are the
                // parent's, never run (nor dropped) here; this thread stops.
                if crate::host::process::generation() != generation {
                    std::mem::forget((list, core));
                    return;
                }
            }
            // Then the lines queued since (this job stood in for a separate drainer).
            core.drain_log();
        });
        if self.callbacks.submit(job).is_err() {
            if marked {
                self.core.schedule_log_drain(false);
            }
            let list = std::mem::take(&mut *lock(&batch));
            if !list.is_empty() {
                if self.undelivered.is_empty() {
                    self.add_timer(Instant::now() + Duration::from_millis(50), Timer::Redeliver);
                }
                self.undelivered.extend(list);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((&key, _)) = self.timers.first_key_value() {
            if key.0 > now {
                break;
            }
            let Some(t) = self.timers.remove(&key) else {
                break;
            };
            // A panic in one timer's work costs its own hangup only.
            let guarded = catch_unwind(AssertUnwindSafe(|| self.fire(t, now)));
            if guarded.is_err() {
                match t {
                    Timer::Deadline(j) | Timer::Retry(j) => {
                        match self.jobs.get(j).and_then(|job| job.slot) {
                            Some(s) => self.fail_slot(s),
                            None => self.complete(j, Err(Error::caught_panic())),
                        }
                    }
                    Timer::Slot(s) => self.fail_slot(s),
                    Timer::Redeliver | Timer::Pace(_) => {}
                }
            }
        }
    }

    fn fire(&mut self, t: Timer, now: Instant) {
        match t {
            Timer::Deadline(j) => self.deadline_passed(j),
            Timer::Retry(j) => {
                let Some(job) = self.jobs.get_mut(j) else {
                    return;
                };
                job.retry_key = None;
                if let Origin::Batch { batch, .. } = job.origin {
                    if let Some(b) = self.batches.get_mut(batch) {
                        b.retrying = b.retrying.saturating_sub(1);
                    }
                }
                let Some(job) = self.jobs.get_mut(j) else {
                    return;
                };
                if Instant::now() >= job.deadline {
                    let e = self.core.deadline_error(job.start);
                    self.complete(j, Err(e));
                    return;
                }
                let serial = job.serial;
                match job.origin {
                    Origin::Async(_) => self.waiting.push_front((j, serial)),
                    // Before ids admitted meanwhile, as an async retry goes first.
                    Origin::Batch { batch, .. } => self.queue_in_batch(batch, j, true),
                }
            }
            Timer::Slot(s) => {
                let Some(slot) = self.slots.get_mut(s) else {
                    return;
                };
                slot.timer = None;
                if let SlotState::Open(c) = &mut slot.state {
                    // The connect timeout passed: still in the tunnel or the handshake?
                    if !c.is_established() {
                        self.attempt_failed(s, AttemptError::ConnectTimeout);
                    } else if c.grace_until().is_some_and(|g| now >= g) {
                        // The rest of a decided 2xx's body did not come: the answer
                        // stands, the connection goes.
                        let answer = c.cut_short();
                        let j = slot.job.take();
                        self.close_slot(s);
                        if let (Some(j), Some(answer)) = (j, answer) {
                            self.attempt_done(j, Ok(answer));
                        }
                    }
                } else if now >= slot.connect_until {
                    if let SlotState::Racing(r) = &mut slot.state {
                        r.abandon();
                        let losers = std::mem::take(&mut r.losers);
                        for a in losers {
                            self.core.book.demote(a);
                        }
                        // A connect that timed out: the server (or its backlog) is
                        // overwhelmed, or the path lossy; fewer at once.
                        self.connect_window = (self.connect_window / 2).max(INITIAL_CONNECTING);
                    }
                    self.attempt_failed(s, AttemptError::ConnectTimeout);
                } else {
                    self.step_race(s);
                }
            }
            Timer::Redeliver => {
                for (done, result) in std::mem::take(&mut self.undelivered) {
                    self.offer(done, result);
                }
            }
            // `pump`, after the timers, starts the next id.
            Timer::Pace(b) => {
                if let Some(batch) = self.batches.get_mut(b) {
                    batch.pace_timer = false;
                }
            }
        }
    }

    /// The job's deadline passed: whatever it was doing ends now.
    fn deadline_passed(&mut self, j: usize) {
        let Some(job) = self.jobs.get(j) else { return };
        let connecting = job
            .slot
            .and_then(|s| self.slots.get(s))
            .is_some_and(|slot| match &slot.state {
                SlotState::Open(c) => !c.is_established(),
                _ => true,
            });
        match job.slot {
            Some(s) => {
                // A hangup whose status line came is decided by it, body or not.
                let cut = match self.slots.get_mut(s).map(|slot| &mut slot.state) {
                    Some(SlotState::Open(c)) => c.cut_short(),
                    _ => None,
                };
                if let Some(answer) = cut {
                    if let Some(slot) = self.slots.get_mut(s) {
                        slot.job = None;
                    }
                    self.close_slot(s);
                    return self.attempt_done(j, Ok(answer));
                }
                let e = if connecting {
                    AttemptError::ConnectTimeout
                } else {
                    AttemptError::Deadline
                };
                self.attempt_failed(s, e);
                // The retry rules see no time left: the job ends with this attempt's error.
            }
            None => {
                let mut e = self.core.deadline_error(job.start);
                // Queued with the budget full now: a descriptor is what it waited for.
                if !crate::host::fds::room(self.resolving.len()) {
                    e = e.append(&format!(": {}", crate::host::fds::WAITED_FOR_DESCRIPTOR));
                }
                self.complete(j, Err(e));
            }
        }
    }

    /// A panic escaped a turn: every job ends with INTERNAL_ERROR (exactly once), every
    /// connection is closed, and the loop goes on.
    fn fail_everything(&mut self) {
        for mut slot in self.slots.drain() {
            if let SlotState::Open(c) = &mut slot.state {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
        }
        self.idle.clear();
        self.resolving.clear();
        self.connecting = 0;
        self.timers.clear();
        self.waiting.clear();
        self.async_active = 0;
        // Batches stay: their ids not started yet still run.
        for b in self.batches.items.iter_mut().flatten() {
            b.active = 0;
            b.queued = 0;
            b.ready.clear();
            b.pace_timer = false;
            b.retrying = 0;
        }
        for job in self.jobs.drain() {
            self.core.stats.in_flight_add(-1);
            self.core
                .stats
                .finished(Status::InternalError, job.start.elapsed());
            self.deliver(job.origin, Err(Error::caught_panic()));
        }
        // Callbacks the pool could not take yet lost their timer with the rest.
        if !self.undelivered.is_empty() {
            self.add_timer(Instant::now() + Duration::from_millis(50), Timer::Redeliver);
        }
    }

    /// A panic while handling one slot's event or timer: only its job fails (`complete`
    /// closes the slot and frees the job's budget).
    fn fail_slot(&mut self, s: usize) {
        match self.slots.get(s).and_then(|slot| slot.job) {
            Some(j) => self.complete(j, Err(Error::caught_panic())),
            None => self.close_slot(s),
        }
    }

    fn close_all(&mut self) {
        for s in 0..self.slots.items.len() {
            self.close_slot(s);
        }
        self.idle.clear();
    }

    /// At exit, callbacks the pool never took run here (the client is being dropped).
    fn deliver_stragglers(&mut self) {
        self.flush_callbacks();
        for (done, result) in std::mem::take(&mut self.undelivered) {
            let _ = catch_unwind(AssertUnwindSafe(|| done(result)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// A server on 127.0.0.1: 204 for every request, except ids with "hang" (no answer).
    fn server() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = s.read(&mut chunk) {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            if !String::from_utf8_lossy(&head).contains("hang") {
                                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn turns_until(lp: &mut Loop, shared: &Shared, mut done: impl FnMut(&Loop) -> bool) {
        let mut events = Events::with_capacity(64);
        let mut idle = Instant::now();
        let until = Instant::now() + Duration::from_secs(20);
        while !done(lp) {
            assert!(Instant::now() < until, "the loop got there in time");
            lp.turn(shared, &mut events, &mut idle);
        }
    }

    /// The panic containment of the loop, driven by hand: a panic while handling one
    /// slot fails that hangup only (once, INTERNAL_ERROR); a panic outside any slot
    /// fails the hangups held, but a batch keeps its ids not yet started and runs them.
    #[test]
    fn a_panic_fails_only_what_it_touched_and_batches_go_on() {
        let addr = server();
        let mut o = crate::Options::new();
        o.set_base_url(&format!("http://{addr}")).unwrap();
        let client = crate::Client::with_options("AC123456", "tvx_sk_test_key", &o).unwrap();
        let core = Arc::clone(&client.core);
        let pool = Arc::new(WorkerPool::new(4));
        let shared = Shared {
            core: Arc::clone(&core),
            callbacks: Arc::clone(&pool),
            inbox: Mutex::new(Inbox::default()),
        };
        let poll = Tracked::new(Poll::new().unwrap());
        let notify: Notify = Arc::new(|| {});
        let mut lp = Loop::new(Arc::clone(&core), Arc::clone(&pool), poll, notify);

        let (tx, rx) = mpsc::channel::<(String, Status)>();
        let one = |id: &str| {
            let tx = tx.clone();
            let id = id.to_owned();
            Work::One {
                id: id.clone(),
                done: Box::new(move |r: HangupResult| {
                    let st = r.map_or_else(|e| e.status(), |_| Status::Ok);
                    let _ = tx.send((id, st));
                }),
            }
        };
        lp.accept(one("hang-a"));
        lp.accept(one("hang-b"));
        let (btx, brx) = mpsc::channel();
        lp.accept(Work::Batch {
            ids: vec!["hang-c".into(), "ok-d".into(), "ok-e".into()],
            max: 1,
            stop_at: None,
            reply: Reply::AtEnd(btx),
            control: None,
        });
        lp.pump();
        // Both async hangups and the batch's first id are on the wire.
        turns_until(&mut lp, &shared, |lp| {
            lp.slots
                .items
                .iter()
                .flatten()
                .filter(|s| matches!(s.state, SlotState::Open(_)))
                .count()
                == 3
        });
        let slot_of_a = lp
            .jobs
            .items
            .iter()
            .flatten()
            .find(|j| j.id == "hang-a")
            .and_then(|j| j.slot)
            .unwrap();
        lp.fail_slot(slot_of_a);
        lp.flush_callbacks();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, ("hang-a".into(), Status::InternalError));
        assert_eq!(lp.jobs.len, 2, "the others go on");

        lp.fail_everything();
        lp.flush_callbacks();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, ("hang-b".into(), Status::InternalError));
        // The batch lost its started id only; the two not started run now.
        turns_until(&mut lp, &shared, |lp| lp.batches.len == 0);
        let out = brx.recv_timeout(Duration::from_secs(10)).unwrap();
        let st: Vec<Status> = out
            .iter()
            .map(|r| match r {
                Some(Ok(_)) => Status::Ok,
                Some(Err(e)) => e.status(),
                None => Status::InternalError,
            })
            .collect();
        assert_eq!(st, [Status::InternalError, Status::Ok, Status::Ok]);
        assert!(rx.try_recv().is_err(), "nothing delivered twice");
        assert_eq!(core.stats.snapshot().in_flight, 0);
        lp.close_all();
        pool.shutdown();
    }
}
