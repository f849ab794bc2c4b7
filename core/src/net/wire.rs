//! HTTP/1.1 on the wire for one exchange: the request's bytes, and the reading of its
//! response from whatever bytes have arrived, framed by ureq-proto (sans-IO: it never
//! touches a socket). The same code serves the blocking path and the engine.
//!
//! Around the parser, three things ureq-proto (0.7) does not do the way RFC 9110/9112
//! ask of a user agent:
//! - a head larger than [`MAX_HEAD`] is a protocol error at once (never a read error,
//!   never retried);
//! - any 1xx other than 101 is read and ignored, header fields and all (ureq-proto
//!   refuses a `100 Continue` that carries a field);
//! - an obsolete folded header line (obs-fold) is unfolded to spaces before parsing
//!   (httparse, under ureq-proto, rejects it).
//!
//! And what a hangup needs of a response, which decides when an exchange is over:
//! - bytes that cannot begin an HTTP response (an SSH banner, a TLS alert on a plain
//!   connection) are a protocol error as soon as they arrive, not a closed connection:
//!   the server did answer, just not in HTTP;
//! - the answer to a DELETE (a hangup) is decided by its status line: a 2xx is over once
//!   its head is complete (its body, if any, is read only as far as it has arrived). A
//!   connection left mid-body is not reusable then, but when the rest is a bounded body
//!   ([`Exchange::owes_body`]) the exchange may be fed on to finish it: the connection
//!   layer gives it a short grace ([`BODY_GRACE`]) so that a body merely a moment behind
//!   its head does not cost the connection. Any other status is read on to the end of
//!   its body (a 404's body tells "not found" from "already ended"), but if that end
//!   never comes ([`Exchange::cut_short`] at the deadline, the body bound, framing or
//!   trailers without end, the peer closing early) the status stands with what came;
//! - a response whose framing contradicts itself leaves its connection unusable, its
//!   status unchanged: a body declared on a status that has none (1xx, 204, 304: RFC
//!   9110 6.4.1, whose bytes, if the server sends them, would begin the next answer),
//!   or both Content-Length and Transfer-Encoding (RFC 9112 6.3: a sign of request
//!   smuggling or response splitting).

use std::time::{Duration, SystemTime};

use ureq_proto::client::state::{RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::http::header::RETRY_AFTER;
use ureq_proto::http::{Method, Request};

use crate::policy::response;

/// The largest response head accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Interim (1xx) responses tolerated before the final one.
const MAX_INTERIM: usize = 16;
/// The most of a body's framing (chunk-size lines, chunk ends, trailers) read in a row
/// without a byte of the body: endless trailers end the read here. (Chunked framing
/// between body bytes is a size line of at most 20 bytes and a CRLF.)
const MAX_FRAMING: usize = MAX_HEAD;
/// How long a hangup's decided 2xx waits for the rest of a bounded body before its
/// connection is given up (the outcome is the head's either way): long enough for a body
/// flushed a moment after its head, short enough not to be felt as a late answer.
pub(crate) const BODY_GRACE: Duration = Duration::from_millis(250);

/// An upper bound of a request head's size: its request line and every header line.
fn head_size(request: &Request<()>) -> usize {
    let fields: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let uri = request.uri();
    let uri_len = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    // Method, URI (and a Host line ureq-proto may add from it), version, line ends.
    64 + 2 * uri_len + fields
}

/// What went wrong reading a response.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The head grew past [`MAX_HEAD`].
    HeadTooLarge,
    /// Not HTTP as RFC 9112 has it (ureq-proto's words, which may quote the peer).
    Invalid(String),
}

/// A response as one exchange saw it: status, `Retry-After`, and the body read up to its
/// bound.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) http_status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
    /// Why the body is not all there (its end never came), or None when it is complete
    /// or was not needed (a hangup's 2xx).
    pub(crate) cut: Option<&'static str>,
}

/// Progress of reading a response.
pub(crate) enum Fed {
    /// More bytes are needed.
    More,
    /// The response is complete (or complete enough: its body bound reached, or cut off
    /// by the peer after the head). `reusable`: the connection may carry another request.
    Done { answer: Answer, reusable: bool },
}

enum Stage {
    Head(Call<RecvResponse>),
    Body(Call<RecvBody>),
    Finished,
}

/// One request/response exchange.
pub(crate) struct Exchange {
    stage: Stage,
    http_status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
    body_limit: usize,
    interim: usize,
    /// The status line decides the outcome (a hangup's DELETE), not the body (a listing).
    status_decides: bool,
    /// Bytes of framing read since the last byte of the body.
    framing_run: usize,
    /// The response's framing contradicts itself: the connection is never reused.
    suspect: bool,
    /// A hangup's 2xx was answered at its head; the body is read on only to keep the
    /// connection (see [`Exchange::owes_body`]).
    finishing: bool,
}

impl Exchange {
    /// Starts an exchange of `request` (no body): its bytes are appended to `out`.
    pub(crate) fn start(
        request: Request<()>,
        body_limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<Exchange, WireError> {
        let invalid = |e: ureq_proto::Error| WireError::Invalid(e.to_string());
        // Every DELETE this library sends is a hangup; a GET is a listing, whose body is
        // the point of it.
        let status_decides = request.method() == Method::DELETE;
        // ureq-proto writes the whole head at once or not at all: room for all of it (a
        // proxy's credentials, a long base path), on the stack in the usual case.
        let head = head_size(&request);
        let mut call = Call::new(request).map_err(invalid)?.proceed();
        let mut small = [0u8; 2048];
        let mut large = Vec::new();
        let buf: &mut [u8] = if head <= small.len() {
            &mut small
        } else {
            large.resize(head, 0);
            &mut large
        };
        loop {
            let n = call.write(buf).map_err(invalid)?;
            out.extend_from_slice(&buf[..n]);
            if call.can_proceed() {
                break;
            }
            if n == 0 {
                return Err(WireError::Invalid("the request did not fit".into()));
            }
        }
        let call = match call.proceed().map_err(invalid)? {
            Some(SendRequestResult::RecvResponse(c)) => c,
            _ => {
                return Err(WireError::Invalid(
                    "a request without a body was expected".into(),
                ))
            }
        };
        Ok(Exchange {
            stage: Stage::Head(call),
            http_status: 0,
            retry_after: None,
            body: Vec::new(),
            body_limit,
            interim: 0,
            status_decides,
            framing_run: 0,
            suspect: false,
            finishing: false,
        })
    }

    /// The answer as far as it came, for an exchange ended early (the deadline passed):
    /// once a hangup's status line is in, it is the outcome, whether or not its body
    /// followed. None before a complete head, or when the body is the point (a listing).
    pub(crate) fn cut_short(&mut self) -> Option<Answer> {
        if !self.status_decides || !matches!(self.stage, Stage::Body(_)) {
            return None;
        }
        match self.done_cut("the deadline passed before its body arrived") {
            Fed::Done { answer, .. } => Some(answer),
            Fed::More => None,
        }
    }

    /// After a `Fed::Done` that was not reusable: the answer was a hangup's 2xx given at
    /// its head, and the rest of its body is bounded (declared within the body limit, or
    /// chunked, read up to it). Feeding on reads that rest; the next `Fed::Done` says
    /// whether the connection may then carry another request.
    pub(crate) fn owes_body(&self) -> bool {
        self.finishing && matches!(self.stage, Stage::Body(_))
    }

    /// Reads what it can of `input` (bytes received and not yet used; used ones are
    /// drained). `eof`: the peer closed its side, nothing more will come.
    pub(crate) fn feed(&mut self, input: &mut Vec<u8>, eof: bool) -> Result<Fed, WireError> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Finished) {
                Stage::Finished => return Err(WireError::Invalid("exchange already over".into())),
                Stage::Head(mut call) => {
                    // Empty lines before a status line are skipped, as a robust reader
                    // does (RFC 9112 2.2); they would otherwise end an empty head.
                    let lead = input.iter().take_while(|&&b| b == b'\r' || b == b'\n');
                    let lead = lead.count();
                    input.drain(..lead);
                    if let Some(start) = not_http(input) {
                        return Err(WireError::Invalid(format!(
                            "it does not begin with an HTTP status line: \"{start}\""
                        )));
                    }
                    let Some(end) = head_end(input) else {
                        self.stage = Stage::Head(call);
                        if input.len() > MAX_HEAD {
                            return Err(WireError::HeadTooLarge);
                        }
                        return Ok(Fed::More); // at EOF, the caller reports a closed peer
                    };
                    if end > MAX_HEAD {
                        return Err(WireError::HeadTooLarge);
                    }
                    let framing = framing(&input[..end]);
                    if is_interim(&input[..end]) {
                        // A body declared on a 1xx: what follows cannot be trusted to
                        // begin the final answer's successor.
                        self.suspect |= framing.body_declared();
                        self.interim += 1;
                        if self.interim > MAX_INTERIM {
                            return Err(WireError::Invalid(
                                "too many interim (1xx) responses".into(),
                            ));
                        }
                        input.drain(..end);
                        self.stage = Stage::Head(call);
                        continue;
                    }
                    unfold(&mut input[..end]);
                    let (used, response) = call
                        .try_response(&input[..end], false)
                        .map_err(|e| WireError::Invalid(e.to_string()))?;
                    let Some(response) = response else {
                        return Err(WireError::Invalid("the response head did not parse".into()));
                    };
                    input.drain(..used);
                    self.http_status = response.status().as_u16();
                    // 204 and 304 have no body whatever their fields say (ureq-proto
                    // reads none): one declared anyway may still be sent, late.
                    let bodiless = matches!(self.http_status, 204 | 304);
                    self.suspect |= (bodiless && framing.body_declared())
                        || (framing.content_length && framing.transfer_encoding);
                    self.retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
                    match call.proceed() {
                        Some(RecvResponseResult::RecvBody(c)) => self.stage = Stage::Body(c),
                        Some(RecvResponseResult::Cleanup(c)) => {
                            let reusable =
                                !c.must_close_connection() && input.is_empty() && !self.suspect;
                            return Ok(self.done(reusable));
                        }
                        // Redirects are never followed (the caller reports them); the
                        // connection is not reused after one.
                        Some(RecvResponseResult::Redirect(_)) => return Ok(self.done(false)),
                        None => {
                            return Err(WireError::Invalid(
                                "the response head is incomplete".into(),
                            ))
                        }
                    }
                }
                Stage::Body(mut call) => {
                    // A close-delimited body "can proceed" from the start: it ends at EOF.
                    let close_delimited =
                        matches!(call.body_mode(), ureq_proto::BodyMode::CloseDelimited);
                    let mut chunk = [0u8; 4096];
                    while !input.is_empty() && (close_delimited || !call.can_proceed()) {
                        // A body that cannot be decoded (ureq-proto refuses a chunk-size
                        // line over 20 bytes, long extensions included) ends here: the
                        // status speaks for itself, and the connection goes.
                        let Ok((used, got)) = call.read(input, &mut chunk) else {
                            return Ok(self.done_cut("its body did not decode"));
                        };
                        input.drain(..used);
                        let room = self.body_limit - self.body.len();
                        if got > room {
                            // The bound: the rest is not read, and the connection goes.
                            self.body.extend_from_slice(&chunk[..room]);
                            return Ok(self.done_cut("its body is larger than allowed"));
                        }
                        self.body.extend_from_slice(&chunk[..got]);
                        self.framing_run = if got > 0 { 0 } else { self.framing_run + used };
                        if self.framing_run > MAX_FRAMING {
                            // Trailers (or chunk lines) without end: each is used as it
                            // comes, so only this count bounds them.
                            return Ok(self.done_cut("its body's framing or trailers never end"));
                        }
                        if used == 0 && got == 0 {
                            if input.len() > MAX_HEAD {
                                // A chunk-size or trailer line that never ends: what
                                // waits unread is bounded, so the status speaks now.
                                return Ok(self.done_cut("its body's framing never ends"));
                            }
                            break;
                        }
                    }
                    if !close_delimited && call.can_proceed() {
                        let clean = matches!(call.proceed(),
                            Some(RecvBodyResult::Cleanup(c)) if !c.must_close_connection());
                        return Ok(self.done(clean && input.is_empty() && !self.suspect));
                    }
                    if eof {
                        // Close-delimited and over, or cut off after the head: the
                        // status speaks for itself.
                        if close_delimited {
                            return Ok(self.done(false));
                        }
                        return Ok(self.done_cut("the server closed the connection mid-body"));
                    }
                    if self.status_decides
                        && (200..300).contains(&self.http_status)
                        && !self.finishing
                    {
                        // A hangup's 2xx is the outcome; what its body still owes is not
                        // waited for. The connection, left mid-body, is not reusable now;
                        // a bounded rest may be read on to keep it (`owes_body`).
                        let room = (self.body_limit - self.body.len()) as u64;
                        self.finishing = !self.suspect
                            && match call.body_mode() {
                                ureq_proto::BodyMode::LengthDelimited(left) => left <= room,
                                ureq_proto::BodyMode::Chunked => true,
                                _ => false,
                            };
                        if !self.finishing {
                            return Ok(self.done(false));
                        }
                        let answer = self.answer(None);
                        self.stage = Stage::Body(call);
                        return Ok(Fed::Done {
                            answer,
                            reusable: false,
                        });
                    }
                    self.stage = Stage::Body(call);
                    return Ok(Fed::More);
                }
            }
        }
    }

    fn done(&mut self, reusable: bool) -> Fed {
        self.finish(reusable, None)
    }

    /// Done with the body incomplete, for `why`; the connection is not reused.
    fn done_cut(&mut self, why: &'static str) -> Fed {
        self.finish(false, Some(why))
    }

    fn finish(&mut self, reusable: bool, cut: Option<&'static str>) -> Fed {
        self.stage = Stage::Finished;
        let answer = self.answer(cut);
        self.body = Vec::new();
        Fed::Done { answer, reusable }
    }

    fn answer(&self, cut: Option<&'static str>) -> Answer {
        Answer {
            http_status: self.http_status,
            retry_after: self.retry_after,
            body: self.body.clone(),
            cut,
        }
    }
}

/// The start of `input` (its first line, cleaned and cut short), if these bytes cannot
/// begin an HTTP/1 response: a status line starts with `HTTP/` (case-sensitive, RFC 9112
/// 2.3), after empty lines a robust reader skips. A prefix of it may still grow into one.
fn not_http(input: &[u8]) -> Option<String> {
    let from = input
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(input.len());
    let rest = &input[from..];
    let n = rest.len().min(5);
    if rest[..n] == b"HTTP/"[..n] {
        return None;
    }
    let line = rest
        .iter()
        .take_while(|&&b| b != b'\r' && b != b'\n')
        .take(64)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    Some(line)
}

/// The length of the head at the start of `input` (through its blank line), if complete.
/// Bare LF line ends are accepted as RFC 9112 2.2 allows.
fn head_end(input: &[u8]) -> Option<usize> {
    let scan = &input[..input.len().min(MAX_HEAD + 4)];
    let mut i = 0;
    while let Some(p) = scan[i..].iter().position(|&b| b == b'\n') {
        let at = i + p;
        match scan.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if scan.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

/// What a head's fields say of its body's framing.
#[derive(Default)]
struct Framing {
    /// A Content-Length field.
    content_length: bool,
    /// A Content-Length other than 0.
    nonzero_length: bool,
    /// A Transfer-Encoding field (chunked or any other coding).
    transfer_encoding: bool,
}

impl Framing {
    /// A body is declared (`Content-Length: 0`, common on a 204, declares none).
    fn body_declared(&self) -> bool {
        self.nonzero_length || self.transfer_encoding
    }
}

/// Reads the framing fields of `head` (a complete head, status line first).
fn framing(head: &[u8]) -> Framing {
    let mut f = Framing::default();
    for line in head.split(|&b| b == b'\n').skip(1) {
        // An obs-fold continuation line is part of the field before it.
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            f.content_length = true;
            f.nonzero_length |= value.iter().any(|&b| !matches!(b, b'0' | b',' | b' '));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.transfer_encoding = true;
        }
    }
    f
}

/// A 1xx head other than 101 (Switching Protocols, which ends HTTP on this connection and
/// is left to the parser to report).
fn is_interim(head: &[u8]) -> bool {
    // "HTTP/1.x 1dd"
    head.len() > 12
        && head.starts_with(b"HTTP/1.")
        && head[8] == b' '
        && head[9] == b'1'
        && &head[9..12] != b"101"
}

/// Replaces each obs-fold (a line end followed by a space or tab, inside the head) with
/// spaces, as RFC 9112 5.2 tells a user agent to. The status line is not a field line: a
/// fold right after it is left for the parser to refuse.
fn unfold(head: &mut [u8]) {
    let Some(first) = head.iter().position(|&b| b == b'\n') else {
        return;
    };
    let mut i = first + 1;
    while i < head.len() {
        if head[i] == b'\n' && i + 1 < head.len() && matches!(head[i + 1], b' ' | b'\t') {
            head[i] = b' ';
            if i > 0 && head[i - 1] == b'\r' {
                head[i - 1] = b' ';
            }
        }
        i += 1;
    }
}

/// For the fuzz target: reads `bytes` as the answer to a DELETE, handed over `step` bytes
/// at a time (the peer closing after the last), with a body bound of `body_limit`.
/// Returns the status and body length of a complete answer, or None; checks the bounds
/// the connection relies on (unread input and body never grow past their limits).
#[doc(hidden)]
pub fn read_in_pieces(bytes: &[u8], step: usize, body_limit: usize) -> Option<(u16, usize)> {
    let req = Request::delete("http://127.0.0.1:9/v1/x").body(()).ok()?;
    let mut out = Vec::new();
    let mut x = Exchange::start(req, body_limit, &mut out).ok()?;
    let mut input = Vec::new();
    let step = step.max(1);
    let mut at = 0;
    loop {
        let end = (at + step).min(bytes.len());
        input.extend_from_slice(&bytes[at..end]);
        at = end;
        let eof = at == bytes.len();
        match x.feed(&mut input, eof) {
            Err(_) => return None,
            Ok(Fed::Done { answer, .. }) => {
                assert!(answer.body.len() <= body_limit, "the body bound holds");
                return Some((answer.http_status, answer.body.len()));
            }
            Ok(Fed::More) if eof => return None,
            Ok(Fed::More) => {
                // What is kept unread stays within one head plus one step.
                assert!(input.len() <= MAX_HEAD + step, "unread input is bounded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(limit: usize) -> Exchange {
        let req = Request::delete("http://127.0.0.1:9/x").body(()).unwrap();
        let mut out = Vec::new();
        let x = Exchange::start(req, limit, &mut out).unwrap();
        assert!(out.starts_with(b"DELETE /x HTTP/1.1\r\n"), "{out:?}");
        x
    }

    #[test]
    fn a_head_larger_than_the_stack_buffer_is_written_whole() {
        // A long base path and a long header (a proxy's credentials): 12 KiB of head.
        let path = "p".repeat(6000);
        let token = "t".repeat(6000);
        let req = Request::delete(format!("http://127.0.0.1:9/{path}/x"))
            .header("proxy-authorization", format!("Basic {token}"))
            .body(())
            .unwrap();
        let mut out = Vec::new();
        Exchange::start(req, 1024, &mut out).unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with(&format!("DELETE /{path}/x HTTP/1.1\r\n")));
        assert!(head.contains(&format!("proxy-authorization: Basic {token}\r\n")));
        assert!(head.ends_with("\r\n\r\n"));
    }

    fn feed_all(x: &mut Exchange, bytes: &[u8], eof: bool) -> Result<Fed, WireError> {
        let mut input = bytes.to_vec();
        x.feed(&mut input, eof)
    }

    fn status(f: Fed) -> (u16, bool, Vec<u8>) {
        match f {
            Fed::Done { answer, reusable } => (answer.http_status, reusable, answer.body),
            Fed::More => panic!("not done"),
        }
    }

    fn get_exchange(limit: usize) -> Exchange {
        let req = Request::get("http://127.0.0.1:9/list").body(()).unwrap();
        Exchange::start(req, limit, &mut Vec::new()).unwrap()
    }

    #[test]
    fn bytes_that_cannot_begin_http_are_refused_at_once() {
        let mut x = exchange(1024);
        match feed_all(&mut x, b"SSH-2.0-OpenSSH_9.6\r\n", false) {
            Err(WireError::Invalid(why)) => {
                assert!(why.contains("\"SSH-2.0-OpenSSH_9.6\""), "{why}")
            }
            _ => panic!("not refused"),
        }
        // A TLS alert on a plain connection: control bytes are not quoted as they are.
        let mut x = exchange(1024);
        match feed_all(&mut x, b"\x15\x03\x03\x00\x02\x02\x46", false) {
            Err(WireError::Invalid(why)) => assert!(why.is_ascii() && !why.contains('\x15')),
            _ => panic!("not refused"),
        }
        // Prefixes of a status line, after empty lines, wait for more.
        for start in [&b"H"[..], b"HTT", b"HTTP/", b"\r\n\r\nHTTP/1.1 2", b"\n"] {
            let mut x = exchange(1024);
            assert!(matches!(feed_all(&mut x, start, false), Ok(Fed::More)));
        }
        assert!(
            not_http(b"http/1.1 204").is_some(),
            "HTTP-name is case-sensitive"
        );
    }

    #[test]
    fn a_hangups_2xx_is_done_at_its_head_a_listings_is_not() {
        let stalled = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"";
        let mut x = exchange(1024);
        let (s, reusable, _) = status(feed_all(&mut x, stalled, false).unwrap());
        assert_eq!((s, reusable), (200, false), "left mid-body: not reused");
        // All of it there: reusable as ever.
        let mut x = exchange(1024);
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert!(status(feed_all(&mut x, whole, false).unwrap()).1);
        // A listing's body is the point: it waits, and the deadline gives no answer.
        let mut x = get_exchange(1024);
        assert!(matches!(feed_all(&mut x, stalled, false), Ok(Fed::More)));
        assert!(x.cut_short().is_none());
    }

    #[test]
    fn a_hangups_other_status_stands_when_its_body_never_ends() {
        let mut x = exchange(1024);
        let head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 50\r\n\r\n{\"error\":";
        assert!(matches!(feed_all(&mut x, head, false), Ok(Fed::More)));
        let a = x.cut_short().expect("the status stands");
        assert_eq!(
            (a.http_status, a.body.as_slice()),
            (404, &b"{\"error\":"[..])
        );
        assert!(a.cut.is_some());
        // Before a complete head, nothing stands.
        let mut x = exchange(1024);
        assert!(matches!(
            feed_all(&mut x, b"HTTP/1.1 404 Not Found\r\n", false),
            Ok(Fed::More)
        ));
        assert!(x.cut_short().is_none());
        // Endless trailers end at the framing bound, each line used as it comes.
        let mut x = exchange(1024);
        let mut input =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
                .to_vec();
        let mut sent = 0;
        let done = loop {
            match x.feed(&mut input, false).unwrap() {
                Fed::More => {
                    assert!(sent < 2 * MAX_FRAMING, "trailers never ended the read");
                    input.extend_from_slice(b"X-T: 1\r\n");
                    sent += 8;
                }
                Fed::Done { answer, reusable } => break (answer, reusable),
            }
        };
        assert_eq!((done.0.http_status, done.1), (404, false));
        assert_eq!(done.0.body, b"{}");
        // Cut off by the peer mid-body: the status stands, and says so.
        let mut x = exchange(1024);
        let (a, _) = match feed_all(&mut x, head, true).unwrap() {
            Fed::Done { answer, reusable } => (answer, reusable),
            Fed::More => panic!("not done"),
        };
        assert_eq!((a.http_status, a.cut.is_some()), (404, true));
    }

    #[test]
    fn framing_that_contradicts_itself_keeps_the_status_and_spoils_the_connection() {
        // A body declared where none can be: the status stands, the connection goes.
        for head in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ] {
            let (s, reusable, _) = status(feed_all(&mut exchange(1024), head, false).unwrap());
            assert!(!reusable, "{}", String::from_utf8_lossy(head));
            assert!(s == 204 || s == 304);
        }
        // Content-Length: 0 on a 204 (common, if not allowed) declares nothing.
        let zero = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            status(feed_all(&mut exchange(1024), zero, false).unwrap()),
            (204, true, vec![])
        );
        // Both Content-Length and chunked: read as chunked (RFC 9112 6.3), never reused.
        let both = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(
            status(feed_all(&mut exchange(1024), both, false).unwrap()),
            (404, false, b"{}".to_vec())
        );
        // ... nor kept to finish a 2xx's body.
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut x = exchange(1024);
        assert!(!status(feed_all(&mut x, both, false).unwrap()).1);
        assert!(!x.owes_body());
    }

    #[test]
    fn a_hangups_2xx_body_a_moment_late_is_finished_to_keep_the_connection() {
        let mut x = exchange(1024);
        let mut input = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"call".to_vec();
        // Decided at the head (not reusable yet), the rest owed.
        let (s, reusable, _) = status(x.feed(&mut input, false).unwrap());
        assert_eq!((s, reusable), (200, false));
        assert!(x.owes_body());
        input.extend_from_slice(b"_uuid\":");
        assert!(matches!(x.feed(&mut input, false).unwrap(), Fed::More));
        input.extend_from_slice(b"\"x\"}");
        let (s, reusable, body) = status(x.feed(&mut input, false).unwrap());
        assert_eq!((s, reusable), (200, true));
        assert_eq!(body, br#"{"call_uuid":"x"}"#);
        assert!(!x.owes_body());
        // A body larger than the bound, or close-delimited, is not owed: the connection
        // goes at once.
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n{";
        let mut x = exchange(1024);
        assert!(!status(feed_all(&mut x, big, false).unwrap()).1);
        assert!(!x.owes_body());
        let mut x = exchange(1024);
        assert!(!status(feed_all(&mut x, b"HTTP/1.0 200 OK\r\n\r\n{", false).unwrap()).1);
        assert!(!x.owes_body());
        // A chunked one is owed, its chunks read up to the bound.
        let mut x = exchange(4);
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert!(!status(x.feed(&mut input, false).unwrap()).1);
        assert!(x.owes_body());
        input.extend_from_slice(b"8\r\n01234567\r\n0\r\n\r\n");
        assert!(
            !status(x.feed(&mut input, false).unwrap()).1,
            "past the bound"
        );
    }

    #[test]
    fn interim_responses_with_fields_are_ignored() {
        let mut x = exchange(1024);
        let r = feed_all(
            &mut x,
            b"HTTP/1.1 100 Continue\r\nX-Note: hi\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        );
        assert_eq!(status(r.unwrap()), (204, true, vec![]));
    }

    #[test]
    fn folded_lines_are_unfolded() {
        let mut x = exchange(1024);
        let body = br#"{"error":"call_not_found"}"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nX-Long: one\r\n  two\r\n\ttwo and a half\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        let (s, reusable, b) = status(feed_all(&mut x, &all, false).unwrap());
        assert_eq!((s, reusable, b.as_slice()), (404, true, &body[..]));
    }

    #[test]
    fn split_at_every_byte() {
        let all = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n";
        let mut x = exchange(1024);
        let mut input = Vec::new();
        for (i, b) in all.iter().enumerate() {
            input.push(*b);
            match x.feed(&mut input, false).unwrap() {
                Fed::More => assert!(i + 1 < all.len(), "done only at the end"),
                Fed::Done { answer, reusable } => {
                    assert_eq!(i + 1, all.len());
                    assert_eq!(
                        (answer.http_status, answer.body.as_slice()),
                        (404, &b"hello"[..])
                    );
                    assert!(reusable);
                }
            }
        }
    }

    #[test]
    fn a_huge_head_is_refused_and_bytes_after_a_204_spoil_the_connection() {
        let mut x = exchange(1024);
        let mut big = b"HTTP/1.1 204 No Content\r\n".to_vec();
        while big.len() < MAX_HEAD + 100 {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(
            feed_all(&mut x, &big, false),
            Err(WireError::HeadTooLarge)
        ));
        let mut x = exchange(1024);
        let r = feed_all(
            &mut x,
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 404 Nope\r\n\r\n",
            false,
        );
        assert!(!status(r.unwrap()).1);
    }

    #[test]
    fn an_unterminated_chunk_line_is_bounded() {
        let mut x = exchange(1024);
        let mut all = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5".to_vec();
        all.extend(std::iter::repeat_n(b'0', MAX_HEAD + 10));
        assert_eq!(
            status(feed_all(&mut x, &all, false).unwrap()),
            (404, false, vec![])
        );
        assert_eq!(read_in_pieces(&all, 100, 1024), Some((404, 0)));
    }

    #[test]
    fn a_body_that_does_not_decode_leaves_the_status() {
        let mut x = exchange(1024);
        let r = feed_all(
            &mut x,
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"a long quoted value\"\r\nhello\r\n0\r\n\r\n",
            false,
        );
        assert_eq!(status(r.unwrap()), (404, false, vec![]));
    }

    #[test]
    fn bodies_are_bounded_and_close_delimited_ones_end_at_eof() {
        let mut x = exchange(10);
        let r = feed_all(
            &mut x,
            b"HTTP/1.1 500 X\r\nContent-Length: 100\r\n\r\n0123456789abcdef",
            false,
        );
        assert_eq!(status(r.unwrap()), (500, false, b"0123456789".to_vec()));
        let mut x = exchange(100);
        let mut input = b"HTTP/1.0 404 X\r\n\r\nabc".to_vec();
        assert!(matches!(x.feed(&mut input, false).unwrap(), Fed::More));
        input.extend_from_slice(b"def");
        let (s, reusable, body) = status(x.feed(&mut input, true).unwrap());
        assert_eq!((s, reusable, body.as_slice()), (404, false, &b"abcdef"[..]));
        let mut x = exchange(100);
        let r = feed_all(
            &mut x,
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            false,
        );
        assert_eq!(status(r.unwrap()), (204, false, vec![]));
    }
}
