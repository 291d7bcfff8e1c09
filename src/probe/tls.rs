//! TLS for `scheme: HTTPS` probes and hooks: kubelet's prober skips
//! certificate verification (`InsecureSkipVerify`), so any certificate is
//! accepted; signatures are still checked so the handshake is real.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(cfg))
        })
        .clone()
}

/// A TLS client session over `stream` to `ip` (no SNI for an address, as
/// Go's client). A server that answers the hello in plain HTTP fails it
/// with Go's [`HTTP_TO_HTTPS`](super::http1::HTTP_TO_HTTPS) words, which a
/// lifecycle hook falls back on.
pub async fn connect(
    stream: tokio::net::TcpStream,
    ip: std::net::IpAddr,
) -> Result<tokio_rustls::client::TlsStream<Sniffed<tokio::net::TcpStream>>, String> {
    let connector = tokio_rustls::TlsConnector::from(config()?);
    let session = connector
        .connect(ServerName::IpAddress(ip.into()), Sniffed::new(stream))
        .into_fallible();
    match session.await {
        Ok(s) => Ok(s),
        Err((_, io)) if io.answered_in_http() => Err(super::http1::HTTP_TO_HTTPS.to_string()),
        Err((e, _)) => Err(format!("tls handshake: {e}")),
    }
}

/// A stream that keeps the first bytes it read: what the server sent
/// instead of a TLS record, if it did.
pub struct Sniffed<S> {
    inner: S,
    head: [u8; 5],
    seen: usize,
}

impl<S> Sniffed<S> {
    fn new(inner: S) -> Self {
        Sniffed {
            inner,
            head: [0; 5],
            seen: 0,
        }
    }

    /// Whether the server's first bytes were `HTTP/` (Go's transport
    /// checks the same five bytes of its `tls.RecordHeaderError`).
    fn answered_in_http(&self) -> bool {
        self.seen == self.head.len() && &self.head == b"HTTP/"
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = buf.filled().get(before..).unwrap_or_default();
        let take = new.len().min(this.head.len() - this.seen);
        if take > 0 {
            this.head[this.seen..this.seen + take].copy_from_slice(&new[..take]);
            this.seen += take;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
