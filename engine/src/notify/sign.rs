//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>`
//! with the key a `whsec_<base64>` secret. Computes; never logs or returns the key.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key that is not `whsec_` followed by base64 (the message never quotes it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the signing key is not `whsec_` followed by base64 (as Standard Webhooks keys are)")]
pub struct BadKey;

/// Keys are read with or without base64 padding, as the reference libraries read them.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded key of a `whsec_<base64>` secret (a bare base64 key is taken too).
fn key_bytes(secret: &str) -> Result<Vec<u8>, BadKey> {
    let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
    match LENIENT.decode(b64) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(BadKey),
    }
}

/// Checks a key without signing anything.
pub fn check_key(secret: &str) -> Result<(), BadKey> {
    key_bytes(secret).map(|_| ())
}

/// The `webhook-signature` header value for one attempt.
pub fn signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Result<String, BadKey> {
    let key = key_bytes(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(check_key("whsec_!!!"), Err(BadKey));
        assert_eq!(check_key("whsec_"), Err(BadKey));
        assert!(check_key("whsec_c2VjcmV0").is_ok());
        assert!(check_key("whsec_c2VjcmV0MQ").is_ok() && check_key("whsec_c2VjcmV0MQ==").is_ok());
    }
}
