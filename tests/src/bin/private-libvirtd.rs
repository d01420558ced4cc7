//! A private libvirtd (`hostagent_tests::libvirt::Libvirtd`: libvirt's stock security, its own
//! directories, never the machine's libvirt) in an existing network namespace, for the benchmark
//! harness, which is Python and must not grow a second copy of that setup.
//!
//! usage: private-libvirtd NETNS
//!
//! Prints `URI <uri>` on stdout once the daemon answers, then runs until its stdin closes; then
//! it destroys the daemon's running guests and stops it (the namespace is left to its owner).

use std::io::{Read, Write};

use hostagent_tests::libvirt::Libvirtd;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, netns] = args.as_slice() else {
        eprintln!("usage: private-libvirtd NETNS");
        std::process::exit(2)
    };
    let lv = Libvirtd::start_in(netns);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "URI {}", lv.uri);
    let _ = out.flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(lv);
}
