//! The library end to end against tryvox-sim: real call state, webhooks, faults, TLS,
//! and ten thousand hangups in one `hangup_many`.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;
use support::{compile_c, seed_calls};

use tryvox_core::{Client, Options, Status};
use tryvox_sim::server::{DEFAULT_ACCOUNT as ACCOUNT, DEFAULT_API_KEY as KEY};
use tryvox_sim::{spawn, Config, Running};

fn sim() -> Running {
    spawn(Config::default()).unwrap()
}

fn control() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn script(s: &Running, id: &str, json: &str) {
    let r = control()
        .post(format!("{}/_sim/calls/{id}/faults", s.base_url))
        .header("content-type", "application/json")
        .send(json.as_bytes())
        .unwrap();
    assert_eq!(r.status(), 204);
}

fn call_status(s: &Running, id: &str) -> String {
    let mut r = control()
        .get(format!("{}/{id}", s.calls_url()))
        .header("authorization", format!("Bearer {KEY}"))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["status"].as_str().unwrap_or("").to_owned()
}

fn client_for(s: &Running, tweak: impl FnOnce(&mut Options)) -> Client {
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    tweak(&mut o);
    Client::with_options(ACCOUNT, KEY, &o).unwrap()
}

fn st(r: tryvox_core::HangupResult) -> Status {
    r.map(|_| Status::Ok).unwrap_or_else(|e| e.status())
}

#[test]
fn hangup_lifecycle_against_the_simulator() {
    let s = sim();
    let c = client_for(&s, |_| {});
    let ids = seed_calls(&s, 2);
    assert_eq!(c.hangup(&ids[0]).unwrap(), 204);
    assert_eq!(call_status(&s, &ids[0]), "completed");
    assert_eq!(st(c.hangup(&ids[0])), Status::AlreadyEnded);
    assert_eq!(
        st(c.hangup("00000000-0000-4000-8000-000000000000")),
        Status::NotFound
    );
    // Wrong key, wrong account.
    let mut o = Options::new();
    o.set_base_url(&s.base_url).unwrap();
    let bad_key = Client::with_options(ACCOUNT, "tvx_sk_test_nope", &o).unwrap();
    assert_eq!(st(bad_key.hangup(&ids[1])), Status::Unauthorized);
    let other_account = Client::with_options("AC999", KEY, &o).unwrap();
    assert_eq!(st(other_account.hangup(&ids[1])), Status::Forbidden);
    assert_eq!(
        call_status(&s, &ids[1]),
        "ringing",
        "refused hangups end nothing"
    );
}

#[test]
fn tenant_option_scopes_hangups() {
    let s = sim();
    let body = r#"{"from":"+14155550100","to":"+14155550101","answer_url":"https://x/a"}"#;
    let mut r = control()
        .post(s.calls_url())
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-tenant-id", "tenant-a")
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    let id = v["call_uuid"].as_str().unwrap();
    let other = client_for(&s, |o| o.set_tenant_id("tenant-b").unwrap());
    assert_eq!(st(other.hangup(id)), Status::NotFound);
    let mine = client_for(&s, |o| o.set_tenant_id("tenant-a").unwrap());
    assert_eq!(st(mine.hangup(id)), Status::Ok);
}

#[test]
fn simulator_faults_are_retried_as_the_contract_says() {
    let s = sim();
    let c = client_for(&s, |_| {});
    let ids = seed_calls(&s, 4);
    script(
        &s,
        &ids[0],
        r#"{"responses":[{"status":503},{"status":502}]}"#,
    );
    assert_eq!(st(c.hangup(&ids[0])), Status::Ok);
    script(
        &s,
        &ids[1],
        r#"{"responses":[{"status":429,"retry_after":"1"}]}"#,
    );
    assert_eq!(st(c.hangup(&ids[1])), Status::Ok);
    script(&s, &ids[2], r#"{"responses":[{"drop":true}]}"#);
    assert_eq!(st(c.hangup(&ids[2])), Status::Ok);
    // An attempt whose fate was unknown (dropped after the hangup happened) followed by a
    // retry that meets call_already_ended: ALREADY_ENDED, the call is over either way.
    assert_eq!(st(c.hangup(&ids[3])), Status::Ok);
    script(&s, &ids[3], r#"{"responses":[{"status":504}]}"#);
    assert_eq!(st(c.hangup(&ids[3])), Status::AlreadyEnded);
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

fn tls_sim(name: &str) -> Running {
    let d = fixtures();
    let config = Config {
        tls: Some((d.join(format!("{name}.pem")), d.join(format!("{name}.key")))),
        ..Config::default()
    };
    spawn(config).unwrap()
}

fn hangups_seen(s: &Running) -> u64 {
    let mut r = control().get(format!("{}/_sim/health", s.base_url));
    if s.base_url.starts_with("https") {
        let ca = std::fs::read(fixtures().join("ca.pem")).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&ca).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
            .disable_verification(true) // the control read only; the client under test verifies
            .build();
        let a: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
        r = a.get(format!("{}/_sim/health", s.base_url));
    }
    let mut resp = r.call().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["hangups"].as_u64().unwrap()
}

#[test]
fn tls_with_a_private_ca() {
    let ca = fixtures().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Trusted through set_ca_file: works.
    let s = tls_sim("server");
    let ids = {
        let ca_pem = std::fs::read(fixtures().join("ca.pem")).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&ca_pem).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
            .build();
        let a: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
        let mut r = a
            .post(format!("{}/_sim/seed", s.base_url))
            .header("content-type", "application/json")
            .send(&br#"{"count":1}"#[..])
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        vec![v["call_uuids"][0].as_str().unwrap().to_owned()]
    };
    let trusted = client_for(&s, |o| o.set_ca_file(ca).unwrap());
    assert_eq!(st(trusted.hangup(&ids[0])), Status::Ok);

    // The built-in roots do not know the private CA: TLS error, nothing sent.
    let untrusted = client_for(&s, |o| o.set_max_retries(0).unwrap());
    let e = untrusted.hangup("some-call").unwrap_err();
    assert_eq!(e.status(), Status::TlsError, "{e}");
    assert_eq!(hangups_seen(&s), 1);

    // A certificate from the trusted CA but for another name.
    let wrong = tls_sim("wrongname");
    let c = client_for(&wrong, |o| o.set_ca_file(ca).unwrap());
    let e = c.hangup("some-call").unwrap_err();
    assert_eq!(e.status(), Status::TlsError, "{e}");
    assert_eq!(hangups_seen(&wrong), 0, "the key was never sent");

    // A self-signed certificate nobody vouches for.
    let selfsigned = tls_sim("selfsigned");
    let c = client_for(&selfsigned, |o| o.set_ca_file(ca).unwrap());
    assert_eq!(
        c.hangup("some-call").unwrap_err().status(),
        Status::TlsError
    );
    assert_eq!(hangups_seen(&selfsigned), 0);
}

#[test]
fn ten_thousand_hangups_in_one_call() {
    let s = sim();
    let live = seed_calls(&s, 8000);
    let c = client_for(&s, |o| o.set_timeout(Duration::from_secs(30)).unwrap());
    // 1000 are ended beforehand, 2000 ids were never calls.
    let pre = c.hangup_many(&live[..1000], 16).unwrap();
    assert!(pre.iter().all(|r| r.is_ok()));
    let mut ids: Vec<String> = live.clone();
    ids.extend((0..2000).map(|i| format!("unknown-{i}")));
    assert_eq!(ids.len(), 10_000);
    let results = c.hangup_many(&ids, 32).unwrap();
    assert_eq!(results.len(), 10_000);
    for (i, r) in results.iter().enumerate() {
        let want = if i < 1000 {
            Status::AlreadyEnded
        } else if i < 8000 {
            Status::Ok
        } else {
            Status::NotFound
        };
        assert_eq!(st(r.clone()), want, "entry {i} ({})", ids[i]);
    }
    assert_eq!(hangups_seen(&s), 8000);
}

#[test]
fn c_program_against_the_simulator() {
    let s = sim();
    let ids = seed_calls(&s, 8);
    let exe = compile_c("tests/c/e2e_sim.c", "e2e_sim");
    let out = std::process::Command::new(&exe)
        .arg(&s.base_url)
        .arg(ACCOUNT)
        .arg(KEY)
        .args(&ids)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(hangups_seen(&s), 8);
}
