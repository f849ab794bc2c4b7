//! The call store and the call state machine.
//!
//! ringing -> in-progress (after the answer delay, or on a control request) -> completed.
//! A ringing call that reaches its ring timeout becomes `no-answer`; an answered call that
//! reaches its time limit is completed with end reason `time-limit`. States advance lazily,
//! whenever a call is read or changed, so no timers run per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::rng::random_u64;

/// Statuses from which a hangup is possible.
pub const LIVE: [&str; 2] = ["ringing", "in-progress"];

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub seq: u64,
    pub call_uuid: String,
    pub request_uuid: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub created: SystemTime,
    pub answer_time: Option<SystemTime>,
    pub end_time: Option<SystemTime>,
    pub end_reason: Option<String>,
    pub answer_url: String,
    pub answer_method: String,
    pub hangup_url: Option<String>,
    pub ring_url: Option<String>,
    pub ring_timeout: Duration,
    pub time_limit: Duration,
    pub tenant: Option<String>,
}

/// What a create request asks for (already validated).
#[derive(Debug, Clone, Default)]
pub struct NewCall {
    pub from: String,
    pub to: String,
    pub answer_url: String,
    pub answer_method: Option<String>,
    pub hangup_url: Option<String>,
    pub ring_url: Option<String>,
    pub ring_timeout: Option<u64>,
    pub time_limit: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HangupError {
    NotFound,
    AlreadyEnded,
}

/// How a control request ends or moves a call.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Answer,
    CallerHangup,
    CalleeHangup,
    Timeout,
}

pub struct Store {
    calls: Mutex<HashMap<String, Call>>,
    seq: AtomicU64,
    /// None: calls ring until answered by a control request.
    answer_delay: Option<Duration>,
}

impl Store {
    pub fn new(answer_delay: Option<Duration>) -> Store {
        Store {
            calls: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            answer_delay,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Call>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create(&self, new: NewCall, tenant: Option<String>) -> Call {
        self.create_with_id(new, tenant, uuid_v4())
    }

    /// As `create`, with a chosen call id (seeding fixtures for tests and benchmarks).
    pub fn create_with_id(&self, new: NewCall, tenant: Option<String>, call_uuid: String) -> Call {
        let call = Call {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            call_uuid,
            request_uuid: uuid_v4(),
            from: new.from,
            to: new.to,
            status: "ringing".into(),
            created: SystemTime::now(),
            answer_time: None,
            end_time: None,
            end_reason: None,
            answer_url: new.answer_url,
            answer_method: new.answer_method.unwrap_or_else(|| "POST".into()),
            hangup_url: new.hangup_url,
            ring_url: new.ring_url,
            ring_timeout: Duration::from_secs(new.ring_timeout.unwrap_or(60)),
            time_limit: Duration::from_secs(new.time_limit.unwrap_or(14_400)),
            tenant,
        };
        self.lock().insert(call.call_uuid.clone(), call.clone());
        call
    }

    /// The call if it exists and belongs to `tenant`.
    pub fn get(&self, uuid: &str, tenant: &Option<String>) -> Option<Call> {
        let mut calls = self.lock();
        let call = calls.get_mut(uuid).filter(|c| &c.tenant == tenant)?;
        advance(call, SystemTime::now(), self.answer_delay);
        Some(call.clone())
    }

    /// The documented hangup: only ringing or in-progress calls; they become completed
    /// with end reason `api-hangup`. Returns the final call for the webhook.
    pub fn hangup(&self, uuid: &str, tenant: &Option<String>) -> Result<Call, HangupError> {
        let mut calls = self.lock();
        let call = calls
            .get_mut(uuid)
            .filter(|c| &c.tenant == tenant)
            .ok_or(HangupError::NotFound)?;
        let now = SystemTime::now();
        advance(call, now, self.answer_delay);
        if !LIVE.contains(&call.status.as_str()) {
            return Err(HangupError::AlreadyEnded);
        }
        end(call, now, "completed", "api-hangup");
        Ok(call.clone())
    }

    /// A control request (any tenant). Returns the call after the change, or None.
    pub fn control(&self, uuid: &str, what: Control) -> Option<Result<Call, HangupError>> {
        let mut calls = self.lock();
        let call = calls.get_mut(uuid)?;
        let now = SystemTime::now();
        advance(call, now, self.answer_delay);
        if !LIVE.contains(&call.status.as_str()) {
            return Some(Err(HangupError::AlreadyEnded));
        }
        match what {
            Control::Answer if call.status == "ringing" => {
                call.status = "in-progress".into();
                call.answer_time = Some(now);
            }
            Control::Answer => {}
            Control::CallerHangup => end(call, now, "completed", "caller-hangup"),
            Control::CalleeHangup => end(call, now, "completed", "callee-hangup"),
            Control::Timeout if call.status == "ringing" => {
                end(call, now, "no-answer", "ring-timeout")
            }
            Control::Timeout => end(call, now, "completed", "time-limit"),
        }
        Some(Ok(call.clone()))
    }

    /// Calls of `tenant`, oldest first, after filters.
    pub fn list(&self, tenant: &Option<String>, keep: impl Fn(&Call) -> bool) -> Vec<Call> {
        let mut calls = self.lock();
        let now = SystemTime::now();
        let mut out: Vec<Call> = calls
            .values_mut()
            .filter(|c| &c.tenant == tenant)
            .map(|c| {
                advance(c, now, self.answer_delay);
                c.clone()
            })
            .filter(|c| keep(c))
            .collect();
        out.sort_by_key(|c| c.seq);
        out
    }

    /// Ends one random live call of `tenant` as if its caller hung up; its id, if any.
    pub fn end_one_on_its_own(&self, tenant: &Option<String>) -> Option<String> {
        let mut calls = self.lock();
        let now = SystemTime::now();
        let live: Vec<String> = calls
            .values_mut()
            .filter(|c| &c.tenant == tenant)
            .filter_map(|c| {
                advance(c, now, self.answer_delay);
                LIVE.contains(&c.status.as_str())
                    .then(|| c.call_uuid.clone())
            })
            .collect();
        if live.is_empty() {
            return None;
        }
        let id = live[(crate::rng::random_u64() % live.len() as u64) as usize].clone();
        let call = calls.get_mut(&id)?;
        end(call, now, "completed", "caller-hangup");
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn end(call: &mut Call, now: SystemTime, status: &str, reason: &str) {
    call.status = status.into();
    call.end_time = Some(now);
    call.end_reason = Some(reason.into());
}

/// Moves a call along by the clock.
fn advance(call: &mut Call, now: SystemTime, answer_delay: Option<Duration>) {
    if call.status == "ringing" {
        let answer_at = answer_delay.map(|d| call.created + d);
        let give_up_at = call.created + call.ring_timeout;
        match answer_at {
            Some(t) if t <= now && t < give_up_at => {
                call.status = "in-progress".into();
                call.answer_time = Some(t);
            }
            _ if give_up_at <= now => end(call, give_up_at, "no-answer", "ring-timeout"),
            _ => {}
        }
    }
    if call.status == "in-progress" {
        if let Some(a) = call.answer_time {
            if a + call.time_limit <= now {
                end(call, a + call.time_limit, "completed", "time-limit");
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt_time(t: Option<SystemTime>) -> Value {
    t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

impl Call {
    /// Seconds between answer and end (0 if never answered).
    pub fn duration(&self) -> u64 {
        match (self.answer_time, self.end_time) {
            (Some(a), Some(e)) => e.duration_since(a).map(|d| d.as_secs()).unwrap_or(0),
            (Some(a), None) => SystemTime::now()
                .duration_since(a)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Whole minutes, rounded up, as carriers bill.
    pub fn billed_duration(&self) -> u64 {
        self.duration().div_ceil(60) * 60
    }

    /// The create response.
    pub fn created_json(&self) -> Value {
        json!({
            "request_uuid": self.request_uuid,
            "call_uuid": self.call_uuid,
            "from": self.from,
            "to": self.to,
            "direction": "outbound",
            "status": self.status,
            "created_at": rfc3339(self.created),
        })
    }

    /// The get/list representation.
    pub fn details_json(&self) -> Value {
        let billed = self.billed_duration();
        json!({
            "call_uuid": self.call_uuid,
            "request_uuid": self.request_uuid,
            "from": self.from,
            "to": self.to,
            "direction": "outbound",
            "status": self.status,
            "duration": self.duration(),
            "billed_duration": billed,
            "start_time": rfc3339(self.created),
            "ring_time": rfc3339(self.created),
            "answer_time": opt_time(self.answer_time),
            "end_time": opt_time(self.end_time),
            "end_reason": self.end_reason,
            "price": format!("{:.4}", billed as f64 / 60.0 * 0.013),
            "price_unit": "USD",
            "answer_url": self.answer_url,
            "answer_method": self.answer_method,
            "hangup_url": self.hangup_url,
            "ring_url": self.ring_url,
            "parent_call_uuid": Value::Null,
        })
    }

    /// The hangup webhook payload: the final call details plus event fields.
    pub fn hangup_event(&self, account: &str) -> Value {
        let mut v = self.details_json();
        let obj = v.as_object_mut().expect("details are an object");
        obj.insert("event".into(), json!("call.hangup"));
        obj.insert("account_id".into(), json!(account));
        obj.insert("timestamp".into(), json!(rfc3339(SystemTime::now())));
        v
    }
}

/// A random version-4 UUID (from `crate::rng`).
pub fn uuid_v4() -> String {
    let hi = random_u64();
    let lo = random_u64();
    let b = ((hi as u128) << 64) | lo as u128;
    let b = (b & !(0xF000u128 << 64)) | (0x4000u128 << 64); // version 4
    let b = (b & !(0xC000u128 << 48)) | (0x8000u128 << 48); // variant 10
    let h = format!("{b:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_call() -> NewCall {
        NewCall {
            from: "+14155550100".into(),
            to: "+14155550101".into(),
            answer_url: "http://x/a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn hangup_semantics() {
        let s = Store::new(None);
        let c = s.create(new_call(), None);
        assert_eq!(c.status, "ringing");
        let done = s.hangup(&c.call_uuid, &None).unwrap();
        assert_eq!(done.status, "completed");
        assert_eq!(done.end_reason.as_deref(), Some("api-hangup"));
        assert!(done.end_time.is_some());
        assert_eq!(
            s.hangup(&c.call_uuid, &None),
            Err(HangupError::AlreadyEnded)
        );
        assert_eq!(s.hangup("nope", &None), Err(HangupError::NotFound));
    }

    #[test]
    fn answer_delay_and_tenants() {
        let s = Store::new(Some(Duration::ZERO));
        let c = s.create(new_call(), Some("t1".into()));
        assert!(s.get(&c.call_uuid, &None).is_none());
        assert_eq!(
            s.get(&c.call_uuid, &Some("t1".into())).unwrap().status,
            "in-progress"
        );
        assert_eq!(s.hangup(&c.call_uuid, &None), Err(HangupError::NotFound));
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
