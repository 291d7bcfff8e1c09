//! The one HTTP/1.1 exchange an `httpGet` probe or hook makes, as kubelet's
//! Go client does it with keep-alives off (`k8s:pkg/probe/http/http.go`,
//! `DisableKeepAlives: true`): a GET with `Connection: close` on a fresh
//! connection, the status line and `Location` read, and at most `max`
//! bytes of the body (Content-Length, chunked, or up to the close).
//!
//! Written for this one job instead of a general client: a probe every
//! second in every pod is the daemon's hottest path, and it needs neither
//! connection reuse nor a task per connection. The reading ([`Reader`])
//! and the attempt's rules ([`Get`]: redirects, kubelet's verdict and
//! messages) do no I/O: the daemon drives them over async sockets, a
//! shim (running a probe on its grid) from its event loop.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::action::Outcome;

/// kubelet reads at most this much of a probe's HTTP body.
pub const MAX_BODY: usize = 10 * 1024;
/// `kube-probe/<major>.<minor>`: the Kubernetes version whose behaviour
/// nodelet follows.
pub const USER_AGENT: &str = "kube-probe/1.34";
/// A lifecycle hook's agent (`k8s:pkg/probe/http/request.go`: the
/// `lifecycle` fragment of `NewRequestForHTTPGetAction`).
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.34";
/// Go's words when a server answers a TLS hello in plain HTTP (its
/// transport sees `HTTP/` where a TLS record header should be).
pub const HTTP_TO_HTTPS: &str = "http: server gave HTTP response to HTTPS client";
/// Redirects followed at most (Go's client stops after 10).
const MAX_REDIRECTS: u32 = 10;

/// One `httpGet` attempt: the request of each hop, and what each answer
/// means under kubelet's rules (`k8s:pkg/probe/http/http.go`): 200–399
/// is success, and of those a 3xx that was not followed a success with a
/// warning; a redirect (301, 302, 303, 307, 308 with a `Location`) is
/// followed when it stays on the first URL's host name — any port or
/// scheme (`RedirectChecker`: `req.URL.Hostname() != via[0].URL.Hostname()`
/// ends it) — and at most ten requests are made (Go's `len(via) >= 10`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Get {
    pub https: bool,
    /// Where this hop connects.
    pub addr: SocketAddr,
    /// The URL's host and port as written (the `Host` header).
    pub authority: String,
    /// The path (and query) asked for now.
    pub path: String,
    /// `httpHeaders`, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The URL first asked for: its host name bounds the redirects, and a
    /// timeout names it.
    pub first_url: String,
    #[serde(default)]
    pub redirects: u32,
    /// A probe's or a hook's request.
    #[serde(default)]
    pub purpose: Purpose,
}

/// Who makes the request: it decides the `User-Agent` and how an answer
/// is judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    /// A probe: 200–399 succeeds (`k8s:pkg/probe/http/http.go`).
    #[default]
    Probe,
    /// A lifecycle hook: any answer succeeds, only a request that fails
    /// fails it (`k8s:pkg/kubelet/lifecycle/handlers.go runHTTPHandler`
    /// judges the client's error, never the status).
    Lifecycle,
}

/// What a shim's attempt came to: its outcome, or the attempt for the
/// daemon to finish (redirected to HTTPS, which only the daemon speaks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    Done(Outcome),
    Unfinished(Get),
}

/// What an answer leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Done(Outcome),
    /// Redirected on the same host: ask for [`Get::request`] anew (the
    /// scheme or port may have changed).
    Again,
}

impl Get {
    /// `path` as the probe gives it: empty is `/`, a leading `/` added.
    pub fn new(https: bool, addr: SocketAddr, path: &str, headers: Vec<(String, String)>) -> Get {
        let mut path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let mut get = Get {
            https,
            addr,
            authority: addr.to_string(),
            path: request_target(&path),
            headers,
            first_url: String::new(),
            redirects: 0,
            purpose: Purpose::Probe,
        };
        get.first_url = get.url();
        get
    }

    /// This attempt made for a lifecycle hook.
    pub fn for_lifecycle(mut self) -> Get {
        self.purpose = Purpose::Lifecycle;
        self
    }

    /// An HTTPS attempt (not yet made) asked again in plain HTTP, without
    /// its `Authorization` header: the kubelet's retry of a hook whose
    /// server answered in HTTP (`handlers.go`: `req.URL.Scheme = "http"`,
    /// `req.Header.Del("Authorization")`).
    pub fn in_plain_http(&self) -> Get {
        let mut plain = self.clone();
        plain.https = false;
        plain
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
        plain.first_url = plain.url();
        plain
    }

    fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The URL asked for now.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority, self.path)
    }

    /// This hop's request; `Err` (Go's words) if a header value holds a
    /// control character, which Go's client refuses to send.
    pub fn request(&self) -> Result<Vec<u8>, String> {
        let ctl = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        if let Some((n, _)) = self.headers.iter().find(|(_, v)| v.bytes().any(ctl)) {
            return Err(format!("net/http: invalid header field value for {n:?}"));
        }
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let agent = match self.purpose {
            Purpose::Probe => USER_AGENT,
            Purpose::Lifecycle => HOOK_USER_AGENT,
        };
        Ok(request(&self.path, &self.authority, agent, &headers))
    }

    /// What this hop's answer (or why there was none, in Go's words)
    /// means.
    pub fn answered(&mut self, answer: Result<Response, String>) -> Step {
        let resp = match answer {
            Ok(r) => r,
            Err(e) => return Step::Done(Outcome::Failure(format!("Get \"{}\": {e}", self.url()))),
        };
        let code = resp.code;
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        let location = resp.location.filter(|l| !l.is_empty());
        if let (301 | 302 | 303 | 307 | 308, Some(loc)) = (code, location) {
            match self.follow(&loc) {
                Ok(true) => return Step::Again,
                Ok(false) => {}
                Err(e) => return Step::Done(Outcome::Failure(e)),
            }
        }
        Step::Done(match code {
            _ if self.purpose == Purpose::Lifecycle => Outcome::Success(body),
            200..=299 => Outcome::Success(body),
            // Not followed: kubelet's probe.Warning, a success.
            300..=399 => {
                Outcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
            }
            _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        })
    }

    /// Moves to `location` if kubelet's client would: true if so, false
    /// if the redirect ends the attempt (another host), `Err` with Go's
    /// words if it fails it.
    fn follow(&mut self, location: &str) -> Result<bool, String> {
        let target = resolve(self.https, &self.authority, &self.path, location);
        let Some(target) = target else {
            return Err(format!(
                "Get \"{}\": failed to parse Location header {location:?}: parse {location:?}: net/url: invalid control character in URL",
                self.url()
            ));
        };
        let first_host = host_name(authority_of(&self.first_url));
        if !host_name(&target.authority).eq_ignore_ascii_case(first_host) {
            return Ok(false);
        }
        let url = format!("{}://{}{}", target.scheme, target.authority, target.path);
        if self.redirects + 1 >= MAX_REDIRECTS {
            return Err(format!(
                "Get \"{url}\": stopped after {MAX_REDIRECTS} redirects"
            ));
        }
        let https = match target.scheme.as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "Get \"{url}\": unsupported protocol scheme {other:?}"
                ))
            }
        };
        let port = match port_of(&target.authority) {
            Some(p) => p.parse::<u16>().map_err(|_| {
                format!(
                    "Get \"{url}\": dial tcp: address {}: invalid port",
                    target.authority
                )
            })?,
            None if https => 443,
            None => 80,
        };
        self.redirects += 1;
        self.https = https;
        // Same host name as the first URL, an IP address: the same address.
        self.addr = SocketAddr::new(self.addr.ip(), port);
        self.authority = target.authority;
        self.path = request_target(&target.path);
        Ok(true)
    }

    /// The attempt ran out of time.
    pub fn timed_out(&self) -> Outcome {
        Outcome::Failure(format!(
            "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            self.first_url
        ))
    }
}

/// A path as Go's client puts it on the request line (`URL.RequestURI`
/// of kubelet's `url.Parse(path)`): the path percent-encoded where it holds
/// what a path may not (spaces, quotes, non-ASCII; valid escapes kept),
/// the query as written, no fragment. With a control character anywhere
/// Go cannot parse it and takes it all as the path: all of it encoded.
fn request_target(raw: &str) -> String {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return escape_path(raw, false);
    }
    let raw = raw.split('#').next().unwrap_or_default();
    match raw.split_once('?') {
        Some((p, q)) => format!("{}?{q}", escape_path(p, true)),
        None => escape_path(raw, true),
    }
}

fn escape_path(p: &str, keep_escapes: bool) -> String {
    let b = p.as_bytes();
    let mut out = String::with_capacity(p.len());
    for (i, &c) in b.iter().enumerate() {
        let kept = c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&c);
        let escape = c == b'%'
            && keep_escapes
            && b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if kept || escape {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// A redirect's target.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    scheme: String,
    authority: String,
    /// Path and query, no fragment.
    path: String,
}

/// `location` resolved against the URL asked for (RFC 3986 §5.2, as Go's
/// `URL.ResolveReference`); `None` if Go cannot parse it (a control
/// character).
fn resolve(https: bool, authority: &str, path: &str, location: &str) -> Option<Target> {
    if location.chars().any(|c| c.is_ascii_control()) {
        return None;
    }
    let location = location.split('#').next().unwrap_or_default();
    let base_scheme = if https { "https" } else { "http" };
    let scheme_end = location.find(':').filter(|&i| {
        i > 0
            && location[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && location[..i].starts_with(|c: char| c.is_ascii_alphabetic())
    });
    let (scheme, rest) = match scheme_end {
        Some(i) => (location[..i].to_ascii_lowercase(), &location[i + 1..]),
        None => (base_scheme.to_string(), location),
    };
    if let Some(net) = rest.strip_prefix("//") {
        let end = net.find(['/', '?']).unwrap_or(net.len());
        let (auth, p) = net.split_at(end);
        // Credentials in a URL are not a host: Go sends them as a header,
        // which a probe has no use for.
        let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
        let p = if p.is_empty() || p.starts_with('?') {
            format!("/{p}")
        } else {
            p.to_string()
        };
        return Some(Target {
            scheme,
            authority: auth.to_string(),
            path: remove_dot_segments(&p),
        });
    }
    if scheme_end.is_some() {
        // `scheme:opaque`: no host, so not this one.
        return Some(Target {
            scheme,
            authority: String::new(),
            path: rest.to_string(),
        });
    }
    let (base_path, base_query) = path.split_once('?').unwrap_or((path, ""));
    let path = if rest.is_empty() {
        if base_query.is_empty() {
            base_path.to_string()
        } else {
            format!("{base_path}?{base_query}")
        }
    } else if rest.starts_with('?') {
        format!("{base_path}{rest}")
    } else if rest.starts_with('/') {
        remove_dot_segments(rest)
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        remove_dot_segments(&format!("{dir}{rest}"))
    };
    Some(Target {
        scheme,
        authority: authority.to_string(),
        path,
    })
}

/// RFC 3986 §5.2.4 on a path (its query left alone).
fn remove_dot_segments(p: &str) -> String {
    let (path, query) = match p.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (p, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut r = format!("/{}", out.join("/"));
    if let Some(q) = query {
        r.push('?');
        r.push_str(q);
    }
    r
}

/// `host:port` of `scheme://host:port/path`.
fn authority_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    &rest[..rest.find(['/', '?']).unwrap_or(rest.len())]
}

/// The host name of an authority (Go's `URL.Hostname`: no port, no
/// brackets).
fn host_name(authority: &str) -> &str {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = a.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    a.split(':').next().unwrap_or_default()
}

/// The port of an authority, if it names one.
fn port_of(authority: &str) -> Option<&str> {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match a.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, r)| r),
        None => a.find(':').map_or("", |i| &a[i..]),
    };
    after_host.strip_prefix(':').filter(|p| !p.is_empty())
}

/// Go's words for a connection that could not be made.
pub fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
    format!("dial tcp {addr}: connect: {}", strip_os(e))
}

/// Go's words for a connection not made in time (`net.DialTimeout`).
pub fn dial_timeout(addr: SocketAddr) -> String {
    format!("dial tcp {addr}: i/o timeout")
}

/// `connection refused` rather than `Connection refused (os error 111)`.
fn strip_os(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or_default().to_string();
    let mut c = s.chars();
    c.next().map_or(s.clone(), |f| {
        f.to_lowercase().collect::<String>() + c.as_str()
    })
}

/// Makes the close of `fd` (a TCP connection whose answer was read)
/// abortive when the server has closed its side already: the server's
/// socket then ends at once instead of in TIME_WAIT, and no FIN and ACK
/// cross. Nothing can be lost: the server sent all it will. kubelet's
/// probe dialer sets SO_LINGER for the same end (`k8s:pkg/probe/
/// dialer_others.go`, 1 s, which on Linux still closes with a FIN).
pub fn reset_if_closed(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::sys::socket::{self, sockopt, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let peer_closed = matches!(
        socket::recv(
            fd.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Ok(0)
    );
    if peer_closed {
        let abort = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = socket::setsockopt(&fd, sockopt::Linger, &abort);
    }
}

/// What the probe looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// Bytes of status line and headers accepted (Go's default is 1 MB).
const MAX_HEAD: usize = 1 << 20;

/// The request: `host` is the `Host` header unless `headers` sets one;
/// `User-Agent` and `Accept` likewise default to kubelet's.
pub fn request(path: &str, host: &str, user_agent: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut r = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        r.push_str(&format!("Host: {host}\r\n"));
    }
    if !has("user-agent") {
        r.push_str(&format!("User-Agent: {user_agent}\r\n"));
    }
    if !has("accept") {
        r.push_str("Accept: */*\r\n");
    }
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

/// Sends `request` and reads the response. `Err` carries Go's wording
/// where kubelet's message would show it.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    max: usize,
) -> Result<Response, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut reader = Reader::new(max);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return reader.end();
        }
        if let Some(r) = reader.push(&chunk[..n])? {
            return Ok(r);
        }
    }
}

/// Reads a response from the bytes as they come, whoever reads them (the
/// daemon's async exchange, the shim's event loop).
#[derive(Debug)]
pub struct Reader {
    buf: Vec<u8>,
    max: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Head),
    Done,
}

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

#[derive(Debug)]
struct Head {
    code: u16,
    location: Option<String>,
    framing: Framing,
    /// What was decoded of a chunked body.
    body: Vec<u8>,
}

impl Head {
    fn into_response(self, body: Vec<u8>) -> Response {
        Response {
            code: self.code,
            location: self.location,
            body,
        }
    }
}

impl Reader {
    /// Keeps at most `max` bytes of the body.
    pub fn new(max: usize) -> Reader {
        Reader {
            buf: Vec::new(),
            max,
            state: State::Head,
        }
    }

    /// Takes the next bytes of the stream; the response once it is read
    /// (the rest of the stream is of no interest).
    pub fn push(&mut self, data: &[u8]) -> Result<Option<Response>, String> {
        self.buf.extend_from_slice(data);
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Err("response already read".into()),
                State::Head => match parse_head(&self.buf)? {
                    // 1xx before the real answer: skipped, as Go's client does.
                    Some((n, h)) if (100..200).contains(&h.code) && h.code != 101 => {
                        self.buf.drain(..n);
                        self.state = State::Head;
                    }
                    Some((n, h)) => {
                        self.buf.drain(..n);
                        if matches!(h.code, 204 | 304) {
                            return Ok(Some(h.into_response(Vec::new())));
                        }
                        self.state = State::Body(h);
                    }
                    None if self.buf.len() > MAX_HEAD => {
                        return Err(format!(
                            "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
                        ))
                    }
                    None => {
                        self.state = State::Head;
                        return Ok(None);
                    }
                },
                State::Body(mut h) => {
                    let done = match h.framing {
                        Framing::Length(len) => self.buf.len() >= self.max.min(len),
                        Framing::Close => self.buf.len() >= self.max,
                        Framing::Chunked => self.chunks(&mut h.body)?,
                    };
                    if !done {
                        self.state = State::Body(h);
                        return Ok(None);
                    }
                    let body = self.body(&mut h);
                    return Ok(Some(h.into_response(body)));
                }
            }
        }
    }

    /// The stream ended: the response if it was complete (a body read up
    /// to the close), else Go's error.
    pub fn end(&mut self) -> Result<Response, String> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Head if self.buf.is_empty() => Err("EOF".into()),
            State::Body(mut h) if matches!(h.framing, Framing::Close) => {
                let body = self.body(&mut h);
                Ok(h.into_response(body))
            }
            _ => Err("unexpected EOF".into()),
        }
    }

    /// The body kept, at most `max` bytes.
    fn body(&mut self, h: &mut Head) -> Vec<u8> {
        let mut body = match h.framing {
            Framing::Chunked => std::mem::take(&mut h.body),
            _ => std::mem::take(&mut self.buf),
        };
        let len = match h.framing {
            Framing::Length(len) => len,
            _ => usize::MAX,
        };
        body.truncate(self.max.min(len));
        body
    }

    /// Decodes the whole chunks in the buffer into `body`; true at the
    /// last chunk or once `max` bytes are kept.
    fn chunks(&mut self, body: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if self.buf.len() > 4096 {
                    return Err("malformed chunked encoding".into());
                }
                return Ok(false);
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| "malformed chunked encoding".to_string())?;
            if size == 0 {
                return Ok(true);
            }
            let data = line_end + 2;
            let take = size.min(self.max - body.len());
            // The chunk's data (as much as is kept) and, if it all fits,
            // its closing CRLF; the size line stays until then.
            let need = if take < size { take } else { size + 2 };
            if self.buf.len() < data + need {
                return Ok(false);
            }
            body.extend_from_slice(&self.buf[data..data + take]);
            if take < size || body.len() >= self.max {
                return Ok(true);
            }
            self.buf.drain(..data + size + 2);
        }
    }
}

/// The head's length and what it says, once it is all in `buf`.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
            return Err(format!(
                "net/http: HTTP/1.x transport connection broken: malformed HTTP response {:?} ({e})",
                String::from_utf8_lossy(line).trim_end()
            ));
        }
    };
    let value = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let chunked = value("transfer-encoding").is_some_and(|te| {
        te.to_ascii_lowercase()
            .split(',')
            .any(|t| t.trim() == "chunked")
    });
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(len) = value("content-length") {
        Framing::Length(
            len.parse()
                .map_err(|_| format!("net/http: bad Content-Length {len:?}"))?,
        )
    } else {
        Framing::Close
    };
    Ok(Some((
        n,
        Head {
            code: r.code.unwrap_or(0),
            location: value("location"),
            framing,
            body: Vec::new(),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(raw: &[u8], max: usize) -> Result<Response, String> {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let raw = raw.to_vec();
        let server = tokio::spawn(async move {
            let mut req = vec![0u8; 1024];
            let n = server.read(&mut req).await.unwrap();
            server.write_all(&raw).await.unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let req = request("/p", "127.0.0.1:80", "kube-probe/1.34", &[]);
        let r = exchange(&mut client, &req, max).await;
        assert!(server.await.unwrap().starts_with("GET /p HTTP/1.1\r\n"));
        r
    }

    #[test]
    fn the_request_has_kubelets_headers_unless_the_probe_sets_them() {
        let r = String::from_utf8(request("/h", "10.0.0.1:8080", "kube-probe/1.34", &[])).unwrap();
        assert_eq!(
            r,
            "GET /h HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: kube-probe/1.34\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = String::from_utf8(request(
            "/h",
            "10.0.0.1:8080",
            "kube-probe/1.34",
            &[
                ("Host", "example.com"),
                ("user-agent", "mine"),
                ("X-A", "b"),
            ],
        ))
        .unwrap();
        assert_eq!(
            r,
            "GET /h HTTP/1.1\r\nAccept: */*\r\nHost: example.com\r\nuser-agent: mine\r\n\
             X-A: b\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bodies_are_read_by_length_chunks_or_close_up_to_the_cap() {
        let r = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            100,
        )
        .await
        .unwrap();
        assert_eq!((r.code, r.body.as_slice()), (200, &b"hello"[..]));
        let r = answer(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            100,
        )
        .await
        .unwrap();
        assert_eq!((r.code, r.body.as_slice()), (500, &b"abcde"[..]));
        let r = answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n",
            4,
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"abcd");
        let r = answer(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 100)
            .await
            .unwrap();
        assert_eq!(r.body, b"until the end");
        let r = answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nxxxxxxxxxx",
            4,
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"xxxx", "capped, no need for the rest");
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_redirects_keep_their_location() {
        let r = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /there\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .await
        .unwrap();
        assert_eq!(r.code, 302);
        assert_eq!(r.location.as_deref(), Some("/there"));
        let r = answer(b"HTTP/1.1 204 No Content\r\n\r\n", 100)
            .await
            .unwrap();
        assert_eq!((r.code, r.body.len()), (204, 0));
    }

    /// Every response of the other tests, read a byte at a time, reads
    /// the same as read whole: a reader fed from an event loop sees the
    /// stream in pieces of any size.
    #[test]
    fn a_response_read_in_pieces_reads_as_one_read_whole() {
        let cases: [(&[u8], usize); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", 100),
            (
                b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                100,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n",
                4,
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 100),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /there\r\nContent-Length: 0\r\n\r\n",
                100,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100),
        ];
        let read = |raw: &[u8], max: usize, piece: usize| -> Result<Response, String> {
            let mut r = Reader::new(max);
            for chunk in raw.chunks(piece) {
                if let Some(resp) = r.push(chunk)? {
                    return Ok(resp);
                }
            }
            r.end()
        };
        for (raw, max) in cases {
            let whole = read(raw, max, raw.len());
            assert_eq!(read(raw, max, 1), whole, "{}", String::from_utf8_lossy(raw));
            assert_eq!(read(raw, max, 7), whole, "{}", String::from_utf8_lossy(raw));
        }
        // The close-delimited body ends with the stream; the short one fails.
        assert_eq!(read(cases[3].0, 100, 1).unwrap().body, b"until the end");
        assert_eq!(read(cases[5].0, 100, 1).unwrap_err(), "unexpected EOF");
        // A body that reaches the cap needs no more of the stream.
        let mut r = Reader::new(4);
        let resp = r.push(b"HTTP/1.1 200 OK\r\n\r\nxxxxxxxx").unwrap().unwrap();
        assert_eq!(resp.body, b"xxxx");
    }

    fn answer_with(code: u16, location: Option<&str>, body: &str) -> Result<Response, String> {
        Ok(Response {
            code,
            location: location.map(str::to_string),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn an_attempt_follows_redirects_on_its_host_name_only_and_not_forever() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut get = Get::new(false, addr, "healthz", Vec::new());
        assert_eq!(get.url(), "http://127.0.0.1:8080/healthz");
        assert_eq!(Get::new(false, addr, "", Vec::new()).path, "/");
        // Absolute paths, same-origin URLs and relative references are
        // followed, resolved as Go resolves them...
        assert_eq!(
            get.answered(answer_with(301, Some("/a/x"), "")),
            Step::Again
        );
        assert_eq!(get.url(), "http://127.0.0.1:8080/a/x");
        assert_eq!(
            get.answered(answer_with(302, Some("b?q=1"), "")),
            Step::Again
        );
        assert_eq!(get.url(), "http://127.0.0.1:8080/a/b?q=1");
        assert_eq!(
            get.answered(answer_with(303, Some("../c#frag"), "")),
            Step::Again
        );
        assert_eq!(get.url(), "http://127.0.0.1:8080/c");
        let same = Some("http://127.0.0.1:8080/d");
        assert_eq!(get.answered(answer_with(307, same, "")), Step::Again);
        assert!(String::from_utf8(get.request().unwrap())
            .unwrap()
            .starts_with("GET /d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        // ...and so are another port and another scheme of the same host
        // name (kubelet compares host names only).
        let other_port = Some("//127.0.0.1:9090/e");
        assert_eq!(get.answered(answer_with(308, other_port, "")), Step::Again);
        assert_eq!(
            (get.addr.port(), get.url().as_str()),
            (9090, "http://127.0.0.1:9090/e")
        );
        let tls = Some("https://127.0.0.1/f");
        assert_eq!(get.answered(answer_with(301, tls, "")), Step::Again);
        assert!(get.https);
        assert_eq!(
            (get.addr.port(), get.url().as_str()),
            (443, "https://127.0.0.1/f")
        );
        assert_eq!(get.redirects, 6);
        // Another host name: not followed, a success with a warning; so is
        // a 3xx that is not a redirect, or has no location.
        let warned =
            |code, loc: Option<&str>| get.clone().answered(answer_with(code, loc, "elsewhere"));
        let warning = Step::Done(Outcome::Warning(
            "Probe terminated redirects, Response body: elsewhere".into(),
        ));
        assert_eq!(warned(302, Some("http://10.1.1.1:8080/")), warning);
        assert_eq!(warned(302, Some("http://localhost:8080/")), warning);
        assert_eq!(warned(304, None), warning);
        assert_eq!(warned(300, Some("/a")), warning);
        assert_eq!(warned(302, Some("")), warning);
        assert_eq!(warned(302, Some("mailto:x@127.0.0.1")), warning);
        assert_eq!(
            get.clone().answered(answer_with(302, Some("/a\nb"), "")),
            Step::Done(Outcome::Failure(
                "Get \"https://127.0.0.1/f\": failed to parse Location header \"/a\\nb\": parse \"/a\\nb\": net/url: invalid control character in URL".into()
            ))
        );
        // 2xx succeed with the body; 4xx, 5xx fail.
        assert_eq!(
            get.clone().answered(answer_with(204, None, "")),
            Step::Done(Outcome::Success(String::new()))
        );
        assert_eq!(
            get.clone().answered(answer_with(404, None, "no")),
            Step::Done(Outcome::Failure(
                "HTTP probe failed with statuscode: 404".into()
            ))
        );
        assert_eq!(
            get.clone()
                .answered(answer_with(302, Some("ftp://127.0.0.1/x"), "")),
            Step::Done(Outcome::Failure(
                "Get \"ftp://127.0.0.1/x\": unsupported protocol scheme \"ftp\"".into()
            ))
        );
        // Errors name the URL asked for now; a timeout the first.
        assert_eq!(
            get.clone().answered(Err("EOF".into())),
            Step::Done(Outcome::Failure("Get \"https://127.0.0.1/f\": EOF".into()))
        );
        assert_eq!(
            get.timed_out().message(),
            "Get \"http://127.0.0.1:8080/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        );
        // Ten requests at most, as Go's client makes: the tenth answer's
        // redirect is refused.
        let mut get = Get::new(false, addr, "/", Vec::new());
        let mut requests = 1;
        let last = loop {
            match get.answered(answer_with(302, Some("/again"), "")) {
                Step::Again => requests += 1,
                Step::Done(o) => break o,
            }
        };
        assert_eq!(requests, 10);
        assert_eq!(
            last,
            Outcome::Failure(
                "Get \"http://127.0.0.1:8080/again\": stopped after 10 redirects".into()
            )
        );
    }

    /// The request line holds what Go's client would put there, never
    /// raw spaces or control characters; a header value with a control
    /// character is refused as Go refuses it.
    #[test]
    fn paths_are_encoded_and_bad_header_values_refused_as_go_does() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let target = |p: &str| Get::new(false, addr, p, Vec::new()).path;
        assert_eq!(target("/a b/\"c\""), "/a%20b/%22c%22");
        assert_eq!(target("/é"), "/%C3%A9");
        assert_eq!(target("/ok/%41%zz"), "/ok/%41%25zz");
        assert_eq!(target("/x;v=1/@:$&'()*+,=!~"), "/x;v=1/@:$&'()*+,=!~");
        assert_eq!(target("/x?q=a b&c=%zz"), "/x?q=a b&c=%zz");
        assert_eq!(target("/x#frag"), "/x");
        // A control character: all of it is the path, all of it encoded.
        assert_eq!(target("/a\r\nX: y?z"), "/a%0D%0AX:%20y%3Fz");
        let get = Get::new(false, addr, "/a b", Vec::new());
        let req = String::from_utf8(get.request().unwrap()).unwrap();
        assert!(req.starts_with("GET /a%20b HTTP/1.1\r\n"), "{req}");
        assert_eq!(get.url(), "http://127.0.0.1:80/a%20b");
        // Redirect targets are encoded the same way.
        let mut get = Get::new(false, addr, "/", Vec::new());
        assert_eq!(
            get.answered(answer_with(302, Some("/b c"), "")),
            Step::Again
        );
        assert_eq!(get.path, "/b%20c");
        let headers = vec![
            ("X-Tab".to_string(), "a\tb".to_string()),
            ("X-Bad".to_string(), "a\r\nInjected: yes".to_string()),
        ];
        let bad = Get::new(false, addr, "/", headers);
        assert_eq!(
            bad.request().unwrap_err(),
            "net/http: invalid header field value for \"X-Bad\""
        );
        let tab = Get::new(false, addr, "/", vec![("X-Tab".into(), "a\tb".into())]);
        assert!(tab.request().is_ok());
    }

    #[tokio::test]
    async fn broken_answers_fail_with_gos_words() {
        let e = answer(b"", 100).await.unwrap_err();
        assert_eq!(e, "EOF");
        let e = answer(b"HTTP/1.1 200 OK\r\nContent-", 100)
            .await
            .unwrap_err();
        assert_eq!(e, "unexpected EOF");
        let e = answer(b"SSH-2.0-OpenSSH\r\n\r\n", 100).await.unwrap_err();
        assert!(e.starts_with("net/http: HTTP/1.x transport connection broken: malformed HTTP response \"SSH-2.0-OpenSSH\""), "{e}");
        let e = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100)
            .await
            .unwrap_err();
        assert_eq!(e, "unexpected EOF");
    }
}
