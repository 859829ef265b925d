//! The runner's trace view: each finished trace (see [`crate::trace`]) drawn
//! as a waterfall, one line per span, its bar on the trace's time scale.
//!
//! ```text
//! trace 8d5b6e0b0b4c3f0ea3a9a4a11c1d2a37 · 8 spans · 31.2 ms
//!     31.2 ms  ████████████████████████████████████████  microservice-a GET /
//!     20.4 ms  ███████████████████████████               ├─ microservice-a simulated work
//!     10.1 ms                            █████████████   ├─ microservice-a GET
//!      9.6 ms                            ████████████    │  └─ microservice-b GET /
//!       75 µs                                        █   │     ├─ microservice-b template load
//!      151 µs                                        █   │     └─ microservice-b template render
//!       80 µs                                         █  ├─ microservice-a template load
//!      288 µs                                         █  └─ microservice-a template render
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::attributes::Attributes;
use super::log_lines;
use crate::receiver::{ReceivedLog, ReceivedSpan, SpanKind};
use crate::trace::Trace;

/// Columns of the time bar.
pub const BAR_WIDTH: usize = 40;
/// Where a span line's tree starts: duration, bar and the gaps between.
pub const TREE_COLUMN: usize = 2 + 9 + 2 + BAR_WIDTH + 2;

/// How the waterfall is written: with ANSI colours for a terminal, or as
/// plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Colour,
    Plain,
}

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const SERVICE_COLOURS: [&str; 6] = [
    "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[96m",
];

/// The waterfall of `trace`; `note` goes into the header (a sampling
/// decision, say). Ends with an empty line.
///
/// A late part is drawn on its trace's time scale, under the spans of the
/// trace it hangs from (dim, named by id as above), so that a callee that
/// outlived its caller shows as a bar that goes on past its parent's.
pub fn render(trace: &Trace, note: Option<&str>, style: Style) -> String {
    render_with(trace, note, style, &Attributes::default(), &[])
}

/// [`render`], with the `attributes` selected printed on a line under each
/// span that has any (see [`super::attributes`]), and each span's records of
/// `logs` under it (`--logs`).
pub fn render_with(
    trace: &Trace,
    note: Option<&str>,
    style: Style,
    attributes: &Attributes,
    logs: &[ReceivedLog],
) -> String {
    let paint = |code: &str, text: &str| match style {
        Style::Colour => format!("{code}{text}{RESET}"),
        Style::Plain => text.to_string(),
    };
    let mut out = String::new();
    let (start, end) = match &trace.late {
        Some(late) => (
            late.start_ns.min(trace.start_ns()),
            late.end_ns.max(trace.end_ns()),
        ),
        None => (trace.start_ns(), trace.end_ns()),
    };
    let total = Duration::from_nanos(end.saturating_sub(start));
    let count = trace.spans.len();
    let mut header = format!(
        "trace {} · {count} span{} · {}",
        trace.id,
        if count == 1 { "" } else { "s" },
        duration_text(total)
    );
    if trace.has_error() {
        header.push_str(" · ERROR");
    }
    if trace.late.is_some() {
        header.push_str(" · late: these ended after the trace was drawn above");
    } else if trace.root().is_none() {
        header.push_str(" · its root span never arrived");
    }
    if let Some(note) = note {
        let _ = write!(header, " · {note}");
    }
    let _ = writeln!(out, "{}", paint(BOLD, &header));

    // The trace's spans, and for a late part the spans drawn above that it
    // hangs from (context: drawn dim).
    let context: &[ReceivedSpan] = trace.late.as_ref().map_or(&[], |l| &l.parents);
    let all: Vec<(&ReceivedSpan, bool)> = context
        .iter()
        .map(|s| (s, true))
        .chain(trace.spans.iter().map(|s| (s, false)))
        .collect();
    let ids: HashSet<String> = all.iter().map(|(s, _)| s.span_id()).collect();
    let mut children: HashMap<String, Vec<(&ReceivedSpan, bool)>> = HashMap::new();
    let mut tops: Vec<(&ReceivedSpan, bool)> = Vec::new();
    for &(span, is_context) in &all {
        let parent = span.parent_id();
        if is_context || parent.is_empty() || !ids.contains(&parent) {
            tops.push((span, is_context));
        } else {
            children.entry(parent).or_default().push((span, is_context));
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|(s, _)| s.start_ns());
    }
    tops.sort_by_key(|(s, _)| s.start_ns());

    // A colour per service, in the order the services joined the trace.
    let mut by_start: Vec<&ReceivedSpan> = all.iter().map(|(s, _)| *s).collect();
    by_start.sort_by_key(|s| s.start_ns());
    let mut colours: HashMap<&str, &str> = HashMap::new();
    for span in by_start {
        let next = SERVICE_COLOURS[colours.len() % SERVICE_COLOURS.len()];
        colours.entry(span.service.as_str()).or_insert(next);
    }

    // Depth-first, each span with the tree drawn in front of its name.
    let mut stack: Vec<(&ReceivedSpan, bool, String, String)> = tops
        .iter()
        .rev()
        .map(|(span, is_context)| (*span, *is_context, String::new(), String::new()))
        .collect();
    while let Some((span, is_context, branch, indent)) = stack.pop() {
        let offset = span.start_ns().saturating_sub(start);
        let bar = bar(
            offset,
            span.duration().as_nanos() as u64,
            total.as_nanos() as u64,
        );
        let colour = colours.get(span.service.as_str()).copied().unwrap_or(RESET);
        let bar_colour = match (is_context, span.is_error()) {
            (true, _) => DIM,
            (false, true) => RED,
            (false, false) => colour,
        };
        let mut line = format!(
            "  {:>9}  {}  {}{} {}",
            duration_text(span.duration()),
            paint(bar_colour, &bar),
            paint(DIM, &branch),
            paint(if is_context { DIM } else { colour }, &span.service),
            span.name()
        );
        let kids = children
            .get(&span.span_id())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let parent = span.parent_id();
        let remark = if is_context {
            Some(format!("(span {}, drawn above)", span.span_id()))
        } else if !parent.is_empty() && !ids.contains(&parent) {
            Some(format!("(parent {parent} not in this trace)"))
        } else if span.kind() == SpanKind::Client && kids.is_empty() {
            // A late callee names this id as its parent.
            Some(format!("(span {}: no callee span here)", span.span_id()))
        } else {
            None
        };
        if let Some(remark) = remark {
            let _ = write!(line, "  {}", paint(DIM, &remark));
        }
        if span.is_error() {
            let message = span.status_message();
            let text = if message.is_empty() {
                "  ERROR".to_string()
            } else {
                format!("  ERROR {message}")
            };
            line.push_str(&paint(RED, &text));
        }
        let _ = writeln!(out, "{line}");
        if let Some(text) = attributes.text(span).filter(|_| !is_context) {
            // Under the span, on the stem to its children when it has some.
            let stem = if kids.is_empty() { "  " } else { "│ " };
            let _ = writeln!(
                out,
                "{:TREE_COLUMN$}{}",
                "",
                paint(DIM, &format!("{indent}{stem}{text}"))
            );
        }
        if !is_context {
            let log_indent = format!("{}{indent}", " ".repeat(TREE_COLUMN));
            let colour = style == Style::Colour;
            for log_line in
                log_lines::lines_under(span, logs, &log_indent, !kids.is_empty(), colour)
            {
                let _ = writeln!(out, "{log_line}");
            }
        }

        for (i, (child, child_is_context)) in kids.iter().enumerate().rev() {
            let last = i + 1 == kids.len();
            let child_branch = format!("{indent}{}", if last { "└─ " } else { "├─ " });
            let child_indent = format!("{indent}{}", if last { "   " } else { "│  " });
            stack.push((child, *child_is_context, child_branch, child_indent));
        }
    }
    out.push('\n');
    out
}

/// The tree part of a span line (`├─ service name …`), for reading a
/// waterfall back: everything from [`TREE_COLUMN`] on.
pub fn tree_of(line: &str) -> Option<&str> {
    line.char_indices()
        .nth(TREE_COLUMN)
        .map(|(at, _)| &line[at..])
}

/// The columns a span line's bar fills, (first, last + 1), for reading a
/// waterfall back.
pub fn bar_of(line: &str) -> Option<(usize, usize)> {
    let bar: Vec<char> = line.chars().skip(2 + 9 + 2).take(BAR_WIDTH).collect();
    let first = bar.iter().position(|c| *c == '█')?;
    let last = bar.iter().rposition(|c| *c == '█')?;
    Some((first, last + 1))
}

/// `BAR_WIDTH` columns with the span's part of the trace filled in, at
/// least one column so that no span disappears.
fn bar(offset_ns: u64, duration_ns: u64, total_ns: u64) -> String {
    let total = total_ns.max(1) as f64;
    let width = BAR_WIDTH as f64;
    let from = ((offset_ns as f64 / total) * width).floor() as usize;
    let to = (((offset_ns + duration_ns) as f64 / total) * width).ceil() as usize;
    let from = from.min(BAR_WIDTH - 1);
    let to = to.clamp(from + 1, BAR_WIDTH);
    let mut bar = String::with_capacity(BAR_WIDTH * 3);
    bar.extend(std::iter::repeat_n(' ', from));
    bar.extend(std::iter::repeat_n('█', to - from));
    bar.extend(std::iter::repeat_n(' ', BAR_WIDTH - to));
    bar
}

/// `304.1 ms`, or `12 µs` below a millisecond.
pub fn duration_text(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.1} ms", micros / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::ReceivedSpan;
    use crate::trace::fixtures::{span, spans};
    use crate::trace::{Late, Verdict};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;

    fn trace() -> Trace {
        Trace {
            id: "07".repeat(16),
            spans: spans(),
            late: None,
        }
    }

    fn client(mut span: ReceivedSpan) -> ReceivedSpan {
        span.span.kind = Kind::Client as i32;
        span
    }

    #[test]
    fn a_trace_is_drawn_as_a_tree_with_bars() {
        let text = render(&trace(), None, Style::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with(&format!("trace {} · 4 spans", "07".repeat(16))),
            "{text}"
        );
        assert!(lines[0].contains("ERROR"));
        let trees: Vec<&str> = lines[1..5].iter().filter_map(|l| tree_of(l)).collect();
        assert_eq!(
            trees,
            [
                "a GET /",
                "├─ a simulated work",
                "└─ a GET",
                "   └─ b GET /  ERROR injected failure",
            ],
            "{text}"
        );
        // The root fills the bar; the work is its first half.
        assert_eq!(lines[1].matches('█').count(), BAR_WIDTH);
        assert_eq!(lines[2].matches('█').count(), BAR_WIDTH / 2);
        assert!(!text.contains('\x1b'), "plain text has no escape codes");
        assert!(render(&trace(), None, Style::Colour).contains("\x1b[31m"));
    }

    #[test]
    fn a_call_whose_callee_is_missing_shows_its_span_id() {
        let mut trace = trace();
        trace.spans.remove(0);
        trace.spans[2] = client(trace.spans[2].clone());
        let text = render(&trace, None, Style::Plain);
        assert!(
            text.contains("└─ a GET  (span 0303030303030303: no callee span here)"),
            "{text}"
        );
    }

    #[test]
    fn a_late_part_is_drawn_under_its_parent_on_the_traces_time_scale() {
        // The callee started at 60 and outlived its caller (50-95) and the
        // trace (0-100) by far: it ends at 400.
        let late = Trace {
            id: "07".repeat(16),
            spans: vec![span("b", "GET /", 4, Some(3), 60, 400)],
            late: Some(Late {
                verdict: Verdict {
                    shown: true,
                    kept: true,
                },
                start_ns: 0,
                end_ns: 100,
                parents: vec![client(span("a", "GET", 3, Some(1), 50, 95))],
            }),
        };
        let text = render(&late, None, Style::Plain);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("· 1 span · ")
                && lines[0].ends_with("· late: these ended after the trace was drawn above"),
            "{text}"
        );
        assert!(!text.contains("root span never arrived"), "{text}");
        let trees: Vec<&str> = lines[1..3].iter().filter_map(|l| tree_of(l)).collect();
        assert_eq!(
            trees,
            ["a GET  (span 0303030303030303, drawn above)", "└─ b GET /"],
            "{text}"
        );
        // On the scale 0-400: the caller covers columns 5-10, the callee 6-40.
        assert_eq!(bar_of(lines[1]), Some((5, 10)), "{text}");
        assert_eq!(bar_of(lines[2]), Some((6, BAR_WIDTH)), "{text}");
    }

    #[test]
    fn a_trace_without_root_says_so() {
        let mut trace = trace();
        trace.spans.remove(1);
        let text = render(&trace, None, Style::Plain);
        assert!(text.contains("its root span never arrived"), "{text}");
        assert!(
            text.contains("(parent 0101010101010101 not in this trace)"),
            "{text}"
        );
    }
}
