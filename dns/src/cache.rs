//! The forwarding cache: upstream answers by question, kept within their TTLs (negative ones
//! within the SOA minimum, RFC 2308) and bounded in entries; the oldest entry goes first when it
//! is full.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::relay::Relayed;

/// A question as the cache tells them apart. `Name` compares and hashes without regard to case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub name: Name,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    /// DNSSEC OK and CD change what an upstream puts in the answer.
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

#[derive(Debug)]
pub(crate) struct Cache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<CacheKey, (u64, Arc<Relayed>)>,
    /// Insertion order with each entry's generation, so a re-inserted key is not evicted by its
    /// stale place in the queue.
    order: VecDeque<(u64, CacheKey)>,
    generation: u64,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<Relayed>> {
        let inner = self.lock();
        let (_, entry) = inner.map.get(key)?;
        entry.fresh(now).then(|| entry.clone())
    }

    pub(crate) fn insert(&self, key: CacheKey, entry: Arc<Relayed>) {
        if self.capacity == 0 || entry.lifetime.is_zero() {
            return;
        }
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.order.push_back((generation, key.clone()));
        inner.map.insert(key, (generation, entry));
        while inner.map.len() > self.capacity {
            let Some((generation, key)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&key).is_some_and(|(g, _)| *g == generation) {
                inner.map.remove(&key);
            }
        }
        // Stale queue places of re-inserted keys; keep the queue from growing without bound.
        if inner.order.len() > 2 * self.capacity.max(16) {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(g, k)| map.get(k).is_some_and(|(mg, _)| mg == g));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use std::time::Duration;

    fn entry(name: &str, ttl: u32, now: Instant) -> (CacheKey, Arc<Relayed>) {
        let n = Name::from_ascii(name).unwrap();
        let q = Query::query(n.clone(), RecordType::A);
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(q.clone());
        m.add_answer(Record::from_rdata(
            n.clone(),
            ttl,
            RData::A(A::new(10, 0, 0, 1)),
        ));
        let r = Relayed::parse(m.to_vec().unwrap(), &q, 86400, now).unwrap();
        let key = CacheKey {
            name: n,
            qtype: RecordType::A,
            qclass: DNSClass::IN,
            dnssec_ok: false,
            checking_disabled: false,
        };
        (key, Arc::new(r))
    }

    #[test]
    fn entries_expire_with_their_ttl_and_match_any_case() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        let (k, e) = entry("a.test.", 5, t0);
        c.insert(k, e);
        let (upper, _) = entry("A.TEST.", 5, t0);
        assert!(c.get(&upper, t0 + Duration::from_secs(4)).is_some());
        assert!(c.get(&upper, t0 + Duration::from_secs(5)).is_none());
        let (k0, e0) = entry("zero.test.", 0, t0);
        c.insert(k0.clone(), e0);
        assert!(c.get(&k0, t0).is_none(), "TTL 0 is never cached");
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let c = Cache::new(3);
        let t0 = Instant::now();
        let keys: Vec<CacheKey> = (0..10)
            .map(|i| {
                let (k, e) = entry(&format!("n{i}.test."), 60, t0);
                c.insert(k.clone(), e.clone());
                // Re-inserting refreshes the entry's place.
                c.insert(k.clone(), e);
                k
            })
            .collect();
        assert_eq!(c.len(), 3);
        assert!(c.get(&keys[9], t0).is_some());
        assert!(c.get(&keys[0], t0).is_none());
        assert!(c.lock().order.len() <= 32);
    }
}
