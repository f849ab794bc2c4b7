//! The tests' own std::net servers on 127.0.0.1: the accept loop (a thread per
//! connection, or the connections in turn on the accept thread), the readers of a request
//! head, and the plain server with connection and request counts that the wire tests
//! share. What a server answers stays in its test.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A listener on 127.0.0.1 (a free port) and, once [`Loopback::accept_each`] or
/// [`Loopback::serve_each`] started it, the thread accepting on it. The accept loop runs
/// until the test process ends or [`Loopback::stop`]; dropping this stops nothing.
pub struct Loopback {
    pub addr: SocketAddr,
    listener: Option<TcpListener>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Loopback {
    /// Binds 127.0.0.1 on a free port; nothing is accepted until `accept_each` or
    /// `serve_each` (the kernel queues the connections meanwhile).
    pub fn bind() -> Loopback {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Loopback {
            addr: l.local_addr().unwrap(),
            listener: Some(l),
            accepted: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Deepens the listen backlog to `n` (std's is 128): for a server whose clients
    /// connect faster than its one accept thread, on busy cores, takes them.
    #[allow(dead_code)]
    pub fn backlog(self, n: i32) -> Loopback {
        use std::os::fd::AsRawFd;
        let fd = self
            .listener
            .as_ref()
            .expect("not accepting yet")
            .as_raw_fd();
        // SAFETY: listen() again on our own listening socket only changes its backlog.
        assert_eq!(unsafe { libc::listen(fd, n) }, 0, "listen");
        self
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The number of connections accepted so far, counted on the accept thread before
    /// the connection is handed on (so before its handler runs).
    pub fn accepted(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.accepted)
    }

    /// The flag [`Loopback::stop`] raises, for handlers that end with the server.
    pub fn stopping(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops accepting: raises the flag and connects once to wake the accept loop, which
    /// then returns, closing the listener (and dropping whatever `accept_each` held).
    /// Connections already handed to a thread of their own go on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }

    /// Starts the accept thread: `on_accept(n, stream)` runs on it for each connection in
    /// turn, `n` counting the connections from 0; a failed accept is skipped.
    pub fn accept_each(
        mut self,
        mut on_accept: impl FnMut(usize, TcpStream) + Send + 'static,
    ) -> Loopback {
        let l = self.listener.take().expect("already accepting");
        let (accepted, stop) = (self.accepted(), self.stopping());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                on_accept(n, s);
            }
        });
        self
    }

    /// Starts the accept thread with a thread per connection: `handle(n, stream)` runs on
    /// a new thread for each, `n` counting the connections from 0 in the order accepted.
    pub fn serve_each(self, handle: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> Loopback {
        let handle = Arc::new(handle);
        self.accept_each(move |n, s| {
            let handle = Arc::clone(&handle);
            std::thread::spawn(move || handle(n, s));
        })
    }
}

/// [`Loopback::serve_each`] on a fresh [`Loopback::bind`]: a thread per connection.
pub fn serve_each(handle: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> Loopback {
    Loopback::bind().serve_each(handle)
}

/// [`Loopback::accept_each`] on a fresh [`Loopback::bind`]: the connections in turn on the
/// accept thread.
pub fn accept_each(on_accept: impl FnMut(usize, TcpStream) + Send + 'static) -> Loopback {
    Loopback::bind().accept_each(on_accept)
}

/// Reads one request head a byte at a time, so nothing past its blank line is consumed
/// (a read that took the next request's first bytes would hide them); None if the peer
/// closed, failed or went quiet (a read timeout) first, or once `max` bytes came without
/// the head ending. The head as text (lossy UTF-8), its blank line included.
pub fn read_head_at_most(s: &mut impl Read, max: usize) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > max {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// [`read_head_at_most`] with no bound but the peer's.
pub fn read_head_text(s: &mut impl Read) -> Option<String> {
    read_head_at_most(s, usize::MAX)
}

/// [`read_head_text`], saying only whether a whole head arrived.
pub fn read_head(s: &mut impl Read) -> bool {
    read_head_text(s).is_some()
}

/// Reads 4 KiB at a time until what came holds a blank line (the end of a request head);
/// all it read, or None if the peer closed or failed first. For one request a connection:
/// what follows the head in the same read is taken too.
pub fn read_through_head(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    Some(got)
}

/// The request heads of one keep-alive connection, read 4 KiB at a time: the bytes past
/// a head wait for the next call.
#[derive(Default)]
pub struct Heads {
    buf: Vec<u8>,
}

impl Heads {
    /// The next head (its blank line included): one already read if there is one, else
    /// read on; None once the peer closed or failed.
    pub fn next(&mut self, s: &mut impl Read) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(self.buf.drain(..end + 4).collect());
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Waits until the client closes the connection (or 10 s).
pub fn until_closed(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 512];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

/// Connections accepted and requests read by a [`plain_server`].
#[derive(Default)]
pub struct Counts {
    /// Counted by the accept thread ([`Loopback::accepted`]).
    pub conns: Arc<AtomicUsize>,
    /// Counted by the test's `behave`.
    pub reqs: AtomicUsize,
}

/// A plain server, a thread per connection: `behave(connection number from 0, stream,
/// counts)` for each, its stream with a 10 s read timeout. Returns the port and counts.
pub fn plain_server(
    behave: impl Fn(usize, TcpStream, &Counts) + Send + Sync + 'static,
) -> (u16, Arc<Counts>) {
    let server = Loopback::bind();
    let counts = Arc::new(Counts {
        conns: server.accepted(),
        reqs: AtomicUsize::new(0),
    });
    let c2 = Arc::clone(&counts);
    let server = server.serve_each(move |n, s| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        behave(n, s, &c2)
    });
    (server.port(), counts)
}

/// What a TLS test server writes after a request head: `(connection number, request
/// number on it, tls)` to the raw bytes for the socket, or None to wait for the client to
/// close.
pub type TlsAnswer<'a> =
    dyn Fn(usize, usize, &mut rustls::ServerConnection) -> Option<Vec<u8>> + 'a;

/// The TLS side of a connection to a test's TLS server on `sock`: reads each request
/// head over TLS (`cfg`), counts it, and writes on the socket the raw bytes
/// `answer(conn, request number on it from 0, tls)` gives; `None` waits until the
/// client closes. Returns when the client closes or a write fails.
pub fn answer_over_tls(
    conn_no: usize,
    mut sock: TcpStream,
    counts: &Counts,
    cfg: Arc<rustls::ServerConfig>,
    answer: &TlsAnswer<'_>,
) {
    use std::io::Write;
    let mut conn = rustls::ServerConnection::new(cfg).unwrap();
    for k in 0.. {
        let ok = {
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            read_head(&mut tls)
        };
        if !ok {
            return;
        }
        counts.reqs.fetch_add(1, Ordering::SeqCst);
        match answer(conn_no, k, &mut conn) {
            Some(wire) => {
                if sock.write_all(&wire).is_err() {
                    return;
                }
            }
            None => {
                until_closed(&mut sock);
                return;
            }
        }
    }
}
