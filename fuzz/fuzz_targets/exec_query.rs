//! The exec request's query string (`command=..&command=..&stdin=true&tty=..`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nsdebug::api::fuzzing::{ExecQuery, TOOLBOX_NAMESPACES, exec_query};

/// The query that asks for `options` again.
fn encode(options: &ExecQuery) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for word in &options.command {
        query.append_pair("command", word);
    }
    if let Some(container) = &options.container {
        query.append_pair("container", container);
    }
    for (name, on) in [
        ("stdin", options.stdin),
        ("stdout", options.stdout),
        ("stderr", options.stderr),
        ("tty", options.tty),
        ("toolbox", options.toolbox),
    ] {
        query.append_pair(name, if on { "true" } else { "false" });
    }
    // A privileged view names its namespaces; a container toolbox does not.
    if let (Some(namespaces), true) = (
        &options.namespaces,
        !options.toolbox || options.profile == "privileged",
    ) {
        query.append_pair("namespaces", &namespaces.join(","));
    }
    query.append_pair("profile", options.profile);
    query.finish()
}

fuzz_target!(|input: &[u8]| {
    let Ok(query) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(options) = exec_query(query) else {
        return;
    };
    // Never an argv execve(2) cannot take, or no program at all.
    assert!(!options.command.is_empty() && !options.command[0].is_empty());
    assert!(options.command.iter().all(|word| !word.contains('\0')));
    // Some stream is open; with a terminal, stderr is the terminal.
    assert!(options.stdin || options.stdout || options.stderr);
    assert!(!(options.tty && options.stderr));
    if let Some(namespaces) = &options.namespaces {
        assert!(!namespaces.is_empty());
        for (i, name) in namespaces.iter().enumerate() {
            assert!(!namespaces[..i].contains(name), "{name} twice");
        }
    }
    // The one rule: the container profile is the whole container or the
    // toolbox, never a subset; the privileged profile runs the tool tree and
    // never joins the container's mount namespace.
    if options.profile == "privileged" {
        assert!(options.toolbox);
        assert!(
            options
                .namespaces
                .as_ref()
                .is_some_and(|list| !list.iter().any(|n| n == "mnt"))
        );
    } else if !options.toolbox {
        assert_eq!(options.namespaces, None);
    }
    if options.toolbox && options.profile != "privileged" {
        assert_eq!(
            options.namespaces.as_deref(),
            Some(
                &TOOLBOX_NAMESPACES
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()[..]
            )
        );
    }
    assert!(options.container.as_ref().is_none_or(|c| !c.is_empty()));
    // What was understood, asked for again, is understood the same way.
    let again = encode(&options);
    assert_eq!(exec_query(&again).as_ref(), Ok(&options), "{again}");
});
