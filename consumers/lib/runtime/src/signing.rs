//! Signed model versions: who may change what serves.
//!
//! Whoever publishes a model record (the trainer, the `models` CLI) signs it with an
//! ed25519 key; every registry follower configured with public keys applies only records
//! signed by one of them. The signature travels in the record's Kafka header
//! [`HEADER`] and covers the exact bytes of the record's key and value, so nothing needs
//! re-encoding to check it, and a signed value moved under another key (to shadow a
//! version on the compacted topic) fails. Several trusted keys are accepted at once, for
//! rotation. Keys are PEM files as OpenSSL writes them (`openssl genpkey -algorithm
//! ed25519`: PKCS#8 private, SPKI public).

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The Kafka header holding a record's signature (64 bytes).
pub const HEADER: &str = "driftline-signature";

/// Domain separation: a signature over a model record cannot be taken for one over
/// anything else signed with the same key.
const CONTEXT: &[u8] = b"driftline model record v1\0";

/// Public keys whose signatures a registry follower accepts, from `--trusted-keys`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Public keys (PEM files, comma-separated) whose signatures on model records are
    /// accepted: records unsigned or signed otherwise are refused and counted. Several
    /// keys at once allow a rotation. Without any, records are not checked (a warning at
    /// start).
    #[arg(long, env = "DRIFTLINE_TRUSTED_KEYS", value_delimiter = ',')]
    pub trusted_keys: Vec<PathBuf>,
}

/// The key a publisher of model records signs with, from `--signing-key`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SigningArgs {
    /// The ed25519 private key that signs the model records this process publishes: a
    /// PEM file's path, or the PEM itself (e.g. from a secret store). Without one, records
    /// go out unsigned and followers that check signatures refuse them.
    #[arg(long, env = "DRIFTLINE_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
}

impl SigningArgs {
    /// The signer, if a key is configured; an unreadable key is an error at start.
    pub fn signer(&self) -> Result<Option<Signer>> {
        self.signing_key.as_deref().map(Signer::load).transpose()
    }
}

/// Signs model records.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for Signer {
    /// Only the key's id: a private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.id)
    }
}

impl Signer {
    /// A key from PEM text, or from the PEM file `value` names.
    pub fn load(value: &str) -> Result<Self> {
        let (pem, from) = if value.trim_start().starts_with("-----BEGIN") {
            (value.to_string(), "the PEM given".to_string())
        } else {
            (read_key_file(Path::new(value))?, value.to_string())
        };
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            Error::Config(format!(
                "signing key ({from}) is not an ed25519 private key in PKCS#8 PEM: {e}"
            ))
        })?;
        Ok(Self::new(key))
    }

    fn new(key: SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// A new random key.
    pub fn generate() -> Result<Self> {
        use rand::TryRngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Config(format!("no randomness for a new key: {e}")))?;
        Ok(Self::new(SigningKey::from_bytes(&seed)))
    }

    /// The public key's short id (as logs name it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The signature of the record `key`/`payload`.
    pub fn sign(&self, key: &[u8], payload: &[u8]) -> Vec<u8> {
        self.key.sign(&message(key, payload)).to_bytes().to_vec()
    }

    /// The header (name, value) a record `key`/`payload` goes out with.
    pub fn header(&self, key: &[u8], payload: &[u8]) -> (&'static str, Vec<u8>) {
        (HEADER, self.sign(key, payload))
    }

    pub fn public_pem(&self) -> Result<String> {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Config(format!("encoding a public key: {e}")))
    }

    fn private_pem(&self) -> Result<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| Error::Config(format!("encoding a private key: {e}")))
    }
}

/// The headers of a record published by `signer` (none: unsigned).
pub fn headers(signer: Option<&Signer>, key: &[u8], payload: &[u8]) -> OwnedHeaders {
    match signer {
        Some(s) => OwnedHeaders::new().insert(rdkafka::message::Header {
            key: HEADER,
            value: Some(&s.sign(key, payload)),
        }),
        None => OwnedHeaders::new(),
    }
}

/// What is signed: the context, the key's length, the key, the value.
fn message(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 8 + key.len() + payload.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&(key.len() as u64).to_be_bytes());
    m.extend_from_slice(key);
    m.extend_from_slice(payload);
    m
}

/// The first 8 bytes of the SHA-256 of a public key, in hex.
fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_key_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read key file {}: {e}", path.display())))
}

/// The public keys a follower accepts. Empty: nothing is checked.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(String, VerifyingKey)>,
}

impl Trust {
    /// Accepts every record: no key configured.
    pub fn none() -> Self {
        Self::default()
    }

    /// The keys in these PEM files; an unreadable one is an error at start.
    pub fn load(args: &TrustArgs) -> Result<Self> {
        let mut keys = Vec::new();
        for path in &args.trusted_keys {
            let pem = read_key_file(path)?;
            let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
                Error::Config(format!(
                    "trusted key {} is not an ed25519 public key in SPKI PEM: {e}",
                    path.display()
                ))
            })?;
            keys.push((key_id(&key), key));
        }
        Ok(Self { keys })
    }

    /// Trusts the public half of `signer`.
    pub fn of(signer: &Signer) -> Self {
        Self {
            keys: vec![(signer.id.clone(), signer.key.verifying_key())],
        }
    }

    /// Whether records are checked at all.
    pub fn checks(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The ids of the trusted keys.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Which trusted key signed the record `key`/`payload` (`None` when nothing is
    /// checked), or why it is refused.
    pub fn check(
        &self,
        key: &[u8],
        payload: &[u8],
        signature: Option<&[u8]>,
    ) -> std::result::Result<Option<&str>, String> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(signature) = signature else {
            return Err("unsigned".into());
        };
        let signature = Signature::from_slice(signature)
            .map_err(|_| format!("the signature is {} bytes, not 64", signature.len()))?;
        let message = message(key, payload);
        self.keys
            .iter()
            .find(|(_, k)| k.verify_strict(&message, &signature).is_ok())
            .map(|(id, _)| Some(id.as_str()))
            .ok_or_else(|| "not signed by a trusted key (or altered since)".into())
    }

    /// [`Trust::check`] of a consumed message.
    pub fn check_message(
        &self,
        m: &impl Message,
        payload: &[u8],
    ) -> std::result::Result<Option<&str>, String> {
        let signature = m.headers().and_then(|h| {
            h.iter()
                .filter(|h| h.key == HEADER)
                .last()
                .and_then(|h| h.value)
        });
        self.check(m.key().unwrap_or_default(), payload, signature)
    }
}

/// The key pair `driftline up` signs with, in `dir`: made on first start (the private key
/// readable by its owner only), read again after. Returns the signer and the paths of
/// the private and the public key.
pub fn key_pair_in(dir: &Path) -> Result<(Signer, PathBuf, PathBuf)> {
    let private = dir.join("model-signing.pem");
    let public = dir.join("model-signing.pub.pem");
    if !private.exists() {
        std::fs::create_dir_all(dir)?;
        let new = Signer::generate()?;
        // Written whole under another name, then linked into place: of two first starts
        // at once, one key wins and both use it.
        let staged = dir.join(format!(".model-signing-{}.pem", new.id()));
        write_private(&staged, &new.private_pem()?)?;
        let linked = std::fs::hard_link(&staged, &private);
        std::fs::remove_file(&staged)?;
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e.into()),
            _ => {}
        }
    }
    let signer = Signer::load(&private.to_string_lossy())?;
    let pem = signer.public_pem()?;
    if std::fs::read_to_string(&public).ok().as_deref() != Some(pem.as_str()) {
        let staged = dir.join(format!(".model-signing-{}.pub.pem", std::process::id()));
        std::fs::write(&staged, pem)?;
        std::fs::rename(&staged, &public)?;
    }
    Ok((signer, private, public))
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_signed_by_a_trusted_key_passes_and_any_change_fails() {
        let signer = Signer::generate().unwrap();
        let trust = Trust::of(&signer);
        let sig = signer.sign(b"m/3", b"payload");
        assert_eq!(
            trust.check(b"m/3", b"payload", Some(&sig)),
            Ok(Some(signer.id()))
        );
        assert!(trust.check(b"m/3", b"paylOad", Some(&sig)).is_err());
        assert!(
            trust.check(b"m/4", b"payload", Some(&sig)).is_err(),
            "the same value under another key"
        );
        // The key/value boundary is part of what is signed.
        assert!(trust.check(b"m/3p", b"ayload", Some(&sig)).is_err());
        assert_eq!(
            trust.check(b"m/3", b"payload", None),
            Err("unsigned".into())
        );
        assert!(trust.check(b"m/3", b"payload", Some(&sig[..10])).is_err());
    }

    #[test]
    fn several_trusted_keys_allow_a_rotation_and_others_are_refused() {
        let (old, new, stranger) = (
            Signer::generate().unwrap(),
            Signer::generate().unwrap(),
            Signer::generate().unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut args = TrustArgs::default();
        for (name, s) in [("old", &old), ("new", &new)] {
            let path = dir.path().join(format!("{name}.pub.pem"));
            std::fs::write(&path, s.public_pem().unwrap()).unwrap();
            args.trusted_keys.push(path);
        }
        let trust = Trust::load(&args).unwrap();
        for s in [&old, &new] {
            assert_eq!(
                trust.check(b"k", b"v", Some(&s.sign(b"k", b"v"))),
                Ok(Some(s.id()))
            );
        }
        assert!(
            trust
                .check(b"k", b"v", Some(&stranger.sign(b"k", b"v")))
                .is_err()
        );
        assert_eq!(
            Trust::none().check(b"k", b"v", None),
            Ok(None),
            "no keys: not checked"
        );
    }

    #[test]
    fn up_makes_its_key_pair_once_and_keeps_the_private_half_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, private, public) = key_pair_in(dir.path()).unwrap();
        let (again, ..) = key_pair_in(dir.path()).unwrap();
        assert_eq!(first.id(), again.id());
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private key mode {mode:o}");
        let trust = Trust::load(&TrustArgs {
            trusted_keys: vec![public],
        })
        .unwrap();
        assert!(
            trust
                .check(b"k", b"v", Some(&first.sign(b"k", b"v")))
                .is_ok()
        );
        // The PEM itself works as the key (a secret store's value).
        let pem = std::fs::read_to_string(&private).unwrap();
        assert_eq!(Signer::load(&pem).unwrap().id(), first.id());
        assert!(format!("{first:?}").len() < 40, "Debug shows the id only");
    }

    #[test]
    fn a_key_that_is_not_ed25519_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "not a key").unwrap();
        let e = Signer::load(&path.to_string_lossy()).unwrap_err();
        assert!(e.to_string().contains("PKCS#8"), "{e}");
        let e = Trust::load(&TrustArgs {
            trusted_keys: vec![path, "/nonexistent.pem".into()],
        })
        .unwrap_err();
        assert!(e.to_string().contains("bad.pem"), "{e}");
        let e = Signer::load("/nonexistent.pem").unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}
