//! Short-lived worker access tokens: what `POST /_worker/auth/token` (the
//! STS exchange of the `rxon`-based SDKs) hands out for a worker's own or
//! the global token.
//!
//! A token names its worker and its expiry and is signed (HMAC-SHA256) with
//! a key every instance reads from storage, so any instance accepts what
//! another issued. `reload-workers` replaces the key: every access token
//! issued before is refused from then on. Nothing is stored per token.
//!
//! Form: `avt1.<worker id, hex>.<expiry, Unix seconds>.<signature, hex>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long an access token is good for. The SDKs renew theirs before it
/// lapses (at 80 % of it), presenting the token itself.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The signing key, shared by every instance through storage.
pub type AccessKey = [u8; 32];

const PREFIX: &str = "avt1.";

/// Whether a presented worker token is an access token (rather than a
/// secret to hash and look up).
pub fn is_access_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn mac(key: &AccessKey, body: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: a 32-byte key cannot be refused.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(body.as_bytes());
    mac
}

/// A token for `worker_id` that lapses [`ACCESS_TOKEN_TTL`] after `now`
/// (Unix seconds).
pub fn issue(key: &AccessKey, worker_id: &str, now: u64) -> String {
    let body = format!("{PREFIX}{}.{}", hex::encode(worker_id), now + ACCESS_TOKEN_TTL.as_secs());
    let signature = hex::encode(mac(key, &body).finalize().into_bytes());
    format!("{body}.{signature}")
}

/// The worker `token` was issued to, if it was signed with `key` and has
/// not lapsed at `now`. The signature is checked in constant time.
pub fn verify(key: &AccessKey, token: &str, now: u64) -> Option<String> {
    let (body, signature) = token.rsplit_once('.')?;
    let signature = hex::decode(signature).ok()?;
    mac(key, body).verify_slice(&signature).ok()?;
    let (worker, expiry) = body.strip_prefix(PREFIX)?.split_once('.')?;
    if expiry.parse::<u64>().ok()? <= now {
        return None;
    }
    String::from_utf8(hex::decode(worker).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_worker_until_they_lapse() {
        let key = [7u8; 32];
        let token = issue(&key, "gpu-1", 1_000);
        assert!(is_access_token(&token));
        assert_eq!(verify(&key, &token, 1_000).as_deref(), Some("gpu-1"));
        assert_eq!(verify(&key, &token, 1_000 + ACCESS_TOKEN_TTL.as_secs()), None, "lapsed");
        assert_eq!(verify(&[8u8; 32], &token, 1_000), None, "another key (after a reload)");
    }

    #[test]
    fn forged_tokens_are_refused() {
        let key = [7u8; 32];
        let token = issue(&key, "gpu-1", 1_000);
        let other = hex::encode("gpu-2");
        let forged = token.replacen(&hex::encode("gpu-1"), &other, 1);
        assert_eq!(verify(&key, &forged, 1_000), None, "another worker's name");
        let (body, _) = token.rsplit_once('.').unwrap();
        let (head, _) = body.rsplit_once('.').unwrap();
        let later = format!("{head}.99999999999.{}", token.rsplit_once('.').unwrap().1);
        assert_eq!(verify(&key, &later, 1_000), None, "a longer life");
        for junk in ["avt1.", "avt1..", "avt1.zz.1.00", "avt1.41.x.00", ""] {
            assert_eq!(verify(&key, junk, 1_000), None, "{junk:?}");
        }
    }
}
