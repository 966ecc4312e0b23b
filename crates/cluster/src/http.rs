//! `GET http://host:port/path`: istiod's debug endpoints are plain HTTP on
//! its monitoring port (15014). Bounded: a connect and read timeout, and a
//! size limit on the answer.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, Context as _};

/// How long to wait to connect, and for each read.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a config dump of a large mesh is tens of MiB).
pub const MAX_BODY: usize = 256 << 20;

/// The body of `GET url` when it answers 200.
pub fn get(url: &str) -> anyhow::Result<Vec<u8>> {
    let rest = url.strip_prefix("http://").with_context(|| {
        format!("{url}: only http:// urls (istiod's monitoring port serves plain HTTP)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    // One write: the request in one segment.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY as u64 + 65536)
        .read_to_end(&mut raw)
        .with_context(|| format!("{url}: reading the answer"))?;
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("{url}: not an HTTP answer");
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let body = &raw[head_end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    anyhow::ensure!(
        body.len() <= MAX_BODY,
        "{url}: the answer is larger than {} MiB",
        MAX_BODY >> 20
    );
    if status != 200 {
        bail!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
        );
    }
    Ok(body)
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            bail!("a chunked answer ends in the middle of a chunk size");
        };
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("not a chunk size: {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(
            body.len() >= size,
            "a chunked answer ends in the middle of a chunk"
        );
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert!(dechunk(b"5\r\nhel").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn answers_are_read_from_a_real_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno proxy\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                // The whole request, so that closing sends no reset.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before its request ended");
                    request.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(get(&format!("http://{addr}/debug/syncz")).unwrap(), b"[]");
        let e = get(&format!("http://{addr}/debug/config_dump")).unwrap_err();
        assert!(format!("{e}").contains("HTTP 404: no proxy"), "{e}");
        server.join().unwrap();
        assert!(get("https://istiod:15014/").is_err());
    }
}
