//! Reads the Prometheus text exposition format (version 0.0.4) the daemons
//! serve: `name{label="value",...} value [timestamp]` lines, `#` comments.
//! Lines it cannot read are skipped, not fatal: one odd line from a newer
//! daemon must not cost every sample.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Every sample of a text exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// One line; `None` for comments, blank lines and lines it cannot read.
pub fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return None;
    }
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp, then nothing.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `label="value",...}` (after the `{`); returns the labels and what
/// follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .enumerate()
                .all(|(i, c)| is_name_char(c, i == 0))
        {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_labels() {
        let text = "# HELP sfera_blk_bytes_total Bytes.\n\
                    # TYPE sfera_blk_bytes_total counter\n\
                    sfera_blk_bytes_total{export=\"vm-1-disk0\",direction=\"read\"} 4096\n\
                    sfera_vswitch_worker_packets_total 12 1700000000000\n\
                    \n\
                    sfera_vswitch_uplink_link_up{uplink=\"u0\",interface=\"we\\\"ird\\\\if\"} 1\n\
                    sfera_blk_latency_seconds_bucket{export=\"a\",le=\"+Inf\"} 3\n\
                    weird{a=\"1\",} +Inf\n";
        let s = parse(text);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].name, "sfera_blk_bytes_total");
        assert_eq!(s[0].label("export"), Some("vm-1-disk0"));
        assert_eq!(s[0].label("direction"), Some("read"));
        assert_eq!(s[0].value, 4096.0);
        assert_eq!(s[1].value, 12.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].label("interface"), Some("we\"ird\\if"));
        assert_eq!(s[3].label("le"), Some("+Inf"));
        assert_eq!(s[4].value, f64::INFINITY);
    }

    #[test]
    fn lines_it_cannot_read_are_skipped() {
        for bad in [
            "{a=\"1\"} 2",
            "name{a=\"1\" 2",
            "name{a=1} 2",
            "name{=\"1\"} 2",
            "name",
            "name one",
            "name 1 2 3",
            "name{a=\"unterminated} 1",
            "name 1 notatime",
            "9name 1",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }
}
