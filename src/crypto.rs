use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Keys derived from the master `SECRET_KEY`; each purpose gets its own key.
#[derive(Clone)]
pub struct Keys {
    jwt_encoding: EncodingKey,
    jwt_decoding: DecodingKey,
    code_key: [u8; 32],
    link_key: [u8; 32],
    refresh_key: [u8; 32],
    webhook_key: [u8; 32],
}

impl Keys {
    pub fn derive(master: &Secret) -> Self {
        let jwt = derive_key(master, "storecrm/access-token/v1");
        Self {
            jwt_encoding: EncodingKey::from_secret(&jwt),
            jwt_decoding: DecodingKey::from_secret(&jwt),
            code_key: derive_key(master, "storecrm/magic-code/v1"),
            link_key: derive_key(master, "storecrm/mail-link/v1"),
            refresh_key: derive_key(master, "storecrm/refresh-successor/v1"),
            webhook_key: derive_key(master, "storecrm/webhook-secret/v1"),
        }
    }

    /// Signs claims as an HS256 JWT.
    pub fn sign<C: Serialize>(&self, claims: &C) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.jwt_encoding)
            .expect("HS256 signing of a serialisable claim set cannot fail")
    }

    /// Verifies signature, algorithm (HS256 only) and expiry.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Option<C> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<C>(token, &self.jwt_decoding, &validation).ok().map(|d| d.claims)
    }

    /// Keyed hash for short secrets (magic codes): a leaked table cannot be brute-forced offline.
    pub fn code_hash(&self, scope: &[u8], code: &str) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.code_key).expect("HMAC takes any key length");
        mac.update(scope);
        mac.update(b"\0");
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl Keys {
    /// A MAC for links put in mail (unsubscribe): verifiable without storing anything.
    pub fn link_mac(&self, data: &[u8]) -> [u8; 16] {
        let mut mac = HmacSha256::new_from_slice(&self.link_key).expect("HMAC takes any key length");
        mac.update(data);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

impl Keys {
    /// The refresh token that replaces `presented`: derived, not random, so the same token
    /// presented again inside the grace window gets the same successor without storing it.
    pub fn refresh_successor(&self, presented: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.refresh_key).expect("HMAC takes any key length");
        mac.update(presented.as_bytes());
        b64(&mac.finalize().into_bytes())
    }
}

impl Keys {
    /// A webhook endpoint's signing key, version `version`: derived, so no secret is stored, and
    /// a rotation (a new version) makes a new one.
    pub fn webhook_secret(&self, store_id: uuid::Uuid, endpoint_id: uuid::Uuid, version: i32) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.webhook_key).expect("HMAC takes any key length");
        mac.update(store_id.as_bytes());
        mac.update(endpoint_id.as_bytes());
        mac.update(&version.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn derive_key(master: &Secret, purpose: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(master.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Claims of an account access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountClaims {
    pub sub: uuid::Uuid,
    pub sid: uuid::Uuid,
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
}

pub const ACCOUNT_TOKEN_TYPE: &str = "account";
pub const PROFILE_TOKEN_TYPE: &str = "profile";

/// Claims of a profile access token: bound to one store and one session.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileClaims {
    pub sub: uuid::Uuid,
    pub store: uuid::Uuid,
    pub sid: uuid::Uuid,
    /// The session was opened with a magic code.
    pub ver: bool,
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
}

/// Only the token type, to route a bearer to the right check.
#[derive(Debug, Deserialize)]
pub struct TokenType {
    pub typ: String,
}

/// `n` random bytes from the thread-local CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rng().fill_bytes(&mut buf);
    buf
}

pub fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut buf);
    to_hex(&buf)
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An opaque 256-bit token, URL-safe.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Hash for high-entropy secrets (refresh tokens, API keys): a plain SHA-256 suffices.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_same_key() {
        let a = Keys::derive(&Secret::new("a".repeat(32)));
        let b = Keys::derive(&Secret::new("b".repeat(32)));
        let claims = AccountClaims {
            sub: uuid::Uuid::now_v7(),
            sid: uuid::Uuid::now_v7(),
            typ: ACCOUNT_TOKEN_TYPE.into(),
            iat: crate::now(),
            exp: crate::now() + 60,
        };
        let token = a.sign(&claims);
        assert!(a.verify::<AccountClaims>(&token).is_some());
        assert!(b.verify::<AccountClaims>(&token).is_none());
        let expired = AccountClaims { exp: crate::now() - 1, ..claims };
        assert!(a.verify::<AccountClaims>(&a.sign(&expired)).is_none());
    }

    #[test]
    fn code_hash_is_keyed_and_scoped() {
        let a = Keys::derive(&Secret::new("a".repeat(32)));
        let b = Keys::derive(&Secret::new("b".repeat(32)));
        assert_ne!(a.code_hash(b"s1", "123456"), b.code_hash(b"s1", "123456"));
        assert_ne!(a.code_hash(b"s1", "123456"), a.code_hash(b"s2", "123456"));
        assert_eq!(a.code_hash(b"s1", "123456"), a.code_hash(b"s1", "123456"));
    }
}
