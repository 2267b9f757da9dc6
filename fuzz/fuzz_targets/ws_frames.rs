//! The remote-command WebSocket framing, under every protocol the agent
//! negotiates: a client's binary and text frames, and the agent's own frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug::api::fuzzing::{Frame, exec_frame_encode, exec_frame_parse, exec_protocol_is_base64};
use nsdebug_wire::exec::PROTOCOLS as EXEC_PROTOCOLS;

fuzz_target!(|input: &[u8]| {
    let Some((&pick, data)) = input.split_first() else {
        return;
    };
    let protocol = EXEC_PROTOCOLS[usize::from(pick) % EXEC_PROTOCOLS.len()];
    let base64 = exec_protocol_is_base64(protocol);

    // A binary frame is its channel byte and the data, under every protocol.
    match exec_frame_parse(protocol, Frame::Binary(data.to_vec())) {
        Some((channel, payload)) => {
            assert_eq!(channel, data[0]);
            assert_eq!(payload, data[1..]);
        }
        None => assert!(data.is_empty(), "a non-empty binary frame was refused"),
    }

    // A text frame: only the base64 protocols read one, and what they accept
    // is exactly what the agent would have written (one ASCII digit, canonical
    // base64), so nothing is dropped or invented on the way in.
    if let Ok(text) = std::str::from_utf8(data) {
        let frame = Frame::Text(text.to_owned());
        match exec_frame_parse(protocol, frame.clone()) {
            Some((channel, payload)) => {
                assert!(base64, "{protocol} took a text frame");
                assert!(channel <= 9 && text.as_bytes()[0] == b'0' + channel);
                assert_eq!(exec_frame_encode(protocol, channel, &payload), frame);
            }
            None => assert!(
                !base64 || !text.as_bytes().first().is_some_and(u8::is_ascii_digit) || {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(&text[1..])
                        .is_err()
                },
                "a well-formed text frame was refused: {text:?}"
            ),
        }
    }

    // What the agent sends parses back to the same channel and data, on every
    // channel the protocol can carry (text frames: one digit).
    if let Some((&channel, payload)) = data.split_first()
        && (!base64 || channel <= 9)
    {
        let frame = exec_frame_encode(protocol, channel, payload);
        assert_eq!(matches!(frame, Frame::Text(_)), base64);
        assert_eq!(
            exec_frame_parse(protocol, frame),
            Some((channel, payload.to_vec()))
        );
    }
});
