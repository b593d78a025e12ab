//! Access control: API keys for the REST API, signed document tokens for WebSockets, and
//! revocations.
//!
//! With no operator secret everything is open (and the server only listens on loopback unless
//! told otherwise, see `startup.rs`). With a secret, the REST API wants an API key and every
//! WebSocket a document token (or an API key); a token grants read or write access to one
//! document until it expires or is revoked.

pub(crate) mod middleware;
pub(crate) mod revocation_watch;
pub(crate) mod revocations;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

pub(crate) use self::revocations::Revocations;
pub use self::token::{Access, Claims, TokenError, TokenUser};
use crate::config::Settings;
use crate::domain::DocId;
use crate::store::{Store, now_ms};

/// Shortest operator secret accepted: the HMAC key must not be guessable.
const MIN_SECRET_LEN: usize = 32;

/// What a connection was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub access: Access,
    /// Who the token was issued to.
    pub user: Option<TokenUser>,
    /// Token issue time (epoch ms), for revocation checks; `None` for open mode and API keys.
    pub issued_at: Option<i64>,
    /// Token expiry (epoch seconds).
    pub expires_at: Option<i64>,
}

impl Grant {
    fn full() -> Self {
        Self {
            access: Access::Write,
            user: None,
            issued_at: None,
            expires_at: None,
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// No credentials, or credentials that prove nothing (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not cover this (403).
    #[error("{0}")]
    Forbidden(String),
}

/// The server's access rules.
pub(crate) struct Auth {
    secret: Option<Vec<u8>>,
    /// SHA-256 of each API key: compared digest to digest, in constant time.
    api_keys: Vec<[u8; 32]>,
    /// SHA-256 of the metrics scraper's token.
    metrics_token: Option<[u8; 32]>,
    pub token_lifetime: Duration,
    pub max_token_lifetime: Duration,
    pub revocations: Revocations,
}

impl Auth {
    /// Reads the secret and keys (from the settings and their files) and the stored revocations.
    pub(crate) async fn from_settings(
        settings: &Settings,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let secret = match (&settings.auth_secret, &settings.auth_secret_file) {
            (Some(secret), _) => Some(secret.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("Failed to read the auth secret file {}", path.display())
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let secret = secret.filter(|s| !s.is_empty());
        let mut keys: Vec<String> = settings
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(path) = &settings.api_key_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("Failed to read the API key file {}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Some(secret) = &secret {
            if secret.len() < MIN_SECRET_LEN {
                bail!("the auth secret must be at least {MIN_SECRET_LEN} characters long");
            }
            if keys.is_empty() {
                bail!("auth is on but no API key is configured: set --api-key or --api-key-file");
            }
        } else if !keys.is_empty() {
            bail!("API keys are configured but auth is off: set --auth-secret as well");
        }
        if settings.token_lifetime > settings.max_token_lifetime {
            bail!("--token-lifetime is longer than --max-token-lifetime");
        }
        let revocations = Revocations::load(store, settings.max_token_lifetime)
            .await
            .context("Failed to load token revocations")?;
        Ok(Self {
            secret: secret.map(String::into_bytes),
            api_keys: keys.iter().map(|k| digest(k)).collect(),
            metrics_token: settings
                .metrics_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(digest),
            token_lifetime: settings.token_lifetime,
            max_token_lifetime: settings.max_token_lifetime,
            revocations,
        })
    }

    /// Whether access control is on.
    pub(crate) fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether `presented` is one of the API keys. Looks at every key whatever matches, so the
    /// time taken does not tell which key (or how much of it) was right.
    pub(crate) fn is_api_key(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.api_keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key, &presented)
        })
    }

    /// Checks the REST API credentials: the bearer value of `Authorization`.
    pub(crate) fn check_api(&self, bearer: Option<&str>) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        match bearer {
            None => Err(Denied::Unauthenticated(
                "an API key is required: send `Authorization: Bearer <key>`".into(),
            )),
            Some(key) if self.is_api_key(key) => Ok(()),
            Some(_) => Err(Denied::Unauthenticated("the API key is not valid".into())),
        }
    }

    /// Checks a scraper's credentials for `/metrics`: the metrics token or an API key, when
    /// either access control or the token is on.
    pub(crate) fn check_metrics(&self, bearer: Option<&str>) -> Result<(), Denied> {
        if !self.enabled() && self.metrics_token.is_none() {
            return Ok(());
        }
        let Some(presented) = bearer else {
            return Err(Denied::Unauthenticated(
                "metrics need a credential: send `Authorization: Bearer <metrics token>`".into(),
            ));
        };
        let is_token = self
            .metrics_token
            .is_some_and(|token| constant_time_eq(&token, &digest(presented)));
        if is_token || self.is_api_key(presented) {
            Ok(())
        } else {
            Err(Denied::Unauthenticated(
                "the metrics credential is not valid".into(),
            ))
        }
    }

    /// Checks what a request's credentials grant on `doc`: a document token in the query
    /// (`?token=`), or a token or API key in `Authorization: Bearer`. API keys are taken from the
    /// header only, so that they never appear in URLs.
    pub(crate) fn authorize_doc(
        &self,
        doc: &DocId,
        query_token: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Grant, Denied> {
        let Some(secret) = &self.secret else {
            return Ok(Grant::full());
        };
        let query_token = query_token.filter(|t| !t.is_empty());
        if query_token.is_none()
            && let Some(bearer) = bearer
            && self.is_api_key(bearer)
        {
            return Ok(Grant::full());
        }
        let Some(presented) = query_token.or(bearer) else {
            return Err(Denied::Unauthenticated(
                "a document token is required: connect with ?token=<token>".into(),
            ));
        };
        let claims =
            token::verify(secret, presented, doc, now_ms() / 1000).map_err(|e| match e {
                TokenError::WrongDocument | TokenError::Revoked => Denied::Forbidden(e.to_string()),
                _ => Denied::Unauthenticated(e.to_string()),
            })?;
        // No token may live longer than the longest lifetime now allowed, whatever the limit
        // was when it was issued: that is what lets a revocation be forgotten once that
        // lifetime has passed (`revocations.rs`), even after a restart with a shorter limit.
        let lifetime_ms = claims.exp.saturating_mul(1000).saturating_sub(claims.iat);
        if lifetime_ms > i64::try_from(self.max_token_lifetime.as_millis()).unwrap_or(i64::MAX) {
            return Err(Denied::Unauthenticated(TokenError::TooLong.to_string()));
        }
        let user = claims.user.as_ref().map(|u| u.name.as_str());
        if self.revocations.is_revoked(doc, user, claims.iat) {
            return Err(Denied::Forbidden(TokenError::Revoked.to_string()));
        }
        Ok(Grant {
            access: claims.access,
            user: claims.user,
            issued_at: Some(claims.iat),
            expires_at: Some(claims.exp),
        })
    }

    /// Whether a grant made earlier has since been revoked.
    pub(crate) fn still_valid(&self, doc: &DocId, grant: &Grant) -> bool {
        match grant.issued_at {
            Some(iat) => {
                let user = grant.user.as_ref().map(|u| u.name.as_str());
                !self.revocations.is_revoked(doc, user, iat)
            }
            None => true,
        }
    }

    /// Signs a token for `doc`. `None` when auth is off (there is nothing to sign with).
    pub(crate) fn issue(
        &self,
        doc: &DocId,
        access: Access,
        lifetime: Duration,
        user: Option<TokenUser>,
    ) -> Option<(String, Claims)> {
        let secret = self.secret.as_ref()?;
        let now = now_ms();
        let claims = Claims {
            doc: doc.to_string(),
            access,
            iat: now,
            exp: now / 1000 + lifetime.as_secs() as i64,
            user,
        };
        Some((token::sign(secret, &claims), claims))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential in `Authorization: Bearer <value>`, if any.
pub(crate) fn bearer(req: &actix_web::HttpRequest) -> Option<&str> {
    bearer_of(req.headers())
}

pub(crate) fn bearer_of(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let value = headers
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}
