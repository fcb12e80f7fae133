//! Accepting and serving the sandbox's TCP connections, with limits on how long a client may hold one
//! without sending: a request's headers must arrive within the header timeout (hyper's own, which also
//! bounds the wait for the next request on a kept-alive connection), and a connection that moves no byte in
//! either direction for the idle timeout (a body that stops half way, a response nobody reads) is closed.
//! `axum::serve` offers neither, so this is its accept loop with hyper's HTTP/1 builder configured.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// How long a client may keep a connection without sending; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// A server running in its own task: the sandbox's and the proxy's. Dropping it stops the server.
pub(super) struct Serving {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Bind `addr` (port 0 picks a free one) and serve `app` there with `limits`.
    pub(super) async fn start(
        addr: std::net::SocketAddr,
        app: axum::Router,
        limits: ConnectionLimits,
    ) -> io::Result<Serving> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        Ok(Serving { addr, stop: Some(stop), task: Some(task) })
    }

    pub(super) fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stop serving and wait for open connections to close.
    pub(super) async fn shutdown(mut self) {
        self.stop_now();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop_now();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Serve `app` on `listener` until `stop` completes, then finish the requests in flight (each connection
/// is shut down gracefully) and return when every connection has closed.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        stop.await;
        drop(stop_rx);
    });
    // Every connection task holds a receiver; when all are gone, every connection has closed.
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted: go on, gently.
                    tracing::debug!(error = %e, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stop_tx.closed() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let stop_tx = stop_tx.clone();
        let closed_rx = closed_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let mut conn = pin!(builder.serve_connection(io, service));
            let mut stopping = pin!(stop_tx.closed());
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "sandbox connection ended");
                        }
                        break;
                    }
                    _ = &mut stopping, if !shutting_down => {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed_rx);
        });
    }
    drop(closed_rx);
    drop(listener);
    closed_tx.closed().await;
}

/// A stream that fails with `TimedOut` once it has been waited on for `idle` without a byte read or
/// written.
pub struct IdleTimeout<T> {
    inner: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, idle: Duration) -> IdleTimeout<T> {
        IdleTimeout { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// Called when the inner stream is not ready: has the wait gone on too long? Polling the deadline also
    /// wakes the task when it passes, so a connection nobody writes to is closed then.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("no byte moved for {} s", self.idle.as_secs_f64()))
    }

    /// The inner result, with the deadline moved on progress and enforced while pending.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending if self.waited_too_long(cx) => Poll::Ready(Err(self.timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.watch(cx, poll)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_stream_times_out_only_after_the_idle_time_without_a_byte() {
        let idle = Duration::from_millis(400);
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = IdleTimeout::new(near, idle);
        let mut buf = [0u8; 8];
        // A byte every 250 ms keeps it open well past 400 ms.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            far.write_all(b"x").await.unwrap();
            assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        }
        let started = Instant::now();
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    }
}
