//! `p2p-node ca init DIR` and `p2p-node ca issue DIR NAME`: the smallest certificate
//! authority a closed network needs, so an operator does not have to learn openssl's
//! flags to run one.
//!
//! A module of the binary, not of the library (like `cli.rs`): the library only
//! *checks* certificates (`transport/tls.rs`: in a closed network a peer's
//! certificate must chain to the CA given with `--network-ca`, carry the
//! server-auth and client-auth usages, and hold an Ed25519 key, whose hash is the
//! node id). Making them is a one-off operator task.
//!
//! The files, all PEM:
//! - `DIR/ca.key`: the CA's Ed25519 key (PKCS#8), mode 0600. Whoever holds it can
//!   admit nodes; it should stay on the operator's machine, never on the nodes.
//! - `DIR/ca.pem`: the self-signed CA certificate, the `--network-ca` of every node.
//! - `DIR/NAME.key` (0600) and `DIR/NAME.pem`: one node's key and certificate, its
//!   `--key` and `--cert`.
//!
//! Nothing is ever overwritten: an existing file is an error, because replacing a CA
//! key silently locks every issued node out, and replacing a node key changes its id.
//!
//! `issue` does not parse `ca.pem` (rcgen's parser needs the `x509-parser` feature,
//! which this crate does not build): it rebuilds the issuer from the same parameters
//! [`ca_params`] that `init` used, which depend on nothing but the stored key. The
//! issuer fields a child certificate copies (the subject DN, and the key identifier
//! that becomes its authority key identifier, derived from the key) are then the
//! ones in `ca.pem`, so chain building finds the CA.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p2p_overlay::identity::write_secret_file;
use p2p_overlay::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};

/// The CA certificate's subject (and the issuer of every node certificate).
pub(crate) const CA_COMMON_NAME: &str = "p2p-overlay network CA";

/// How long an issued node certificate is valid: ten years (of 365 days) from an hour
/// ago (the hour absorbs clocks that are a little behind the operator's).
const NODE_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The CA certificate outlives every node certificate it can issue today.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(3600);

/// Longest node name: a file stem and a certificate CN, kept short.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// What `ca` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CaCommand {
    Init { dir: PathBuf },
    Issue { dir: PathBuf, name: String },
}

pub(crate) const USAGE: &str =
    "usage: p2p-node ca init DIR | p2p-node ca issue DIR NAME (NAME: 1-64 of A-Z a-z 0-9 . _ -, \
     not starting with '.')";

/// Parses the words after `ca`. `Err` is a usage problem (exit 2).
pub(crate) fn parse(args: &[String]) -> Result<CaCommand, String> {
    match args {
        [cmd, dir] if cmd == "init" => Ok(CaCommand::Init {
            dir: PathBuf::from(dir),
        }),
        [cmd, dir, name] if cmd == "issue" => {
            check_name(name)?;
            Ok(CaCommand::Issue {
                dir: PathBuf::from(dir),
                name: name.clone(),
            })
        }
        _ => Err(USAGE.to_string()),
    }
}

/// A NAME becomes `DIR/NAME.pem`: only characters that cannot leave DIR or hide the
/// file, and never `..` or a dot file.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad node name {}: use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, not starting with '.'",
            crate::cli::quote_input(name)
        ))
    }
}

/// Runs `cmd`, returning the lines to print. `Err` is a runtime failure (exit 1).
pub(crate) fn run(cmd: &CaCommand) -> Result<Vec<String>, String> {
    match cmd {
        CaCommand::Init { dir } => init(dir),
        CaCommand::Issue { dir, name } => issue(dir, name),
    }
}

/// The CA certificate's parameters for the CA key `key`. `init` signs them; `issue`
/// rebuilds the issuer from them, so both must stay exactly the same (see the module
/// doc).
///
/// The subject is the fixed CN plus an OU naming the key (`ca <16 hex>`, the key's
/// hash as node ids are computed), so two networks' CAs never share a name. With
/// the same name, a certificate from the other CA would be checked against the wrong
/// CA's key and refused as `BadSignature`; with distinct names it is refused as what
/// it is, `UnknownIssuer`.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, String> {
    let raw = key.public_key_raw();
    let public: [u8; p2p_overlay::identity::PUBLIC_KEY_LEN] = raw
        .try_into()
        .map_err(|_| "the CA key is not an Ed25519 key".to_string())?;
    let key_id = p2p_overlay::identity::node_id_from_public_key(&public);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationalUnitName, format!("ca {key_id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Sets the validity to [now - 1 h, now + `span`], without the `time` crate: rcgen's
/// `date_time_ymd` gives the epoch as its own date type, which adds std durations.
fn set_validity(params: &mut CertificateParams, span: Duration) -> Result<(), String> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is before 1970".to_string())?;
    // rcgen's dates end with the year 9999; a clock near it would overflow the sum.
    const YEAR_9000: Duration = Duration::from_secs(7030 * 365 * 24 * 3600);
    if since_epoch > YEAR_9000 {
        return Err("the system clock is past the year 9000".into());
    }
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + span;
    Ok(())
}

fn init(dir: &Path) -> Result<Vec<String>, String> {
    let key_path = dir.join("ca.key");
    let cert_path = dir.join("ca.pem");
    refuse_existing(&[&key_path, &cert_path])?;
    create_private_dir(dir)?;
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| format!("CA key: {e}"))?;
    let mut params = ca_params(&key)?;
    set_validity(&mut params, CA_VALIDITY)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("CA certificate: {e}"))?;
    write_secret_file(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    write_new_file(&cert_path, cert.pem().as_bytes())?;
    Ok(vec![
        format!("created network CA key {}", key_path.display()),
        format!(
            "created network CA certificate {} (give it to every node as --network-ca)",
            cert_path.display()
        ),
    ])
}

fn issue(dir: &Path, name: &str) -> Result<Vec<String>, String> {
    check_name(name)?;
    let ca_key_path = dir.join("ca.key");
    let key_path = dir.join(format!("{name}.key"));
    let cert_path = dir.join(format!("{name}.pem"));
    refuse_existing(&[&key_path, &cert_path])?;
    let ca_pem = fs::read_to_string(&ca_key_path)
        .map_err(|e| format!("cannot read {}: {e}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_pem)
        .map_err(|e| format!("{} is not usable: {e}", ca_key_path.display()))?;
    if !ca_key.is_compatible(&PKCS_ED25519) {
        return Err(format!(
            "{} is not usable: not an Ed25519 key",
            ca_key_path.display()
        ));
    }
    let issuer = Issuer::new(ca_params(&ca_key)?, ca_key);

    let node_key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| format!("node key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY)?;
    let cert = params
        .signed_by(&node_key, &issuer)
        .map_err(|e| format!("node certificate: {e}"))?;

    write_secret_file(&key_path, node_key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    write_new_file(&cert_path, cert.pem().as_bytes())?;
    // Read back the way a node will (`--key`, `--cert`): what is printed is what runs.
    let id = Identity::load(&key_path)
        .and_then(|i| i.with_certificate_file(&cert_path))
        .map_err(|e| e.to_string())?
        .node_id();
    Ok(vec![
        format!("issued node {name}: node id {id}"),
        format!("key: {}", key_path.display()),
        format!("certificate: {}", cert_path.display()),
    ])
}

fn refuse_existing(paths: &[&Path]) -> Result<(), String> {
    for p in paths {
        // symlink_metadata: a dangling link is "there" too, and would be written through.
        if fs::symlink_metadata(p).is_ok() {
            return Err(format!(
                "{} already exists; not overwriting it",
                p.display()
            ));
        }
    }
    Ok(())
}

/// Creates `dir` (mode 0700) where it does not exist yet; an existing one is kept as
/// it is.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    p2p_overlay::identity::create_private_dir(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes a public file that must not exist yet (`create_new`, so a file that
/// appeared since the check is not replaced either).
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_safe_file_stems() {
        for good in ["a", "node-1", "n_2.example", "A9", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\n",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_takes_exactly_init_dir_or_issue_dir_name() {
        assert_eq!(
            parse(&args(&["init", "d"])),
            Ok(CaCommand::Init { dir: "d".into() })
        );
        assert_eq!(
            parse(&args(&["issue", "d", "n1"])),
            Ok(CaCommand::Issue {
                dir: "d".into(),
                name: "n1".into()
            })
        );
        for bad in [
            &["init"][..],
            &["init", "d", "x"],
            &["issue", "d"],
            &["issue", "d", "../n"],
            &["sign", "d", "n"],
            &[],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issued_certificates_chain_to_the_stored_ca_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        run(&CaCommand::Init { dir: ca.clone() }).expect("init");
        run(&CaCommand::Issue {
            dir: ca.clone(),
            name: "n1".into(),
        })
        .expect("issue");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.key", "n1.key"] {
                let mode = fs::metadata(ca.join(f)).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
            let mode = fs::metadata(&ca).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // The node certificate verifies against ca.pem as the node's verifier does.
        let anchor_der = pem_der(&ca.join("ca.pem"));
        let ee_der = pem_der(&ca.join("n1.pem"));
        let anchor_cert = rustls_pki_types::CertificateDer::from(anchor_der);
        let anchor = webpki::anchor_from_trusted_cert(&anchor_cert).expect("anchor");
        let ee_cert = rustls_pki_types::CertificateDer::from(ee_der);
        let ee = webpki::EndEntityCert::try_from(&ee_cert).expect("ee");
        let now = rustls_pki_types::UnixTime::now();
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&anchor),
                &[],
                now,
                usage,
                None,
                None,
            )
            .expect("chains to its CA");
        }
        // ...and not against another CA.
        let other = dir.path().join("other");
        run(&CaCommand::Init { dir: other.clone() }).expect("init other");
        let other_cert = rustls_pki_types::CertificateDer::from(pem_der(&other.join("ca.pem")));
        let other_anchor = webpki::anchor_from_trusted_cert(&other_cert).expect("anchor");
        assert!(ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[other_anchor],
                &[],
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_err());
    }

    #[test]
    fn nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().to_path_buf();
        run(&CaCommand::Init { dir: ca.clone() }).expect("init");
        let key = fs::read(ca.join("ca.key")).expect("key");
        let err = run(&CaCommand::Init { dir: ca.clone() }).expect_err("second init");
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(ca.join("ca.key")).expect("key"), key);
        let issue = CaCommand::Issue {
            dir: ca.clone(),
            name: "n".into(),
        };
        run(&issue).expect("issue");
        let err = run(&issue).expect_err("second issue");
        assert!(err.contains("already exists"), "{err}");
    }

    fn pem_der(path: &Path) -> Vec<u8> {
        let text = fs::read_to_string(path).expect("read pem");
        pem::parse(text).expect("pem").into_contents()
    }
}
