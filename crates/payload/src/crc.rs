//! CRC-32 of long zero runs without reading them, for zip padding entries.
//!
//! Processing zero bytes multiplies the CRC register by x^(8n) modulo the
//! CRC polynomial, so a run of n zeros costs O(log n) multiplications in
//! GF(2)[x] instead of n bytes of work (the method zlib's crc32_combine uses).

/// The reflected IEEE polynomial.
const POLY: u32 = 0xEDB8_8320;
/// x^0 in the reflected representation.
const ONE: u32 = 1 << 31;

/// a·b mod P in the reflected representation.
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = ONE;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        if m == 0 {
            return p;
        }
    }
}

/// x^(8·n) mod P.
fn x_pow_8n(mut n: u64) -> u32 {
    // x^(2^k) for k = 3.. (x^8, x^16, ...), built by squaring.
    let mut square = mul_mod_p(ONE >> 1, ONE >> 1); // x^2
    square = mul_mod_p(square, square); // x^4
    square = mul_mod_p(square, square); // x^8
    let mut p = ONE;
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(square, p);
        }
        n >>= 1;
        square = mul_mod_p(square, square);
    }
    p
}

/// CRC-32 (as zip stores it) of `n` zero bytes.
pub fn crc32_of_zeros(n: u64) -> u32 {
    mul_mod_p(x_pow_8n(n), 0xFFFF_FFFF) ^ 0xFFFF_FFFF
}

/// CRC-32 of `a ‖ b` from the CRCs of `a` and `b` and the length of `b`.
pub fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul_mod_p(x_pow_8n(len_b), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_match_a_byte_by_byte_crc() {
        for n in [0u64, 1, 2, 7, 64, 1000, 65_537, 1 << 20] {
            let want = crc32fast::hash(&vec![0u8; n as usize]);
            assert_eq!(crc32_of_zeros(n), want, "n = {n}");
        }
    }

    #[test]
    fn combine_matches_hashing_the_concatenation() {
        let a = b"sample-title-000123.mp4";
        let b = b"warning text, then more";
        let mut ab = a.to_vec();
        ab.extend_from_slice(b);
        assert_eq!(
            crc32_combine(crc32fast::hash(a), crc32fast::hash(b), b.len() as u64),
            crc32fast::hash(&ab)
        );
    }
}
