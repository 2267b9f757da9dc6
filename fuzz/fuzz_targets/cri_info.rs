//! The runtime's verbose `ContainerStatus` info (containerd's and CRI-O's JSON
//! document, or CRI-O's old flat map): the host PID and the OCI runtime spec.
//! The runtime is trusted, but a container's spec is written by whoever made
//! the pod, so a strange one must not take the agent down.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use nsdebug::cri::info::{host_pid, runtime_spec};

fuzz_target!(|input: &[u8]| {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let key = ["info", "runtimeSpec", "pid"][usize::from(pick) % 3];
    let info = HashMap::from([(key.to_string(), text)]);
    // A PID the kernel could have (`pid_t` is an i32): never 0, never one
    // that turns negative, which kill(2) would read as a process group.
    if let Ok(Some(pid)) = host_pid(&info) {
        assert!(pid > 0 && i32::try_from(pid).is_ok(), "pid {pid}");
    }
    let _ = runtime_spec(&info);
});
