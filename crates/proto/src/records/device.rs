use crate::codec::{Reader, Writer};
use crate::envelope::impl_record;
use crate::error::DecodeError;
use crate::fields::{DeviceName, Timestamp};
use crate::keys::{VerifyingKey, X25519PublicKey};
use crate::kind::RecordKind;

/// A root key's statement that a device belongs to the identity: its signing
/// key, the X25519 key that vault keys are wrapped to, its name and when it
/// was made. Must be signed by the identity's root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// The device's Ed25519 key, which signs its day-to-day records.
    pub device: VerifyingKey,
    /// The device's X25519 key, which vault keys are wrapped to.
    pub x25519: X25519PublicKey,
    /// A name for people.
    pub name: DeviceName,
    /// When the certificate was made.
    pub created: Timestamp,
}

impl DeviceCertificate {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.device.encode(w);
        self.x25519.encode(w);
        self.name.encode(w);
        self.created.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            device: VerifyingKey::decode(r)?,
            x25519: X25519PublicKey::decode(r)?,
            name: DeviceName::decode(r)?,
            created: Timestamp::decode(r)?,
        })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }
}

impl_record!(DeviceCertificate, RecordKind::DeviceCertificate);

/// Why a device was revoked. Informational: every reason has the same effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The device or its keys may be in someone else's hands.
    Compromised,
    /// The device is no longer used.
    Retired,
}

impl RevocationReason {
    fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::Compromised => 1,
            Self::Retired => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(Self::Unspecified),
            1 => Ok(Self::Compromised),
            2 => Ok(Self::Retired),
            tag => Err(DecodeError::UnknownTag {
                field: "revocation reason",
                tag,
            }),
        }
    }
}

/// A root key's statement that a device no longer belongs to the identity.
/// Must be signed by the identity's root key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked device's Ed25519 key.
    pub device: VerifyingKey,
    /// When it was revoked.
    pub revoked_at: Timestamp,
    /// Why.
    pub reason: RevocationReason,
}

impl Revocation {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.device.encode(w);
        self.revoked_at.encode(w);
        w.u8(self.reason.code());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            device: VerifyingKey::decode(r)?,
            revoked_at: Timestamp::decode(r)?,
            reason: RevocationReason::from_code(r.u8()?)?,
        })
    }

    fn required_signer(&self) -> Option<&VerifyingKey> {
        None
    }
}

impl_record!(Revocation, RecordKind::Revocation);
