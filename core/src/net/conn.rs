//! One connection to the API (directly, or through a proxy: a CONNECT tunnel for https,
//! requests in absolute form for plain http; in clear or over TLS)
//! as a non-blocking state machine: the caller's thread drives it with `poll()`
//! (`blocking`), the engine with its event loop (`engine`). Neither waits inside:
//! [`Conn::drive`] does what the socket allows and says whether the answer is complete.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use ureq_proto::http::header::PROXY_AUTHORIZATION;
use ureq_proto::http::{HeaderValue, Request, Uri};

use crate::contract::error::Error;
use crate::contract::stats::OpenConnection;
use crate::host::process::PerProcess;
use crate::net::resolve::ResolveError;
use crate::net::wire::{Answer, Exchange, Fed, WireError, BODY_GRACE, MAX_HEAD};

/// Where the client's connections go: computed once per client.
pub(crate) struct Route {
    /// The host and port to resolve and connect to: the proxy's, or the API's.
    pub(crate) dial_host: String,
    pub(crate) dial_port: u16,
    /// The proxy as messages name it (`host:port`, never its credentials).
    pub(crate) proxy: Option<String>,
    /// TLS to the API: its configuration and the name its certificate must carry.
    tls: Option<(Tls, ServerName<'static>)>,
    /// https through a proxy: the CONNECT request sent to it first, built once.
    connect: Option<Vec<u8>>,
    /// Plain http through a proxy: each request goes to it in absolute form.
    forward: Option<Forward>,
    /// The proxy's credentials in every form a peer could echo them (the Basic token, the
    /// decoded and the encoded `user:password`, the password): redacted from messages as
    /// the key is.
    secrets: Vec<Vec<u8>>,
}

/// How plain-http requests go to a proxy: no tunnel (proxies as deployed, Debian's
/// Squid for one, allow CONNECT to port 443 only), the request itself in absolute form
/// (RFC 9112 3.2.2), as libcurl sends it.
#[derive(Clone)]
struct Forward {
    /// `Proxy-Authorization`, sent with every request: no CONNECT carries it.
    auth: Option<HeaderValue>,
}

impl Route {
    /// A connection on this route has more to set up after TCP: a tunnel or TLS.
    pub(crate) fn needs_setup(&self) -> bool {
        self.connect.is_some() || self.tls.is_some()
    }

    /// The route to `base` (the API's base URL), through `proxy` if set; `roots` gives
    /// the roots to trust, read only if `base` is https.
    pub(crate) fn new(
        base: &Uri,
        proxy: Option<&Uri>,
        roots: impl FnOnce() -> Result<rustls::RootCertStore, Error>,
    ) -> Result<Route, Error> {
        let https = base.scheme_str() == Some("https");
        let host = base.host().unwrap_or_default().to_owned();
        let port = base.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(bare).map_err(|_| {
                Error::invalid("the base URL's host is not a valid TLS server name")
            })?;
            let config = Arc::new(tls_config(roots()?)?);
            Some((
                Tls {
                    here: PerProcess::new(Arc::clone(&config)),
                    base: config,
                },
                name,
            ))
        } else {
            None
        };
        let Some(p) = proxy else {
            return Ok(Route {
                dial_host: host,
                dial_port: port,
                proxy: None,
                tls,
                connect: None,
                forward: None,
                secrets: Vec::new(),
            });
        };
        // Credentials in the proxy URL (user:password@) go as Basic auth; userinfo is
        // percent-encoded in a URL ("p%40ss" for "p@ss").
        let userinfo = p
            .authority()
            .and_then(|a| a.as_str().rsplit_once('@'))
            .map(|(userinfo, _)| userinfo);
        let token =
            userinfo.map(|u| base64::engine::general_purpose::STANDARD.encode(percent_decode(u)));
        let mut secrets = Vec::new();
        if let (Some(encoded), Some(token)) = (userinfo, &token) {
            let decoded = percent_decode(encoded);
            // A password of a few characters alone would hide them everywhere: it goes
            // with the user name then.
            if let Some(i) = decoded.iter().position(|&b| b == b':') {
                let password = &decoded[i + 1..];
                if password.len() >= 4 {
                    secrets.push(password.to_vec());
                }
            }
            secrets.extend([
                token.as_bytes().to_vec(),
                decoded,
                encoded.as_bytes().to_vec(),
            ]);
        }
        let (connect, forward) = if https {
            let target = format!("{host}:{port}");
            let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
            if let Some(token) = &token {
                req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
            }
            req.push_str("\r\n");
            (Some(req.into_bytes()), None)
        } else {
            let auth = match &token {
                Some(token) => {
                    let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                        .map_err(|_| Error::invalid("bad proxy URL"))?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            };
            (None, Some(Forward { auth }))
        };
        let phost = p.host().unwrap_or_default().to_owned();
        let pport = p.port_u16().unwrap_or(80);
        Ok(Route {
            proxy: Some(format!("{phost}:{pport}")),
            dial_host: phost,
            dial_port: pport,
            tls,
            connect,
            forward,
            secrets,
        })
    }

    /// `text` without the proxy's credentials (see [`Route::secrets`]).
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = crate::contract::secret::redact(s, &out);
        }
        out
    }

    /// How connections go, for the messages that describe their failures.
    pub(crate) fn via(&self) -> Via<'_> {
        match (&self.proxy, &self.forward) {
            (None, _) => Via::Direct,
            (Some(p), Some(_)) => Via::Forward(p),
            (Some(p), None) => Via::Tunnel(p),
        }
    }
}

/// How a route's connections go, each proxy named as `host:port`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Via<'a> {
    Direct,
    /// Plain http: requests go to the proxy, in absolute form.
    Forward(&'a str),
    /// https: a CONNECT tunnel through the proxy.
    Tunnel(&'a str),
}

/// The route's TLS configuration, of this process: its session-resumption store is a
/// lock-holding cache that a parent's thread may have held at a `fork()` (the child
/// would wait for it forever), so a forked child uses a copy with a fresh store and
/// compression cache (copying takes no lock: the rest is shared, read-only).
struct Tls {
    base: Arc<rustls::ClientConfig>,
    here: PerProcess<Arc<rustls::ClientConfig>>,
}

impl Route {
    /// This process's TLS configuration and server name (None: plain HTTP).
    fn tls(&self) -> Option<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
        let (tls, name) = self.tls.as_ref()?;
        let config = tls.here.get(|| {
            let mut c = (*tls.base).clone();
            c.resumption = rustls::client::Resumption::default();
            c.cert_compression_cache = Arc::default();
            Arc::new(c)
        });
        Some((Arc::clone(config), name.clone()))
    }
}

/// The key-exchange groups offered, in order: the hybrid post-quantum X25519MLKEM768
/// first (its key share goes with X25519's), then the classical ones, cheapest first.
/// Spelled out rather than rustls's default, which from 0.23.48 ranks P-384 second: a
/// classical server that takes the client's order then asks for a P-384 share (one round
/// trip more) and the handshake costs the client about four times the CPU of X25519
/// (`cargo run --release --example handshake`, BENCHMARKS.md).
const KX_GROUPS: [&dyn rustls::crypto::SupportedKxGroup; 4] = {
    use rustls::crypto::aws_lc_rs::kx_group;
    [
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::SECP384R1,
    ]
};

/// rustls with aws-lc-rs (TLS 1.2 and 1.3, [`KX_GROUPS`]) and these roots.
fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = KX_GROUPS.to_vec();
    let provider = Arc::new(provider);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The largest TLS record on the wire past its 5-byte header (RFC 8446 5.2: 2^14 + 256;
/// TLS 1.2 allowed 2^14 + 2048, as rustls does).
const MAX_RECORD: usize = 16_384 + 2048;

/// The length of the whole TLS records at the start of `buf`. A header no record can
/// have (unknown type, not version 3.x, too long) counts as whole with what follows, so
/// that rustls sees it at once and refuses it in its own words.
fn whole_records(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 5) {
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if !(20..=24).contains(&h[0]) || h[1] != 3 || len > MAX_RECORD {
            return buf.len();
        }
        if buf.len() - at < 5 + len {
            break;
        }
        at += 5 + len;
    }
    at
}

/// How a connection failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A socket error (refused, reset, out of descriptors...).
    Io(io::Error),
    /// The peer closed before a complete response head.
    Closed,
    /// TLS refused the server (certificate, handshake) before the request left.
    Tls(rustls::Error),
    /// TLS failed once the request had been sent (a corrupt record, an alert): the
    /// server may have acted on the request.
    TlsAfterRequest(rustls::Error),
    /// The proxy refused the tunnel (its status line, which may quote it).
    Proxy(String),
    /// The answer is not HTTP as we take it.
    Wire(WireError),
}

/// An open connection and the exchange it carries, if any.
pub(crate) struct Conn {
    pub(crate) sock: crate::host::fds::Sock,
    pub(crate) peer: SocketAddr,
    tls: Option<Box<rustls::ClientConnection>>,
    /// Clear bytes still to write (the CONNECT request, or a request without TLS).
    out: Vec<u8>,
    out_at: usize,
    /// Bytes received and not yet used.
    input: Vec<u8>,
    /// Over TLS: bytes received from the socket that do not yet make a whole record.
    tls_in: Vec<u8>,
    /// Over TLS: bytes were written for the current exchange once the handshake was
    /// done, i.e. its request may have reached the server.
    request_out: bool,
    eof: bool,
    /// The proxy has yet to open the tunnel.
    tunnelling: bool,
    /// The TLS session to start once the tunnel is open.
    tls_pending: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// A request queued before the tunnel opened.
    queued: Vec<u8>,
    /// Requests go to a proxy in absolute form.
    forward: Option<Forward>,
    exchange: Option<Exchange>,
    /// A hangup's 2xx answer, decided at its head, held while the rest of its body is
    /// read within [`BODY_GRACE`] of this instant (see [`Conn::grace_until`]).
    decided: Option<(Answer, Instant)>,
    /// The caller was told of the grace ([`Conn::new_grace`]).
    grace_told: bool,
    /// Bytes have arrived on this connection.
    pub(crate) answered: bool,
    /// The last read emptied the socket (a short read, or one that would block): what
    /// the kernel held then has been seen. Never set over TLS (its reads are rustls's).
    drained: bool,
    _open: OpenConnection,
}

impl Conn {
    /// A connection over a freshly connected socket.
    pub(crate) fn new(
        sock: crate::host::fds::Sock,
        peer: SocketAddr,
        route: &Route,
        open: OpenConnection,
    ) -> Result<Conn, Fail> {
        // Small requests: Nagle would hold each one back for an ACK.
        sock.set_nodelay(true).map_err(Fail::Io)?;
        let mut c = Conn {
            sock,
            peer,
            tls: None,
            out: Vec::new(),
            out_at: 0,
            input: Vec::new(),
            tls_in: Vec::new(),
            request_out: false,
            eof: false,
            tunnelling: route.connect.is_some(),
            tls_pending: route.tls(),
            queued: Vec::new(),
            forward: route.forward.clone(),
            exchange: None,
            decided: None,
            grace_told: false,
            answered: false,
            drained: false,
            _open: open,
        };
        match &route.connect {
            Some(req) => c.out.extend_from_slice(req),
            None => c.start_tls()?,
        }
        Ok(c)
    }

    fn start_tls(&mut self) -> Result<(), Fail> {
        if let Some((config, name)) = self.tls_pending.take() {
            let tls = rustls::ClientConnection::new(config, name).map_err(Fail::Tls)?;
            self.tls = Some(Box::new(tls));
            // A short read of the proxy's answer said nothing about TLS records.
            self.drained = false;
        }
        Ok(())
    }

    /// True when the connection may carry a new request: nothing unread, no hang-up.
    pub(crate) fn is_reusable(&self) -> bool {
        use std::os::fd::AsRawFd;
        self.is_clean() && crate::net::transport::is_idle_and_open(self.sock.as_raw_fd())
    }

    /// As `is_reusable`, without asking the socket: for a connection whose last answer
    /// was read in this very turn of the engine, and whose last read emptied the socket
    /// (a full read may leave stray bytes behind it).
    pub(crate) fn is_clean_and_drained(&self) -> bool {
        self.is_clean() && self.drained
    }

    /// Nothing pending: no exchange, no unread bytes, no part of a TLS record.
    fn is_clean(&self) -> bool {
        self.exchange.is_none() && !self.eof && self.input.is_empty() && self.tls_in.is_empty()
    }

    /// The answer of the current exchange as far as it came, if its status already
    /// decides it (see [`Exchange::cut_short`]): for when the deadline ends the exchange.
    /// The connection is not reusable after.
    pub(crate) fn cut_short(&mut self) -> Option<Answer> {
        if let Some((answer, _)) = self.decided.take() {
            self.eof = true; // left mid-body
            return Some(answer);
        }
        let answer = self.exchange.as_mut()?.cut_short()?;
        self.eof = true; // never reused: the rest of the body may still come
        Some(answer)
    }

    /// When the wait for the rest of a decided answer's body ends: the answer is then
    /// taken as it is ([`Conn::cut_short`]) and the connection closed. None while no
    /// answer is decided.
    ///
    /// Why a grace rather than handing the answer over at once and finishing the body
    /// behind it: a caller hanging up one call after another asks again within
    /// microseconds, before a body flushed a few milliseconds after its head is in, and
    /// would find no connection free; a new one (a TLS handshake) per hangup costs far
    /// more than the short wait. A body that does not come within the grace costs only
    /// the grace: the status is the head's either way.
    pub(crate) fn grace_until(&self) -> Option<Instant> {
        self.decided.as_ref().map(|(_, at)| *at + BODY_GRACE)
    }

    /// As [`Conn::grace_until`], once per answer: for a caller that sets a timer.
    pub(crate) fn new_grace(&mut self) -> Option<Instant> {
        if self.grace_told {
            return None;
        }
        let until = self.grace_until()?;
        self.grace_told = true;
        Some(until)
    }

    /// Set up: past the proxy's tunnel and the TLS handshake (what the connect timeout
    /// covers).
    pub(crate) fn is_established(&self) -> bool {
        !self.tunnelling
            && self.tls_pending.is_none()
            && self.tls.as_ref().is_none_or(|t| !t.is_handshaking())
    }

    /// Starts an exchange of `request` (its response body read up to `body_limit`).
    pub(crate) fn start(&mut self, request: Request<()>, body_limit: usize) -> Result<(), Fail> {
        let mut bytes = Vec::with_capacity(512);
        let x = match &self.forward {
            None => Exchange::start(request, body_limit, &mut bytes),
            Some(forward) => forwarded(request, forward, body_limit, &mut bytes),
        }
        .map_err(Fail::Wire)?;
        self.exchange = Some(x);
        self.decided = None;
        self.grace_told = false;
        self.input.clear();
        self.request_out = false;
        if self.tunnelling {
            self.queued = bytes;
        } else {
            self.send(&bytes)?;
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        match &mut self.tls {
            // rustls holds it until the handshake is done.
            Some(tls) => tls.writer().write_all(bytes).map_err(Fail::Io),
            None => {
                if self.out_at == self.out.len() {
                    self.out.clear();
                    self.out_at = 0;
                }
                self.out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// True if bytes wait for the socket to take them.
    pub(crate) fn wants_write(&self) -> bool {
        self.out_at < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Does what the socket allows, until it would block: writes what is pending, reads
    /// what arrived, advances the tunnel, TLS and the exchange. Returns the answer and
    /// whether the connection may be reused once the exchange is complete. `readable`:
    /// the socket was reported readable (false right after a request is written: the
    /// answer is not there yet, and a read would only say so).
    ///
    /// A hangup's 2xx whose bounded body is still on its way is held (not returned)
    /// while the rest is read, until [`Conn::grace_until`]: the answer comes with the
    /// body's end (the connection reusable), or with a failure to finish it (not).
    pub(crate) fn drive(&mut self, readable: bool) -> Result<Option<(Answer, bool)>, Fail> {
        match self.drive_exchange(readable) {
            Ok(Some((answer, reusable))) => match self.decided.take() {
                // The status was the head's; what the body's end adds is the connection.
                Some((decided, _)) => Ok(Some((decided, reusable))),
                None => Ok(Some((answer, reusable))),
            },
            // Finishing the body failed (a reset, a bad record): the answer stands.
            Err(_) if self.decided.is_some() => Ok(self.cut_short().map(|a| (a, false))),
            other => other,
        }
    }

    fn drive_exchange(&mut self, readable: bool) -> Result<Option<(Answer, bool)>, Fail> {
        let mut may_read = readable;
        loop {
            let wrote = self.flush()?;
            let read = may_read && self.fill()?;
            may_read = read;
            if self.tunnelling {
                if self.tunnel()? {
                    may_read = true;
                    continue;
                }
            } else if let Some(x) = &mut self.exchange {
                if read || self.eof {
                    match x.feed(&mut self.input, self.eof).map_err(Fail::Wire)? {
                        Fed::Done { answer, .. } if x.owes_body() && !self.eof => {
                            // Decided at the head; the rest of the body is read on.
                            self.decided = Some((answer, Instant::now()));
                        }
                        Fed::Done { answer, reusable } => {
                            self.exchange = None;
                            let clean = !self.eof && self.tls_in.is_empty();
                            return Ok(Some((answer, reusable && clean)));
                        }
                        Fed::More if self.eof => return Err(Fail::Closed),
                        Fed::More => {}
                    }
                }
            } else if self.eof {
                return Err(Fail::Closed);
            }
            if !wrote && !read {
                return Ok(None);
            }
        }
    }

    /// Writes pending bytes; true if any were written.
    fn flush(&mut self) -> Result<bool, Fail> {
        let mut wrote = false;
        while self.out_at < self.out.len() {
            // std sends with MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
            match self.sock.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(Fail::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.out_at += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fail::Io(e)),
            }
        }
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.sock) {
                    Ok(0) => return Err(Fail::Io(io::ErrorKind::WriteZero.into())),
                    Ok(_) => {
                        wrote = true;
                        if !tls.is_handshaking() && self.exchange.is_some() {
                            self.request_out = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Fail::Io(e)),
                }
            }
        }
        Ok(wrote)
    }

    /// Reads one batch of what arrived into `input` (clear bytes); true if any came.
    /// Bounded: an unread head larger than allowed is not read further.
    fn fill(&mut self) -> Result<bool, Fail> {
        if self.eof {
            return Ok(false);
        }
        if self.input.len() > MAX_HEAD + 1 {
            // Nothing consumed what came (the exchange reports it, or the connection is
            // idle with bytes nobody asked for): no more is read, and waiting again
            // would only be told the socket is readable.
            return Err(Fail::Wire(WireError::HeadTooLarge));
        }
        // A hangup's answer is a few hundred bytes; a longer one takes more reads.
        let mut buf = [0u8; 4096];
        let Some(tls) = &mut self.tls else {
            return match self.sock.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    Ok(true)
                }
                Ok(n) => {
                    self.answered = true;
                    self.drained = n < buf.len();
                    self.input.extend_from_slice(&buf[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    Ok(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
                Err(e) => Err(Fail::Io(e)),
            };
        };
        // Over TLS the socket is read here, not by rustls: rustls is handed whole records
        // only, and a record's beginning waits in `tls_in`, where the reuse check sees
        // it (rustls keeps a partial record in a buffer it does not expose: a connection
        // holding half a stray record looked clean, and the record's end, arriving with
        // the next request's answer, was read as that answer).
        let mut progress = false;
        match self.sock.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                progress = true;
            }
            Ok(n) => {
                self.answered = true;
                self.tls_in.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(Fail::Io(e)),
        }
        let whole = whole_records(&self.tls_in);
        let mut fed = 0;
        let mut eof_told = false;
        loop {
            if fed < whole {
                match tls.read_tls(&mut &self.tls_in[fed..whole]) {
                    // After close_notify rustls takes nothing more: the rest is ignored.
                    Ok(0) => fed = whole,
                    Ok(n) => fed += n,
                    Err(e) => return Err(Fail::Io(e)),
                }
            } else if self.eof && !eof_told {
                // The peer closed: rustls learns it once every whole record is in.
                let _ = tls.read_tls(&mut io::empty());
                eof_told = true;
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the server why (an alert), as far as the socket takes it.
                let _ = tls.write_tls(&mut self.sock);
                return Err(if self.request_out {
                    Fail::TlsAfterRequest(e)
                } else {
                    Fail::Tls(e)
                });
            }
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => {
                        self.eof = true; // close_notify
                        self.tls_in.clear();
                        return Ok(true);
                    }
                    Ok(n) => {
                        self.input.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The peer closed without close_notify: what came is all there is.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.eof = true;
                        self.tls_in.clear();
                        return Ok(true);
                    }
                    Err(e) => return Err(Fail::Io(e)),
                }
            }
            if fed >= whole && (!self.eof || eof_told) {
                break;
            }
        }
        self.tls_in.drain(..fed);
        Ok(progress)
    }

    /// Reads the proxy's answer to CONNECT; true once the tunnel is open.
    fn tunnel(&mut self) -> Result<bool, Fail> {
        let parsed = ureq_proto::parser::try_parse_response::<64>(&self.input)
            .map_err(|e| Fail::Proxy(format!("the proxy's answer is not HTTP ({e})")))?;
        let Some((used, response)) = parsed else {
            if self.eof {
                return Err(Fail::Proxy("the proxy closed the connection".into()));
            }
            if self.input.len() > MAX_HEAD {
                return Err(Fail::Proxy("the proxy's answer is too large".into()));
            }
            return Ok(false);
        };
        if !response.status().is_success() {
            return Err(Fail::Proxy(format!(
                "the proxy answered {}",
                response.status()
            )));
        }
        self.input.drain(..used);
        if !self.input.is_empty() {
            return Err(Fail::Proxy(
                "the proxy sent bytes before the tunnel was used".into(),
            ));
        }
        self.tunnelling = false;
        self.answered = false; // the API itself has not answered yet
        self.start_tls()?;
        let queued = std::mem::take(&mut self.queued);
        if !queued.is_empty() {
            self.send(&queued)?;
        }
        Ok(true)
    }
}

/// Starts an exchange of `request` as sent to a forwarding proxy: with its
/// `Proxy-Authorization`, and its request line in absolute form. ureq-proto writes only
/// origin-form (`DELETE /path HTTP/1.1`): the scheme and authority go in before the path.
fn forwarded(
    mut request: Request<()>,
    forward: &Forward,
    body_limit: usize,
    out: &mut Vec<u8>,
) -> Result<Exchange, WireError> {
    let uri = request.uri();
    let origin = match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => return Err(WireError::Invalid("the request has no absolute URL".into())),
    };
    if let Some(auth) = &forward.auth {
        request
            .headers_mut()
            .insert(PROXY_AUTHORIZATION, auth.clone());
    }
    let from = out.len();
    let x = Exchange::start(request, body_limit, out)?;
    let line = &out[from..];
    let at = line.iter().position(|&b| b == b' ').map(|i| from + i + 1);
    match at {
        Some(at) if out.get(at) == Some(&b'/') => {
            out.splice(at..at, origin.into_bytes());
            Ok(x)
        }
        _ => Err(WireError::Invalid(
            "the request line is not in origin form".into(),
        )),
    }
}

/// Decodes %XX escapes (anything else, a malformed escape included, is kept as it is).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Why an attempt got no response.
#[derive(Debug)]
pub(crate) enum AttemptError {
    Resolve(ResolveError),
    /// The connect timeout (or the deadline) passed while connecting.
    ConnectTimeout,
    /// The deadline passed waiting for the server.
    Deadline,
    /// The deadline passed waiting for a place in the process's descriptor budget
    /// (nothing was sent).
    NoDescriptor,
    Conn(Fail),
}

#[cfg(test)]
mod tests {
    use ureq_proto::http::Request;

    #[test]
    fn only_whole_tls_records_are_counted() {
        use super::whole_records;
        let rec = |len: usize| {
            let mut r = vec![23, 3, 3];
            r.extend_from_slice(&(len as u16).to_be_bytes());
            r.extend(std::iter::repeat_n(0u8, len));
            r
        };
        let mut buf = rec(10);
        buf.extend(rec(300));
        assert_eq!(whole_records(&buf), 15 + 305);
        let whole = buf.len();
        buf.extend(&rec(40)[..20]);
        assert_eq!(whole_records(&buf), whole, "half a record is held back");
        buf.truncate(whole + 3);
        assert_eq!(whole_records(&buf), whole, "so is half a header");
        // What no record can be goes to rustls at once, to be refused there.
        assert_eq!(whole_records(b"HTTP/1.1 400 Bad"), 16);
        let mut long = vec![23, 3, 3, 0xff, 0xff];
        long.extend([0; 10]);
        assert_eq!(whole_records(&long), long.len());
    }

    #[test]
    fn plain_http_goes_to_a_proxy_in_absolute_form_and_https_through_connect() {
        use super::{forwarded, Route, Via};
        use ureq_proto::http::Uri;
        let proxy: Uri = "http://us%40er:pw@[::1]:3128".parse().unwrap();
        let base: Uri = "http://127.0.0.1:8080/prefix".parse().unwrap();
        let route = Route::new(&base, Some(&proxy), || Ok(rustls::RootCertStore::empty())).unwrap();
        assert!(matches!(route.via(), Via::Forward("[::1]:3128")));
        assert!(route.connect.is_none() && !route.needs_setup());
        let forward = route.forward.as_ref().unwrap();
        let req = Request::delete("http://127.0.0.1:8080/prefix/v1/calls/c1?x=1")
            .body(())
            .unwrap();
        let mut out = b"left as it was".to_vec();
        forwarded(req, forward, 100, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (before, head) = text.split_at("left as it was".len());
        assert_eq!(before, "left as it was");
        assert!(
            head.starts_with("DELETE http://127.0.0.1:8080/prefix/v1/calls/c1?x=1 HTTP/1.1\r\n"),
            "{head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nhost: 127.0.0.1:8080\r\n"), "{head}");
        // base64("us@er:pw")
        assert!(
            lower.contains("\r\nproxy-authorization: basic dxnazxi6chc=\r\n"),
            "{head}"
        );

        // Without credentials, no Proxy-Authorization.
        let proxy: Uri = "http://127.0.0.1:3128".parse().unwrap();
        let route = Route::new(&base, Some(&proxy), || Ok(rustls::RootCertStore::empty())).unwrap();
        let req = Request::delete("http://127.0.0.1:8080/v1/c")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        forwarded(req, route.forward.as_ref().unwrap(), 100, &mut out).unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with("DELETE http://127.0.0.1:8080/v1/c HTTP/1.1\r\n"));
        assert!(!head.to_ascii_lowercase().contains("proxy-authorization"));

        // https: a tunnel, requests in origin form inside it.
        let base: Uri = "https://api.example:8443".parse().unwrap();
        let proxy: Uri = "http://u:p@127.0.0.1:3128".parse().unwrap();
        let route = Route::new(&base, Some(&proxy), || Ok(rustls::RootCertStore::empty())).unwrap();
        assert!(matches!(route.via(), Via::Tunnel("127.0.0.1:3128")));
        assert!(route.forward.is_none());
        let connect = String::from_utf8(route.connect.clone().unwrap()).unwrap();
        assert!(connect.starts_with("CONNECT api.example:8443 HTTP/1.1\r\n"));
        assert!(connect.contains("Proxy-Authorization: Basic dTpw\r\n"));
    }

    #[test]
    fn proxy_userinfo_is_percent_decoded() {
        assert_eq!(super::percent_decode("us%40er:p%3Ass"), b"us@er:p:ss");
        assert_eq!(super::percent_decode("a%2"), b"a%2");
        assert_eq!(super::percent_decode("%zz%41"), b"%zzA");
        assert_eq!(super::percent_decode("%"), b"%");
    }
}
