//! Asking the upstream resolvers: UDP from a fresh random port with a random ID (so a spoofed
//! answer must guess both), TCP when the answer comes back truncated, each upstream in order with
//! its own timeout (libvirt's dnsmasq runs with `strict-order` too).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::handler::{Forward, MAX_UDP_PAYLOAD};
use crate::upstreams::Upstreams;

/// RCODEs after which the next upstream is tried: SERVFAIL, NOTIMP, REFUSED.
const TRY_NEXT: [u8; 3] = [2, 4, 5];

#[derive(Debug)]
pub(crate) struct Forwarder {
    /// Replaced whole when the host's resolvers change; a query in flight keeps the list it
    /// started with.
    upstreams: RwLock<Arc<Upstreams>>,
    timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Upstreams, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams: RwLock::new(Arc::new(upstreams)),
            timeout,
        }
    }

    /// The upstreams in use now.
    pub(crate) fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Switches to `new`; returns the list it replaces.
    pub(crate) fn replace(&self, new: Upstreams) -> Arc<Upstreams> {
        let mut held = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *held, Arc::new(new))
    }

    /// The first answer an upstream gives that is not a refusal or failure; else the last such
    /// answer (relayed as it is); `None` when none answered at all.
    pub(crate) async fn ask(&self, job: &Forward) -> Option<Vec<u8>> {
        let mut fallback = None;
        for &server in self.upstreams().servers() {
            let id: u16 = rand::random();
            let query = job.upstream_query(id);
            if query.is_empty() {
                return None;
            }
            match self.exchange(server, id, &query).await {
                Ok(answer) if TRY_NEXT.contains(&(answer[3] & 0x0f)) => {
                    tracing::debug!(%server, query = %job.query(), rcode = answer[3] & 0x0f, "upstream failed; trying the next");
                    fallback = Some(answer);
                }
                Ok(answer) => return Some(answer),
                Err(e) => {
                    tracing::debug!(%server, query = %job.query(), "upstream did not answer: {e}");
                }
            }
        }
        fallback
    }

    async fn exchange(&self, server: SocketAddr, id: u16, query: &[u8]) -> io::Result<Vec<u8>> {
        let answer = timeout(self.timeout, udp(server, id, query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no UDP answer in time"))??;
        if answer[2] & 0b10 == 0 {
            return Ok(answer);
        }
        tracing::debug!(%server, "truncated answer; asking again over TCP");
        timeout(self.timeout, tcp(server, id, query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no TCP answer in time"))?
    }
}

fn is_answer(buf: &[u8], id: u16) -> bool {
    buf.len() >= 12 && buf[0..2] == id.to_be_bytes() && buf[2] & 0x80 != 0
}

async fn udp(server: SocketAddr, id: u16, query: &[u8]) -> io::Result<Vec<u8>> {
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    // Room for more than we asked for: an upstream that ignores our EDNS size gets its answer
    // cut by the kernel, fails to decode and counts as no answer.
    let mut buf = vec![0u8; usize::from(MAX_UDP_PAYLOAD) * 4];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything else on this port (a late answer, a spoof) is ignored.
        if is_answer(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(server: SocketAddr, id: u16, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    if !is_answer(&buf, id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP answer with another ID",
        ));
    }
    Ok(buf)
}
