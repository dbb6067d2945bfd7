//! Both ends of the wire as bytes: an upstream that records every request
//! exactly as it arrived and answers with canned bytes, and a client that
//! writes exact bytes and reads exactly one response back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The head and the body exactly as they came off the socket.
    pub raw: Vec<u8>,
    pub method: String,
    pub target: String,
    /// Header lines in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Received {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

pub type Answer = fn(method: &str, target: &str) -> Vec<u8>;

/// What every test upstream answers unless told otherwise: `ok`.
pub fn answer_ok(method: &str, _target: &str) -> Vec<u8> {
    if method == "HEAD" {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec()
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    }
}

pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Received {
        self.requests()
            .pop()
            .expect("the upstream received a request")
    }
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1:0 that records and answers with `answer`.
pub async fn recording_upstream(answer: Answer) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(record(stream, shared.clone(), answer));
        }
    });
    Recorder { addr, seen }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Bytes up to and including the next line end, from `at`.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>, at: usize) -> Option<usize> {
    loop {
        if let Some(i) = buf[at..].iter().position(|b| *b == b'\n') {
            return Some(at + i + 1);
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

async fn record(mut s: TcpStream, seen: Arc<Mutex<Vec<Received>>>, answer: Answer) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut s, &mut buf).await {
                return;
            }
        };
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        if req.parse(&buf[..head_end]).is_err() {
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let target = req.path.unwrap_or("").to_string();
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let chunked = find("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        let end = if chunked {
            let mut at = head_end;
            loop {
                let Some(next) = line(&mut s, &mut buf, at).await else {
                    return;
                };
                let size_text = String::from_utf8_lossy(&buf[at..next]).into_owned();
                let digits = size_text.trim().split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(digits, 16) else {
                    return;
                };
                at = next;
                if size == 0 {
                    loop {
                        let Some(next) = line(&mut s, &mut buf, at).await else {
                            return;
                        };
                        let text = String::from_utf8_lossy(&buf[at..next]).into_owned();
                        at = next;
                        let text = text.trim_end_matches(['\r', '\n']);
                        if text.is_empty() {
                            break;
                        }
                        if let Some((n, v)) = text.split_once(':') {
                            trailers.push((n.to_string(), v.trim().to_string()));
                        }
                    }
                    break at;
                }
                while buf.len() < at + size + 2 {
                    if !fill(&mut s, &mut buf).await {
                        return;
                    }
                }
                body.extend_from_slice(&buf[at..at + size]);
                at += size + 2;
            }
        } else {
            let length = find("content-length")
                .first()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_end + length {
                if !fill(&mut s, &mut buf).await {
                    return;
                }
            }
            body.extend_from_slice(&buf[head_end..head_end + length]);
            head_end + length
        };
        let raw: Vec<u8> = buf.drain(..end).collect();
        let reply = answer(&method, &target);
        seen.lock().unwrap().push(Received {
            raw,
            method,
            target,
            headers,
            body,
            trailers,
        });
        if s.write_all(&reply).await.is_err() {
            return;
        }
        if String::from_utf8_lossy(&reply)
            .to_ascii_lowercase()
            .contains("connection: close")
        {
            return;
        }
    }
}

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    /// Header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {all:?}", all.len());
        all.first().copied()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `name=value` of a session cookie this response sets.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.all("set-cookie")
            .into_iter()
            .find(|v| v.starts_with(&format!("{name}=")) && !v.contains("Max-Age=0"))
            .map(|v| v.split(';').next().unwrap().to_string())
    }
}

/// A connection that writes exact bytes and reads responses one by one.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "no complete response within {READ_TIMEOUT:?}; got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next response; `None` when the connection closed before one began.
    /// `head_only` for an answer to HEAD, which has no body whatever it says.
    pub async fn response(&mut self, head_only: bool) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.more().await {
                assert!(
                    self.buf.is_empty(),
                    "closed inside a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        self.buf.drain(..head_end);
        let bodiless = head_only || status == 204 || status == 304 || status < 200;
        let mut body = Vec::new();
        if bodiless {
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let size = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let text = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                        self.buf.drain(..i + 2);
                        break usize::from_str_radix(text.split(';').next().unwrap().trim(), 16)
                            .unwrap_or_else(|_| panic!("bad chunk size {text:?}"));
                    }
                    assert!(self.more().await, "closed inside a chunked body");
                };
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            let blank = i == 0;
                            self.buf.drain(..i + 2);
                            if blank {
                                break;
                            }
                            continue;
                        }
                        assert!(self.more().await, "closed inside trailers");
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    assert!(self.more().await, "closed inside a chunk");
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(length) = get("content-length") {
            let length: usize = length
                .parse()
                .unwrap_or_else(|_| panic!("the client got Content-Length {length:?}"));
            while self.buf.len() < length {
                assert!(
                    self.more().await,
                    "closed {} bytes into a {length}-byte body",
                    self.buf.len()
                );
            }
            body = self.buf.drain(..length).collect();
        } else {
            while self.more().await {}
            body = std::mem::take(&mut self.buf);
        }
        Some(RawResponse {
            status,
            head,
            headers,
            body,
        })
    }

    /// Whether the server closes the connection within `within` (bytes
    /// still unread count as not closed).
    pub async fn closes_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One request on a new connection, and its response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut c = RawClient::connect(addr).await;
    c.send(bytes).await;
    let head_only = bytes.starts_with(b"HEAD ");
    c.response(head_only)
        .await
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(bytes)))
}
