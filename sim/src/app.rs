//! Routes: the documented voice endpoints under `/v1`, and control endpoints under `/_sim`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::auth::{self, nested_error};
use crate::calls::{Call, Control, HangupError, NewCall, Store};
use crate::faults::Faults;
use crate::webhooks::{Inbox, Webhooks};

pub struct AppState {
    pub account: String,
    pub api_key: String,
    pub second_api_key: Option<String>,
    /// Every hangup request as it arrived: (ms since the Unix epoch, call id, key: 1 the
    /// first, 2 the second, 0 another or none). The newest 100,000 are kept.
    pub hangup_log: std::sync::Mutex<std::collections::VecDeque<(u64, String, u8)>>,
    pub store: Store,
    pub faults: Faults,
    pub webhooks: Arc<Webhooks>,
    pub inbox: Inbox,
    pub hangups: AtomicU64,
}

/// Put in each request's extensions by the server so a handler can close its own
/// connection without answering (the drop fault): notifying it ends the connection task.
#[derive(Clone)]
pub struct ConnectionControl(pub Arc<Notify>);

/// The state extractor every handler takes; an alias keeps handler signatures short.
type SharedState = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/voice/accounts/{auth_id}/calls",
            post(create_call).get(list_calls),
        )
        .route(
            "/v1/voice/accounts/{auth_id}/calls/{call_uuid}",
            get(get_call).delete(hangup_call),
        )
        .route("/_sim/health", get(health))
        .route("/_sim/seed", post(seed))
        .route("/_sim/hangups", get(hangup_log))
        .route("/_sim/calls/{call_uuid}/faults", post(script_faults))
        .route("/_sim/calls/{call_uuid}/{action}", post(control))
        .route("/_sim/webhooks", get(webhooks))
        .route("/_sim/inbox", get(inbox_list).post(inbox_push))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Whether every request is logged on stderr. Off unless the binary turns it on
/// (`--log`, or by default when stderr is a terminal); tests that embed the simulator
/// stay quiet.
static REQUEST_LOG: AtomicBool = AtomicBool::new(false);

/// Turns the per-request log on or off for every simulator in this process.
pub fn set_request_log(on: bool) {
    REQUEST_LOG.store(on, Ordering::Relaxed);
}

/// One stderr line per request: UTC time, method, path, status, latency. Never headers
/// (so never the Authorization key) nor the query or body. A request whose connection is
/// dropped before an answer (the drop fault, a client that went away) is logged as `-`.
struct LogLine {
    method: Method,
    path: String,
    start: Instant,
    status: Option<StatusCode>,
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let status = self
            .status
            .map_or_else(|| "-".to_owned(), |s| s.as_u16().to_string());
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let (day, ms_of_day) = (secs.as_secs() % 86_400, secs.subsec_millis());
        eprintln!(
            "{:02}:{:02}:{:02}.{ms_of_day:03} {} {} {status} {ms:.1} ms",
            day / 3600,
            day / 60 % 60,
            day % 60,
            self.method,
            self.path,
        );
    }
}

async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !REQUEST_LOG.load(Ordering::Relaxed) {
        return next.run(req).await;
    }
    let mut line = LogLine {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        start: Instant::now(),
        status: None,
    };
    let resp = next.run(req).await;
    line.status = Some(resp.status());
    resp
}

fn code_for(status: u16) -> &'static str {
    match status {
        400 => "VALIDATION_FAILED",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        422 => "VERIFICATION_FAILED",
        429 => "RATE_LIMITED",
        502 => "DELIVERY_FAILED",
        500..=599 => "INTERNAL_ERROR",
        _ => "ERROR",
    }
}

/// Applies global latency and any fault for this request. `Some` is the response to send
/// instead of the real one; drop and hang never return.
async fn inject(st: &AppState, id: Option<&str>, ctl: &ConnectionControl) -> Option<Response> {
    if !st.faults.global.latency.is_zero() {
        tokio::time::sleep(st.faults.global.latency).await;
    }
    let s = st.faults.next(id)?;
    if let Some(ms) = s.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if s.hang {
        // Long enough for any client deadline; bounded so tasks do not pile up forever.
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    if s.drop {
        ctl.0.notify_one();
        std::future::pending::<()>().await;
    }
    let status = s.status.unwrap_or(500);
    if status == 429 {
        st.faults.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = s.body.unwrap_or_else(
        || json!({"error": {"code": code_for(status), "message": "injected fault"}}),
    );
    let mut r = if status == 204 {
        code.into_response()
    } else {
        (code, Json(body)).into_response()
    };
    if let Some(ra) = s.retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert("retry-after", ra);
    }
    Some(r)
}

/// What every `/v1` request passes first: injected faults (a broken network or gateway
/// acts before the API does), then the key and account check.
async fn gate(
    st: &AppState,
    id: Option<&str>,
    ctl: &ConnectionControl,
    headers: &HeaderMap,
    account: &str,
) -> Result<(), Response> {
    if let Some(r) = inject(st, id, ctl).await {
        return Err(r);
    }
    auth::check(
        headers,
        &st.api_key,
        st.second_api_key.as_deref(),
        &st.account,
        account,
    )
}

/// `GET /_sim/hangups`: each hangup request as it arrived, oldest first:
/// `[{"at_ms": ms since the Unix epoch, "call_uuid": .., "key": 1, 2 or 0 (neither)}]`.
async fn hangup_log(State(st): SharedState) -> Response {
    let log = st.hangup_log.lock().unwrap_or_else(|e| e.into_inner());
    let v: Vec<Value> = log
        .iter()
        .map(|(at, id, key)| json!({"at_ms": at, "call_uuid": id, "key": key}))
        .collect();
    Json(Value::Array(v)).into_response()
}

fn validation(field: &str, reason: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {
            "code": "VALIDATION_FAILED",
            "message": format!("Invalid value for {field}"),
            "details": [{"field": field, "reason": reason}],
        }})),
    )
        .into_response()
}

/// E.164: a plus sign, then 2 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

fn is_http_url(s: &str) -> bool {
    s.parse::<axum::http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http") | Some("https"))
            && u.host().is_some_and(|h| !h.is_empty())
    })
}

#[derive(Deserialize)]
struct CreateBody {
    from: Option<String>,
    to: Option<String>,
    answer_url: Option<String>,
    answer_method: Option<String>,
    ring_url: Option<String>,
    hangup_url: Option<String>,
    ring_timeout: Option<u64>,
    time_limit: Option<u64>,
}

#[allow(clippy::result_large_err)]
fn parse_new_call(body: &[u8]) -> Result<NewCall, Response> {
    let b: CreateBody = serde_json::from_slice(body)
        .map_err(|e| validation("body", &format!("not a JSON call request: {e}")))?;
    let from = b.from.ok_or_else(|| validation("from", "required"))?;
    let to = b.to.ok_or_else(|| validation("to", "required"))?;
    let answer_url = b
        .answer_url
        .ok_or_else(|| validation("answer_url", "required"))?;
    if !is_e164(&from) {
        return Err(validation(
            "from",
            "must be an E.164 number such as +14155551234",
        ));
    }
    if !is_e164(&to) {
        return Err(validation(
            "to",
            "must be an E.164 number such as +14155551234",
        ));
    }
    if !is_http_url(&answer_url) {
        return Err(validation("answer_url", "must be an http or https URL"));
    }
    for (field, url) in [("ring_url", &b.ring_url), ("hangup_url", &b.hangup_url)] {
        if url.as_deref().is_some_and(|u| !is_http_url(u)) {
            return Err(validation(field, "must be an http or https URL"));
        }
    }
    if let Some(m) = &b.answer_method {
        if m != "GET" && m != "POST" {
            return Err(validation("answer_method", "must be GET or POST"));
        }
    }
    if b.ring_timeout == Some(0) || b.time_limit == Some(0) {
        return Err(validation(
            if b.ring_timeout == Some(0) {
                "ring_timeout"
            } else {
                "time_limit"
            },
            "must be positive",
        ));
    }
    Ok(NewCall {
        from,
        to,
        answer_url,
        answer_method: b.answer_method,
        hangup_url: b.hangup_url,
        ring_url: b.ring_url,
        ring_timeout: b.ring_timeout,
        time_limit: b.time_limit,
    })
}

async fn create_call(
    State(st): SharedState,
    Path(account): Path<String>,
    headers: HeaderMap,
    Extension(ctl): Extension<ConnectionControl>,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&st, None, &ctl, &headers, &account).await {
        return r;
    }
    match parse_new_call(&body) {
        Ok(new) => {
            let call = st.store.create(new, auth::tenant(&headers));
            (StatusCode::CREATED, Json(call.created_json())).into_response()
        }
        Err(r) => r,
    }
}

async fn get_call(
    State(st): SharedState,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(ctl): Extension<ConnectionControl>,
) -> Response {
    if let Err(r) = gate(&st, Some(&id), &ctl, &headers, &account).await {
        return r;
    }
    match st.store.get(&id, &auth::tenant(&headers)) {
        Some(c) => Json(c.details_json()).into_response(),
        None => nested_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Call with UUID {id} not found"),
        ),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    direction: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

async fn list_calls(
    State(st): SharedState,
    Path(account): Path<String>,
    headers: HeaderMap,
    Extension(ctl): Extension<ConnectionControl>,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Err(r) = gate(&st, None, &ctl, &headers, &account).await {
        return r;
    }
    let page = match q.page.as_deref().map(str::parse::<u64>) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        _ => return validation("page", "must be a whole number from 1"),
    };
    let per_page = match q.per_page.as_deref().map(str::parse::<u64>) {
        None => 20,
        Some(Ok(p)) if (1..=100).contains(&p) => p,
        _ => return validation("per_page", "must be a whole number from 1 to 100"),
    };
    let keep = |c: &Call| {
        q.status.as_deref().is_none_or(|s| c.status == s)
            && q.direction.as_deref().is_none_or(|d| d == "outbound")
            && q.from.as_deref().is_none_or(|f| c.from == f)
            && q.to.as_deref().is_none_or(|t| c.to == t)
    };
    if st.faults.self_end() {
        st.store.end_one_on_its_own(&auth::tenant(&headers));
    }
    for i in 0..st.faults.grow_now(page) {
        let new = NewCall {
            from: "+14155550199".into(),
            to: format!("+1628{:07}", i % 10_000_000),
            answer_url: "http://127.0.0.1/answer".into(),
            ..Default::default()
        };
        st.store.create(new, auth::tenant(&headers));
    }
    let all = st.store.list(&auth::tenant(&headers), keep);
    let total = all.len() as u64;
    let calls: Vec<Value> = all
        .iter()
        .skip(
            (page - 1)
                .checked_mul(per_page)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(usize::MAX),
        )
        .take(per_page as usize)
        .map(Call::details_json)
        .collect();
    Json(json!({
        "calls": calls,
        "pagination": {"page": page, "per_page": per_page, "total_pages": total.div_ceil(per_page), "total_count": total},
    }))
    .into_response()
}

async fn hangup_call(
    State(st): SharedState,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(ctl): Extension<ConnectionControl>,
) -> Response {
    {
        // As it arrives (before any injected latency or fault): which key it carries.
        let key = match auth::bearer(&headers) {
            Some(k) if k == st.api_key => 1,
            Some(k) if Some(k) == st.second_api_key.as_deref() => 2,
            _ => 0,
        };
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut log = st.hangup_log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= 100_000 {
            log.pop_front();
        }
        log.push_back((at, id.clone(), key));
    }
    if let Err(r) = gate(&st, Some(&id), &ctl, &headers, &account).await {
        return r;
    }
    if st.faults.self_end() {
        st.store.end_one_on_its_own(&auth::tenant(&headers));
    }
    match st.store.hangup(&id, &auth::tenant(&headers)) {
        Ok(call) => {
            st.hangups.fetch_add(1, Ordering::Relaxed);
            if let Some(url) = call.hangup_url.clone() {
                st.webhooks.deliver(url, call.hangup_event(&st.account));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(HangupError::NotFound) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "call_not_found", "message": format!("Call with UUID {id} not found")})),
        )
            .into_response(),
        Err(HangupError::AlreadyEnded) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "call_already_ended", "message": "Call has already ended"})),
        )
            .into_response(),
    }
}

async fn health(State(st): SharedState) -> Response {
    Json(json!({
        "status": "ok",
        "calls": st.store.len(),
        "hangups": st.hangups.load(Ordering::Relaxed),
        "rate_limited": st.faults.rate_limited.load(Ordering::Relaxed),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SeedBody {
    count: usize,
    tenant: Option<String>,
    /// The caller's number of every seeded call (default +14155550100).
    from: Option<String>,
    hangup_url: Option<String>,
    /// Ids become `{id_prefix}{n}` for n in 0..count, so a benchmark can name them
    /// without reading them back.
    id_prefix: Option<String>,
}

/// Creates `count` ringing calls at once (for bulk tests and benchmarks).
async fn seed(State(st): SharedState, Json(b): Json<SeedBody>) -> Response {
    if b.count > 1_000_000 {
        return validation("count", "at most 1000000");
    }
    let ids: Vec<String> = (0..b.count)
        .map(|i| {
            let new = NewCall {
                from: b.from.clone().unwrap_or_else(|| "+14155550100".into()),
                to: format!("+1415{:07}", i % 10_000_000),
                answer_url: "http://127.0.0.1/answer".into(),
                hangup_url: b.hangup_url.clone(),
                ..Default::default()
            };
            let id = match &b.id_prefix {
                Some(p) => format!("{p}{i}"),
                None => crate::calls::uuid_v4(),
            };
            st.store.create_with_id(new, b.tenant.clone(), id).call_uuid
        })
        .collect();
    if b.id_prefix.is_some() {
        // The caller knows the ids; do not send a million of them back.
        return Json(json!({"count": ids.len()})).into_response();
    }
    Json(json!({"call_uuids": ids})).into_response()
}

#[derive(Deserialize)]
struct FaultsBody {
    responses: Vec<crate::faults::Scripted>,
}

async fn script_faults(
    State(st): SharedState,
    Path(id): Path<String>,
    Json(b): Json<FaultsBody>,
) -> Response {
    st.faults.script(&id, b.responses);
    StatusCode::NO_CONTENT.into_response()
}

async fn control(State(st): SharedState, Path((id, action)): Path<(String, String)>) -> Response {
    let what = match action.as_str() {
        "answer" => Control::Answer,
        "caller-hangup" => Control::CallerHangup,
        "callee-hangup" => Control::CalleeHangup,
        "timeout" => Control::Timeout,
        _ => return nested_error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown control action"),
    };
    match st.store.control(&id, what) {
        None => nested_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Call with UUID {id} not found"),
        ),
        Some(Err(_)) => nested_error(StatusCode::CONFLICT, "CALL_ENDED", "Call has already ended"),
        Some(Ok(call)) => {
            if call.end_time.is_some() {
                if let Some(url) = call.hangup_url.clone() {
                    st.webhooks.deliver(url, call.hangup_event(&st.account));
                }
            }
            Json(call.details_json()).into_response()
        }
    }
}

async fn webhooks(State(st): SharedState) -> Response {
    Json(json!({"deliveries": st.webhooks.deliveries()})).into_response()
}

async fn inbox_push(State(st): SharedState, body: Bytes) -> Response {
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    st.inbox.push(v);
    StatusCode::NO_CONTENT.into_response()
}

async fn inbox_list(State(st): SharedState) -> Response {
    Json(json!({"received": st.inbox.all()})).into_response()
}
