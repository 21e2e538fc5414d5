//! Issue 7 part 3: slow and idle clients cannot hold the server. Runs the
//! real binary (`tapgate demo` in a temporary directory) with short
//! `[server]` limits and talks to it over raw sockets, so that every byte
//! and every close is seen as a client sees it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HEADER_TIMEOUT_S: u64 = 2;
const IDLE_TIMEOUT_S: u64 = 4;

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut c = Command::new(env!("CARGO_BIN_EXE_tapgate"));
        c.current_dir(dir.path()).arg("demo");
        for (k, _) in std::env::vars() {
            if k.starts_with("TAPGATE_") || k == "PORT" {
                c.env_remove(k);
            }
        }
        c.env("PORT", port.to_string())
            .env(
                "TAPGATE_SERVER__HEADER_READ_TIMEOUT",
                format!("{HEADER_TIMEOUT_S}s"),
            )
            .env("TAPGATE_SERVER__IDLE_TIMEOUT", format!("{IDLE_TIMEOUT_S}s"))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("spawn tapgate");
        let server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(server.addr)
                && let Ok(status) = server.request(&mut s)
                && status == 200
            {
                return server;
            }
            assert!(Instant::now() < deadline, "tapgate did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn request_text(&self) -> String {
        format!(
            "GET /.tapgate/healthz HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            self.addr.port()
        )
    }

    /// One keep-alive request on `s`; the status code.
    fn request(&self, s: &mut TcpStream) -> std::io::Result<u16> {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(self.request_text().as_bytes())?;
        read_response(s)
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).expect("connect to tapgate")
    }
}

/// Read one response with a `Content-Length` body; its status code.
fn read_response(s: &mut TcpStream) -> std::io::Result<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&buf).into_owned()
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .expect("a status code");
                return Ok(status);
            }
        }
    }
}

/// Wait until the server closes `s` (EOF or reset); how long that took.
/// Panics if it is still open after `limit`.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut byte = [0u8; 64];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return start.elapsed(),
            Ok(n) => panic!("unexpected {n} bytes from the server"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < limit,
            "the server kept the connection open for {limit:?}"
        );
    }
}

#[test]
fn a_client_dribbling_its_headers_is_cut_off_while_others_are_served() {
    let server = Server::start(&[]);
    let text = server.request_text();
    // Ten slowloris clients, one header byte a second each.
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let mut s = server.connect();
            let text = text.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                for b in text.as_bytes() {
                    if s.write_all(&[*b]).is_err() {
                        // Reset by the server: it had closed the connection.
                        return Some(start.elapsed());
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    // A closed connection shows as EOF on a non-blocking peek.
                    s.set_nonblocking(true).expect("non-blocking");
                    let mut one = [0u8; 1];
                    let closed = matches!(s.peek(&mut one), Ok(0))
                        || matches!(s.peek(&mut one), Err(e) if e.kind() != ErrorKind::WouldBlock);
                    s.set_nonblocking(false).expect("blocking");
                    if closed {
                        return Some(start.elapsed());
                    }
                }
                None
            })
        })
        .collect();

    // Meanwhile, ordinary clients are served promptly, on new connections
    // and on a kept-alive one.
    let mut kept = server.connect();
    let until = Instant::now() + Duration::from_secs(HEADER_TIMEOUT_S + 2);
    let mut served = 0;
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(server.request(&mut server.connect()).expect("served"), 200);
        assert_eq!(server.request(&mut kept).expect("served"), 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "slow: {:?}",
            t.elapsed()
        );
        served += 2;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(served >= 10);

    for t in slow {
        let cut = t.join().expect("slow client thread");
        let cut = cut.expect("a client sending a byte a second was never cut off");
        // Cut at the header timeout (+ the one-second sampling of the client).
        assert!(
            cut >= Duration::from_secs(HEADER_TIMEOUT_S - 1)
                && cut <= Duration::from_secs(HEADER_TIMEOUT_S + 2),
            "cut off after {cut:?}, expected about {HEADER_TIMEOUT_S} s"
        );
    }
    // Still serving afterwards.
    assert_eq!(server.request(&mut server.connect()).expect("served"), 200);
}

#[test]
fn a_connection_that_never_sends_anything_is_closed_after_the_header_timeout() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let took = time_to_close(&mut s, Duration::from_secs(HEADER_TIMEOUT_S + 3));
    assert!(
        took >= Duration::from_millis(HEADER_TIMEOUT_S * 1000 - 300),
        "closed too early: {took:?}"
    );
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_not_the_header_timeout() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    assert_eq!(server.request(&mut s).expect("first request"), 200);
    // Idle for longer than the header timeout: the connection stays usable.
    std::thread::sleep(Duration::from_secs(HEADER_TIMEOUT_S + 1));
    assert_eq!(
        server
            .request(&mut s)
            .expect("a kept-alive connection idle for less than idle_timeout"),
        200
    );
    // Then idle for good: closed after the idle timeout.
    let took = time_to_close(&mut s, Duration::from_secs(IDLE_TIMEOUT_S + 3));
    assert!(
        took >= Duration::from_millis(IDLE_TIMEOUT_S * 1000 - 300),
        "closed after {took:?}, before the idle timeout ({IDLE_TIMEOUT_S} s)"
    );
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = Server::start(&[("TAPGATE_SERVER__MAX_CONNECTIONS", "3")]);
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = server.connect();
            assert_eq!(server.request(&mut s).expect("within the cap"), 200);
            s
        })
        .collect();
    // The fourth connects (the kernel queues it) but is not served...
    let mut fourth = server.connect();
    fourth
        .write_all(server.request_text().as_bytes())
        .expect("send");
    fourth
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    assert!(
        matches!(fourth.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a connection beyond server.max_connections was served"
    );
    // ...until one of the three closes.
    drop(open.pop());
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    assert_eq!(
        read_response(&mut fourth).expect("served after a close"),
        200
    );
}

#[test]
fn sigterm_closes_idle_connections_and_exits_cleanly() {
    let mut server = Server::start(&[]);
    let mut s = server.connect();
    assert_eq!(server.request(&mut s).expect("request"), 200);
    let ok = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(ok.success());
    // The idle keep-alive connection does not hold the shutdown up.
    time_to_close(&mut s, Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
