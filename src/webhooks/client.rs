//! The HTTP client of webhook deliveries. The address rules are enforced where the connection is
//! made: the resolver refuses a name that resolves to an internal address, so a DNS answer that
//! changed since the endpoint was created (or changes between a check and the connect) cannot
//! reach the server's network. Redirects are not followed; the whole exchange has a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::{UrlProblem, is_internal, parse_url};

/// Resolves with the system resolver and refuses internal addresses unless allowed.
#[derive(Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && found.iter().any(|a| is_internal(a.ip())) {
                return Err(std::io::Error::other(format!("{} resolves to a private address", name.as_str())));
            }
            Ok(found.into_iter())
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct SendOutcome {
    /// The receiver's status code, when it answered.
    pub status: Option<u16>,
    /// Why it is not delivered: a non-2xx answer, a refused address, a timeout, a network error.
    pub error: Option<String>,
    pub duration: Duration,
}

impl SendOutcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    allow_private: bool,
    timeout: Duration,
}

impl WebhookClient {
    pub fn new(allow_private: bool, timeout: Duration) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(https);
        Self { client, allow_private, timeout }
    }

    /// POSTs `body` with `headers`; a 2xx within the deadline is delivered.
    pub async fn send(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> SendOutcome {
        let started = Instant::now();
        let result = self.exchange(url, headers, body).await;
        let duration = started.elapsed();
        match result {
            Ok(status) if (200..300).contains(&status) => SendOutcome { status: Some(status), error: None, duration },
            Ok(status) => SendOutcome { status: Some(status), error: Some(format!("answered {status}")), duration },
            Err(error) => SendOutcome { status: None, error: Some(error), duration },
        }
    }

    async fn exchange(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Result<u16, String> {
        // The literal-address and scheme rules (the resolver sees names only).
        let parsed = parse_url(url, self.allow_private).map_err(|p| refused(p).to_string())?;
        if !self.allow_private {
            let literal = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(is_internal) {
                return Err(refused(UrlProblem::Internal).to_string());
            }
        }
        let mut request = hyper::Request::post(parsed.as_str());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| format!("invalid request: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(describe)?;
            let status = response.status().as_u16();
            // Read (and drop) at most 64 KiB of the answer, so the connection can be reused.
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < 64 * 1024 {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map(|d| d.len()).unwrap_or(0),
                    _ => break,
                }
            }
            Ok::<u16, String>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {} s", self.timeout.as_secs())),
        }
    }
}

fn refused(problem: UrlProblem) -> &'static str {
    match problem {
        UrlProblem::Invalid => "refused: not an absolute http(s) URL",
        UrlProblem::NotHttps => "refused: https is required",
        UrlProblem::Unresolvable => "refused: the host does not resolve",
        UrlProblem::Internal => "refused: the URL points at a private address",
    }
}

/// The error and its causes, most specific last: "client error (Connect): ... resolves to a private address".
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}
