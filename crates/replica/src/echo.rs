//! The `echo-svc` application of each pod: answers the cluster's body
//! (`"GKE!!!"`), remembers the request headers it saw (by `x-request-id`),
//! and can be told to fail (answer a status) or to die (stop listening).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// Request headers seen by the applications, by `x-request-id`.
pub type Seen = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

pub struct Echo {
    pub addr: SocketAddr,
    body: String,
    /// 0: answer 200 with the body; else this status.
    status: Arc<AtomicU32>,
    seen: Seen,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Echo {
    pub fn start(addr: SocketAddr, body: &str, seen: Seen) -> anyhow::Result<Echo> {
        let mut e = Echo {
            addr,
            body: body.to_string(),
            status: Arc::new(AtomicU32::new(0)),
            seen,
            running: None,
        };
        e.up()?;
        Ok(e)
    }

    /// Answer with `status` (0: normally).
    pub fn set_status(&self, status: u32) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Starts listening (again).
    pub fn up(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .with_context(|| format!("echo-svc cannot listen on {}", self.addr))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, body, status, seen) = (
            stop.clone(),
            self.body.clone(),
            self.status.clone(),
            self.seen.clone(),
        );
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (stop3, body, status, seen) =
                    (stop2.clone(), body.clone(), status.clone(), seen.clone());
                std::thread::spawn(move || serve(conn, &stop3, &body, &status, &seen));
            }
        });
        self.running = Some((stop, handle));
        Ok(())
    }

    /// Stops listening and closes its connections: the application died.
    pub fn down(&mut self) {
        if let Some((stop, handle)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
            let _ = handle.join();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve(conn: TcpStream, stop: &AtomicBool, body: &str, status: &AtomicU32, seen: &Seen) {
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    'conn: loop {
        // Request line and headers (keep-alive: one request after another).
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break 'conn,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if stop.load(Ordering::SeqCst) {
                        break 'conn;
                    }
                    if line.is_empty() {
                        continue;
                    }
                }
                Err(_) => break 'conn,
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut it = lines.iter();
        let request_line = it.next().cloned().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let mut headers = vec![(":method".to_string(), method), (":path".to_string(), path)];
        let mut length = 0usize;
        let mut id = None;
        for l in it {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().to_string();
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                if k == "x-request-id" {
                    id = Some(v.clone());
                }
                let k = if k == "host" { ":authority".into() } else { k };
                headers.push((k, v));
            }
        }
        let mut discard = vec![0u8; length];
        if length > 0 && reader.read_exact(&mut discard).is_err() {
            break;
        }
        if let (Some(id), Ok(mut m)) = (id, seen.lock()) {
            m.insert(id, headers);
        }
        let code = status.load(Ordering::SeqCst);
        let (code, text) = if code == 0 {
            (200, format!("{body}\n"))
        } else {
            (code, format!("error {code}\n"))
        };
        let reply = format!(
            "HTTP/1.1 {code} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            if code == 200 { "OK" } else { "Error" },
            text.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
}
