//! DSSE v1 envelopes: the pre-authentication encoding (PAE), signing with an Ed25519 key and
//! verifying against a public key. Nothing here knows what the payload means.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Signs `body` as `payload_type` with `key`, naming the key `keyid`.
pub fn sign(payload_type: &str, body: &[u8], key: &SigningKey, keyid: &str) -> Envelope {
    let sig = key.sign(&pae(payload_type, body));
    Envelope {
        payload: STANDARD.encode(body),
        payload_type: payload_type.to_string(),
        signatures: vec![EnvelopeSignature {
            keyid: keyid.to_string(),
            sig: STANDARD.encode(sig.to_bytes()),
        }],
    }
}

impl Envelope {
    /// The decoded payload.
    pub fn body(&self) -> Result<Vec<u8>, Error> {
        STANDARD.decode(&self.payload).map_err(Error::PayloadNotBase64)
    }

    /// Whether a signature named `keyid` verifies with `key`.
    pub fn verify(&self, keyid: &str, key: &VerifyingKey) -> Result<(), Error> {
        let body = self.body()?;
        let s = self
            .signatures
            .iter()
            .find(|s| s.keyid == keyid)
            .ok_or_else(|| Error::NoSignature(keyid.to_string()))?;
        let raw = STANDARD.decode(&s.sig).map_err(Error::SignatureNotBase64)?;
        let sig = Signature::from_slice(&raw).map_err(Error::NotEd25519)?;
        key.verify(&pae(&self.payload_type, &body), &sig)
            .map_err(|_| Error::DoesNotVerify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer: the DSSE protocol's Ed25519 test vector (seed of 32 zero bytes).
    #[test]
    fn known_answer() {
        let key = SigningKey::from_bytes(&[0u8; 32]);
        let body = format!(
            "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{{\"name\":\"_\",\"digest\":{{\"sha256\":\"{}\"}}}}],\"predicateType\":\"https://example.com/approval/v1\"}}",
            "0".repeat(64)
        );
        assert_eq!(body.len(), 205);
        let env = sign("application/vnd.in-toto+json", body.as_bytes(), &key, "k");
        assert_eq!(
            env.signatures[0].sig,
            "REUdg9Gd5yk7siDLX9wClJtsDTx5WvyECg11oerhOKBTaS68juGELXaXIY4HnBHN2KGUXvbgEZxEDk8MyBpNAg=="
        );
        env.verify("k", &key.verifying_key()).unwrap();
    }

    #[test]
    fn a_changed_payload_or_type_fails() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut env = sign("t", b"hello", &key, "k");
        env.payload = STANDARD.encode(b"hellO");
        assert!(env.verify("k", &key.verifying_key()).is_err());
        let mut env = sign("t", b"hello", &key, "k");
        env.payload_type = "u".into();
        assert!(env.verify("k", &key.verifying_key()).is_err());
    }
}
