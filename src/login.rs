//! Web UI logins. A browser has no Kubernetes token, so it gets one of two
//! ways in, both ending in a UI session whose opaque bearer token
//! (`nsdebug-ui.…`) stands for the user's reviewed identity:
//!
//! - a **one-time login link**: a CLI holding the user's token asks
//!   `POST /v1/login-links` for a code, and opens `/#login=CODE` (the code is
//!   in the fragment, so it never reaches a server log or a `Referer`); the
//!   page shows whose link it is, and redeems it once with `POST /v1/login`
//!   when the user agrees; it expires in seconds;
//! - **pasting a token** into the page, which `POST /v1/login` exchanges.
//!
//! The token is reviewed (TokenReview) once, at the login; the session keeps
//! the identity the review answered (name, uid, groups) and an expiry, never
//! the token itself, so a memory dump or a bug that leaks a session leaks no
//! credential usable against the API server. Every action of the session is
//! still authorized with a SubjectAccessReview, so a changed role takes
//! effect at once; a revoked token ends its UI sessions at their expiry: the
//! token's own `exp` when it is a JWT that has one, else `--ui-session-ttl`,
//! whichever comes first. Logging out ends a session at once, and nothing
//! is kept on disk.
//!
//! Each user holds at most [`PER_USER`] live links and as many live
//! sessions: a new one ends that user's oldest. When the agent holds
//! [`MAX_ENTRIES`] of either, new ones are refused until some expire; one
//! user's logins never end another user's.
//!
//! The page keeps its session token in `sessionStorage` and sends it as a
//! header or WebSocket subprotocol, never as a cookie, so another site
//! cannot ride on it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::User;

/// The prefix of UI session tokens, which no Kubernetes token has.
pub const SESSION_PREFIX: &str = "nsdebug-ui.";

/// Live login links, and live UI sessions, one user holds at most; a new
/// one beyond this ends that user's oldest.
pub const PER_USER: usize = 16;

/// Links, and sessions, the agent holds at most over all users; beyond
/// this new ones are refused (no other user's is ended to make room).
pub const MAX_ENTRIES: usize = 10_000;

/// Why a link or session was not made.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "the agent holds {MAX_ENTRIES} web UI {what} already; try again when some have expired"
    )]
    Full { what: &'static str },
}

/// A reviewed identity and when it stops being good.
#[derive(Debug, Clone)]
struct Login {
    user: User,
    expires: Instant,
    /// When the token behind it expires (its JWT `exp`), if it says.
    token_expires: Option<Instant>,
}

/// Links or sessions by their secret, with each user's in the order made.
#[derive(Debug)]
struct Table {
    what: &'static str,
    entries: HashMap<String, Login>,
    by_user: HashMap<String, VecDeque<String>>,
}

impl Table {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            entries: HashMap::new(),
            by_user: HashMap::new(),
        }
    }

    fn insert(&mut self, key: String, login: Login) -> Result<(), LoginError> {
        let now = Instant::now();
        let Self {
            entries, by_user, ..
        } = self;
        // The user's own expired and oldest make way.
        let mine = by_user.entry(login.user.name.clone()).or_default();
        mine.retain(|k| match entries.get(k) {
            Some(entry) if entry.expires > now => true,
            Some(_) => {
                entries.remove(k);
                false
            }
            None => false,
        });
        while mine.len() >= PER_USER {
            if let Some(oldest) = mine.pop_front() {
                entries.remove(&oldest);
            }
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.expires > now);
            by_user.retain(|_, keys| {
                keys.retain(|k| entries.contains_key(k));
                !keys.is_empty()
            });
        }
        if entries.len() >= MAX_ENTRIES {
            return Err(LoginError::Full { what: self.what });
        }
        self.by_user
            .entry(login.user.name.clone())
            .or_default()
            .push_back(key.clone());
        self.entries.insert(key, login);
        Ok(())
    }

    /// The live entry under `key`; an expired one is dropped.
    fn get(&mut self, key: &str) -> Option<&Login> {
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires <= Instant::now())
        {
            self.remove(key);
        }
        self.entries.get(key)
    }

    fn remove(&mut self, key: &str) -> Option<Login> {
        let login = self.entries.remove(key)?;
        if let Some(keys) = self.by_user.get_mut(&login.user.name) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_user.remove(&login.user.name);
            }
        }
        Some(login)
    }
}

/// The agent's login links and UI sessions, in memory.
#[derive(Debug)]
pub struct Logins {
    link_ttl: Duration,
    session_ttl: Duration,
    links: Mutex<Table>,
    sessions: Mutex<Table>,
}

/// A secret nobody can guess: 244 random bits, URL-safe.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

impl Logins {
    pub fn new(link_ttl: Duration, session_ttl: Duration) -> Self {
        Self {
            link_ttl,
            session_ttl,
            links: Mutex::new(Table::new("login links")),
            sessions: Mutex::new(Table::new("sessions")),
        }
    }

    /// A one-time code that logs in as `user`, whose token expires at
    /// `token_expires` (if it says).
    pub fn mint_link(
        &self,
        user: User,
        token_expires: Option<Instant>,
    ) -> Result<(String, Duration), LoginError> {
        let code = secret();
        let mut expires = Instant::now() + self.link_ttl;
        if let Some(end) = token_expires {
            expires = expires.min(end);
        }
        lock(&self.links).insert(
            code.clone(),
            Login {
                user,
                expires,
                token_expires,
            },
        )?;
        Ok((code, self.link_ttl))
    }

    /// Whom `code` logs in, without spending it (the page asks the user
    /// first).
    pub fn peek(&self, code: &str) -> Option<User> {
        lock(&self.links).get(code).map(|login| login.user.clone())
    }

    /// The identity behind `code` and its token's expiry, once: the code is
    /// spent whether or not it was still valid.
    pub fn redeem(&self, code: &str) -> Option<(User, Option<Instant>)> {
        let login = lock(&self.links).remove(code)?;
        (login.expires > Instant::now()).then_some((login.user, login.token_expires))
    }

    /// A UI session for `user`; it ends at the session TTL or at
    /// `token_expires`, whichever comes first.
    pub fn open_session(
        &self,
        user: User,
        token_expires: Option<Instant>,
    ) -> Result<(String, Duration), LoginError> {
        let now = Instant::now();
        let mut expires = now + self.session_ttl;
        if let Some(end) = token_expires {
            expires = expires.min(end);
        }
        let session = format!("{SESSION_PREFIX}{}", secret());
        lock(&self.sessions).insert(
            session.clone(),
            Login {
                user,
                expires,
                token_expires,
            },
        )?;
        Ok((session, expires.saturating_duration_since(now)))
    }

    /// The identity behind a UI session token, while the session lasts.
    pub fn session_user(&self, session: &str) -> Option<User> {
        lock(&self.sessions)
            .get(session)
            .map(|login| login.user.clone())
    }

    /// Logs out; `false` if there was no such session.
    pub fn close_session(&self, session: &str) -> bool {
        lock(&self.sessions).remove(session).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            uid: format!("{name}-uid"),
            groups: vec!["dev".into()],
            extra: Default::default(),
        }
    }

    #[test]
    fn a_link_works_once() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let (code, ttl) = logins.mint_link(user("alice"), None).unwrap();
        assert_eq!(ttl, Duration::from_secs(60));
        assert_eq!(code.len(), 64);
        assert_eq!(
            logins.peek(&code),
            Some(user("alice")),
            "a peek spends nothing"
        );
        assert_eq!(logins.redeem(&code).map(|(u, _)| u), Some(user("alice")));
        assert_eq!(logins.redeem(&code), None);
        assert_eq!(logins.peek(&code), None);
        assert_eq!(logins.redeem("guess"), None);
    }

    #[test]
    fn sessions_end_with_the_token() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let soon = Instant::now() + Duration::from_secs(5);
        let (session, ttl) = logins.open_session(user("alice"), Some(soon)).unwrap();
        assert!(session.starts_with(SESSION_PREFIX));
        assert!(
            ttl <= Duration::from_secs(5),
            "capped by the token: {ttl:?}"
        );
        assert_eq!(logins.session_user(&session), Some(user("alice")));
        let (gone, _) = logins
            .open_session(user("bob"), Some(Instant::now()))
            .unwrap();
        assert_eq!(logins.session_user(&gone), None);
        assert!(logins.close_session(&session));
        assert_eq!(logins.session_user(&session), None);
    }

    #[test]
    fn a_link_carries_the_tokens_expiry_to_the_session() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let soon = Instant::now() + Duration::from_secs(30);
        let (code, _) = logins.mint_link(user("alice"), Some(soon)).unwrap();
        let (who, token_expires) = logins.redeem(&code).unwrap();
        let (_, ttl) = logins.open_session(who, token_expires).unwrap();
        assert!(ttl <= Duration::from_secs(30), "{ttl:?}");
    }

    #[test]
    fn a_ui_session_holds_no_raw_token() {
        // The login route reviews the token and hands over the identity
        // only: there is no way to give the table a token, and none in it.
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let (code, _) = logins.mint_link(user("alice"), None).unwrap();
        let (who, expiry) = logins.redeem(&code).unwrap();
        let _session = logins.open_session(who, expiry).unwrap();
        let held = format!("{logins:?}");
        assert!(held.contains("alice-uid"), "{held}");
        assert!(
            !held.contains("token:"),
            "the UI logins hold a token: {held}"
        );
    }

    #[test]
    fn one_users_logins_end_only_that_users_oldest() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let (alices, _) = logins.open_session(user("alice"), None).unwrap();
        let (bobs_first, _) = logins.open_session(user("bob"), None).unwrap();
        for _ in 0..MAX_ENTRIES + 10 {
            logins.open_session(user("bob"), None).unwrap();
        }
        assert_eq!(logins.session_user(&alices), Some(user("alice")));
        assert_eq!(logins.session_user(&bobs_first), None);
        let sessions = lock(&logins.sessions);
        assert_eq!(sessions.entries.len(), 1 + PER_USER);
        assert_eq!(sessions.by_user["bob"].len(), PER_USER);
    }

    #[test]
    fn a_full_table_refuses_rather_than_evicts() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let (first, _) = logins.open_session(user("u0"), None).unwrap();
        for i in 1..MAX_ENTRIES {
            logins.open_session(user(&format!("u{i}")), None).unwrap();
        }
        let refused = logins.open_session(user("late"), None).unwrap_err();
        assert!(refused.to_string().contains("try again"), "{refused}");
        assert_eq!(logins.session_user(&first), Some(user("u0")));
    }
}
