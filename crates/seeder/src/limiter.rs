//! Connection caps: a global maximum and a maximum per remote IP, so one
//! host cannot take every socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        let ip = host_key(ip);
        let mut guard = self.state.lock().expect("limiter lock");
        let (total, per_ip) = &mut *guard;
        let count = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || *count >= self.max_per_ip {
            if *count == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *count += 1;
        *total += 1;
        Some(ConnectionPermit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    pub fn active(&self) -> usize {
        self.state.lock().expect("limiter lock").0
    }
}

/// One host's share of the caps: an IPv4 address, or an IPv6 /64 (one
/// subscriber usually holds a whole /64, so counting /128s would let one
/// host take every connection).
fn host_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut guard = self.limiter.state.lock().expect("limiter lock");
        let (total, per_ip) = &mut *guard;
        *total -= 1;
        if let Some(c) = per_ip.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_total() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        let _p3 = l.try_acquire(b).unwrap();
        assert!(l.try_acquire(b).is_none(), "total cap");
        drop(p1);
        let _p4 = l.try_acquire(a).unwrap();
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn ipv6_hosts_are_counted_per_64() {
        let l = ConnectionLimiter::new(10, 1);
        let _a = l.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(l.try_acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(l.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_some());
    }
}
