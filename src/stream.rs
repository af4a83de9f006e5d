//! Incremental framing of streamed answers, independent of any provider: Server-Sent Events
//! ([`SseParser`]) and a JSON array written piece by piece ([`JsonArrayFramer`]).
//!
//! Both framers are push-style: the caller hands them bytes exactly as the network delivered
//! them (split at any byte, inside a UTF-8 character or between CR and LF) and gets complete
//! events or elements back through a callback, as borrowed slices. They never look inside an
//! event's data — that is the providers' business (`provider::openai`, `provider::gemini`) —
//! and they never hold more than the one unfinished event: every buffer is bounded by a maximum
//! ([`MAX_EVENT_BYTES`] by default). An event or element larger than that is skipped (counted in
//! `skipped()`), and framing recovers at the next one. Neither allocates per chunk once its
//! buffers have grown to the size of the largest event seen; an event that arrives whole in one
//! chunk is handed out as a slice of that chunk without any copy.

use memchr::{memchr, memchr2};

/// Default bound on one event (SSE) or element (JSON array), in bytes. Larger ones are skipped.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// The UTF-8 byte order mark, which may open a stream and is not part of it.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
/// `bom` state once the start of the stream has been decided.
const BOM_DONE: u8 = u8::MAX;

/// One dispatched Server-Sent Event.
///
/// `start..end` are offsets in the byte stream pushed into the parser (counting from 0 at the
/// first byte ever pushed, a BOM included): `start` is the first byte of the event's first
/// field line, `end` is just past the line end of the blank line that dispatched it (or the end
/// of the stream for an event dispatched by [`SseParser::finish`]). A caller that forwards the
/// stream can drop exactly `start..end` to remove the event. One subtlety: when that blank line
/// ends with a CR that is the last byte of a chunk, the event is dispatched at once and `end`
/// is just past the CR; [`SseParser::pending_lf`] then says that a LF opening the next chunk
/// belongs to the same line end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, empty when the event has none (its type is then `message`).
    pub event: &'a [u8],
    /// The `data:` lines, joined with `\n`, without the final line end.
    pub data: &'a [u8],
    /// Stream offset of the event's first field line.
    pub start: u64,
    /// Stream offset just past the event's terminating blank line.
    pub end: u64,
}

impl SseEvent<'_> {
    /// The event type: the `event:` field, or `message` when there is none.
    pub fn event_type(&self) -> &[u8] {
        if self.event.is_empty() {
            b"message"
        } else {
            self.event
        }
    }
}

/// A push-style parser of the `text/event-stream` format.
///
/// From the WHATWG HTML standard, §9.2.6 "Interpreting an event stream" (quoted where it
/// matters):
///
/// > The stream must then be parsed by reading everything line by line, with a U+000D CARRIAGE
/// > RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character not
/// > preceded by a U+000D CARRIAGE RETURN (CR) character, and a single U+000D CARRIAGE RETURN
/// > (CR) character not followed by a U+000A LINE FEED (LF) character being the ways in which a
/// > line can end.
/// >
/// > One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present.
/// >
/// > If the line is empty (a blank line): dispatch the event.
/// > If the line starts with a U+003A COLON character (:): ignore the line.
/// > If the line contains a U+003A COLON character (:): collect the characters on the line
/// > before the first colon as *field*, and the characters after it as *value*. If *value*
/// > starts with a U+0020 SPACE character, remove it from *value*.
/// > Otherwise, the string is not empty but does not contain a colon: use the whole line as the
/// > field name, and the empty string as the field value.
/// >
/// > If the field name is "event": set the event type buffer to the field value.
/// > If the field name is "data": append the field value to the data buffer, then append a
/// > single U+000A LINE FEED (LF) character to the data buffer.
/// > (`id` and `retry` set the last event ID and the reconnection time; other fields are
/// > ignored.)
/// >
/// > When dispatching: if the data buffer is an empty string, set the data buffer and the event
/// > type buffer to the empty string and return. If the data buffer's last character is a
/// > U+000A LINE FEED (LF) character, then remove the last character from the data buffer.
///
/// The parser works on bytes, so a chunk may end anywhere, even between the CR and the LF of a
/// CRLF pair (the LF at the start of the next chunk is then not taken for a second line end).
/// `id` and `retry` are not needed by Tollgate and are not kept.
///
/// Deliberate deviation: the standard discards an event still open at the end of the stream;
/// [`finish`](SseParser::finish) dispatches it when it has data, because some servers omit the
/// last blank line and a proxy that only *reads* the stream loses nothing by being lenient (a
/// truncated line simply fails to parse as JSON further up).
///
/// ```
/// use tollgate::stream::SseParser;
///
/// let mut parser = SseParser::new();
/// let mut seen = Vec::new();
/// let mut collect = |ev: tollgate::stream::SseEvent<'_>| {
///     seen.push((ev.event.to_vec(), ev.data.to_vec()))
/// };
/// parser.push(b"event: greeting\r\ndata: hel", &mut collect);
/// parser.push(b"lo\r", &mut collect);
/// parser.push(b"\ndata: world\r\n\r\n: keep-alive\n\n", &mut collect);
/// assert_eq!(seen, vec![(b"greeting".to_vec(), b"hello\nworld".to_vec())]);
/// ```
#[derive(Debug)]
pub struct SseParser {
    max: usize,
    /// Stream offset of the next byte to be pushed.
    pos: u64,
    /// Bytes of a BOM matched at the start of the stream, or `BOM_DONE`.
    bom: u8,
    /// The unfinished line (only while not skipping).
    line: Vec<u8>,
    /// An unfinished line with at least one byte exists.
    partial: bool,
    /// Stream offset of the unfinished line.
    line_start: u64,
    /// The previous chunk ended with CR: a LF opening the next one belongs to that line end.
    skip_lf: bool,
    /// The current event's type buffer.
    event: Vec<u8>,
    /// The current event's data buffer, when it is not `data_in_chunk`.
    data: Vec<u8>,
    /// The event's single data line lies in the chunk being pushed (no copy made yet).
    data_in_chunk: Option<(usize, usize)>,
    has_data: bool,
    /// Stream offset of the current event's first field line.
    event_start: Option<u64>,
    /// Dropping an oversize event until the next blank line.
    skipping: bool,
    skipped: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser bounded by [`MAX_EVENT_BYTES`].
    pub fn new() -> SseParser {
        SseParser::with_max_event_bytes(MAX_EVENT_BYTES)
    }

    /// A parser that skips any event (counted from its first field line, line ends and comments
    /// included) longer than `max` bytes.
    pub fn with_max_event_bytes(max: usize) -> SseParser {
        SseParser {
            max,
            pos: 0,
            bom: 0,
            line: Vec::new(),
            partial: false,
            line_start: 0,
            skip_lf: false,
            event: Vec::new(),
            data: Vec::new(),
            data_in_chunk: None,
            has_data: false,
            event_start: None,
            skipping: false,
            skipped: 0,
        }
    }

    /// Parse the next bytes of the stream, calling `emit` for every event they complete.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(SseEvent<'_>)) {
        let base = self.pos;
        let mut off = 0;

        while self.bom != BOM_DONE && off < chunk.len() {
            if chunk[off] == BOM[usize::from(self.bom)] {
                self.bom += 1;
                off += 1;
                if usize::from(self.bom) == BOM.len() {
                    self.bom = BOM_DONE;
                }
            } else {
                // Not a BOM after all: what matched is the start of the first line.
                if self.bom > 0 {
                    self.line.extend_from_slice(&BOM[..usize::from(self.bom)]);
                    self.partial = true;
                    self.line_start = 0;
                }
                self.bom = BOM_DONE;
            }
        }

        if self.skip_lf && off < chunk.len() {
            self.skip_lf = false;
            if chunk[off] == b'\n' {
                off += 1;
                // The line end is CRLF after all: its LF counts towards the open event's size,
                // as it does when the pair arrives in one chunk.
                if let Some(event_start) = self.event_start
                    && !self.skipping
                    && base + off as u64 - event_start > self.max as u64
                {
                    self.start_skipping();
                }
            }
        }

        while off < chunk.len() {
            let Some(i) = memchr2(b'\n', b'\r', &chunk[off..]) else {
                // An unfinished line: keep it for the next chunk.
                if !self.partial {
                    self.partial = true;
                    self.line_start = base + off as u64;
                }
                if !self.skipping {
                    if self.line.is_empty() && chunk[off] == b':' {
                        // A comment: its text is never read, so only its colon is kept (an
                        // endless comment line must not grow the buffer).
                        self.line.push(b':');
                    } else if self.line.first() != Some(&b':') {
                        self.line.extend_from_slice(&chunk[off..]);
                    }
                }
                break;
            };
            let line_end = off + i;
            let mut next = line_end + 1;
            if chunk[line_end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let end = base + next as u64;
            if self.partial {
                // The line began in an earlier chunk: it is never blank.
                self.partial = false;
                if !self.skipping {
                    self.line.extend_from_slice(&chunk[off..line_end]);
                    let line = std::mem::take(&mut self.line);
                    self.process(&line, None, chunk, self.line_start, end, &mut emit);
                    self.line = line;
                }
                self.line.clear();
            } else if self.skipping {
                if line_end == off {
                    self.skipping = false;
                    self.reset_event();
                }
            } else {
                let start = base + off as u64;
                self.process(
                    &chunk[off..line_end],
                    Some(off),
                    chunk,
                    start,
                    end,
                    &mut emit,
                );
            }
            off = next;
        }

        // The chunk goes away: an event still open keeps its own copy of its data.
        if let Some((s, e)) = self.data_in_chunk.take() {
            self.data.clear();
            self.data.extend_from_slice(&chunk[s..e]);
        }
        self.pos = base + chunk.len() as u64;
        if let Some(from) = self.hold_from()
            && self.pos - from > self.max as u64
        {
            self.start_skipping();
        }
    }

    /// The stream ended cleanly: dispatch an event still open if it has data (see the type's
    /// doc for why this is lenient), then reset for a new stream.
    pub fn finish(&mut self, mut emit: impl FnMut(SseEvent<'_>)) {
        if !self.skipping {
            if self.partial {
                let line = std::mem::take(&mut self.line);
                self.process(&line, None, &[], self.line_start, self.pos, &mut emit);
                self.line = line;
            }
            self.dispatch(&[], self.pos, &mut emit);
        }
        let max = self.max;
        let skipped = self.skipped;
        *self = SseParser::with_max_event_bytes(max);
        self.skipped = skipped;
    }

    /// The stream offset from which bytes received so far may still belong to an event that
    /// has not been dispatched yet (`None` when every byte received is settled). A forwarder
    /// that may need to drop an event holds back the bytes from here on.
    pub fn hold_from(&self) -> Option<u64> {
        if self.skipping {
            return None;
        }
        if self.event_start.is_some() {
            return self.event_start;
        }
        if self.partial && self.line.first() != Some(&b':') {
            return Some(self.line_start);
        }
        None
    }

    /// The last chunk ended with a CR whose LF, if it comes, opens the next chunk.
    pub fn pending_lf(&self) -> bool {
        self.skip_lf
    }

    /// Bytes pushed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Events skipped because they were larger than the bound.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// One complete line. `in_chunk` is the line's offset in `chunk` when it lies there (so that
    /// a single data line can be handed out without a copy).
    fn process(
        &mut self,
        line: &[u8],
        in_chunk: Option<usize>,
        chunk: &[u8],
        start: u64,
        end: u64,
        emit: &mut impl FnMut(SseEvent<'_>),
    ) {
        if line.is_empty() {
            self.dispatch(chunk, end, emit);
            return;
        }
        if line[0] == b':' {
            // A comment inside an event counts towards its size like any other line: whether
            // the event is skipped must not depend on where the chunks were cut.
            if let Some(event_start) = self.event_start
                && end - event_start > self.max as u64
            {
                self.start_skipping();
            }
            return;
        }
        let (field, value_at) = match memchr(b':', line) {
            Some(c) if line.get(c + 1) == Some(&b' ') => (&line[..c], c + 2),
            Some(c) => (&line[..c], c + 1),
            None => (line, line.len()),
        };
        let value = &line[value_at..];
        let event_start = *self.event_start.get_or_insert(start);
        match field {
            b"data" => self.add_data(value, in_chunk.map(|o| o + value_at), chunk),
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {}
        }
        if end - event_start > self.max as u64 {
            self.start_skipping();
        }
    }

    fn add_data(&mut self, value: &[u8], in_chunk: Option<usize>, chunk: &[u8]) {
        if !self.has_data {
            self.has_data = true;
            match in_chunk {
                Some(at) => self.data_in_chunk = Some((at, at + value.len())),
                None => self.data.extend_from_slice(value),
            }
            return;
        }
        if let Some((s, e)) = self.data_in_chunk.take() {
            self.data.extend_from_slice(&chunk[s..e]);
        }
        self.data.push(b'\n');
        self.data.extend_from_slice(value);
    }

    fn dispatch(&mut self, chunk: &[u8], end: u64, emit: &mut impl FnMut(SseEvent<'_>)) {
        if self.has_data {
            let data = match self.data_in_chunk {
                Some((s, e)) => &chunk[s..e],
                None => &self.data[..],
            };
            emit(SseEvent {
                event: &self.event,
                data,
                start: self.event_start.unwrap_or(end),
                end,
            });
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.event.clear();
        self.data.clear();
        self.data_in_chunk = None;
        self.has_data = false;
        self.event_start = None;
    }

    fn start_skipping(&mut self) {
        self.skipping = true;
        self.skipped += 1;
        self.reset_event();
        self.line.clear();
        // Release what the oversize event made the buffers grow to.
        self.line.shrink_to(64 * 1024);
        self.data.shrink_to(64 * 1024);
    }
}

/// What a [`JsonArrayFramer`] expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// After `[` or `,`: an element (or `]`).
    Element,
    /// Inside an element.
    InElement,
    /// After an element: `,` or `]`.
    Separator,
    /// After the closing `]`.
    Closed,
    /// The input is not a JSON array: nothing more is framed.
    Invalid,
}

/// The kind of the element being framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElementKind {
    /// An object or array: ends when its brackets balance.
    Container { open: u8, close: u8 },
    /// A string: ends at its closing quote.
    String,
    /// A number or literal: ends at a separator or whitespace.
    Scalar,
}

/// Frames the elements of one top-level JSON array that arrives piece by piece — the shape of
/// Gemini's `streamGenerateContent` without `alt=sse`:
///
/// ```text
/// [{
///   "candidates": [ … ]
/// }
/// ,
/// {
///   "candidates": [ … ],
///   "usageMetadata": { … }
/// }
/// ]
/// ```
///
/// Whitespace (including CR and LF) may appear anywhere between tokens (RFC 8259 §2). Each
/// element is handed out as soon as its last byte arrives; the framer tracks strings and their
/// escapes (`\"`, `\\`) so that brackets inside strings do not count. For an object element only
/// braces are counted (brackets nest properly inside it): the framer jumps from brace to brace
/// with `memchr2` and tells a brace inside a string by the parity of the quotes before it, so
/// pretty-printed Gemini chunks full of short strings are framed at several GiB/s.
/// The framer does not validate the elements: that is left to whoever parses them.
///
/// ```
/// use tollgate::stream::JsonArrayFramer;
///
/// let mut framer = JsonArrayFramer::new();
/// let mut seen = Vec::new();
/// framer.push(b"[{\"a\": \"}\"}\r\n,\r\n{\"b\"", |e| seen.push(e.to_vec()));
/// framer.push(b": [1]}\r\n]", |e| seen.push(e.to_vec()));
/// assert_eq!(seen, vec![b"{\"a\": \"}\"}".to_vec(), b"{\"b\": [1]}".to_vec()]);
/// assert!(framer.closed());
/// ```
#[derive(Debug)]
pub struct JsonArrayFramer {
    max: usize,
    state: ArrayState,
    bom: u8,
    kind: ElementKind,
    depth: u32,
    in_string: bool,
    /// A string element: the previous chunk ended with a backslash.
    escape: bool,
    /// A container element: the previous chunk ended with an odd run of backslashes.
    odd_backslashes: bool,
    /// The element so far, when it spans chunks (only while not skipping).
    buf: Vec<u8>,
    /// Length of the element so far.
    len: usize,
    skipping: bool,
    skipped: u64,
}

impl Default for JsonArrayFramer {
    fn default() -> Self {
        JsonArrayFramer::new()
    }
}

impl JsonArrayFramer {
    /// A framer bounded by [`MAX_EVENT_BYTES`].
    pub fn new() -> JsonArrayFramer {
        JsonArrayFramer::with_max_element_bytes(MAX_EVENT_BYTES)
    }

    /// A framer that skips any element longer than `max` bytes.
    pub fn with_max_element_bytes(max: usize) -> JsonArrayFramer {
        JsonArrayFramer {
            max,
            state: ArrayState::Start,
            bom: 0,
            kind: ElementKind::Scalar,
            depth: 0,
            in_string: false,
            escape: false,
            odd_backslashes: false,
            buf: Vec::new(),
            len: 0,
            skipping: false,
            skipped: 0,
        }
    }

    /// Frame the next bytes, calling `emit` with every element they complete.
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut i = 0;
        while self.bom != BOM_DONE && i < chunk.len() {
            if chunk[i] == BOM[usize::from(self.bom)] {
                self.bom += 1;
                i += 1;
                if usize::from(self.bom) == BOM.len() {
                    self.bom = BOM_DONE;
                }
            } else {
                if self.bom > 0 {
                    self.state = ArrayState::Invalid;
                }
                self.bom = BOM_DONE;
            }
        }

        while i < chunk.len() {
            match self.state {
                ArrayState::Start => match chunk[i] {
                    b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                    b'[' => {
                        self.state = ArrayState::Element;
                        i += 1;
                    }
                    _ => self.state = ArrayState::Invalid,
                },
                ArrayState::Element => match chunk[i] {
                    b' ' | b'\t' | b'\r' | b'\n' | b',' => i += 1,
                    b']' => {
                        self.state = ArrayState::Closed;
                        i += 1;
                    }
                    b => {
                        self.begin_element(b);
                        i = self.scan_element(chunk, i, &mut emit);
                    }
                },
                ArrayState::InElement => i = self.scan_element(chunk, i, &mut emit),
                ArrayState::Separator => match chunk[i] {
                    b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                    b',' => {
                        self.state = ArrayState::Element;
                        i += 1;
                    }
                    b']' => {
                        self.state = ArrayState::Closed;
                        i += 1;
                    }
                    _ => self.state = ArrayState::Invalid,
                },
                ArrayState::Closed | ArrayState::Invalid => break,
            }
        }
    }

    /// The stream ended; returns whether the closing `]` was seen.
    pub fn finish(&mut self) -> bool {
        self.closed()
    }

    /// Whether the closing `]` of the array was seen.
    pub fn closed(&self) -> bool {
        self.state == ArrayState::Closed
    }

    /// Whether the input turned out not to be a JSON array.
    pub fn invalid(&self) -> bool {
        self.state == ArrayState::Invalid
    }

    /// Elements skipped because they were larger than the bound.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn begin_element(&mut self, first: u8) {
        self.kind = match first {
            b'{' => ElementKind::Container {
                open: b'{',
                close: b'}',
            },
            b'[' => ElementKind::Container {
                open: b'[',
                close: b']',
            },
            b'"' => ElementKind::String,
            _ => ElementKind::Scalar,
        };
        self.state = ArrayState::InElement;
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
        self.odd_backslashes = false;
        self.len = 0;
        self.buf.clear();
        self.skipping = false;
    }

    /// Scan the element from `start` (its first byte, or the start of a later chunk) and return
    /// where scanning stopped: past the element's end, or the end of the chunk.
    fn scan_element(&mut self, chunk: &[u8], start: usize, emit: &mut impl FnMut(&[u8])) -> usize {
        let end = match self.kind {
            ElementKind::Container { open, close } => {
                self.scan_container(chunk, start, open, close)
            }
            ElementKind::String => self.scan_string(chunk, start),
            ElementKind::Scalar => chunk[start..]
                .iter()
                .position(|b| matches!(b, b',' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map(|j| start + j),
        };
        let stop = end.unwrap_or(chunk.len());
        let piece = &chunk[start..stop];
        self.len += piece.len();
        if !self.skipping && self.len > self.max {
            self.skipping = true;
            self.skipped += 1;
            self.buf.clear();
            self.buf.shrink_to(64 * 1024);
        }
        match end {
            Some(e) => {
                if !self.skipping {
                    if self.buf.is_empty() {
                        emit(piece);
                    } else {
                        self.buf.extend_from_slice(piece);
                        emit(&self.buf);
                    }
                }
                self.buf.clear();
                self.skipping = false;
                self.state = ArrayState::Separator;
                e
            }
            None => {
                if !self.skipping {
                    self.buf.extend_from_slice(piece);
                }
                chunk.len()
            }
        }
    }

    /// An object or array: jump from bracket to bracket with `memchr2`, and decide whether each
    /// one is inside a string from the parity of the unescaped quotes before it. Spans without
    /// a backslash (nearly all of them) count their quotes with a vectorised byte count.
    fn scan_container(&mut self, chunk: &[u8], start: usize, open: u8, close: u8) -> Option<usize> {
        let mut i = start;
        loop {
            let bracket = memchr2(open, close, &chunk[i..]).map(|j| i + j);
            let stop = bracket.unwrap_or(chunk.len());
            self.toggle_quotes(chunk, i, stop);
            let Some(p) = bracket else {
                let run = trailing_backslashes(chunk);
                self.odd_backslashes = if run == chunk.len() {
                    (run % 2 == 1) != self.odd_backslashes
                } else {
                    run % 2 == 1
                };
                return None;
            };
            if !self.in_string {
                if chunk[p] == open {
                    self.depth += 1;
                } else {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(p + 1);
                    }
                }
            }
            i = p + 1;
        }
    }

    /// Flip `in_string` once per unescaped quote in `chunk[from..to]`.
    fn toggle_quotes(&mut self, chunk: &[u8], from: usize, to: usize) {
        let span = &chunk[from..to];
        let carried = from == 0 && self.odd_backslashes;
        // One vectorisable pass: the quotes' parity, and whether any backslash needs care.
        let (quotes, backslashes) = span.iter().fold((0u32, 0u32), |(q, b), &c| {
            (q + u32::from(c == b'"'), b + u32::from(c == b'\\'))
        });
        if !carried && backslashes == 0 {
            if quotes % 2 == 1 {
                self.in_string = !self.in_string;
            }
            return;
        }
        for q in memchr::memchr_iter(b'"', span) {
            let at = from + q;
            let run = trailing_backslashes(&chunk[..at]);
            // A run reaching the chunk's start continues the previous chunk's.
            let odd = if run == at {
                (run % 2 == 1) != self.odd_backslashes
            } else {
                run % 2 == 1
            };
            if !odd {
                self.in_string = !self.in_string;
            }
        }
    }

    /// A string element: ends at its closing quote.
    fn scan_string(&mut self, chunk: &[u8], start: usize) -> Option<usize> {
        let mut i = start;
        if !self.in_string {
            // The opening quote.
            self.in_string = true;
            i += 1;
        }
        loop {
            if self.escape {
                if i >= chunk.len() {
                    return None;
                }
                self.escape = false;
                i += 1;
                continue;
            }
            let j = memchr2(b'"', b'\\', chunk.get(i..)?)?;
            if chunk[i + j] == b'\\' {
                self.escape = true;
                i += j + 1;
            } else {
                self.in_string = false;
                return Some(i + j + 1);
            }
        }
    }
}

/// Length of the run of backslashes that ends `bytes`.
fn trailing_backslashes(bytes: &[u8]) -> usize {
    bytes.iter().rev().take_while(|&&b| b == b'\\').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event, data, start, end) of every event, pushing `chunks` then finishing.
    fn events_of(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<(String, String, u64, u64)> {
        let mut out = Vec::new();
        let mut collect = |ev: SseEvent<'_>| {
            out.push((
                String::from_utf8_lossy(ev.event).into_owned(),
                String::from_utf8_lossy(ev.data).into_owned(),
                ev.start,
                ev.end,
            ))
        };
        for chunk in chunks {
            parser.push(chunk, &mut collect);
        }
        parser.finish(&mut collect);
        out
    }

    fn sse(chunks: &[&[u8]]) -> Vec<(String, String)> {
        events_of(&mut SseParser::new(), chunks)
            .into_iter()
            .map(|(e, d, _, _)| (e, d))
            .collect()
    }

    fn ev(event: &str, data: &str) -> (String, String) {
        (event.to_owned(), data.to_owned())
    }

    /// The input split in two at every byte, and in chunks of 1 and 3, gives what it gives
    /// whole. (An event's `end` is compared only where no chunk ends between a CR and its LF:
    /// there it is just past the CR by design.)
    fn same_at_every_split(input: &[u8]) -> Vec<(String, String, u64, u64)> {
        let whole = events_of(&mut SseParser::new(), &[input]);
        let same = |got: Vec<(String, String, u64, u64)>, cuts: &[usize], what: &str| {
            assert_eq!(got.len(), whole.len(), "{what}");
            for (g, w) in got.iter().zip(&whole) {
                assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2), "{what}");
                let cut_in_crlf = cuts.iter().any(|&c| {
                    c as u64 + 1 == w.3
                        && input.get(c) == Some(&b'\n')
                        && c > 0
                        && input[c - 1] == b'\r'
                });
                if cut_in_crlf {
                    assert_eq!(g.3 + 1, w.3, "{what}: end just past the CR");
                } else {
                    assert_eq!(g.3, w.3, "{what}");
                }
            }
        };
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            same(
                events_of(&mut SseParser::new(), &[a, b]),
                &[i],
                &format!("split at {i}"),
            );
        }
        for n in [1, 3] {
            let chunks: Vec<&[u8]> = input.chunks(n).collect();
            let cuts: Vec<usize> = (0..input.len()).step_by(n).collect();
            same(
                events_of(&mut SseParser::new(), &chunks),
                &cuts,
                &format!("chunks of {n}"),
            );
        }
        whole
    }

    #[test]
    fn sse_multi_line_data_is_joined_with_lf() {
        assert_eq!(
            sse(&[b"data: a\ndata: b\ndata:c\n\n"]),
            vec![ev("", "a\nb\nc")]
        );
    }

    #[test]
    fn sse_event_field_names_the_event() {
        let got = sse(&[b"event: response.completed\ndata: {}\n\ndata: x\n\n"]);
        assert_eq!(got, vec![ev("response.completed", "{}"), ev("", "x")]);
    }

    #[test]
    fn sse_event_type_defaults_to_message() {
        let mut parser = SseParser::new();
        let mut types = Vec::new();
        parser.push(b"data: x\n\nevent: ping\ndata: y\n\n", |e| {
            types.push(e.event_type().to_vec())
        });
        assert_eq!(types, vec![b"message".to_vec(), b"ping".to_vec()]);
    }

    #[test]
    fn sse_only_one_space_after_the_colon_is_removed() {
        assert_eq!(sse(&[b"data:  two\n\n"]), vec![ev("", " two")]);
        assert_eq!(sse(&[b"data:none\n\n"]), vec![ev("", "none")]);
    }

    #[test]
    fn sse_comments_and_keep_alives_are_ignored() {
        let got = sse(&[b": hello\n\n: ping\n\n\n\ndata: x\n: inside\ndata: y\n\n:\n\n"]);
        assert_eq!(got, vec![ev("", "x\ny")]);
    }

    #[test]
    fn sse_field_without_colon_is_a_field_with_empty_value() {
        assert_eq!(sse(&[b"data\ndata\n\n"]), vec![ev("", "\n")]);
        assert_eq!(sse(&[b"data:\n\n"]), vec![ev("", "")]);
    }

    #[test]
    fn sse_event_without_data_is_not_dispatched() {
        assert_eq!(
            sse(&[b"event: x\n\nid: 3\nretry: 10\n\ndata: y\n\n"]),
            vec![ev("", "y")]
        );
    }

    #[test]
    fn sse_unknown_fields_are_ignored() {
        assert_eq!(sse(&[b"foo: bar\ndata: y\nid: 1\n\n"]), vec![ev("", "y")]);
    }

    #[test]
    fn sse_lf_crlf_and_cr_line_ends_all_work_at_every_split() {
        for input in [
            &b"data: a\n\nevent: e\ndata: b\ndata: c\n\n"[..],
            b"data: a\r\n\r\nevent: e\r\ndata: b\r\ndata: c\r\n\r\n",
            b"data: a\r\revent: e\rdata: b\rdata: c\r\r",
            b"data: a\r\n\nevent: e\rdata: b\ndata: c\r\n\r",
        ] {
            let got: Vec<_> = same_at_every_split(input)
                .into_iter()
                .map(|(e, d, _, _)| (e, d))
                .collect();
            assert_eq!(
                got,
                vec![ev("", "a"), ev("e", "b\nc")],
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn sse_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next_is_one_line_end() {
        let got = sse(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(got, vec![ev("", "a"), ev("", "b")]);
    }

    #[test]
    fn sse_split_inside_a_utf8_character_is_harmless() {
        let input = "data: héllo 👋 wörld\n\n".as_bytes();
        let got = same_at_every_split(input);
        assert_eq!(got[0].1, "héllo 👋 wörld");
    }

    #[test]
    fn sse_leading_bom_is_ignored_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: x\n\n";
        let got = same_at_every_split(input);
        assert_eq!(got, vec![(String::new(), "x".to_owned(), 3, 12)]);
        // Only at the very start: a later BOM is data.
        assert_eq!(sse(&[b"data: \xEF\xBB\xBFx\n\n"])[0].1, "\u{feff}x");
    }

    #[test]
    fn sse_offsets_cover_the_event_from_its_first_field_line_to_its_blank_line() {
        let input = b": c\n\nevent: e\ndata: x\n\n\ndata: y\r\n\r\n";
        let got = same_at_every_split(input);
        assert_eq!(got[0].2..got[0].3, 5..23);
        assert_eq!(&input[5..23], b"event: e\ndata: x\n\n");
        assert_eq!(
            &input[got[1].2 as usize..got[1].3 as usize],
            b"data: y\r\n\r\n"
        );
    }

    #[test]
    fn sse_several_events_in_one_chunk() {
        let input: Vec<u8> = (0..100)
            .flat_map(|i| format!("data: {i}\n\n").into_bytes())
            .collect();
        let got = sse(&[&input]);
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], ev("", "99"));
    }

    #[test]
    fn sse_an_event_whole_in_one_chunk_is_handed_out_without_a_copy() {
        let chunk = b"data: {\"a\":1}\n\n";
        let range = chunk.as_ptr_range();
        let mut inside = false;
        SseParser::new().push(chunk, |ev| inside = range.contains(&ev.data.as_ptr()));
        assert!(inside, "the data slice points into the pushed chunk");
    }

    #[test]
    fn sse_finish_dispatches_an_event_without_its_blank_line() {
        assert_eq!(
            sse(&[b"data: a\n\ndata: b\n"]),
            vec![ev("", "a"), ev("", "b")]
        );
        assert_eq!(
            sse(&[b"data: a\n\ndata: b"]),
            vec![ev("", "a"), ev("", "b")]
        );
        assert_eq!(sse(&[b"data: a\n\n: only a comment"]), vec![ev("", "a")]);
    }

    #[test]
    fn sse_oversize_event_is_skipped_and_parsing_recovers() {
        let mut parser = SseParser::with_max_event_bytes(32);
        let big = format!("data: {}\n\n", "x".repeat(100));
        let input = format!("data: small\n\n{big}data: after\n\n");
        let got = events_of(&mut parser, &[input.as_bytes()]);
        let data: Vec<_> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(data, vec!["small", "after"]);
        assert_eq!(parser.skipped(), 1);
    }

    #[test]
    fn sse_oversize_unfinished_line_is_skipped_across_chunks() {
        let mut parser = SseParser::with_max_event_bytes(64);
        let mut got = Vec::new();
        parser.push(b"data: ", |e| got.push(e.data.to_vec()));
        for i in 0..100 {
            parser.push(&[b'x'; 50], |e| got.push(e.data.to_vec()));
            assert!(
                parser.line.capacity() <= 64 * 1024 + 256,
                "buffer stays bounded"
            );
            if i > 0 {
                assert_eq!(parser.hold_from(), None, "nothing to hold while skipping");
            }
        }
        parser.push(b"\n\ndata: ok\n\n", |e| got.push(e.data.to_vec()));
        assert_eq!(got, vec![b"ok".to_vec()]);
        assert_eq!(parser.skipped(), 1);
    }

    #[test]
    fn sse_many_data_lines_past_the_bound_are_skipped() {
        let mut parser = SseParser::with_max_event_bytes(100);
        let mut got = Vec::new();
        for _ in 0..50 {
            parser.push(b"data: 0123456789\n", |e| got.push(e.data.to_vec()));
        }
        parser.push(b"\ndata: next\n\n", |e| got.push(e.data.to_vec()));
        assert_eq!(got, vec![b"next".to_vec()]);
    }

    /// Whether each event of `input` is skipped under a bound must not depend on where the
    /// chunks were cut (the first case was caught by the fuzz checks on a corpus seed).
    #[test]
    fn sse_skipping_an_oversize_event_does_not_depend_on_the_chunking() {
        let cases: [(&[u8], usize); 2] = [
            // A comment line inside an event counts towards its size.
            (b"data: x\n:ccccccccccccccccccccccccc\n\ndata:a\n\n", 16),
            // The LF of a CRLF that opens the next chunk counts as it does in one chunk.
            (b"data:01\r\n\r\ndata:a\r\n\r\n", 8),
        ];
        for (input, max) in cases {
            let whole = events_of(&mut SseParser::with_max_event_bytes(max), &[input]);
            assert_eq!(whole.len(), 1, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(whole[0].1, "a");
            for i in 0..=input.len() {
                let (a, b) = input.split_at(i);
                let mut parser = SseParser::with_max_event_bytes(max);
                let got: Vec<String> = events_of(&mut parser, &[a, b])
                    .into_iter()
                    .map(|e| e.1)
                    .collect();
                assert_eq!(got, vec!["a"], "split at {i}");
                assert_eq!(parser.skipped(), 1, "split at {i}");
            }
        }
    }

    #[test]
    fn sse_an_endless_comment_line_holds_no_memory() {
        let mut parser = SseParser::with_max_event_bytes(64);
        let mut got = Vec::new();
        parser.push(b"data: a\n\n:", |e| got.push(e.data.to_vec()));
        for _ in 0..1000 {
            parser.push(&[b'k'; 1000], |e| got.push(e.data.to_vec()));
            assert!(
                parser.line.capacity() <= 64 * 1024,
                "the comment is not buffered"
            );
            assert_eq!(parser.hold_from(), None, "a comment need not be held");
        }
        parser.push(b"\ndata: b\n\n", |e| got.push(e.data.to_vec()));
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(parser.skipped(), 0);
    }

    #[test]
    fn sse_hold_from_marks_the_unfinished_event() {
        let mut parser = SseParser::new();
        parser.push(b"data: a\n\n", |_| {});
        assert_eq!(parser.hold_from(), None);
        parser.push(b": comment without end", |_| {});
        assert_eq!(
            parser.hold_from(),
            None,
            "a partial comment need not be held"
        );
        parser.push(b"\ndata: b", |_| {});
        assert_eq!(parser.hold_from(), Some(31));
        parser.push(b"\n", |_| {});
        assert_eq!(parser.hold_from(), Some(31));
        parser.push(b"\r", |_| {});
        assert_eq!(parser.hold_from(), None);
        assert!(parser.pending_lf());
    }

    // --- JSON array ---

    fn elements(framer: &mut JsonArrayFramer, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, |e| out.push(String::from_utf8_lossy(e).into_owned()));
        }
        out
    }

    fn array_same_at_every_split(input: &[u8]) -> (Vec<String>, bool) {
        let mut framer = JsonArrayFramer::new();
        let whole = elements(&mut framer, &[input]);
        let closed = framer.finish();
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            let mut framer = JsonArrayFramer::new();
            assert_eq!(elements(&mut framer, &[a, b]), whole, "split at {i}");
            assert_eq!(framer.finish(), closed, "closed at split {i}");
        }
        let mut framer = JsonArrayFramer::new();
        let ones: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(elements(&mut framer, &ones), whole, "chunks of 1");
        (whole, closed)
    }

    #[test]
    fn array_elements_are_framed_with_crlf_between_them() {
        let input = b"[{\n  \"a\": 1\n}\r\n,\r\n{\n  \"b\": [1, {\"c\": 2}]\n}\r\n]";
        let (got, closed) = array_same_at_every_split(input);
        assert_eq!(
            got,
            vec!["{\n  \"a\": 1\n}", "{\n  \"b\": [1, {\"c\": 2}]\n}"]
        );
        assert!(closed);
    }

    #[test]
    fn array_braces_quotes_and_backslashes_inside_strings_do_not_count() {
        let input = br#"[{"t": "} ] { [ \" \\"}, {"u": "\\\""} ,{"v":"\\"}]"#;
        let (got, closed) = array_same_at_every_split(input);
        assert_eq!(
            got,
            vec![
                r#"{"t": "} ] { [ \" \\"}"#,
                r#"{"u": "\\\""}"#,
                r#"{"v":"\\"}"#
            ]
        );
        assert!(closed);
    }

    #[test]
    fn array_of_scalars_strings_and_arrays() {
        let (got, closed) = array_same_at_every_split(b" [1, \"a]\" ,true,[2,[3]],null ] ");
        assert_eq!(got, vec!["1", "\"a]\"", "true", "[2,[3]]", "null"]);
        assert!(closed);
    }

    #[test]
    fn array_empty_and_whitespace_only() {
        let (got, closed) = array_same_at_every_split(b"\r\n[ \r\n ]\r\n");
        assert!(got.is_empty());
        assert!(closed);
    }

    #[test]
    fn array_cut_before_its_end_is_not_closed() {
        let mut framer = JsonArrayFramer::new();
        let got = elements(&mut framer, &[b"[{\"a\": 1}\r\n,\r\n{\"b\""]);
        assert_eq!(got, vec!["{\"a\": 1}"]);
        assert!(!framer.finish());
    }

    #[test]
    fn array_with_leading_bom() {
        let (got, closed) = array_same_at_every_split(b"\xEF\xBB\xBF[{\"a\":1}]");
        assert_eq!(got, vec!["{\"a\":1}"]);
        assert!(closed);
    }

    #[test]
    fn array_not_an_array_frames_nothing() {
        let mut framer = JsonArrayFramer::new();
        assert!(elements(&mut framer, &[b"{\"error\": {}}"]).is_empty());
        assert!(framer.invalid());
        assert!(!framer.finish());
    }

    #[test]
    fn array_oversize_element_is_skipped_and_framing_recovers() {
        let mut framer = JsonArrayFramer::with_max_element_bytes(32);
        let big = format!("{{\"t\": \"{}\"}}", "x".repeat(100));
        let input = format!("[{{\"a\":1}},{big},{{\"b\":2}}]");
        for n in [1, 7, input.len()] {
            let mut framer = JsonArrayFramer::with_max_element_bytes(32);
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(n).collect();
            assert_eq!(
                elements(&mut framer, &chunks),
                vec!["{\"a\":1}", "{\"b\":2}"]
            );
            assert!(framer.finish());
            assert_eq!(framer.skipped(), 1);
            assert!(framer.buf.capacity() <= 64 * 1024);
        }
        assert_eq!(elements(&mut framer, &[b"[{}]"]), vec!["{}"]);
    }

    #[test]
    fn array_element_whole_in_one_chunk_is_handed_out_without_a_copy() {
        let chunk = b"[{\"a\":1}]";
        let range = chunk.as_ptr_range();
        let mut inside = false;
        JsonArrayFramer::new().push(chunk, |e| inside = range.contains(&e.as_ptr()));
        assert!(inside);
    }

    /// A tiny deterministic generator (xorshift), so the test needs no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn array_random_strings_full_of_brackets_quotes_and_backslashes() {
        let alphabet = ['"', '\\', '{', '}', '[', ']', 'a', ' ', '\n', 'é'];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let elements: Vec<serde_json::Value> = (0..1 + rng.below(4))
                .map(|_| {
                    let text: String = (0..rng.below(40))
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect();
                    serde_json::json!({"t": text, "n": [{"x": text.clone()}], "k": rng.below(9)})
                })
                .collect();
            let pretty = round % 2 == 0;
            let input = if pretty {
                let parts: Vec<String> = elements
                    .iter()
                    .map(|e| serde_json::to_string_pretty(e).expect("json"))
                    .collect();
                format!("[{}\r\n]", parts.join("\r\n,\r\n"))
            } else {
                serde_json::to_string(&elements).expect("json")
            };
            let want: Vec<serde_json::Value> = elements;
            for _ in 0..8 {
                let bytes = input.as_bytes();
                let mut cuts: Vec<usize> = (0..3).map(|_| rng.below(bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut prev = 0;
                for c in cuts {
                    chunks.push(&bytes[prev..c]);
                    prev = c;
                }
                chunks.push(&bytes[prev..]);
                let mut framer = JsonArrayFramer::new();
                let got: Vec<serde_json::Value> = elements_of_bytes(&mut framer, &chunks)
                    .iter()
                    .map(|e| serde_json::from_slice(e).expect("a whole element"))
                    .collect();
                assert_eq!(got, want, "round {round}: {input}");
                assert!(framer.finish());
            }
        }
    }

    fn elements_of_bytes(framer: &mut JsonArrayFramer, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, |e| out.push(e.to_vec()));
        }
        out
    }

    #[test]
    fn array_backslash_runs_split_across_chunks() {
        // Strings ending in 1..6 backslashes (escaped as 2..12), then a brace inside a string.
        for n in 1..=6 {
            let text = format!("{}}}", "\\".repeat(n));
            let element = serde_json::json!({"t": text, "u": "}"}).to_string();
            let input = format!("[{element},{element}]");
            let (got, closed) = array_same_at_every_split(input.as_bytes());
            assert_eq!(got, vec![element.clone(), element], "{n} backslashes");
            assert!(closed);
        }
    }

    #[test]
    fn array_gemini_fixture_at_every_split() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemini/stream_array.json"
        );
        let input = std::fs::read(path).expect("fixture");
        let (got, closed) = array_same_at_every_split(&input);
        assert_eq!(got.len(), 3);
        assert!(closed);
        for element in got {
            serde_json::from_str::<serde_json::Value>(&element).expect("each element is JSON");
        }
    }
}
