//! The one HTTP/1.1 exchange an `httpGet` probe or hook makes, as kubelet's
//! Go client does it with keep-alives off (`k8s:pkg/probe/http/http.go`,
//! `DisableKeepAlives: true`): a GET with `Connection: close` on a fresh
//! connection, the status line and `Location` read, and at most `max`
//! bytes of the body (Content-Length, chunked, or up to the close).
//!
//! Written for this one job instead of a general client: a probe every
//! second in every pod is the daemon's hottest path, and it needs neither
//! connection reuse nor a task per connection.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let (head, mut resp) = loop {
        match parse_head(&buf)? {
            // 1xx before the real answer: skipped, as Go's client does.
            Some((n, r)) if (100..200).contains(&r.code) && r.code != 101 => {
                buf.drain(..n);
            }
            Some(done) => break done,
            None if buf.len() > MAX_HEAD => {
                return Err(format!(
                    "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
                ))
            }
            None => {
                if fill(stream, &mut buf).await? == 0 {
                    return Err(if buf.is_empty() {
                        "EOF".into()
                    } else {
                        "unexpected EOF".into()
                    });
                }
            }
        }
    };
    buf.drain(..head);
    if matches!(resp.code, 204 | 304) {
        return Ok(resp.into_response());
    }
    let body = match resp.framing {
        Framing::Chunked => read_chunked(stream, buf, max).await?,
        Framing::Length(len) => read_to(stream, buf, max.min(len), false).await?,
        Framing::Close => read_to(stream, buf, max, true).await?,
    };
    resp.body = body;
    Ok(resp.into_response())
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

struct Head {
    code: u16,
    location: Option<String>,
    framing: Framing,
    body: Vec<u8>,
}

impl Head {
    fn into_response(self) -> Response {
        Response {
            code: self.code,
            location: self.location,
            body: self.body,
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

/// Appends what the stream has next; 0 at its end.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// `want` bytes (fewer when `until_close` and the stream ends first).
async fn read_to<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    want: usize,
    until_close: bool,
) -> Result<Vec<u8>, String> {
    while buf.len() < want {
        if fill(stream, &mut buf).await? == 0 {
            if until_close {
                break;
            }
            return Err("unexpected EOF".into());
        }
    }
    buf.truncate(want);
    Ok(buf)
}

/// Decodes a chunked body until its last chunk or `max` bytes.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > 4096 {
                return Err("malformed chunked encoding".into());
            }
            if fill(stream, &mut buf).await? == 0 {
                return Err("unexpected EOF".into());
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| "malformed chunked encoding".to_string())?;
        buf.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        let room = max - body.len();
        let take = size.min(room);
        // The chunk's data (as much as is kept) and, if it all fits,
        // its closing CRLF.
        let need = if take < size { take } else { size + 2 };
        while buf.len() < need {
            if fill(stream, &mut buf).await? == 0 {
                return Err("unexpected EOF".into());
            }
        }
        body.extend_from_slice(&buf[..take]);
        if take < size || body.len() >= max {
            return Ok(body);
        }
        buf.drain(..size + 2);
    }
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
