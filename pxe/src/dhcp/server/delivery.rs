//! Where a reply goes (RFC 2131 §4.1) and how it gets there.
//!
//! Replies to clients on the link are written as whole Ethernet frames to an AF_PACKET socket on
//! the bridge, with the UDP checksum computed here. Two reasons:
//! - a UDP packet generated locally on a bridge leaves with CHECKSUM_PARTIAL, and vhost-net guests
//!   receive it unfinished and drop it (libvirt fixes that with a tc `csum` action; this kernel
//!   has neither act_csum nor cls_u32);
//! - a client without an address can be reached at its MAC without touching the neighbour table.
//!
//! That includes replies to `ciaddr` (renewals, INFORM): with giaddr = 0 the client is on our
//! link at `chaddr`, and its renewal ACK needs a full checksum just as much.
//! Only replies to a relay (giaddr ≠ 0) go through the kernel's UDP stack: they are routed.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::config::Mac;
use crate::dhcp::wire::{ClientMessage, MessageType, ReplyMessage};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// Where one reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// giaddr ≠ 0: to the relay's server port, routed by the kernel.
    Relay(Ipv4Addr),
    /// To 255.255.255.255 / ff:ff:ff:ff:ff:ff.
    Broadcast,
    /// To `ip` at `mac` (ciaddr for renewals/INFORM, yiaddr for a client without an address).
    Link { ip: Ipv4Addr, mac: Mac },
    /// A proxyDHCP boot-server answer: from UDP 4011 to `ip`:`port` at `mac` (where the request
    /// came from).
    BootServer { ip: Ipv4Addr, mac: Mac, port: u16 },
}

impl Destination {
    /// RFC 2131 §4.1, in its order: relay, then NAK → broadcast, then ciaddr, then the broadcast
    /// bit, else unicast to yiaddr at chaddr.
    pub fn for_reply(msg: &ClientMessage, reply: &ReplyMessage) -> Destination {
        if !msg.giaddr.is_unspecified() {
            Destination::Relay(msg.giaddr)
        } else if reply.msg_type == MessageType::Nak {
            Destination::Broadcast
        } else if !msg.ciaddr.is_unspecified() {
            Destination::Link {
                ip: msg.ciaddr,
                mac: msg.chaddr,
            }
        } else if msg.broadcast || reply.yiaddr.is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::Link {
                ip: reply.yiaddr,
                mac: msg.chaddr,
            }
        }
    }
}

/// Internet checksum (RFC 1071) over `chunks`, as if concatenated (each chunk but the last must
/// have even length).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks_exact(2);
        for pair in &mut it {
            sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
        }
        if let [last] = it.remainder() {
            sum += (*last as u32) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP frame from port 67 to 68 around `payload`, both checksums complete.
pub fn build_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    build_frame_ports(
        (src_mac, src_ip, SERVER_PORT),
        (dst_mac, dst_ip, CLIENT_PORT),
        payload,
    )
}

/// Ethernet + IPv4 + UDP frame between the given (MAC, address, port) ends.
pub fn build_frame_ports(
    (src_mac, src_ip, src_port): (Mac, Ipv4Addr, u16),
    (dst_mac, dst_ip, dst_port): (Mac, Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len as usize);
    f.extend_from_slice(&dst_mac.octets());
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&0x0800u16.to_be_bytes());

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = 0x10; // DSCP/TOS: low delay, like dnsmasq/ISC
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let ip_sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    f.extend_from_slice(&ip);

    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src_ip.octets());
    pseudo[4..8].copy_from_slice(&dst_ip.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut sum = checksum(&[&pseudo, &udp, payload]);
    if sum == 0 {
        sum = 0xffff; // 0 means "no checksum" in UDP
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(payload);
    f
}

/// Verify the IPv4 header and UDP checksums of an Ethernet frame (used by tests on captures).
/// Returns the UDP payload when both are complete and correct.
pub fn verify_frame(frame: &[u8]) -> Option<&[u8]> {
    let ip = frame.get(14..)?;
    let ihl = ((*ip.first()? & 0x0f) as usize) * 4;
    if ip.get(9) != Some(&17) || checksum(&[ip.get(..ihl)?]) != 0 {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let udp = ip.get(ihl..total)?;
    let udp_len = u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]) as usize;
    if udp_len != udp.len() || udp[6..8] == [0, 0] {
        return None;
    }
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    (checksum(&[&pseudo, udp]) == 0).then(|| &udp[8..])
}

/// An AF_PACKET socket that sends whole frames out of one interface (it receives nothing:
/// protocol 0).
pub struct LinkSender {
    fd: OwnedFd,
    ifindex: i32,
    ifname: String,
}

impl LinkSender {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<LinkSender> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = ifreq_ioctl(fd.as_raw_fd(), ifname, libc::SIOCGIFINDEX)
            // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
            .map(|r| unsafe { r.ifr_ifru.ifru_ifindex })?;
        Ok(LinkSender {
            fd,
            ifindex,
            ifname: ifname.to_string(),
        })
    }

    /// The interface's current MAC (read each time: a bridge without a fixed MAC takes its
    /// first port's, so it can change while we run).
    pub fn mac(&self) -> io::Result<Mac> {
        let r = ifreq_ioctl(self.fd.as_raw_fd(), &self.ifname, libc::SIOCGIFHWADDR)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let data = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(Mac::new(mac))
    }

    pub fn send(&self, frame: &[u8], dst_mac: Mac) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_ll is a valid value; we fill the fields sendto needs.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac.octets());
        // SAFETY: frame and addr outlive the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn ifreq_ioctl(fd: i32, ifname: &str, request: libc::Ioctl) -> io::Result<libc::ifreq> {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the kernel writes within it.
    if unsafe { libc::ioctl(fd, request, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// Everything the server sends with: the UDP socket (relays) and the link socket (the rest).
pub struct Sender {
    pub udp: UdpSocket,
    pub link: LinkSender,
    pub server_ip: Ipv4Addr,
}

impl Sender {
    pub fn send(&self, payload: &[u8], dest: Destination) -> io::Result<()> {
        match dest {
            Destination::Relay(giaddr) => self
                .udp
                .send_to(payload, SocketAddrV4::new(giaddr, SERVER_PORT))
                .map(|_| ()),
            Destination::Broadcast => {
                let dst = Mac::new([0xff; 6]);
                let frame = build_frame(
                    self.link.mac()?,
                    dst,
                    self.server_ip,
                    Ipv4Addr::BROADCAST,
                    payload,
                );
                self.link.send(&frame, dst)
            }
            Destination::Link { ip, mac } => {
                let frame = build_frame(self.link.mac()?, mac, self.server_ip, ip, payload);
                self.link.send(&frame, mac)
            }
            Destination::BootServer { ip, mac, port } => {
                let frame = build_frame_ports(
                    (
                        self.link.mac()?,
                        self.server_ip,
                        crate::dhcp::proxy::BOOT_SERVER_PORT,
                    ),
                    (mac, ip, port),
                    payload,
                );
                self.link.send(&frame, mac)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify_and_corruption_is_caught() {
        let payload: Vec<u8> = (0..301u32).map(|i| (i * 7) as u8).collect();
        let mut f = build_frame(
            Mac([2; 6]),
            Mac([0xff; 6]),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            &payload,
        );
        assert_eq!(verify_frame(&f), Some(&payload[..]));
        let last = f.len() - 1;
        f[last] ^= 1;
        assert_eq!(verify_frame(&f), None);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2 (checksum = !ddf2).
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
    }
}
