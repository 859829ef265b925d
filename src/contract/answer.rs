//! How a caller reads what a next hop sent back.
//!
//! What is trusted, and why. In an HTML request, a body is inserted into
//! this hop's page as it is, neither checked nor cleaned, when it answers a
//! call to a URL of EXTERNAL_CALL_URL and carries `x-chain-part`, whatever
//! its status (a failing hop's part shows why it failed). That URL is set
//! by whoever runs this hop, like the rest of its configuration, and a hop
//! of the chain renders its part from its own templates, which escape every
//! value they show (minijinja escapes `.html` templates). The header is a
//! marker, not a proof: it keeps error pages and other sites a URL may
//! point at out of the page, but whoever runs the next hop, or controls the
//! network to it, decides what its part holds, as its templates do, and a
//! part that is not well-formed breaks the page around it. Any other answer
//! is shown as escaped text, and a JSON report is only ever read as data.

use super::format::Format;
use super::report::HopReport;

/// Foreign answers are shown as text, up to this many characters.
pub const FOREIGN_TEXT_LIMIT: usize = 2_000;

/// What the next hop sent back.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTML part rendered by a hop of the chain, inserted as it is.
    Part(String),
    /// A hop's JSON report.
    Report(Box<HopReport>),
    /// Something that is not from a hop of the chain, shown as text.
    Foreign(String),
    Nothing,
}

impl Answer {
    /// Reads `body`, the answer to a call that asked for `format`;
    /// `from_chain` says whether it carried `x-chain-part`.
    pub fn read(format: Format, from_chain: bool, body: String) -> Self {
        match (from_chain, format) {
            (_, _) if body.is_empty() => Answer::Nothing,
            (true, Format::Html) => Answer::Part(body),
            (true, Format::Json) => match serde_json::from_str::<HopReport>(&body) {
                Ok(report) => Answer::Report(Box::new(report)),
                Err(_) => Answer::Foreign(body),
            },
            (false, _) => Answer::Foreign(body),
        }
    }

    /// The part to insert as HTML, if the answer is one.
    pub fn part(&self) -> Option<&str> {
        match self {
            Answer::Part(html) => Some(html),
            _ => None,
        }
    }

    /// The text to show escaped, cut to [`FOREIGN_TEXT_LIMIT`] characters.
    pub fn foreign_text(&self) -> Option<String> {
        match self {
            Answer::Foreign(text) => Some(text.chars().take(FOREIGN_TEXT_LIMIT).collect()),
            _ => None,
        }
    }

    pub fn report(&self) -> Option<&HopReport> {
        match self {
            Answer::Report(report) => Some(report),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_outside_the_chain_are_never_trusted_as_html() {
        let answer = Answer::read(Format::Html, false, "<script>x</script>".into());
        assert!(matches!(answer, Answer::Foreign(_)));
        assert_eq!(answer.part(), None);
        let answer = Answer::read(Format::Html, true, "<section></section>".into());
        assert_eq!(answer.part(), Some("<section></section>"));
    }

    #[test]
    fn a_report_that_does_not_parse_is_foreign() {
        let answer = Answer::read(Format::Json, true, "{\"service\": 1}".into());
        assert!(matches!(answer, Answer::Foreign(_)));
        assert!(matches!(
            Answer::read(Format::Json, true, String::new()),
            Answer::Nothing
        ));
    }

    #[test]
    fn foreign_text_is_cut() {
        let answer = Answer::Foreign("é".repeat(FOREIGN_TEXT_LIMIT + 5));
        assert_eq!(
            answer.foreign_text().map(|t| t.chars().count()),
            Some(FOREIGN_TEXT_LIMIT)
        );
    }
}
