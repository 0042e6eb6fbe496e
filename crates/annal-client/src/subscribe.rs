//! `GET /v1/subscribe`: Server-Sent Events read into recorded events, with an idle
//! timeout; a failure the server reports in the stream is yielded as an error.

use crate::sse::{self, SseParser};
use crate::transport::TransportError;
use crate::{HttpStore, problem};
use annal_core::{Filter, RecordedEvent, Result};
use futures_util::{FutureExt, Stream};
use reqwest::Url;
use reqwest::header::ACCEPT;
use std::collections::VecDeque;

impl HttpStore {
    /// Every event after `after_position` that passes `filter`, then live ones as they
    /// commit, over Server-Sent Events (`GET /v1/subscribe`), in order, each once.
    ///
    /// The stream ends when the server shuts down. A failure the server reports on the
    /// subscription is yielded as an error and the subscription goes on; a transport
    /// failure or an idle connection (see [`HttpStoreBuilder::idle_timeout`]) is
    /// yielded and ends it: resubscribe after the last position received.
    pub fn subscribe(
        &self,
        after_position: u64,
        filter: &Filter,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + 'static {
        enum Phase {
            Start(Result<Url>),
            Live(reqwest::Response),
            Done,
        }
        struct St {
            store: HttpStore,
            phase: Phase,
            parser: SseParser,
            ready: VecDeque<Result<RecordedEvent>>,
        }
        let url = self.filtered_url(&["subscribe"], after_position, None, filter);
        let st = St {
            store: self.clone(),
            phase: Phase::Start(url),
            parser: SseParser::default(),
            ready: VecDeque::new(),
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item, st));
                }
                let base = st.store.inner.base_text.as_str();
                match std::mem::replace(&mut st.phase, Phase::Done) {
                    Phase::Done => return None,
                    Phase::Start(url) => match st.store.open_subscription(url).await {
                        Ok(response) => st.phase = Phase::Live(response),
                        Err(e) => return Some((Err(e), st)),
                    },
                    Phase::Live(mut response) => {
                        let idle = st.store.inner.idle_timeout;
                        // Bytes already received need no timer (`chunk` is cancel-safe:
                        // a pending call has taken nothing).
                        let next = match response.chunk().now_or_never() {
                            Some(next) => Ok(next),
                            None => tokio::time::timeout(idle, response.chunk()).await,
                        };
                        match next {
                            Err(_) => {
                                let e = TransportError::answer(
                                    base,
                                    format!(
                                        "the subscription sent nothing, not even a keep-alive, for {idle:?}"
                                    ),
                                );
                                return Some((Err(e.into()), st));
                            }
                            Ok(Err(e)) => {
                                return Some((Err(TransportError::request(base, e).into()), st));
                            }
                            // The server ended the subscription (it is shutting down).
                            Ok(Ok(None)) => return None,
                            Ok(Ok(Some(bytes))) => {
                                let ready = &mut st.ready;
                                st.parser.feed(&bytes, &mut |ev| {
                                    ready.push_back(sse_event(base, ev));
                                });
                                st.phase = Phase::Live(response);
                            }
                        }
                    }
                }
            }
        })
    }

    async fn open_subscription(&self, url: Result<Url>) -> Result<reqwest::Response> {
        let base = self.inner.base_text.as_str();
        let url = url?;
        let response = self
            .inner
            .http
            .get(url)
            .header(ACCEPT, "text/event-stream")
            .send();
        let response = tokio::time::timeout(self.inner.timeout, response)
            .await
            .map_err(|_| {
                TransportError::answer(base, format!("no answer within {:?}", self.inner.timeout))
            })?
            .map_err(|e| TransportError::request(base, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = tokio::time::timeout(self.inner.timeout, response.bytes())
            .await
            .map_err(|_| TransportError::answer(base, format!("answered {status}, then stalled")))?
            .map_err(|e| TransportError::request(base, e))?;
        Err(problem::error_from(base, status, &body, 0))
    }
}

/// One SSE event as a recorded event, or the error the server reported.
fn sse_event(base: &str, ev: sse::SseEvent) -> Result<RecordedEvent> {
    if ev.event == "error" {
        let text = String::from_utf8_lossy(&ev.data);
        return Err(
            TransportError::answer(base, format!("the subscription reported: {text}")).into(),
        );
    }
    serde_json::from_slice(&ev.data).map_err(|e| {
        TransportError::answer(
            base,
            format!("sent a subscription event that is not an event: {e}"),
        )
        .into()
    })
}
