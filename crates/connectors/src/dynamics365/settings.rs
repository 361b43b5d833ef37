//! The Dynamics 365 connector's settings (built by the config module) and their validation.

use std::time::Duration;

use crate::ConnectorError;
use crate::http::{RetryPolicy, Secret};

/// The most operations Dataverse accepts in one `$batch`.
pub const MAX_BATCH_SIZE: usize = 1000;

/// The most rows per page Dataverse returns.
pub const MAX_PAGE_SIZE: u32 = 5000;

/// How to reach and authenticate against one Dataverse organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Dynamics365Settings {
    /// The organization URL, e.g. `https://org.api.crm.dynamics.com/`; the API root is
    /// `<base>/api/data/v9.2/`.
    pub base_url: String,
    /// The full token URL, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    pub token_url: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The OAuth2 scope; `None` means `<base>/.default`.
    pub scope: Option<String>,
    /// Requests in flight at most (service protection allows 52 per user).
    pub max_concurrency: usize,
    /// Operations per `$batch` (1..=1000).
    pub batch_size: usize,
    /// Extra CA certificates (PEM) to trust besides the built-in roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// How long before expiry a token is refreshed.
    pub token_refresh_margin: Duration,
}

impl Dynamics365Settings {
    /// Settings with the usual defaults (concurrency 8, batches of 500, 120 s timeout).
    pub fn new(
        base_url: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Dynamics365Settings {
        Dynamics365Settings {
            base_url: base_url.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret,
            scope: None,
            max_concurrency: 8,
            batch_size: 500,
            extra_ca_pem: None,
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            token_refresh_margin: Duration::from_secs(300),
        }
    }

    /// The base URL with exactly one trailing slash, after checking it is http(s).
    pub fn normalized_base(&self) -> Result<url::Url, ConnectorError> {
        let invalid = |why: String| ConnectorError::Permanent {
            message: format!("the Dynamics 365 URL '{}' {why}", self.base_url),
        };
        let mut base = url::Url::parse(self.base_url.trim())
            .map_err(|error| invalid(format!("is not a URL: {error}")))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(invalid("must start with https://".to_string()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("must not carry a query or fragment".to_string()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(base)
    }

    /// The scope to ask for: the configured one or `<base>/.default`.
    pub fn effective_scope(&self) -> Result<String, ConnectorError> {
        match &self.scope {
            Some(scope) => Ok(scope.clone()),
            None => Ok(format!("{}.default", self.normalized_base()?)),
        }
    }

    /// Checks every setting, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let invalid = |message: String| Err(ConnectorError::Permanent { message });
        self.normalized_base()?;
        if url::Url::parse(&self.token_url).is_err() {
            return invalid(format!(
                "the Dynamics 365 token URL '{}' is not a URL",
                self.token_url
            ));
        }
        if self.client_id.trim().is_empty() {
            return invalid("the Dynamics 365 client id is empty".to_string());
        }
        if self.client_secret.expose().is_empty() {
            return invalid("the Dynamics 365 client secret is empty".to_string());
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return invalid(format!(
                "the Dynamics 365 batch size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        if self.max_concurrency == 0 {
            return invalid("the Dynamics 365 max concurrency must be at least 1".to_string());
        }
        if self.retry.max_attempts == 0 {
            return invalid("the Dynamics 365 retry attempts must be at least 1".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Dynamics365Settings {
        Dynamics365Settings::new(
            "https://org.api.crm.dynamics.com",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "client",
            Secret::new("secret"),
        )
    }

    #[test]
    fn default_scope_is_the_org_url_with_default_suffix() {
        assert_eq!(
            settings().effective_scope().expect("valid"),
            "https://org.api.crm.dynamics.com/.default"
        );
    }

    #[test]
    fn oversized_batch_is_refused_by_name() {
        let mut settings = settings();
        settings.batch_size = 1001;
        let error = settings.validate().expect_err("too big");
        assert!(error.to_string().contains("batch size"), "{error}");
    }

    #[test]
    fn non_http_base_is_refused() {
        let mut settings = settings();
        settings.base_url = "ftp://org".to_string();
        assert!(settings.validate().is_err());
    }
}
