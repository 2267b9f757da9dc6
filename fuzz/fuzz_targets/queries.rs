//! The query strings of the probe (`diag/dns|tcp|http`), files and diagnostic
//! endpoints, deserialized as axum does and then checked by the handler's code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug::api::fuzzing::{PROBE_MAX_TIMEOUT, diag_query, files_query, probe_query};

const DIAG_VIEWS: &[&str] = &["processes", "sockets", "env", "mounts", "nope"];

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    match pick % 5 {
        kind @ 0..=2 => {
            let kind = ["dns", "tcp", "http"][usize::from(kind)];
            if let Some(Ok(ask)) = probe_query(kind, query) {
                assert!(
                    !ask.timeout.is_zero() && ask.timeout <= PROBE_MAX_TIMEOUT,
                    "{ask:?}"
                );
                assert!(!ask.address.is_empty());
            }
        }
        3 => {
            if let Some(Ok((format, mode))) = files_query(query) {
                assert!(format == "raw" || format == "tar");
                assert!(mode.is_none_or(|mode| mode <= 0o7777), "mode {mode:?}");
            }
        }
        _ => {
            let view = DIAG_VIEWS[usize::from(pick / 5) % DIAG_VIEWS.len()];
            let _ = diag_query(view, query);
        }
    }
});
