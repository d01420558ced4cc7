//! Sockets in a test's namespaces: echo servers that record who connected (the address the
//! kernel reports, so a test sees NAT without any packet capture), and clients whose socket is
//! made inside a namespace and then used from the test's own thread (a socket stays in the
//! namespace it was created in).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Netns;

/// How long a test client waits for a connection or an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Peer addresses an echo server has seen, shared with its thread.
type Peers = Arc<Mutex<Vec<SocketAddr>>>;

/// A server loop: bind `addr`, signal `bound`, serve until `stop`, recording peers.
type Serve = fn(SocketAddr, Peers, Arc<AtomicBool>, mpsc::Sender<()>);

/// A TCP or UDP server in a namespace that sends every line (datagram) back and records the
/// peer address of each connection (datagram). Stops when dropped.
pub struct EchoServer {
    peers: Peers,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// A TCP echo server bound to `addr` in `ns`; returns once it listens.
    pub fn tcp(ns: &Netns, addr: SocketAddr) -> EchoServer {
        Self::start(ns, addr, |addr, peers, stop, bound| {
            let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            listener.set_nonblocking(true).expect("nonblocking");
            bound.send(()).expect("signal bound");
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        peers.lock().expect("peers").push(peer);
                        std::thread::spawn(move || echo_lines(stream));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept on {addr}: {e}"),
                }
            }
        })
    }

    /// A UDP echo server bound to `addr` in `ns`; returns once it is bound.
    pub fn udp(ns: &Netns, addr: SocketAddr) -> EchoServer {
        Self::start(ns, addr, |addr, peers, stop, bound| {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            bound.send(()).expect("signal bound");
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    peers.lock().expect("peers").push(peer);
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        })
    }

    fn start(ns: &Netns, addr: SocketAddr, serve: Serve) -> EchoServer {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = mpsc::channel();
        let (p, s) = (peers.clone(), stop.clone());
        let thread = ns.spawn_in(move || serve(addr, p, s, bound_tx));
        bound_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("echo server on {addr} did not start"));
        EchoServer {
            peers,
            stop,
            thread: Some(thread),
        }
    }

    /// Peer addresses seen so far, oldest first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers").clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_lines(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
        if out.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// A TCP connection opened from inside `ns` (the socket lives there; the stream can be used
/// from any thread), with read and write timeouts set.
pub fn tcp_connect(ns: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    ns.enter(move || {
        let s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    })
}

/// Send `text` and a newline over `stream` and read the echoed line back.
pub fn exchange(stream: &mut TcpStream, text: &str) -> std::io::Result<String> {
    stream.write_all(format!("{text}\n").as_bytes())?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// Connect from `ns` to an echo server at `to`, exchange one line, close: Ok(()) when the
/// echo came back.
pub fn tcp_echo_once(ns: &Netns, to: SocketAddr) -> Result<(), String> {
    let mut s = tcp_connect(ns, to).map_err(|e| format!("connect {to}: {e}"))?;
    match exchange(&mut s, "ping") {
        Ok(l) if l == "ping" => Ok(()),
        Ok(l) => Err(format!("{to} answered {l:?}")),
        Err(e) => Err(format!("{to}: {e}")),
    }
}

/// One UDP datagram from `ns` to an echo server at `to`: Ok(()) when it came back.
pub fn udp_echo_once(ns: &Netns, to: SocketAddr) -> Result<(), String> {
    ns.enter(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        sock.send_to(b"ping", to)
            .map_err(|e| format!("send to {to}: {e}"))?;
        let mut buf = [0u8; 16];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == b"ping" => Ok(()),
            Ok((n, from)) => Err(format!("{from} answered {:?}", &buf[..n])),
            Err(e) => Err(format!("no answer from {to}: {e}")),
        }
    })
}
