//! The consent ledger (issue 16): every subscription change appends an immutable record of what
//! happened, when, from where and on whose word, so a store can show when and how each person
//! consented to each list. Records are written by `events::subscription_written`, in the
//! transaction of the change; a profile's ledger is part of its GDPR export, moves with a merge
//! and goes with its erasure.

use std::net::IpAddr;

use uuid::Uuid;

use crate::domain::Keyset;
use crate::error::{AppError, AppResult};
use crate::repo::{ConsentRow, Database, SubscriptionRow, Tx};

pub use crate::domain::ConsentAction;

/// Who a request came from: the full client address and the user agent.
#[derive(Debug, Clone, Default)]
pub struct Witness {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What the ledger records about a change besides the subscription itself.
#[derive(Debug, Clone)]
pub struct Consent {
    pub action: ConsentAction,
    /// Where the consent was given, in words (an import's source column, `stripe`, a page).
    pub source: Option<String>,
    pub witness: Witness,
    /// The confirmation mail of a double opt-in (its outbox id).
    pub confirm_mail_id: Option<Uuid>,
    /// SHA-256 (hex) of the wording consented to: the confirmation mail's text, or the text the
    /// storefront sent with the subscribe.
    pub wording_hash: Option<String>,
    /// When the consent was given, if earlier than the change (an import's evidence).
    pub at: Option<i64>,
    /// The store's `consent_full_ip`, when the caller has the store at hand (saves a read).
    pub full_ip: Option<bool>,
}

impl Consent {
    pub fn new(action: ConsentAction) -> Self {
        Self {
            action,
            source: None,
            witness: Witness::default(),
            confirm_mail_id: None,
            wording_hash: None,
            at: None,
            full_ip: None,
        }
    }

    pub fn witnessed(mut self, witness: Witness) -> Self {
        self.witness = witness;
        self
    }

    /// The store's `consent_full_ip` setting, known to the caller.
    pub fn store_setting(mut self, consent_full_ip: bool) -> Self {
        self.full_ip = Some(consent_full_ip);
        self
    }

    pub fn wording(mut self, hash: Option<String>) -> Self {
        self.wording_hash = hash;
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// An address as the ledger keeps it: IPv4 by its /24 and IPv6 by its /48 (`203.0.113.0/24`),
/// unless the store keeps full addresses.
pub fn ledger_ip(ip: IpAddr, full: bool) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if full {
        return ip.to_string();
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// Appends the record of `after` (just written) to the ledger.
pub async fn append(tx: &mut Tx, after: &SubscriptionRow, consent: &Consent) -> AppResult<()> {
    let record = record(tx, after, consent).await?;
    tx.insert_consents(std::slice::from_ref(&record)).await?;
    Ok(())
}

/// The ledger record of `after` (just written), to insert.
pub async fn record(tx: &mut Tx, after: &SubscriptionRow, consent: &Consent) -> AppResult<ConsentRow> {
    let ip = match consent.witness.ip {
        Some(ip) => {
            let full = match consent.full_ip {
                Some(full) => full,
                None => tx.consent_full_ip(after.store_id).await?,
            };
            Some(ledger_ip(ip, full))
        }
        None => None,
    };
    let (confirm_mail_id, wording_hash) = match (consent.action, consent.confirm_mail_id) {
        // A confirmation answers the latest confirmation mail of the subscription.
        (ConsentAction::Confirm, None) => match tx.confirm_mail_of(after.store_id, after.id).await? {
            Some((mail, hash)) => (Some(mail), consent.wording_hash.clone().or(hash)),
            None => (None, consent.wording_hash.clone()),
        },
        (_, mail) => (mail, consent.wording_hash.clone()),
    };
    let record = ConsentRow {
        store_id: after.store_id,
        id: Uuid::now_v7(),
        subscription_id: after.id,
        profile_id: after.profile_id,
        audience_id: after.audience_id,
        action: consent.action,
        status_after: after.status,
        at: consent.at.unwrap_or_else(crate::now),
        source: consent.source.clone(),
        ip,
        user_agent: consent.witness.user_agent.clone(),
        confirm_mail_id,
        wording_hash,
    };
    Ok(record)
}

pub struct Consents {
    db: Database,
}

impl Consents {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The profile's ledger, oldest first; 404 for a profile the store does not have.
    pub async fn list(&self, store_id: Uuid, profile_id: Uuid, keyset: &Keyset) -> AppResult<Vec<ConsentRow>> {
        let after = keyset.after_id().map_err(|e| AppError::validation(vec![e]))?;
        let mut db = self.db.auto();
        db.profile(store_id, profile_id).await?.ok_or(AppError::NotFound("profile"))?;
        Ok(db.consents(store_id, profile_id, after, keyset.fetch()).await?)
    }

    /// The whole ledger of a profile (GDPR export).
    pub async fn all(&self, store_id: Uuid, profile_id: Uuid) -> AppResult<Vec<ConsentRow>> {
        let mut db = self.db.auto();
        let mut out = vec![];
        let mut after = None;
        loop {
            let page = db.consents(store_id, profile_id, after, 500).await?;
            let done = page.len() < 500;
            after = page.last().map(|c| c.id);
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_shortened_unless_kept_whole() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12:1::5".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(ledger_ip(v4, false), "203.0.113.0/24");
        assert_eq!(ledger_ip(v6, false), "2001:db8:abcd::/48");
        assert_eq!(ledger_ip(mapped, false), "198.51.100.0/24");
        assert_eq!(ledger_ip(v4, true), "203.0.113.77");
        assert_eq!(ledger_ip(v6, true), "2001:db8:abcd:12:1::5");
    }
}
