//! HTTP/1.1, both directions, on the model of Pingora's HTTP/1 codec: what
//! both share (`common`: framing, hop-by-hop headers, buffers), bodies
//! (`body`: the decoders, and the request body the server side streams),
//! the server side (`request` reads heads, `response` writes answers,
//! `server` is the connection loop) and the client side (`client`: request
//! heads out, response heads in). The upstream pool in `crate::upstream`
//! drives the client side.

mod body;
mod client;
mod common;
pub(crate) mod request;
mod response;
mod server;

pub use body::{
    BodyError, ChunkedDecoder, ClientBodyError, Decoded, Decoder, Fed, Feeder, Incoming,
    RequestBody,
};
pub use client::{
    MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS, ResponseError, ResponseHead,
    encode_request_head, parse_response_head,
};
pub use common::{
    Added, Framing, HOP_BY_HOP, KEEP_ALIVE, Prefixed, READ_RESERVE_BYTES, chunk_size_hex, fill,
    holds, is_connection_option, lists_token, poll_fill, poll_fill_body, poll_fill_from,
};
pub use request::{H2_PREFACE, Head, HeadLimits, Parsed, Spare};
pub use server::{ConnInfo, Handler, Io, Served, Tunnel, Upgraded, serve};
