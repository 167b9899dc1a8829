//! HTTPS for one test run: a certificate authority made for the run ([`TestCa`]), held to the
//! names it may vouch for (X.509 name constraints); the certificates it signs, as rustls server
//! configurations or PEM files (the devnet's `NODE_EXTRA_CA_CERTS`); and [`Front`], the TLS
//! terminator that serves a stack at its public name, as Cloudflare's edge serves a deployed
//! worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine;
use rcgen::PublicKeyData;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority for one run, and certificates it signs.
pub struct TestCa {
    /// The CA's certificate, PEM: what a client is told to trust.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

/// A certificate for a server, signed by a [`TestCa`].
pub struct Leaf {
    /// The base64 SHA-256 of its public key (SubjectPublicKeyInfo): what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
    chain_der: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A CA that can vouch only for `permitted` names and their subdomains (a leaked key from a
    /// test run can sign nothing else that a client would accept).
    pub fn new(permitted: &[&str]) -> Result<TestCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permitted
                .iter()
                .map(|name| rcgen::GeneralSubtree::DnsName((*name).to_owned()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "statusphere test CA");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A server certificate for `names`, signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Result<Leaf> {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )?;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let spki = sha2::Sha256::digest(key.subject_public_key_info());
        Ok(Leaf {
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki),
            chain_der: vec![cert.der().clone(), self.cert_der.clone()],
            key_der: key.serialize_der(),
        })
    }

    /// A TLS server configuration with a certificate for `names`, signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Result<rustls::ServerConfig> {
        self.leaf(names)?.server_config()
    }

    /// Writes the CA's certificate to `dir/ca.pem` and returns its path.
    pub fn write_cert(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.cert_pem)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A reqwest certificate for this CA (a client that trusts it).
    pub fn reqwest_root(&self) -> Result<reqwest::Certificate> {
        Ok(reqwest::Certificate::from_pem(self.cert_pem.as_bytes())?)
    }
}

impl Leaf {
    /// A TLS server configuration serving this certificate (and the CA's after it).
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain_der.clone(), key)?)
    }
}

/// A TLS front for a `wrangler dev` stack: HTTPS on a port of 127.0.0.1, each request relayed
/// in the clear to the stack's port with `Host` set to that port's address (see
/// `xtask::stack::PublicOrigin` for why), WebSocket upgrades included. Non-upgrade requests are
/// relayed with `Connection: close`, one to a connection, so the relay never parses a body. It
/// runs on a runtime of its own, so that synchronous tests can hold one too; dropping it stops it.
pub struct Front {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Front {
    /// Serves `config`'s certificate on a free port, relaying to `upstream` (a port of
    /// 127.0.0.1).
    pub fn start(config: rustls::ServerConfig, upstream: u16) -> Result<Front> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("https-front")
            .enable_all()
            .build()?;
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = relay(stream, upstream).await;
                    }
                });
            }
        });
        Ok(Front {
            port,
            runtime: Some(runtime),
        })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The longest request head the front relays.
const MAX_HEAD: usize = 64 * 1024;

/// One connection: the request head read and rewritten, then bytes both ways until both close.
async fn relay<S>(mut client: S, upstream: u16) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if read.len() > MAX_HEAD {
            bail!("request head over {MAX_HEAD} bytes");
        }
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        read.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&read[..end]).context("request head is not UTF-8")?;
    let head = relayed_head(head, upstream);
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(head.as_bytes()).await?;
    server.write_all(&read[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The request head as the stack should get it: `Host` is the stack's own address, and a
/// request that does not upgrade closes its connection after the answer.
fn relayed_head(head: &str, upstream: u16) -> String {
    let mut lines = head.trim_end_matches("\r\n").split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let fields: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let upgrades = fields
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
    let mut out = format!("{request_line}\r\nHost: 127.0.0.1:{upstream}\r\n");
    for (name, value) in fields {
        let replaced = name.eq_ignore_ascii_case("host")
            || (!upgrades && name.eq_ignore_ascii_case("connection"));
        if !replaced {
            out += &format!("{name}: {value}\r\n");
        }
    }
    if !upgrades {
        out += "Connection: close\r\n";
    }
    out + "\r\n"
}
