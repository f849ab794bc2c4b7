//! `hangup_all`: end every live call of the account (within the client's tenant), or those
//! the filters select. It lists the live calls (`ringing` and `in-progress`, every page,
//! 100 a page), hangs them up through the bulk path, and lists again, until a listing
//! comes back empty (OK) or only with calls that could not be ended, or the sweep's own
//! deadline passes (TIMEOUT). Every request of a sweep, listing page or hangup, ends by
//! the sweep's deadline whatever the client's timeout. The whole live set is listed
//! before any of it is hung up, so our own hangups never shift the pages of a listing;
//! calls that end or start on their own meanwhile are caught by the next listing, which
//! is why only an empty listing is success. A call that ends on its own first (404)
//! counts as gone, not as a failure; one still answered 429 after its retries is not a
//! failure yet: it stays live and the next rounds try it again ([`RATE_LIMITED_ROUNDS`]),
//! while the parallelism backs off (`retry::Aimd`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq_proto::http::{Method, Uri};

use crate::contract::error::HangupResult;
use crate::contract::error::{Error, Status};
use crate::contract::validate;
use crate::engine::{BatchControl, Engine};
use crate::ops::bulk::{self, Streamed, TICK};
use crate::state::attempt::Attempt;
use crate::state::Core;

/// Calls asked for per listing page (the API's maximum).
pub const LIST_PAGE: u32 = 100;
/// The sweep's deadline when none is given.
pub const DEFAULT_SWEEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Most call ids one listing round keeps (then the round hangs those up and lists again):
/// a bound on memory whatever a server claims.
const MAX_LISTED: usize = 100_000;
/// Pause after a round that settled no call (a server listing calls its 204s did not end),
/// doubling to a second: not a loop of listings and DELETEs as fast as the server answers.
const IDLE_ROUND_PAUSE: Duration = Duration::from_millis(50);
/// Later rounds in which a call still answered 429 after its retries is tried again
/// before it counts as failed (RATE_LIMITED): a server that asks for time gets it (the
/// round's parallelism backs off meanwhile), one that never relents ends the sweep.
const RATE_LIMITED_ROUNDS: u32 = 3;
/// Most listings a dry run makes (it stops at the first that finds nothing new).
const DRY_RUN_LISTINGS: u64 = 5;
/// Most calls a sweep remembers as found (`SweepReport::found`, `listed`): a bound on
/// memory whatever a server invents; past it calls are still hung up, not counted as found.
const MAX_KNOWN: usize = 1_000_000;
/// Listing pages fetched at once after the first.
const LIST_PARALLEL: usize = 8;
/// Largest listing page body read (a page of 100 calls is about 60 KiB).
const MAX_LIST_BODY: usize = 4 << 20;
/// The statuses of a live call.
const LIVE: [&str; 2] = ["ringing", "in-progress"];

/// What `hangup_all` ends and how.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// Only calls from this number (E.164, e.g. `+14155551234`).
    pub from: Option<String>,
    /// Only calls to this number.
    pub to: Option<String>,
    /// Only `inbound` or `outbound` calls.
    pub direction: Option<String>,
    /// Hangups in flight at once (0: [`crate::DEFAULT_PARALLEL`]).
    pub max_parallel: usize,
    /// The sweep's deadline (None: [`DEFAULT_SWEEP_TIMEOUT`]). Every request of the sweep
    /// (listing pages and hangups) ends by it, each also within the client's timeout; no
    /// hangup starts after it. For [`crate::Client::hangup_each`], None means no deadline of its
    /// own (each hangup has the client's timeout).
    pub timeout: Option<Duration>,
    /// Hangups started per second at most (0: no limit).
    pub max_rate: u32,
    /// List only: report each live call found (`SweepObserver::listed`), end none.
    pub dry_run: bool,
}

/// What a sweep did. Each call is counted once, under its latest outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Calls this sweep hung up.
    pub ended: u64,
    /// Calls that had ended on their own by the time their hangup arrived.
    pub already_gone: u64,
    /// Calls whose hangup failed (they are not tried again by this sweep).
    pub failed: u64,
    /// Live calls in the last listing, less those ended or gone since (0 on success).
    pub still_live: u64,
    /// Complete listings of the live set made.
    pub listings: u64,
    /// Distinct live calls the listings found so far (with `hangup_each`: the ids given).
    /// It only grows: a progress bar's total.
    pub found: u64,
    /// Answers 429 (Too Many Requests) the sweep's hangups got, retried or not.
    pub rate_limited: u64,
    /// Times a 429 halved the sweep's parallelism.
    pub backoffs: u64,
    /// Hangups in flight at once now (`max_parallel`, lower after 429s).
    pub parallel: u64,
    /// A listing is in progress.
    pub listing: bool,
}

/// What a sweep's caller hears while it runs, on the sweep's own thread. Every method has
/// a default that does nothing.
pub trait SweepObserver {
    /// The counts: at least every 50 ms while the sweep runs, after each listing and
    /// at the end.
    fn progress(&mut self, _report: &SweepReport) {}
    /// A live call a listing found for the first time in this sweep (before its hangup
    /// starts; in a dry run, instead of it).
    fn listed(&mut self, _call_uuid: &str) {}
    /// A call's hangup settled: `Ok` (ended by us), an error for which
    /// [`Error::call_is_gone`] holds (it had ended already), or a failure. Once per call,
    /// but for a call the server lists again after our hangup succeeded and then
    /// refuses: it is reported again with that failure (its latest outcome, under which
    /// the counts hold it).
    fn settled(&mut self, _call_uuid: &str, _result: &HangupResult) {}
    /// Asked at least every 50 ms: true stops the sweep from starting more hangups
    /// (those in flight finish and are reported). Once true, keep it true.
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// `hangup_all`'s progress closure as an observer.
pub(crate) struct Progress<'a>(pub(crate) Option<&'a mut dyn FnMut(&SweepReport)>);

impl SweepObserver for Progress<'_> {
    fn progress(&mut self, report: &SweepReport) {
        if let Some(p) = self.0.as_mut() {
            p(report);
        }
    }
}

#[derive(Deserialize)]
struct Listing {
    calls: Vec<ListedCall>,
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct ListedCall {
    call_uuid: String,
}

#[derive(Deserialize)]
struct Pagination {
    total_pages: u64,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filters as query parameters, checked: nothing is sent for a bad filter.
fn filter_query(sweep: &Sweep) -> Result<String, Error> {
    let mut q = String::new();
    for (name, value) in [("from", &sweep.from), ("to", &sweep.to)] {
        if let Some(v) = value {
            if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::invalid(format!(
                    "the {name} filter must be 1 to 64 visible ASCII characters"
                )));
            }
            q.push_str(&format!("&{name}={}", query_value(v)));
        }
    }
    if let Some(d) = &sweep.direction {
        if d != "inbound" && d != "outbound" {
            return Err(Error::invalid(
                "the direction filter must be \"inbound\" or \"outbound\"",
            ));
        }
        q.push_str(&format!("&direction={d}"));
    }
    Ok(q)
}

/// A sweep's view of its client: the shared state, and how to reach this process's
/// engine (asked for at each use: after a fork in an observer, the child's).
pub(crate) struct Sweeper<'a> {
    pub(crate) core: &'a Core,
    pub(crate) engine: &'a (dyn Fn() -> &'a Engine + Sync),
}

impl Sweeper<'_> {
    pub(crate) fn hangup_all_observed(
        &self,
        sweep: &Sweep,
        observer: &mut dyn SweepObserver,
    ) -> (SweepReport, Result<(), Error>) {
        let mut report = SweepReport::default();
        let result = self.sweep(sweep, &mut report, observer);
        report.listing = false;
        observer.progress(&report);
        (report, result)
    }

    pub(crate) fn hangup_each<S: AsRef<str>>(
        &self,
        call_uuids: &[S],
        sweep: &Sweep,
        observer: &mut dyn SweepObserver,
    ) -> (SweepReport, Result<Vec<HangupResult>, Error>) {
        let mut report = SweepReport {
            found: call_uuids.len() as u64,
            ..SweepReport::default()
        };
        let result = self.each(call_uuids, sweep, &mut report, observer);
        if result.is_ok() {
            observer.progress(&report);
        }
        (report, result)
    }

    fn each<S: AsRef<str>>(
        &self,
        call_uuids: &[S],
        sweep: &Sweep,
        report: &mut SweepReport,
        observer: &mut dyn SweepObserver,
    ) -> Result<Vec<HangupResult>, Error> {
        if sweep.from.is_some() || sweep.to.is_some() || sweep.direction.is_some() {
            return Err(Error::invalid(
                "filters select calls to list: they do not apply to given ids; nothing was sent",
            ));
        }
        if sweep.dry_run {
            return Err(Error::invalid(
                "a dry run lists calls: it does not apply to given ids; nothing was sent",
            ));
        }
        for (i, id) in call_uuids.iter().enumerate() {
            validate::id("call_uuid", id.as_ref())
                .map_err(|e| Error::invalid(format!("call_uuids[{i}]: {}", e.message())))?;
        }
        let stop_at = sweep.timeout.map(crate::policy::retry::deadline_after);
        let control = Arc::new(BatchControl {
            max_rate: sweep.max_rate,
            ..BatchControl::default()
        });
        let mut out: Vec<Option<HangupResult>> = (0..call_uuids.len()).map(|_| None).collect();
        // Asked to stop before it began: nothing starts.
        let mut stopped = observer.stop_requested();
        control.stop.store(stopped, Ordering::Relaxed);
        bulk::run_streamed(
            (self.engine)(),
            call_uuids,
            sweep.max_parallel,
            stop_at,
            &control,
            |event| {
                let tick = matches!(event, Streamed::Tick);
                if let Streamed::Outcome(i, r) = event {
                    let r = r.unwrap_or_else(|| {
                        report.still_live += 1;
                        Err(if stopped {
                            Error::busy("not sent: the hangups were stopped")
                        } else {
                            Error::new(Status::Timeout, "not sent: the deadline passed first")
                        })
                    });
                    match &r {
                        Ok(_) => report.ended += 1,
                        Err(e) if e.call_is_gone() => report.already_gone += 1,
                        Err(_) => report.failed += 1,
                    }
                    observer.settled(call_uuids[i].as_ref(), &r);
                    out[i] = Some(r);
                }
                steer(&control, report, observer, &mut stopped, tick);
            },
        )
        .map_err(|why| {
            Error::busy(format!(
                "the hangups were not started: {why}; nothing was sent"
            ))
        })?;
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::internal("hangup did not run"))))
            .collect())
    }

    fn sweep(
        &self,
        sweep: &Sweep,
        report: &mut SweepReport,
        observer: &mut dyn SweepObserver,
    ) -> Result<(), Error> {
        let filters = filter_query(sweep)?;
        let timeout = sweep.timeout.unwrap_or(DEFAULT_SWEEP_TIMEOUT);
        let deadline = crate::policy::retry::deadline_after(timeout);
        let control = Arc::new(BatchControl {
            max_rate: sweep.max_rate,
            ..BatchControl::default()
        });
        // Every call found so far, for `found` and `listed`.
        let mut known: HashSet<String> = HashSet::new();
        // By id: the status reported when only failed calls are left is chosen from the
        // set, never from a hash order (`reported_failure`).
        let mut failed: BTreeMap<String, Error> = BTreeMap::new();
        // Calls answered 2xx (true) or 404 (false) by us: a server that lists one again
        // (its 204 did not end it) is asked again, but the call is counted once, under
        // its latest outcome.
        let mut settled: HashMap<String, bool> = HashMap::new();
        // Rounds in which a call was still answered 429 after its retries.
        let mut throttled: HashMap<String, u32> = HashMap::new();
        let mut stopped = false;
        let mut pause = IDLE_ROUND_PAUSE;
        loop {
            if Instant::now() >= deadline {
                return Err(sweep_timeout(timeout, report));
            }
            if (self.engine)().is_stopping() {
                return Err(Error::busy("the sweep stopped: the client is being freed"));
            }
            if stopped || observer.stop_requested() {
                return Err(sweep_stopped(report));
            }
            let settled_before = (report.ended, report.already_gone, report.failed);
            let found_before = report.found;
            report.listing = true;
            let live = self.list_live(&filters, deadline, timeout, report, &mut known, observer);
            report.listing = false;
            let live = live?;
            report.listings += 1;
            report.still_live = live.len() as u64;
            if sweep.dry_run {
                // Pages shift while calls change state under a listing: list again until
                // one finds no call not seen before (a few listings at most).
                report.still_live = report.found;
                if report.found == found_before || report.listings >= DRY_RUN_LISTINGS {
                    observer.progress(report);
                    return Ok(());
                }
                continue;
            }
            observer.progress(report);
            if live.is_empty() {
                return Ok(());
            }
            if observer.stop_requested() {
                return Err(sweep_stopped(report));
            }
            let mut todo = Vec::with_capacity(live.len());
            // Listed again after their hangup failed: what is reported if nothing else is.
            let mut left_failed = BTreeMap::new();
            for id in live {
                if let Some(e) = failed.get(&id) {
                    left_failed.insert(id, e.clone());
                    continue;
                }
                match validate::id("call_uuid", &id) {
                    Ok(()) => todo.push(id),
                    Err(_) => {
                        report.failed += 1;
                        let e = Error::new(
                            Status::ProtocolError,
                            "the server listed a call id that is not a valid id",
                        );
                        failed.insert(id.clone(), e.clone());
                        left_failed.insert(id, e);
                    }
                }
            }
            if todo.is_empty() {
                return Err(reported_failure(&left_failed, report.still_live));
            }
            // No hangup starts after the sweep's deadline, or once stopped; those not
            // started stay live.
            bulk::run_streamed(
                (self.engine)(),
                &todo,
                sweep.max_parallel,
                Some(deadline),
                &control,
                |event| {
                    let tick = matches!(event, Streamed::Tick);
                    if let Streamed::Outcome(i, Some(r)) = event {
                        let id = &todo[i];
                        // Only a call settled for the first time leaves the live count
                        // and is reported: one the server lists again after our 204 is
                        // still live by its own account.
                        let first = match &r {
                            Ok(_) => {
                                let first = settled.insert(id.clone(), true).is_none();
                                if first {
                                    report.ended += 1;
                                    report.still_live = report.still_live.saturating_sub(1);
                                }
                                first
                            }
                            Err(e) if e.call_is_gone() => {
                                let first = settled.insert(id.clone(), false).is_none();
                                if first {
                                    report.already_gone += 1;
                                    report.still_live = report.still_live.saturating_sub(1);
                                }
                                first
                            }
                            // Still rate limited after its retries: the server asks
                            // for time, not for us to give up. The call stays live and
                            // a later round tries it again, a few rounds at most.
                            Err(e)
                                if e.status() == Status::RateLimited
                                    && bump(&mut throttled, id) <= RATE_LIMITED_ROUNDS =>
                            {
                                false
                            }
                            Err(e) => {
                                // One we ended already (its 204 came in an earlier round)
                                // that the server lists again and now refuses: its
                                // latest outcome is this failure, counted and reported
                                // as such.
                                match settled.remove(id) {
                                    Some(true) => report.ended -= 1,
                                    Some(false) => report.already_gone -= 1,
                                    None => {}
                                }
                                report.failed += 1;
                                failed.insert(id.clone(), e.clone());
                                true
                            }
                        };
                        if first {
                            observer.settled(id, &r);
                        }
                    }
                    steer(&control, report, observer, &mut stopped, tick);
                },
            )
            .map_err(|_| Error::busy("the sweep stopped: the client is being freed"))?;
            observer.progress(report);
            if stopped {
                return Err(sweep_stopped(report));
            }
            if (report.ended, report.already_gone, report.failed) == settled_before {
                // Nothing settled this round: the server keeps listing calls it says
                // are ended. Wait a little (within the deadline) before asking again.
                let until =
                    Instant::now() + pause.min(deadline.saturating_duration_since(Instant::now()));
                while Instant::now() < until && !observer.stop_requested() {
                    std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
                    observer.progress(report);
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            } else {
                pause = IDLE_ROUND_PAUSE;
            }
        }
    }

    /// Every live call id (each once), all pages of each live status, before any hangup.
    /// Bounded whatever the server claims: at most [`MAX_LISTED`] ids a round, and a
    /// batch of pages that adds no new id ends the listing of that status (a server
    /// repeating itself). On the sweep's deadline, `report.still_live` counts what this
    /// listing had found so far. Calls not in `known` are added to it, counted in
    /// `report.found` and told to `observer.listed`; `observer` hears the counts while
    /// pages are awaited, and a stop it asks for ends the listing after the pages in flight.
    fn list_live(
        &self,
        filters: &str,
        deadline: Instant,
        timeout: Duration,
        report: &mut SweepReport,
        known: &mut HashSet<String>,
        observer: &mut dyn SweepObserver,
    ) -> Result<Vec<String>, Error> {
        let base = self.core.calls_url.trim_end_matches('/');
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        let mut add = |listing: Listing,
                       ids: &mut Vec<String>,
                       report: &mut SweepReport,
                       observer: &mut dyn SweepObserver|
         -> usize {
            let mut new = 0;
            for c in listing.calls {
                if ids.len() < MAX_LISTED && seen.insert(c.call_uuid.clone()) {
                    if known.len() < MAX_KNOWN && known.insert(c.call_uuid.clone()) {
                        report.found += 1;
                        observer.listed(&c.call_uuid);
                    }
                    ids.push(c.call_uuid);
                    new += 1;
                }
            }
            new
        };
        let timed_out = |ids: &Vec<String>, report: &mut SweepReport| {
            report.still_live = report.still_live.max(ids.len() as u64);
            sweep_timeout(timeout, report)
        };
        // A page that timed out at the sweep's deadline (not the client's) is the sweep's
        // TIMEOUT, reported as such.
        let cut_short = |e: Error, ids: &Vec<String>, report: &mut SweepReport| {
            if e.status() == Status::Timeout && Instant::now() >= deadline {
                timed_out(ids, report).append("; while listing live calls")
            } else {
                e
            }
        };
        for status in LIVE {
            let page_uri = |page: u64| -> Result<Uri, Error> {
                format!("{base}?status={status}&per_page={LIST_PAGE}&page={page}{filters}")
                    .parse()
                    .map_err(|_| Error::internal("the list URL did not parse"))
            };
            // Page 1 tells how many there are; the rest are fetched LIST_PARALLEL at a
            // time (nothing is hung up while listing, so our own work shifts no page).
            if Instant::now() >= deadline {
                return Err(timed_out(&ids, report));
            }
            let first = self
                .fetch_pages(&[1], &page_uri, deadline, report, observer)
                .pop()
                .unwrap_or_else(|| Err(Error::internal("no page fetched")))
                .map_err(|e| cut_short(e, &ids, report))?;
            let pages = first
                .pagination
                .as_ref()
                .map_or(1, |p| p.total_pages)
                .min((MAX_LISTED / LIST_PAGE as usize) as u64);
            add(first, &mut ids, report, observer);
            let mut next = 2u64;
            while next <= pages && ids.len() < MAX_LISTED {
                if Instant::now() >= deadline {
                    return Err(timed_out(&ids, report));
                }
                if observer.stop_requested() {
                    report.still_live = report.still_live.max(ids.len() as u64);
                    return Err(sweep_stopped(report));
                }
                let batch: Vec<u64> = (next..=pages).take(LIST_PARALLEL).collect();
                next += batch.len() as u64;
                let fetched = self.fetch_pages(&batch, &page_uri, deadline, report, observer);
                let mut new = 0;
                for listing in fetched {
                    let listing = listing.map_err(|e| cut_short(e, &ids, report))?;
                    if listing.calls.is_empty() {
                        next = pages + 1; // the set shrank under us: the next round sees it
                    }
                    new += add(listing, &mut ids, report, observer);
                }
                if new == 0 {
                    break; // pages that repeat what we have: nothing more to learn
                }
            }
        }
        Ok(ids)
    }

    /// Listing pages fetched at once, in `pages`' order; the observer hears the counts
    /// every [`TICK`] while they are awaited.
    fn fetch_pages(
        &self,
        pages: &[u64],
        page_uri: &(dyn Fn(u64) -> Result<Uri, Error> + Sync),
        deadline: Instant,
        report: &SweepReport,
        observer: &mut dyn SweepObserver,
    ) -> Vec<Result<Listing, Error>> {
        let mut out: Vec<Option<Result<Listing, Error>>> = pages.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            for (i, &page) in pages.iter().enumerate() {
                let tx = tx.clone();
                scope.spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.fetch(&page_uri(page)?, deadline)
                    }))
                    .unwrap_or_else(|_| Err(Error::caught_panic()));
                    let _ = tx.send((i, r));
                });
            }
            drop(tx);
            let mut left = pages.len();
            while left > 0 {
                match rx.recv_timeout(TICK) {
                    Ok((i, r)) => {
                        out[i] = Some(r);
                        left -= 1;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => observer.progress(report),
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::caught_panic())))
            .collect()
    }

    /// One listing page, with the retry rules, ended by the sweep's `deadline` too.
    fn fetch(&self, uri: &Uri, deadline: Instant) -> Result<Listing, Error> {
        self.core
            .retrying_until(
                format_args!("list live calls"),
                false,
                Some(deadline),
                |deadline| self.list_page(uri, deadline),
            )
            .map_err(|e| e.append("; while listing live calls"))
    }

    /// One GET of a listing page.
    fn list_page(&self, uri: &Uri, deadline: Instant) -> Attempt<Listing> {
        let core = &self.core;
        let answer = match core.exchange(Method::GET, uri, deadline, MAX_LIST_BODY) {
            Ok(a) => a,
            Err(attempt) => return attempt,
        };
        let Attempt { result, failure } = core.judge(&answer, "");
        let result = match result {
            Ok(()) => serde_json::from_slice::<Listing>(&answer.body).map_err(|_| {
                Error::new(
                    Status::ProtocolError,
                    format!(
                        "the call list is not the documented JSON (HTTP {})",
                        answer.http_status
                    ),
                )
            }),
            Err(e) => Err(e),
        };
        Attempt { result, failure }
    }
}

/// The order in which a failure's status is reported when only failed calls are left
/// (see `Client::hangup_all`): what no retry cures first, then the passing ones from the
/// most to the least telling. A status not listed (a later addition) comes last.
const FAILURE_ORDER: [Status; 11] = [
    Status::Unauthorized,
    Status::Forbidden,
    Status::TlsError,
    Status::ProtocolError,
    Status::InvalidArgument,
    Status::InternalError,
    Status::ServerError,
    Status::RateLimited,
    Status::NetworkError,
    Status::Timeout,
    Status::Busy,
];

fn failure_rank(status: Status) -> usize {
    FAILURE_ORDER
        .iter()
        .position(|&s| s == status)
        .unwrap_or(FAILURE_ORDER.len())
}

/// The sweep's error when only calls that could not be ended are left (`failed`, by id):
/// the status first in [`FAILURE_ORDER`], of the smallest id with it, with that failure's
/// HTTP status and server code. A function of the set of failures alone.
fn reported_failure(failed: &BTreeMap<String, Error>, still_live: u64) -> Error {
    let Some((id, chosen)) = failed
        .iter()
        .min_by_key(|(id, e)| (failure_rank(e.status()), id.as_str()))
    else {
        return Error::internal("no failure recorded");
    };
    let mut counts: BTreeMap<(usize, i32), (Status, u64)> = BTreeMap::new();
    for e in failed.values() {
        let s = e.status();
        counts
            .entry((failure_rank(s), s.code()))
            .or_insert((s, 0))
            .1 += 1;
    }
    let counts: Vec<String> = counts
        .values()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    // A listed id that failed validation is not echoed (it may be anything).
    let which = match validate::id("call_uuid", id) {
        Ok(()) => format!("call {id}"),
        Err(_) => "a listed id".to_owned(),
    };
    Error::new(
        chosen.status(),
        format!(
            "{still_live} live call(s) could not be ended ({}); {which}: {}",
            counts.join(", "),
            chosen.message()
        ),
    )
    .with_http(chosen.http_status(), chosen.server_code())
}

/// One more for `id`: the new count.
fn bump(counts: &mut HashMap<String, u32>, id: &str) -> u32 {
    let n = counts.entry(id.to_owned()).or_insert(0);
    *n += 1;
    *n
}

/// After each event of a running batch: the batch's counts into the report, the
/// observer's stop (once asked) into the batch, and on a tick the counts to the observer.
fn steer(
    control: &BatchControl,
    report: &mut SweepReport,
    observer: &mut dyn SweepObserver,
    stopped: &mut bool,
    tick: bool,
) {
    report.rate_limited = control.rate_limited.load(Ordering::Relaxed);
    report.backoffs = control.backoffs.load(Ordering::Relaxed);
    report.parallel = control.parallel.load(Ordering::Relaxed) as u64;
    if !*stopped && observer.stop_requested() {
        *stopped = true;
        control.stop.store(true, Ordering::Relaxed);
    }
    if tick {
        observer.progress(report);
    }
}

fn sweep_stopped(report: &SweepReport) -> Error {
    Error::busy(format!(
        "the sweep was stopped with {} live call(s) left ({} ended, {} already gone, {} failed)",
        report.still_live, report.ended, report.already_gone, report.failed
    ))
}

fn sweep_timeout(timeout: Duration, report: &SweepReport) -> Error {
    Error::new(
        Status::Timeout,
        format!(
            "the sweep's {} ms deadline passed with {} live call(s) left ({} ended, {} already gone, {} failed)",
            timeout.as_millis(),
            report.still_live,
            report.ended,
            report.already_gone,
            report.failed
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_and_encoded() {
        let s = Sweep {
            from: Some("+14155551234".into()),
            direction: Some("outbound".into()),
            ..Default::default()
        };
        assert_eq!(
            filter_query(&s).unwrap(),
            "&from=%2B14155551234&direction=outbound"
        );
        for bad in [
            Sweep {
                direction: Some("sideways".into()),
                ..Default::default()
            },
            Sweep {
                to: Some("a b".into()),
                ..Default::default()
            },
            Sweep {
                from: Some(String::new()),
                ..Default::default()
            },
        ] {
            assert_eq!(
                filter_query(&bad).unwrap_err().status(),
                Status::InvalidArgument
            );
        }
    }
}
