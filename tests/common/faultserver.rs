//! A deliberately broken registry for fault tests the real one will not
//! produce: 500s, truncated bodies, oversized or schema-1 manifests.
//! Plain HTTP/1.1, one request per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

#[derive(Clone)]
pub enum Reply {
    Ok {
        content_type: String,
        body: Vec<u8>,
    },
    Status(u16),
    /// Announces the full length, sends `send` bytes, closes.
    Truncated {
        body: Vec<u8>,
        send: usize,
    },
}

pub struct FaultServer {
    pub addr: String,
}

impl FaultServer {
    /// Serves `routes` (by path, e.g. `/v2/x/manifests/1`) until the process exits.
    pub fn start(routes: HashMap<String, Reply>) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let routes = routes.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                            break;
                        }
                    }
                    let reply = if path == "/v2/" {
                        Reply::Ok {
                            content_type: "application/json".into(),
                            body: b"{}".to_vec(),
                        }
                    } else {
                        routes.get(&path).cloned().unwrap_or(Reply::Status(404))
                    };
                    let _ = match reply {
                        Reply::Ok { content_type, body } => {
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            stream
                                .write_all(head.as_bytes())
                                .and_then(|()| stream.write_all(&body))
                        }
                        Reply::Status(code) => {
                            let head = format!("HTTP/1.1 {code} Oops\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!");
                            stream.write_all(head.as_bytes())
                        }
                        Reply::Truncated { body, send } => {
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            stream
                                .write_all(head.as_bytes())
                                .and_then(|()| stream.write_all(&body[..send]))
                        }
                    };
                });
            }
        });
        FaultServer { addr }
    }
}
