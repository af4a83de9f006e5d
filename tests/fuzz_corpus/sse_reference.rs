//! The SSE differential check: Tollgate's [`SseParser`] against `eventsource-stream`, an
//! independent parser of the WHATWG event-stream format (the one `reqwest-eventsource` and
//! `async-openai` read OpenAI's streams with). Shared by `tests/fuzz_corpus.rs` and the
//! `sse_differential` fuzz target.
//!
//! Both must give the same events (type and data) on the same bytes, cut into chunks anywhere,
//! within the part of the format both implement. The divergences are intentional and kept out
//! of the comparison:
//! - **UTF-8.** `eventsource-stream` decodes the stream as UTF-8 and fails on anything else;
//!   Tollgate works on bytes (it only frames, the data is JSON read further up). Inputs are
//!   made valid UTF-8 (invalid sequences replaced) before the comparison.
//! - **The end of the stream.** The standard, and `eventsource-stream`, discard an event that
//!   the stream ends before its blank line, and wait for the byte after a final CR to know
//!   whether it is a CRLF; Tollgate dispatches at a CR at once and, at `finish`, dispatches an
//!   open event that has data (some servers omit the last blank line). So the events Tollgate
//!   dispatches while pushing `input + "\n"` are compared with `eventsource-stream`'s on the same
//!   bytes, and Tollgate's after `finish` on `input` with `eventsource-stream`'s on
//!   `input + "\n\n"`.
//! - **A leading BOM.** `eventsource-stream` 0.2.3 panics on a stream that opens with one (it
//!   slices `&string[1..]` inside the three-byte U+FEFF). It is handed the stream without its
//!   BOM, after a blank line (which dispatches nothing), so that it strips no BOM and a second
//!   U+FEFF stays part of the first line, as the standard says; Tollgate gets the stream as it is
//!   and must ignore exactly one BOM.
//! - **The bound.** Tollgate skips an event over `MAX_EVENT_BYTES` (4 MiB); inputs here are far
//!   smaller. `id` and `retry` are not kept by Tollgate and not compared (`eventsource-stream`
//!   keeps them).

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use eventsource_stream::Eventsource;
use futures_core::Stream;
use tollgate::stream::SseParser;

/// The chunks, as a stream that is always ready.
struct Chunks<'a, 'b>(std::slice::Iter<'b, &'a [u8]>);

impl<'a> Stream for Chunks<'a, '_> {
    type Item = Result<&'a [u8], Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.next().copied().map(Ok))
    }
}

type Events = Vec<(String, String)>;

/// (type, data) of every event `eventsource-stream` reads from `chunks`.
fn theirs(chunks: &[&[u8]]) -> Events {
    let mut stream = pin!(Chunks(chunks.iter()).eventsource());
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(event))) => out.push((event.event, event.data)),
            Poll::Ready(Some(Err(e))) => panic!("eventsource-stream refused the input: {e}"),
            Poll::Ready(None) => return out,
            Poll::Pending => panic!("an always-ready stream is pending"),
        }
    }
}

/// (type, data) of every event Tollgate's parser reads from `chunks`, with or without `finish`.
fn ours(chunks: &[&[u8]], finish: bool) -> Events {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut collect = |ev: tollgate::stream::SseEvent<'_>| {
        out.push((
            String::from_utf8(ev.event_type().to_vec()).expect("UTF-8 in, UTF-8 out"),
            String::from_utf8(ev.data.to_vec()).expect("UTF-8 in, UTF-8 out"),
        ));
    };
    for chunk in chunks {
        parser.push(chunk, &mut collect);
    }
    if finish {
        parser.finish(&mut collect);
    }
    out
}

/// `input` whole, cut at up to eight points drawn from `seed`, and (up to 2 KiB) byte by byte.
fn chunkings(input: &[u8], seed: u8) -> Vec<Vec<&[u8]>> {
    let mut out = vec![vec![input]];
    let mut state = u64::from(seed) << 32 | input.len() as u64 | 1;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % (n as u64 + 1)) as usize
    };
    let mut cuts: Vec<usize> = (0..1 + next(7)).map(|_| next(input.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for c in cuts {
        chunks.push(&input[prev..c]);
        prev = c;
    }
    chunks.push(&input[prev..]);
    out.push(chunks);
    if input.len() <= 2048 {
        out.push(input.chunks(1).collect());
    }
    out
}

/// The first byte seeds the split points; the rest, made valid UTF-8, is the stream.
pub fn check(input: &[u8]) {
    let [seed, stream @ ..] = input else {
        return;
    };
    let text = String::from_utf8_lossy(stream).into_owned();
    let unmarked = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (ours_line, theirs_line) = (format!("{text}\n"), format!("\n{unmarked}\n"));
    let theirs_blank = format!("\n{unmarked}\n\n");
    for (what, ours_in, theirs_in, finish) in [
        ("pushing", &ours_line, &theirs_line, false),
        ("finishing", &text, &theirs_blank, true),
    ] {
        let want = theirs(&[theirs_in.as_bytes()]);
        for chunks in chunkings(ours_in.as_bytes(), *seed) {
            let got = ours(&chunks, finish);
            assert_eq!(
                got,
                want,
                "{what} {text:?} in chunks of {:?}",
                lens(&chunks)
            );
        }
        for chunks in chunkings(theirs_in.as_bytes(), seed.wrapping_add(1)) {
            assert_eq!(theirs(&chunks), want, "eventsource-stream itself, {what}");
        }
    }
}

fn lens(chunks: &[&[u8]]) -> Vec<usize> {
    chunks.iter().map(|c| c.len()).collect()
}
