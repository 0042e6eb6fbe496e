//! A Server-Sent Events reader for `GET /v1/subscribe`: bytes in, events out.
//!
//! Invariants: lines end with `\n`, `\r\n` or `\r` (the SSE rules; a `\r` at the end of a
//! chunk waits for the next chunk before it is taken as a line end); an event's `data:`
//! lines are joined with `\n`, so a payload the server split over several lines comes
//! back as it was; comment lines (keep-alives) are skipped; memory is one partial line
//! plus the events of one received chunk.

/// One dispatched SSE event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (empty for the default `message`).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: Vec<u8>,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: String,
}

impl SseParser {
    /// Feeds received bytes; calls `out` for every event completed by them.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut impl FnMut(SseEvent)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                break;
            };
            let step = if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end may be half of `\r\n`: wait for more.
                    None => break,
                }
            } else {
                1
            };
            let line = start..start + end;
            start += end + step;
            self.line(line, out);
        }
        self.buf.drain(..start);
    }

    fn line(&mut self, range: std::ops::Range<usize>, out: &mut impl FnMut(SseEvent)) {
        let line = &self.buf[range];
        if line.is_empty() {
            if self.has_data {
                out(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.has_data = false;
            self.event.clear();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            // `id` is the event's position, which the event's JSON also carries; `retry`
            // is for reconnecting browsers.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| got.push(e));
        }
        got
    }

    #[test]
    fn events_split_anywhere_across_chunks_come_out_whole() {
        let text: &[u8] = b": keep-alive\n\nid: 1\ndata: {\"a\":1}\n\nevent: error\ndata: boom\n\nid: 2\ndata: {\"b\":\ndata:  2}\n\n";
        let whole = parse(&[text]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].data, b"{\"a\":1}");
        assert_eq!(
            (whole[1].event.as_str(), &whole[1].data[..]),
            ("error", &b"boom"[..])
        );
        assert_eq!(whole[2].data, b"{\"b\":\n 2}");
        for cut in 0..text.len() {
            assert_eq!(parse(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn crlf_and_cr_line_ends_are_line_ends() {
        let got = parse(&[b"data: x\r", b"\n\r\ndata: y\r\r", b"\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!((&got[0].data[..], &got[1].data[..]), (&b"x"[..], &b"y"[..]));
    }
}
