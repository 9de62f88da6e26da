//! A node's long-term identity: an Ed25519 key pair, the node id derived from its
//! public key, and the certificate that carries the key in TLS.
//!
//! The C++ original (and this crate before) picked a random 64-bit id at every start,
//! so anyone could claim anyone's id. Here the id is a hash of the public key: the
//! first 8 bytes of SHA-256 over the key's DER `SubjectPublicKeyInfo`, read big-endian.
//! It is the same after every restart with the same key file, and a second key cannot
//! produce it without breaking SHA-256. Who holds the key proves it twice: in TLS (the
//! certificate's key signs the handshake) and in every broadcast it originates (the
//! signature that `protocol::broadcast` checks). docs/PROTOCOL.md section 1.1 has the
//! exact bytes.
//!
//! Ed25519 rather than ECDSA P-256: a key is 32 bytes and a signature 64, signing
//! needs no randomness, and one verification costs about 37 µs here against about
//! 100 µs for P-256 (measured with ring on this machine).
//!
//! The key file is PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`), the form
//! `openssl genpkey -algorithm ed25519` writes, so operators can make or inspect keys
//! with standard tools. It is written atomically with mode 0600
//! ([`write_secret_file`]); a file that cannot be read or parsed is an error, never
//! the cue for a fresh identity.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::p2p_message::NodeId;
/// Bytes of an Ed25519 public key, and of a signature: defined with the BROADCAST
/// layout that carries them.
pub use crate::p2p_message::{PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// The DER `SubjectPublicKeyInfo` of an Ed25519 key is these 12 bytes, then the 32
/// key bytes (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A node's key pair, id and certificate. Cheap to clone (shared).
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    key: Ed25519KeyPair,
    /// The PKCS#8 document the key was read from or generated as.
    pkcs8: Vec<u8>,
    public: [u8; PUBLIC_KEY_LEN],
    id: NodeId,
    /// Our certificate first, then any intermediates (closed networks only).
    chain: Vec<CertificateDer<'static>>,
    /// True when the certificate came from a file (issued by a network CA), false
    /// for the self-signed one made at start.
    issued: bool,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("node_id", &self.inner.id)
            .field("issued_certificate", &self.inner.issued)
            .finish()
    }
}

impl Identity {
    /// A fresh key pair, for a node that keeps no identity across runs (port 0, tests).
    pub fn generate() -> Identity {
        let rng = ring::rand::SystemRandom::new();
        // Only fails if the OS has no randomness source, which std needs too.
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("the OS random number source");
        Identity::from_pkcs8_der(doc.as_ref()).expect("a key ring just generated")
    }

    /// Reads the key at `path`, or creates it (and its folder) when there is no file.
    /// Returns whether it was created. A file that exists but cannot be read or is
    /// not an Ed25519 PKCS#8 key is an error: a node must never silently become
    /// another node.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        match fs::read(path) {
            Ok(bytes) => Identity::from_pem_bytes(&bytes, path).map(|i| (i, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate();
                write_secret_file(path, id.to_pkcs8_pem().as_bytes()).map_err(|source| {
                    IdentityError::Write {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Unreadable {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads the key at `path` (it must exist).
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let bytes = fs::read(path).map_err(|source| IdentityError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Identity::from_pem_bytes(&bytes, path)
    }

    fn from_pem_bytes(bytes: &[u8], path: &Path) -> Result<Identity, IdentityError> {
        let malformed = |why: String| IdentityError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let der = match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => return Err(malformed("not a PKCS#8 key (BEGIN PRIVATE KEY)".into())),
            Err(e) => return Err(malformed(format!("no PEM private key: {e:?}"))),
        };
        Identity::from_pkcs8_der(der.secret_pkcs8_der()).map_err(malformed)
    }

    /// An identity from a PKCS#8 Ed25519 key (v1 as OpenSSL writes it, or v2).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Identity, String> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key ({e})"))?;
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(key.public_key().as_ref());
        let id = node_id_from_public_key(&public);
        let cert = self_signed_certificate(der, id)?;
        Ok(Identity {
            inner: Arc::new(Inner {
                key,
                pkcs8: der.to_vec(),
                public,
                id,
                chain: vec![cert],
                issued: false,
            }),
        })
    }

    /// The same key with a certificate a network CA issued for it (closed networks:
    /// `--cert`). The file holds our certificate first, then any intermediates; the
    /// certificate must be for this identity's key.
    pub fn with_certificate_file(self, path: &Path) -> Result<Identity, IdentityError> {
        let malformed = |why: String| IdentityError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let bytes = fs::read(path).map_err(|source| IdentityError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let chain = certificates_from_pem(&bytes).map_err(malformed)?;
        let ours = spki_of_certificate(&chain[0]).map_err(malformed)?;
        if ours != spki(&self.inner.public) {
            return Err(IdentityError::CertificateMismatch {
                path: path.to_path_buf(),
                node_id: self.inner.id,
            });
        }
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.inner.pkcs8)
            .map_err(|e| malformed(format!("key: {e}")))?;
        Ok(Identity {
            inner: Arc::new(Inner {
                key,
                pkcs8: self.inner.pkcs8.clone(),
                public: self.inner.public,
                id: self.inner.id,
                chain,
                issued: true,
            }),
        })
    }

    /// The id every peer knows this node by.
    pub fn node_id(&self) -> NodeId {
        self.inner.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.inner.public
    }

    /// Signs `msg` (deterministic: the same message gives the same signature).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.inner.key.sign(msg).as_ref());
        out
    }

    /// The key as a PKCS#8 PEM document, as the key file holds it.
    pub fn to_pkcs8_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.inner.pkcs8)
    }

    /// Our certificate (DER): self-signed, or issued by the network CA.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.chain[0]
    }

    /// Whether the certificate was issued by a network CA (`--cert`).
    pub fn has_issued_certificate(&self) -> bool {
        self.inner.issued
    }

    pub(crate) fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        self.inner.chain.clone()
    }

    pub(crate) fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.inner.pkcs8.clone()))
    }
}

/// The id of the node whose Ed25519 public key is `public`.
pub fn node_id_from_public_key(public: &[u8; PUBLIC_KEY_LEN]) -> NodeId {
    node_id_from_spki_bytes(&spki(public))
}

/// The id for a DER `SubjectPublicKeyInfo`, if it is an Ed25519 key (the only kind a
/// node id may come from).
pub fn node_id_from_spki(spki_der: &[u8]) -> Option<NodeId> {
    ed25519_key_of_spki(spki_der).map(|_| node_id_from_spki_bytes(spki_der))
}

/// The 32 key bytes of an Ed25519 `SubjectPublicKeyInfo`.
pub(crate) fn ed25519_key_of_spki(spki_der: &[u8]) -> Option<&[u8]> {
    match spki_der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == PUBLIC_KEY_LEN => Some(key),
        _ => None,
    }
}

fn node_id_from_spki_bytes(spki_der: &[u8]) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    NodeId(u64::from_be_bytes(first))
}

/// The DER `SubjectPublicKeyInfo` of an Ed25519 public key.
pub fn spki(public: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ED25519_SPKI_PREFIX.len() + PUBLIC_KEY_LEN);
    v.extend_from_slice(&ED25519_SPKI_PREFIX);
    v.extend_from_slice(public);
    v
}

/// Whether `sig` is `public`'s Ed25519 signature of `msg`.
pub fn verify_signature(
    public: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8; SIGNATURE_LEN],
) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

/// The `SubjectPublicKeyInfo` (DER) of a certificate.
pub(crate) fn spki_of_certificate(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("not an X.509 certificate ({e:?})"))?;
    Ok(ee.subject_public_key_info().as_ref().to_vec())
}

/// Every certificate in a PEM file, in order; at least one.
pub(crate) fn certificates_from_pem(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match item {
            Ok((SectionKind::Certificate, der)) => out.push(CertificateDer::from(der)),
            Ok(_) => {}
            Err(e) => return Err(format!("bad PEM ({e:?})")),
        }
    }
    if out.is_empty() {
        return Err("no certificate (BEGIN CERTIFICATE) in the file".into());
    }
    Ok(out)
}

/// The self-signed certificate a node presents in open networks: its identity key
/// as subject key, signed by itself, valid from 1975 to 4096 (libp2p's choice: a
/// node's certificate is a carrier for its key, not a statement that expires).
fn self_signed_certificate(pkcs8: &[u8], id: NodeId) -> Result<CertificateDer<'static>, String> {
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519)
        .map_err(|e| format!("key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("p2p-overlay node {id}"));
    params.distinguished_name = dn;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    Ok(cert.der().clone())
}

/// PEM text of one DER section, with LF line ends.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

/// The default identity file of a node listening on `port`, beside its peer cache:
/// `$XDG_STATE_HOME/p2p-overlay/identity-<port>.key`, else under
/// `$HOME/.local/state`. `None` for port 0 (each run is another node) or when neither
/// variable is set.
pub fn default_path(port: u16) -> Option<PathBuf> {
    state_dir(port).map(|d| d.join(format!("identity-{port}.key")))
}

/// The folder a node listening on `port` keeps its state in (peer cache, identity
/// key): `$XDG_STATE_HOME/p2p-overlay`, else `$HOME/.local/state/p2p-overlay`. `None`
/// for port 0 or when neither variable is set.
pub fn state_dir(port: u16) -> Option<PathBuf> {
    if port == 0 {
        return None;
    }
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    let base = match non_empty("XDG_STATE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME")?)
            .join(".local")
            .join("state"),
    };
    Some(base.join("p2p-overlay"))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one,
/// never part of it, and nobody but the owner can read it (mode 0600 from the first
/// byte: the temporary file is created with it). Creates the folder (mode 0700 where
/// it is new).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let _ = fs::remove_file(&tmp);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its parents, mode 0700 where they are new (they hold keys); an
/// existing folder is kept as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// The CA of a closed network (`--network-ca`): its certificate(s), the only trust
/// anchors a closed node accepts.
#[derive(Clone, Debug)]
pub struct NetworkCa {
    certs: Vec<CertificateDer<'static>>,
}

impl NetworkCa {
    /// Reads a PEM file of one or more CA certificates.
    pub fn load(path: &Path) -> Result<NetworkCa, IdentityError> {
        let bytes = fs::read(path).map_err(|source| IdentityError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let malformed = |why: String| IdentityError::Malformed {
            path: path.to_path_buf(),
            why,
        };
        let certs = certificates_from_pem(&bytes).map_err(malformed)?;
        for c in &certs {
            webpki::anchor_from_trusted_cert(c)
                .map_err(|e| malformed(format!("not a usable CA certificate ({e:?})")))?;
        }
        Ok(NetworkCa { certs })
    }

    /// A CA from DER certificates (tests, embedding programs).
    pub fn from_der(certs: Vec<Vec<u8>>) -> NetworkCa {
        NetworkCa {
            certs: certs.into_iter().map(CertificateDer::from).collect(),
        }
    }

    pub(crate) fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

/// What went wrong with an identity or certificate file.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file exists but cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not what it should be (not PEM, not an Ed25519 key, no
    /// certificate).
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A new key file could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The certificate is for another key than the node's.
    CertificateMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The id of the key the node has.
        node_id: NodeId,
    },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Unreadable { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            IdentityError::Malformed { path, why } => {
                write!(f, "{} is not usable: {why}", path.display())
            }
            IdentityError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            IdentityError::CertificateMismatch { path, node_id } => write!(
                f,
                "{} is a certificate for another key than node {node_id}'s",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Unreadable { source, .. } | IdentityError::Write { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_the_spki_hash_and_stable_across_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("identity-9000.key");
        let (a, created) = Identity::load_or_create(&path).expect("create");
        assert!(created);
        let (b, created) = Identity::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.public_key(), b.public_key());
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki(&a.public_key()));
        let want = u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"));
        assert_eq!(a.node_id(), NodeId(want));
        let cert_spki =
            spki_of_certificate(&CertificateDer::from(a.certificate_der().to_vec())).expect("spki");
        assert_eq!(node_id_from_spki(&cert_spki), Some(a.node_id()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_malformed_or_unreadable_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity.key");
        fs::write(&path, b"not a key\n").expect("write");
        let err = Identity::load_or_create(&path).expect_err("malformed");
        assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("read"), b"not a key\n");
        // A PEM key of another kind.
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        fs::write(&path, p256.serialize_pem()).expect("write");
        let err = Identity::load_or_create(&path).expect_err("p256");
        assert!(err.to_string().contains("Ed25519"), "{err}");
        // A folder where the file should be.
        let err = Identity::load_or_create(dir.path()).expect_err("a folder");
        assert!(matches!(err, IdentityError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = Identity::generate();
        let b = Identity::generate();
        assert_ne!(a.node_id(), b.node_id());
        let sig = a.sign(b"hello");
        assert!(verify_signature(&a.public_key(), b"hello", &sig));
        assert!(!verify_signature(&a.public_key(), b"hellp", &sig));
        assert!(!verify_signature(&b.public_key(), b"hello", &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!verify_signature(&a.public_key(), b"hello", &bad));
    }

    #[test]
    fn pem_round_trips_and_matches_standard_base64() {
        let a = Identity::generate();
        let pem = a.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        fs::write(&path, &pem).expect("write");
        assert_eq!(Identity::load(&path).expect("load").node_id(), a.node_id());
        assert_eq!(
            pem_encode("X", b"any carnal pleas"),
            "-----BEGIN X-----\nYW55IGNhcm5hbCBwbGVhcw==\n-----END X-----\n"
        );
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let a = Identity::generate();
        let b = Identity::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.pem");
        fs::write(&path, pem_encode("CERTIFICATE", b.certificate_der())).expect("write");
        let err = a.with_certificate_file(&path).expect_err("mismatch");
        assert!(
            matches!(err, IdentityError::CertificateMismatch { .. }),
            "{err}"
        );
    }
}
