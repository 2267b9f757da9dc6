//! Which view of a target a session gets: the one rule that keeps the
//! `container` profile exactly a `kubectl exec`, decided in one place.
//!
//! | profile | asked for | view |
//! |---|---|---|
//! | `container` | nothing | the container: every namespace it has (user first), its root, its binaries |
//! | `container` | `toolbox` | the tool tree in a private root, in the container's user, ipc, uts, net, pid and cgroup namespaces, the container's files at `/target` |
//! | `container` | a namespace subset | refused (400): a view that mixes the container with the agent's or the host's namespaces is a privileged act |
//! | `privileged` | anything without `mnt` | the tool tree, in the chosen namespaces (default: the toolbox's) |
//! | `privileged` | a subset with `mnt` | refused (400): the container's binaries, loader and environment are the attacker's, never run as node root |
//!
//! "Network only" is the toolbox: a network view without the pod's PID
//! namespace would show the host's processes to the command.
//!
//! The API decides with [`View::choose`] (its errors are the 400s); the helper
//! checks the request it receives with [`View::check`] before it touches the
//! target, so a caller that skipped the API's check still cannot get a mixed
//! view.

use super::{Namespace, NamespaceSet, Profile};

/// The namespaces a toolbox command joins besides the user namespace, which
/// every view joins when the target has its own, in the order its messages
/// name them. Never the mount namespace: the tools come from the tool tree.
const TOOLBOX_KINDS: [Namespace; 5] = [
    Namespace::Ipc,
    Namespace::Uts,
    Namespace::Net,
    Namespace::Pid,
    Namespace::Cgroup,
];

/// The namespaces a toolbox command joins besides the user namespace.
pub const TOOLBOX_NAMESPACES: NamespaceSet = NamespaceSet::of(&TOOLBOX_KINDS);

/// Why a view was refused; the message is the 400 the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error(
        "the container profile joins every namespace the container has, as kubectl exec does; a subset ({asked}) would mix the container with the agent's namespaces, which needs profile=privileged (for the pod's network and processes with the agent's tools, use toolbox=true)"
    )]
    SubsetNeedsPrivileged { asked: NamespaceSet },
    #[error(
        "toolbox mode joins the {} namespaces (and runs the agent's tools, with the container's files at {}); it takes no namespaces of its own",
        TOOLBOX_KINDS.map(Namespace::name).join(", "),
        super::TOOLBOX_TARGET_DIR
    )]
    ToolboxTakesNoNamespaces,
    #[error(
        "the privileged profile runs only the agent's own tools, never the container's binaries, so it does not join the container's mount namespace; the container's files are at {} in its view",
        super::TOOLBOX_TARGET_DIR
    )]
    PrivilegedJoinsNoMount,
    #[error("the privileged profile runs in the tool tree; a request without it is refused")]
    PrivilegedWithoutToolTree,
}

/// What a session joins and whose binaries it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// `None`: every namespace the container has (the container view).
    pub namespaces: Option<NamespaceSet>,
    /// Run the tool tree's binaries in a private root.
    pub toolbox: bool,
}

impl View {
    /// The view for what a caller asked: `toolbox` and a parsed namespace
    /// list (`None` when none was given).
    pub fn choose(
        profile: Profile,
        toolbox: bool,
        namespaces: Option<NamespaceSet>,
    ) -> Result<Self, ViewError> {
        let toolbox_view = || Self {
            namespaces: Some(TOOLBOX_NAMESPACES),
            toolbox: true,
        };
        match (profile, namespaces) {
            (Profile::Container, None) if toolbox => Ok(toolbox_view()),
            (Profile::Container, None) => Ok(Self {
                namespaces: None,
                toolbox: false,
            }),
            (Profile::Container, Some(_)) if toolbox => Err(ViewError::ToolboxTakesNoNamespaces),
            (Profile::Container, Some(NamespaceSet::ALL)) => Ok(Self {
                namespaces: None,
                toolbox: false,
            }),
            (Profile::Container, Some(asked)) => Err(ViewError::SubsetNeedsPrivileged { asked }),
            (Profile::Privileged, None) => Ok(toolbox_view()),
            (Profile::Privileged, Some(set)) if set.contains(Namespace::Mnt) => {
                Err(ViewError::PrivilegedJoinsNoMount)
            }
            (Profile::Privileged, Some(list)) => Ok(Self {
                namespaces: Some(list),
                toolbox: true,
            }),
        }
    }

    /// Checks a view as the helper receives it: only the container view joins
    /// the mount namespace, only with every namespace, and the privileged
    /// profile always runs in the tool tree.
    pub fn check(
        profile: Profile,
        toolbox: bool,
        namespaces: Option<NamespaceSet>,
    ) -> Result<(), ViewError> {
        match (profile, toolbox, namespaces) {
            (Profile::Privileged, false, _) => Err(ViewError::PrivilegedWithoutToolTree),
            (_, true, Some(set)) if set.contains(Namespace::Mnt) => {
                Err(ViewError::PrivilegedJoinsNoMount)
            }
            (_, true, None) => Err(ViewError::ToolboxTakesNoNamespaces),
            (Profile::Container, true, Some(asked)) if !asked.is_subset(TOOLBOX_NAMESPACES) => {
                Err(ViewError::SubsetNeedsPrivileged { asked })
            }
            (Profile::Container, false, Some(asked)) if asked != NamespaceSet::ALL => {
                Err(ViewError::SubsetNeedsPrivileged { asked })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Option<NamespaceSet> {
        Some(names.join(",").parse().unwrap())
    }

    #[test]
    fn the_container_profile_gets_the_container_or_the_toolbox_only() {
        let whole = View::choose(Profile::Container, false, None).unwrap();
        assert_eq!(whole.namespaces, None);
        assert!(!whole.toolbox);
        let toolbox = View::choose(Profile::Container, true, None).unwrap();
        assert!(toolbox.toolbox);
        assert_eq!(toolbox.namespaces, Some(TOOLBOX_NAMESPACES));
        for subset in [&["net"][..], &["mnt"], &["pid", "mnt"], &["user", "net"]] {
            let err = View::choose(Profile::Container, false, list(subset)).unwrap_err();
            assert!(
                matches!(err, ViewError::SubsetNeedsPrivileged { .. }),
                "{subset:?}"
            );
            assert!(err.to_string().contains("profile=privileged"), "{err}");
        }
        assert_eq!(
            View::choose(Profile::Container, false, Some(NamespaceSet::ALL)).unwrap(),
            whole
        );
        assert_eq!(
            View::choose(Profile::Container, true, list(&["net"])).unwrap_err(),
            ViewError::ToolboxTakesNoNamespaces
        );
    }

    #[test]
    fn the_privileged_profile_never_runs_the_containers_binaries() {
        for toolbox in [false, true] {
            let view = View::choose(Profile::Privileged, toolbox, None).unwrap();
            assert!(view.toolbox);
            assert_eq!(view.namespaces, Some(TOOLBOX_NAMESPACES));
        }
        let net = View::choose(Profile::Privileged, false, list(&["net"])).unwrap();
        assert!(net.toolbox);
        assert_eq!(net.namespaces, list(&["net"]));
        assert_eq!(
            View::choose(Profile::Privileged, false, list(&["pid", "mnt"])).unwrap_err(),
            ViewError::PrivilegedJoinsNoMount
        );
    }

    #[test]
    fn every_chosen_view_passes_the_helpers_check() {
        let subsets = [
            None,
            list(&["net"]),
            list(&["mnt"]),
            list(&["pid", "net", "ipc"]),
            Some(NamespaceSet::ALL),
        ];
        for profile in [Profile::Container, Profile::Privileged] {
            for toolbox in [false, true] {
                for asked in &subsets {
                    if let Ok(view) = View::choose(profile, toolbox, *asked) {
                        assert_eq!(
                            View::check(profile, view.toolbox, view.namespaces),
                            Ok(()),
                            "{profile:?} {toolbox} {asked:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_helper_refuses_mixed_views() {
        assert_eq!(
            View::check(Profile::Privileged, false, None),
            Err(ViewError::PrivilegedWithoutToolTree)
        );
        assert!(View::check(Profile::Container, false, list(&["net"])).is_err());
        assert!(View::check(Profile::Container, true, list(&["net", "mnt"])).is_err());
        assert!(View::check(Profile::Container, true, None).is_err());
    }
}
