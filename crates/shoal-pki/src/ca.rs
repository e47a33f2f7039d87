//! The cluster CA: made once by the first controller, signs every certificate.
//!
//! Keys are ECDSA P-256 (fast to make and to verify; what k3s uses too). Certificates
//! are valid from five minutes before issue (clock skew between machines) until their
//! lifetime ends; the CA itself lives ten years.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Identity, PkiError};

/// How long the CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of server and node certificates (renewed at two thirds of it).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Clock skew allowed between machines: certificates are valid from this long before issue.
const BACKDATE: Duration = Duration::from_secs(300);

/// The cluster CA: its certificate and (on controllers) its key, both PEM.
#[derive(Clone)]
pub struct Ca {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("hash", &self.hash()).finish()
    }
}

fn when(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl Ca {
    /// Makes a new CA named after the cluster.
    pub fn generate(cluster: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::cert("CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("shoal-ca {cluster}"));
        dn.push(DnType::OrganizationName, "shoal");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = when(now - BACKDATE);
        params.not_after = when(now + CA_LIFETIME);
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::cert("CA certificate", e))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CA from its PEM certificate and key (checked to belong together).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let ca = Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        let key = ca.key()?;
        let info = CertInfo::from_pem(cert_pem)?;
        if info.public_key_der != key.subject_public_key_info() {
            return Err(PkiError::cert(
                "CA key",
                "does not belong to the CA certificate",
            ));
        }
        Ok(ca)
    }

    fn key(&self) -> Result<KeyPair, PkiError> {
        KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::cert("CA key", e))
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key (PEM). Secret: only controllers hold it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// `sha256:HEX` of the CA's public key (what joiners check, as kubeadm's
    /// `--discovery-token-ca-cert-hash`).
    pub fn hash(&self) -> String {
        ca_hash_of_pem(&self.cert_pem).unwrap_or_default()
    }

    /// Issues a certificate for `identity` with a new key made here (for the controller's
    /// own certificate and for users). Returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::cert("new key", e))?;
        let cert = self.sign(&key, identity, sans, lifetime)?;
        Ok((cert, key.serialize_pem()))
    }

    /// Signs the public key of a certificate request. The identity and names come from
    /// the caller (who checked the join token or the renewing peer), never from the
    /// request, whose signature is still verified (proof the requester has the key).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::cert("certificate request", e))?;
        self.sign(&csr.public_key, identity, sans, lifetime)
    }

    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        identity: &Identity,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        identity.check()?;
        let ca_key = self.key()?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)
            .map_err(|e| PkiError::cert("CA certificate", e))?;
        let mut params = CertificateParams::default();
        let (cn, o, ou) = identity.subject();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, o);
        if let Some(ou) = ou {
            dn.push(DnType::OrganizationalUnitName, ou);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<Vec<_>, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if !matches!(identity, Identity::User { .. }) {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = when(now - BACKDATE);
        params.not_after = when(now + lifetime);
        let mut serial = [0u8; 16];
        rand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(public_key, &issuer)
            .map_err(|e| PkiError::cert(format!("certificate for {identity}"), e))?;
        Ok(cert.pem())
    }
}

/// One subject alternative name: an IP address or a DNS name.
fn san(s: &str) -> Result<SanType, PkiError> {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    Ok(SanType::DnsName(s.to_string().try_into().map_err(|e| {
        PkiError::cert(format!("subject alternative name {s:?}"), e)
    })?))
}

/// A new key and a certificate request for `identity` (the key never leaves the caller).
/// Returns (key PEM, request PEM).
pub fn new_key_and_csr(identity: &Identity, sans: &[String]) -> Result<(String, String), PkiError> {
    identity.check()?;
    let key = KeyPair::generate().map_err(|e| PkiError::cert("new key", e))?;
    let mut params = CertificateParams::default();
    let (cn, o, ou) = identity.subject();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, o);
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<Vec<_>, _>>()?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| PkiError::cert("certificate request", e))?;
    let pem = csr
        .pem()
        .map_err(|e| PkiError::cert("certificate request", e))?;
    Ok((key.serialize_pem(), pem))
}

/// What a certificate says, for rotation and messages.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Whose it is (`None` for the CA and foreign certificates).
    pub identity: Option<Identity>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// DER of the subject public key info.
    pub public_key_der: Vec<u8>,
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<CertInfo, PkiError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| PkiError::cert("certificate PEM", e))?;
        CertInfo::from_der(&der)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, c) =
            X509Certificate::from_der(der).map_err(|e| PkiError::cert("certificate", e))?;
        let t = |v: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(v.max(0) as u64);
        Ok(CertInfo {
            identity: Identity::from_cert_der(der).ok(),
            not_before: t(c.validity().not_before.timestamp()),
            not_after: t(c.validity().not_after.timestamp()),
            public_key_der: c.tbs_certificate.subject_pki.raw.to_vec(),
        })
    }

    /// When a certificate should be renewed: two thirds into its lifetime, counted from
    /// its issue (validity starts [`BACKDATE`] earlier for clock skew; counting from
    /// there would renew a 2-minute certificate at once, and again, forever).
    pub fn renew_at(&self) -> SystemTime {
        let issued = self.not_before + BACKDATE;
        let issued = if issued < self.not_after {
            issued
        } else {
            self.not_before
        };
        let total = self.not_after.duration_since(issued).unwrap_or_default();
        issued + total * 2 / 3
    }
}

/// `sha256:HEX` of a DER certificate's subject public key info.
pub fn ca_hash_of_der(der: &[u8]) -> Result<String, PkiError> {
    let info = CertInfo::from_der(der)?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&info.public_key_der))
    ))
}

/// `sha256:HEX` of a PEM certificate's subject public key info.
pub fn ca_hash_of_pem(pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::cert("CA certificate PEM", e))?;
    ca_hash_of_der(&der)
}

/// Checks the form of a `--ca-hash` value and returns it lower-cased.
pub fn parse_ca_hash(v: &str) -> Result<String, PkiError> {
    let hex_part = v
        .strip_prefix("sha256:")
        .ok_or_else(|| PkiError::CaHash(v.to_string()))?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PkiError::CaHash(v.to_string()));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_requests_with_the_identity_it_chooses() {
        let ca = Ca::generate("t").unwrap();
        let asked = Identity::Controller { id: 1 };
        let (_key, csr) = new_key_and_csr(&asked, &["10.0.0.1".into()]).unwrap();
        let granted = Identity::Node { name: "n1".into() };
        let cert = ca
            .sign_csr(
                &csr,
                &granted,
                &["10.0.0.2".into()],
                Duration::from_secs(120),
            )
            .unwrap();
        let info = CertInfo::from_pem(&cert).unwrap();
        assert_eq!(info.identity, Some(granted));
        let life = info.not_after.duration_since(info.not_before).unwrap();
        assert_eq!(life, Duration::from_secs(420));
        // Two thirds of the 120 s lifetime after the issue, not of the backdated validity.
        assert_eq!(
            info.renew_at(),
            info.not_before + Duration::from_secs(300 + 80)
        );
    }

    #[test]
    fn hashes_are_stable_and_checked() {
        let ca = Ca::generate("t").unwrap();
        let h = ca.hash();
        assert_eq!(
            parse_ca_hash(&h.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            h
        );
        assert_eq!(Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap().hash(), h);
        assert_ne!(Ca::generate("t").unwrap().hash(), h);
        for bad in [
            "",
            "sha256:12",
            "md5:00",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(parse_ca_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_key_must_match_its_certificate() {
        let a = Ca::generate("a").unwrap();
        let b = Ca::generate("b").unwrap();
        let e = Ca::from_pem(a.cert_pem(), b.key_pem())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let ca = Ca::generate("t").unwrap();
        let (_k, csr) = new_key_and_csr(&Identity::Node { name: "n".into() }, &[]).unwrap();
        let mut der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
        let n = der.len();
        der[n - 5] ^= 0xff;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        assert!(
            ca.sign_csr(
                &pem,
                &Identity::Node { name: "n".into() },
                &[],
                Duration::from_secs(60)
            )
            .is_err()
        );
    }
}
