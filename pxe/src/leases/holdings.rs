//! Who holds which address, and which addresses are quarantined: the replay rule both lease
//! journals (v4 by client, v6 by DUID and IAID) share. A grant takes the address from any
//! other holder and ends its quarantine; a release counts only from the address's holder; a
//! decline takes the address from whoever held it and quarantines it.

use std::collections::HashMap;
use std::hash::Hash;

/// A lease as the index sees it: whose it is and which address it holds.
pub(crate) trait Held: Clone {
    type Key: Clone + Eq + Hash;
    type Addr: Copy + Eq + Hash + Ord;
    fn holder(&self) -> Self::Key;
    fn addr(&self) -> Self::Addr;
    /// Unix seconds.
    fn expires(&self) -> u64;
}

#[derive(Debug, Clone)]
pub(crate) struct Holdings<L: Held> {
    by_holder: HashMap<L::Key, L>,
    by_addr: HashMap<L::Addr, L::Key>,
    quarantine: HashMap<L::Addr, u64>,
}

impl<L: Held> Default for Holdings<L> {
    fn default() -> Self {
        Holdings {
            by_holder: HashMap::new(),
            by_addr: HashMap::new(),
            quarantine: HashMap::new(),
        }
    }
}

impl<L: Held> Holdings<L> {
    /// Granted or renewed: the holder's old address (if another) is free, any other holder of
    /// this address loses it, and its quarantine ends.
    pub(crate) fn grant(&mut self, lease: &L) {
        let key = lease.holder();
        let addr = lease.addr();
        if let Some(old) = self.by_holder.get(&key) {
            if old.addr() != addr {
                self.by_addr.remove(&old.addr());
            }
        }
        if let Some(other) = self.by_addr.insert(addr, key.clone()) {
            if other != key {
                self.by_holder.remove(&other);
            }
        }
        self.quarantine.remove(&addr);
        self.by_holder.insert(key, lease.clone());
    }

    /// The holder gave `addr` back; a release naming an address it does not hold changes nothing.
    pub(crate) fn release(&mut self, key: &L::Key, addr: L::Addr) {
        if self.by_holder.get(key).is_some_and(|l| l.addr() == addr) {
            self.by_holder.remove(key);
            self.by_addr.remove(&addr);
        }
    }

    /// `addr` was found in use: whoever held it loses it, and nobody gets it before `until`.
    pub(crate) fn decline(&mut self, addr: L::Addr, until: u64) {
        if let Some(key) = self.by_addr.remove(&addr) {
            self.by_holder.remove(&key);
        }
        self.quarantine.insert(addr, until);
    }

    pub(crate) fn by_holder(&self, key: &L::Key) -> Option<&L> {
        self.by_holder.get(key)
    }

    pub(crate) fn by_addr(&self, addr: L::Addr) -> Option<&L> {
        self.by_addr
            .get(&addr)
            .and_then(|key| self.by_holder.get(key))
    }

    pub(crate) fn quarantined_until(&self, addr: L::Addr) -> Option<u64> {
        self.quarantine.get(&addr).copied()
    }

    /// Forgets an expired quarantine (in memory only; compaction then leaves it out).
    pub(crate) fn lift_quarantine(&mut self, addr: L::Addr) {
        self.quarantine.remove(&addr);
    }

    /// Leases unexpired at `now`, sorted by address (what both servers publish and list).
    pub(crate) fn unexpired(&self, now: u64) -> Vec<L> {
        let mut v: Vec<L> = self
            .by_holder
            .values()
            .filter(|l| l.expires() > now)
            .cloned()
            .collect();
        v.sort_by_key(|l| l.addr());
        v
    }

    /// Every lease known, expired or not (one per holder).
    pub(crate) fn leases(&self) -> impl Iterator<Item = &L> {
        self.by_holder.values()
    }

    pub(crate) fn quarantined(&self) -> impl Iterator<Item = (L::Addr, u64)> + '_ {
        self.quarantine.iter().map(|(addr, until)| (*addr, *until))
    }

    /// Leases plus quarantined addresses: the records a compacted journal holds.
    pub(crate) fn live_count(&self) -> usize {
        self.by_holder.len() + self.quarantine.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct L(&'static str, u8);
    impl Held for L {
        type Key = &'static str;
        type Addr = u8;
        fn holder(&self) -> &'static str {
            self.0
        }
        fn addr(&self) -> u8 {
            self.1
        }
        fn expires(&self) -> u64 {
            u64::from(self.1) * 10
        }
    }

    #[test]
    fn a_grant_takes_the_address_from_its_holder_and_a_stale_release_changes_nothing() {
        let mut h = Holdings::default();
        h.grant(&L("a", 1));
        h.grant(&L("a", 2));
        assert_eq!(h.by_addr(1), None, "a's old address is free");
        h.grant(&L("b", 2));
        assert_eq!(h.by_holder(&"a"), None, "a lost 2 to b");
        h.release(&"b", 1);
        assert_eq!(
            h.by_addr(2),
            Some(&L("b", 2)),
            "a release of another address"
        );
        h.decline(2, 99);
        assert_eq!(
            (h.by_holder(&"b"), h.quarantined_until(2)),
            (None, Some(99))
        );
        h.grant(&L("c", 2));
        assert_eq!(h.quarantined_until(2), None);
        h.grant(&L("d", 9));
        assert_eq!(
            h.unexpired(20),
            vec![L("d", 9)],
            "c's ends at 20, d's at 90"
        );
        h.release(&"d", 9);
        h.release(&"c", 2);
        assert_eq!((h.leases().count(), h.live_count()), (0, 0));
    }
}
