//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
//! signature per active secret, space separated, so a rotation never breaks verification.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A decoded `whsec_` secret.
#[derive(Clone)]
pub struct SigningKey {
    bytes: Vec<u8>,
}

impl SigningKey {
    /// Decodes `whsec_<base64>`; the key must be 24 to 64 bytes as Standard Webhooks asks.
    pub fn from_whsec(secret: &str) -> Result<SigningKey, String> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or("must start with \"whsec_\"")?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| "is not valid base64 after \"whsec_\"")?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "decodes to {} bytes; use 24 to 64 random bytes",
                bytes.len()
            ));
        }
        Ok(SigningKey { bytes })
    }

    /// `v1,<base64 signature>` for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match HmacSha256::new_from_slice(&self.bytes) {
            Ok(mac) => mac,
            Err(_) => unreachable_key(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

// HMAC accepts keys of any length; this only satisfies the type.
fn unreachable_key() -> ! {
    panic!("hmac rejected a key although hmac takes keys of any length")
}

/// The `webhook-signature` header value: one signature per key.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a `webhook-signature` header against one key, as a customer would: any listed
/// `v1` signature that matches, lengths compared before a constant-time comparison.
pub fn verify(key: &SigningKey, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
    let expected = key.sign(id, timestamp, body);
    let expected = expected.as_bytes();
    header.split(' ').any(|candidate| {
        let candidate = candidate.as_bytes();
        candidate.len() == expected.len()
            && candidate
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn golden_standard_webhooks_vector() {
        let key = SigningKey::from_whsec(SECRET).expect("valid secret");
        assert_eq!(
            key.sign(ID, 1649367553, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_signs_with_every_key_and_each_verifies() {
        let old = SigningKey::from_whsec(SECRET).expect("valid");
        let new = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        let header = signature_header(&[old.clone(), new.clone()], ID, 1649367553, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&old, &header, ID, 1649367553, BODY));
        assert!(verify(&new, &header, ID, 1649367553, BODY));
        assert!(!verify(&new, &header, ID, 1649367554, BODY));
    }

    #[test]
    fn bare_prefix_or_truncated_signature_does_not_verify() {
        let key = SigningKey::from_whsec(SECRET).expect("valid");
        assert!(!verify(&key, "v1,", ID, 1649367553, BODY));
        assert!(!verify(&key, "", ID, 1649367553, BODY));
        assert!(!verify(
            &key,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw",
            ID,
            1649367553,
            BODY
        ));
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert!(SigningKey::from_whsec("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(SigningKey::from_whsec("whsec_!!!").is_err());
        assert!(SigningKey::from_whsec("whsec_c2hvcnQ=").is_err());
    }
}
