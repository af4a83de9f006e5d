//! Incremental framing of streamed answers, independent of any provider: Server-Sent Events and
//! a JSON array written piece by piece. (to be implemented)
