//! Terminal queries in a console's history.
//!
//! A guest asks its terminal questions in what it prints: busybox's shell
//! asks for the cursor position (`ESC[6n`) at every prompt, programs ask
//! for the device attributes (`ESC[c`), colours (`ESC]11;?`), modes. A
//! terminal answers by typing the answer. Asked live, that is what the
//! guest waits for; replayed from the history to a viewer who joins later,
//! the answer is for a prompt long gone, and typed into the guest it
//! corrupts whatever reads the console next (`/bin/sh: 8Rfree: not
//! found`). So the history a viewer is shown has its queries taken out:
//! they draw nothing, and nobody waits for their answers.
//!
//! What counts as a query is the list of requests xterm (and so xterm.js)
//! answers. A sequence cut off at the end of the history is kept as it is:
//! its end comes live, and then the guest does wait for the answer.

/// ESC.
const ESC: u8 = 0x1b;
/// ENQ: asks for the terminal's answerback message.
const ENQ: u8 = 0x05;
/// BEL: ends an OSC string (as ESC \ does).
const BEL: u8 = 0x07;

/// `history` without the terminal queries in it.
pub(super) fn strip(history: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(history.len());
    let mut at = 0;
    while at < history.len() {
        let rest = &history[at..];
        match sequence(rest) {
            Some((len, true)) => at += len,
            Some((len, false)) => {
                out.extend_from_slice(&rest[..len]);
                at += len;
            }
            None => {
                out.push(rest[0]);
                at += 1;
            }
        }
    }
    out
}

/// The control sequence `b` starts with, if any: its length and whether it
/// is a query. A sequence cut off by the end of `b` is all of `b`, and
/// not a query.
fn sequence(b: &[u8]) -> Option<(usize, bool)> {
    match b {
        [ENQ, ..] => Some((1, true)),
        [ESC] => Some((1, false)),
        [ESC, b'[', ..] => csi(b),
        [ESC, b']', ..] => string(b).map(|(len, body)| (len, body.is_some_and(osc_query))),
        [ESC, b'P', ..] => string(b).map(|(len, body)| (len, body.is_some_and(dcs_query))),
        _ => None,
    }
}

/// A CSI sequence: ESC [, parameter bytes, intermediate bytes, a final
/// byte (ECMA-48 5.4). None when a byte that cannot be in one comes first.
fn csi(b: &[u8]) -> Option<(usize, bool)> {
    let params_end = 2 + b[2..]
        .iter()
        .take_while(|c| (0x30..=0x3f).contains(*c))
        .count();
    let inter_end = params_end
        + b[params_end..]
            .iter()
            .take_while(|c| (0x20..=0x2f).contains(*c))
            .count();
    let Some(&last) = b.get(inter_end) else {
        return Some((b.len(), false));
    };
    if !(0x40..=0x7e).contains(&last) {
        return None;
    }
    let query = csi_query(&b[2..params_end], &b[params_end..inter_end], last);
    Some((inter_end + 1, query))
}

/// Whether a CSI sequence asks for an answer.
fn csi_query(params: &[u8], inter: &[u8], last: u8) -> bool {
    let (prefix, params) = match params {
        [p @ b'<'..=b'?', rest @ ..] => (Some(*p), rest),
        _ => (None, params),
    };
    let first: Option<u32> = params
        .split(|c| *c == b';' || *c == b':')
        .next()
        .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
    match (prefix, inter, last) {
        // Device status and cursor position reports (DSR, DEC DSR).
        (None | Some(b'?'), b"", b'n') => true,
        // Primary, secondary and tertiary device attributes.
        (None | Some(b'>' | b'='), b"", b'c') => true,
        // A mode's state (DECRQM), the presentation state (DECRQPSR).
        (None | Some(b'?'), b"$", b'p') | (None, b"$", b'w') => true,
        // The terminal's parameters (DECREQTPARM), name and version
        // (XTVERSION), key modifier options (XTQMODKEYS), keyboard flags.
        (None, b"", b'x') | (Some(b'>'), b"", b'q') | (Some(b'?'), b"", b'm' | b'u') => true,
        // Window reports: state, position, sizes, titles (XTWINOPS).
        (None, b"", b't') => matches!(first, Some(11 | 13 | 14 | 15 | 16 | 18 | 19 | 20 | 21)),
        _ => false,
    }
}

/// An OSC or DCS string: ESC ] or ESC P, the body, then BEL or ESC \.
/// Its length and its body (none when cut off).
fn string(b: &[u8]) -> Option<(usize, Option<&[u8]>)> {
    let body = &b[2..];
    match body.iter().position(|c| *c == BEL || *c == ESC) {
        None => Some((b.len(), None)),
        Some(end) if body[end] == BEL => Some((2 + end + 1, Some(&body[..end]))),
        Some(end) => match body.get(end + 1) {
            None => Some((b.len(), None)),
            Some(b'\\') => Some((2 + end + 2, Some(&body[..end]))),
            // An ESC that is not ST cancels the string; the ESC starts
            // whatever comes next.
            Some(_) => Some((2 + end, None)),
        },
    }
}

/// Whether an OSC asks for an answer: a `?` in place of a value (a colour,
/// the clipboard: `4;1;?`, `11;?`, `52;c;?`).
fn osc_query(body: &[u8]) -> bool {
    body.split(|c| *c == b';').skip(1).any(|f| f == b"?")
}

/// Whether a DCS asks for an answer: a setting (DECRQSS, `$q`) or a
/// termcap entry (XTGETTCAP, `+q`).
fn dcs_query(body: &[u8]) -> bool {
    let start = body
        .iter()
        .take_while(|c| (0x30..=0x3f).contains(*c))
        .count();
    body[start..].starts_with(b"$q") || body[start..].starts_with(b"+q")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(s: &[u8]) -> String {
        String::from_utf8(strip(s)).unwrap()
    }

    #[test]
    fn the_prompts_cursor_position_queries_are_taken_out() {
        let boot = b"Welcome\r\n\x1b[6n~ # free\r\n  total\r\n\x1b[6n~ # ";
        assert_eq!(stripped(boot), "Welcome\r\n~ # free\r\n  total\r\n~ # ");
    }

    #[test]
    fn every_kind_of_query_is_taken_out() {
        for q in [
            &b"\x1b[5n"[..],
            b"\x1b[?6n",
            b"\x1b[c",
            b"\x1b[0c",
            b"\x1b[>c",
            b"\x1b[=0c",
            b"\x1b[?25$p",
            b"\x1b[4$p",
            b"\x1b[1$w",
            b"\x1b[x",
            b"\x1b[>0q",
            b"\x1b[?4m",
            b"\x1b[?u",
            b"\x1b[18t",
            b"\x1b[14;2t",
            b"\x1b]11;?\x07",
            b"\x1b]4;1;?\x1b\\",
            b"\x1b]52;c;?\x07",
            b"\x1bP$qm\x1b\\",
            b"\x1bP+q544e\x1b\\",
            b"\x05",
        ] {
            let mut s = b"a".to_vec();
            s.extend_from_slice(q);
            s.push(b'b');
            assert_eq!(stripped(&s), "ab", "{:?}", String::from_utf8_lossy(q));
        }
    }

    #[test]
    fn what_draws_or_sets_stays() {
        for keep in [
            &b"\x1b[1;32mgreen\x1b[0m"[..],
            b"\x1b[2J\x1b[H",
            b"\x1b[?25l\x1b[?1049h",
            b"\x1b[>4;1m",
            b"\x1b[>1n",
            b"\x1b[8;24;80t",
            b"\x1b]0;title\x07",
            b"\x1b]11;#000000\x1b\\",
            b"\x1bc\x1b(B\x1b7",
            "caf\u{e9} \u{2014} \u{1b}[Kok".as_bytes(),
        ] {
            assert_eq!(strip(keep), keep, "{:?}", String::from_utf8_lossy(keep));
        }
    }

    #[test]
    fn a_sequence_cut_off_at_the_end_stays_for_its_live_end() {
        for tail in [
            &b"\x1b"[..],
            b"\x1b[",
            b"\x1b[6",
            b"\x1b]11;?",
            b"\x1b]11;?\x1b",
            b"\x1bP$q",
        ] {
            let mut s = b"~ # ".to_vec();
            s.extend_from_slice(tail);
            assert_eq!(strip(&s), s);
        }
    }

    #[test]
    fn a_broken_sequence_is_passed_through() {
        assert_eq!(stripped(b"\x1b[6\r\n\x1b[6n"), "\x1b[6\r\n");
        assert_eq!(stripped(b"\x1b]11;?\x1b[6nx"), "\x1b]11;?x");
    }
}
