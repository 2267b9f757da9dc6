//! Web UI logins. A browser has no Kubernetes token, so it gets one of two
//! ways in, both ending in a UI session whose opaque bearer token
//! (`nsdebug-ui.…`) stands for the user's own Kubernetes token:
//!
//! - a **one-time login link**: a CLI holding the user's token asks
//!   `POST /v1/login-links` for a code, and opens `/#login=CODE` (the code is
//!   in the fragment, so it never reaches a server log or a `Referer`); the
//!   page redeems it once with `POST /v1/login`, and it expires in seconds;
//! - **pasting a token** into the page, which `POST /v1/login` exchanges.
//!
//! Every request of the session is authenticated and authorized with the
//! user's token exactly as if the user had sent it (TokenReview, then
//! SubjectAccessReview per action), so a revoked token or a changed role
//! takes effect at once. A UI session ends at its TTL, at the token's own
//! expiry, at logout, or when the agent restarts (nothing is stored on disk).
//! The page keeps its session token in `sessionStorage` and sends it as a
//! header or WebSocket subprotocol, never as a cookie, so another site
//! cannot ride on it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The prefix of UI session tokens, which no Kubernetes token has.
pub const SESSION_PREFIX: &str = "nsdebug-ui.";

/// Links and sessions held at most; the oldest expire first beyond that.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    /// The user's Kubernetes token.
    token: String,
    expires: Instant,
}

/// The agent's login links and UI sessions, in memory.
pub struct Logins {
    link_ttl: Duration,
    session_ttl: Duration,
    links: Mutex<HashMap<String, Entry>>,
    sessions: Mutex<HashMap<String, Entry>>,
}

/// A secret nobody can guess: 244 random bits, URL-safe.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn insert(map: &Mutex<HashMap<String, Entry>>, key: String, entry: Entry) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, e| e.expires > now);
        while map.len() >= MAX_ENTRIES {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
    }
    map.insert(key, entry);
}

impl Logins {
    pub fn new(link_ttl: Duration, session_ttl: Duration) -> Self {
        Self {
            link_ttl,
            session_ttl,
            links: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// A one-time code that logs in as the owner of `token`.
    pub fn mint_link(&self, token: &str) -> (String, Duration) {
        let code = secret();
        insert(
            &self.links,
            code.clone(),
            Entry {
                token: token.into(),
                expires: Instant::now() + self.link_ttl,
            },
        );
        (code, self.link_ttl)
    }

    /// The token behind `code`, once: the code is spent whether or not it
    /// was still valid.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let entry = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(code)?;
        (entry.expires > Instant::now()).then_some(entry.token)
    }

    /// A UI session for the owner of `token`; it ends at the session TTL or
    /// at `token_expiry`, whichever comes first.
    pub fn open_session(&self, token: String, token_expiry: Option<Instant>) -> (String, Duration) {
        let now = Instant::now();
        let mut expires = now + self.session_ttl;
        if let Some(expiry) = token_expiry {
            expires = expires.min(expiry);
        }
        let session = format!("{SESSION_PREFIX}{}", secret());
        insert(&self.sessions, session.clone(), Entry { token, expires });
        (session, expires.saturating_duration_since(now))
    }

    /// The user's token behind a UI session token, while the session lasts.
    pub fn session_token(&self, session: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(session) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.token.clone()),
            Some(_) => {
                sessions.remove(session);
                None
            }
            None => None,
        }
    }

    /// Logs out; `false` if there was no such session.
    pub fn close_session(&self, session: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let (code, ttl) = logins.mint_link("user-token");
        assert_eq!(ttl, Duration::from_secs(60));
        assert_eq!(code.len(), 64);
        assert_eq!(logins.redeem(&code).as_deref(), Some("user-token"));
        assert_eq!(logins.redeem(&code), None);
        assert_eq!(logins.redeem("guess"), None);
    }

    #[test]
    fn sessions_end_with_the_token() {
        let logins = Logins::new(Duration::from_secs(60), Duration::from_secs(600));
        let soon = Instant::now() + Duration::from_secs(5);
        let (session, ttl) = logins.open_session("t".into(), Some(soon));
        assert!(session.starts_with(SESSION_PREFIX));
        assert!(
            ttl <= Duration::from_secs(5),
            "capped by the token: {ttl:?}"
        );
        assert_eq!(logins.session_token(&session).as_deref(), Some("t"));
        let (gone, _) = logins.open_session("u".into(), Some(Instant::now()));
        assert_eq!(logins.session_token(&gone), None);
        assert!(logins.close_session(&session));
        assert_eq!(logins.session_token(&session), None);
    }
}
