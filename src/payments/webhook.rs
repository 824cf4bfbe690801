//! Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, where each
//! `v1` is HMAC-SHA256 over `"{t}.{raw body}"` keyed with the endpoint secret. Several `v1`
//! appear while a secret is being rolled; any one matching is enough.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::SignatureError;

/// Verifies `header` for `payload` at Unix time `now`. The MAC is checked before the timestamp, so
/// `OutOfTolerance` is only ever reported for a genuinely signed (but old) delivery.
pub fn verify(payload: &[u8], header: &str, secret: &str, now: i64, tolerance_secs: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = vec![];
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else { return Err(SignatureError::Invalid) };
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Invalid)?),
            // Unknown schemes (v0 is Stripe's test-only scheme) are skipped, as Stripe's libraries do.
            "v1" => signatures.push(hex_decode(value).ok_or(SignatureError::Invalid)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Invalid)?;
    if signatures.is_empty() {
        return Err(SignatureError::Invalid);
    }
    let mac = signer(secret, timestamp, payload);
    // `verify_slice` compares in constant time.
    if !signatures.iter().any(|s| mac.clone().verify_slice(s).is_ok()) {
        return Err(SignatureError::Invalid);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::OutOfTolerance);
    }
    Ok(())
}

/// A `Stripe-Signature` value for `payload`, as Stripe would send it (tests and local tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let bytes = signer(secret, timestamp, payload).finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn signer(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;

    #[test]
    fn accepts_a_matching_signature_among_several() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(body, "whsec_a", NOW);
        assert_eq!(verify(body, &good, "whsec_a", NOW + 10, 300), Ok(()));
        let sig = good.split_once(",v1=").unwrap().1;
        let rolled = format!("t={NOW},v1={},v1={sig},v0=abc", "00".repeat(32));
        assert_eq!(verify(body, &rolled, "whsec_a", NOW, 300), Ok(()));
    }

    #[test]
    fn refuses_tampering_other_secrets_and_malformed_headers() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(body, "whsec_a", NOW);
        assert_eq!(verify(br#"{"id":"evt_2"}"#, &good, "whsec_a", NOW, 300), Err(SignatureError::Invalid));
        assert_eq!(verify(body, &good, "whsec_b", NOW, 300), Err(SignatureError::Invalid));
        for header in ["", "t=abc,v1=00", &format!("t={NOW}"), "v1=00", &format!("t={NOW},v1=zz"), "garbage"] {
            assert_eq!(verify(body, header, "whsec_a", NOW, 300), Err(SignatureError::Invalid), "{header}");
        }
        // Re-signing another timestamp without the secret is impossible: the timestamp is signed.
        let moved = good.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(verify(body, &moved, "whsec_a", NOW, 300), Err(SignatureError::Invalid));
    }

    #[test]
    fn old_and_future_timestamps_are_out_of_tolerance() {
        let body = b"{}";
        assert_eq!(verify(body, &sign(body, "s", NOW - 301), "s", NOW, 300), Err(SignatureError::OutOfTolerance));
        assert_eq!(verify(body, &sign(body, "s", NOW + 301), "s", NOW, 300), Err(SignatureError::OutOfTolerance));
        assert_eq!(verify(body, &sign(body, "s", NOW - 300), "s", NOW, 300), Ok(()));
    }
}
