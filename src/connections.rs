//! Client connections: the accept loop, the limits that keep slow and idle
//! clients from holding the server (`[server]` in the configuration), and
//! graceful shutdown.
//!
//! - **Header read timeout** (slowloris): a request head (request line and
//!   headers) must be complete within `header_read_timeout` of its first
//!   byte; a new connection must send a complete first head within that
//!   time of its first byte, and some first byte within that time of being
//!   accepted. Otherwise the connection is closed.
//! - **Idle timeout**: a keep-alive connection that starts no new request
//!   for `idle_timeout` after its last response is closed. An HTTP/2
//!   connection with no traffic at all for that long is told to go away.
//! - **Connection cap**: at most `max_connections` at once; further
//!   connections wait in the kernel's accept queue until one closes.
//!
//! Connections are served by one thread per core ([`Workers`]): the
//! runtime `serve` is called on (the CLI gives it one worker thread) and a
//! single-threaded Tokio runtime on a thread of its own for every further
//! core. A connection, its requests and the upstream connection a request
//! borrows (one pool per worker, see `upstream.rs`) all stay on one thread,
//! so no request wakes another thread. The accept loop hands each new
//! connection to the next worker.
//!
//! The HTTP/1 head timer is hyper's own (`header_read_timeout`), driven by
//! a [`HeadTimer`] that knows whether the connection is idle between
//! requests (then the idle timeout applies until the next request's first
//! byte) or reading a head (then the header timeout applies from that byte).

use crate::config::ServerLimits;
use crate::server::Front;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Accept connections on `listener` and serve `front` on each until
/// `shutdown` resolves; then stop accepting, let every connection finish
/// its current request, and return when all are closed.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut workers = Workers::start()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut last_warning: Option<Instant> = None;
    let mut warn = |message: &str, error: Option<&std::io::Error>| {
        // At most one line a minute: a server at its limit must not also
        // flood its log.
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            last_warning = Some(Instant::now());
            match error {
                Some(e) => tracing::warn!(error = %e, "{message}"),
                None => tracing::warn!("{message}"),
            }
        }
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        if permits.available_permits() == 0 {
            warn(
                "connection limit reached (server.max_connections): new connections wait until one closes",
                None,
            );
        }
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait a little
                    // rather than spin; connections closing frees them.
                    warn("cannot accept connections", Some(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Moved to the worker's own reactor there.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let front = front.clone();
        let stop = stop_rx.clone();
        workers.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                connection(stream, peer, front, limits, stop).await;
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    workers.stop().await;
    Ok(())
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Which serving thread this is (0 outside of them): per-thread resources
/// such as the upstream connection pools are chosen by it.
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// How many serving threads [`serve`] starts: one per available core.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The serving threads, each a single-threaded runtime that runs whatever
/// the accept loop hands it until told to stop.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// Worker 0 is the runtime `serve` runs on (a multi-thread runtime
    /// with one worker thread when started by the CLI); the others are
    /// new threads with a single-threaded runtime each.
    fn start() -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: vec![tokio::runtime::Handle::current()],
            stops: Vec::new(),
            threads: Vec::new(),
            next: 0,
        };
        for i in 1..worker_count() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop_tx);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("tapgate-serve-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i));
                        rt.block_on(async {
                            let _ = stop_rx.await;
                        });
                        // Dropping the runtime ends what is left on it
                        // (spliced WebSocket connections).
                    })?,
            );
        }
        Ok(w)
    }

    fn next(&mut self) -> &tokio::runtime::Handle {
        let i = self.next % self.handles.len();
        self.next = self.next.wrapping_add(1);
        &self.handles[i]
    }

    async fn stop(self) {
        drop(self.stops);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Errors of one incoming connection (it was reset before we took it),
/// not of the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Serve one client connection until it closes, a limit closes it, or the
/// server shuts down.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    front: Front,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io: Some(stream),
        activity: activity.clone(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(HeadTimer {
            activity: activity.clone(),
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
        })
        .header_read_timeout(limits.header_read_timeout);
    // WebSockets over HTTP/2 (RFC 8441), as axum::serve enables it.
    builder.http2().enable_connect_protocol();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        front.serve(req.map(Body::new), peer)
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    // Until the first byte: the header timeout from now. Afterwards: the
    // idle timeout from the last byte read or written (HTTP/1 connections
    // are closed by their head timer before this fires; this one covers
    // HTTP/2 and connections that never say which protocol they speak).
    let watchdog = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(watchdog);
    let mut draining = false;
    let mut told_idle = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                match result {
                    // A client too slow to send its head gets no more time.
                    Err(e) if is_head_timeout(e.as_ref()) => {
                        tracing::debug!(%peer, "connection closed: request head not complete within server.header_read_timeout");
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection closed with an error");
                        activity.linger.store(true, Ordering::Relaxed);
                    }
                    Ok(()) => activity.linger.store(true, Ordering::Relaxed),
                }
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = watchdog.as_mut() => {
                if activity.reads.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "connection closed: no request within server.header_read_timeout");
                    break;
                }
                let quiet = activity.quiet_for();
                if quiet < limits.idle_timeout {
                    watchdog.as_mut().reset((Instant::now() + (limits.idle_timeout - quiet)).into());
                } else if told_idle {
                    // Told to go away one idle period ago and still silent.
                    tracing::debug!(%peer, "connection closed: idle");
                    break;
                } else {
                    told_idle = true;
                    conn.as_mut().graceful_shutdown();
                    watchdog.as_mut().reset((Instant::now() + limits.idle_timeout).into());
                }
            }
        }
    }
}

fn is_head_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// How long, and for how many bytes, a closed connection's socket is still
/// read ([`linger`]); and how many sockets may linger at once.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_QUIET: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;
const LINGER_SOCKETS: usize = 1024;
static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Close a client's socket the way nginx's `lingering_close` does: say we
/// are done writing, then read and discard what the client still sends
/// (for at most [`LINGER_TIME`], [`LINGER_QUIET`] without data, and
/// [`LINGER_BYTES`]) before closing. A socket closed with unread data is
/// reset by the kernel, and a client still sending a request body that was
/// answered without being read (a 413, or a 401 before an upload) would
/// then see the reset instead of the answer.
fn linger(stream: TcpStream) {
    let mut probe = [0u8; 1];
    // The client has closed its side: nothing can be lost.
    if matches!(stream.try_read(&mut probe), Ok(0)) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= LINGER_SOCKETS {
        // Too many at once (a flood of refused uploads): close now.
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    runtime.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut buf = vec![0u8; 16 * 1024];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let quiet = tokio::time::Instant::now() + LINGER_QUIET;
            match tokio::time::timeout_at(deadline.min(quiet), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
        drop(stream);
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// What a connection has done, for its timers. Plain counters and a
/// timestamp: one relaxed store per read or write.
struct Activity {
    accepted: Instant,
    /// Reads that returned data.
    reads: AtomicU64,
    /// Writes that sent data (a response has been started).
    writes: AtomicU64,
    /// Milliseconds after `accepted` of the last read or write.
    last_ms: AtomicU64,
    /// Set when the connection ends other than by a timeout: then its
    /// socket lingers ([`linger`]) rather than being closed at once.
    linger: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            linger: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.accepted.elapsed().saturating_sub(last)
    }
}

/// The client's socket, counting what passes through it. `None` only
/// once dropped (the socket then goes to [`linger`]).
struct Watched {
    io: Option<TcpStream>,
    activity: Arc<Activity>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(io) = self.io.take()
            && self.activity.linger.load(Ordering::Relaxed)
        {
            linger(io);
        }
    }
}

impl Watched {
    fn io(&mut self) -> std::io::Result<Pin<&mut TcpStream>> {
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match this.io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = match this.io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = match this.io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Watched {
    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
            self.activity.touch();
        }
    }
}

/// hyper's HTTP/1 head timer, made aware of keep-alive: hyper arms it
/// whenever it starts reading a request head, including while a
/// keep-alive connection waits for its next request.
#[derive(Clone)]
struct HeadTimer {
    activity: Arc<Activity>,
    header: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(tokio_sleep(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // hyper asks for "now + header_read_timeout".
        let armed = deadline.checked_sub(self.header).unwrap_or(deadline);
        let a = &self.activity;
        let between_requests = a.writes.load(Ordering::Relaxed) > 0;
        let limit = if between_requests {
            armed + self.idle
        } else {
            deadline
        };
        Box::pin(HeadSleep {
            inner: tokio::time::sleep_until(limit.into()),
            activity: self.activity.clone(),
            reads_at_arm: a.reads.load(Ordering::Relaxed),
            header: self.header,
            waiting_for_first_byte: between_requests,
        })
    }
}

fn tokio_sleep(deadline: Instant) -> HeadSleep {
    HeadSleep {
        inner: tokio::time::sleep_until(deadline.into()),
        activity: Arc::new(Activity::new()),
        reads_at_arm: 0,
        header: Duration::ZERO,
        waiting_for_first_byte: false,
    }
}

pin_project_lite::pin_project! {
    /// Fires `header` after the first byte read since it was armed (or at
    /// its deadline if it was armed for a first request); until that byte,
    /// at the idle deadline.
    struct HeadSleep {
        #[pin]
        inner: tokio::time::Sleep,
        activity: Arc<Activity>,
        reads_at_arm: u64,
        header: Duration,
        waiting_for_first_byte: bool,
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // hyper polls this after every read while it waits for a head, so
        // the first byte of the next request is seen here promptly.
        if *this.waiting_for_first_byte
            && this.activity.reads.load(Ordering::Relaxed) != *this.reads_at_arm
        {
            *this.waiting_for_first_byte = false;
            this.inner
                .as_mut()
                .reset((Instant::now() + *this.header).into());
        }
        this.inner.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}
