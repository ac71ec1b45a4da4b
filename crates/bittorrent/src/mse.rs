//! Message Stream Encryption (MSE, also "protocol encryption"), responder
//! side, sans-IO.
//!
//! Many clients open with MSE, and some refuse to talk without it
//! (qBittorrent's "require encryption"). The exchange: the peer sends its
//! Diffie-Hellman key Ya (96 bytes) and up to 512 bytes of padding; we answer
//! with Yb; the peer sends HASH('req1', S), then HASH('req2', SKEY) xor
//! HASH('req3', S) naming the torrent (SKEY is its info hash), then, RC4
//! encrypted, VC, the methods it offers, padding and an initial payload (its
//! BitTorrent handshake). We pick plaintext when offered, else RC4, and the
//! rest of the stream flows through [`MseResponder::take_plain`] and
//! [`MseResponder::encrypt_outgoing`].
//!
//! Every length is bounded before use: padding ≤ 512 bytes, the search for
//! req1 ≤ 532 bytes past Ya, the initial payload ≤ 64 KiB by its u16 length.

use crate::metainfo::InfoHash;
use num_bigint::BigUint;
use sha1::{Digest, Sha1};

/// The 768-bit MSE prime.
const PRIME_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
const KEY_LEN: usize = 96;
const MAX_PAD: usize = 512;
const VC: [u8; 8] = [0; 8];
pub const CRYPTO_PLAIN: u32 = 0x01;
pub const CRYPTO_RC4: u32 = 0x02;

fn sha1_parts(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HASH('req2', SKEY): how an MSE peer names a torrent; seeders index their
/// torrents by it.
pub fn req2_hash(info_hash: &InfoHash) -> [u8; 20] {
    sha1_parts(&[b"req2", info_hash])
}

/// RC4 as MSE uses it (the first 1024 bytes of key stream discarded).
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    pub fn new(key: &[u8]) -> Self {
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, usize::from(j));
        }
        let mut rc4 = Self { s, i: 0, j: 0 };
        rc4.apply(&mut [0u8; 1024]);
        rc4
    }

    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[usize::from(self.i)]);
            self.s.swap(usize::from(self.i), usize::from(self.j));
            let k =
                self.s[usize::from(self.s[usize::from(self.i)].wrapping_add(self.s[usize::from(self.j)]))];
            *b ^= k;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("MSE: no req1 marker within the padding limit")]
    NoSync,
    #[error("MSE: the peer asked for a torrent we do not seed")]
    UnknownTorrent,
    #[error("MSE: verification constant is wrong")]
    BadVc,
    #[error("MSE: padding of {0} bytes is over 512")]
    PadTooLong(usize),
    #[error("MSE: the peer offers no method we support ({0:#x})")]
    NoCommonMethod(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Plain,
    Rc4,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    ReadYa,
    FindReq1,
    ReadReq2,
    /// Waiting for the driver to resolve the req2 hash to an info hash.
    Lookup,
    ReadVc,
    ReadPadC(usize),
    ReadIaLen,
    ReadIa(usize),
    Established(Method),
    Failed,
}

pub struct MseResponder {
    state: State,
    input: Vec<u8>,
    private: BigUint,
    secret: [u8; KEY_LEN],
    req2_obscured: [u8; 20],
    /// keyA stream: decrypts what the peer sends.
    decrypt: Option<Rc4>,
    /// keyB stream: encrypts what we send.
    encrypt: Option<Rc4>,
    provided: u32,
    output: Vec<u8>,
    plain: Vec<u8>,
    info_hash: Option<InfoHash>,
}

fn prime() -> BigUint {
    BigUint::parse_bytes(PRIME_HEX, 16).expect("valid prime")
}

fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

impl MseResponder {
    pub fn new() -> Self {
        let mut private = [0u8; 20];
        getrandom::fill(&mut private).expect("the operating system provides randomness");
        Self::with_private_key(&private)
    }

    /// With a chosen 160-bit private key (tests use fixed keys).
    pub fn with_private_key(private: &[u8; 20]) -> Self {
        Self {
            state: State::ReadYa,
            input: Vec::new(),
            private: BigUint::from_bytes_be(private),
            secret: [0; KEY_LEN],
            req2_obscured: [0; 20],
            decrypt: None,
            encrypt: None,
            provided: 0,
            output: Vec::new(),
            plain: Vec::new(),
            info_hash: None,
        }
    }

    /// The obscured req2 hash, once read, until [`resolve`](Self::resolve).
    /// The driver XORs nothing: it passes the req2 hash this returns to its
    /// index of [`req2_hash`] values.
    pub fn pending_lookup(&self) -> Option<[u8; 20]> {
        if self.state != State::Lookup {
            return None;
        }
        let req3 = sha1_parts(&[b"req3", &self.secret]);
        let mut req2 = self.req2_obscured;
        for (a, b) in req2.iter_mut().zip(req3) {
            *a ^= b;
        }
        Some(req2)
    }

    /// The info hash the peer named, once resolved.
    pub fn info_hash(&self) -> Option<&InfoHash> {
        self.info_hash.as_ref()
    }

    pub fn method(&self) -> Option<Method> {
        match self.state {
            State::Established(m) => Some(m),
            _ => None,
        }
    }

    /// The driver's answer to [`pending_lookup`](Self::pending_lookup).
    pub fn resolve(&mut self, info_hash: Option<InfoHash>) -> Result<(), MseError> {
        if self.state != State::Lookup {
            return Ok(());
        }
        let Some(skey) = info_hash else {
            self.state = State::Failed;
            return Err(MseError::UnknownTorrent);
        };
        self.decrypt = Some(Rc4::new(&sha1_parts(&[b"keyA", &self.secret, &skey])));
        self.encrypt = Some(Rc4::new(&sha1_parts(&[b"keyB", &self.secret, &skey])));
        self.info_hash = Some(skey);
        self.state = State::ReadVc;
        self.advance()
    }

    /// Feeds bytes from the socket.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), MseError> {
        match self.state {
            State::Failed => Ok(()),
            State::Established(method) => {
                let start = self.plain.len();
                self.plain.extend_from_slice(data);
                if method == Method::Rc4 {
                    self.decrypt
                        .as_mut()
                        .expect("keys set")
                        .apply(&mut self.plain[start..]);
                }
                Ok(())
            }
            _ => {
                self.input.extend_from_slice(data);
                self.advance()
            }
        }
    }

    /// Bytes of the handshake to send to the peer.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Decrypted bytes for the BitTorrent session.
    pub fn take_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }

    /// Encrypts (RC4) or passes through session output, in order.
    pub fn encrypt_outgoing(&mut self, data: &mut [u8]) {
        if self.method() == Some(Method::Rc4) {
            self.encrypt.as_mut().expect("keys set").apply(data);
        }
    }

    fn fail(&mut self, e: MseError) -> Result<(), MseError> {
        self.state = State::Failed;
        Err(e)
    }

    fn decrypt_front(&mut self, n: usize) -> Vec<u8> {
        let mut head: Vec<u8> = self.input.drain(..n).collect();
        self.decrypt.as_mut().expect("keys set").apply(&mut head);
        head
    }

    fn advance(&mut self) -> Result<(), MseError> {
        loop {
            match self.state {
                State::ReadYa => {
                    if self.input.len() < KEY_LEN {
                        return Ok(());
                    }
                    let p = prime();
                    let ya = BigUint::from_bytes_be(&self.input[..KEY_LEN]);
                    self.input.drain(..KEY_LEN);
                    let yb = BigUint::from(2u32).modpow(&self.private, &p);
                    self.secret = to_key_bytes(&ya.modpow(&self.private, &p));
                    self.output.extend_from_slice(&to_key_bytes(&yb));
                    // A little padding so our reply has no fixed length.
                    let mut pad_len = [0u8; 1];
                    getrandom::fill(&mut pad_len).expect("randomness");
                    let mut pad = vec![0u8; usize::from(pad_len[0] % 64)];
                    getrandom::fill(&mut pad).expect("randomness");
                    self.output.extend_from_slice(&pad);
                    self.state = State::FindReq1;
                }
                State::FindReq1 => {
                    let req1 = sha1_parts(&[b"req1", &self.secret]);
                    let window = &self.input[..self.input.len().min(MAX_PAD + 20)];
                    match window.windows(20).position(|w| w == req1) {
                        Some(at) => {
                            self.input.drain(..at + 20);
                            self.state = State::ReadReq2;
                        }
                        None if self.input.len() >= MAX_PAD + 20 => return self.fail(MseError::NoSync),
                        None => return Ok(()),
                    }
                }
                State::ReadReq2 => {
                    if self.input.len() < 20 {
                        return Ok(());
                    }
                    self.req2_obscured.copy_from_slice(&self.input[..20]);
                    self.input.drain(..20);
                    self.state = State::Lookup;
                    return Ok(());
                }
                State::Lookup | State::Failed | State::Established(_) => return Ok(()),
                State::ReadVc => {
                    if self.input.len() < 14 {
                        return Ok(());
                    }
                    let head = self.decrypt_front(14);
                    if head[..8] != VC {
                        return self.fail(MseError::BadVc);
                    }
                    self.provided = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                    let pad = usize::from(u16::from_be_bytes([head[12], head[13]]));
                    if pad > MAX_PAD {
                        return self.fail(MseError::PadTooLong(pad));
                    }
                    self.state = State::ReadPadC(pad);
                }
                State::ReadPadC(pad) => {
                    if self.input.len() < pad {
                        return Ok(());
                    }
                    self.decrypt_front(pad);
                    self.state = State::ReadIaLen;
                }
                State::ReadIaLen => {
                    if self.input.len() < 2 {
                        return Ok(());
                    }
                    let len = self.decrypt_front(2);
                    self.state = State::ReadIa(usize::from(u16::from_be_bytes([len[0], len[1]])));
                }
                State::ReadIa(len) => {
                    if self.input.len() < len {
                        return Ok(());
                    }
                    let ia = self.decrypt_front(len);
                    // Plaintext when offered (as libtorrent's responder
                    // does): RC4 costs CPU on every byte we serve. Peers
                    // that insist on RC4 offer nothing else.
                    let method = if self.provided & CRYPTO_PLAIN != 0 {
                        Method::Plain
                    } else if self.provided & CRYPTO_RC4 != 0 {
                        Method::Rc4
                    } else {
                        return self.fail(MseError::NoCommonMethod(self.provided));
                    };
                    let select = match method {
                        Method::Rc4 => CRYPTO_RC4,
                        Method::Plain => CRYPTO_PLAIN,
                    };
                    let mut reply = Vec::with_capacity(14);
                    reply.extend_from_slice(&VC);
                    reply.extend_from_slice(&select.to_be_bytes());
                    reply.extend_from_slice(&0u16.to_be_bytes());
                    self.encrypt.as_mut().expect("keys set").apply(&mut reply);
                    self.output.extend_from_slice(&reply);
                    // The initial payload was RC4-encrypted whatever the
                    // choice; what follows is encrypted only under RC4.
                    self.plain.extend_from_slice(&ia);
                    self.state = State::Established(method);
                    let rest = std::mem::take(&mut self.input);
                    return self.handle_input(&rest);
                }
            }
        }
    }
}

impl Default for MseResponder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initiator's side, written from the spec, to drive the responder.
    struct Initiator {
        private: BigUint,
        secret: [u8; KEY_LEN],
        enc: Option<Rc4>,
        dec: Option<Rc4>,
    }

    impl Initiator {
        fn new(seed: u8) -> Self {
            Self {
                private: BigUint::from_bytes_be(&[seed; 20]),
                secret: [0; KEY_LEN],
                enc: None,
                dec: None,
            }
        }
        fn ya(&self) -> Vec<u8> {
            to_key_bytes(&BigUint::from(2u32).modpow(&self.private, &prime())).to_vec()
        }
        fn step3(&mut self, yb: &[u8], skey: &InfoHash, provide: u32, pad_c: usize, ia: &[u8]) -> Vec<u8> {
            let p = prime();
            self.secret = to_key_bytes(&BigUint::from_bytes_be(&yb[..KEY_LEN]).modpow(&self.private, &p));
            self.enc = Some(Rc4::new(&sha1_parts(&[b"keyA", &self.secret, skey])));
            self.dec = Some(Rc4::new(&sha1_parts(&[b"keyB", &self.secret, skey])));
            let mut out = sha1_parts(&[b"req1", &self.secret]).to_vec();
            let req2 = req2_hash(skey);
            let req3 = sha1_parts(&[b"req3", &self.secret]);
            out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
            let mut body = VC.to_vec();
            body.extend_from_slice(&provide.to_be_bytes());
            body.extend_from_slice(&(pad_c as u16).to_be_bytes());
            body.extend(std::iter::repeat_n(0u8, pad_c));
            body.extend_from_slice(&(ia.len() as u16).to_be_bytes());
            body.extend_from_slice(ia);
            self.enc.as_mut().unwrap().apply(&mut body);
            out.extend(body);
            out
        }
    }

    fn handshake_through(provide: u32, split: usize) -> (MseResponder, Initiator, InfoHash) {
        let skey: InfoHash = [0x42; 20];
        let mut b = MseResponder::with_private_key(&[7; 20]);
        let mut a = Initiator::new(3);
        let mut opening = a.ya();
        opening.extend_from_slice(&[0xAA; 300]); // PadA
        for chunk in opening.chunks(split) {
            b.handle_input(chunk).unwrap();
        }
        let yb = b.take_output();
        assert!(yb.len() >= KEY_LEN && yb.len() < KEY_LEN + 64);
        let step3 = a.step3(&yb, &skey, provide, 17, b"\x13BitTorrent protocol");
        for chunk in step3.chunks(split) {
            b.handle_input(chunk).unwrap();
            if let Some(req2) = b.pending_lookup() {
                assert_eq!(req2, req2_hash(&skey));
                b.resolve(Some(skey)).unwrap();
            }
        }
        (b, a, skey)
    }

    #[test]
    fn rc4_matches_a_known_vector() {
        // RFC 6229, key 0x0102030405, stream bytes 1024..1040 (MSE drops
        // the first 1024, so the stream starts there).
        let mut r = Rc4::new(&[1, 2, 3, 4, 5]);
        let mut buf = [0u8; 16];
        r.apply(&mut buf);
        assert_eq!(
            buf,
            [
                0x30, 0xab, 0xbc, 0xc7, 0xc2, 0x0b, 0x01, 0x60, 0x9f, 0x23, 0xee, 0x2d, 0x5f, 0x6b, 0xb7,
                0xdf
            ]
        );
    }

    #[test]
    fn rc4_handshake_and_stream_round_trip() {
        for split in [1, 7, 64, 4096] {
            let (mut b, mut a, skey) = handshake_through(CRYPTO_RC4, split);
            assert_eq!(b.method(), Some(Method::Rc4));
            assert_eq!(b.info_hash(), Some(&skey));
            assert_eq!(b.take_plain(), b"\x13BitTorrent protocol");
            let mut reply = b.take_output();
            a.dec.as_mut().unwrap().apply(&mut reply);
            assert_eq!(&reply[..8], &VC);
            assert_eq!(u32::from_be_bytes(reply[8..12].try_into().unwrap()), CRYPTO_RC4);
            // Stream in both directions.
            let mut to_b = b"interested".to_vec();
            a.enc.as_mut().unwrap().apply(&mut to_b);
            b.handle_input(&to_b).unwrap();
            assert_eq!(b.take_plain(), b"interested");
            let mut to_a = b"piece data".to_vec();
            b.encrypt_outgoing(&mut to_a);
            a.dec.as_mut().unwrap().apply(&mut to_a);
            assert_eq!(to_a, b"piece data");
        }
    }

    #[test]
    fn plaintext_selected_when_offered() {
        let (mut b, _a, _) = handshake_through(CRYPTO_PLAIN | CRYPTO_RC4, 50);
        assert_eq!(b.method(), Some(Method::Plain));
        b.handle_input(b"clear").unwrap();
        assert_eq!(b.take_plain(), b"\x13BitTorrent protocolclear");
        let mut out = b"as is".to_vec();
        b.encrypt_outgoing(&mut out);
        assert_eq!(out, b"as is");
    }

    #[test]
    fn hostile_openers_fail_within_bounds() {
        let mut b = MseResponder::with_private_key(&[7; 20]);
        b.handle_input(&[0x55; KEY_LEN]).unwrap();
        assert_eq!(b.handle_input(&[0x55; MAX_PAD + 20]), Err(MseError::NoSync));
        let (mut b, _, _) = {
            let skey: InfoHash = [1; 20];
            let mut b = MseResponder::with_private_key(&[7; 20]);
            let mut a = Initiator::new(3);
            b.handle_input(&a.ya()).unwrap();
            let yb = b.take_output();
            let step3 = a.step3(&yb, &skey, CRYPTO_RC4, 0, b"");
            b.handle_input(&step3[..40]).unwrap();
            assert!(b.pending_lookup().is_some());
            (b, a, skey)
        };
        assert_eq!(b.resolve(None), Err(MseError::UnknownTorrent));
    }

    #[test]
    fn no_common_method_fails() {
        let skey: InfoHash = [1; 20];
        let mut b = MseResponder::with_private_key(&[7; 20]);
        let mut a = Initiator::new(3);
        b.handle_input(&a.ya()).unwrap();
        let yb = b.take_output();
        let step3 = a.step3(&yb, &skey, 0x08, 0, b"");
        b.handle_input(&step3).unwrap();
        assert_eq!(b.resolve(Some(skey)), Err(MseError::NoCommonMethod(8)));
    }
}
