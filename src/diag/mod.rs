//! Built-in diagnostics: answers about a target as JSON, with no tool in the
//! container (they work on distroless images). Most read the host's `/proc`
//! for the target's processes; what must happen inside the pod's network
//! (netlink, name resolution, probes) runs on a throwaway thread that joined
//! it ([`netns`]).

pub mod dns;
pub mod netns;
pub mod probe;
