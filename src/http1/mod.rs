//! HTTP/1.1, both directions, on the model of Pingora's HTTP/1 codec: what
//! both share (`common`: framing, hop-by-hop headers, buffers), bodies
//! (`body`: the chunked decoder), the server side (`server`: the loop that
//! reads request heads and writes responses) and the client side (`client`:
//! request heads out, response heads in).

mod body;
mod client;
mod common;
pub(crate) mod server;

pub use body::{BodyError, ChunkedDecoder, Decoded};
pub use client::{
    MAX_RESPONSE_HEAD_BYTES, MAX_RESPONSE_HEADERS, ResponseError, ResponseHead,
    encode_request_head, parse_response_head,
};
pub use common::{
    Added, Framing, HOP_BY_HOP, KEEP_ALIVE, Prefixed, READ_RESERVE_BYTES, chunk_size_hex, fill,
    is_connection_option, lists_token, poll_fill,
};
