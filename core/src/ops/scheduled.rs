//! Scheduled hangups (`hangup_after`): one timer thread per client, a heap of due times,
//! no thread per pending hangup. When a hangup's time comes, the timer thread hands it to
//! the client's worker pool, exactly as `hangup_async` does; it never sends anything
//! itself, so a slow hangup never delays another timer. The thread starts with the first
//! scheduled hangup and exits after [`IDLE_EXIT`](crate::host::pool::IDLE_EXIT) with nothing
//! pending.
//!
//! Cancel and firing race under one lock: `cancel` wins (true, the callback never runs)
//! only if the hangup has not been taken for firing; after that it returns false and the
//! callback runs with the hangup's outcome. Dropping the client takes every pending
//! hangup off the heap and delivers its callback once, with `Status::Busy`, nothing sent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::contract::error::{Error, HangupResult};
use crate::engine::{submit_async, Engine};
use crate::host::pool::{WorkerPool, IDLE_EXIT};

/// What a pending hangup is asked to do: fire now (true), or report that the client was
/// dropped before its time (false). Either way its callback runs once.
pub(crate) type Fire = Box<dyn FnOnce(bool) + Send>;

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Fire>,
    next: u64,
    stopping: bool,
    thread: Option<JoinHandle<()>>,
    running: bool,
}

#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub(crate) struct Timers {
    shared: Arc<Shared>,
}

/// A scheduled hangup's callback with its outcome bound, waiting for its id.
type Deliver<I> = Box<dyn FnOnce(I) + Send>;

/// Schedules the hangup of `call_uuid` at `at` on `timers` (see `Client::hangup_after`):
/// when its time comes it goes to `engine` as an async hangup would; refused there, or
/// the client dropped first, `done` gets BUSY through `pool` (or on this timer's thread
/// when no pool thread can take it). Its callback runs exactly once either way.
pub(crate) fn hangup_at<I, F>(
    timers: &Timers,
    engine: &Arc<Engine>,
    pool: &Arc<WorkerPool>,
    at: Instant,
    call_uuid: I,
    done: F,
) -> Result<ScheduledHangup, Error>
where
    I: AsRef<str> + Send + 'static,
    F: FnOnce(I, HangupResult) + Send + 'static,
{
    let (engine, pool) = (Arc::clone(engine), Arc::clone(pool));
    let fire: Fire = Box::new(move |now: bool| {
        let busy = |why: &str| {
            Err(Error::busy(format!(
                "the scheduled hangup was not sent: {why}"
            )))
        };
        let (id, done) = if now {
            match submit_async(&engine, call_uuid, done) {
                Ok(()) => return,
                Err((why, (id, done))) => {
                    let r = busy(&why);
                    (id, Box::new(move |id: I| done(id, r)) as Deliver<I>)
                }
            }
        } else {
            let r = busy("the client was freed before its time");
            (call_uuid, Box::new(move |id: I| done(id, r)) as Deliver<I>)
        };
        // Delivered through the callback pool like any outcome; if no thread can take
        // it, here (the timer thread, or the thread dropping the client).
        let slot = Arc::new(std::sync::Mutex::new(Some((id, done))));
        let theirs = Arc::clone(&slot);
        let take = |s: &std::sync::Mutex<Option<(I, Deliver<I>)>>| {
            s.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let queued = pool.submit(Box::new(move || {
            if let Some((id, done)) = take(&theirs) {
                done(id);
            }
        }));
        if queued.is_err() {
            if let Some((id, done)) = take(&slot) {
                done(id);
            }
        }
    });
    timers.schedule(at, fire).map_err(|fire| {
        drop(fire);
        Error::busy("the hangup was not scheduled: the client is being freed; nothing was sent")
    })
}

/// A scheduled hangup, as `Client::hangup_after` returns it. Dropping it does not cancel
/// the hangup; it may outlive the client.
#[derive(Clone)]
pub struct ScheduledHangup {
    shared: Arc<Shared>,
    id: u64,
    /// The process generation it was scheduled in (`host::process`).
    generation: u64,
}

impl std::fmt::Debug for ScheduledHangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledHangup")
            .field("id", &self.id)
            .finish()
    }
}

impl ScheduledHangup {
    /// Cancels the hangup if it has not fired: true means it never will and its callback
    /// never runs; false means it is firing or fired (or the client was dropped), and its
    /// callback runs or ran exactly once. In a forked child, a hangup the parent
    /// scheduled is the parent's: this returns false (the parent may still send it) and
    /// its callback never runs in the child.
    pub fn cancel(&self) -> bool {
        if self.generation != crate::host::process::generation() {
            // The lock may have been held by a thread that does not exist here.
            return false;
        }
        let fire = {
            let mut st = lock(&self.shared.state);
            let fire = st.pending.remove(&self.id);
            // A cancelled hangup leaves its entry in the heap until its time; when such
            // entries outnumber the live ones, the heap is rebuilt, so a host that
            // schedules and cancels a timer per call does not grow without bound.
            if fire.is_some() && st.due.len() > 1024 && st.due.len() > 2 * st.pending.len() {
                let State { due, pending, .. } = &mut *st;
                due.retain(|Reverse((_, id))| pending.contains_key(id));
                self.shared.wake.notify_all();
            }
            fire
        };
        // Dropped outside the lock: the callback's captures may be anything.
        fire.is_some()
    }
}

impl Timers {
    /// Schedules `fire` for `at`; gives it back once the client is being dropped or when
    /// no timer thread can start.
    pub(crate) fn schedule(&self, at: Instant, fire: Fire) -> Result<ScheduledHangup, Fire> {
        let mut st = lock(&self.shared.state);
        if st.stopping {
            return Err(fire);
        }
        let mut exited = None;
        if !st.running {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("tryvox-timer".into())
                .stack_size(256 * 1024)
                .spawn(move || run(shared));
            match spawned {
                Ok(h) => {
                    st.running = true;
                    // The previous timer thread has exited (running was false).
                    exited = st.thread.replace(h);
                }
                Err(_) => return Err(fire),
            }
        }
        let id = st.next;
        st.next += 1;
        st.pending.insert(id, fire);
        st.due.push(Reverse((at, id)));
        drop(st);
        self.shared.wake.notify_all();
        if let Some(h) = exited {
            let _ = h.join();
        }
        Ok(ScheduledHangup {
            shared: Arc::clone(&self.shared),
            id,
            generation: crate::host::process::generation(),
        })
    }

    /// Stops the timer thread and returns every hangup still pending, oldest first.
    pub(crate) fn stop(&self) -> Vec<Fire> {
        let (thread, mut pending) = {
            let mut st = lock(&self.shared.state);
            st.stopping = true;
            let mut order: Vec<(Instant, u64)> = st.due.drain().map(|Reverse(e)| e).collect();
            order.sort();
            let pending: Vec<Fire> = order
                .into_iter()
                .filter_map(|(_, id)| st.pending.remove(&id))
                .collect();
            (st.thread.take(), pending)
        };
        self.shared.wake.notify_all();
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        pending.shrink_to_fit();
        pending
    }

    /// Hangups waiting for their time.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.shared.state).pending.len()
    }
}

fn run(shared: Arc<Shared>) {
    let mut st = lock(&shared.state);
    loop {
        if st.stopping {
            st.running = false;
            return;
        }
        let now = Instant::now();
        // Fire everything due (skipping cancelled entries), outside the lock.
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = st.due.peek().copied() {
            if at > now {
                break;
            }
            st.due.pop();
            if let Some(fire) = st.pending.remove(&id) {
                due.push(fire);
            }
        }
        if !due.is_empty() {
            drop(st);
            let generation = crate::host::process::generation();
            let mut due = due.into_iter();
            for fire in due.by_ref() {
                fire(true);
                // A callback run here (no pool thread could take it) forked: in the
                // child this thread stops; the rest is the parent's (never run or
                // dropped here, its lock perhaps held by a thread that does not exist).
                if crate::host::process::generation() != generation {
                    std::mem::forget((due, shared));
                    return;
                }
            }
            st = lock(&shared.state);
            continue;
        }
        // Only cancelled entries left: nothing will fire, so the thread may go idle.
        if st.pending.is_empty() {
            st.due.clear();
        }
        let wait = match st.due.peek() {
            Some(Reverse((at, _))) => at.saturating_duration_since(now),
            None => IDLE_EXIT,
        };
        let idle = st.due.is_empty();
        let (next, timed_out) = shared
            .wake
            .wait_timeout(st, wait)
            .unwrap_or_else(|e| e.into_inner());
        st = next;
        if idle && timed_out.timed_out() && st.due.is_empty() && !st.stopping {
            st.running = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn cancelled_timers_do_not_pile_up() {
        let t = Timers::default();
        for _ in 0..100_000 {
            let h = t
                .schedule(Instant::now() + Duration::from_secs(3600), Box::new(|_| {}))
                .unwrap_or_else(|_| panic!("scheduled"));
            assert!(h.cancel());
        }
        let left = lock(&t.shared.state).due.len();
        assert!(left <= 2048, "{left} cancelled entries kept");
        assert!(t.stop().is_empty());
    }

    #[test]
    fn fire_cancel_and_stop() {
        let t = Timers::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let make = || {
            let (f, d) = (Arc::clone(&fired), Arc::clone(&dropped));
            Box::new(move |fire: bool| {
                if fire {
                    f.fetch_add(1, Ordering::SeqCst);
                } else {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            }) as Fire
        };
        let sched = |after: Duration| {
            t.schedule(Instant::now() + after, make())
                .unwrap_or_else(|_| panic!("scheduled"))
        };
        let soon = sched(Duration::from_millis(20));
        let cancelled = sched(Duration::from_millis(20));
        let _late = sched(Duration::from_secs(3600));
        assert!(cancelled.cancel(), "cancelled before its time");
        assert!(!cancelled.cancel(), "only once");
        let until = Instant::now() + Duration::from_secs(20);
        while fired.load(Ordering::SeqCst) == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert!(!soon.cancel(), "too late: it fired");
        assert_eq!(t.pending(), 1);
        for f in t.stop() {
            f(false);
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the pending one, once");
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert!(
            t.schedule(Instant::now(), make()).is_err(),
            "refused once stopped"
        );
    }
}
