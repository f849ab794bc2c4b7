//! The bounded worker pool behind asynchronous and bulk hangups.
//!
//! Threads start on demand up to a fixed cap and live until the pool shuts down (when
//! the client is freed). Shutdown runs every queued job first, so every callback is
//! delivered, then joins every thread: no thread outlives the client.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// Most threads one client's pool runs: the most hangups one client has in flight from
/// the pool (a `hangup_many` caller adds its own thread).
pub const MAX_WORKERS: usize = 64;
/// Stack per worker: a hangup needs far less than std's 2 MiB default.
pub(crate) const WORKER_STACK: usize = 512 * 1024;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    shutting_down: bool,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
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

impl WorkerPool {
    pub(crate) fn new(max_workers: usize) -> WorkerPool {
        WorkerPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    idle: 0,
                    shutting_down: false,
                    threads: Vec::new(),
                }),
                ready: Condvar::new(),
            }),
            max_workers: max_workers.max(1),
        }
    }

    /// Queues `job`. Fails only when a thread cannot be started and none is running.
    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        let mut st = lock(&self.shared.state);
        if st.shutting_down {
            return Err("the client is being freed".into());
        }
        st.jobs.push_back(job);
        if st.idle < st.jobs.len() && st.threads.len() < self.max_workers {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name("tryvox-worker".into())
                .stack_size(WORKER_STACK)
                .spawn(move || worker(shared));
            match spawned {
                Ok(h) => st.threads.push(h),
                Err(e) if st.threads.is_empty() => {
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

    /// True once `shutdown` has begun: new jobs are refused (queued ones still run).
    pub(crate) fn is_shutting_down(&self) -> bool {
        lock(&self.shared.state).shutting_down
    }

    /// Number of threads started so far.
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        lock(&self.shared.state).threads.len()
    }

    /// Runs every queued job, then joins every worker. Called from a worker itself (a
    /// callback freeing its own client), it cannot join that thread: it joins the others
    /// and that worker exits when its job returns.
    pub(crate) fn shutdown(&self) {
        let threads = {
            let mut st = lock(&self.shared.state);
            st.shutting_down = true;
            std::mem::take(&mut st.threads)
        };
        self.shared.ready.notify_all();
        let me = thread::current().id();
        for h in threads {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    break Some(job);
                }
                if st.shutting_down {
                    break None;
                }
                st.idle += 1;
                st = shared.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle -= 1;
            }
        };
        match job {
            // Jobs deliver their own panics as INTERNAL_ERROR; this catch only keeps the
            // thread alive if a job's own delivery panics.
            Some(job) => drop(catch_unwind(AssertUnwindSafe(job))),
            None => return,
        }
    }
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
