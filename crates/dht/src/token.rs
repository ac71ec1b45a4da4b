//! Announce tokens (BEP 5): a get_peers reply hands the querier a token
//! bound to its IP address; announce_peer must bring it back. A token is
//! SHA-1(secret ‖ IP) cut to 8 bytes, and the secret rotates every five
//! minutes with the previous one still accepted, so a token lives five to
//! ten minutes and nothing is stored per querier.

use sha1::{Digest, Sha1};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const TOKEN_LEN: usize = 8;
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);

pub struct TokenIssuer {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
    /// Supplies fresh secrets (the OS's randomness in production).
    fresh: Box<dyn FnMut() -> [u8; 16] + Send>,
}

impl TokenIssuer {
    pub fn new(now: Instant, mut fresh: Box<dyn FnMut() -> [u8; 16] + Send>) -> Self {
        let current = fresh();
        let previous = fresh();
        Self {
            current,
            previous,
            rotated_at: now,
            fresh,
        }
    }

    /// A number from the same randomness as the secrets.
    pub(crate) fn random_u32(&mut self) -> u32 {
        let b = (self.fresh)();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Rotates the secret if it is due.
    pub fn tick(&mut self, now: Instant) {
        while now.saturating_duration_since(self.rotated_at) >= ROTATE_EVERY {
            self.previous = self.current;
            self.current = (self.fresh)();
            self.rotated_at += ROTATE_EVERY;
        }
    }

    fn token_with(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.finalize()[..TOKEN_LEN].try_into().expect("8 bytes")
    }

    pub fn issue(&mut self, now: Instant, ip: IpAddr) -> [u8; TOKEN_LEN] {
        self.tick(now);
        Self::token_with(&self.current, ip)
    }

    pub fn check(&mut self, now: Instant, ip: IpAddr, token: &[u8]) -> bool {
        self.tick(now);
        token == Self::token_with(&self.current, ip) || token == Self::token_with(&self.previous, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(now: Instant) -> TokenIssuer {
        let mut n = 0u8;
        TokenIssuer::new(
            now,
            Box::new(move || {
                n += 1;
                [n; 16]
            }),
        )
    }

    #[test]
    fn a_token_is_bound_to_its_ip_and_lives_one_to_two_rotations() {
        let t0 = Instant::now();
        let mut tokens = issuer(t0);
        let a: IpAddr = "10.77.0.2".parse().unwrap();
        let b: IpAddr = "10.77.0.3".parse().unwrap();
        let token = tokens.issue(t0, a);
        assert!(tokens.check(t0, a, &token));
        assert!(!tokens.check(t0, b, &token), "another address");
        assert!(!tokens.check(t0, a, &token[..4]), "cut short");
        assert!(tokens.check(t0 + ROTATE_EVERY, a, &token), "after one rotation");
        assert!(!tokens.check(t0 + 2 * ROTATE_EVERY, a, &token), "after two");
    }
}
