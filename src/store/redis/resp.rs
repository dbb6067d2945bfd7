//! The RESP2 replies of a standalone Redis, parsed for the direct
//! connection (`connection.rs`).
//!
//! Hand-written, not redis-rs's parser: that one is built on `combine`
//! and cost the proxy about 1,000 instructions per reply element
//! (callgrind: 6,200 for a session read's five-field `HMGET` reply, of the
//! 22,700 a Redis read costs over a memory-store read). This one parses
//! the same reply in a few hundred. It yields redis-rs's own `Value`, so
//! every command and conversion of the store stays redis-rs's, and it is
//! checked against redis-rs's parser (tests below, and the `resp_reply`
//! fuzz target): whatever it accepts, redis-rs parses to the same value.

use ::redis::Value;

/// Deeper nesting than any reply of the store's commands and scripts.
const MAX_DEPTH: usize = 16;
/// Redis's own `proto-max-bulk-len` default.
const MAX_BULK_BYTES: usize = 512 * 1024 * 1024;
/// Elements reserved up front for an array whose elements have not all
/// arrived: a length alone never allocates more than this.
const MAX_PREALLOCATED: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply from Redis: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// One reply from the start of `buf`: the value and the bytes it took, or
/// `None` while the reply has not fully arrived.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    let mut pos = 0;
    Ok(value(buf, &mut pos, 0)?.map(|v| (v, pos)))
}

/// The line starting at `*pos` (without its CRLF), moving `pos` past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, Malformed> {
    let rest = &buf[*pos..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            *pos += cr + 2;
            Ok(Some(&rest[..cr]))
        }
        Some(_) => Err(Malformed("a line holds a lone CR")),
    }
}

fn integer(text: &[u8]) -> Result<i64, Malformed> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Malformed("not an integer"));
    }
    let mut n: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(Malformed("an integer out of range"))?;
    }
    Ok(n)
}

/// A length: -1 (none) or at least 0.
fn length(text: &[u8]) -> Result<Option<usize>, Malformed> {
    match integer(text)? {
        -1 => Ok(None),
        n if n >= 0 => usize::try_from(n)
            .map(Some)
            .map_err(|_| Malformed("a length out of range")),
        _ => Err(Malformed("a negative length")),
    }
}

fn value(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Value>, Malformed> {
    let start = *pos;
    let Some(&kind) = buf.get(start) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(text) = line(buf, pos)? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' if text == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(
            std::str::from_utf8(text)
                .map_err(|_| Malformed("a status that is not UTF-8"))?
                .to_owned(),
        ),
        b':' => Value::Int(integer(text)?),
        // Rare (a refused command, a script's error, NOSCRIPT once per
        // script): redis-rs's parser makes its error value, kind and all.
        b'-' => ::redis::parse_redis_value(&buf[start..*pos])
            .map_err(|_| Malformed("an error reply redis-rs does not read"))?,
        b'$' => match length(text)? {
            None => Value::Nil,
            Some(n) if n > MAX_BULK_BYTES => return Err(Malformed("a bulk string too long")),
            Some(n) => {
                let body = *pos;
                if buf.len() < body + n + 2 {
                    return Ok(None);
                }
                if &buf[body + n..body + n + 2] != b"\r\n" {
                    return Err(Malformed("a bulk string longer than its length"));
                }
                *pos = body + n + 2;
                Value::BulkString(buf[body..body + n].to_vec())
            }
        },
        b'*' => match length(text)? {
            None => Value::Nil,
            Some(_) if depth >= MAX_DEPTH => return Err(Malformed("arrays nested too deep")),
            Some(n) => {
                let mut items = Vec::with_capacity(n.min(MAX_PREALLOCATED));
                for _ in 0..n {
                    match value(buf, pos, depth + 1)? {
                        Some(v) => items.push(v),
                        None => return Ok(None),
                    }
                }
                Value::Array(items)
            }
        },
        _ => return Err(Malformed("an unknown reply type")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RESP2 text of a value, for the round trips below.
    fn encode(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Nil => out.extend_from_slice(b"$-1\r\n"),
            Value::Okay => out.extend_from_slice(b"+OK\r\n"),
            Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Value::BulkString(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                items.iter().for_each(|i| encode(i, out));
            }
            other => unreachable!("not RESP2: {other:?}"),
        }
    }

    /// A reply that redis-rs parses as this parser does, whole, and that is
    /// incomplete (never an error) cut anywhere short.
    /// The fuzz target's property, on a whole reply.
    fn agrees_with_redis_rs(wire: &[u8]) {
        let (_, used) = parse(wire).expect("parses").expect("complete");
        assert_eq!(used, wire.len());
        crate::fuzzing::resp_reply(wire);
    }

    #[test]
    fn replies_of_the_stores_commands_parse_as_redis_rs_parses_them() {
        for wire in [
            &b"+OK\r\n"[..],
            b"+PONG\r\n",
            b":0\r\n",
            b":-42\r\n",
            b":9223372036854775807\r\n",
            b":-9223372036854775808\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$5\r\nhello\r\n",
            b"$4\r\na\r\nb\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*5\r\n$13\r\n{\"user_id\":7}\r\n$3\r\nsid\r\n$-1\r\n$13\r\n1700000000000\r\n$0\r\n\r\n",
            b"*2\r\n$5\r\nsaved\r\n$8\r\na\x00b\x00c\x00\x00d\r\n",
            b"*2\r\n*1\r\n:1\r\n*0\r\n",
            b"-ERR wrong number of arguments\r\n",
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
            b"*2\r\n-WRONGTYPE Operation against a key\r\n:3\r\n",
        ] {
            agrees_with_redis_rs(wire);
        }
    }

    #[test]
    fn a_missing_script_is_the_error_redis_rs_reloads_it_on() {
        let (v, _) = parse(b"-NOSCRIPT No matching script.\r\n")
            .unwrap()
            .unwrap();
        let err = v.extract_error().unwrap_err();
        assert_eq!(
            err.kind(),
            ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
        );
    }

    #[test]
    fn random_replies_parse_as_redis_rs_parses_them() {
        // A small xorshift: the same cases on every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn random_value(next: &mut dyn FnMut() -> u64, depth: usize) -> Value {
            match next() % if depth < 3 { 6 } else { 5 } {
                0 => Value::Nil,
                1 => Value::Okay,
                2 => Value::Int(next() as i64),
                3 => Value::SimpleString(format!("s{}", next() % 1000)),
                4 => Value::BulkString((0..next() % 40).map(|_| next() as u8).collect()),
                _ => Value::Array(
                    (0..next() % 5)
                        .map(|_| random_value(next, depth + 1))
                        .collect(),
                ),
            }
        }
        for _ in 0..2_000 {
            let v = random_value(&mut next, 0);
            let mut wire = Vec::new();
            encode(&v, &mut wire);
            agrees_with_redis_rs(&wire);
            assert_eq!(parse(&wire).unwrap().unwrap().0, v);
        }
    }

    #[test]
    fn replies_follow_one_another_in_a_buffer() {
        let wire = b":1\r\n$2\r\nab\r\n*1\r\n+OK\r\n:2";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((v, used)) = parse(&wire[pos..]).unwrap() {
            got.push(v);
            pos += used;
        }
        assert_eq!(
            got,
            [
                Value::Int(1),
                Value::BulkString(b"ab".to_vec()),
                Value::Array(vec![Value::Okay])
            ]
        );
        assert_eq!(&wire[pos..], b":2");
    }

    #[test]
    fn malformed_replies_are_errors() {
        for wire in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"+a\rb\r\n",
            b"+\xff\r\n",
            b"_\r\n",
        ] {
            assert!(parse(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_length_alone_allocates_little() {
        assert_eq!(parse(b"*2000000000\r\n:1\r\n"), Ok(None));
        assert_eq!(parse(b"$400000000\r\nab"), Ok(None));
        assert!(parse(b"$600000000\r\n").is_err());
    }
}
