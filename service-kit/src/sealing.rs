//! Envelope encryption of the sensitive fields of events (those the schemas mark
//! `x-sensitive`): each customer's values are sealed with a data key of their own, and each
//! data key is kept wrapped (sealed) by the master key. Erasing a customer deletes their
//! wrapped key; what was sealed with it can then never be opened, wherever it was copied
//! (the streams, exports, read models rebuilt from them), while every event still decodes:
//! a sealed value is an opaque string.
//!
//! A sealed value reads `<scheme>.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, with
//! AES-256-GCM and a random 96-bit nonce. The associated data binds it to where it belongs
//! (the payment token of one order), so a sealed value moved to another order does not open.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The scheme of the values sealed here (`pt1.<key id>.<data>`): a dot is never in a clear
/// payment token, so a sealed value cannot be mistaken for one.
pub const SCHEME: &str = "pt1";

/// A 256-bit key: the master key, or a customer's data key.
#[derive(Clone)]
pub struct Key(LessSafeKeyBytes);

/// The raw bytes behind a key, kept so a data key can be wrapped; never printed.
#[derive(Clone)]
struct LessSafeKeyBytes([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the key is not 32 bytes of base64")]
    BadKey,
    #[error("not a sealed value")]
    NotSealed,
    #[error("the sealed value does not open with this key here (tampered, or moved)")]
    DoesNotOpen,
    #[error("no randomness")]
    Random,
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(Self(LessSafeKeyBytes(bytes)))
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self(LessSafeKeyBytes(bytes)))
    }

    /// A key from standard base64 (what `DATA_KEYS_MASTER_KEY` holds), surrounding space
    /// ignored.
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// The key as standard base64 (for a key file).
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0 .0)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0 .0).expect("a 256-bit key"))
    }

    /// `plaintext` encrypted and authenticated with `aad`: nonce ‖ ciphertext ‖ tag.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// What [`Key::encrypt`] made, opened with the same `aad`.
    pub fn decrypt(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::DoesNotOpen);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::DoesNotOpen)?;
        let mut body = body.to_vec();
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SealError::DoesNotOpen)?;
        Ok(plain.to_vec())
    }

    /// This (data) key wrapped by `master`, bound to `aad` (its customer and key id).
    pub fn wrap(&self, master: &Key, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        master.encrypt(&self.0 .0, aad)
    }

    /// A data key [`Key::wrap`] made, unwrapped by `master`.
    pub fn unwrap(wrapped: &[u8], master: &Key, aad: &[u8]) -> Result<Self, SealError> {
        Self::from_bytes(&master.decrypt(wrapped, aad)?)
    }
}

/// `value` sealed with the data key `key_id`, bound to `aad`: `pt1.<key id>.<data>`.
pub fn seal(key: &Key, key_id: uuid::Uuid, value: &str, aad: &[u8]) -> Result<String, SealError> {
    let data = key.encrypt(value.as_bytes(), aad)?;
    Ok(format!(
        "{SCHEME}.{key_id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    ))
}

/// The key id a sealed value names, or `None` for a value that is not sealed (a clear one,
/// from before sealing).
pub fn key_id_of(sealed: &str) -> Option<uuid::Uuid> {
    let mut parts = sealed.splitn(3, '.');
    (parts.next()? == SCHEME)
        .then(|| parts.next())
        .flatten()
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .filter(|_| parts.next().is_some())
}

/// Whether `value` is sealed (rather than a clear value from before sealing).
pub fn is_sealed(value: &str) -> bool {
    key_id_of(value).is_some()
}

/// A sealed value opened with its data key and `aad`.
pub fn open(key: &Key, sealed: &str, aad: &[u8]) -> Result<String, SealError> {
    let data = sealed.splitn(3, '.').nth(2).ok_or(SealError::NotSealed)?;
    let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| SealError::NotSealed)?;
    String::from_utf8(key.decrypt(&data, aad)?).map_err(|_| SealError::DoesNotOpen)
}

/// What binds a sealed payment token to its order.
pub fn payment_token_aad(order_id: uuid::Uuid) -> Vec<u8> {
    field_aad("payment_token", order_id)
}

/// What binds a sealed value to its field (`payment_token`, `email`) and order: it opens as
/// nothing else.
pub fn field_aad(field: &str, order_id: uuid::Uuid) -> Vec<u8> {
    format!("{field}/{order_id}").into_bytes()
}

/// What binds a wrapped data key to its customer and id.
pub fn data_key_aad(customer_id: uuid::Uuid, key_id: uuid::Uuid) -> Vec<u8> {
    format!("data_key/{customer_id}/{key_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_where_it_belongs() {
        let (master, data) = (Key::generate().unwrap(), Key::generate().unwrap());
        let (customer, key_id, order) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let sealed = seal(&data, key_id, "tok_ok", &payment_token_aad(order)).unwrap();
        assert!(
            sealed.starts_with("pt1.") && !sealed.contains("tok_ok"),
            "{sealed}"
        );
        assert_eq!(key_id_of(&sealed), Some(key_id));
        assert!(is_sealed(&sealed) && !is_sealed("tok_ok"));
        // Twice sealed, two different values (a fresh nonce each time).
        assert_ne!(
            sealed,
            seal(&data, key_id, "tok_ok", &payment_token_aad(order)).unwrap()
        );
        assert_eq!(
            open(&data, &sealed, &payment_token_aad(order)).unwrap(),
            "tok_ok"
        );
        // Moved to another order, or opened with another key: no.
        assert_eq!(
            open(&data, &sealed, &payment_token_aad(Uuid::new_v4())),
            Err(SealError::DoesNotOpen)
        );
        assert_eq!(
            open(
                &Key::generate().unwrap(),
                &sealed,
                &payment_token_aad(order)
            ),
            Err(SealError::DoesNotOpen)
        );
        // The data key, wrapped by the master key, comes back only with that master.
        let aad = data_key_aad(customer, key_id);
        let wrapped = data.wrap(&master, &aad).unwrap();
        let unwrapped = Key::unwrap(&wrapped, &master, &aad).unwrap();
        assert_eq!(
            open(&unwrapped, &sealed, &payment_token_aad(order)).unwrap(),
            "tok_ok"
        );
        assert!(Key::unwrap(&wrapped, &Key::generate().unwrap(), &aad).is_err());
        assert!(Key::unwrap(&wrapped, &master, &data_key_aad(Uuid::new_v4(), key_id)).is_err());
        assert!(!format!("{master:?}").contains(&master.to_base64()));
        assert_eq!(
            Key::from_base64(&master.to_base64()).unwrap().to_base64(),
            master.to_base64()
        );
    }
}
