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

use bytes::Bytes;
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
    pub fn new(inner: B, tap: ResponseTap, idle_after: Duration, exact_hint: bool, on_end: F) -> Self {
        MeteredBody {
            inner,
            tap,
            idle: tokio::time::sleep(idle_after),
            idle_after,
            exact_hint,
            on_end: Some(on_end),
            done: false,
        }
    }
}

fn end<F: OnEnd>(on_end: &mut Option<F>, how: BodyEnd, tap: &ResponseTap) {
    if let Some(f) = on_end.take() {
        f.on_end(how, tap.report());
    }
}

fn concat(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    let mut v = bytes::BytesMut::with_capacity(a.len() + b.len());
    v.extend_from_slice(&a);
    v.extend_from_slice(&b);
    v.freeze()
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
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle
                        .as_mut()
                        .reset(Instant::now() + *this.idle_after);
                    match frame.into_data() {
                        Ok(data) => {
                            let mut out = this.tap.push(data);
                            if this.inner.is_end_stream() {
                                // hyper stops polling a body once it has written the length it
                                // announced, so the end must be seen here, not at `None`.
                                *this.done = true;
                                let tail = this.tap.finish();
                                end(this.on_end, BodyEnd::Complete, this.tap);
                                if !tail.is_empty() {
                                    out = concat(out, tail);
                                }
                                if out.is_empty() {
                                    return Poll::Ready(None);
                                }
                            } else if out.is_empty() {
                                // Everything was held back (an unfinished event) or dropped
                                // (the injected usage chunk): nothing to send yet.
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
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
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                Poll::Pending => {
                    ready!(this.idle.as_mut().poll(cx));
                    *this.done = true;
                    end(this.on_end, BodyEnd::IdleTimeout, this.tap);
                    return Poll::Ready(Some(Err(MeterError::Idle(*this.idle_after))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact_hint && !self.done {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}
