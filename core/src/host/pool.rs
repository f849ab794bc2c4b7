//! The bounded worker pool behind asynchronous hangups.
//!
//! Threads start on demand up to a fixed cap and exit after [`IDLE_EXIT`] without work, so
//! an idle client holds no thread. Shutdown (when the client is freed) runs every queued
//! job first, so every callback is delivered, and runs them all at once: it starts a
//! thread for each queued job (up to [`SHUTDOWN_BURST`] in all), so free takes about one
//! hangup's deadline whatever the queue's length, not the queue drained 64 at a time.
//! Then it joins every thread: no thread outlives the client.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Most threads one client's pool runs: the most hangups one client has in flight from
/// the pool (a `hangup_many` caller adds its own thread).
pub const MAX_WORKERS: usize = 64;
/// Stack per worker: a hangup needs far less than std's 2 MiB default.
pub(crate) const WORKER_STACK: usize = 512 * 1024;
/// A worker with nothing to do for this long exits.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(5);
/// Most threads running at once while the pool shuts down with work queued.
pub(crate) const SHUTDOWN_BURST: usize = 1024;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    /// Workers that have not decided to exit (a handle may outlive its worker's decision,
    /// so spawning counts these, not unfinished handles).
    live: usize,
    shutting_down: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    idle_exit: Duration,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic never happens while this lock is held (jobs run outside it), but if one
    // did, the state is still consistent: keep going rather than poison the pool.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    max_workers: usize,
}

/// Starts one worker thread (the caller holds the state lock and records the handle).
fn spawn_worker(shared: &Arc<Shared>, idle_exit: Duration) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    spawn_named("tryvox-worker", WORKER_STACK, move || {
        worker(shared, idle_exit)
    })
}

/// Starts a library thread called `name` (at most 15 bytes). Linux gives a new thread
/// its creator's name until the thread sets its own, so a worker started by the engine
/// thread would show as a second `tryvox-engine` (to `top -H`, to a test counting
/// threads) until it first runs: the name is also set from here, at once.
pub(crate) fn spawn_named<F, T>(name: &str, stack: usize, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = thread::Builder::new()
        .name(name.into())
        .stack_size(stack)
        .spawn(f)?;
    #[cfg(target_os = "linux")]
    if let Ok(c) = std::ffi::CString::new(name) {
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the thread is alive or joinable (its handle is held), and the name is
        // a NUL-terminated string of at most 15 bytes.
        unsafe {
            libc::pthread_setname_np(handle.as_pthread_t(), c.as_ptr());
        }
    }
    Ok(handle)
}

impl WorkerPool {
    pub(crate) fn new(max_workers: usize) -> WorkerPool {
        WorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    idle: 0,
                    live: 0,
                    shutting_down: false,
                    threads: Vec::new(),
                }),
                ready: Condvar::new(),
                idle_exit: IDLE_EXIT,
            }),
            max_workers: max_workers.max(1),
        }
    }

    #[cfg(test)]
    fn with_idle_exit(max_workers: usize, idle_exit: Duration) -> WorkerPool {
        let mut p = WorkerPool::new(max_workers);
        Arc::get_mut(&mut p.shared).unwrap().idle_exit = idle_exit;
        p
    }

    /// Queues `job`. Fails only when a thread cannot be started and none is running.
    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        let mut st = lock(&self.shared.state);
        if st.shutting_down {
            return Err("the client is being freed".into());
        }
        st.jobs.push_back(job);
        // Workers that exited when idle leave finished handles behind.
        st.threads.retain(|h| !h.is_finished());
        if st.idle < st.jobs.len() && st.live < self.max_workers {
            match spawn_worker(&self.shared, self.shared.idle_exit) {
                Ok(h) => {
                    st.live += 1;
                    st.threads.push(h);
                }
                Err(e) if st.live == 0 => {
                    st.jobs.pop_back();
                    return Err(format!("cannot start a worker thread: {e}"));
                }
                Err(_) => {} // the running workers will get to it
            }
        }
        drop(st);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Number of worker threads alive.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        let mut st = lock(&self.shared.state);
        st.threads.retain(|h| !h.is_finished());
        st.threads.len()
    }

    /// Runs every queued job, then joins every worker. Called from a worker itself (a
    /// callback freeing its own client), it cannot join that thread: it joins the others
    /// and that worker exits when its job returns.
    pub(crate) fn shutdown(&self) {
        let threads = {
            let mut st = lock(&self.shared.state);
            st.shutting_down = true;
            // Every queued job at once: one more thread per job no idle worker will take.
            st.threads.retain(|h| !h.is_finished());
            let wanted = st.jobs.len().saturating_sub(st.idle);
            let room = SHUTDOWN_BURST.saturating_sub(st.live);
            for _ in 0..wanted.min(room) {
                match spawn_worker(&self.shared, self.shared.idle_exit) {
                    Ok(h) => {
                        st.live += 1;
                        st.threads.push(h);
                    }
                    Err(_) => break, // the running workers will get to it
                }
            }
            std::mem::take(&mut st.threads)
        };
        self.shared.ready.notify_all();
        let me = thread::current().id();
        for h in threads {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
        // Last resort: jobs no worker could take (no thread could be started) run here,
        // so every callback is still delivered.
        loop {
            let job = lock(&self.shared.state).jobs.pop_front();
            match job {
                Some(job) => drop(catch_unwind(AssertUnwindSafe(job))),
                None => break,
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: Arc<Shared>, idle_exit: Duration) {
    let generation = crate::host::process::generation();
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    break Some(job);
                }
                if st.shutting_down {
                    st.live -= 1;
                    break None;
                }
                st.idle += 1;
                let (next, waited) = shared
                    .ready
                    .wait_timeout(st, idle_exit)
                    .unwrap_or_else(|e| e.into_inner());
                st = next;
                st.idle -= 1;
                // Idle for the whole period: exit (a job that arrives now finds no idle
                // worker counted and starts a thread).
                if waited.timed_out() && st.jobs.is_empty() && !st.shutting_down {
                    st.live -= 1;
                    break None;
                }
            }
        };
        match job {
            // Jobs deliver their own panics as INTERNAL_ERROR; this catch only keeps the
            // thread alive if a job's own delivery panics.
            Some(job) => drop(catch_unwind(AssertUnwindSafe(job))),
            None => return,
        }
        // The job (a callback) forked and this is the child: the thread's library work
        // ends with the callback's return. The queue is the parent's (its lock perhaps
        // held by a thread that does not exist here): nothing of it is run or dropped.
        if crate::host::process::generation() != generation {
            std::mem::forget(shared);
            return;
        }
    }
}

thread_local! {
    static ON_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on an engine's loop thread: user code (log functions) must not run here.
pub(crate) fn on_engine_thread() -> bool {
    ON_ENGINE.with(|c| c.get())
}

/// Marks this thread as an engine's loop thread (or no longer).
pub(crate) fn set_engine_thread(on: bool) {
    ON_ENGINE.with(|c| c.set(on));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_everything_before_shutdown_returns() {
        let pool = WorkerPool::new(4);
        let n = Arc::new(AtomicUsize::new(0));
        for _ in 0..1000 {
            let n = Arc::clone(&n);
            pool.submit(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        }
        assert!(pool.threads() <= 4);
        pool.shutdown();
        assert_eq!(n.load(Ordering::SeqCst), 1000);
        assert!(pool.submit(Box::new(|| {})).is_err());
    }

    #[test]
    fn idle_workers_exit_and_come_back() {
        let pool = WorkerPool::with_idle_exit(4, Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..8 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(()).unwrap())).unwrap();
        }
        for _ in 0..8 {
            rx.recv().unwrap();
        }
        // Bounded wait for the idle exit (not a timing assertion: the count must reach 0).
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while pool.threads() > 0 && std::time::Instant::now() < until {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.threads(), 0, "idle workers exited");
        // Work after that starts a thread again.
        let tx2 = tx.clone();
        pool.submit(Box::new(move || tx2.send(()).unwrap()))
            .unwrap();
        rx.recv().unwrap();
        pool.shutdown();
    }

    #[test]
    fn shutdown_runs_the_whole_queue_at_once() {
        // One worker, 100 jobs that each wait for all 100 to have started: drained one
        // at a time, the queue would never finish; at shutdown all run at once.
        let pool = WorkerPool::new(1);
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let all = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let (started, all) = (Arc::clone(&started), Arc::clone(&all));
            pool.submit(Box::new(move || {
                let (m, cv) = &*started;
                let mut n = m.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, _) = cv
                    .wait_timeout_while(n, Duration::from_secs(20), |n| *n < 100)
                    .unwrap();
                if *n == 100 {
                    all.fetch_add(1, Ordering::SeqCst);
                }
            }))
            .unwrap();
        }
        pool.shutdown();
        assert_eq!(
            all.load(Ordering::SeqCst),
            100,
            "every job saw all 100 running"
        );
    }

    #[test]
    fn a_job_submitted_while_every_worker_exits_still_runs() {
        // The review's race: workers time out idle and are exiting (their handles not yet
        // finished) when a job arrives. It must start a worker, not wait for the next
        // submit. Tight idle exit, one worker, many rounds.
        let pool = WorkerPool::with_idle_exit(1, Duration::from_millis(1));
        for round in 0..2000 {
            let (tx, rx) = std::sync::mpsc::channel();
            pool.submit(Box::new(move || tx.send(()).unwrap())).unwrap();
            // A bounded wait: a stuck job never arrives (the next submit would free it).
            assert!(
                rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "round {round}: the job waited for a worker that was exiting"
            );
            if round % 3 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        pool.shutdown();
    }

    #[test]
    fn survives_a_panicking_job() {
        let pool = WorkerPool::new(1);
        let n = Arc::new(AtomicUsize::new(0));
        pool.submit(Box::new(|| panic!("boom"))).unwrap();
        let n2 = Arc::clone(&n);
        pool.submit(Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        pool.shutdown();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
