//! Servers the tests run as child processes: Python's `http.server` and tinyproxy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_for_port, Proc};

/// Python's `http.server.ThreadingHTTPServer` (listen backlog 5, one thread per
/// connection), HTTP/1.1 keep-alive, 204 for every DELETE. Killed when dropped.
pub struct PyServer {
    pub child: Child,
    pub port: u16,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a [`PyServer`] on a free port of 127.0.0.1 and waits until it listens.
pub fn python_server() -> PyServer {
    let script = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_DELETE(self):
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
assert s.request_queue_size == 5
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server printed its port");
    PyServer { child, port }
}

/// tinyproxy on a free port of 127.0.0.1 with `MaxClients max_clients`, its config, pid
/// file and log in `dir`; returns once it listens: the process (killed when dropped), the
/// proxy's URL and its log. LogLevel Connect: one line per request the proxy takes, with
/// its request line (`CONNECT host:port HTTP/1.1` for a tunnel, `DELETE
/// http://host:port/path HTTP/1.1` for a request it forwards itself).
pub fn tinyproxy(dir: &Path, max_clients: u32) -> (Proc, String, PathBuf) {
    let port = free_port();
    let conf = dir.join("tinyproxy.conf");
    let log = dir.join("log");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients {max_clients}\nLogLevel Connect\n\
             LogFile \"{}\"\nPidFile \"{}\"\nUser root\nGroup root\n",
            log.display(),
            dir.join("pid").display()
        ),
    )
    .unwrap();
    let p = Proc::spawn(Command::new("tinyproxy").arg("-d").arg("-c").arg(&conf));
    wait_for_port(port);
    (p, format!("http://127.0.0.1:{port}"), log)
}
