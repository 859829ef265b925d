//! Spans arrive in batches from several processes, in any order; a trace is
//! finished once its root span is in and nothing more came for a moment.
//! Spans of a trace that come after it was finished (a callee still working
//! when its caller gave up) are its late part, not a trace of their own.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::receiver::ReceivedSpan;

/// Spans of traces that are not finished yet.
pub struct Assembler {
    pending: HashMap<String, Pending>,
    /// Traces finished lately, oldest first, with what became of them.
    finished: VecDeque<String>,
    remembered: HashMap<String, Remembered>,
    /// Quiet time after the root span before a trace counts as finished.
    settle: Duration,
    /// A trace whose root never comes is shown anyway after this long.
    give_up: Duration,
}

struct Pending {
    spans: Vec<ReceivedSpan>,
    first: Instant,
    last: Instant,
    /// The trace was finished before these spans came.
    late: Option<Remembered>,
}

/// What is kept of a finished trace for its late spans.
#[derive(Clone)]
struct Remembered {
    verdict: Verdict,
    start_ns: u64,
    end_ns: u64,
    /// By span id, without attributes: the parents late spans may name.
    outlines: HashMap<String, ReceivedSpan>,
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
    /// Set when these spans ended after their trace was finished.
    pub late: Option<Late>,
}

/// The late part of a trace, with what it takes to draw it in place.
#[derive(Debug, Clone)]
pub struct Late {
    /// The trace's own verdict: its late spans go where it went.
    pub verdict: Verdict,
    /// Where the trace started and ended when it was finished, ns since
    /// the epoch: the late part is drawn on that time scale.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The spans of the finished trace that late spans name as parents
    /// (without their attributes).
    pub parents: Vec<ReceivedSpan>,
}

impl Trace {
    /// The span that started the trace, when it arrived.
    pub fn root(&self) -> Option<&ReceivedSpan> {
        self.spans.iter().find(|s| s.parent_id().is_empty())
    }

    pub fn has_error(&self) -> bool {
        self.spans.iter().any(ReceivedSpan::is_error)
    }

    /// When the first span started, ns since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns()).min().unwrap_or(0)
    }

    /// When the last span ended, ns since the epoch.
    pub fn end_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.end_ns()).max().unwrap_or(0)
    }

    /// From the first span's start to the last one's end.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns().saturating_sub(self.start_ns()))
    }
}

impl Assembler {
    pub fn new(settle: Duration, give_up: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            finished: VecDeque::new(),
            remembered: HashMap::new(),
            settle,
            give_up,
        }
    }

    pub fn add(&mut self, batch: Vec<ReceivedSpan>, now: Instant) {
        for span in batch {
            let id = span.trace_id();
            let late = self.remembered.get(&id).cloned();
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
                let late = pending.late.map(|earlier| late(earlier, &pending.spans));
                Some((
                    pending.first,
                    Trace {
                        id,
                        spans: pending.spans,
                        late,
                    },
                ))
            })
            .collect();
        traces.sort_by_key(|(first, _)| *first);
        traces.into_iter().map(|(_, trace)| trace).collect()
    }

    /// What became of the finished `trace`: spans of it that come later
    /// get the same, and are drawn under the parents it holds.
    pub fn record(&mut self, trace: &Trace, verdict: Verdict) {
        let outlines = trace.spans.iter().map(|s| (s.span_id(), outline(s)));
        match self.remembered.get_mut(&trace.id) {
            // A late part: a later one may hang under it.
            Some(earlier) => {
                earlier.outlines.extend(outlines);
                earlier.end_ns = earlier.end_ns.max(trace.end_ns());
            }
            None => {
                self.remembered.insert(
                    trace.id.clone(),
                    Remembered {
                        verdict,
                        start_ns: trace.start_ns(),
                        end_ns: trace.end_ns(),
                        outlines: outlines.collect(),
                    },
                );
                self.finished.push_back(trace.id.clone());
            }
        }
        while self.finished.len() > REMEMBERED {
            if let Some(oldest) = self.finished.pop_front() {
                self.remembered.remove(&oldest);
            }
        }
    }
}

/// The late part `spans` of the trace `earlier` was.
fn late(earlier: Remembered, spans: &[ReceivedSpan]) -> Late {
    let own: std::collections::HashSet<String> = spans.iter().map(|s| s.span_id()).collect();
    let mut parents: Vec<ReceivedSpan> = Vec::new();
    for span in spans {
        let parent = span.parent_id();
        if own.contains(&parent) || parents.iter().any(|p| p.span_id() == parent) {
            continue;
        }
        if let Some(outline) = earlier.outlines.get(&parent) {
            parents.push(outline.clone());
        }
    }
    parents.sort_by_key(|s| s.start_ns());
    Late {
        verdict: earlier.verdict,
        start_ns: earlier.start_ns,
        end_ns: earlier.end_ns,
        parents,
    }
}

/// `span` without what a waterfall does not draw.
fn outline(span: &ReceivedSpan) -> ReceivedSpan {
    let mut outline = span.clone();
    outline.resource.clear();
    outline.scope = None;
    outline.span.attributes.clear();
    outline.span.events.clear();
    outline.span.links.clear();
    outline
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::fixtures::spans;

    #[test]
    fn a_trace_is_finished_once_its_root_is_in_and_things_are_quiet() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = spans();
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
        assert!(done[0].late.is_none());
    }

    #[test]
    fn spans_that_come_after_their_trace_finished_are_its_late_part() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = spans();
        let callee = spans.remove(0);
        assembler.add(spans, t0);
        let first = assembler.finished(t0 + Duration::from_secs(1));
        assert_eq!(first.len(), 1);
        let verdict = Verdict {
            shown: false,
            kept: true,
        };
        assembler.record(&first[0], verdict);

        // The callee's span comes when its caller has long given up.
        let later = t0 + Duration::from_secs(2);
        assembler.add(vec![callee], later);
        assert!(assembler.finished(later).is_empty());
        let done = assembler.finished(later + Duration::from_millis(500));
        assert_eq!(
            done.len(),
            1,
            "finished once settled, without waiting for a root"
        );
        let late = done[0].late.as_ref().expect("a late part");
        assert_eq!(late.verdict, verdict, "the trace's own verdict");
        assert_eq!((late.start_ns, late.end_ns), (0, 100), "the trace's scale");
        let parents: Vec<(String, &str)> = late
            .parents
            .iter()
            .map(|p| (p.span_id(), p.name()))
            .collect();
        assert_eq!(
            parents,
            [("03".repeat(8), "GET")],
            "the caller it hangs under"
        );
    }

    #[test]
    fn a_trace_without_root_is_finished_after_a_while() {
        let mut assembler = Assembler::new(Duration::from_millis(500), Duration::from_secs(5));
        let t0 = Instant::now();
        let mut spans = spans();
        spans.remove(1);
        assembler.add(spans, t0);
        assert!(assembler.finished(t0 + Duration::from_secs(4)).is_empty());
        let done = assembler.finished(t0 + Duration::from_secs(5));
        assert_eq!(done.len(), 1);
        assert!(done[0].root().is_none() && done[0].late.is_none());
    }
}
