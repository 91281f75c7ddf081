//! A scripted plain-HTTP backend running in test threads (`MiniBackend`),
//! for failure modes the echo backend cannot produce: a stall, a FIN or a
//! reset after the request, bytes that are not HTTP, or a response written
//! in timed pieces (`Behaviour`). It counts requests and hands each request
//! head to the test, and every wait in it is bounded.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with this body (application/json), after `delay`; keep-alive.
    Respond { body: String, delay: Duration },
    /// Read the request, never answer (keep the socket open).
    Stall,
    /// Read the request head, close (FIN).
    Close,
    /// Read the request head, close with RST (SO_LINGER 0).
    Reset,
    /// Answer bytes that are not HTTP, then close.
    Garbage,
    /// After reading the request (and its Content-Length body), write each
    /// piece after its delay, then keep the connection for the next request.
    Script(Vec<(Duration, Vec<u8>)>),
    /// As `Script`, then close the connection (FIN): a response cut short.
    ScriptThenClose(Vec<(Duration, Vec<u8>)>),
}

pub struct MiniBackend {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// Receives each request head as soon as it has been read.
    pub heads: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl MiniBackend {
    pub fn start(behave: impl Fn(&str) -> Behaviour + Send + Sync + 'static) -> MiniBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let behave = Arc::new(behave);
        let (stop2, req2, held2) = (stop.clone(), requests.clone(), held.clone());
        let thread = thread::spawn(move || {
            let started = Instant::now();
            // bounded: a backend lives at most 5 minutes
            while !stop2.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let (b, r, h, t, st) = (
                            behave.clone(),
                            req2.clone(),
                            held2.clone(),
                            tx.clone(),
                            stop2.clone(),
                        );
                        thread::spawn(move || serve_conn(sock, b, r, h, t, st));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MiniBackend {
            port,
            requests,
            heads: rx,
            stop,
            thread: Some(thread),
            held,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for MiniBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the pointer and length describe `l`, a `linger` alive for the
    // whole call, and the descriptor belongs to `s`, open while we hold it.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve_conn(
    mut sock: TcpStream,
    behave: Arc<dyn Fn(&str) -> Behaviour + Send + Sync>,
    requests: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    tx: mpsc::Sender<String>,
    stop: Arc<AtomicBool>,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // read one head
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 16384];
            match sock.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let cl: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.trim().eq_ignore_ascii_case("content-length") {
                    v.trim().parse().ok()
                } else {
                    None
                }
            })
            .unwrap_or(0);
        requests.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(head.clone());
        let behaviour = behave(&head);
        let closes = matches!(behaviour, Behaviour::ScriptThenClose(_));
        match behaviour {
            Behaviour::Respond { body, delay } => {
                while buf.len() < cl {
                    let mut tmp = [0u8; 65536];
                    match sock.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                buf.drain(..cl);
                if !delay.is_zero() {
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                );
                if sock.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Behaviour::Stall => {
                if let Ok(c) = sock.try_clone() {
                    held.lock().unwrap().push(c);
                }
                // hold the socket open until the backend is dropped (bounded)
                let until = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Behaviour::Close => {
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            Behaviour::Reset => {
                set_linger_zero(&sock);
                drop(sock);
                return;
            }
            Behaviour::Script(pieces) | Behaviour::ScriptThenClose(pieces) => {
                while buf.len() < cl {
                    let mut tmp = [0u8; 65536];
                    match sock.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                buf.drain(..cl);
                for (delay, bytes) in pieces {
                    thread::sleep(delay);
                    if sock.write_all(&bytes).is_err() {
                        return;
                    }
                }
                if closes {
                    let _ = sock.shutdown(Shutdown::Both);
                    return;
                }
            }
            Behaviour::Garbage => {
                let _ = sock.write_all(b"this is not HTTP at all\r\n\r\n");
                let _ = sock.shutdown(Shutdown::Write);
                thread::sleep(Duration::from_millis(200));
                return;
            }
        }
    }
}
