//! The handlers probes and lifecycle hooks run: `exec` in the container,
//! `tcpSocket` and `httpGet` from inside the pod's network namespace
//! (`k8s:pkg/kubelet/prober/prober.go`, `k8s:pkg/probe/http/http.go`), and
//! the hooks' `sleep`. A handler ends in success or failure with the
//! output kubelet shows in its events.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::http1::{Get, Made, Step};
use crate::runtime::api::Runtime;

pub use super::http1::{MAX_BODY, USER_AGENT};
/// Output kept from an exec probe or hook.
pub const MAX_EXEC_OUTPUT: usize = 10 * 1024;

/// A probe's or hook's attempt, as a shim reporting one it made says it
/// too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", content = "message", rename_all = "camelCase")]
pub enum Outcome {
    Success(String),
    /// Success with something to say (kubelet's `probe.Warning`: a redirect
    /// to another host), reported as a `ProbeWarning` event.
    Warning(String),
    Failure(String),
}

impl Outcome {
    pub fn ok(&self) -> bool {
        !matches!(self, Outcome::Failure(_))
    }

    /// The `result` label of `prober_probe_total`.
    pub fn metric_result(&self) -> &'static str {
        if self.ok() {
            "successful"
        } else {
            "failed"
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Success(m) | Outcome::Warning(m) | Outcome::Failure(m) => m,
        }
    }
}

/// Where a handler runs.
pub struct Target<R: Runtime> {
    pub runtime: std::sync::Arc<R>,
    pub sandbox: String,
    pub container_id: String,
    /// The pod's network namespace (none: this process's, in tests).
    pub netns: Option<std::sync::Arc<super::netns::NetNs>>,
    /// The pod IP (default host of httpGet/tcpSocket); loopback inside the
    /// pod's network namespace while pods have no routable address.
    pub pod_ip: String,
    pub ports: Vec<ContainerPort>,
    /// The container and pod, as probe metrics label them.
    pub owner: crate::metrics::ProbeOwner,
}

pub async fn exec<R: Runtime>(t: &Target<R>, command: &[String], timeout: Duration) -> Outcome {
    let result = t
        .runtime
        .exec(
            &t.sandbox,
            &t.container_id,
            command,
            timeout,
            MAX_EXEC_OUTPUT,
        )
        .await;
    exec_outcome(command, timeout, result)
}

/// What an exec's result means to a probe or hook, in kubelet's words.
pub fn exec_outcome(
    command: &[String],
    timeout: Duration,
    result: Result<crate::runtime::api::ExecResult, crate::runtime::api::RuntimeError>,
) -> Outcome {
    match result {
        Ok(r) if r.timed_out => Outcome::Failure(format!(
            "command {:?} timed out after {}",
            command.join(" "),
            crate::time::go_duration(timeout)
        )),
        Ok(r) => {
            let out = format!("{}{}", r.stdout, r.stderr);
            if r.exit_code == 0 {
                Outcome::Success(out)
            } else if out.is_empty() {
                Outcome::Failure(format!(
                    "command {:?} exited with {}",
                    command.join(" "),
                    r.exit_code
                ))
            } else {
                Outcome::Failure(out)
            }
        }
        Err(e) => Outcome::Failure(crate::error_chain(&e)),
    }
}

fn port(t: &Target<impl Runtime>, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            t.ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name}"))
        }
    }
}

fn host_ip(t: &Target<impl Runtime>, host: Option<&str>) -> Result<IpAddr, String> {
    let h = host.filter(|h| !h.is_empty()).unwrap_or(&t.pod_ip);
    if h.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    h.parse::<IpAddr>()
        .map_err(|_| format!("host {h:?}: only IP addresses are supported (no DNS on this node)"))
}

/// Connects to `addr` from inside `netns`, with a socket its dialer
/// thread made there.
async fn connect(
    netns: Option<&super::netns::NetNs>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let dial_err = |e: &std::io::Error| super::http1::dial_error(addr, e);
    let socket = match netns {
        Some(ns) => {
            let fd = ns.socket(addr.is_ipv6()).await.map_err(|e| dial_err(&e))?;
            tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
        }
        None if addr.is_ipv6() => tokio::net::TcpSocket::new_v6().map_err(|e| dial_err(&e))?,
        None => tokio::net::TcpSocket::new_v4().map_err(|e| dial_err(&e))?,
    };
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(dial_err(&e)),
        Err(_) => Err(super::http1::dial_timeout(addr)),
    }
}

/// Like [`connect`], and sends `first` (a probe's request) as soon as the
/// connection stands; returns how much of it went. On loopback the
/// handshake completes within connect(2), so the request goes out at
/// once and the runtime is asked for nothing but the answer; otherwise
/// this waits for the socket to become writable, as `connect` does, and
/// leaves the whole request to the caller. A refused connection shows
/// here as the send's error, worded as the connect error it is.
async fn connect_sending(
    netns: Option<&super::netns::NetNs>,
    addr: SocketAddr,
    timeout: Duration,
    first: &[u8],
) -> Result<(tokio::net::TcpStream, usize), String> {
    use nix::errno::Errno;
    use nix::sys::socket::{self, MsgFlags, SockaddrIn, SockaddrIn6};
    use std::os::fd::AsRawFd;
    let dial_err = |e: std::io::Error| super::http1::dial_error(addr, &e);
    let fd = match netns {
        Some(ns) => ns.socket(addr.is_ipv6()).await,
        None => super::netns::stream_socket(addr.is_ipv6()),
    }
    .map_err(dial_err)?;
    let started = match addr {
        SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match started {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(dial_err(e.into())),
    }
    let sent = match socket::send(fd.as_raw_fd(), first, MsgFlags::MSG_NOSIGNAL) {
        Ok(n) => n,
        // Still in the handshake.
        Err(Errno::EAGAIN | Errno::ENOTCONN) => 0,
        Err(e) => return Err(dial_err(e.into())),
    };
    let stream =
        tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).map_err(dial_err)?;
    if sent == 0 {
        match tokio::time::timeout(timeout, stream.writable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(dial_err(e)),
            Err(_) => return Err(super::http1::dial_timeout(addr)),
        }
        if let Some(e) = stream.take_error().map_err(dial_err)? {
            return Err(dial_err(e));
        }
    }
    Ok((stream, sent))
}

pub async fn tcp<R: Runtime>(
    t: &Target<R>,
    host: Option<&str>,
    p: &IntOrString,
    timeout: Duration,
) -> Outcome {
    let addr = match tcp_addr(t, host, p) {
        Ok(a) => a,
        Err(e) => return Outcome::Failure(e),
    };
    dial(t.netns.as_deref(), addr, timeout).await
}

/// A tcpSocket handler's address, or why it has none.
pub fn tcp_addr<R: Runtime>(
    t: &Target<R>,
    host: Option<&str>,
    p: &IntOrString,
) -> Result<SocketAddr, String> {
    Ok(SocketAddr::new(host_ip(t, host)?, port(t, p)?))
}

/// Connects to `addr` from `netns` (none: this process's namespace) and
/// closes: kubelet's tcpSocket attempt (`k8s:pkg/probe/tcp/tcp.go`).
pub async fn dial(
    netns: Option<&super::netns::NetNs>,
    addr: SocketAddr,
    timeout: Duration,
) -> Outcome {
    match connect(netns, addr, timeout).await {
        Ok(_) => Outcome::Success(String::new()),
        Err(e) => Outcome::Failure(e),
    }
}

/// An `httpGet` handler's attempt, or why it cannot be made.
pub fn http_attempt<R: Runtime>(t: &Target<R>, get: &HTTPGetAction) -> Result<Get, String> {
    let addr = SocketAddr::new(host_ip(t, get.host.as_deref())?, port(t, &get.port)?);
    let headers = get
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let https = get.scheme.as_deref() == Some("HTTPS");
    Ok(Get::new(
        https,
        addr,
        get.path.as_deref().unwrap_or_default(),
        headers,
    ))
}

pub async fn http<R: Runtime>(t: &Target<R>, get: &HTTPGetAction, timeout: Duration) -> Outcome {
    match http_attempt(t, get) {
        Ok(attempt) => http_get(t.netns.as_deref(), attempt, timeout).await,
        Err(e) => Outcome::Failure(e),
    }
}

/// How an `httpGet` lifecycle hook's request went.
#[derive(Debug, PartialEq, Eq)]
pub enum HookHttp {
    /// Answered, whatever the status.
    Answered,
    /// An HTTPS hook answered in plain HTTP, then answered again over
    /// HTTP: kubelet lets it pass with a warning naming `host:port`.
    FellBack { authority: String },
    /// No answer: the request's error in Go's words.
    Failed(String),
}

/// Makes a lifecycle hook's request as `runHTTPHandler` does
/// (`k8s:pkg/kubelet/lifecycle/handlers.go`): the probe's request with
/// the `kube-lifecycle` agent, any answer a success, and an HTTPS request
/// that met a plain HTTP server asked once more over HTTP without its
/// `Authorization` header — the first error stands if that fails too.
pub async fn http_hook<R: Runtime>(
    t: &Target<R>,
    get: &HTTPGetAction,
    timeout: Duration,
) -> HookHttp {
    let attempt = match http_attempt(t, get) {
        Ok(a) => a.for_lifecycle(),
        Err(e) => return HookHttp::Failed(e),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let plain = attempt.https.then(|| attempt.in_plain_http());
    let netns = t.netns.as_deref();
    let failed = match http_get(netns, attempt, timeout).await {
        Outcome::Failure(m) => m,
        Outcome::Success(_) | Outcome::Warning(_) => return HookHttp::Answered,
    };
    let Some(plain) = plain.filter(|_| failed.contains(super::http1::HTTP_TO_HTTPS)) else {
        return HookHttp::Failed(failed);
    };
    let authority = plain.authority.clone();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    match http_get(netns, plain, left).await {
        Outcome::Failure(_) => HookHttp::Failed(failed),
        Outcome::Success(_) | Outcome::Warning(_) => HookHttp::FellBack { authority },
    }
}

/// Makes `attempt` from `netns` (none: this process's namespace) within
/// `timeout`.
pub async fn http_get(
    netns: Option<&super::netns::NetNs>,
    attempt: Get,
    timeout: Duration,
) -> Outcome {
    match http_make(netns, attempt, timeout, false).await {
        Made::Done(o) => o,
        // Not asked to stop anywhere.
        Made::Unfinished(g) => Outcome::Failure(format!("Get \"{}\": not finished", g.url())),
    }
}

/// Like [`http_get`]; with `plain_only` (as a shim, which speaks no TLS),
/// an attempt redirected to HTTPS is handed back unfinished.
pub async fn http_make(
    netns: Option<&super::netns::NetNs>,
    mut attempt: Get,
    timeout: Duration,
    plain_only: bool,
) -> Made {
    let first = attempt.clone();
    let hops = hops(netns, &mut attempt, timeout, plain_only);
    match tokio::time::timeout(timeout, hops).await {
        Ok(made) => made,
        Err(_) => Made::Done(first.timed_out()),
    }
}

async fn hops(
    netns: Option<&super::netns::NetNs>,
    attempt: &mut Get,
    timeout: Duration,
    plain_only: bool,
) -> Made {
    loop {
        let answer = match attempt.request() {
            Ok(request) => hop(netns, attempt, &request, timeout).await,
            Err(e) => Err(e),
        };
        match attempt.answered(answer) {
            Step::Done(o) => return Made::Done(o),
            Step::Again if plain_only && attempt.https => return Made::Unfinished(attempt.clone()),
            Step::Again => {}
        }
    }
}

/// One request of `attempt` and its answer.
async fn hop(
    netns: Option<&super::netns::NetNs>,
    attempt: &Get,
    request: &[u8],
    timeout: Duration,
) -> Result<super::http1::Response, String> {
    let addr = attempt.addr;
    if attempt.https {
        let tcp = connect(netns, addr, timeout).await?;
        let mut s = super::tls::connect(tcp, addr.ip()).await?;
        return super::http1::exchange(&mut s, request, MAX_BODY).await;
    }
    let (mut s, sent) = connect_sending(netns, addr, timeout, request).await?;
    let rest = request.get(sent..).unwrap_or_default();
    let answer = super::http1::exchange(&mut s, rest, MAX_BODY).await;
    if answer.is_ok() {
        super::http1::reset_if_closed(std::os::fd::AsFd::as_fd(&s));
    }
    answer
}

/// An HTTPS server on loopback answering `200 secure` to anything, with a
/// self-signed certificate; its port.
#[cfg(test)]
pub(crate) async fn tls_server() -> u16 {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = l.local_addr().map_or(0, |a| a.port());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// gRPC status names, for messages.
fn grpc_code(code: &str) -> &'static str {
    match code {
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "7" => "PermissionDenied",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// `grpc.health.v1.Health/Check` with the probe's service
/// (`k8s:pkg/probe/grpc/grpc.go`): SERVING is success, anything else a
/// failure with kubelet's message. Plain-text HTTP/2, as kubelet's probe.
pub async fn grpc<R: Runtime>(
    t: &Target<R>,
    g: &k8s_openapi::api::core::v1::GRPCAction,
    timeout: Duration,
) -> Outcome {
    let addr = match (host_ip(t, None), u16::try_from(g.port)) {
        (Ok(ip), Ok(port)) => SocketAddr::new(ip, port),
        (Err(e), _) => return Outcome::Failure(e),
        (_, Err(_)) => return Outcome::Failure(format!("invalid port {}", g.port)),
    };
    let service = g.service.clone().unwrap_or_default();
    let stream = match connect(t.netns.as_deref(), addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{addr}\" within {}: {e}",
                crate::time::go_duration(timeout)
            ))
        }
    };
    match tokio::time::timeout(timeout, health_check(stream, addr, &service)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Failure(format!("error: health rpc probe failed: {e}")),
        Err(_) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            crate::time::go_duration(timeout)
        )),
    }
}

async fn health_check(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    service: &str,
) -> Result<Outcome, String> {
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // HealthCheckRequest { string service = 1; } in a gRPC frame.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
            n >>= 7;
        }
        msg.push(u8::try_from(n).unwrap_or(0));
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&msg);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", USER_AGENT)
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = body.trailers().cloned().unwrap_or_default();
    let field = |k: &str| {
        trailers
            .get(k)
            .or_else(|| headers.get(k))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = field("grpc-status").unwrap_or_else(|| "2".into());
    if code != "0" {
        return Ok(Outcome::Failure(format!(
            "rpc error: code = {} desc = {}",
            grpc_code(&code),
            field("grpc-message").unwrap_or_default()
        )));
    }
    // HealthCheckResponse { ServingStatus status = 1; }
    let data = body.to_bytes();
    let mut status = 0u64;
    if data.len() > 5 {
        let mut i = 5;
        while i < data.len() {
            let tag = data[i];
            i += 1;
            let mut v = 0u64;
            let mut shift = 0;
            while i < data.len() {
                let b = data[i];
                i += 1;
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if tag == 0x08 {
                status = v;
            }
        }
    }
    let name = match status {
        1 => return Ok(Outcome::Success(String::new())),
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    };
    Ok(Outcome::Failure(format!(
        "service unhealthy (responded with \"{name}\")"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn target() -> Target<FakeRuntime> {
        Target {
            runtime: std::sync::Arc::new(FakeRuntime::default()),
            sandbox: "s".into(),
            container_id: "c".into(),
            netns: None,
            pod_ip: "127.0.0.1".into(),
            ports: vec![serde_json::from_value(
                serde_json::json!({"name": "grpc", "containerPort": 1}),
            )
            .unwrap()],
            owner: crate::metrics::ProbeOwner::default(),
        }
    }

    /// A gRPC health server: service "good" is SERVING, "bad" NOT_SERVING,
    /// anything else NOT_FOUND.
    async fn health_server() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            assert_eq!(req.headers()["user-agent"], USER_AGENT);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let service =
                                String::from_utf8_lossy(body.get(7..).unwrap_or_default())
                                    .into_owned();
                            let mut trailers = hyper::HeaderMap::new();
                            let data = match service.as_str() {
                                "good" => vec![0, 0, 0, 0, 2, 0x08, 1],
                                "bad" => vec![0, 0, 0, 0, 2, 0x08, 2],
                                _ => Vec::new(),
                            };
                            let code = if data.is_empty() { "5" } else { "0" };
                            trailers.insert("grpc-status", code.parse().unwrap());
                            if data.is_empty() {
                                trailers.insert("grpc-message", "unknown service".parse().unwrap());
                            }
                            let frames = vec![
                                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(data))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(StreamBody::new(futures_util::stream::iter(frames)))
                                    .unwrap(),
                            )
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        port
    }

    fn grpc_action(port: u16, service: &str) -> k8s_openapi::api::core::v1::GRPCAction {
        serde_json::from_value(serde_json::json!({"port": port, "service": service})).unwrap()
    }

    #[tokio::test]
    async fn grpc_health_checks_report_like_kubelet() {
        let port = health_server().await;
        let t = target();
        let d = Duration::from_secs(2);
        assert!(grpc(&t, &grpc_action(port, "good"), d).await.ok());
        assert_eq!(
            grpc(&t, &grpc_action(port, "bad"), d).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            grpc(&t, &grpc_action(port, "nope"), d).await,
            Outcome::Failure("rpc error: code = NotFound desc = unknown service".into())
        );
        // Nothing listening.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let o = grpc(&t, &grpc_action(free, ""), d).await;
        assert!(
            o.message()
                .starts_with("timeout: failed to connect service \"127.0.0.1:"),
            "{o:?}"
        );
        assert!(
            o.message().ends_with("connect: connection refused"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn tcp_and_http_failures_read_like_kubelets() {
        let t = target();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = i32::from(l.local_addr().unwrap().port());
        assert!(
            tcp(&t, None, &IntOrString::Int(port), Duration::from_secs(1))
                .await
                .ok()
        );
        drop(l);
        let o = tcp(&t, None, &IntOrString::Int(port), Duration::from_secs(1)).await;
        assert_eq!(
            o,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        let o = tcp(
            &t,
            None,
            &IntOrString::String("nope".into()),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(o, Outcome::Failure("couldn't find port: nope".into()));
    }

    /// Sockets of this network namespace in TIME_WAIT with local port
    /// `port` (`/proc/net/tcp`, state 06).
    fn time_waits(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let local = format!(":{port:04X}");
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&local) && f[3] == "06"
            })
            .count()
    }

    /// A server that answers and closes (the body ends with the close)
    /// gets a reset once the probe has read it all: the server's socket is
    /// gone at once instead of waiting in TIME_WAIT. A server still open
    /// gets the ordinary close.
    #[tokio::test]
    async fn a_probe_resets_a_connection_the_server_closed_and_closes_others() {
        use std::io::{Read, Write};
        for server_closes in [true, false] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).unwrap();
                if server_closes {
                    s.write_all(b"HTTP/1.1 200 OK\r\n\r\nok").unwrap();
                    return None;
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
                // Open until the probe is over; then how did it close?
                let mut rest = Vec::new();
                Some(s.read_to_end(&mut rest).map(|_| rest.len()))
            });
            let out = http(&target(), &get(port, "/", "HTTP"), Duration::from_secs(2)).await;
            assert_eq!(out, Outcome::Success("ok".into()));
            let closed = server.join().unwrap();
            if server_closes {
                std::thread::sleep(Duration::from_millis(50));
                assert_eq!(
                    time_waits(port),
                    0,
                    "the server's socket waits in TIME_WAIT"
                );
            } else {
                assert_eq!(closed.unwrap().unwrap(), 0, "a FIN, not a reset");
            }
        }
    }

    /// A plain HTTP server on loopback answering by path; returns its port.
    fn http_server() -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&req).into_owned();
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, headers, body): (&str, String, String) = match path.as_str() {
                        "/ok" => ("200 OK", String::new(), "fine".into()),
                        "/echo" => ("200 OK", String::new(), req.to_lowercase()),
                        "/500" => ("500 Internal Server Error", String::new(), "boom".into()),
                        "/same" => ("302 Found", "Location: /ok\r\n".into(), String::new()),
                        "/other" => (
                            "302 Found",
                            "Location: http://192.0.2.1/x\r\n".into(),
                            "moved".into(),
                        ),
                        "/huge" => ("200 OK", String::new(), "x".repeat(1 << 20)),
                        "/slow" => {
                            std::thread::sleep(Duration::from_secs(3));
                            ("200 OK", String::new(), "late".into())
                        }
                        _ => ("404 Not Found", String::new(), String::new()),
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        port
    }

    fn get(port: u16, path: &str, scheme: &str) -> HTTPGetAction {
        serde_json::from_value(serde_json::json!({
            "port": port, "path": path, "scheme": scheme,
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}],
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn http_probes_follow_kubelets_rules() {
        let t = target();
        let port = http_server();
        let run = |path: &'static str| {
            let t = &t;
            async move { http(t, &get(port, path, "HTTP"), Duration::from_secs(1)).await }
        };
        assert_eq!(run("/ok").await, Outcome::Success("fine".into()));
        let echo = run("/echo").await;
        assert!(
            echo.ok()
                && echo.message().contains("user-agent: kube-probe/")
                && echo.message().contains("x-probe: yes"),
            "{echo:?}"
        );
        assert_eq!(
            run("/500").await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(run("/same").await, Outcome::Success("fine".into()));
        assert_eq!(
            run("/other").await,
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        let huge = run("/huge").await;
        assert!(
            huge.ok() && huge.message().len() <= 10 * 1024,
            "{}",
            huge.message().len()
        );
        assert_eq!(
            run("/slow").await,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
    }

    #[tokio::test]
    async fn a_request_goes_out_with_the_handshake_or_waits_for_it() {
        use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn};
        use std::os::fd::AsRawFd;
        // Loopback: the handshake completes within connect(2) and the
        // request goes out whole at once.
        let port = http_server();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let req = b"GET /ok HTTP/1.1\r\n\r\n";
        let (_s, sent) = connect_sending(None, addr, Duration::from_secs(1), req)
            .await
            .unwrap();
        assert_eq!(sent, req.len());
        // A listener whose accept queue is full drops the SYN: nothing is
        // sent, and the wait for the handshake ends with a dial error.
        let l = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(l.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        socket::listen(&l, Backlog::new(0).unwrap()).unwrap();
        let full: SockaddrIn = socket::getsockname(l.as_raw_fd()).unwrap();
        let full = SocketAddr::from(std::net::SocketAddrV4::from(full));
        let mut queued = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&full, Duration::from_millis(200)) {
            queued.push(s);
            assert!(queued.len() < 16, "the accept queue never filled");
        }
        let e = connect_sending(None, full, Duration::from_millis(200), req)
            .await
            .map(|(_, sent)| sent)
            .unwrap_err();
        assert_eq!(e, format!("dial tcp {full}: i/o timeout"));
        // So does a tcpSocket probe, in Go's words for a dial timeout.
        let o = tcp(
            &target(),
            None,
            &IntOrString::Int(i32::from(full.port())),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(o, Outcome::Failure(format!("dial tcp {full}: i/o timeout")));
        // Refused: the send reports it, worded as the connect error.
        drop((queued, l));
        let e = connect_sending(None, full, Duration::from_secs(1), req)
            .await
            .map(|(_, sent)| sent)
            .unwrap_err();
        assert_eq!(e, format!("dial tcp {full}: connect: connection refused"));
    }

    #[tokio::test]
    async fn https_probes_accept_any_certificate() {
        let port = tls_server().await;
        let t = target();
        let o = http(&t, &get(port, "/", "HTTPS"), Duration::from_secs(2)).await;
        assert_eq!(o, Outcome::Success("secure".into()));
        // Plain HTTP against it is no success.
        let o = http(&t, &get(port, "/", "HTTP"), Duration::from_secs(2)).await;
        assert!(!o.ok(), "{o:?}");
        // TLS against a plain server gets no answer to its hello.
        let plain = http_server();
        let o = http(&t, &get(plain, "/ok", "HTTPS"), Duration::from_secs(1)).await;
        let want = format!("Get \"https://127.0.0.1:{plain}/ok\": ");
        assert!(!o.ok() && o.message().starts_with(&want), "{o:?}");
    }

    /// A server that answers every request `500` (and a TLS hello, as a
    /// plain HTTP server does, with `400`); the requests it read, lower
    /// case.
    fn recording_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.first() != Some(&0x16) {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.first() == Some(&0x16) {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
                    continue;
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req).to_lowercase());
                let _ = s.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
                );
            }
        });
        (port, seen)
    }

    /// `k8s:pkg/kubelet/lifecycle/handlers.go runHTTPHandler`: only a
    /// request that fails fails a hook; the hook names itself
    /// `kube-lifecycle`; an HTTPS hook whose server speaks plain HTTP is
    /// asked again over HTTP without `Authorization`.
    #[tokio::test]
    async fn lifecycle_hooks_judge_the_request_not_the_answer() {
        let t = target();
        let (port, seen) = recording_server();
        let second = Duration::from_secs(2);
        let hook = |scheme: &str| {
            serde_json::from_value::<HTTPGetAction>(serde_json::json!({
                "port": port, "path": "/hook?msg=poststart", "scheme": scheme,
                "httpHeaders": [{"name": "Authorization", "value": "Bearer x"},
                                {"name": "X-Hook", "value": "1"}],
            }))
            .unwrap()
        };
        // A 500 answer: the hook ran.
        assert_eq!(
            http_hook(&t, &hook("HTTP"), second).await,
            HookHttp::Answered
        );
        let req = seen.lock().unwrap().pop().unwrap();
        assert!(
            req.starts_with(&format!(
                "get /hook?msg=poststart http/1.1\r\nhost: 127.0.0.1:{port}\r\nuser-agent: kube-lifecycle/1.34\r\naccept: */*\r\n"
            )) && req.contains("authorization: bearer x")
                && req.contains("x-hook: 1"),
            "{req}"
        );
        // The same answer fails a probe.
        let probe = http(&t, &hook("HTTP"), second).await;
        assert_eq!(
            probe,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // HTTPS to the plain server: a probe fails in Go's words, a hook
        // falls back to HTTP and drops its credentials.
        seen.lock().unwrap().clear();
        let probe = http(&t, &hook("HTTPS"), second).await;
        assert_eq!(
            probe,
            Outcome::Failure(format!(
                "Get \"https://127.0.0.1:{port}/hook?msg=poststart\": http: server gave HTTP response to HTTPS client"
            ))
        );
        assert_eq!(
            http_hook(&t, &hook("HTTPS"), second).await,
            HookHttp::FellBack {
                authority: format!("127.0.0.1:{port}")
            }
        );
        let reqs = seen.lock().unwrap().clone();
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert!(
            !reqs[0].contains("authorization") && reqs[0].contains("x-hook: 1"),
            "{reqs:?}"
        );
        // A real TLS server answers the first request: no fallback.
        let tls = tls_server().await;
        let g =
            serde_json::from_value(serde_json::json!({"port": tls, "scheme": "HTTPS"})).unwrap();
        assert_eq!(http_hook(&t, &g, second).await, HookHttp::Answered);
        // No server: the request's error, in Go's words.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let g = serde_json::from_value(serde_json::json!({"port": dead, "path": "/x"})).unwrap();
        assert_eq!(
            http_hook(&t, &g, second).await,
            HookHttp::Failed(format!(
                "Get \"http://127.0.0.1:{dead}/x\": dial tcp 127.0.0.1:{dead}: connect: connection refused"
            ))
        );
        // HTTPS with nothing listening: no fallback either.
        let g =
            serde_json::from_value(serde_json::json!({"port": dead, "scheme": "HTTPS"})).unwrap();
        assert!(matches!(
            http_hook(&t, &g, second).await,
            HookHttp::Failed(_)
        ));
    }
}
