//! Bencode (BEP 3): a bounded, zero-copy decoder and a small encoder.
//!
//! Input comes from the network, so the decoder never trusts a length: every
//! string length is checked against the bytes actually present before it is
//! sliced, integers are range-checked, and nesting depth is capped so a peer
//! cannot exhaust the stack with `llllll…`.

use std::fmt;

/// Nesting depth beyond which a document is rejected. Real documents (torrent
/// files, KRPC, extension messages) nest three or four levels.
pub const MAX_DEPTH: usize = 32;

/// A decoded value borrowing from the input buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Keys in input order; lookups are linear because real dicts are small.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bencode: unexpected end of input at byte {0}")]
    UnexpectedEnd(usize),
    #[error("bencode: invalid byte {byte:#04x} at {at}")]
    InvalidByte { byte: u8, at: usize },
    #[error("bencode: malformed integer at {0}")]
    BadInteger(usize),
    #[error("bencode: string length at {0} exceeds the input")]
    LengthOutOfBounds(usize),
    #[error("bencode: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("bencode: {0} trailing bytes after the value")]
    Trailing(usize),
}

impl<'a> Value<'a> {
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Decodes exactly one value filling the whole input.
pub fn decode(input: &[u8]) -> Result<Value<'_>, DecodeError> {
    let (value, used) = decode_prefix(input)?;
    if used != input.len() {
        return Err(DecodeError::Trailing(input.len() - used));
    }
    Ok(value)
}

/// Decodes one value from the front of `input` and returns how many bytes it
/// used. ut_metadata data messages carry raw bytes after a bencoded dict, so
/// callers need the split point.
pub fn decode_prefix(input: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    let mut parser = Parser { input, pos: 0 };
    let value = parser.value(0)?;
    Ok((value, parser.pos))
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEnd(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.integer(b'e')?;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut entries = Vec::new();
                while self.peek()? != b'e' {
                    let key = self.bytes()?;
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            byte => Err(DecodeError::InvalidByte { byte, at: self.pos }),
        }
    }

    fn integer(&mut self, terminator: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let end = self.input[start..]
            .iter()
            .take(21)
            .position(|&b| b == terminator)
            .map(|p| start + p)
            .ok_or_else(|| {
                if self.input.len() - start < 21 {
                    DecodeError::UnexpectedEnd(self.input.len())
                } else {
                    DecodeError::BadInteger(start)
                }
            })?;
        let digits = &self.input[start..end];
        let valid = match digits {
            [] | [b'-'] => false,
            [b'-', b'0', ..] => false,
            [b'0', _, ..] => false,
            [b'-', rest @ ..] | rest => rest.iter().all(u8::is_ascii_digit),
        };
        if !valid {
            return Err(DecodeError::BadInteger(start));
        }
        let text = std::str::from_utf8(digits).map_err(|_| DecodeError::BadInteger(start))?;
        let n = text.parse().map_err(|_| DecodeError::BadInteger(start))?;
        self.pos = end + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        match self.peek()? {
            b'0'..=b'9' => {}
            byte => return Err(DecodeError::InvalidByte { byte, at }),
        }
        let len = self.integer(b':')?;
        let len = usize::try_from(len).map_err(|_| DecodeError::BadInteger(at))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(DecodeError::LengthOutOfBounds(at))?;
        let out = &self.input[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

/// Appends bencode to a buffer. Callers write dict keys in sorted order, as
/// BEP 3 requires for anything that is hashed.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.buf.push(b'i');
        self.buf.extend_from_slice(n.to_string().as_bytes());
        self.buf.push(b'e');
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b.len().to_string().as_bytes());
        self.buf.push(b':');
        self.buf.extend_from_slice(b);
        self
    }
    /// Writes a string header for `len` bytes the caller appends itself.
    pub fn bytes_header(&mut self, len: usize) -> &mut Self {
        self.buf.extend_from_slice(len.to_string().as_bytes());
        self.buf.push(b':');
        self
    }
    pub fn begin_dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }
    pub fn begin_list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => {
                write!(f, "[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Dict(d) => {
                write!(f, "{{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{:?}: {v}", String::from_utf8_lossy(k))?;
                }
                write!(f, "}}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_values() {
        let v = decode(b"d3:bari-7e3:fool4:spami0eee").unwrap();
        assert_eq!(v.get(b"bar").unwrap().as_int(), Some(-7));
        let list = v.get(b"foo").unwrap().as_list().unwrap();
        assert_eq!(list[0].as_bytes(), Some(&b"spam"[..]));
        assert_eq!(list[1].as_int(), Some(0));
    }

    #[test]
    fn rejects_malformed_integers() {
        for bad in [&b"i-0e"[..], b"i03e", b"ie", b"i-e", b"i12", b"i1x2e"] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode(b"i99999999999999999999e").is_err());
    }

    #[test]
    fn rejects_lengths_beyond_input() {
        assert_eq!(decode(b"999999999999:x"), Err(DecodeError::LengthOutOfBounds(0)));
        assert!(decode(b"18446744073709551615:").is_err());
    }

    #[test]
    fn caps_nesting_depth() {
        let deep = "l".repeat(10_000);
        assert_eq!(decode(deep.as_bytes()), Err(DecodeError::TooDeep));
    }

    #[test]
    fn prefix_reports_used_length() {
        let (v, used) = decode_prefix(b"d1:ai1eeRAW").unwrap();
        assert_eq!(used, 8);
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(1));
        assert!(decode(b"d1:ai1eeRAW").is_err());
    }

    #[test]
    fn encoder_round_trips() {
        let mut e = Encoder::new();
        e.begin_dict()
            .bytes(b"a")
            .int(-3)
            .bytes(b"b")
            .begin_list()
            .bytes(b"x")
            .end()
            .end();
        let buf = e.finish();
        assert_eq!(buf, b"d1:ai-3e1:bl1:xee");
        assert!(decode(&buf).is_ok());
    }
}
