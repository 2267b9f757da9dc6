//! The run API's JSON body, through deserialization and validation, as the
//! handler takes it: raw bytes, and bodies built from structured input so that
//! the fuzzer gets past the JSON syntax to the checks.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use nsdebug::api::fuzzing::{RunPlan, TOOLBOX_NAMESPACES, run_body};
use nsdebug_wire::{Profile, RunRequest};
use serde_json::json;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Raw(&'a [u8]),
    Built {
        command: Vec<String>,
        env: Vec<(String, String)>,
        namespaces: Option<Vec<String>>,
        profile: Option<String>,
        toolbox: bool,
        timeout_seconds: Option<f64>,
        output_limit_bytes: Option<u64>,
        stdin: Option<String>,
        stdin_base64: Option<String>,
    },
}

/// What every accepted body satisfies.
fn check(body: &RunRequest, plan: &RunPlan) {
    // An argv and environment execve(2) can take: C strings, a program, `NAME=value`.
    assert!(!body.command.is_empty() && !body.command[0].is_empty());
    assert!(body.command.iter().all(|word| !word.contains('\0')));
    for (name, value) in &body.env {
        assert!(
            !name.is_empty() && !name.contains(['=', '\0']),
            "env name {name:?}"
        );
        assert!(!value.contains('\0'), "env value {value:?}");
    }
    // The limits hold.
    assert!(!plan.timeout.is_zero() && plan.timeout.as_secs_f64() <= 3600.0);
    assert!(plan.output_bytes <= 16 * 1024 * 1024);
    // Namespaces: none (all the container has), or a list without repeats;
    // toolbox mode joins its own list and takes none from the caller.
    let namespaces: Option<Vec<String>> = plan
        .namespaces
        .map(|set| set.iter().map(|n| n.name().to_string()).collect());
    if let Some(namespaces) = &namespaces {
        assert!(!namespaces.is_empty());
        for (i, name) in namespaces.iter().enumerate() {
            assert!(!namespaces[..i].contains(name), "{name} twice");
        }
    }
    // The one rule: the container profile is the whole container or the
    // toolbox, never a subset; the privileged profile runs the tool tree and
    // never joins the container's mount namespace.
    let privileged = body.profile == Some(Profile::Privileged);
    if privileged {
        assert!(plan.toolbox);
        let list = namespaces.as_ref().expect("a privileged view names its namespaces");
        assert!(!list.iter().any(|n| n == "mnt"));
    } else if !plan.toolbox {
        assert_eq!(namespaces, None);
    }
    if body.toolbox && !privileged {
        // An empty list (or blanks) names nothing, as when it is left out.
        let named = body.namespaces.iter().flatten();
        assert!(
            named
                .flat_map(|n| n.split(','))
                .all(|n| n.trim().is_empty())
        );
        let toolbox: Vec<String> = TOOLBOX_NAMESPACES.iter().map(|n| n.to_string()).collect();
        assert_eq!(namespaces.as_ref(), Some(&toolbox));
    }
    // stdin is what was sent, text or base64, never both.
    let expected = match (&body.stdin, &body.stdin_base64) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("accepted stdinBase64 decodes"),
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => panic!("stdin and stdinBase64 both accepted"),
    };
    assert_eq!(plan.stdin, expected);
}

fuzz_target!(|input: Input| {
    let bytes = match input {
        Input::Raw(bytes) => bytes.to_vec(),
        Input::Built {
            command,
            env,
            namespaces,
            profile,
            toolbox,
            timeout_seconds,
            output_limit_bytes,
            stdin,
            stdin_base64,
        } => {
            let mut body = json!({"command": command, "toolbox": toolbox});
            let fields = [
                (
                    "env",
                    json!(
                        env.into_iter()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    ),
                ),
                ("namespaces", json!(namespaces)),
                ("profile", json!(profile)),
                ("timeoutSeconds", json!(timeout_seconds)),
                ("outputLimitBytes", json!(output_limit_bytes)),
                ("stdin", json!(stdin)),
                ("stdinBase64", json!(stdin_base64)),
            ];
            for (name, value) in fields {
                if !value.is_null() {
                    body[name] = value;
                }
            }
            serde_json::to_vec(&body).unwrap()
        }
    };
    if let Ok((body, plan)) = run_body(&bytes) {
        check(&body, &plan);
    }
});
