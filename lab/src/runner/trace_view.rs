//! The runner's embedded trace view: spans arrive in batches from several
//! processes; once a trace's root span is in and nothing more came for a
//! moment, the trace is drawn as a waterfall, one line per span.
//!
//! ```text
//! trace 8d5b6e0b0b4c3f0ea3a9a4a11c1d2a37 · 14 spans · 304.1 ms
//!   304.1 ms  ████████████████████████████████████████  microservice-1 GET /
//!    50.2 ms  ███████                                   ├─ microservice-1 simulated work
//!   252.7 ms         █████████████████████████████████  ├─ microservice-1 GET
//!   251.9 ms         █████████████████████████████████  │  └─ microservice-2 GET /
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::receiver::ReceivedSpan;

/// Columns of the time bar.
pub const BAR_WIDTH: usize = 40;
/// Where a span line's tree starts: duration, bar and the gaps between.
pub const TREE_COLUMN: usize = 2 + 9 + 2 + BAR_WIDTH + 2;

/// Spans of traces that are not finished yet.
pub struct Assembler {
    pending: HashMap<String, Pending>,
    /// Traces finished lately, oldest first, with what became of them:
    /// spans of theirs that come after (a callee still working when its
    /// caller gave up) are a late part of that trace, and share its verdict.
    finished: VecDeque<String>,
    verdicts: HashMap<String, Verdict>,
    /// Quiet time after the root span before a trace counts as finished.
    settle: Duration,
    /// A trace whose root never comes is shown anyway after this long.
    give_up: Duration,
}

struct Pending {
    spans: Vec<ReceivedSpan>,
    first: Instant,
    last: Instant,
    late: Option<Verdict>,
}

/// What became of a finished trace: drawn in the terminal, kept (forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub shown: bool,
    pub kept: bool,
}

/// How many finished traces are remembered for their late spans.
const REMEMBERED: usize = 1000;

/// A finished trace.
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    pub spans: Vec<ReceivedSpan>,
    /// Spans of a trace already finished, which ended after it was, with
    /// that trace's verdict.
    pub late: Option<Verdict>,
}

impl Trace {
    /// The span that started the trace, when it arrived.
    pub fn root(&self) -> Option<&ReceivedSpan> {
        self.spans.iter().find(|s| s.parent_id().is_empty())
    }

    pub fn has_error(&self) -> bool {
        self.spans.iter().any(ReceivedSpan::is_error)
    }

    /// From the first span's start to the last one's end.
    pub fn duration(&self) -> Duration {
        let start = self.spans.iter().map(|s| s.start_ns()).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.end_ns()).max().unwrap_or(0);
        Duration::from_nanos(end.saturating_sub(start))
    }
}

impl Assembler {
    pub fn new(settle: Duration, give_up: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            finished: VecDeque::new(),
            verdicts: HashMap::new(),
            settle,
            give_up,
        }
    }

    pub fn add(&mut self, batch: Vec<ReceivedSpan>, now: Instant) {
        for span in batch {
            let id = span.trace_id();
            let late = self.verdicts.get(&id).copied();
            let pending = self.pending.entry(id).or_insert(Pending {
                spans: Vec::new(),
                first: now,
                last: now,
                late,
            });
            pending.last = now;
            pending.spans.push(span);
        }
    }

    /// Traces that are finished by `now`, oldest first.
    pub fn finished(&mut self, now: Instant) -> Vec<Trace> {
        let done: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                // Late spans have their root drawn already.
                let rooted = p.late.is_some() || p.spans.iter().any(|s| s.parent_id().is_empty());
                (rooted && now.duration_since(p.last) >= self.settle)
                    || now.duration_since(p.first) >= self.give_up
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.take(done)
    }

    /// Every trace still pending, finished or not (at shutdown).
    pub fn drain(&mut self) -> Vec<Trace> {
        let all: Vec<String> = self.pending.keys().cloned().collect();
        self.take(all)
    }

    fn take(&mut self, ids: Vec<String>) -> Vec<Trace> {
        let mut traces: Vec<(Instant, Trace)> = ids
            .into_iter()
            .filter_map(|id| {
                let pending = self.pending.remove(&id)?;
                Some((
                    pending.first,
                    Trace {
                        id,
                        spans: pending.spans,
                        late: pending.late,
                    },
                ))
            })
            .collect();
        traces.sort_by_key(|(first, _)| *first);
        traces.into_iter().map(|(_, trace)| trace).collect()
    }

    /// What became of the finished trace `id`: its late spans get the same.
    pub fn record(&mut self, id: &str, verdict: Verdict) {
        if self.verdicts.insert(id.to_string(), verdict).is_none() {
            self.finished.push_back(id.to_string());
        }
        while self.finished.len() > REMEMBERED {
            if let Some(oldest) = self.finished.pop_front() {
                self.verdicts.remove(&oldest);
            }
        }
    }
}

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
pub fn render(trace: &Trace, note: Option<&str>, style: Style) -> String {
    let paint = |code: &str, text: &str| match style {
        Style::Colour => format!("{code}{text}{RESET}"),
        Style::Plain => text.to_string(),
    };
    let mut out = String::new();
    let total = trace.duration();
    let mut header = format!(
        "trace {} · {} span{} · {}",
        trace.id,
        trace.spans.len(),
        if trace.spans.len() == 1 { "" } else { "s" },
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

    let start = trace.spans.iter().map(|s| s.start_ns()).min().unwrap_or(0);
    let ids: std::collections::HashSet<String> =
        trace.spans.iter().map(ReceivedSpan::span_id).collect();
    let mut children: HashMap<String, Vec<&ReceivedSpan>> = HashMap::new();
    let mut tops: Vec<&ReceivedSpan> = Vec::new();
    for span in &trace.spans {
        let parent = span.parent_id();
        if parent.is_empty() || !ids.contains(&parent) {
            tops.push(span);
        } else {
            children.entry(parent).or_default().push(span);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_ns());
    }
    tops.sort_by_key(|s| s.start_ns());

    // A colour per service, in the order the services joined the trace.
    let mut by_start: Vec<&ReceivedSpan> = trace.spans.iter().collect();
    by_start.sort_by_key(|s| s.start_ns());
    let mut colours: HashMap<&str, &str> = HashMap::new();
    for span in by_start {
        let next = SERVICE_COLOURS[colours.len() % SERVICE_COLOURS.len()];
        colours.entry(span.service.as_str()).or_insert(next);
    }

    // Depth-first, each span with the tree drawn in front of its name.
    let mut stack: Vec<(&ReceivedSpan, String, String)> = tops
        .iter()
        .rev()
        .map(|span| (*span, String::new(), String::new()))
        .collect();
    while let Some((span, branch, indent)) = stack.pop() {
        let offset = span.start_ns().saturating_sub(start);
        let bar = bar(
            offset,
            span.duration().as_nanos() as u64,
            total.as_nanos() as u64,
        );
        let colour = colours.get(span.service.as_str()).copied().unwrap_or(RESET);
        let mut line = format!(
            "  {:>9}  {}  {}{} {}",
            duration_text(span.duration()),
            paint(if span.is_error() { RED } else { colour }, &bar),
            paint(DIM, &branch),
            paint(colour, &span.service),
            span.name()
        );
        if !span.parent_id().is_empty() && !ids.contains(&span.parent_id()) {
            let whereabouts = if trace.late.is_some() {
                "drawn above"
            } else {
                "not in this trace"
            };
            let _ = write!(
                line,
                "{}",
                paint(
                    DIM,
                    &format!("  (parent {} {whereabouts})", span.parent_id())
                )
            );
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

        let kids = children
            .get(&span.span_id())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for (i, child) in kids.iter().enumerate().rev() {
            let last = i + 1 == kids.len();
            let child_branch = format!("{indent}{}", if last { "└─ " } else { "├─ " });
            let child_indent = format!("{indent}{}", if last { "   " } else { "│  " });
            stack.push((child, child_branch, child_indent));
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
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};

    fn span(
        service: &str,
        name: &str,
        id: u8,
        parent: Option<u8>,
        start: u64,
        end: u64,
    ) -> ReceivedSpan {
        ReceivedSpan {
            service: service.into(),
            resource: Vec::new(),
            scope: None,
            span: Span {
                trace_id: vec![7; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: name.into(),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                ..Span::default()
            },
        }
    }

    fn trace() -> Trace {
        let mut failed = span("b", "GET /", 4, Some(3), 60, 90);
        failed.span.status = Some(Status {
            code: 2,
            message: "injected failure".into(),
        });
        Trace {
            id: "07".repeat(16),
            spans: vec![
                failed,
                span("a", "GET /", 1, None, 0, 100),
                span("a", "simulated work", 2, Some(1), 0, 50),
                span("a", "GET", 3, Some(1), 50, 95),
            ],
            late: None,
        }
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
    fn a_trace_is_finished_once_its_root_is_in_and_things_are_quiet() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = trace().spans;
        let root = spans.remove(1);
        assembler.add(spans, t0);
        assert!(
            assembler.finished(t0 + Duration::from_secs(1)).is_empty(),
            "no root yet"
        );
        assembler.add(vec![root], t0 + Duration::from_secs(1));
        assert!(
            assembler
                .finished(t0 + Duration::from_millis(1200))
                .is_empty()
        );
        let done = assembler.finished(t0 + Duration::from_millis(1600));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].spans.len(), 4);
    }

    #[test]
    fn spans_that_end_after_their_trace_was_drawn_are_drawn_as_late() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = trace().spans;
        let callee = spans.remove(0);
        assembler.add(spans, t0);
        let first = assembler.finished(t0 + Duration::from_secs(1));
        assert_eq!(first.len(), 1);
        let verdict = Verdict {
            shown: false,
            kept: true,
        };
        assembler.record(&first[0].id, verdict);

        // The callee's span comes when its caller has long given up.
        let later = t0 + Duration::from_secs(2);
        assembler.add(vec![callee], later);
        assert!(assembler.finished(later).is_empty());
        let done = assembler.finished(later + Duration::from_millis(500));
        assert_eq!(
            done.len(),
            1,
            "drawn once settled, without waiting for a root"
        );
        assert_eq!(done[0].late, Some(verdict), "the trace's own verdict");
        let text = render(&done[0], None, Style::Plain);
        assert!(
            text.contains("late: these ended after the trace was drawn above"),
            "{text}"
        );
        assert!(!text.contains("root span never arrived"), "{text}");
        assert!(
            text.contains("(parent 0303030303030303 drawn above)"),
            "{text}"
        );
    }

    #[test]
    fn a_trace_without_root_is_shown_after_a_while() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = trace().spans;
        spans.remove(1);
        assembler.add(spans, t0);
        assert!(assembler.finished(t0 + Duration::from_secs(4)).is_empty());
        let done = assembler.finished(t0 + Duration::from_secs(5));
        assert_eq!(done.len(), 1);
        let text = render(&done[0], None, Style::Plain);
        assert!(text.contains("its root span never arrived"), "{text}");
        assert!(
            text.contains("(parent 0101010101010101 not in this trace)"),
            "{text}"
        );
    }
}
