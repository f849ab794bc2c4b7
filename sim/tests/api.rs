//! The simulator over real HTTP on 127.0.0.1: every endpoint, every error, webhooks to a
//! real listener, tenant scoping, and each fault mode.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

fn sim_with(c: Config) -> Running {
    spawn(c).expect("simulator starts")
}

fn sim() -> Running {
    sim_with(Config::default())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Value,
}

fn send(
    method: &str,
    url: &str,
    key: Option<&str>,
    tenant: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let a = agent();
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    let r = match body {
        Some(v) => a.run(
            b.header("content-type", "application/json")
                .body(v.to_string())
                .unwrap(),
        ),
        None => a.run(b.body(()).unwrap()),
    }
    .expect("request completes");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.into_body().read_to_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn create(s: &Running, extra: Value) -> Value {
    let mut body = json!({"from": "+14155550100", "to": "+14155550101", "answer_url": "https://example.com/answer"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = send("POST", &s.calls_url(), Some(KEY), None, Some(body));
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

fn call_url(s: &Running, id: &str) -> String {
    format!("{}/{id}", s.calls_url())
}

#[test]
fn create_get_hangup_with_the_documented_semantics() {
    let s = sim();
    let c = create(&s, json!({}));
    for f in ["request_uuid", "call_uuid", "created_at"] {
        assert!(c[f].is_string(), "{f}");
    }
    assert_eq!(c["status"], "ringing");
    assert_eq!(c["direction"], "outbound");
    let id = c["call_uuid"].as_str().unwrap();
    let got = send("GET", &call_url(&s, id), Some(KEY), None, None);
    assert_eq!(got.status, 200);
    assert_eq!(got.body["status"], "ringing");
    assert!(got.body["end_time"].is_null());

    // Ringing calls can be hung up (this cancels them): 204, no body.
    let h = send("DELETE", &call_url(&s, id), Some(KEY), None, None);
    assert_eq!(h.status, 204);
    assert_eq!(h.body, Value::Null);
    let got = send("GET", &call_url(&s, id), Some(KEY), None, None).body;
    assert_eq!(got["status"], "completed");
    assert_eq!(got["end_reason"], "api-hangup");
    assert!(got["end_time"].is_string());
    assert_eq!(got["duration"], 0);

    // Again: the flat call_already_ended form.
    let again = send("DELETE", &call_url(&s, id), Some(KEY), None, None);
    assert_eq!(again.status, 404);
    assert_eq!(
        again.body,
        json!({"error": "call_already_ended", "message": "Call has already ended"})
    );
    // Unknown: the flat call_not_found form.
    let nf = send(
        "DELETE",
        &call_url(&s, "650e8400-e29b-41d4-a716-446655440000"),
        Some(KEY),
        None,
        None,
    );
    assert_eq!(nf.status, 404);
    assert_eq!(nf.body["error"], "call_not_found");
    assert_eq!(
        nf.body["message"],
        "Call with UUID 650e8400-e29b-41d4-a716-446655440000 not found"
    );
    // GET of an unknown call: the nested envelope.
    let g = send("GET", &call_url(&s, "nope"), Some(KEY), None, None);
    assert_eq!(g.status, 404);
    assert_eq!(g.body["error"]["code"], "NOT_FOUND");
}

#[test]
fn answered_calls_have_durations_and_can_be_hung_up() {
    let s = sim_with(Config {
        answer_delay: Some(Duration::ZERO),
        ..Config::default()
    });
    let id = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = send("GET", &call_url(&s, &id), Some(KEY), None, None).body;
    assert_eq!(got["status"], "in-progress");
    assert!(got["answer_time"].is_string());
    assert_eq!(
        send("DELETE", &call_url(&s, &id), Some(KEY), None, None).status,
        204
    );
    let got = send("GET", &call_url(&s, &id), Some(KEY), None, None).body;
    assert_eq!(got["status"], "completed");
    assert_eq!(got["end_reason"], "api-hangup");
}

#[test]
fn control_requests_drive_the_state_machine() {
    let s = sim_with(Config {
        answer_delay: None,
        ..Config::default()
    });
    let ctl = |id: &str, action: &str| {
        send(
            "POST",
            &format!("{}/_sim/calls/{id}/{action}", s.base_url),
            None,
            None,
            None,
        )
    };
    let a = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ctl(&a, "answer").body["status"], "in-progress");
    let done = ctl(&a, "callee-hangup").body;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["end_reason"], "callee-hangup");
    let again = send("DELETE", &call_url(&s, &a), Some(KEY), None, None);
    assert_eq!(
        again.body["error"], "call_already_ended",
        "a callee hangup ends it for the API too"
    );
    let b = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ctl(&b, "caller-hangup").body["end_reason"], "caller-hangup");
    let c = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ctl(&c, "timeout").body["status"], "no-answer");
    assert_eq!(
        send("DELETE", &call_url(&s, &c), Some(KEY), None, None).body["error"],
        "call_already_ended"
    );
    assert_eq!(ctl("nope", "answer").status, 404);
    assert_eq!(ctl(&a, "answer").status, 409);
}

#[test]
fn create_validates_its_input() {
    let s = sim();
    let cases = [
        (
            json!({"to": "+14155550101", "answer_url": "https://x/a"}),
            "from",
        ),
        (
            json!({"from": "+14155550100", "answer_url": "https://x/a"}),
            "to",
        ),
        (
            json!({"from": "+14155550100", "to": "+14155550101"}),
            "answer_url",
        ),
        (
            json!({"from": "14155550100", "to": "+14155550101", "answer_url": "https://x/a"}),
            "from",
        ),
        (
            json!({"from": "+14155550100", "to": "+0123", "answer_url": "https://x/a"}),
            "to",
        ),
        (
            json!({"from": "+14155550100", "to": "+1415555010199999", "answer_url": "https://x/a"}),
            "to",
        ),
        (
            json!({"from": "+14155550100", "to": "+14155550101", "answer_url": "ftp://x/a"}),
            "answer_url",
        ),
        (
            json!({"from": "+14155550100", "to": "+14155550101", "answer_url": "https://x/a", "hangup_url": "nope"}),
            "hangup_url",
        ),
        (
            json!({"from": "+14155550100", "to": "+14155550101", "answer_url": "https://x/a", "answer_method": "PUT"}),
            "answer_method",
        ),
    ];
    for (body, field) in cases {
        let r = send("POST", &s.calls_url(), Some(KEY), None, Some(body));
        assert_eq!(r.status, 400);
        assert_eq!(r.body["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(r.body["error"]["details"][0]["field"], field);
    }
    let r = send(
        "POST",
        &s.calls_url(),
        Some(KEY),
        None,
        Some(json!("not an object")),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn auth_errors_use_the_nested_envelope() {
    let s = sim();
    let id = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = send("DELETE", &call_url(&s, &id), None, None, None);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
    let r = send(
        "DELETE",
        &call_url(&s, &id),
        Some("tvx_sk_test_wrong"),
        None,
        None,
    );
    assert_eq!(r.status, 401);
    let other = format!("{}/v1/voice/accounts/AC999/calls/{id}", s.base_url);
    assert_eq!(send("DELETE", &other, Some(KEY), None, None).status, 403);
    // None of those ended the call.
    assert_eq!(
        send("DELETE", &call_url(&s, &id), Some(KEY), None, None).status,
        204
    );
    let _ = ACCOUNT;
}

#[test]
fn tenants_see_only_their_calls() {
    let s = sim();
    let body = json!({"from": "+14155550100", "to": "+14155550101", "answer_url": "https://x/a"});
    let t1 = send(
        "POST",
        &s.calls_url(),
        Some(KEY),
        Some("t1"),
        Some(body.clone()),
    )
    .body;
    let id = t1["call_uuid"].as_str().unwrap();
    assert_eq!(
        send("GET", &call_url(&s, id), Some(KEY), Some("t2"), None).status,
        404
    );
    assert_eq!(
        send("GET", &call_url(&s, id), Some(KEY), None, None).status,
        404
    );
    assert_eq!(
        send("DELETE", &call_url(&s, id), Some(KEY), Some("t2"), None).body["error"],
        "call_not_found"
    );
    let list = send("GET", &s.calls_url(), Some(KEY), Some("t2"), None).body;
    assert_eq!(list["pagination"]["total_count"], 0);
    assert_eq!(
        send("DELETE", &call_url(&s, id), Some(KEY), Some("t1"), None).status,
        204
    );
}

#[test]
fn list_filters_and_paginates() {
    let s = sim();
    let mut ids = vec![];
    for i in 0..25 {
        let to = if i % 5 == 0 {
            "+14155550199"
        } else {
            "+14155550101"
        };
        ids.push(
            create(&s, json!({"to": to}))["call_uuid"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    send("DELETE", &call_url(&s, &ids[0]), Some(KEY), None, None);
    let l = send("GET", &s.calls_url(), Some(KEY), None, None).body;
    assert_eq!(
        l["calls"].as_array().unwrap().len(),
        20,
        "per_page defaults to 20"
    );
    assert_eq!(
        l["pagination"],
        json!({"page": 1, "per_page": 20, "total_pages": 2, "total_count": 25})
    );
    assert_eq!(l["calls"][0]["call_uuid"], ids[0].as_str(), "oldest first");
    let p2 = send(
        "GET",
        &format!("{}?page=2", s.calls_url()),
        Some(KEY),
        None,
        None,
    )
    .body;
    assert_eq!(p2["calls"].as_array().unwrap().len(), 5);
    let f = send(
        "GET",
        &format!("{}?to=%2B14155550199&per_page=100", s.calls_url()),
        Some(KEY),
        None,
        None,
    )
    .body;
    assert_eq!(f["pagination"]["total_count"], 5);
    let done = send(
        "GET",
        &format!("{}?status=completed", s.calls_url()),
        Some(KEY),
        None,
        None,
    )
    .body;
    assert_eq!(done["pagination"]["total_count"], 1);
    for bad in ["per_page=101", "per_page=0", "page=0", "page=x"] {
        let r = send(
            "GET",
            &format!("{}?{bad}", s.calls_url()),
            Some(KEY),
            None,
            None,
        );
        assert_eq!(r.status, 400, "{bad}");
    }
}

#[test]
fn hangup_webhook_reaches_a_real_listener() {
    let receiver = sim(); // its /_sim/inbox is a real HTTP listener
    let s = sim();
    let inbox = format!("{}/_sim/inbox", receiver.base_url);
    let id = create(&s, json!({"hangup_url": inbox}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        send("DELETE", &call_url(&s, &id), Some(KEY), None, None).status,
        204
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let got = send("GET", &inbox, None, None, None).body;
        if let Some(e) = got["received"].as_array().and_then(|a| a.first().cloned()) {
            break e;
        }
        assert!(Instant::now() < deadline, "no webhook arrived");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(event["call_uuid"], id.as_str());
    assert_eq!(event["end_reason"], "api-hangup");
    assert_eq!(event["status"], "completed");
    assert_eq!(event["account_id"], ACCOUNT);
    assert_eq!(event["event"], "call.hangup");
    for f in ["from", "to", "direction", "timestamp", "end_time"] {
        assert!(event[f].is_string(), "{f}");
    }
}

#[test]
fn a_dead_or_silent_webhook_receiver_never_delays_the_204() {
    let s = sim();
    // A listener that accepts and never answers, and a port nobody listens on.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("http://{}/hook", silent.local_addr().unwrap()),
        format!("http://127.0.0.1:{dead_port}/hook"),
    ] {
        let id = create(&s, json!({"hangup_url": url}))["call_uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = Instant::now();
        assert_eq!(
            send("DELETE", &call_url(&s, &id), Some(KEY), None, None).status,
            204
        );
        // Delivery takes up to 3 x 5 s against the silent one; the 204 did not wait for it.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // The dead receiver's delivery is retried, then recorded as failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = send(
            "GET",
            &format!("{}/_sim/webhooks", s.base_url),
            None,
            None,
            None,
        )
        .body;
        let failed = d["deliveries"].as_array().unwrap().iter().any(|x| {
            x["url"].as_str().unwrap().contains(&dead_port.to_string()) && x["attempts"] == 3
        });
        if failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead receiver never recorded: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scripted_faults_per_call() {
    let s = sim();
    let id = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let script = json!({"responses": [
        {"status": 503},
        {"status": 429, "retry_after": "2"},
        {"status": 404, "body": {"error": {"code": "NOT_FOUND", "message": "gateway"}}},
        {"status": 204, "delay_ms": 300},
    ]});
    let r = send(
        "POST",
        &format!("{}/_sim/calls/{id}/faults", s.base_url),
        None,
        None,
        Some(script),
    );
    assert_eq!(r.status, 204);
    let url = call_url(&s, &id);
    let r = send("DELETE", &url, Some(KEY), None, None);
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "INTERNAL_ERROR");
    let r = send("DELETE", &url, Some(KEY), None, None);
    assert_eq!(
        (
            r.status,
            r.headers.get("retry-after").unwrap().to_str().unwrap()
        ),
        (429, "2")
    );
    assert_eq!(
        send("DELETE", &url, Some(KEY), None, None).body["error"]["code"],
        "NOT_FOUND"
    );
    let t = Instant::now();
    assert_eq!(send("DELETE", &url, Some(KEY), None, None).status, 204);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // The script is spent: the real hangup happens now.
    assert_eq!(send("DELETE", &url, Some(KEY), None, None).status, 204);
    assert_eq!(
        send("DELETE", &url, Some(KEY), None, None).body["error"],
        "call_already_ended"
    );
}

#[test]
fn scripted_drop_and_hang() {
    let s = sim();
    let id = create(&s, json!({}))["call_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let script = json!({"responses": [{"drop": true}, {"hang": true}]});
    send(
        "POST",
        &format!("{}/_sim/calls/{id}/faults", s.base_url),
        None,
        None,
        Some(script),
    );
    let url = call_url(&s, &id);
    let a = agent();
    let e = a
        .delete(&url)
        .header("authorization", format!("Bearer {KEY}"))
        .call();
    assert!(e.is_err(), "dropped connection gives no response");
    let quick: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .into();
    let e = quick
        .delete(&url)
        .header("authorization", format!("Bearer {KEY}"))
        .call()
        .unwrap_err();
    assert!(matches!(e, ureq::Error::Timeout(_)), "{e}");
    assert_eq!(send("DELETE", &url, Some(KEY), None, None).status, 204);
}

#[test]
fn global_fault_rates() {
    let s = sim_with(Config {
        faults: GlobalFaults {
            error_rate: 1.0,
            ..Default::default()
        },
        ..Config::default()
    });
    assert_eq!(
        send("DELETE", &call_url(&s, "x"), Some(KEY), None, None).status,
        503
    );
    let s = sim_with(Config {
        faults: GlobalFaults {
            rate_limit_rate: 1.0,
            retry_after_secs: 7,
            ..Default::default()
        },
        ..Config::default()
    });
    let r = send("DELETE", &call_url(&s, "x"), Some(KEY), None, None);
    assert_eq!(
        (
            r.status,
            r.headers.get("retry-after").unwrap().to_str().unwrap()
        ),
        (429, "7")
    );
    let s = sim_with(Config {
        faults: GlobalFaults {
            drop_rate: 1.0,
            ..Default::default()
        },
        ..Config::default()
    });
    assert!(agent().delete(call_url(&s, "x")).call().is_err());
    let s = sim_with(Config {
        faults: GlobalFaults {
            latency: Duration::from_millis(200),
            ..Default::default()
        },
        ..Config::default()
    });
    let t = Instant::now();
    send("DELETE", &call_url(&s, "x"), Some(KEY), None, None);
    assert!(t.elapsed() >= Duration::from_millis(200));
    // The control plane is never faulted.
    let s = sim_with(Config {
        faults: GlobalFaults {
            error_rate: 1.0,
            ..Default::default()
        },
        ..Config::default()
    });
    assert_eq!(
        send(
            "GET",
            &format!("{}/_sim/health", s.base_url),
            None,
            None,
            None
        )
        .status,
        200
    );
}

#[test]
fn seed_creates_many_calls() {
    let s = sim();
    let r = send(
        "POST",
        &format!("{}/_sim/seed", s.base_url),
        None,
        None,
        Some(json!({"count": 500})),
    );
    let ids = r.body["call_uuids"].as_array().unwrap();
    assert_eq!(ids.len(), 500);
    assert_eq!(
        send(
            "DELETE",
            &call_url(&s, ids[0].as_str().unwrap()),
            Some(KEY),
            None,
            None
        )
        .status,
        204
    );
    let h = send(
        "GET",
        &format!("{}/_sim/health", s.base_url),
        None,
        None,
        None,
    )
    .body;
    assert_eq!(
        (h["calls"].as_u64(), h["hangups"].as_u64()),
        (Some(500), Some(1))
    );
}

#[test]
fn serves_tls_from_pem_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
    let s = sim_with(Config {
        tls: Some((dir.join("server.pem"), dir.join("server.key"))),
        ..Config::default()
    });
    assert!(s.base_url.starts_with("https://"));
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&ca).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
        .build();
    let a: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into();
    let r = a.get(format!("{}/_sim/health", s.base_url)).call().unwrap();
    assert_eq!(r.status(), 200);
    // A bad key file is an error at start-up, not a silent dead server.
    assert!(spawn(Config {
        tls: Some((dir.join("server.pem"), dir.join("missing.key"))),
        ..Config::default()
    })
    .is_err());
}
