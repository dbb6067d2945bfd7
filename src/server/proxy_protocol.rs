//! The PROXY protocol (v1 text, v2 binary), as HAProxy, AWS NLB and other
//! load balancers send it before a connection's first byte: the address it
//! carries becomes the connection's peer. Parsed by `ppp`; read here
//! exactly to its end, so that the TLS handshake or HTTP request after it
//! is left untouched in the socket.

use ppp::{HeaderResult, v1, v2};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature's first five bytes; v1 starts with "PROXY".
const V2_START: &[u8; 5] = b"\r\n\r\n\0";
/// A v1 header's longest form (the specification's bound).
const V1_MAX: usize = 107;
/// v2 headers past this are refused: addresses and a few TLVs fit well within.
const V2_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY header failed")]
    Io(#[from] std::io::Error),
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("the PROXY header is too long")]
    TooLong,
    #[error("malformed PROXY header")]
    Malformed,
}

/// Reads one PROXY header; the source address it carries, or `None` when
/// it names none (v1 `UNKNOWN`, v2 `LOCAL`: a load balancer's own health
/// check, whose peer is the balancer itself).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; 5];
    stream.read_exact(&mut buf).await?;
    if buf.as_slice() == V2_START {
        // 16 bytes of fixed header, the last two the length of the rest.
        buf.resize(16, 0);
        stream.read_exact(&mut buf[5..]).await?;
        let rest = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if 16 + rest > V2_MAX {
            return Err(ProxyHeaderError::TooLong);
        }
        buf.resize(16 + rest, 0);
        stream.read_exact(&mut buf[16..]).await?;
    } else if buf.as_slice() == b"PROXY" {
        // Byte by byte up to CRLF: nothing past the header may be consumed.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyHeaderError::TooLong);
            }
            buf.push(stream.read_u8().await?);
        }
    } else {
        return Err(ProxyHeaderError::Missing);
    }
    source(&buf)
}

/// The source address of a whole header.
pub fn source(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) if h.header.len() == header.len() => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) if h.header.len() == header.len() => {
            if h.command == v2::Command::Local {
                return Ok(None);
            }
            Ok(match h.addresses {
                v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
            })
        }
        _ => Err(ProxyHeaderError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).await.unwrap();
        (r, rest)
    }

    fn v2(command: u8, addresses: v2::Addresses) -> Vec<u8> {
        v2::Builder::with_addresses(0x20 | command, v2::Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn v1_and_v2_carry_the_source_and_nothing_more_is_read() {
        let (r, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r.unwrap(), Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (r, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n").await;
        assert_eq!(r.unwrap(), Some("[2001:db8::7]:5555".parse().unwrap()));
        let (r, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r.unwrap(), None);

        let src: SocketAddr = "[2001:db8::9]:4000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut bytes = v2(0x01, (src, dst).into());
        bytes.extend_from_slice(b"\x16\x03\x01");
        let (r, rest) = read(&bytes).await;
        assert_eq!(r.unwrap(), Some(src));
        assert_eq!(rest, b"\x16\x03\x01", "the TLS hello after it is untouched");
        let local = v2(0x00, v2::Addresses::Unspecified);
        assert_eq!(read(&local).await.0.unwrap(), None, "LOCAL: a health check");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        ] {
            assert!(read(bad).await.0.is_err(), "{bad:?}");
        }
        let long = format!("PROXY TCP4 {} 1 2\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(ProxyHeaderError::TooLong)
        ));
        let (r, _) = read(b"PROX").await;
        assert!(matches!(r, Err(ProxyHeaderError::Io(_))), "cut short");
    }
}
