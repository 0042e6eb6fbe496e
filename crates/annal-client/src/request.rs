//! One request and its answer: sent a second time only when that cannot write twice,
//! success bodies parsed into the wire types, any other answer turned into its error.

use crate::transport::TransportError;
use crate::{HttpStore, problem};
use annal_core::wire::Lease;
use annal_core::{Error, ErrorKind, Result};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// When a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Also after it may have reached the server: sending it twice writes once.
    Safe,
    /// Only when the connection could not be made (it never reached the server).
    IfNotSent,
}

/// A request that got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be made: the server never saw the request.
    NotSent(reqwest::Error),
    /// It may have reached the server.
    Sent(reqwest::Error),
}

impl Failure {
    fn into_inner(self) -> reqwest::Error {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) => e,
        }
    }
}

impl HttpStore {
    /// Sends a request (a second time only as `resend` allows) and hands the status
    /// and body of the answer to `answer`.
    pub(crate) async fn call<T>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        resend: Resend,
        timeout: Duration,
        answer: impl FnOnce(StatusCode, &[u8], usize) -> Result<T>,
    ) -> Result<T> {
        let base = self.inner.base_text.as_str();
        let sent = body.as_ref().map_or(0, Vec::len);
        let mut builder = self.inner.http.request(method, url).timeout(timeout);
        if let Some(body) = body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body);
        }
        let first = builder
            .build()
            .map_err(|e| TransportError::request(base, e))?;
        // A copy for a second attempt (the body is shared bytes, not copied).
        let spare = first.try_clone();
        let failure = match self.exchange(first).await {
            Ok((status, bytes)) => return answer(status, bytes.as_ref(), sent),
            Err(failure) => failure,
        };
        // A timeout is not retried: the caller asked to wait at most that long.
        let again = match &failure {
            Failure::NotSent(e) => !e.is_timeout(),
            Failure::Sent(e) => resend == Resend::Safe && !e.is_timeout(),
        };
        match spare {
            Some(request) if again => match self.exchange(request).await {
                Ok((status, bytes)) => answer(status, bytes.as_ref(), sent),
                Err(f) => Err(TransportError::request(base, f.into_inner()).into()),
            },
            _ => Err(TransportError::request(base, failure.into_inner()).into()),
        }
    }

    /// One request and its whole answer.
    async fn exchange(
        &self,
        request: reqwest::Request,
    ) -> std::result::Result<(StatusCode, impl AsRef<[u8]>), Failure> {
        let response = self.inner.http.execute(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::NotSent(e)
            } else {
                Failure::Sent(e)
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(Failure::Sent)?;
        Ok((status, bytes))
    }

    /// Parses a success answer as `T`; any other answer is its error.
    pub(crate) fn parse<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
        sent: usize,
    ) -> Result<T> {
        let base = self.inner.base_text.as_str();
        if !status.is_success() {
            return Err(problem::error_from(base, status, body, sent));
        }
        serde_json::from_slice(body).map_err(|e| {
            TransportError::answer(
                base,
                format!("answered {status} with a body that is not what docs/http.md says: {e}"),
            )
            .into()
        })
    }

    /// As [`HttpStore::parse`], with a `not_found` problem as `None`.
    pub(crate) fn parse_opt<T: DeserializeOwned>(
        &self,
        status: StatusCode,
        body: &[u8],
        sent: usize,
    ) -> Result<Option<T>> {
        if status == StatusCode::NOT_FOUND
            && problem::parse(body).is_some_and(|d| d.error_kind() == Some(ErrorKind::NotFound))
        {
            return Ok(None);
        }
        self.parse(status, body, sent).map(Some)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, url: Url, timeout: Duration) -> Result<T> {
        self.call(Method::GET, url, None, Resend::Safe, timeout, |s, b, n| {
            self.parse(s, b, n)
        })
        .await
    }

    pub(crate) async fn get_opt<T: DeserializeOwned>(&self, url: Url) -> Result<Option<T>> {
        let timeout = self.inner.timeout;
        self.call(Method::GET, url, None, Resend::Safe, timeout, |s, b, n| {
            self.parse_opt(s, b, n)
        })
        .await
    }

    pub(crate) async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &B,
        resend: Resend,
    ) -> Result<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::invalid("body", format!("cannot be written as JSON: {e}")))?;
        let timeout = self.inner.timeout;
        self.call(method, url, Some(body), resend, timeout, |s, b, n| {
            self.parse(s, b, n)
        })
        .await
    }

    /// A lease call whose `lease_conflict` answer is `None`.
    pub(crate) async fn lease_call<B: Serialize>(
        &self,
        url: Url,
        body: &B,
        resend: Resend,
    ) -> Result<Option<Lease>> {
        match self.send(Method::POST, url, body, resend).await {
            Ok(lease) => Ok(Some(lease)),
            Err(Error::LeaseConflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
