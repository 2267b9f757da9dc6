//! Label and field selectors (`labelSelector=`, `fieldSelector=` on the pod list).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug::api::fuzzing::{POD_FIELDS, Selector};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(selector) = Selector::labels(text) {
        // Printed as the API server prints it, it parses to the same selector.
        let printed = selector.to_string();
        assert_eq!(
            Selector::labels(&printed).as_ref(),
            Ok(&selector),
            "{text:?} -> {printed:?}"
        );
        // Matching is total, and an object with no labels at all matches
        // exactly when the selector asks only for absences.
        let _ = selector.matches(|_| Some(text));
        let none = selector.matches(|_| None);
        let absences_only = printed
            .split(',')
            .filter(|term| !term.is_empty())
            .all(|term| term.starts_with('!') || term.contains(" notin (") || term.contains("!="));
        assert!(
            printed.contains('(') || none == absences_only,
            "{printed:?}: no labels matched={none}"
        );
    }
    if let Ok(selector) = Selector::fields(text, POD_FIELDS) {
        let printed = selector.to_string();
        assert_eq!(
            Selector::fields(&printed, POD_FIELDS).as_ref(),
            Ok(&selector),
            "{text:?} -> {printed:?}"
        );
        let _ = selector.matches(|field| POD_FIELDS.contains(&field).then_some(text));
    }
});
