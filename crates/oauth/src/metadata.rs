//! Discovery: a PDS names its authorization server in `/.well-known/oauth-protected-resource`
//! (RFC 9728), and the server describes itself in `/.well-known/oauth-authorization-server`
//! (RFC 8414). Both are checked against what the atproto profile requires before anything is sent.

use atrium_xrpc::HttpClient;
use serde::{Deserialize, Serialize};

use crate::fetch::{self, check_url, Reach};
use crate::{bounded, Error, Result};

/// An authorization server, as its metadata describes it (the fields this client uses).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthServer {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
}

impl AuthServer {
    /// The atproto profile's requirements on an authorization server, for a client that
    /// authenticates with `auth_method` ("none" or "private_key_jwt").
    pub fn check(&self, expected_issuer: &str, auth_method: &str, reach: Reach) -> Result<()> {
        let fail = |why: String| {
            Err(Error::Protocol(format!(
                "authorization server {}: {why}",
                bounded(expected_issuer)
            )))
        };
        if self.issuer != expected_issuer {
            return fail(format!("calls itself {}", bounded(&self.issuer)));
        }
        if self.pushed_authorization_request_endpoint.is_none() {
            return fail("has no PAR endpoint".into());
        }
        if !self
            .dpop_signing_alg_values_supported
            .iter()
            .any(|a| a == "ES256")
        {
            return fail("does not take ES256 DPoP proofs".into());
        }
        if !self.scopes_supported.is_empty()
            && !self.scopes_supported.iter().any(|s| s == "atproto")
        {
            return fail("does not offer the atproto scope".into());
        }
        if !self.authorization_response_iss_parameter_supported {
            return fail("does not send iss in its responses".into());
        }
        if !self.client_id_metadata_document_supported {
            return fail("does not read client metadata documents".into());
        }
        if !self.token_endpoint_auth_methods_supported.is_empty()
            && !self
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == auth_method)
        {
            return fail(format!(
                "does not accept {auth_method} client authentication"
            ));
        }
        let endpoints = [
            Some(&self.authorization_endpoint),
            Some(&self.token_endpoint),
            self.pushed_authorization_request_endpoint.as_ref(),
            self.revocation_endpoint.as_ref(),
        ];
        for url in endpoints.into_iter().flatten() {
            check_url(url, reach)?;
        }
        Ok(())
    }
}

/// The authorization server that `pds` (a base URL) delegates to, checked.
pub async fn authorization_server_of<T: HttpClient>(
    http: &T,
    pds: &str,
    auth_method: &str,
    reach: Reach,
) -> Result<AuthServer> {
    #[derive(Deserialize)]
    struct ProtectedResource {
        #[serde(default)]
        authorization_servers: Vec<String>,
    }
    let url = format!(
        "{}/.well-known/oauth-protected-resource",
        pds.trim_end_matches('/')
    );
    let resource: ProtectedResource =
        fetch::get_json(http, &url, reach, "protected resource metadata").await?;
    let Some(issuer) = resource.authorization_servers.first() else {
        return Err(Error::Protocol(format!(
            "{} names no authorization server",
            bounded(pds)
        )));
    };
    authorization_server(http, issuer, auth_method, reach).await
}

/// The metadata of the authorization server `issuer`, checked.
pub async fn authorization_server<T: HttpClient>(
    http: &T,
    issuer: &str,
    auth_method: &str,
    reach: Reach,
) -> Result<AuthServer> {
    let base = check_url(issuer, reach)?;
    if base.path() != "/" || base.query().is_some() {
        return Err(Error::Protocol(format!(
            "issuer {} is not an origin",
            bounded(issuer)
        )));
    }
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        issuer.trim_end_matches('/')
    );
    let server: AuthServer =
        fetch::get_json(http, &url, reach, "authorization server metadata").await?;
    server.check(issuer, auth_method, reach)?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> AuthServer {
        AuthServer {
            issuer: "https://as.example".into(),
            authorization_endpoint: "https://as.example/oauth/authorize".into(),
            token_endpoint: "https://as.example/oauth/token".into(),
            pushed_authorization_request_endpoint: Some("https://as.example/oauth/par".into()),
            revocation_endpoint: Some("https://as.example/oauth/revoke".into()),
            dpop_signing_alg_values_supported: vec!["RS256".into(), "ES256".into()],
            token_endpoint_auth_methods_supported: vec!["none".into(), "private_key_jwt".into()],
            scopes_supported: vec!["atproto".into(), "transition:generic".into()],
            authorization_response_iss_parameter_supported: true,
            client_id_metadata_document_supported: true,
        }
    }

    #[test]
    fn profile_requirements() {
        assert!(good()
            .check("https://as.example", "none", Reach::Public)
            .is_ok());
        assert!(good()
            .check("https://as.example", "private_key_jwt", Reach::Public)
            .is_ok());
        let mut cases: Vec<(&str, AuthServer)> = Vec::new();
        let mut s = good();
        s.issuer = "https://evil.example".into();
        cases.push(("issuer", s));
        let mut s = good();
        s.pushed_authorization_request_endpoint = None;
        cases.push(("par", s));
        let mut s = good();
        s.dpop_signing_alg_values_supported = vec!["RS256".into()];
        cases.push(("es256", s));
        let mut s = good();
        s.scopes_supported = vec!["openid".into()];
        cases.push(("scope", s));
        let mut s = good();
        s.authorization_response_iss_parameter_supported = false;
        cases.push(("iss", s));
        let mut s = good();
        s.client_id_metadata_document_supported = false;
        cases.push(("client metadata", s));
        let mut s = good();
        s.token_endpoint = "https://10.0.0.1/token".into();
        cases.push(("private endpoint", s));
        let mut s = good();
        s.token_endpoint_auth_methods_supported = vec!["client_secret_basic".into()];
        cases.push(("auth method", s));
        for (name, server) in cases {
            assert!(
                server
                    .check("https://as.example", "none", Reach::Public)
                    .is_err(),
                "{name}"
            );
        }
    }
}
