//! Snowflake key-pair authentication: the user's RSA private key (PKCS#8 PEM, optionally
//! encrypted) signs a short-lived RS256 JWT whose `iss` is `ACCOUNT.USER.SHA256:<fingerprint>`
//! and `sub` is `ACCOUNT.USER`.
//!
//! The key, its passphrase and the tokens never appear in `Debug` output or errors: errors say
//! what is wrong with the key (not PKCS#8, wrong passphrase), never what it contains.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pkcs8::der::Encode;
use pkcs8::der::asn1::{AnyRef, BitStringRef};
use pkcs8::spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};
use pkcs8::{EncryptedPrivateKeyInfo, SecretDocument};
use ring::rand::SystemRandom;
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use super::SnowflakeError;

/// rsaEncryption, the algorithm of an RSA SubjectPublicKeyInfo.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// How long a token is valid. Snowflake accepts at most one hour.
const TOKEN_LIFETIME: Duration = Duration::from_secs(59 * 60);
/// A cached token is replaced this long before it expires, so a request never carries a token
/// that expires in flight.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The user's RSA private key, ready to sign.
pub struct PrivateKey {
    pair: RsaKeyPair,
    /// `SHA256:<base64 of the SHA-256 of the public key's DER>`, as Snowflake shows it in
    /// `DESCRIBE USER` (`RSA_PUBLIC_KEY_FP`).
    fingerprint: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PrivateKey {
    /// Reads a PKCS#8 PEM key (`BEGIN PRIVATE KEY`, or `BEGIN ENCRYPTED PRIVATE KEY` with its
    /// passphrase).
    pub fn from_pkcs8_pem(
        pem: &str,
        passphrase: Option<&str>,
    ) -> Result<PrivateKey, SnowflakeError> {
        let pem = pem.trim();
        let label = pkcs8::der::pem::decode_label(pem.as_bytes()).map_err(|e| {
            key_error(format!(
                "not a PEM document ({e}); expected PKCS#8 (BEGIN PRIVATE KEY or BEGIN ENCRYPTED PRIVATE KEY)"
            ))
        })?;
        let document = || {
            SecretDocument::from_pem(pem)
                .map(|(_, document)| document)
                .map_err(|e| key_error(format!("malformed {label} PEM: {e}")))
        };
        let der = match label {
            "PRIVATE KEY" => document()?,
            "ENCRYPTED PRIVATE KEY" => {
                let document = document()?;
                let passphrase = passphrase.ok_or_else(|| {
                    key_error("the key is encrypted and no passphrase was given".into())
                })?;
                let encrypted = EncryptedPrivateKeyInfo::try_from(document.as_bytes())
                    .map_err(|e| key_error(format!("malformed encrypted PKCS#8 key: {e}")))?;
                encrypted.decrypt(passphrase).map_err(|_| {
                    key_error(
                        "cannot decrypt the key: wrong passphrase or unsupported cipher".into(),
                    )
                })?
            }
            "RSA PRIVATE KEY" => {
                return Err(key_error(
                    "PKCS#1 (BEGIN RSA PRIVATE KEY) is not accepted; convert it with \
                     `openssl pkcs8 -topk8 -in key.pem -out key.p8`"
                        .into(),
                ));
            }
            other => return Err(key_error(format!("unexpected PEM label {other:?}"))),
        };
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| key_error(format!("not a usable RSA key: {e}")))?;
        let fingerprint = fingerprint(pair.public_key().as_ref())?;
        Ok(PrivateKey { pair, fingerprint })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SnowflakeError> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| key_error("RS256 signing failed".into()))?;
        Ok(signature)
    }
}

fn key_error(message: String) -> SnowflakeError {
    SnowflakeError::Key(message)
}

/// The fingerprint of a PKCS#1 RSAPublicKey: Snowflake hashes the SubjectPublicKeyInfo DER.
fn fingerprint(pkcs1_public_key: &[u8]) -> Result<String, SnowflakeError> {
    let spki = SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(pkcs1_public_key)
            .map_err(|e| key_error(format!("public key encoding: {e}")))?,
    };
    let der = spki
        .to_der()
        .map_err(|e| key_error(format!("public key encoding: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(format!("SHA256:{}", STANDARD.encode(digest.as_ref())))
}

/// Signs and caches tokens for one user.
pub struct TokenSource {
    key: PrivateKey,
    account: String,
    user: String,
    cached: Mutex<Option<Token>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.key)
            .field("account", &self.account)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A signed JWT and when it should be replaced.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    renew_at: SystemTime,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl TokenSource {
    pub fn new(key: PrivateKey, account: &str, user: &str) -> TokenSource {
        TokenSource {
            key,
            account: sluice_core::snowflake::account_forms(account).jwt,
            user: user.trim().to_ascii_uppercase(),
            cached: Mutex::new(None),
        }
    }

    /// The qualified user, `ACCOUNT.USER` (the token's `sub`).
    pub fn subject(&self) -> String {
        format!("{}.{}", self.account, self.user)
    }

    pub fn fingerprint(&self) -> &str {
        self.key.fingerprint()
    }

    /// A valid token: the cached one until shortly before it expires, else a new one.
    /// `fresh` is true when the token was signed by this call.
    pub fn token(&self) -> Result<(Token, bool), SnowflakeError> {
        self.token_at(SystemTime::now())
    }

    /// [`TokenSource::token`] at `now`: the clock is handed in so renewal can be tested.
    pub fn token_at(&self, now: SystemTime) -> Result<(Token, bool), SnowflakeError> {
        // A poisoned lock only means another thread panicked while holding it; the cache is
        // still a valid Option.
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = cached.as_ref().filter(|t| now < t.renew_at) {
            return Ok((token.clone(), false));
        }
        let token = self.sign(now)?;
        *cached = Some(token.clone());
        Ok((token, true))
    }

    /// Forgets the cached token (after the server refused it).
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn sign(&self, now: SystemTime) -> Result<Token, SnowflakeError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| key_error("the system clock is before 1970".into()))?
            .as_secs();
        let exp = iat + TOKEN_LIFETIME.as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": format!("{}.{}", self.subject(), self.key.fingerprint),
            "sub": self.subject(),
            "iat": iat,
            "exp": exp,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signing_input.as_bytes())?);
        Ok(Token {
            value: format!("{signing_input}.{signature}"),
            renew_at: now + TOKEN_LIFETIME - RENEW_BEFORE_EXPIRY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_pkcs8_keys_are_refused_with_the_fix() {
        let err = PrivateKey::from_pkcs8_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
        let err = PrivateKey::from_pkcs8_pem("not a key", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a PEM document"), "{err}");
    }
}
