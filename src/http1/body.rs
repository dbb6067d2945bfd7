//! Bodies on the wire: the chunked decoder both directions read with, and
//! its errors.

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Most trailer bytes accepted after the last chunk; trailers are dropped.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the chunked body is malformed")]
    BadChunk,
    #[error("the connection closed before the body was complete")]
    Incomplete,
    #[error("reading the body failed")]
    Io(#[from] std::io::Error),
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece: read more.
    NeedMore,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Decodes `Transfer-Encoding: chunked` from a buffer that reads append to.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailer_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::BadChunk);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE_BYTES)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        self.trailer_bytes += line.len();
                        if self.trailer_bytes > MAX_TRAILER_BYTES {
                            return Err(BodyError::BadChunk);
                        }
                    }
                }
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without the CRLF) off the buffer.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BodyError> {
    let Some(end) = buf.iter().take(max + 2).position(|&b| b == b'\n') else {
        return if buf.len() > max + 1 {
            Err(BodyError::BadChunk)
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(BodyError::BadChunk);
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BodyError::BadChunk);
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    if let Some(i) = ext
        && rest[i] != b';'
    {
        return Err(BodyError::BadChunk);
    }
    if rest.iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
        return Err(BodyError::BadChunk);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| BodyError::BadChunk)?;
    u64::from_str_radix(text, 16).map_err(|_| BodyError::BadChunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded body, and what was left after it (buffered and unread).
    fn decode_all(mut input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, [&buf[..], input].concat())),
                Decoded::NeedMore => {
                    if input.is_empty() {
                        return Err(BodyError::Incomplete);
                    }
                    let n = step.min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_body_decodes_whatever_the_read_sizes() {
        let wire = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) = decode_all(wire, step).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
            // What follows the body belongs to the next response.
            assert_eq!(rest, b"NEXT", "step {step}");
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX0\r\n\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"4 x\r\nWiki\r\n",
            b"4;\x01\r\nWiki\r\n",
        ] {
            assert!(
                matches!(decode_all(wire, 64), Err(BodyError::BadChunk)),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = vec![b'1'; MAX_CHUNK_LINE_BYTES + 10];
        assert!(matches!(
            decode_all(&long_line, 64),
            Err(BodyError::BadChunk)
        ));
    }

    #[test]
    fn a_truncated_chunked_body_is_incomplete() {
        assert!(matches!(
            decode_all(b"4\r\nWi", 64),
            Err(BodyError::Incomplete)
        ));
    }
}
