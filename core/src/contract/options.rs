//! Client options and their validation: base URL rules, timeouts, proxy, CA file, logging.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::io;
use std::net::SocketAddr;

use ureq_proto::http::uri::Authority;
use ureq_proto::http::Uri;

use crate::contract::error::Error;
use crate::contract::validate;

/// The most async hangups in flight at once (each holds a connection), the largest
/// `max_connections` a client takes (its default is 64); more wait in order. Bulk calls
/// have budgets of their own beside it.
pub const ASYNC_PARALLEL: usize = 1024;

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.tryvox.io";
/// Total time for one hangup, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Time to set up one connection (TCP, proxy and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Extra attempts after the first one.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Connections async hangups may hold to the server at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The largest value [`Options::set_max_connections`] takes.
pub const MAX_CONNECTIONS: usize = ASYNC_PARALLEL;

/// Largest CA file read (1 MiB): a PEM bundle of every public root CA is about 220 KiB,
/// so this leaves room for a private CA's chain and comments while bounding what a wrong
/// path (a log file, an image) costs in time and memory.
pub const MAX_CA_FILE: u64 = 1 << 20;

/// Reads the CA file of [`Options::set_ca_file`], bounded in time and size: only a regular
/// file of at most [`MAX_CA_FILE`] bytes (see [`read_bounded`]).
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    read_bounded(path, MAX_CA_FILE)
        .map_err(|why| Error::invalid(format!("cannot use CA file {}: {why}", path.display())))
}

/// Reads a certificate file of at most `max` bytes, or says why not. Only a regular file:
/// a FIFO would block `open` until a writer came and a device (`/dev/zero`) would be read
/// until memory ran out, inside the caller's client constructor.
pub(crate) fn read_bounded(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer, so
        // the check below can refuse it (a regular file reads the same either way).
        // O_NOCTTY: a terminal path never becomes the host's controlling terminal.
        open.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = open
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    // fstat of the descriptor opened, not a stat of the path: nothing can be swapped in
    // between the check and the read.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file (a directory, FIFO, device or socket is refused)".into());
    }
    let too_big = |len: u64| {
        format!(
            "{len} bytes or more; at most {max} are read (a bundle of every public CA is about 220 KiB)"
        )
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut pem = Vec::with_capacity(meta.len() as usize);
    // One byte past the bound tells a file that grew since the fstat.
    file.take(max + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if pem.len() as u64 > max {
        return Err(too_big(pem.len() as u64));
    }
    Ok(pem)
}

/// Severity of a log line, most severe first (`Error < Debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// Receives the library's log lines: on the caller's thread for `hangup` and listings;
/// for async and bulk hangups on a callback thread, before the callbacks that follow them,
/// or on a bulk caller's thread before it returns (never on the engine's thread).
pub type LogFn = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// Settings for a [`crate::Client`]. Plain data: build it on one thread, then hand it to
/// `Client::with_options`, which copies what it needs.
#[derive(Clone)]
pub struct Options {
    pub(crate) base_url: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_connections: usize,
    pub(crate) tenant_id: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) trust_store: crate::contract::options::TrustStore,
    pub(crate) proxy: Option<String>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) log: Option<LogFn>,
    pub(crate) lookup: Option<crate::contract::options::LookupFn>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tenant_id: None,
            user_agent: None,
            ca_file: None,
            trust_store: Default::default(),
            proxy: None,
            allow_insecure_http: false,
            log: None,
            lookup: None,
        }
    }
}

/// A proxy URL as Debug shows it: its credentials (`user:password@`) replaced by `***@`.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_connections", &self.max_connections)
            .field("tenant_id", &self.tenant_id)
            .field("user_agent", &self.user_agent)
            .field("ca_file", &self.ca_file)
            .field("trust_store", &self.trust_store)
            .field("proxy", &self.proxy.as_deref().map(without_userinfo))
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("log", &self.log.is_some())
            .finish()
    }
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// `http` or `https`, a host, an optional port and an optional path prefix; no
    /// user info, query or fragment. Whether plain http is allowed is decided when the
    /// client is built (see [`Options::allow_insecure_http`]).
    pub fn set_base_url(&mut self, url: &str) -> Result<(), Error> {
        let parsed = parse_base_url(url)?;
        self.base_url = parsed;
        Ok(())
    }

    /// Total time for one hangup, retries and waits included. Must be at least 1 ms.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        if timeout.is_zero() {
            return Err(Error::invalid("timeout must be at least 1 ms"));
        }
        self.timeout = timeout;
        Ok(())
    }

    /// Time to set up one connection. Must be at least 1 ms.
    pub fn set_connect_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        if timeout.is_zero() {
            return Err(Error::invalid("connect timeout must be at least 1 ms"));
        }
        self.connect_timeout = timeout;
        Ok(())
    }

    /// Extra attempts after the first; 0 disables retries. At most 100.
    pub fn set_max_retries(&mut self, n: u32) -> Result<(), Error> {
        if n > 100 {
            return Err(Error::invalid("max_retries must be at most 100"));
        }
        self.max_retries = n;
        Ok(())
    }

    /// The most connections async hangups hold to the server at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 64; 1 to [`MAX_CONNECTIONS`], 1,024). A client talks to
    /// one host, so this is its per-host limit: a burst of async hangups beyond it waits,
    /// in order and within each hangup's timeout, for a connection to come free (a
    /// keep-alive one goes to the next waiting hangup at once). A bulk call
    /// (`hangup_many`) uses its own `max_parallel` connections beside them, so it never
    /// waits behind async backlog, and an explicit `max_parallel` above this limit is
    /// honoured. Whatever the limit, new connections are set up a few at a time
    /// ([`crate::MAX_CONNECTING`]), so a small server's listen backlog survives a burst.
    /// The blocking `hangup` uses one connection per calling thread, outside this limit.
    /// When the client is dropped, its queued async hangups all start.
    pub fn set_max_connections(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 || n > MAX_CONNECTIONS {
            return Err(Error::invalid(format!(
                "max_connections must be 1 to {MAX_CONNECTIONS}"
            )));
        }
        self.max_connections = n;
        Ok(())
    }

    /// Sends `X-Tenant-ID: tenant` with every request.
    pub fn set_tenant_id(&mut self, tenant: &str) -> Result<(), Error> {
        validate::token("tenant id", tenant.as_bytes())?;
        self.tenant_id = Some(tenant.to_owned());
        Ok(())
    }

    /// Appended to the library's own User-Agent (`libtryvox/<version> <product>`).
    pub fn set_user_agent(&mut self, product: &str) -> Result<(), Error> {
        validate::user_agent_product(product)?;
        self.user_agent = Some(product.to_owned());
        Ok(())
    }

    /// Which roots to trust for the API's certificate when no CA file is set: by default
    /// the system's trust store, or Mozilla's roots compiled in where the system has none.
    /// Read when the client is built (a CA installed later counts for clients built
    /// later); building fails with `TlsError` if [`crate::TrustStore::System`] finds none.
    pub fn set_trust_store(&mut self, store: crate::contract::options::TrustStore) {
        self.trust_store = store;
    }

    /// Trust the certificates in this PEM file instead of any trust store. The file is
    /// read when the client is built: it must be a regular file (not a FIFO, device,
    /// socket or directory) of at most [`MAX_CA_FILE`] bytes, else building the client
    /// fails with `InvalidArgument` naming the path, at once and with nothing sent.
    pub fn set_ca_file(&mut self, pem_path: &str) -> Result<(), Error> {
        if pem_path.is_empty() {
            return Err(Error::invalid("CA file path is empty"));
        }
        self.ca_file = Some(PathBuf::from(pem_path));
        Ok(())
    }

    /// An HTTP proxy, `http://host:port` (`http://user:password@host:port` for Basic
    /// `Proxy-Authorization`); https requests go through it with CONNECT, so the proxy
    /// never sees the key. A plain-http request goes to the proxy itself in absolute form
    /// (`DELETE http://host:port/path HTTP/1.1`, as libcurl sends it: proxies as deployed,
    /// Squid for one, allow CONNECT to port 443 only), key included, in clear text: the
    /// client then refuses a proxy whose host, as written, is not loopback, unless
    /// insecure http is allowed. A proxy that cannot be reached is named (host and port,
    /// never its credentials) in the hangup's `NetworkError` or `Timeout`.
    pub fn set_proxy(&mut self, proxy_url: &str) -> Result<(), Error> {
        let uri: Uri = proxy_url
            .parse()
            .map_err(|_| Error::invalid("proxy URL is not a valid URL (want http://host:port)"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
            return Err(Error::invalid("proxy URL must be http://host:port"));
        }
        if let Some(authority) = uri.authority() {
            check_port("proxy URL", authority)?;
        }
        self.proxy = Some(proxy_url.to_owned());
        Ok(())
    }

    /// Allow plain `http` to a host that is not loopback. Off by default: a bearer key
    /// must not cross a network in clear text.
    pub fn allow_insecure_http(&mut self, allow: bool) {
        self.allow_insecure_http = allow;
    }

    /// Resolves host names with `lookup` (`"host:port"` in, addresses out, in the order
    /// to try) instead of the system resolver: a seam for tests (a name whose first
    /// address is black-holed, a resolver that never answers). Not a stable API.
    #[doc(hidden)]
    pub fn set_resolver(&mut self, lookup: crate::contract::options::LookupFn) {
        self.lookup = Some(lookup);
    }

    /// Log lines go to `f`: on the caller's thread for `hangup` and listings, on a
    /// callback thread for async and bulk hangups (never the engine's thread, so `f` may
    /// block or call the client without stalling it; up to 10,000 lines are queued in
    /// order, more are counted as dropped).
    pub fn set_log_fn(&mut self, f: Option<LogFn>) {
        self.log = f;
    }

    /// The clear-text rule, checked when a client is built: a plain-http base URL must
    /// name a loopback host, and a proxy it goes through must too (the proxy would read
    /// the key), unless insecure http was allowed.
    pub(crate) fn check_transport_security(&self) -> Result<(), Error> {
        let uri: Uri = self
            .base_url
            .parse()
            .map_err(|_| Error::invalid("bad base URL"))?;
        if uri.scheme_str() != Some("http") || self.allow_insecure_http {
            return Ok(());
        }
        if !is_loopback_host(uri.host().unwrap_or("")) {
            return Err(Error::invalid(
                "plain http is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); \
                 use https, or call allow_insecure_http to send the API key in clear text",
            ));
        }
        let proxy_host = self
            .proxy
            .as_deref()
            .and_then(|p| p.parse::<Uri>().ok())
            .map(|p| p.host().unwrap_or("").to_owned());
        match proxy_host {
            Some(host) if !is_loopback_host(&host) => Err(Error::invalid(
                "plain http through a proxy that is not on loopback would show the API key \
                 to the proxy in clear text; use https, a loopback proxy, or call \
                 allow_insecure_http",
            )),
            _ => Ok(()),
        }
    }
}

/// Validates a base URL and returns it without a trailing slash.
/// The longest base URL: what leaves room for the longest call URL (the account and call
/// ids, 128 characters each) within what a URL may be (http's `Uri` takes up to 64 KiB);
/// servers refuse request lines far shorter (8 KiB is common), so a base this long is a
/// mistake made visible when it is set, not at every hangup.
pub const MAX_BASE_URL: usize = 8 * 1024;

fn parse_base_url(url: &str) -> Result<String, Error> {
    if url.len() > MAX_BASE_URL {
        return Err(Error::invalid(format!(
            "base URL is {} bytes long; at most {MAX_BASE_URL} are allowed",
            url.len()
        )));
    }
    if url.contains(['?', '#']) {
        return Err(Error::invalid("base URL may not have a query or fragment"));
    }
    let uri: Uri = url.parse().map_err(|_| {
        Error::invalid("base URL is not a valid URL (want http[s]://host[:port][/prefix])")
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(Error::invalid(
                "base URL must start with http:// or https://",
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Error::invalid("base URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(Error::invalid("base URL may not contain user info"));
    }
    if authority.host().is_empty() {
        return Err(Error::invalid("base URL has no host"));
    }
    check_port("base URL", authority)?;
    let path = uri.path().trim_end_matches('/');
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Error::invalid(
            "base URL path may not contain . or .. segments",
        ));
    }
    Ok(format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("https"),
        authority,
        path
    ))
}

/// An explicit port must be 1 to 65535 (`http::Uri` keeps any digits, and ureq would
/// quietly fall back to the scheme's port).
fn check_port(what: &str, authority: &Authority) -> Result<(), Error> {
    // Credentials (`user:password@`, a proxy's) come before the host: neither their ':'
    // nor their text may take part (the error below quotes the port).
    let text = authority.as_str();
    let text = text
        .rsplit_once('@')
        .map_or(text, |(_, host_port)| host_port);
    // The port follows the last ':' after the host (an IPv6 host is in brackets).
    let after_host = text.rfind(']').map_or(text, |i| &text[i..]);
    let Some(colon) = after_host.rfind(':') else {
        return Ok(());
    };
    let port = &after_host[colon + 1..];
    if port.is_empty() {
        return Err(Error::invalid(format!("{what} has an empty port")));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(Error::invalid(format!(
            "{what} port {port} is out of range (1 to 65535)"
        ))),
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<Ipv6Addr>().is_ok_and(|v6| v6.is_loopback())
}

/// Which roots a client trusts when no CA file is set ([`crate::Options::set_trust_store`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrustStore {
    /// The system's trust store (as OpenSSL finds it: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or
    /// the distribution's bundle); Mozilla's roots compiled into the library where the
    /// system has none. The default: what libcurl, Go and .NET do on Linux.
    #[default]
    SystemOrBundled,
    /// The system's trust store only: building a client fails if it has no certificate.
    System,
    /// Mozilla's roots compiled into the library only (as of its build).
    Bundled,
}

/// Resolves `host:port` to addresses. The default is the system resolver (getaddrinfo);
/// tests substitute their own (a name whose first address is black-holed, a resolver
/// that never answers) through [`crate::Options::set_resolver`].
pub type LookupFn = Arc<dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_longer_than_any_server_takes_is_refused() {
        let mut o = Options::new();
        let at_most = format!("https://api.example.com/{}", "p".repeat(MAX_BASE_URL - 24));
        assert_eq!(at_most.len(), MAX_BASE_URL);
        o.set_base_url(&at_most).unwrap();
        let e = o.set_base_url(&format!("{at_most}p")).unwrap_err();
        assert_eq!(e.status(), crate::Status::InvalidArgument);
        assert!(e.message().contains("at most 8192"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_proxys_credentials() {
        let mut o = Options::new();
        o.set_proxy("http://us%40er:s3cr3t-pw@127.0.0.1:3128")
            .unwrap();
        let text = format!("{o:?}");
        assert!(text.contains("http://***@127.0.0.1:3128"), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("us%40er"),
            "{text}"
        );
        o.set_proxy("http://127.0.0.1:3128/").unwrap();
        assert!(format!("{o:?}").contains("\"http://127.0.0.1:3128/\""));
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            parse_base_url("https://api.tryvox.io/").unwrap(),
            "https://api.tryvox.io"
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1:8080/x/").unwrap(),
            "http://127.0.0.1:8080/x"
        );
        assert_eq!(
            parse_base_url("http://[::1]:80").unwrap(),
            "http://[::1]:80"
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1:65535").unwrap(),
            "http://127.0.0.1:65535"
        );
        for bad in [
            "",
            "ftp://h",
            "https://",
            "https://h?x=1",
            "https://h#f",
            "https://u:p@h",
            "api.tryvox.io",
            "https://h/a/../b",
            "https://h:",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:65536",
            "http://127.0.0.1:0",
            "http://[::1]:70000",
            "https://h /x",
            "https://h\n",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.8.7",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "example.com",
            "[::2]",
            "localhost.evil.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn clear_text_rule() {
        let mut o = Options::new();
        o.set_base_url("http://example.com").unwrap();
        assert!(o.check_transport_security().is_err());
        o.allow_insecure_http(true);
        assert!(o.check_transport_security().is_ok());
        o.allow_insecure_http(false);
        o.set_base_url("http://127.0.0.1:9").unwrap();
        assert!(o.check_transport_security().is_ok());
        // A proxy reads a plain-http request, key included.
        o.set_proxy("http://10.1.2.3:3128").unwrap();
        assert!(o.check_transport_security().is_err());
        o.set_proxy("http://[::ffff:127.0.0.1]:3128").unwrap();
        assert!(o.check_transport_security().is_err());
        o.set_proxy("http://localhost:3128").unwrap();
        assert!(o.check_transport_security().is_ok());
        o.set_proxy("http://127.0.0.1:3128").unwrap();
        assert!(o.check_transport_security().is_ok());
        // Through CONNECT the proxy sees only ciphertext; an opt-in allows anything.
        o.set_proxy("http://10.1.2.3:3128").unwrap();
        o.allow_insecure_http(true);
        assert!(o.check_transport_security().is_ok());
        o.allow_insecure_http(false);
        o.set_base_url("https://api.tryvox.io").unwrap();
        assert!(o.check_transport_security().is_ok());
    }

    #[test]
    fn proxy_ports() {
        let mut o = Options::new();
        assert!(o.set_proxy("http://127.0.0.1:3128").is_ok());
        for bad in ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://h:"] {
            assert!(o.set_proxy(bad).is_err(), "{bad}");
        }
        // Credentials: their ':' is not a port, and their text never reaches a message.
        for good in [
            "http://user:pw@127.0.0.1",
            "http://user:se%40cret@10.0.0.1:3128",
        ] {
            assert!(o.set_proxy(good).is_ok(), "{good}");
        }
        for bad in [
            "http://user:pw@127.0.0.1:99999",
            "http://user:s3cr3t@[::1]:0",
        ] {
            let e = o.set_proxy(bad).unwrap_err();
            assert!(
                !e.message().contains("pw") && !e.message().contains("s3cr3t"),
                "{e}"
            );
        }
    }
}
