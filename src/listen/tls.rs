//! The TLS side of accepting: the handshake within the connection's deadline, a friendly refusal of
//! plain HTTP, and the connection type every server is handed.
//!
//! Each connection takes the listener's configuration current when it is accepted, so a rotated
//! certificate serves new connections at once and established ones keep theirs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::H2_PREFACE;

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a client that speaks plain HTTP to a TLS port is told, instead of a reset.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 52\r\n\r\nThis port speaks TLS: use https:// (or TLS for gRPC)\n";

/// A served connection: plain TCP, or TLS over TCP.
pub struct Conn {
    io: Io,
    info: TcpConnectInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<Prefixed<TlsStream<TcpStream>>>),
}

impl Conn {
    pub fn plain(s: TcpStream) -> Conn {
        let info = s.connect_info();
        Conn {
            io: Io::Plain(s),
            info,
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

/// Why a TLS connection was not served; the label of `grayscope_tls_handshake_failures_total`.
pub fn failure_reason(e: &io::Error) -> &'static str {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => "no_client_certificate",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_client_certificate",
        Some(rustls::Error::AlertReceived(_)) => "client_alert",
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. },
        ) => "not_tls",
        Some(rustls::Error::NoApplicationProtocol) => "no_application_protocol",
        _ => "other",
    }
}

/// Whether the peer's first byte starts a TLS handshake; `None` if it closed first.
pub async fn starts_tls(s: &TcpStream) -> io::Result<Option<bool>> {
    let mut b = [0u8; 1];
    Ok(match s.peek(&mut b).await? {
        0 => None,
        _ => Some(b[0] == TLS_HANDSHAKE),
    })
}

/// Answers a plain-text client on a TLS port with a 400 that says why, then closes. Draining what
/// the client sent first makes the close a FIN, not a reset that would hide the answer.
pub async fn refuse_plain(mut s: TcpStream) {
    if s.write_all(PLAIN_TO_TLS).await.is_err() {
        return;
    }
    let _ = s.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        let mut left = 64 * 1024;
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    })
    .await;
}

/// Completes the handshake with `config`, then reads until the client has shown how it speaks (the
/// whole HTTP/2 preface, or a byte that rules it out), as plain connections are checked, so that a
/// client that stalls after the handshake is timed out too. What was read is replayed to the
/// server.
pub async fn accept(
    s: TcpStream,
    config: Arc<rustls::ServerConfig>,
    failures: impl Fn(&'static str),
) -> Option<Conn> {
    let info = s.connect_info();
    let mut tls = match tokio_rustls::TlsAcceptor::from(config).accept(s).await {
        Ok(t) => t,
        Err(e) => {
            let reason = failure_reason(&e);
            failures(reason);
            tracing::debug!(reason, "TLS handshake failed: {e}");
            return None;
        }
    };
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; H2_PREFACE.len()];
    while seen.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&seen) {
        let want = H2_PREFACE.len() - seen.len();
        match tls.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(Conn {
        io: Io::Tls(Box::new(Prefixed {
            inner: tls,
            prefix: seen,
            at: 0,
        })),
        info,
    })
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed<S> {
    inner: S,
    prefix: Vec<u8>,
    at: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            buf.put_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
