//! The resize message on channel 4: `{"Width":..,"Height":..}`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug_wire::exec::Resize;

/// The agent's parser of resize frames (the wire crate's).
fn exec_resize(data: &[u8]) -> Option<Resize> {
    Resize::parse(data)
}

fuzz_target!(|input: &[u8]| {
    // Any frame: ignored unless it is a JSON object, and never a panic.
    let parsed = exec_resize(input);
    let value = serde_json::from_slice::<serde_json::Value>(input).ok();
    assert_eq!(
        parsed.is_some(),
        value.as_ref().is_some_and(serde_json::Value::is_object),
        "only a JSON object resizes"
    );
    // Sizes in range come through exactly, whatever else the object holds.
    if let [w0, w1, h0, h1, rest @ ..] = input {
        let (width, height) = (
            u16::from_le_bytes([*w0, *w1]),
            u16::from_le_bytes([*h0, *h1]),
        );
        let extra = String::from_utf8_lossy(rest);
        let frame = serde_json::json!({"Width": width, "Height": height, "extra": extra});
        let size = exec_resize(frame.to_string().as_bytes()).expect("a resize object");
        assert_eq!((size.width, size.height), (width, height));
        // Too large clamps to the largest terminal; a missing field is the default.
        let frame = serde_json::json!({"Width": u64::from(width) << 16 | 1});
        let size = exec_resize(frame.to_string().as_bytes()).expect("a resize object");
        assert_eq!(size.width, if width == 0 { 1 } else { u16::MAX });
        assert_eq!(size.height, 24);
    }
});
