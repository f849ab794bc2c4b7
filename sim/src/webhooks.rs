//! Webhook delivery: off the request path, with bounded retries. A slow or dead receiver
//! never delays the hangup's 204. Every delivery attempt is recorded for `/_sim/webhooks`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// Attempts per webhook (the first one included).
const ATTEMPTS: u32 = 3;
/// Per-attempt timeout.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries remembered.
const KEEP: usize = 1000;

#[derive(Default)]
pub struct Webhooks {
    log: Mutex<VecDeque<Value>>,
}

impl Webhooks {
    /// Queues a POST of `payload` to `url` and returns at once.
    pub fn deliver(self: &Arc<Self>, url: String, payload: Value) {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.deliver_now(&url, &payload));
    }

    fn deliver_now(&self, url: &str, payload: &Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let body = payload.to_string();
        let mut outcome = String::new();
        for attempt in 1..=ATTEMPTS {
            let r = agent
                .post(url)
                .header("content-type", "application/json")
                .header("user-agent", "tryvox-sim-webhooks/0.1")
                .send(body.as_bytes());
            outcome = match r {
                Ok(resp) if resp.status().is_success() => {
                    self.record(url, payload, attempt, "delivered", resp.status().as_u16());
                    return;
                }
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) => e.to_string(),
            };
            std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
        }
        self.record(url, payload, ATTEMPTS, &format!("failed: {outcome}"), 0);
    }

    fn record(&self, url: &str, payload: &Value, attempts: u32, outcome: &str, http: u16) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back(json!({
            "url": url, "attempts": attempts, "outcome": outcome, "http_status": http,
            "payload": payload,
        }));
    }

    pub fn deliveries(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// A built-in receiver (`/_sim/inbox`), so a demo needs no listener of its own.
#[derive(Default)]
pub struct Inbox {
    items: Mutex<VecDeque<Value>>,
}

impl Inbox {
    pub fn push(&self, v: Value) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() == KEEP {
            items.pop_front();
        }
        items.push_back(v);
    }

    pub fn all(&self) -> Vec<Value> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
