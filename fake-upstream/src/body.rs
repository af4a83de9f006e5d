//! Response bodies. Every answer is rendered in full before its head goes out (one buffer per
//! response); a stream is that buffer cut into pieces, sent as zero-copy slices with the chunk
//! delay between them, or as a single frame when there is no delay.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A response body: a whole buffer, or a paced stream of pieces of one.
pub enum FakeBody {
    /// Sent with `content-length`.
    Full(Option<Bytes>),
    /// The same, without a length (HTTP/1.1 chunked transfer encoding).
    Unsized(Option<Bytes>),
    Paced(Box<Paced>),
}

impl FakeBody {
    pub fn full(bytes: impl Into<Bytes>) -> FakeBody {
        FakeBody::Full(Some(bytes.into()))
    }

    /// A whole body sent without a length.
    pub fn into_unsized(self) -> FakeBody {
        match self {
            FakeBody::Full(b) => FakeBody::Unsized(b),
            other => other,
        }
    }
}

/// A rendered stream being written piece by piece.
pub struct Paced {
    data: Bytes,
    /// End offset of each piece; the last is `data.len()`.
    ends: Vec<usize>,
    /// Index of the next piece to send.
    next: usize,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Fail the body (abort the connection) once this many pieces are out.
    cut_after: Option<usize>,
}

/// Builds a stream: write into `buf`, call `end_piece` after each piece.
pub struct Pieces {
    pub buf: String,
    ends: Vec<usize>,
}

impl Pieces {
    pub fn with_capacity(bytes: usize, pieces: usize) -> Pieces {
        Pieces {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(pieces + 1),
        }
    }

    /// Close the current piece; the delay comes before the next one.
    pub fn end_piece(&mut self) {
        if self.ends.last() != Some(&self.buf.len()) {
            self.ends.push(self.buf.len());
        }
    }

    /// A paced body. `cut_after`: abort the stream after that many pieces.
    pub fn into_body(mut self, delay: Duration, cut_after: Option<u64>) -> FakeBody {
        self.end_piece();
        FakeBody::Paced(Box::new(Paced {
            data: Bytes::from(self.buf),
            ends: self.ends,
            next: 0,
            delay,
            sleep: None,
            armed: false,
            cut_after: cut_after.map(|n| n as usize),
        }))
    }
}

impl Paced {
    fn start_of(&self, piece: usize) -> usize {
        if piece == 0 { 0 } else { self.ends[piece - 1] }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(cut) = self.cut_after
            && self.next >= cut
        {
            self.cut_after = None;
            self.next = self.ends.len();
            return Poll::Ready(Some(Err(io::Error::other(
                "fake-upstream: stream cut on purpose (cut_after)",
            ))));
        }
        if self.next >= self.ends.len() {
            return Poll::Ready(None);
        }
        let limit = self.cut_after.unwrap_or(usize::MAX).min(self.ends.len());
        let last = if self.delay.is_zero() {
            // No pacing: everything up to the end (or the cut) in one frame.
            limit - 1
        } else {
            if self.next > 0 {
                if !self.armed {
                    let deadline = Instant::now() + self.delay;
                    match &mut self.sleep {
                        Some(s) => s.as_mut().reset(deadline),
                        None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    self.armed = true;
                }
                if let Some(s) = &mut self.sleep
                    && s.as_mut().poll(cx).is_pending()
                {
                    return Poll::Pending;
                }
                self.armed = false;
            }
            self.next
        };
        let slice = self.data.slice(self.start_of(self.next)..self.ends[last]);
        self.next = last + 1;
        Poll::Ready(Some(Ok(Frame::data(slice))))
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            FakeBody::Full(b) | FakeBody::Unsized(b) => {
                Poll::Ready(b.take().map(|b| Ok(Frame::data(b))))
            }
            FakeBody::Paced(p) => p.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FakeBody::Full(b) | FakeBody::Unsized(b) => b.is_none(),
            FakeBody::Paced(p) => p.next >= p.ends.len() && p.cut_after.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            FakeBody::Full(None) => SizeHint::with_exact(0),
            FakeBody::Unsized(_) | FakeBody::Paced(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn three() -> Pieces {
        let mut p = Pieces::with_capacity(16, 3);
        p.buf.push('a');
        p.end_piece();
        p.buf.push_str("bb");
        p.end_piece();
        p.buf.push_str("ccc");
        p
    }

    async fn frames(mut body: FakeBody) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        loop {
            match body.frame().await {
                None => return (out, false),
                Some(Ok(f)) => out
                    .push(String::from_utf8(f.into_data().expect("data").to_vec()).expect("utf8")),
                Some(Err(_)) => return (out, true),
            }
        }
    }

    #[tokio::test]
    async fn without_delay_one_frame() {
        let (f, err) = frames(three().into_body(Duration::ZERO, None)).await;
        assert_eq!(f, ["abbccc"]);
        assert!(!err);
    }

    #[tokio::test]
    async fn with_delay_one_frame_per_piece() {
        let (f, err) = frames(three().into_body(Duration::from_millis(10), None)).await;
        assert_eq!(f, ["a", "bb", "ccc"]);
        assert!(!err);
    }

    #[tokio::test]
    async fn cut_fails_after_n_pieces() {
        let (f, err) = frames(three().into_body(Duration::from_millis(10), Some(2))).await;
        assert_eq!(f, ["a", "bb"]);
        assert!(err);
        let (f, err) = frames(three().into_body(Duration::ZERO, Some(1))).await;
        assert_eq!(f, ["a"]);
        assert!(err);
        let (f, err) = frames(three().into_body(Duration::ZERO, Some(0))).await;
        assert!(f.is_empty());
        assert!(err);
    }
}
