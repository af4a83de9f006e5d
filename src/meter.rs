//! The metered response body: wraps the upstream's body, hands every data chunk to the
//! provider's [`ResponseTap`] on its way to the client, and reports how the body ended —
//! exactly once, whether it completed, the upstream failed, the upstream went silent, or the
//! client went away (the body is dropped unfinished).
//!
//! It knows no provider, no store and no price: the end is reported to a closure. It never
//! buffers the answer: each frame goes out as soon as the tap returns it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::provider::{ResponseTap, TapReport};

/// How a metered body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// The upstream finished the body and the client received all of it.
    Complete,
    /// The upstream connection failed mid-body; the client's stream was aborted.
    UpstreamError,
    /// No chunk arrived within the idle timeout; the client's stream was aborted.
    IdleTimeout,
    /// The client went away (or the gateway stopped) before the body ended.
    ClientGone,
}

impl BodyEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEnd::Complete => "complete",
            BodyEnd::UpstreamError => "upstream_error",
            BodyEnd::IdleTimeout => "idle_timeout",
            BodyEnd::ClientGone => "client_gone",
        }
    }
}

/// Receives how a metered body ended, exactly once.
pub trait OnEnd {
    fn on_end(self, how: BodyEnd, report: TapReport);
}

impl<F: FnOnce(BodyEnd, TapReport)> OnEnd for F {
    fn on_end(self, how: BodyEnd, report: TapReport) {
        self(how, report)
    }
}

/// An error that ends the client's body, which makes hyper abort the stream (the client sees a
/// failed read, never a clean end).
#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("upstream body failed: {0}")]
    Upstream(Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream sent nothing for {0:?}")]
    Idle(Duration),
}

pin_project! {
    /// See the module doc. `F` is told once with how the body ended and what the tap read.
    #[project = MeteredBodyProj]
    pub struct MeteredBody<B, F>
    where
        F: OnEnd,
    {
        #[pin]
        inner: B,
        tap: ResponseTap,
        #[pin]
        idle: Sleep,
        idle_after: Duration,
        // The inner body's size hint still describes what the client gets (the tap forwards
        // bytes unchanged).
        exact_hint: bool,
        on_end: Option<F>,
        // A frame that must follow data already returned: trailers, or the error that ended
        // the upstream body.
        stashed: Option<Result<Frame<Bytes>, MeterError>>,
        // Data being merged while the task yields once to let the upstream connection decode
        // what it has already read.
        held: Option<Merge>,
        yielded: u8,
        // The upstream body has ended (cleanly or not): nothing more is polled from it.
        done: bool,
    }

    impl<B, F> PinnedDrop for MeteredBody<B, F>
    where
        F: OnEnd,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_end) = this.on_end.take() {
                on_end.on_end(BodyEnd::ClientGone, this.tap.report());
            }
        }
    }
}

impl<B, F> MeteredBody<B, F>
where
    F: OnEnd,
{
    /// `exact_hint`: whether the tap forwards the body unchanged, so that the upstream's length
    /// still holds for the client.
    pub fn new(
        inner: B,
        tap: ResponseTap,
        idle_after: Duration,
        exact_hint: bool,
        on_end: F,
    ) -> Self {
        MeteredBody {
            inner,
            tap,
            idle: tokio::time::sleep(idle_after),
            idle_after,
            exact_hint,
            on_end: Some(on_end),
            stashed: None,
            held: None,
            yielded: 0,
            done: false,
        }
    }
}

fn end<F: OnEnd>(on_end: &mut Option<F>, how: BodyEnd, tap: &ResponseTap) {
    if let Some(f) = on_end.take() {
        f.on_end(how, tap.report());
    }
}

/// Yields in a row that may bring nothing before merged data is sent.
const MAX_YIELDS: u8 = 3;

/// Most bytes merged into one frame for the client.
const MERGE_LIMIT: usize = 64 * 1024;

/// Data for the client, built from one or more tap outputs without copying the common case of
/// a single one.
struct Merge {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Merge {
    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, next: Bytes) {
        if next.is_empty() {
            return;
        }
        if self.first.is_empty() && self.more.is_none() {
            self.first = next;
            return;
        }
        let more = self.more.get_or_insert_with(|| {
            let mut m = BytesMut::with_capacity((self.first.len() + next.len()).max(8 * 1024));
            m.extend_from_slice(&self.first);
            m
        });
        more.extend_from_slice(&next);
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}

/// Merge into `out` what the upstream body has ready, so that the client gets one write instead
/// of one per upstream frame. hyper hands a body over one frame at a time through a channel that
/// the upstream connection's task refills only when it runs; so when the body is momentarily
/// empty, the task yields once (wakes itself and steps back in the run queue) to let that
/// connection decode the bytes it has already read, and goes on merging while yields bring
/// more. A yield that brings nothing sends what was merged: no chunk waits for a later one.
fn merge_more<B, F>(
    mut this: MeteredBodyProj<'_, B, F>,
    cx: &mut Context<'_>,
    mut out: Merge,
) -> Poll<Option<Result<Frame<Bytes>, MeterError>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: OnEnd,
{
    loop {
        if this.inner.is_end_stream() {
            // hyper stops polling a body once it has written the length it announced, so the
            // end must be seen here, not only at `None`.
            *this.done = true;
            out.push(this.tap.finish());
            end(this.on_end, BodyEnd::Complete, this.tap);
            break;
        }
        if out.len() >= MERGE_LIMIT {
            break;
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                    out.push(this.tap.push(data));
                    *this.yielded = 0;
                }
                Err(trailers) => {
                    *this.stashed = Some(Ok(trailers));
                    break;
                }
            },
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                end(this.on_end, BodyEnd::UpstreamError, this.tap);
                *this.stashed = Some(Err(MeterError::Upstream(e.into())));
                break;
            }
            Poll::Ready(None) => {
                *this.done = true;
                out.push(this.tap.finish());
                end(this.on_end, BodyEnd::Complete, this.tap);
                break;
            }
            Poll::Pending if *this.yielded < MAX_YIELDS && !out.is_empty() => {
                *this.yielded += 1;
                *this.held = Some(out);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => break,
        }
    }
    *this.yielded = 0;
    let out = out.into_bytes();
    if out.is_empty() {
        if *this.done || this.stashed.is_some() {
            return Poll::Ready(this.stashed.take());
        }
        // Everything merged so far was held back by the tap: wait for more.
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    Poll::Ready(Some(Ok(Frame::data(out))))
}

impl<B, F> Body for MeteredBody<B, F>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: OnEnd,
{
    type Data = Bytes;
    type Error = MeterError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, MeterError>>> {
        let mut this = self.project();
        if let Some(stashed) = this.stashed.take() {
            return Poll::Ready(Some(stashed));
        }
        if let Some(held) = this.held.take() {
            return merge_more(this, cx, held);
        }
        if *this.done {
            return Poll::Ready(None);
        }

        // Wait for the first bytes to forward.
        let out = loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                    match frame.into_data() {
                        Ok(data) => {
                            let out = Merge {
                                first: this.tap.push(data),
                                more: None,
                            };
                            if this.inner.is_end_stream() || !out.is_empty() {
                                break out;
                            }
                            // Everything was held back (an unfinished event) or dropped (the
                            // injected usage chunk): nothing to send yet.
                        }
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    end(this.on_end, BodyEnd::UpstreamError, this.tap);
                    return Poll::Ready(Some(Err(MeterError::Upstream(e.into()))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    let tail = this.tap.finish();
                    end(this.on_end, BodyEnd::Complete, this.tap);
                    return Poll::Ready((!tail.is_empty()).then(|| Ok(Frame::data(tail))));
                }
                Poll::Pending => {
                    ready!(this.idle.as_mut().poll(cx));
                    *this.done = true;
                    end(this.on_end, BodyEnd::IdleTimeout, this.tap);
                    return Poll::Ready(Some(Err(MeterError::Idle(*this.idle_after))));
                }
            }
        };

        *this.yielded = 0;
        merge_more(this, cx, out)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.stashed.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_hint && !self.done {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use http::{HeaderMap, HeaderValue, StatusCode};
    use http_body_util::BodyExt;

    use super::*;
    use crate::provider::{Endpoint, ProviderKind, RequestInfo, Usage};

    /// One step of a scripted upstream body.
    enum Step {
        Data(&'static str),
        /// One `Pending`: the next frame is there after one pass of the scheduler.
        Pending,
        /// The upstream really is waiting for its next chunk: more `Pending`s than the body
        /// yields for.
        Wait,
        Fail,
    }

    /// An upstream body that plays a script; `Pending` wakes itself so the next poll goes on.
    struct Scripted(VecDeque<Step>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(d)) => {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(d.as_bytes())))))
                }
                Some(Step::Fail) => Poll::Ready(Some(Err(std::io::Error::other("reset")))),
                Some(Step::Pending) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Wait) => {
                    for _ in 0..MAX_YIELDS {
                        self.0.push_front(Step::Pending);
                    }
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        }
    }

    const E1: &str = "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    const E2: &str = "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n";
    const USAGE: &str = "data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    type Ends = Arc<Mutex<Vec<(BodyEnd, TapReport)>>>;

    fn metered(script: Vec<Step>, idle: Duration) -> (MeteredBody<Scripted, impl OnEnd>, Ends) {
        let info = RequestInfo {
            endpoint: Endpoint::ChatCompletions,
            model: Some("gpt-4o-mini".into()),
            stream: true,
            max_output_tokens: None,
            prompt_tokens_estimate: 5,
            media_parts: 0,
            usage_injected: false,
            sse: true,
            model_ambiguous: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        let tap = ResponseTap::new(ProviderKind::Openai, &info, StatusCode::OK, &headers);
        let ends: Ends = Arc::default();
        let sink = Arc::clone(&ends);
        let body = MeteredBody::new(
            Scripted(script.into()),
            tap,
            idle,
            false,
            move |how, report| {
                sink.lock().unwrap().push((how, report));
            },
        );
        (body, ends)
    }

    async fn frames<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        loop {
            match body.frame().await {
                None => return (out, false),
                Some(Err(_)) => return (out, true),
                Some(Ok(f)) => {
                    out.push(String::from_utf8(f.into_data().unwrap().to_vec()).unwrap())
                }
            }
        }
    }

    #[tokio::test]
    async fn frames_ready_together_reach_the_client_as_one_write_and_the_end_is_reported_once() {
        let (body, ends) = metered(
            vec![
                Step::Data(E1),
                Step::Data(E2),
                Step::Data(USAGE),
                Step::Data(DONE),
            ],
            Duration::from_secs(5),
        );
        let mut body = Box::pin(body);
        let (got, failed) = frames(&mut body).await;
        assert!(!failed);
        assert_eq!(
            got,
            [format!("{E1}{E2}{USAGE}{DONE}")],
            "ready frames are merged"
        );
        drop(body);
        let ends = ends.lock().unwrap();
        assert_eq!(ends.len(), 1, "exactly one end, not a second one on drop");
        assert_eq!(ends[0].0, BodyEnd::Complete);
        assert_eq!(
            ends[0].1.usage,
            Some(Usage {
                input_tokens: 5,
                cached_input_tokens: 0,
                output_tokens: 2,
                reasoning_tokens: 0
            })
        );
    }

    #[tokio::test]
    async fn a_frame_is_forwarded_before_the_next_one_arrives() {
        // The yields bring nothing: the upstream is really waiting for its next chunk.
        let (body, ends) = metered(
            vec![
                Step::Data(E1),
                Step::Wait,
                Step::Data(E2),
                Step::Wait,
                Step::Data(DONE),
            ],
            Duration::from_secs(5),
        );
        let mut body = Box::pin(body);
        let (got, failed) = frames(&mut body).await;
        assert!(!failed);
        assert_eq!(got, [E1, E2, DONE], "nothing waits for the next chunk");
        assert_eq!(ends.lock().unwrap()[0].0, BodyEnd::Complete);
    }

    #[tokio::test]
    async fn frames_the_upstream_connection_decodes_after_one_yield_are_merged() {
        // One `Pending` between frames: what hyper's body channel does while the upstream
        // connection's task decodes bytes it has already read.
        let (body, _) = metered(
            vec![
                Step::Data(E1),
                Step::Pending,
                Step::Data(E2),
                Step::Pending,
                Step::Data(DONE),
            ],
            Duration::from_secs(5),
        );
        let mut body = Box::pin(body);
        let (got, failed) = frames(&mut body).await;
        assert!(!failed);
        assert_eq!(got, [format!("{E1}{E2}{DONE}")]);
    }

    #[tokio::test]
    async fn an_upstream_failure_delivers_what_came_then_fails_the_client() {
        let (body, ends) = metered(
            vec![Step::Data(E1), Step::Data(E2), Step::Fail],
            Duration::from_secs(5),
        );
        let mut body = Box::pin(body);
        let (got, failed) = frames(&mut body).await;
        assert_eq!(got, [format!("{E1}{E2}")]);
        assert!(
            failed,
            "the client's stream ends in an error, never cleanly"
        );
        let ends = ends.lock().unwrap();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].0, BodyEnd::UpstreamError);
        assert!(
            ends[0].1.output_chars >= 8,
            "the relayed text is counted for the estimate"
        );
    }

    #[tokio::test]
    async fn a_client_that_goes_away_is_reported_on_drop() {
        let (body, ends) = metered(
            vec![Step::Data(E1), Step::Wait, Step::Data(E2)],
            Duration::from_secs(5),
        );
        let mut body = Box::pin(body);
        assert!(body.frame().await.is_some());
        assert!(ends.lock().unwrap().is_empty());
        drop(body);
        let ends = ends.lock().unwrap();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].0, BodyEnd::ClientGone);
    }

    /// An upstream body that sends one frame and then never again.
    struct Stalls(bool);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(E1.as_bytes())))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_idle_timeout_fails_the_client() {
        let info = RequestInfo {
            endpoint: Endpoint::ChatCompletions,
            model: None,
            stream: true,
            max_output_tokens: None,
            prompt_tokens_estimate: 1,
            media_parts: 0,
            usage_injected: false,
            sse: true,
            model_ambiguous: false,
        };
        let tap = ResponseTap::new(
            ProviderKind::Openai,
            &info,
            StatusCode::OK,
            &HeaderMap::new(),
        );
        let ends: Ends = Arc::default();
        let sink = Arc::clone(&ends);
        let mut body = Box::pin(MeteredBody::new(
            Stalls(false),
            tap,
            Duration::from_secs(30),
            false,
            move |how, report| {
                sink.lock().unwrap().push((how, report));
            },
        ));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(
            body.frame().await.unwrap().is_err(),
            "the idle timeout ends the stream with an error"
        );
        assert_eq!(ends.lock().unwrap()[0].0, BodyEnd::IdleTimeout);
    }
}
