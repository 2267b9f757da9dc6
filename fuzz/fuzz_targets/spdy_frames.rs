//! SPDY/3.1 frames as a port-forward client sends them (kubectl's tunnel
//! or anyone who passed the access review): whatever the bytes, and however
//! they are cut, the decoder returns frames or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug::portforward::spdy::Decoder;

fuzz_target!(|input: &[u8]| {
    let Some((&cut, rest)) = input.split_first() else {
        return;
    };
    let mut decoder = Decoder::default();
    // The first byte is the size of the pieces (the WebSocket tunnel cuts
    // frames anywhere); the corpus starts from kubectl's first SYN_STREAM,
    // so header blocks on the dictionary-primed zlib stream are reached.
    for piece in rest.chunks(usize::from(cut).max(1)) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
