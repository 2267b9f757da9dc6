//! SPDY/3.1 framing: the subset kubectl's port-forward speaks, server side.
//!
//! kubectl (client-go, through `github.com/moby/spdystream`) opens two
//! streams per forwarded connection with SYN_STREAM, sends DATA with FIN,
//! RST_STREAM(CANCEL) a stream it abandons, PINGs every few seconds and
//! GOAWAY on exit. Frames (draft-mbelshe-httpbis-spdy-00, §2.2):
//! - control: `1 | version(15) = 3 | type(16) | flags(8) | length(24) | body`;
//! - data: `0 | stream-id(31) | flags(8) | length(24) | payload`.
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are
//! `u32 count, (u32 len, name, u32 len, value)*`, compressed with one zlib
//! stream per direction for the whole connection, primed with the SPDY/3
//! dictionary (§2.6.10.1) and ended by a sync flush.
//!
//! Flow control is deliberately absent: spdystream never sends
//! WINDOW_UPDATE, so a peer that honoured the 64 KiB initial window would
//! stall every transfer. SETTINGS and WINDOW_UPDATE are parsed and ignored.
//! No crate does this (the one SPDY/3.1 crate is a client with flow control).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header dictionary (adler32 `0xe3c6a7c2`), as spdystream has it.
pub const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// A frame's length field has 24 bits.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The longest frame body accepted from a client: kubectl's DATA frames
/// carry at most 32 KiB (`io.Copy`'s buffer), its header blocks ~50 bytes.
/// A longer frame ends the session before its bytes are buffered.
pub const MAX_FRAME: usize = 64 * 1024;
/// The largest decompressed header block accepted (kubectl's are ~50 bytes).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// A header block's name/value pairs, names lower-case.
pub type Headers = Vec<(String, String)>;

/// One frame, as far as port-forward cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control types: ignored.
    Ignored {
        kind: u16,
    },
}

/// Why the peer's bytes are not SPDY/3.1.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("a {kind} frame of {len} bytes is too short")]
    Short { kind: &'static str, len: usize },
    #[error("the header block is not valid zlib")]
    Inflate(#[source] flate2::DecompressError),
    #[error("a frame of {len} bytes is longer than the {MAX_FRAME} accepted")]
    FrameTooLarge { len: usize },
    #[error("the header block needs an unknown dictionary")]
    Dictionary,
    #[error("the header block is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("the header block is malformed")]
    HeaderBlock,
}

/// Reads frames from a byte stream cut anywhere (the WebSocket tunnel
/// delivers a frame in pieces, several frames in one message).
pub struct Decoder {
    buffer: BytesMut,
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            buffer: BytesMut::new(),
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// More bytes from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` until more bytes arrive. The buffer
    /// holds at most one frame ([`MAX_FRAME`]) plus what the last read
    /// brought.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let head = &self.buffer[..8];
        let len = usize::from(head[5]) << 16 | usize::from(head[6]) << 8 | usize::from(head[7]);
        if len > MAX_FRAME {
            return Err(SpdyError::FrameTooLarge { len });
        }
        if self.buffer.len() < 8 + len {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(8 + len);
        let word = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        let body = frame.freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                flags,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != 3 {
            return Err(SpdyError::Version(version));
        }
        self.control((word & 0xffff) as u16, flags, body).map(Some)
    }

    fn control(&mut self, kind: u16, flags: u8, mut body: Bytes) -> Result<Frame, SpdyError> {
        let need = |name: &'static str, min: usize, body: &Bytes| {
            if body.len() < min {
                Err(SpdyError::Short {
                    kind: name,
                    len: body.len(),
                })
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10, &body)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot
                let headers = self.headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                }
            }
            SYN_REPLY => {
                need("SYN_REPLY", 4, &body)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            }
            HEADERS => {
                need("HEADERS", 4, &body)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                Frame::Headers { stream_id, headers }
            }
            RST_STREAM => {
                need("RST_STREAM", 8, &body)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            PING => {
                need("PING", 4, &body)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need("GOAWAY", 4, &body)?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                // SPDY/2 peers sent no status.
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            SETTINGS | WINDOW_UPDATE => Frame::Ignored { kind },
            other => Frame::Ignored { kind: other },
        })
    }

    /// Inflates one header block on the connection's zlib stream and parses it.
    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::HeaderBlockTooLarge);
                }
                out.reserve(out.len());
            }
            let (before_in, before_out) = (self.inflate.total_in(), out.len());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before_in) as usize..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    // This call's progress, not the block's so far: a call
                    // that moves nothing would otherwise spin here.
                    let progress = out.len() > before_out || self.inflate.total_in() > before_in;
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    if !progress && out.len() < out.capacity() {
                        return Err(SpdyError::HeaderBlock);
                    }
                }
                Err(err) => match err.needs_dictionary() {
                    Some(id) if id == adler32(DICTIONARY) => self
                        .inflate
                        .set_dictionary(DICTIONARY)
                        .map(|_| ())
                        .map_err(SpdyError::Inflate)?,
                    Some(_) => return Err(SpdyError::Dictionary),
                    None => return Err(SpdyError::Inflate(err)),
                },
            }
        }
        parse_header_block(&out)
    }
}

/// `u32 count, (u32 len, name, u32 len, value)*`.
fn parse_header_block(mut block: &[u8]) -> Result<Headers, SpdyError> {
    fn string(block: &mut &[u8]) -> Result<String, SpdyError> {
        if block.len() < 4 {
            return Err(SpdyError::HeaderBlock);
        }
        let len = block.get_u32() as usize;
        if block.len() < len {
            return Err(SpdyError::HeaderBlock);
        }
        let (value, rest) = block.split_at(len);
        *block = rest;
        String::from_utf8(value.to_vec()).map_err(|_| SpdyError::HeaderBlock)
    }
    if block.len() < 4 {
        return Err(SpdyError::HeaderBlock);
    }
    let count = block.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = string(&mut block)?;
        let value = string(&mut block)?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// The value of header `name` (names are lower-case on the wire).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Writes control frames with header blocks on the connection's outgoing
/// zlib stream; frames without headers need no encoder ([`data_frame`]).
pub struct Encoder {
    deflate: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        Self { deflate }
    }
}

impl Encoder {
    /// SYN_REPLY for `stream_id` with `headers` (kubectl's peers send none).
    pub fn syn_reply(&mut self, stream_id: u32, headers: &Headers) -> Bytes {
        let mut body = Vec::with_capacity(64);
        body.put_u32(stream_id & 0x7fff_ffff);
        self.compress_headers(headers, &mut body);
        control_frame(SYN_REPLY, 0, &body)
    }

    /// SYN_STREAM, as a client opens a stream (the agent never does).
    #[cfg(test)]
    pub fn syn_stream(&mut self, stream_id: u32, headers: &Headers) -> Bytes {
        let mut body = Vec::with_capacity(64);
        body.put_u32(stream_id & 0x7fff_ffff);
        body.put_u32(0); // associated stream
        body.put_u16(0); // priority, slot
        self.compress_headers(headers, &mut body);
        control_frame(SYN_STREAM, 0, &body)
    }

    fn compress_headers(&mut self, headers: &Headers, out: &mut Vec<u8>) {
        let mut block = Vec::new();
        block.put_u32(headers.len() as u32);
        for (name, value) in headers {
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        let mut input = &block[..];
        loop {
            out.reserve(input.len() + 64);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("compressing into a growable buffer cannot fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when every byte went in and the flush had room to finish.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
    }
}

fn control_frame(kind: u16, flags: u8, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_u16(0x8003);
    frame.put_u16(kind);
    frame.put_u8(flags);
    frame.put_uint(body.len() as u64, 3);
    frame.put_slice(body);
    frame.freeze()
}

/// A DATA frame (`data` at most [`MAX_PAYLOAD`] bytes).
pub fn data_frame(stream_id: u32, fin: bool, data: &[u8]) -> Bytes {
    debug_assert!(data.len() <= MAX_PAYLOAD);
    let mut frame = BytesMut::with_capacity(8 + data.len());
    frame.put_u32(stream_id & 0x7fff_ffff);
    frame.put_u8(if fin { FLAG_FIN } else { 0 });
    frame.put_uint(data.len() as u64, 3);
    frame.put_slice(data);
    frame.freeze()
}

pub fn ping_frame(id: u32) -> Bytes {
    control_frame(PING, 0, &id.to_be_bytes())
}

pub fn rst_stream_frame(stream_id: u32, status: u32) -> Bytes {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    body[4..].copy_from_slice(&status.to_be_bytes());
    control_frame(RST_STREAM, 0, &body)
}

pub fn goaway_frame(last_good_stream_id: u32) -> Bytes {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
    control_frame(GOAWAY, 0, &body)
}

/// Adler-32 (RFC 1950 §9), the id zlib gives a preset dictionary.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_spdy3_s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
    }

    /// kubectl 1.32's first SYN_STREAM (`port-forward … :80`), as it arrived
    /// over the WebSocket tunnel in 8 messages (2,2,4,4,4,1,1,51 bytes); fed
    /// in those pieces. The decoded headers are what /tmp/r16/decode.py (a
    /// Python zlib) read from the same capture.
    #[test]
    fn kubectl_s_syn_stream_decodes_from_its_pieces() {
        let captured = include_bytes!("testdata/kubectl-syn-stream.bin");
        let mut decoder = Decoder::default();
        let mut at = 0;
        for piece in [2, 2, 4, 4, 4, 1, 1] {
            decoder.extend(&captured[at..at + piece]);
            at += piece;
            assert_eq!(decoder.next_frame().unwrap(), None);
        }
        decoder.extend(&captured[at..]);
        let frame = decoder.next_frame().unwrap().unwrap();
        let Frame::SynStream {
            stream_id,
            flags,
            headers,
        } = frame
        else {
            panic!("{frame:?}")
        };
        assert_eq!((stream_id, flags), (1, 0));
        assert_eq!(header(&headers, "streamtype"), Some("error"));
        assert_eq!(header(&headers, "port"), Some("80"));
        assert_eq!(header(&headers, "requestid"), Some("0"));
        assert_eq!(decoder.next_frame().unwrap(), None);
    }

    /// Two SYN_REPLYs a Python zlib wrote on one stream (the second one
    /// continues the first's compression context), which kubectl accepted.
    #[test]
    fn consecutive_header_blocks_share_one_zlib_stream() {
        let captured = include_bytes!("testdata/server-syn-replies.bin");
        let mut decoder = Decoder::default();
        decoder.extend(captured);
        for id in [1, 3] {
            assert_eq!(
                decoder.next_frame().unwrap(),
                Some(Frame::SynReply {
                    stream_id: id,
                    flags: 0,
                    headers: vec![]
                })
            );
        }
    }

    #[test]
    fn our_header_blocks_start_with_the_dictionary_id_and_round_trip() {
        let mut encoder = Encoder::default();
        let first = encoder.syn_reply(1, &vec![]);
        // zlib header with FDICT, then the dictionary's adler32.
        assert_eq!(&first[12..18], &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]);
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]), "sync flush");
        let second = encoder.syn_reply(3, &pairs(&[("port", "80")]));
        let mut decoder = Decoder::default();
        decoder.extend(&first);
        decoder.extend(&second);
        assert!(matches!(
            decoder.next_frame().unwrap(),
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: pairs(&[("port", "80")])
            })
        );
    }

    #[test]
    fn data_ping_rst_and_goaway_frames_have_the_wire_layout() {
        // Layouts as spdystream writes them (spdy/write.go).
        assert_eq!(
            &data_frame(3, true, b"hi")[..],
            &[0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(&ping_frame(1)[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(
            &rst_stream_frame(7, status::CANCEL)[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 5]
        );
        let mut decoder = Decoder::default();
        decoder.extend(&goaway_frame(9));
        decoder.extend(&data_frame(5, false, &[]));
        decoder.extend(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]);
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::GoAway {
                last_good_stream_id: 9,
                status: 0
            })
        );
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new()
            })
        );
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::Ignored {
                kind: WINDOW_UPDATE
            })
        );
    }

    /// The review's memory attack: a frame's declared 16 MiB were buffered
    /// (and reserved up front) before anything looked at it.
    #[test]
    fn a_frame_longer_than_any_client_s_is_refused_from_its_head() {
        for head in [
            [0, 0, 0, 3, 0, 0xff, 0xff, 0xff],
            [0x80, 3, 0, 1, 0, 0x01, 0, 1],
            [0, 0, 0, 3, 0, 0x01, 0, 1],
        ] {
            let mut decoder = Decoder::default();
            decoder.extend(&head);
            assert!(
                matches!(decoder.next_frame(), Err(SpdyError::FrameTooLarge { .. })),
                "{head:?}"
            );
            assert!(decoder.buffer.capacity() < 64 * 1024, "{head:?}");
        }
        // kubectl's largest frame, 32 KiB of DATA, and a 64 KiB one pass.
        let mut decoder = Decoder::default();
        decoder.extend(&data_frame(3, false, &[7; 32 * 1024]));
        decoder.extend(&data_frame(3, true, &[7; MAX_FRAME]));
        for len in [32 * 1024, MAX_FRAME] {
            let Ok(Some(Frame::Data { data, .. })) = decoder.next_frame() else {
                panic!("no frame of {len}");
            };
            assert_eq!(data.len(), len);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = Decoder::default();
        decoder.extend(&[0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(decoder.next_frame(), Err(SpdyError::Version(2))));
        let mut decoder = Decoder::default();
        decoder.extend(&[
            0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2,
        ]);
        assert!(decoder.next_frame().is_err());
        let mut decoder = Decoder::default();
        decoder.extend(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0]);
        assert!(matches!(decoder.next_frame(), Err(SpdyError::Short { .. })));
    }
}
