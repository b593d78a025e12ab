//! Document tokens: what a browser presents to open one document's WebSocket.
//!
//! A token is `v1.<payload>.<signature>`: the payload is base64url JSON claims (document, access,
//! issue time, expiry, and optionally the user), the signature base64url HMAC-SHA256 of
//! `v1.<payload>` under the operator secret. Nothing is stored per token; revocation works by
//! issue time (see `revocations.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::DocId;

const PREFIX: &str = "v1.";
/// Longest token accepted before any parsing, so hostile input costs nothing.
const MAX_TOKEN_LEN: usize = 4096;

/// What a connection may do with its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Receives everything; its changes are dropped.
    Read,
    /// Reads and edits.
    Write,
}

/// Who a token was issued to, shown to others and matched by revocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenUser {
    /// 1 to 100 characters.
    pub name: String,
    /// A CSS colour for the user's cursor, such as `#1e88e5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// The signed content of a document token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub doc: String,
    pub access: Access,
    /// Issue time, Unix epoch milliseconds.
    pub iat: i64,
    /// Expiry, Unix epoch seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<TokenUser>,
}

/// Why a token was not accepted. `WrongDocument` is a 403; the rest are 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another document")]
    WrongDocument,
    #[error("the token was revoked")]
    Revoked,
    /// Its lifetime (issue to expiry) is longer than `--max-token-lifetime` allows now.
    #[error("the token lives longer than the server now allows (--max-token-lifetime)")]
    TooLong,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Signs `claims` into a token.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize to JSON");
    let signed = format!("{PREFIX}{}", B64.encode(json));
    let mut mac = mac(secret);
    mac.update(signed.as_bytes());
    let signature = B64.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// Checks a token's signature and expiry (at `now_s`, Unix seconds) and that it names `doc`.
pub fn verify(secret: &[u8], token: &str, doc: &DocId, now_s: i64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let payload = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(signed.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let json = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now_s {
        return Err(TokenError::Expired);
    }
    if claims.doc != doc.as_str() {
        return Err(TokenError::WrongDocument);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(doc: &str, exp: i64) -> Claims {
        Claims {
            doc: doc.into(),
            access: Access::Write,
            iat: 1_000,
            exp,
            user: Some(TokenUser {
                name: "Ada".into(),
                color: None,
            }),
        }
    }

    fn doc(name: &str) -> DocId {
        DocId::parse(name).expect("valid name")
    }

    #[test]
    fn a_signed_token_verifies_for_its_document_until_it_expires() {
        let token = sign(b"secret", &claims("a", 100));
        assert_eq!(
            verify(b"secret", &token, &doc("a"), 99),
            Ok(claims("a", 100))
        );
        assert_eq!(
            verify(b"secret", &token, &doc("a"), 100),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"secret", &token, &doc("b"), 99),
            Err(TokenError::WrongDocument)
        );
        assert_eq!(
            verify(b"other", &token, &doc("a"), 99),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = sign(b"secret", &claims("a", 100));
        let (_, signature) = token.rsplit_once('.').expect("two parts");
        let mut forged = claims("a", 100);
        forged.access = Access::Write;
        forged.exp = 10_000;
        let forged_payload = B64.encode(serde_json::to_vec(&forged).expect("json"));
        let tampered = format!("{PREFIX}{forged_payload}.{signature}");
        assert_eq!(
            verify(b"secret", &tampered, &doc("a"), 99),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in [
            "",
            ".",
            "v1.",
            "v1..",
            "v1.x.y",
            "abc",
            "v1.%%%.%%%",
            &"a".repeat(5000),
        ] {
            assert!(verify(b"secret", token, &doc("a"), 0).is_err(), "{token:?}");
        }
    }
}
