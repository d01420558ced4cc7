"""Writes the harness's results as Markdown (BENCHMARKS.md, or a temp file for --smoke)."""

import datetime
import os
import platform
import subprocess


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except OSError:
        mem_kib = 0
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "os": _os_name(),
    }


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def ratio(a, b, higher_is_better=True):
    if not a or not b:
        return None
    return a / b if higher_is_better else b / a


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}×"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def transfer_table(w, results, peer_name, columns):
    """One row per server (MiB/s in each of `columns`, a list of (key, header)), then a row of
    hostagent ÷ `peer_name` ratios."""
    w("| server | " + " | ".join(head for _, head in columns) + " | failed downloads |")
    w("|---" * (len(columns) + 2) + "|")
    for name, v in results.items():
        w(f"| {name} | " + " | ".join(f"{v[k]:.1f}" for k, _ in columns) + f" | {v['concurrent_failed']} |")
    ha, peer = results.get("hostagent"), results.get(peer_name)
    if ha and peer:
        w("| ratio | " + " | ".join(fmt_ratio(ratio(ha[k], peer[k])) for k, _ in columns) + " | |")


def leasedb_report(w, h, target):
    """The lease-database section: hostagent's postgres backend against Kea's, same PostgreSQL."""
    d = h.results.get("leasedb")
    if not d:
        return
    w("## DHCP with the leases in PostgreSQL\n")
    w(f"Command (client namespace): `{h.commands.get('dhcp', '')}`, the DHCP section's, with its rate search (start 500/s; at most {h.dhcp_steps} steps; the best "
      f"rate at ≤ 1 % drops confirmed {h.repeats}× and the median reported), with both servers keeping their "
      f"leases in one private PostgreSQL {d.get('postgresql', '?')} cluster (`initdb` in a temp dir, unix socket "
      "only, Debian's defaults: fsync and synchronous_commit on), a fresh empty database before every run. "
      "hostagent: `[leases] backend = \"postgres\"` (one transaction per batch of DHCP messages, the ACKs after "
      "its COMMIT; schema created by the agent). Kea: `lease-database { type = \"postgresql\" }` with the schema "
      f"from `{h.commands.get('leasedb kea-admin', 'kea-admin db-init pgsql')}`, otherwise the DHCP section's "
      "config (multi-threading on, auto threads, raw sockets). Leases after the run are read from each "
      "server's database and checked unique.\n")
    w("| server | lease store | 4-way exchanges/s (median) | drops | leases in the database (all unique) | hostagent ratio |")
    w("|---|---|---|---|---|---|")
    ha = d.get("hostagent", {}).get("rate")
    stores = {"hostagent": "`[leases] backend = \"postgres\"`", "kea": "`lease-database` type postgresql"}
    for name in ("hostagent", "kea"):
        v = d.get(name)
        if not v:
            continue
        rt = "—" if name == "hostagent" else fmt_ratio(ratio(ha, v["rate"]))
        w(f"| {name} | {stores[name]} | {v['rate']:.0f} (asked {v['asked']}/s) | {v['drop']*100:.2f} % | "
          f"{v['leases']:.0f} | {rt} |")
    w("")
    w("Rate search steps (asked → achieved, drops; UDP receive-queue overflows server/perfdhcp):\n")
    for name in ("hostagent", "kea"):
        v = d.get(name)
        if v:
            steps = ", ".join(f"{st[0]}→{st[1]:.0f} ({st[2]*100:.1f} %; {st[3]}/{st[4]})" for st in v["steps"])
            w(f"- {name}: {steps}")
    w("")
    if ha and "kea" in d:
        rr = ratio(ha, d["kea"]["rate"])
        target("DHCP with PostgreSQL leases ≥ 1.5× Kea's PostgreSQL backend at ≤ 1 % drops",
               rr is not None and rr >= 1.5 and d["hostagent"]["drop"] <= 0.01,
               f"{ha:.0f} vs {d['kea']['rate']:.0f} /s ({fmt_ratio(rr)}); hostagent's median drops "
               f"{d['hostagent']['drop']*100:.2f} %, Kea's {d['kea']['drop']*100:.2f} %")


def write_report(h, path):
    r = h.results
    m = machine()
    out = []
    w = out.append
    title = "hostagent benchmarks" + (" (SMOKE RUN: tiny sizes, figures meaningless)" if h.smoke else "")
    w(f"# {title}\n")
    w("Generated by `bench/run.sh` (issue \"Performance against the servers people run today\"). Do not edit by hand:"
      " run `sudo bench/run.sh` again. Each figure is the median of repeated runs; a ratio is hostagent ÷ the peer"
      " measured in the same run (above 1× = hostagent better; for times and memory the ratio is inverted so that"
      " above 1× still means hostagent better).\n")
    w(f"Run: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| CPU | {m['cpu']} |")
    w(f"| nproc | {m['nproc']} |")
    w(f"| memory | {m['memory']} |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| OS | {m['os']} |")
    ls, le = getattr(h, "load_start", (0, 0, 0)), os.getloadavg()
    w(f"| load average (1/5/15 min) at start / end | {ls[0]:.2f} {ls[1]:.2f} {ls[2]:.2f} / {le[0]:.2f} {le[1]:.2f} {le[2]:.2f} "
      "(anything above 0 is other work sharing the CPUs with the benchmark) |")
    build = "release" if "/release/" in h.hostagent else "debug"
    w(f"| hostagent | `{_version([h.hostagent, '--version'])}` ({build} build) |")
    w(f"| peers | Kea `{_version(['kea-dhcp4', '-V'])}`, `{_version(['dnsmasq', '--version'])}`, "
      f"`{_version(['in.tftpd', '-V'])}`, `{_version(['busybox'])}`, `{_version(['atftp', '--version'])}`, "
      f"`{_version(['curl', '--version'])}` |")
    w("")
    w("Topology (every server, every section): a server namespace holding the bridge `brbench` "
      "(10.60.0.1/16, made by `hostagent apply`/`run` from the same config, so the nftables table and the kernel "
      "path are identical for every server) and a client namespace whose `eth0` (10.60.255.250/16) is a veth port "
      "of that bridge. Peers run inside the server namespace with configs in a temp dir. The config sets "
      "`[dhcp] port_rate_limit = 0`: perfdhcp's 60,000 simulated clients all come through one bridge port, and the "
      "per-port limit (100 packets/s by default) would otherwise cap every server alike.\n")

    targets = []

    def target(name, ok, detail):
        targets.append((name, ok, detail))

    # -- DHCP
    d = r.get("dhcp")
    if d:
        w("## DHCP (perfdhcp)\n")
        w(f"Command (client namespace): `{h.commands.get('dhcp', '')}` with the rate stepped (at most "
          f"{h.dhcp_steps} steps, doubling until drops exceed 1 %, then bisecting), each step against a freshly "
          f"started server with an empty lease database; the best rate at ≤ 1 % drops is then run "
          f"{h.repeats}× more and the median reported. Rate = ACKs received ÷ the sending period (`-p`); perfdhcp "
          "waits 1 s after it (`-W`) for late answers, and an answer later than its 1 s drop time counts as lost. "
          "Drops = DISCOVERs sent that never ended in an ACK. A server still at 0 % drops at the last step was "
          "not saturated: its figure is a lower bound. "
          f"{h.dhcp_clients} simulated clients (`-R`) on a /16 pool of 65,024 addresses, lease time 12 h. "
          "hostagent fsyncs every lease before its ACK (group commit); Kea memfile (persist, multi-threaded) and "
          "dnsmasq write their lease files without fsync.\n")
        w("| server | config | 4-way exchanges/s (median) | drops | leases after run (all unique) | hostagent ratio |")
        w("|---|---|---|---|---|---|")
        ha = d.get("hostagent", {}).get("rate")
        cfgs = {"hostagent": "1 nat network, range 10.60.1.0–10.60.254.254",
                "kea": "memfile persist, multi-threading on (auto threads), raw sockets",
                "dnsmasq": "`--no-ping --quiet-dhcp --dhcp-lease-max=100000`"}
        for name, v in d.items():
            rt = "—" if name == "hostagent" else fmt_ratio(ratio(ha, v["rate"]))
            w(f"| {name} | {cfgs.get(name, '')} | {v['rate']:.0f} (asked {v['asked']}/s) | {v['drop']*100:.2f} % | "
              f"{v['leases']:.0f} | {rt} |")
        w("")
        w("Rate search steps (asked → achieved, drops; then UDP receive-queue overflows during the step in the "
          "server's namespace / in perfdhcp's, from /proc/net/snmp RcvbufErrors: drops with overflows only on "
          "perfdhcp's side were lost by a client that could not keep up, not by the server):\n")
        for name, v in d.items():
            steps = ", ".join(f"{st[0]}→{st[1]:.0f} ({st[2]*100:.1f} %; {st[3]}/{st[4]})" for st in v["steps"])
            w(f"- {name}: {steps}")
        w("")
        for peer, want in (("kea", 2.0), ("dnsmasq", 20.0)):
            if peer in d and ha:
                rr = ratio(ha, d[peer]["rate"])
                target(f"DHCP exchanges/s at ≤ 1 % drops ≥ {want:g}× {peer}",
                       rr is not None and rr >= want and d["hostagent"]["drop"] <= 0.01,
                       f"{ha:.0f} vs {d[peer]['rate']:.0f} /s ({fmt_ratio(rr)}); hostagent's median drops "
                       f"{d['hostagent']['drop']*100:.2f} %, {peer}'s {d[peer]['drop']*100:.2f} %")
        target("DHCP: zero duplicate addresses", True, "every run's leases checked unique (a duplicate aborts the run)")

    leasedb_report(w, h, target)

    # -- TFTP
    t = r.get("tftp")
    if t:
        w("## TFTP\n")
        w(f"Commands (client namespace): lock-step `{h.commands.get('tftp lock-step', '')}`; windowed "
          f"`{h.commands.get('tftp windowsize 16', '')}`; concurrency: {h.concurrent_n} of the lock-step command at "
          f"once on a {h.size['mid'] >> 20} MiB file, then {h.concurrent_n} of the windowed one. File: {h.size['big'] >> 20} MiB of random bytes, every download "
          f"checked by sha256. tftpd-hpa: `in.tftpd -L -u nobody -s DIR -a 10.60.0.1:69` "
          "(tftpd-hpa 5.2 knows blksize, tsize, timeout and rollover but not RFC 7440 windowsize: it ignores the "
          "option and stays lock-step, so the windowed row shows what a client gains by windowing).\n")
        transfer_table(w, t, "tftpd-hpa", [
            ("lockstep", "lock-step blksize 1468 (MiB/s)"),
            ("window16", "windowsize 16 (MiB/s)"),
            ("concurrent", f"{h.concurrent_n} lock-step clients aggregate (MiB/s)"),
            ("concurrent_w16", f"{h.concurrent_n} clients asking windowsize 16, aggregate (MiB/s)"),
        ])
        ha, peer = t.get("hostagent"), t.get("tftpd-hpa")
        if ha and peer:
            target("TFTP lock-step ≥ 1× tftpd-hpa", ha["lockstep"] >= peer["lockstep"],
                   f"{ha['lockstep']:.1f} vs {peer['lockstep']:.1f} MiB/s ({fmt_ratio(ratio(ha['lockstep'], peer['lockstep']))})")
            target("TFTP windowsize 16 ≥ 4× tftpd-hpa's lock-step", ha["window16"] >= 4 * peer["lockstep"],
                   f"{ha['window16']:.1f} vs {peer['lockstep']:.1f} MiB/s ({fmt_ratio(ratio(ha['window16'], peer['lockstep']))})")
            target(f"TFTP {h.concurrent_n} lock-step clients: all correct, aggregate ≥ 1.5× tftpd-hpa",
                   ha["concurrent_failed"] == 0 and ha["concurrent"] >= 1.5 * peer["concurrent"],
                   f"{ha['concurrent']:.1f} vs {peer['concurrent']:.1f} MiB/s ({fmt_ratio(ratio(ha['concurrent'], peer['concurrent']))}), "
                   f"{ha['concurrent_failed']} failed")
        w("")

    # -- HTTP
    hh = r.get("http")
    if hh:
        w("## HTTP boot\n")
        w(f"Commands: `{h.commands.get('http', '')}` ({h.size['big'] >> 20} MiB) into a tmpfs file, checked by sha256 "
          f"(the client's own write costs as much CPU as the rest of the path here); the same download with "
          f"`{h.commands.get('http null', '')}`, where curl discards the bytes and the figure is what the server and "
          f"the veth path deliver (the byte count is checked); concurrency: {h.concurrent_n} downloads of a "
          f"{h.size['mid'] >> 20} MiB file at once, each checked by sha256. The issue names no HTTP peer; busybox "
          "httpd (`busybox httpd -f -p ADDR:PORT -h DIR`, which also uses sendfile) is measured as a reference.\n")
        transfer_table(w, hh, "busybox-httpd", [
            ("single", "one download to a file (MiB/s)"),
            ("null", "one download to /dev/null (MiB/s)"),
            ("concurrent", f"{h.concurrent_n} concurrent aggregate (MiB/s)"),
        ])
        ha = hh.get("hostagent")
        if ha:
            target(f"HTTP {h.size['big'] >> 20} MiB download ≥ 500 MiB/s (curl to /dev/null; sha256-checked runs to a "
                   "tmpfs file in the column beside it)", ha["null"] >= 500,
                   f"{ha['null']:.1f} MiB/s to /dev/null, {ha['single']:.1f} MiB/s to a file")
            target(f"HTTP {h.concurrent_n} concurrent downloads without errors", ha["concurrent_failed"] == 0,
                   f"{ha['concurrent_failed']} failed")
        w("")

    # -- DNS
    dn = r.get("dns")
    if dn:
        w("## DNS (dnsperf)\n")
        w(f"Commands (client namespace): local names `{h.commands.get('dns local', '')}`, cached forwarded names "
          f"`{h.commands.get('dns forwarded', '')}` after one untimed pass through the same file (`-n 1`) to fill "
          f"the cache; one run each. The network's domain `bench` holds the names host-0 … host-{r.get('dns_names', 0) - 1} "
          "(hostagent: `[[network.dns.host]]`; dnsmasq: the same names in an `--addn-hosts` file, "
          f"`--local=/bench/`); forwarded names n0 … n{r.get('dns_names', 0) - 1}`.fwd.test` come from a dnsmasq in a third namespace "
          "(`--address=/fwd.test/10.9.9.9`, TTL 3600) linked to the server namespace by a veth, the one "
          "forwarder of both. dnsmasq (`--cache-size=10000 --dns-forward-max=1024`, as large as hostagent's "
          "cache; its default is 150) listens on the same 10.60.0.1:53. hostagent's `[network.dns] rate_limit = 0`: "
          "dnsperf's load is one client address, and the per-guest limit (200 queries/s by default) would "
          "measure the limit. Every answer is NOERROR (checked); a local and a forwarded name are checked by value "
          "with dig first.\n")
        w("| server | local names (queries/s) | cached forwarded names (queries/s) | queries lost (local / forwarded) |")
        w("|---|---|---|---|")
        for name, v in dn.items():
            w(f"| {name} | {v['local']['qps']:.0f} | {v['cached']['qps']:.0f} | {v['local']['lost']} / {v['cached']['lost']} |")
        ha, peer = dn.get("hostagent"), dn.get("dnsmasq-dns")
        if ha and peer:
            w(f"| ratio | {fmt_ratio(ratio(ha['local']['qps'], peer['local']['qps']))} | "
              f"{fmt_ratio(ratio(ha['cached']['qps'], peer['cached']['qps']))} | |")
        c = (ha or {}).get("counters")
        if c:
            w(f"\nhostagent's counters after the runs: {c['queries']} queries, {c['answered_local']} answered locally, "
              f"{c['forwarded']} forwarded, {c['cache_hits']} cache hits, {c['upstream_failures']} upstream failures.")
        w("")

    # -- storm
    s = r.get("storm")
    if s:
        w("## Boot storm\n")
        w(f"{h.storm_clients} simulated PXE clients at once: `{h.commands.get('storm', '')}`. Each client starts its "
          f"TFTP download of a {h.size['ipxe'] >> 20} MiB iPXE-sized file the moment its ACK arrives, then an HTTP "
          f"download of a {h.size['kernel'] >> 20} MiB kernel; every file checked by sha256, every address checked "
          "unique (in the ACKs and in the server's lease record). All simulated clients share the client namespace's "
          "address for TFTP/HTTP. Time = start of DHCP to the last client's finished kernel download (median of "
          f"{h.repeats}).\n")
        w("| stack | finished (worst run) | time to last client (s) | peak memory: PSS summed over the server namespace's processes (MiB) | ratio (time) |")
        w("|---|---|---|---|---|")
        ha = s.get("hostagent", {}).get("last")
        for name, v in s.items():
            rt = "—" if name == "hostagent" else fmt_ratio(ratio(ha, v["last"], higher_is_better=False))
            w(f"| {name} | {v['finished_min']}/{h.storm_clients} | {v['last']:.2f} | {v['peak_rss_kib'] / 1024:.1f} | {rt} |")
        w("")
        if "hostagent" in s:
            target(f"Boot storm: all {h.storm_clients} clients finish, none duplicated",
                   s["hostagent"]["finished_min"] == h.storm_clients, f"{s['hostagent']['finished_min']}/{h.storm_clients}, last at {ha:.2f} s")

    # -- memory
    mi = r.get("memory_idle")
    if mi or s:
        w("## Memory\n")
        w("Read from `/proc/PID/status` and `smaps_rollup` of the `hostagent run` process. VmRSS counts mapped "
          "file pages too: the code of the binary and of the shared libraries it links (libvirt pulls in gnutls, "
          "libcrypto, libxml2, libstdc++), resident as soon as they are mapped and shared with every process "
          "mapping them; RssAnon is the daemon's own heap and stacks; PSS divides shared pages among their users.\n")
        w("| situation | VmRSS (MiB) | of it RssAnon (MiB) | of it RssFile (MiB) | PSS (MiB) | VmHWM (MiB) |")
        w("|---|---|---|---|---|---|")
        if mi:
            w(f"| 4 networks (DHCP+TFTP+HTTP each), idle | {mi['rss_kib'] / 1024:.1f} | {mi.get('anon_kib', 0) / 1024:.1f} | "
              f"{mi.get('file_kib', 0) / 1024:.1f} | {mi.get('pss_kib', 0) / 1024:.1f} | {mi['hwm_kib'] / 1024:.1f} |")
        if s and "hostagent" in s:
            w(f"| boot storm, {h.storm_clients} clients (peak VmRSS sampled every 100 ms) | {s['hostagent'].get('agent_rss_kib', 0) / 1024:.1f} | "
              f"{s['hostagent'].get('agent_anon_kib', 0) / 1024:.1f} (peak) | | | {s['hostagent']['hwm_kib'].get('hostagent', 0) / 1024:.1f} |")
        w("")
        if mi:
            target("Memory: 4 networks idle ≤ 15 MiB", mi["rss_kib"] <= 15 * 1024, f"{mi['rss_kib'] / 1024:.1f} MiB")
        if s and "hostagent" in s:
            peak = max(s["hostagent"].get("agent_rss_kib", 0), s["hostagent"]["hwm_kib"].get("hostagent", 0))
            target(f"Memory: boot storm of {h.storm_clients} ≤ 64 MiB", peak <= 64 * 1024, f"{peak / 1024:.1f} MiB peak")

    # -- apply
    a = r.get("apply")
    if a:
        w("## Host config\n")
        w(f"`{h.commands.get('apply', '')}`: 32 nat networks (bridge + /24 address + nftables table + forwarding "
          "sysctl). \"From scratch\" = a new empty namespace and root before every run; \"no-op\" = the same apply "
          "again on a configured host. After the timed runs the harness checks 32 bridges exist and `plan` exits 0.\n")
        w("| apply | median (ms) |")
        w("|---|---|")
        w(f"| 32 nat networks from scratch | {a['scratch'] * 1000:.0f} |")
        w(f"| no-op | {a['noop'] * 1000:.0f} |")
        w("")
        target("apply of 32 nat networks from scratch ≤ 2 s", a["scratch"] <= 2.0, f"{a['scratch'] * 1000:.0f} ms")
        target("no-op apply ≤ 100 ms", a["noop"] <= 0.1, f"{a['noop'] * 1000:.0f} ms")

    # -- targets
    w("## Targets\n")
    w("The issue's targets, each against the peer measured in the same run.\n")
    w("| target | result | |")
    w("|---|---|---|")
    for name, ok, detail in targets:
        w(f"| {name} | {verdict(ok)} | {detail} |")
    w("")
    if h.failures:
        w("Failures during the run:\n")
        for who, what in h.failures:
            w(f"- {who}: {what}")
        w("")

    # -- profile
    p = r.get("profile")
    if p:
        w("## Profile\n")
        if "error" in p:
            w(p["error"])
        else:
            w(f"`{p['command']}`; achieved {p['achieved']:.0f}/s at {p['drop']*100:.2f} % drops while recording. "
              "This VM exposes no hardware counters, so samples come from the cpu-clock software event. Top symbols "
              "by self time (whole process, all threads):\n")
            w("```")
            out.extend(p["top"])
            w("```\n")
            if p.get("chains"):
                w("Call chains of the symbols above 10 % (`perf report --no-children -G`, standard-library frames left out; "
                  "the raw data stays in /tmp/hostagent-bench-perf.data):\n")
                w("```")
                out.extend(p["chains"])
                w("```\n")
        notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile-notes.md")
        if os.path.exists(notes):
            with open(notes) as f:
                w(f.read())
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
