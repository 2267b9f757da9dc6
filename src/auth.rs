//! Who is asking, and may they: the same checks the API server makes before a
//! `kubectl exec`. The caller's bearer token is reviewed with a `TokenReview`,
//! each action with a `SubjectAccessReview` carrying the whole identity (uid,
//! groups, extra) as the kubelet sends it, both through the `kube` crate.
//! Answers are cached for a few seconds as the kubelet caches its webhook
//! answers, never past the token's own expiry, in caches bounded in size;
//! tokens are kept only as SHA-256 digests.
//!
//! An [`Admitted`] value is the proof that an access review passed: only
//! [`Auth::admit`] makes one, and resolving a target or taking a session
//! slot needs one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::config::Permission;

/// An authenticated caller, as the `TokenReview` named them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// What the authenticator added (a token's credential ID, its scopes):
    /// an authorizer may decide on it, so it goes into every access review.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The identity of every caller with `--auth none`.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// What a request wants to do, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Action {
    pub verb: String,
    /// The API group (`""`: the core group, `metrics.k8s.io`, ...).
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Action {
    pub fn new(verb: &str, resource: &str) -> Self {
        Self {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    /// The action on `resource` of API group `group` instead of the core group.
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.into();
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.into());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// The API server's wording of a refusal.
    pub fn forbidden_message(&self, user: &User) -> String {
        // The API server qualifies a resource of a named group: `pods.metrics.k8s.io`.
        let resource = match self.group.as_str() {
            "" => self.resource.clone(),
            group => format!("{}.{group}", self.resource),
        };
        let object = match &self.name {
            Some(name) => format!("{resource} \"{name}\""),
            None => resource,
        };
        let scope = match &self.namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".into(),
        };
        format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\"{scope}",
            user.name,
            self.verb,
            self.resource_path(),
            self.group,
        )
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Unauthorized: {0}")]
    Unauthenticated(String),
    #[error("{message}")]
    Forbidden { message: String },
    #[error("the Kubernetes API server could not review the request")]
    Unavailable(#[source] kube::Error),
}

/// Token reviews remembered at most (the least used are forgotten first).
const MAX_CACHED_TOKENS: u64 = 10_000;
/// Access decisions remembered at most.
const MAX_CACHED_DECISIONS: u64 = 20_000;

/// The SHA-256 digest of a bearer token: what the agent keeps of a token
/// once its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

/// A cached answer and how long it may be reused.
#[derive(Clone)]
struct Cached<T> {
    value: T,
    ttl: Duration,
}

/// Each entry lives for its own `ttl`.
struct OwnTtl;

impl<K, T> moka::Expiry<K, Cached<T>> for OwnTtl {
    fn expire_after_create(&self, _: &K, value: &Cached<T>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A cache bounded in entries, each entry expiring after its own time.
pub struct ReviewCache<K, T> {
    entries: moka::sync::Cache<K, Cached<T>>,
}

impl<K, T> ReviewCache<K, T>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(OwnTtl)
                .build(),
        }
    }

    pub fn get(&self, key: &K) -> Option<T> {
        self.entries.get(key).map(|hit| hit.value)
    }

    pub fn insert(&self, key: K, value: T, ttl: Duration) {
        if !ttl.is_zero() {
            self.entries.insert(key, Cached { value, ttl });
        }
    }

    /// Entries held now, once pending evictions have run.
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Authentication and authorization against the cluster.
pub struct KubeAuth {
    client: kube::Client,
    /// How long an answer is reused: allowed, denied (half as long).
    ttl: Duration,
    node_name: String,
    privileged: Permission,
    /// Audiences a token must be valid for (empty: the API server's).
    audiences: Vec<String>,
    tokens: ReviewCache<TokenDigest, Result<User, String>>,
    /// Keyed on the whole identity and the attributes, as the kubelet does.
    decisions: ReviewCache<(User, Action), Result<(), String>>,
}

/// The expiry (`exp`) of a JWT, if the token is one.
pub fn token_expiry(token: &str) -> Option<Instant> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims["exp"].as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Instant::now() + Duration::from_secs(exp.saturating_sub(now)))
}

impl KubeAuth {
    pub fn new(
        client: kube::Client,
        node_name: &str,
        privileged: Permission,
        ttl: Duration,
        audiences: Vec<String>,
    ) -> Self {
        Self {
            client,
            ttl,
            node_name: node_name.into(),
            privileged,
            audiences,
            tokens: ReviewCache::new(MAX_CACHED_TOKENS),
            decisions: ReviewCache::new(MAX_CACHED_DECISIONS),
        }
    }

    /// The user `token` belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        let digest = TokenDigest::of(token);
        if let Some(hit) = self.tokens.get(&digest) {
            return hit.map_err(AuthError::Unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::Unavailable)?;
        let status = answer.status.unwrap_or_default();
        let result = match (status.authenticated, status.user) {
            (Some(true), Some(_))
                if !audiences_match(&self.audiences, status.audiences.as_deref()) =>
            {
                // An authenticator that does not know audiences answers for
                // its own: refused, as the kube-apiserver's would.
                Err(format!(
                    "the token is valid for the audiences {:?}, none of which this agent accepts ({:?})",
                    status.audiences.unwrap_or_default(),
                    self.audiences
                ))
            }
            (Some(true), Some(user)) => Ok(User {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default().into_iter().collect(),
            }),
            _ => Err(status
                .error
                .unwrap_or_else(|| "the token is not valid".into())),
        };
        let ttl = if result.is_ok() {
            self.ttl
        } else {
            self.ttl / 2
        };
        let ttl = match token_expiry(token) {
            Some(expiry) => ttl.min(expiry.saturating_duration_since(Instant::now())),
            None => ttl,
        };
        self.tokens.insert(digest, result.clone(), ttl);
        result.map_err(AuthError::Unauthenticated)
    }

    /// Whether `user` may do `action` (counted in the metrics).
    pub async fn authorize(&self, user: &User, action: &Action) -> Result<(), AuthError> {
        let decided = self.decide(user, action).await;
        if !matches!(decided, Err(AuthError::Unavailable(_))) {
            crate::metrics::decision(decided.is_ok(), &action.resource_path());
        }
        decided
    }

    async fn decide(&self, user: &User, action: &Action) -> Result<(), AuthError> {
        let key = (user.clone(), action.clone());
        if let Some(hit) = self.decisions.get(&key) {
            return hit.map_err(|message| AuthError::Forbidden { message });
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| {
                    user.extra
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(action.verb.clone()),
                    group: Some(action.group.clone()),
                    // RBAC ignores the version; the core group's is `v1`.
                    version: action.group.is_empty().then(|| "v1".into()),
                    resource: Some(action.resource.clone()),
                    subresource: action.subresource.clone(),
                    namespace: action.namespace.clone(),
                    name: action.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::Unavailable)?;
        let status = answer.status.unwrap_or_default();
        let result = if status.allowed {
            Ok(())
        } else {
            let mut message = action.forbidden_message(user);
            if let Some(reason) = status.reason.filter(|r| !r.is_empty()) {
                message.push_str(&format!(": {reason}"));
            }
            Err(message)
        };
        let ttl = if result.is_ok() {
            self.ttl
        } else {
            self.ttl / 2
        };
        self.decisions.insert(key, result.clone(), ttl);
        result.map_err(|message| AuthError::Forbidden { message })
    }

    /// The extra right the privileged profile needs, on this node.
    pub fn privileged_action(&self) -> Action {
        let mut action =
            Action::new(&self.privileged.verb, &self.privileged.resource).name(&self.node_name);
        action.subresource = self.privileged.subresource.clone();
        action
    }
}

/// Whether a TokenReview's answered audiences suit the ones asked for: any
/// when none were asked for, else at least one in common.
fn audiences_match(wanted: &[String], answered: Option<&[String]>) -> bool {
    wanted.is_empty()
        || answered
            .unwrap_or_default()
            .iter()
            .any(|a| wanted.contains(a))
}

/// Proof that `user` passed the access reviews for `value` (what they
/// named): only [`Auth::admit`] makes one, so whatever needs it (resolving a
/// target, taking a session slot) cannot run before the review.
#[derive(Debug)]
pub struct Admitted<T> {
    user: User,
    value: T,
}

impl<T> Admitted<T> {
    /// Who was admitted.
    pub fn user(&self) -> &User {
        &self.user
    }

    /// What they were admitted to.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The same admission for a narrower `value` that the review covers
    /// (one container of the pod that was reviewed).
    pub fn narrowed<U>(self, narrow: impl FnOnce(T) -> U) -> Admitted<U> {
        Admitted {
            user: self.user,
            value: narrow(self.value),
        }
    }
}

/// The agent's access control: the cluster's, or none (loopback demos).
pub enum Auth {
    Kube(Box<KubeAuth>),
    None,
}

impl Auth {
    /// The caller behind `token` (`None`: no token was sent).
    pub async fn authenticate(&self, token: Option<&str>) -> Result<User, AuthError> {
        match (self, token) {
            (Auth::None, _) => Ok(User::anonymous()),
            (Auth::Kube(_), None) => Err(AuthError::Unauthenticated(
                "no bearer token; send 'Authorization: Bearer TOKEN' (kubectl sends it only over https)".into(),
            )),
            (Auth::Kube(kube), Some(token)) => kube.authenticate(token).await,
        }
    }

    pub async fn authorize(&self, user: &User, action: &Action) -> Result<(), AuthError> {
        match self {
            Auth::None => Ok(()),
            Auth::Kube(kube) => kube.authorize(user, action).await,
        }
    }

    /// `value`, admitted once `user` may do every one of `actions`.
    pub async fn admit<T>(
        &self,
        user: &User,
        actions: &[Action],
        value: T,
    ) -> Result<Admitted<T>, AuthError> {
        // No action reviewed is no admission.
        if actions.is_empty() {
            return Err(AuthError::Forbidden {
                message: "the request names nothing to authorize".into(),
            });
        }
        for action in actions {
            self.authorize(user, action).await?;
        }
        Ok(Admitted {
            user: user.clone(),
            value,
        })
    }

    /// The actions of an exec into `namespace/pod`: `create pods/exec`, plus
    /// the privileged right when asked.
    pub fn exec_actions(&self, namespace: &str, pod: &str, privileged: bool) -> Vec<Action> {
        let mut actions = vec![
            Action::new("create", "pods")
                .subresource("exec")
                .namespace(namespace)
                .name(pod),
        ];
        if privileged && let Auth::Kube(kube) = self {
            actions.push(kube.privileged_action());
        }
        actions
    }

    /// Whether `user` may list every pod of the cluster (and so may learn
    /// which pod a container ID names).
    pub async fn may_list_all_pods(&self, user: &User) -> Result<bool, AuthError> {
        match self.authorize(user, &Action::new("list", "pods")).await {
            Ok(()) => Ok(true),
            Err(AuthError::Forbidden { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The privileged right alone (`create nodes/proxy` on this node by
    /// default), for an act that reaches beyond the container: a view or a
    /// capture of a target that shares the node's namespaces. The demo mode
    /// (`--auth none`) allows it, as it allows everything.
    pub async fn authorize_privileged(&self, user: &User) -> Result<(), AuthError> {
        match self {
            Auth::Kube(kube) => kube.authorize(user, &kube.privileged_action()).await,
            Auth::None => Ok(()),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Auth::Kube(_) => "kube",
            Auth::None => "none",
        }
    }
}

/// Failed authentications one token gets before it must wait.
const FREE_FAILURES: u32 = 5;
/// The first wait; each further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A token with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Rejected tokens remembered at most (the least used are forgotten first).
const MAX_TRACKED: u64 = 10_000;

/// Slows down a rejected token sent again and again: after
/// [`FREE_FAILURES`] failed authentications of one token, it waits
/// (exponentially longer) before it is even reviewed again. It is keyed on
/// what failed, the token's digest, never on the client's address: behind
/// `kubectl port-forward` every client is 127.0.0.1, and one client's bad
/// tokens must not lock out another's good one.
pub struct FailureBackoff {
    tokens: moka::sync::Cache<TokenDigest, Strikes>,
}

impl Default for FailureBackoff {
    fn default() -> Self {
        Self::new(MAX_TRACKED)
    }
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    blocked_until: Option<Instant>,
}

impl FailureBackoff {
    pub fn new(capacity: u64) -> Self {
        Self {
            tokens: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(FORGET_AFTER)
                .build(),
        }
    }

    /// `Err(wait)` while `token` must wait.
    pub fn check(&self, token: &TokenDigest) -> Result<(), Duration> {
        let now = Instant::now();
        match self.tokens.get(token).and_then(|s| s.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, token: TokenDigest) {
        self.tokens.entry(token).and_upsert_with(|entry| {
            let mut strikes = entry.map(|e| e.into_value()).unwrap_or(Strikes {
                count: 0,
                blocked_until: None,
            });
            strikes.count = strikes.count.saturating_add(1);
            if strikes.count >= FREE_FAILURES {
                let doublings = (strikes.count - FREE_FAILURES).min(16);
                let wait = (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF);
                strikes.blocked_until = Some(Instant::now() + wait);
            }
            strikes
        });
    }

    pub fn succeeded(&self, token: &TokenDigest) {
        self.tokens.invalidate(token);
    }

    /// Tokens tracked now, once pending evictions have run.
    pub fn len(&self) -> u64 {
        self.tokens.run_pending_tasks();
        self.tokens.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bearer token of a request: the `Authorization` header, or the WebSocket
/// subprotocol browsers use (`base64url.bearer.authorization.k8s.io.TOKEN`).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some(token.to_string());
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix("base64url.bearer.authorization.k8s.io.")
        })
        .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_read_like_the_api_servers() {
        let user = User {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
            extra: BTreeMap::new(),
        };
        let action = Action::new("create", "pods")
            .subresource("exec")
            .namespace("default")
            .name("web");
        assert_eq!(
            action.forbidden_message(&user),
            "pods \"web\" is forbidden: User \"alice\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        );
        let metrics = Action::new("list", "pods")
            .group("metrics.k8s.io")
            .namespace("shop");
        assert_eq!(
            metrics.forbidden_message(&user),
            "pods.metrics.k8s.io is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"shop\""
        );
    }

    #[test]
    fn audiences_must_intersect_when_asked_for() {
        let wanted = vec!["nsdebug".to_string()];
        let api = vec!["https://kubernetes.default.svc".to_string()];
        assert!(audiences_match(&[], None));
        assert!(audiences_match(&[], Some(&api)));
        assert!(audiences_match(&wanted, Some(&["nsdebug".to_string()])));
        assert!(!audiences_match(&wanted, Some(&api)));
        assert!(!audiences_match(&wanted, None));
    }

    #[test]
    fn tokens_from_headers_and_subprotocols() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            "sec-websocket-protocol",
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.c2VjcmV0"
                .parse()
                .unwrap(),
        );
        assert_eq!(bearer_token(&headers).as_deref(), Some("secret"));
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn repeated_failures_make_a_token_wait_longer() {
        let backoff = FailureBackoff::default();
        let token = TokenDigest::of("guess");
        let other = TokenDigest::of("alice-token");
        for _ in 0..FREE_FAILURES - 1 {
            backoff.failed(token);
            assert!(backoff.check(&token).is_ok());
        }
        backoff.failed(token);
        let first = backoff.check(&token).unwrap_err();
        assert!(
            first <= FIRST_BACKOFF && first > FIRST_BACKOFF / 2,
            "{first:?}"
        );
        backoff.failed(token);
        let second = backoff.check(&token).unwrap_err();
        assert!(second > FIRST_BACKOFF, "doubles: {second:?}");
        assert!(backoff.check(&other).is_ok(), "other tokens are not slowed");
        backoff.succeeded(&token);
        assert!(backoff.check(&token).is_ok(), "a success forgets");
        for _ in 0..40 {
            backoff.failed(token);
        }
        assert!(backoff.check(&token).unwrap_err() <= MAX_BACKOFF);
    }

    #[test]
    fn the_backoff_stays_bounded_under_many_distinct_tokens() {
        let backoff = FailureBackoff::new(100);
        for n in 0..5_000 {
            backoff.failed(TokenDigest::of(&format!("guess-{n}")));
        }
        assert!(backoff.len() <= 100, "{}", backoff.len());
    }

    #[test]
    fn review_caches_stay_bounded_and_expire() {
        let cache: ReviewCache<TokenDigest, Result<User, String>> = ReviewCache::new(100);
        for n in 0..5_000 {
            cache.insert(
                TokenDigest::of(&format!("token-{n}")),
                Err("invalid".into()),
                Duration::from_secs(60),
            );
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        let short: ReviewCache<u8, ()> = ReviewCache::new(10);
        short.insert(1, (), Duration::from_millis(1));
        short.insert(2, (), Duration::ZERO);
        // Expiry is the behaviour under test: let the entry age past it.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(&1), None, "expired");
        assert_eq!(short.get(&2), None, "a zero TTL is not cached");
    }

    #[test]
    fn decisions_are_keyed_on_the_whole_identity() {
        let cache: ReviewCache<(User, Action), Result<(), String>> = ReviewCache::new(100);
        let ops = User {
            name: "sam".into(),
            uid: "1".into(),
            groups: vec!["ops".into()],
            extra: BTreeMap::new(),
        };
        let guest = User {
            groups: vec!["guests".into()],
            ..ops.clone()
        };
        let scoped = User {
            extra: BTreeMap::from([("scopes".into(), vec!["read".into()])]),
            ..ops.clone()
        };
        let list = Action::new("list", "pods");
        cache.insert((ops.clone(), list.clone()), Ok(()), Duration::from_secs(60));
        assert_eq!(cache.get(&(ops, list.clone())), Some(Ok(())));
        assert_eq!(cache.get(&(guest, list.clone())), None);
        assert_eq!(cache.get(&(scoped, list)), None);
    }

    #[test]
    fn jwt_expiry_caps_the_cache() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let payload = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now + 3));
        let token = format!("e30.{payload}.sig");
        let until = token_expiry(&token).unwrap();
        assert!(until <= Instant::now() + Duration::from_secs(3));
        assert_eq!(token_expiry("opaque-token"), None);
    }
}
