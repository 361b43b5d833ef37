//! Outbound HTTPS verifies certificates: both connectors, pointed at the simulators behind a
//! TLS-terminating proxy whose certificate a throwaway CA (rcgen) signed, refuse the server
//! with an error that names the untrusted certificate and `ca_file`, and succeed once
//! `ca_file` names that CA. A `ca_file` that is missing or not PEM stops the start, naming
//! the file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use conduit::runtime::ServiceConnect;
use conduit_config::Config;
use conduit_connectors::campaign::{CampaignConnector, CampaignSettings};
use conduit_connectors::dynamics365::{Dynamics365Connector, Dynamics365Settings};
use conduit_connectors::http::{RetryPolicy, Secret};
use conduit_connectors::{ChangeSource, ConnectorError, RecordSink};
use conduit_engine::Connect;
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions, CampaignSimServer};
use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions, SimServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA written to `<dir>/ca.pem` and a TLS acceptor serving a certificate it signed for
/// `127.0.0.1` and `localhost`.
struct TestPki {
    ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

impl TestPki {
    fn new(dir: &Path) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        TestPki {
            ca_file,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Serves HTTPS on a loopback port, forwarding the decrypted bytes to `upstream`.
    async fn proxy_to(&self, upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client refusing our certificate ends the handshake: nothing to forward.
                    let Ok(mut tls) = acceptor.accept(inbound).await else {
                        return;
                    };
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                    }
                });
            }
        });
        address
    }
}

/// Few quick retries, so a wrongly transient classification would still end the call soon.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(100),
    }
}

async fn dynamics_behind_tls(pki: &TestPki) -> (DynamicsSim, SimServer, String) {
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: 3,
        ..DynamicsSimOptions::default()
    });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = pki.proxy_to(server.local_addr()).await;
    (sim, server, format!("https://{proxy}/"))
}

fn dynamics_settings(base_url: &str, ca_pem: Option<Vec<u8>>) -> Dynamics365Settings {
    let mut settings = Dynamics365Settings::new(
        base_url.to_owned(),
        format!("{base_url}contoso-tenant/oauth2/v2.0/token"),
        "conduit-sim-client",
        Secret::new("conduit-sim-secret"),
    );
    settings.retry = quick_retries();
    settings.extra_ca_pem = ca_pem;
    settings
}

async fn campaign_behind_tls(pki: &TestPki) -> (CampaignSim, CampaignSimServer, CampaignSettings) {
    let sim = CampaignSim::new(CampaignSimOptions::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let proxy = pki.proxy_to(server.local_addr()).await;
    let mut settings = sim_settings(&sim, &server);
    let https = |url: &url::Url| {
        url::Url::parse(
            &url.as_str()
                .replace(&server.origin(), &format!("https://{proxy}")),
        )
        .unwrap()
    };
    settings.api_base = https(&settings.api_base);
    settings.ims_token_url = https(&settings.ims_token_url);
    settings.events_journal_url = https(&settings.events_journal_url);
    settings.retry = quick_retries();
    (sim, server, settings)
}

/// The error an untrusted certificate must give: not retried, naming the problem and the fix.
fn assert_untrusted_certificate_error(error: &ConnectorError) {
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("TLS certificate is not trusted"),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("set ca_file"), "{message}");
}

#[tokio::test]
async fn dynamics_over_https_without_ca_file_refuses_the_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (_sim, _server, base_url) = dynamics_behind_tls(&pki).await;
    let connector = Dynamics365Connector::new(dynamics_settings(&base_url, None)).unwrap();
    let error = connector.check().await.unwrap_err();
    assert_untrusted_certificate_error(&error);
    assert!(error.to_string().contains("token request"), "{error}");
}

#[tokio::test]
async fn dynamics_over_https_with_ca_file_trusts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (_sim, _server, base_url) = dynamics_behind_tls(&pki).await;
    let pem = std::fs::read(&pki.ca_file).unwrap();
    let connector = Dynamics365Connector::new(dynamics_settings(&base_url, Some(pem))).unwrap();
    connector.check().await.unwrap();
    let fields = ChangeSource::describe(&connector, "contact").await.unwrap();
    assert!(
        fields.iter().any(|field| field.name == "emailaddress1"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn campaign_over_https_without_ca_file_refuses_the_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (_sim, _server, settings) = campaign_behind_tls(&pki).await;
    let connector = CampaignConnector::new(settings).unwrap();
    let error = connector.check().await.unwrap_err();
    assert_untrusted_certificate_error(&error);
}

#[tokio::test]
async fn campaign_over_https_with_ca_file_trusts_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let (_sim, _server, mut settings) = campaign_behind_tls(&pki).await;
    settings.extra_ca_pem = Some(pki.ca_file.clone());
    let connector = CampaignConnector::new(settings).unwrap();
    connector.check().await.unwrap();
    let fields = connector.describe("profile").await.unwrap();
    assert!(
        fields.iter().any(|field| field.name == "email"),
        "{fields:?}"
    );
}

/// A config for both services naming `dynamics_ca` and `campaign_ca` (written as given).
fn config_with_ca_files(dir: &Path, dynamics_ca: &str, campaign_ca: &str) -> Config {
    let text = format!(
        r#"[host]
data_dir = "data"
admin_listen = "127.0.0.1:7400"

[dynamics]
url = "https://contoso.crm.dynamics.com/"
token_url = "https://login.microsoftonline.com/contoso/oauth2/v2.0/token"
client_id = "client"
client_secret_env = "TLS_TEST_D365_SECRET"
{dynamics_ca}

[campaign]
url = "https://mc.adobe.io/ORG/campaign"
client_id = "acs"
client_secret_env = "TLS_TEST_ACS_SECRET"
{campaign_ca}

[ingress]
[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = {{ source = "contactid", destination = "externalId" }}
fields = [{{ source = "emailaddress1", destination = "email" }}]
"#
    );
    let path = dir.join("conduit.toml");
    Config::parse(&path, &text).unwrap_or_else(|problems| panic!("{problems:?}"))
}

fn connect_error(config: &Config) -> String {
    let secrets = HashMap::from([
        ("TLS_TEST_D365_SECRET".to_owned(), "d365".to_owned()),
        ("TLS_TEST_ACS_SECRET".to_owned(), "acs".to_owned()),
    ]);
    match ServiceConnect::with_secrets(secrets).connect(config) {
        Ok(_) => panic!("connecting with a bad ca_file succeeded"),
        Err(error) => {
            // The engine gets the cause whole, not a string.
            let cause = error
                .source
                .downcast_ref::<conduit::runtime::ConnectError>()
                .unwrap_or_else(|| panic!("{error:?}"));
            assert!(std::error::Error::source(cause).is_some(), "{cause:?}");
            error.to_string()
        }
    }
}

#[test]
fn a_missing_or_non_pem_ca_file_is_a_start_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let good = TestPki::new(dir.path()).ca_file;
    let line = |path: &Path| format!("ca_file = \"{}\"", path.display());

    for bad in [&missing, &not_pem] {
        let message = connect_error(&config_with_ca_files(dir.path(), &line(bad), ""));
        assert!(message.contains("dynamics.ca_file"), "{message}");
        assert!(message.contains(&bad.display().to_string()), "{message}");

        let message = connect_error(&config_with_ca_files(dir.path(), &line(&good), &line(bad)));
        assert!(message.contains("Campaign"), "{message}");
        assert!(message.contains(&bad.display().to_string()), "{message}");
    }
    let message = connect_error(&config_with_ca_files(dir.path(), &line(&not_pem), ""));
    assert!(message.contains("holds no PEM certificate"), "{message}");
    let message = connect_error(&config_with_ca_files(dir.path(), &line(&missing), ""));
    assert!(message.contains("cannot read"), "{message}");
    // The good CA passes for both services.
    let secrets = HashMap::from([
        ("TLS_TEST_D365_SECRET".to_owned(), "d365".to_owned()),
        ("TLS_TEST_ACS_SECRET".to_owned(), "acs".to_owned()),
    ]);
    let config = config_with_ca_files(dir.path(), &line(&good), &line(&good));
    assert!(
        ServiceConnect::with_secrets(secrets)
            .connect(&config)
            .is_ok()
    );
}

/// Connector settings that point at a running Campaign simulator.
fn sim_settings(sim: &CampaignSim, server: &CampaignSimServer) -> CampaignSettings {
    let url = |text: String| url::Url::parse(&text).expect("the simulator's URLs parse");
    CampaignSettings {
        api_base: url(server.api_base()),
        ims_token_url: url(server.ims_url()),
        client_id: sim.client_id().to_owned(),
        client_secret: conduit_connectors::http::Secret::new(sim.client_secret()),
        scopes: vec!["openid".into(), "AdobeID".into(), "campaign_sdk".into()],
        max_concurrency: 8,
        events_journal_url: url(server.journal_url()),
        opt_out_drop_root: sim.drop_root(),
        extra_ca_pem: None,
        retry: conduit_connectors::http::RetryPolicy::default(),
        request_timeout: std::time::Duration::from_secs(30),
    }
}
