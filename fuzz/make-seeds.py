#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from real inputs: the DHCP packets
captured in pxe/src/dhcp/classify/testpackets.rs (real OVMF, iPXE, udhcpc, dhclient), whole
client exchanges built around them, the shipped configs in etc/, and TFTP/HTTP requests in
every traversal spelling. Run from anywhere; rerun after changing the captured packets, then
`cargo fuzz cmin <target>` to keep the committed corpora small."""
import pathlib, re, struct, hashlib

HERE = pathlib.Path(__file__).resolve().parent
MAIN = HERE.parent
CORPUS = HERE / "corpus"


def write(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def frame(advance, pkt):
    return bytes([advance]) + struct.pack(">H", len(pkt)) + pkt


def captured():
    src = (MAIN / "pxe/src/dhcp/classify/testpackets.rs").read_text()
    out = {}
    for name, body in re.findall(r'pub const (\w+): &str = concat!\((.*?)\);', src, re.S):
        out[name] = bytes.fromhex("".join(re.findall(r'"([0-9a-f]+)"', body)))
    return out


def dhcp(mac, msg, xid=0x11223344, opts=b"", ciaddr=b"\0\0\0\0", hlen=6, cookie=b"\x63\x82\x53\x63",
         giaddr=b"\0\0\0\0"):
    p = bytearray(236)
    p[0], p[1], p[2] = 1, 1, hlen
    p[4:8] = struct.pack(">I", xid)
    p[10] = 0x80
    p[12:16] = ciaddr
    p[24:28] = giaddr
    p[28:34] = mac
    return bytes(p) + cookie + bytes([53, 1, msg]) + opts + b"\xff"


def ip(s):
    return bytes(int(x) for x in s.split("."))


SERVER = ip("10.9.0.1")
DYN = bytes.fromhex("020000000042")
RES = bytes.fromhex("525400000010")
NEW = bytes.fromhex("020000000043")
DUID = bytes.fromhex("ff0000000100012a1b3c5254000042")


def dhcp_seeds():
    pk = captured()
    assert len(pk) >= 5, pk.keys()
    for p in pk.values():
        write("dhcp_server", frame(0, p))
    # A full dynamic exchange: DISCOVER, REQUEST (selecting), renew, RELEASE.
    write("dhcp_server", b"".join([
        frame(0, dhcp(DYN, 1, opts=b"\x37\x04\x01\x03\x06\x0f")),
        frame(0, dhcp(DYN, 3, opts=b"\x32\x04" + ip("10.9.0.100") + b"\x36\x04" + SERVER + b"\x0c\x05guest")),
        frame(200, dhcp(DYN, 3, ciaddr=ip("10.9.0.100"))),
        frame(1, dhcp(DYN, 7, ciaddr=ip("10.9.0.100"), opts=b"\x36\x04" + SERVER)),
    ]))
    # The reserved client (asks for the wrong address first: NAK), then DECLINE and INFORM.
    write("dhcp_server", b"".join([
        frame(0, dhcp(RES, 3, opts=b"\x32\x04" + ip("10.9.0.100"))),
        frame(0, dhcp(RES, 1, opts=b"\x5d\x02\x00\x07")),
        frame(0, dhcp(RES, 3, opts=b"\x32\x04" + ip("10.9.0.105") + b"\x36\x04" + SERVER)),
        frame(0, dhcp(DYN, 1)),
        frame(0, dhcp(DYN, 4, opts=b"\x32\x04" + ip("10.9.0.100") + b"\x36\x04" + SERVER)),
        frame(0, dhcp(DYN, 8, ciaddr=ip("10.9.0.50"))),
    ]))
    # Pool exhaustion: 20 DISCOVER+REQUEST pairs over 16 addresses.
    seq = []
    for i in range(20):
        mac = bytes([2, 0, 0, 0, 1, i])
        seq.append(frame(0, dhcp(mac, 1, xid=i)))
        seq.append(frame(0, dhcp(mac, 3, xid=i, opts=b"\x32\x04" + ip("10.9.0.%d" % (100 + i)) + b"\x36\x04" + SERVER)))
    write("dhcp_server", b"".join(seq[:46]))
    # Malformed: hlen 17 and 255, no cookie, overflowing option, 1,500 bytes of options, option 57 tiny.
    write("dhcp_server", frame(0, dhcp(DYN, 1, hlen=17)))
    write("dhcp_server", frame(0, dhcp(DYN, 1, cookie=b"\0\0\0\0")))
    write("dhcp_server", frame(0, dhcp(DYN, 1)[:-1] + b"\x3c\xc8ab"))
    write("dhcp_server", frame(0, dhcp(DYN, 1, opts=b"\x2b\xff" + b"A" * 255 + b"\x2b\xff" + b"B" * 255 * 5)))
    write("dhcp_server", frame(0, dhcp(DYN, 1, opts=b"\x39\x02\x00\x10\x4d\x04iPXE\xaf\x03\x01\x01\x01")))
    # Option 61: a DUID keeps its address on a new chaddr; an Ethernet-type id names its MAC.
    duid = b"\x3d" + bytes([len(DUID)]) + DUID
    req100 = b"\x32\x04" + ip("10.9.0.100") + b"\x36\x04" + SERVER
    write("dhcp_server", b"".join([
        frame(0, dhcp(DYN, 1, opts=duid)),
        frame(0, dhcp(DYN, 3, opts=duid + req100)),
        frame(2, dhcp(NEW, 1, opts=duid)),
        frame(0, dhcp(NEW, 3, opts=duid + req100)),
        frame(0, dhcp(NEW, 1, opts=b"\x3d\x07\x01" + DYN)),
        frame(0, dhcp(RES, 3, opts=duid + b"\x32\x04" + ip("10.9.0.105"))),
        frame(2, dhcp(NEW, 7, ciaddr=ip("10.9.0.100"), opts=duid + b"\x36\x04" + SERVER)),
    ]))
    # Option 82 through a relay (giaddr): OFFER, ACK, NAK and INFORM all echo it.
    agent = b"\x52\x09\x01\x03p7a\x02\x02\xbe\xef"
    relay = ip("10.9.0.254")
    write("dhcp_server", b"".join([
        frame(0, dhcp(DYN, 1, giaddr=relay, opts=agent)),
        frame(0, dhcp(DYN, 3, giaddr=relay, opts=req100 + agent)),
        frame(0, dhcp(DYN, 3, giaddr=relay, opts=b"\x32\x04" + ip("192.168.9.9") + b"\x36\x04" + SERVER + agent)),
        frame(0, dhcp(DYN, 8, giaddr=relay, ciaddr=ip("10.9.0.100"), opts=agent)),
    ]))
    # Asking for 121 and Microsoft's 249 (old Windows), and the PXELINUX options' range.
    write("dhcp_server", frame(0, dhcp(DYN, 1, opts=b"\x37\x06\x01\x03\x79\xf9\xd0\xd1")))
    # proxyDHCP: a firmware DISCOVER on 67 (even advance), then its boot-server REQUEST on 4011
    # (odd advance) from the address the other server gave it, and an OS client it ignores.
    pxe = b"\x3c\x20PXEClient:Arch:00007:UNDI:003000\x5d\x02\x00\x07\x61\x11" + bytes(17)
    write("dhcp_server", b"".join([
        frame(0, dhcp(NEW, 1, opts=pxe)),
        frame(1, dhcp(NEW, 3, ciaddr=ip("10.9.0.150"), opts=pxe + b"\x36\x04" + SERVER + agent)),
        frame(0, dhcp(NEW, 1, opts=b"\x3c\x0cudhcp 1.35.0")),
    ]))


def tftp_seeds():
    def rrq(name, mode=b"octet", opts=()):
        b = b"\x00\x01" + name + b"\0" + mode + b"\0"
        for k, v in opts:
            b += k + b"\0" + v + b"\0"
        return b
    for name in [b"pxelinux.0", b"/pxelinux.0", b"sub/dir/file.bin", b"link-in", b"abs-in",
                 b"link-out", b"abs-out", b"sub/up", b"dir-out/secret", b"loop", b"fifo",
                 b"../secret", b"/../secret", b"sub/../../secret", b"..\\secret", b"//etc/passwd",
                 b"./pxelinux.0", b"sub/./dir/file.bin", b"sub//dir", b"sub/", b"pxelinux.0\xff",
                 b"a" * 300]:
        write("tftp_request", rrq(name))
    write("tftp_request", rrq(b"pxelinux.0", opts=[(b"blksize", b"65464"), (b"windowsize", b"65535"), (b"tsize", b"0"), (b"timeout", b"1")]))
    write("tftp_request", rrq(b"pxelinux.0", b"netascii"))
    write("tftp_request", b"\x00\x02pxelinux.0\0octet\0")
    write("tftp_request", b"\x00\x04\x00\x01")
    write("tftp_request", b"\x00\x05\x00\x08tsize probe\0")
    write("tftp_request", "../secret")


def http_seeds():
    for s in ["/pxelinux.0", "/pxelinux.0\nbytes=0-3", "/sub/dir/file.bin\nbytes=-2",
              "/link-in\nbytes=3-", "/abs-in", "/link-out", "/abs-out", "/sub/up", "/dir-out/secret",
              "/%2e%2e/secret", "/%2E%2E%2Fsecret", "/..%2fsecret", "/%252e%252e/secret", "/sub/%2e%2e/%2e%2e/secret",
              "/..\\secret", "/%5c..%5csecret", "/%00", "/fifo", "/loop", "/sub/",
              "/pxelinux.0\nbytes=99999999999999999999-", "/pxelinux.0\nbytes=5-1",
              "/pxelinux.0\nbytes=0-1,4-5", "/pxelinux.0\nbytes=-0", "/pxelinux.0\nBytes = 0-0",
              "/pxelinux.0\nbytes=18446744073709551615-18446744073709551615"]:
        write("http_path_range", s)


def dns_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


OPT = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)


def dns_query(name, qtype, qid=0x1234, edns=False, rd=True):
    flags = 0x0100 if rd else 0
    h = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    return h + dns_name(name) + struct.pack(">HH", qtype, 1) + (OPT if edns else b"")


def dns_answer(name, qtype, rrs, rcode=0, qid=0x7777, tc=False, authority=b"", nauth=0):
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    h = struct.pack(">HHHHHH", qid, flags, 1, len(rrs), nauth, 1)
    body = dns_name(name) + struct.pack(">HH", qtype, 1)
    for rtype, rdata, ttl in rrs:
        body += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return h + body + authority + OPT


def dns_seeds():
    # Frame 0's advance byte is flags × 8 in the target: 0 UDP inside, 1 TCP, 2 refused source.
    local = [("bastion.default", 1), ("BASTION", 1), ("web", 28), ("web.default", 255),
             ("nobody.default", 1), ("default", 6), ("k8s.default", 1), ("api.k8s.default", 1),
             ("10.122.168.192.in-addr.arpa", 12), ("99.122.168.192.in-addr.arpa", 12),
             ("x.1.122.168.192.in-addr.arpa", 12), ("122.168.192.in-addr.arpa", 6),
             ("0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.2.1.0.0.0.d.f.ip6.arpa", 12),
             ("default", 252), ("upstream.test", 255)]
    for name, qtype in local:
        for flags, edns in [(0, False), (1, True), (2, False)]:
            write("dns_request", frame(flags, dns_query(name, qtype, edns=edns)))
    soa = b"\xc0\x0c" + struct.pack(">HHIH", 6, 1, 900, 22) + b"\0\0" + struct.pack(">IiiiI", 1, 2, 3, 4, 30)
    pairs = [
        ("upstream.test", 1, dns_answer("upstream.test", 1, [(1, bytes([10, 9, 9, 9]), 300)])),
        ("Upstream.Test", 1, dns_answer("upstream.test", 1, [(1, bytes([10, 9, 9, 9]), 300)] * 3)),
        ("nx.test", 1, dns_answer("nx.test", 1, [], rcode=3, authority=soa, nauth=1)),
        ("big.test", 16, dns_answer("big.test", 16, [(16, bytes([60]) + b"t" * 60, 60)] * 30)),
        ("tc.test", 16, dns_answer("tc.test", 16, [], tc=True)),
        ("fail.test", 1, dns_answer("fail.test", 1, [], rcode=2)),
        ("other.test", 1, dns_answer("wrong.test", 1, [(1, bytes([1, 2, 3, 4]), 60)])),
    ]
    for name, qtype, answer in pairs:
        for flags, edns in [(0, False), (0, True), (1, False)]:
            write("dns_request", frame(flags, dns_query(name, qtype, edns=edns)) + frame(0, answer))
        write("dns_request", frame(0, dns_query(name, qtype)))
    write("dns_request", frame(0, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6 + b"\xc0\x0c\x00\x01\x00\x01"))
    write("dns_request", frame(0, dns_query("a.b", 1)[:14]))
    write("dns_request", frame(0, struct.pack(">HHHHHH", 1, 0x2800, 1, 0, 0, 0) + dns_name("default") + b"\0\x06\0\x01"))
    # Frame 2: the leases' host names (line i is 192.168.122.(100+i)): good ones, the config's
    # own names, two leases asking for one name, garbage; then a query for one of them.
    leases = b"\n".join([b"alpha", b"Bastion", b"twin", b"twin", b"bad_name", b"", b"db.example.com",
                         "hôte".encode(), b"\xff\x00", b"-x", b"a" * 70, b"api"])
    upstream = dns_answer("upstream.test", 1, [(1, bytes([10, 9, 9, 9]), 300)])
    for name, qtype in [("alpha", 1), ("alpha.default", 1), ("twin.default", 1), ("db.default", 1),
                        ("100.122.168.192.in-addr.arpa", 12), ("bastion", 1), ("upstream.test", 1)]:
        write("dns_request", frame(0, dns_query(name, qtype)) + frame(0, upstream) + frame(0, leases))


def config_seeds():
    for p in [MAIN / "etc/hostagent.toml", *sorted((MAIN / "etc/examples").glob("*.toml"))]:
        write("config_parse", p.read_bytes())
    write("config_parse", 'state_dir = "/state"\n[[network]]\nname = "lab"\nmode = "nat"\nbridge = "br-lab"\n'
          'address = "10.81.0.1/24"\n[network.dhcp]\nrange = "10.81.0.100-10.81.0.199"\nlease_time = "1h"\n')
    write("config_parse", 'state_dir = "/state"\n[[network]]\nname = 1\n')
    write("config_parse", 'state_dir = "/state"\n[[network]]\nname = "lab"\nmode = "isolated"\nbridge = "br-lab"\n'
          'address = "10.81.0.1/24"\n[network.dhcp]\nrange = "10.81.0.100-10.81.0.199"\n'
          '[[network.dhcp.host]]\nmac = "52:54:00:00:00:10"\nip = "10.81.0.10"\nname = "bastion"\n'
          '[network.dns]\ndomain = "lab.example"\nforwarders = ["192.0.2.53", "[2001:db8::53]:5353"]\nrate_limit = 0\n'
          '[[network.dns.host]]\nname = "api.k8s"\nip = "fd00::20"\n[[network.dns.host]]\nname = "bastion"\nip = "10.81.0.11"\n')


def ra_seeds():
    """Router solicitations as hosts send them (from an address with its MAC, from the
    unspecified address), a routed one (hop limit 64), malformed options, and a full RA as the
    agent sends it (prefix, MTU, RDNSS, source link-layer address)."""
    rs = bytes([133, 0, 0, 0, 0, 0, 0, 0])
    sllao = bytes([1, 1]) + bytes.fromhex("525400000010")
    sol = lambda flags, hop, msg: bytes([flags, hop]) + msg
    write("ra_input", frame(0, sol(2, 255, rs + sllao)))
    write("ra_input", frame(0, sol(1, 255, rs)))
    write("ra_input", b"".join([
        frame(0, sol(2, 255, rs + sllao)),
        frame(5, sol(4, 255, rs)),
        frame(40, sol(1, 255, rs)),
        frame(1, sol(1, 64, rs)),
        frame(1, sol(1, 255, rs + sllao)),
        frame(1, sol(6, 255, rs + bytes([1, 0, 0, 0, 0, 0, 0, 0]))),
        frame(1, sol(8, 255, rs + bytes([1, 3, 0, 0]))),
        frame(200, sol(10, 255, rs + bytes([99, 1, 0, 0, 0, 0, 0, 0]))),
    ]))
    # A flood from many hosts, then quiet.
    write("ra_input", b"".join(frame(0, sol(2 * i, 255, rs)) for i in range(1, 45)) + frame(255, sol(1, 255, rs)))
    ra = bytes([134, 0, 0, 0, 64, 0xc0, 0x07, 0x08]) + bytes(8)
    ra += sllao
    ra += bytes([5, 1, 0, 0]) + struct.pack(">I", 1400)
    ra += bytes([3, 4, 64, 0xc0]) + struct.pack(">II", 2592000, 604800) + bytes(4) + bytes.fromhex("fd000122000000000000000000000000")
    ra += bytes([25, 3, 0, 0]) + struct.pack(">I", 1800) + bytes.fromhex("fd000122000000000000000000000001")
    write("ra_input", ra)
    write("ra_input", ra[:40])


if __name__ == "__main__":
    dhcp_seeds()
    tftp_seeds()
    http_seeds()
    dns_seeds()
    config_seeds()
    ra_seeds()
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())))
