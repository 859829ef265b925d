//! HTML or JSON: chosen by the entry hop from `Accept`, then asked for on
//! every call down the chain.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
}

impl Format {
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/json") => Format::Json,
            _ => Format::Html,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_chosen_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Html);
        assert_eq!(
            Format::from_accept(Some("text/html,*/*;q=0.8")),
            Format::Html
        );
        assert_eq!(Format::from_accept(Some("application/json")), Format::Json);
    }
}
