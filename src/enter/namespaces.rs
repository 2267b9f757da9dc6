//! The namespaces a session joins, as a typed set instead of a list of names.
//!
//! A [`NamespaceSet`] is a small `Copy` bit set (youki's namespace flags) of
//! the seven [`Namespace`] kinds a container can be entered by. Iterating it
//! yields them in the order `setns(2)` must join them when they are joined
//! one by one: the user namespace first (it grants the rights to join the
//! others), the mount namespace last (after it, the host's `/proc` paths are
//! no longer reachable). That order is the table [`Namespace::ALL`], data
//! rather than control flow. Names are parsed once, at the API's edge
//! ([`parse_namespaces`]), with an error naming the valid ones.

use std::fmt;
use std::str::FromStr;

use rustix::thread::ThreadNameSpaceType;

/// One kind of Linux namespace (`namespaces(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    User,
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    Mnt,
}

impl Namespace {
    /// Every kind, in the order `setns(2)` joins them one by one.
    pub const ALL: [Namespace; 7] = [
        Self::User,
        Self::Cgroup,
        Self::Ipc,
        Self::Uts,
        Self::Net,
        Self::Pid,
        Self::Mnt,
    ];

    /// Its name under `/proc/PID/ns/` and in the API.
    pub const fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Cgroup => "cgroup",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Net => "net",
            Self::Pid => "pid",
            Self::Mnt => "mnt",
        }
    }

    /// Its `setns(2)` flag.
    pub const fn flag(self) -> ThreadNameSpaceType {
        use ThreadNameSpaceType as T;
        match self {
            Self::User => T::USER,
            Self::Cgroup => T::CONTROL_GROUP,
            Self::Ipc => T::INTER_PROCESS_COMMUNICATION,
            Self::Uts => T::HOST_NAME_AND_NIS_DOMAIN_NAME,
            Self::Net => T::NETWORK,
            Self::Pid => T::PROCESS_ID,
            Self::Mnt => T::MOUNT,
        }
    }

    /// The kind called `name` (`mount` is `mnt`).
    fn named(name: &str) -> Option<Self> {
        let name = if name == "mount" { "mnt" } else { name };
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of namespace kinds; it iterates in the order of [`Namespace::ALL`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NamespaceSet(u8);

impl NamespaceSet {
    pub const EMPTY: Self = Self(0);
    /// Every kind: the whole container.
    pub const ALL: Self = Self::of(&Namespace::ALL);

    /// The set of `kinds`.
    pub const fn of(kinds: &[Namespace]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= kinds[i].bit();
            i += 1;
        }
        Self(bits)
    }

    pub const fn contains(self, kind: Namespace) -> bool {
        self.0 & kind.bit() != 0
    }

    /// This set and `kind`.
    pub const fn with(self, kind: Namespace) -> Self {
        Self(self.0 | kind.bit())
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every kind of this set is in `other`.
    pub const fn is_subset(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The kinds, in the order `setns(2)` joins them one by one.
    pub fn iter(self) -> impl Iterator<Item = Namespace> {
        Namespace::ALL
            .into_iter()
            .filter(move |kind| self.contains(*kind))
    }

    /// The `setns(2)` flags of all its kinds, to join them at once.
    pub fn flags(self) -> ThreadNameSpaceType {
        self.iter()
            .fold(ThreadNameSpaceType::empty(), |flags, kind| {
                flags | kind.flag()
            })
    }
}

impl FromIterator<Namespace> for NamespaceSet {
    fn from_iter<I: IntoIterator<Item = Namespace>>(kinds: I) -> Self {
        kinds.into_iter().fold(Self::EMPTY, Self::with)
    }
}

/// Comma-separated names in joining order (`net,pid`), as the API takes them.
impl fmt::Display for NamespaceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(kind.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for NamespaceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Namespace::name))
            .finish()
    }
}

/// A namespace name the agent does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown namespace '{name}'; choose from {}", valid_names())]
pub struct UnknownNamespace {
    pub name: String,
}

fn valid_names() -> String {
    NamespaceSet::ALL
        .iter()
        .map(Namespace::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a comma-separated list (`net`, `net, pid,net`, `mount`); blanks
/// name nothing and repeats count once.
impl FromStr for NamespaceSet {
    type Err = UnknownNamespace;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                Namespace::named(name).ok_or_else(|| UnknownNamespace {
                    name: name.to_string(),
                })
            })
            .collect()
    }
}

/// Parses a caller's namespace list; `None` for a list that names nothing,
/// which means "every namespace the container has".
pub fn parse_namespaces(list: &str) -> Result<Option<NamespaceSet>, UnknownNamespace> {
    let set: NamespaceSet = list.parse()?;
    Ok((!set.is_empty()).then_some(set))
}

/// On the helper's wire: a list of names.
impl serde::Serialize for NamespaceSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Namespace::name))
    }
}

impl<'de> serde::Deserialize<'de> for NamespaceSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names
            .iter()
            .map(|name| {
                Namespace::named(name).ok_or_else(|| {
                    serde::de::Error::custom(UnknownNamespace { name: name.clone() })
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_into_sets() {
        assert_eq!(parse_namespaces("").unwrap(), None);
        assert_eq!(parse_namespaces(" , ").unwrap(), None);
        let set = parse_namespaces("pid, net,net").unwrap().unwrap();
        assert_eq!(set, NamespaceSet::of(&[Namespace::Net, Namespace::Pid]));
        assert_eq!(set.to_string(), "net,pid");
        assert_eq!(
            parse_namespaces("mount").unwrap(),
            Some(NamespaceSet::of(&[Namespace::Mnt]))
        );
        assert_eq!(
            parse_namespaces("net,time").unwrap_err().to_string(),
            "unknown namespace 'time'; choose from user, cgroup, ipc, uts, net, pid, mnt"
        );
    }

    #[test]
    fn user_namespace_first_mount_last() {
        let order: Vec<_> = NamespaceSet::ALL.iter().collect();
        assert_eq!(order.first(), Some(&Namespace::User));
        assert_eq!(order.last(), Some(&Namespace::Mnt));
        assert_eq!(order.len(), 7);
        let flags = NamespaceSet::of(&[Namespace::User, Namespace::Mnt]).flags();
        assert_eq!(
            flags,
            ThreadNameSpaceType::USER | ThreadNameSpaceType::MOUNT
        );
    }

    #[test]
    fn sets_cross_the_helpers_wire_as_names() {
        let set = NamespaceSet::of(&[Namespace::Pid, Namespace::User]);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["user","pid"]"#);
        assert_eq!(serde_json::from_str::<NamespaceSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<NamespaceSet>(r#"["time"]"#).is_err());
    }

    #[test]
    fn subsets() {
        let toolbox = NamespaceSet::of(&[Namespace::Net, Namespace::Pid]);
        assert!(toolbox.is_subset(NamespaceSet::ALL));
        assert!(!NamespaceSet::ALL.is_subset(toolbox));
        assert!(NamespaceSet::EMPTY.is_subset(toolbox));
    }
}
