//! `tryvox-sim`: prints its base URL as the first line on stdout, then serves until
//! SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tryvox_sim::faults::GlobalFaults;
use tryvox_sim::server::{serve, Config};

const USAGE: &str = r#"usage: tryvox-sim [options]

Prints its base URL on the first line of stdout, then the account and key to use, and
serves until SIGINT or SIGTERM.

options:
  --listen ADDR            address to listen on (default 127.0.0.1:0, a free port)
  --account ID             account id (default AC123456)
  --api-key KEY            the Bearer key to accept (default tvx_sk_test_simulator)
  --second-api-key KEY     a second key accepted too, as during a key rotation
                           (GET /_sim/hangups says which key each hangup used)
  --answer-delay-ms N      ringing calls are answered after N ms (default 1000)
  --no-auto-answer         calls ring until POST /_sim/calls/{id}/answer
  --latency-ms N           add N ms before every /v1 answer
  --error-rate R           answer this share (0..1) of /v1 requests with 503
  --rate-limit-rate R      answer this share with 429 and Retry-After
  --retry-after S          the Retry-After seconds for --rate-limit-rate (default 1)
  --rate-limit N           answer /v1 requests beyond N a second with 429 and Retry-After
                           (a token bucket holding a second's worth)
  --grow-on-list N         N new live calls start during the first listing (at its
                           first request for page 2 or later)
  --drop-rate R            close this share of connections without an answer
  --self-end-rate R        before this share of list and hangup requests, one random
                           live call ends on its own (caller-hangup)
  --tls-cert FILE --tls-key FILE   serve https with this PEM chain and key
  --log                    log every request on stderr: time, method, path, status,
                           latency (never a header, so never the key); the default
                           when stderr is a terminal
  --quiet                  do not log requests (the default when stderr is not a terminal)
  -h, --help               this text

endpoints (/v1 needs `Authorization: Bearer KEY`; /_sim needs nothing):
  POST   /v1/voice/accounts/{auth_id}/calls              create a call: JSON {"from",
                                                        "to" (E.164), "answer_url"};
                                                        optional hangup_url, ring_url,
                                                        answer_method, ring_timeout,
                                                        time_limit; 201 with call_uuid
  GET    /v1/voice/accounts/{auth_id}/calls              list calls (?status= &from= &to=
                                                        &page= &per_page=)
  GET    /v1/voice/accounts/{auth_id}/calls/{call_uuid}  one call
  DELETE /v1/voice/accounts/{auth_id}/calls/{call_uuid}  hang up: 204; 404 call_not_found
                                                        or call_already_ended
  GET    /_sim/health                                    {"status","calls","hangups","rate_limited"}
  POST   /_sim/seed                                      JSON {"count": N} creates N
                                                        ringing calls (optional tenant,
                                                        from, hangup_url, id_prefix); answers
                                                        {"call_uuids": [...]}
  GET    /_sim/hangups                                   each hangup request as it arrived:
                                                        [{"at_ms", "call_uuid", "key"}]
                                                        (key 1, 2 (--second-api-key), 0)
  POST   /_sim/calls/{call_uuid}/answer                  answer a ringing call
  POST   /_sim/calls/{call_uuid}/caller-hangup           the caller hangs up
  POST   /_sim/calls/{call_uuid}/callee-hangup           the callee hangs up
  POST   /_sim/calls/{call_uuid}/timeout                 the call hits its time limit
  POST   /_sim/calls/{call_uuid}/faults                  script this call's next answers:
                                                        JSON {"responses": [{"status",
                                                        "body", "retry_after",
                                                        "delay_ms", "drop", "hang"}]}
  GET    /_sim/webhooks                                  webhook deliveries made so far
  GET    /_sim/inbox, POST /_sim/inbox                   a webhook receiver: POST stores
                                                        a body, GET lists them
"#;

/// The parsed command line: the server's configuration and whether to log requests.
fn parse() -> Result<(Config, bool), String> {
    use std::io::IsTerminal;
    let mut log = std::io::stderr().is_terminal();
    let mut c = Config::default();
    let mut f = GlobalFaults {
        retry_after_secs: 1,
        ..Default::default()
    };
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let rate = |v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("bad rate {v}"))
        };
        match a.as_str() {
            "--listen" => c.bind = val()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--account" => c.account = val()?,
            "--api-key" => c.api_key = val()?,
            "--second-api-key" => c.second_api_key = Some(val()?),
            "--answer-delay-ms" => {
                c.answer_delay = Some(Duration::from_millis(
                    val()?.parse().map_err(|e| format!("{e}"))?,
                ))
            }
            "--no-auto-answer" => c.answer_delay = None,
            "--latency-ms" => {
                f.latency = Duration::from_millis(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--error-rate" => f.error_rate = rate(val()?)?,
            "--rate-limit-rate" => f.rate_limit_rate = rate(val()?)?,
            "--retry-after" => f.retry_after_secs = val()?.parse().map_err(|e| format!("{e}"))?,
            "--drop-rate" => f.drop_rate = rate(val()?)?,
            "--self-end-rate" => f.self_end_rate = rate(val()?)?,
            "--rate-limit" => f.rate_limit = val()?.parse().map_err(|e| format!("{e}"))?,
            "--grow-on-list" => f.grow_on_list = val()?.parse().map_err(|e| format!("{e}"))?,
            "--tls-cert" => cert = Some(PathBuf::from(val()?)),
            "--tls-key" => key = Some(PathBuf::from(val()?)),
            "--log" => log = true,
            "--quiet" => log = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    c.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    c.faults = f;
    Ok((c, log))
}

fn main() {
    let config = match parse() {
        Ok((c, log)) => {
            tryvox_sim::app::set_request_log(log);
            c
        }
        Err(e) => {
            eprintln!("tryvox-sim: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tryvox-sim: cannot listen on {}: {e}", config.bind);
                return 1;
            }
        };
        let addr = listener.local_addr().expect("bound address");
        // Handlers go in before the URL is printed: a supervisor may signal the moment
        // it reads that line.
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("tryvox-sim: cannot install signal handlers");
                return 1;
            }
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // The first line is the base URL, for scripts to read.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{scheme}://{addr}");
        let _ = writeln!(out, "account: {}", config.account);
        let _ = writeln!(
            out,
            "api key: {} (a simulator key, not a secret)",
            config.api_key
        );
        let _ = out.flush();
        drop(out);
        let stop = Arc::new(Notify::new());
        let s2 = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            s2.notify_one();
        });
        match serve(listener, config, stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tryvox-sim: {e}");
                1
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}
