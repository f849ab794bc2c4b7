//! The event-driven engine under `hangup_async` and `hangup_many`: one loop thread per
//! client on `mio` (epoll), non-blocking sockets, the connection state machine of
//! `net::conn` (ureq-proto framing, rustls), and timers for deadlines, connect races and
//! retry waits, so a waiting retry holds no connection and no slot.
//!
//! - The caller's thread only validates and enqueues (a lock, a push, a wake).
//! - Callbacks never run on the loop: they go to the client's callback pool
//!   (`host::pool`), so a callback may call any function of the client, bulk included.
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
//!
//! The files, one concern each: this one holds the handle (`Engine`: submit, nudge,
//! stop), the work it takes and the loop's tables (jobs, connection slots, batches, in
//! `slab`s whose indices are mio tokens); `turn` the thread and one turn of the loop;
//! `admission` the budgets and what may start; `slots` DNS, connect races and the
//! exchange on each connection; `timers` deadlines, retry waits and connect timeouts;
//! `delivery` judging an attempt's outcome, retrying or completing it, and handing
//! callbacks and log lines to the pool.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Poll, Token};
use slab::Slab;
use ureq_proto::http::Uri;

use crate::contract::error::HangupResult;
use crate::host::fds::Notify;
use crate::host::fds::{Tracked, Waker};
use crate::host::pool::WorkerPool;
use crate::net::conn::Conn;
use crate::net::resolve::Ticket;
use crate::net::transport::Race;
use crate::policy::retry::Aimd;
use crate::state::Core;

mod admission;
mod delivery;
mod slots;
mod timers;
mod turn;

use timers::{Timer, TimerKey};

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
            .spawn(move || turn::run(shared, poll, w))?;
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
    /// budget (`host::fds`), shared by every client, which `has_room` asks too.
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

/// Hands one async hangup to the engine; refused, the id and callback come back.
#[allow(clippy::type_complexity)]
pub(crate) fn submit_async<I, F>(
    engine: &Engine,
    call_uuid: I,
    done: F,
) -> Result<(), (String, (I, F))>
where
    I: AsRef<str> + Send + 'static,
    F: FnOnce(I, HangupResult) + Send + 'static,
{
    // The id travels with its callback; if the engine refuses the work it is taken back.
    let id = call_uuid.as_ref().to_owned();
    let slot = Arc::new(std::sync::Mutex::new(Some((call_uuid, done))));
    let theirs = Arc::clone(&slot);
    let work = Work::One {
        id,
        done: Box::new(move |result| {
            let taken = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((id, done)) = taken {
                done(id, result);
            }
        }),
    };
    match engine.submit(work) {
        Ok(()) => Ok(()),
        Err((why, work)) => {
            drop(work);
            let back = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match back {
                Some(pair) => Err((why, pair)),
                None => Ok(()), // cannot happen: the callback never ran
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    use mio::Events;

    use crate::contract::error::Status;

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
                .iter()
                .map(|(_, x)| x)
                .filter(|s| matches!(s.state, SlotState::Open(_)))
                .count()
                == 3
        });
        let slot_of_a = lp
            .jobs
            .iter()
            .map(|(_, x)| x)
            .find(|j| j.id == "hang-a")
            .and_then(|j| j.slot)
            .unwrap();
        lp.fail_slot(slot_of_a);
        lp.flush_callbacks();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, ("hang-a".into(), Status::InternalError));
        assert_eq!(lp.jobs.len(), 2, "the others go on");

        lp.fail_everything();
        lp.flush_callbacks();
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, ("hang-b".into(), Status::InternalError));
        // The batch lost its started id only; the two not started run now.
        turns_until(&mut lp, &shared, |lp| lp.batches.is_empty());
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
