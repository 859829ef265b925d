//! HTML or JSON: chosen by the entry hop from `Accept`, then asked for on
//! every call down the chain.

use http::HeaderMap;
use http::header::ACCEPT;
use mime::Mime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
}

impl Format {
    /// The format `Accept` prefers (RFC 9110, 12.5.1): each format gets the
    /// q-value of the most specific media range that matches it, the higher
    /// wins, and q=0 means "not this one". A tie goes to JSON only when
    /// `application/json` is named, as it did before q-values were read;
    /// HTML otherwise, and when neither is acceptable or nothing is asked.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Format::Html;
        };
        let ranges = media_ranges(accept);
        let html = quality(&ranges, "text", "html");
        let json = quality(&ranges, "application", "json");
        match (html, json) {
            (_, None | Some((0, _))) => Format::Html,
            (None | Some((0, _)), _) => Format::Json,
            (Some((html, _)), Some((json, _))) if json > html => Format::Json,
            (Some((html, _)), Some((json, Specificity::Exact))) if json == html => Format::Json,
            _ => Format::Html,
        }
    }

    /// The format the request's `Accept` header lines prefer, read as one
    /// list (RFC 9110, 5.3); lines that are not text are left out.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut lines = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|line| line.to_str().ok());
        match (lines.next(), lines.next()) {
            (first, None) => Format::from_accept(first),
            (Some(first), Some(second)) => {
                let mut all = format!("{first},{second}");
                for line in lines {
                    all.push(',');
                    all.push_str(line);
                }
                Format::from_accept(Some(&all))
            }
            (None, Some(_)) => Format::Html,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// How closely a media range names a type: more specific ranges win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Any,
    Subtypes,
    Exact,
}

/// One media range of `Accept` and its weight in thousandths.
struct Range {
    mime: Mime,
    quality: u16,
}

/// The ranges of an `Accept` value; a range that does not parse, or whose
/// q is not a number from 0 to 1, is left out.
fn media_ranges(accept: &str) -> Vec<Range> {
    accept
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .filter_map(|item| {
            let mime: Mime = item.parse().ok()?;
            let quality = match mime.get_param("q") {
                Some(q) => thousandths(q.as_str())?,
                None => 1000,
            };
            Some(Range { mime, quality })
        })
        .collect()
}

/// `0`, `0.5`, `1.000`… as thousandths; `None` for anything else.
fn thousandths(q: &str) -> Option<u16> {
    let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(fraction),
        "1" if fraction == 0 => Some(1000),
        _ => None,
    }
}

/// The weight `ranges` give `type_/subtype`, with how specific the range
/// that gave it was; `None` when no range matches.
fn quality(ranges: &[Range], type_: &str, subtype: &str) -> Option<(u16, Specificity)> {
    ranges
        .iter()
        .filter_map(|range| {
            let range_type = range.mime.type_().as_str();
            let range_subtype = range.mime.subtype().as_str();
            let specificity = if range_type == "*" && range_subtype == "*" {
                Specificity::Any
            } else if !range_type.eq_ignore_ascii_case(type_) {
                return None;
            } else if range_subtype == "*" {
                Specificity::Subtypes
            } else if range_subtype.eq_ignore_ascii_case(subtype) {
                Specificity::Exact
            } else {
                return None;
            };
            Some((specificity, range.quality))
        })
        // The most specific range decides; among equals, the first.
        .fold(
            None,
            |best: Option<(Specificity, u16)>, (specificity, q)| match best {
                Some((seen, _)) if seen >= specificity => best,
                _ => Some((specificity, q)),
            },
        )
        .map(|(specificity, q)| (q, specificity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn chosen(accept: &str) -> Format {
        Format::from_accept(Some(accept))
    }

    #[test]
    fn json_is_chosen_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Html);
        assert_eq!(chosen(""), Format::Html);
        assert_eq!(chosen("text/html,*/*;q=0.8"), Format::Html);
        assert_eq!(chosen("*/*"), Format::Html);
        assert_eq!(chosen("application/json"), Format::Json);
        assert_eq!(chosen("application/json; charset=utf-8"), Format::Json);
    }

    #[test]
    fn the_higher_q_value_wins() {
        assert_eq!(chosen("application/json;q=0.5, text/html"), Format::Html);
        assert_eq!(chosen("application/json; q=0.5, text/html"), Format::Html);
        assert_eq!(chosen("text/html;q=0.5, application/json"), Format::Json);
        assert_eq!(
            chosen("text/html;q=0.4, application/json;q=0.5"),
            Format::Json
        );
        assert_eq!(chosen("application/json;q=0.9, */*"), Format::Html);
        assert_eq!(chosen("application/*, text/html;q=0.1"), Format::Json);
        assert_eq!(
            chosen("APPLICATION/JSON;Q=1, text/html;q=0.1"),
            Format::Json
        );
    }

    #[test]
    fn the_most_specific_range_gives_the_q_value() {
        assert_eq!(chosen("*/*;q=0.1, application/json"), Format::Json);
        assert_eq!(
            chosen("text/*;q=0.2, text/html;q=0.9, application/json;q=0.5"),
            Format::Html
        );
        assert_eq!(
            chosen("text/html;q=0.2, text/*, application/json;q=0.5"),
            Format::Json
        );
    }

    #[test]
    fn q_zero_means_not_acceptable() {
        assert_eq!(
            chosen("text/html;q=0, application/json;q=0.1"),
            Format::Json
        );
        assert_eq!(chosen("application/json;q=0"), Format::Html);
        assert_eq!(chosen("application/json;q=0.000, */*;q=0.1"), Format::Html);
        assert_eq!(chosen("*/*;q=0, application/json"), Format::Json);
        assert_eq!(chosen("text/html;q=0, */*"), Format::Json);
    }

    #[test]
    fn ties_keep_the_old_preference() {
        assert_eq!(chosen("text/html, application/json"), Format::Json);
        assert_eq!(chosen("application/json, text/html"), Format::Json);
        assert_eq!(chosen("application/json, */*"), Format::Json);
        assert_eq!(
            chosen("text/html;q=0.5, application/json;q=0.5"),
            Format::Json
        );
        assert_eq!(chosen("application/*, text/html"), Format::Html);
    }

    #[test]
    fn ranges_that_do_not_parse_are_left_out() {
        assert_eq!(
            chosen("application/json;q=2, text/html;q=0.1"),
            Format::Html
        );
        assert_eq!(chosen("application/json;q=often"), Format::Html);
        assert_eq!(
            chosen("application/json;q=0.5555, text/html;q=0.1"),
            Format::Html
        );
        assert_eq!(chosen("nonsense, application/json"), Format::Json);
        assert_eq!(chosen(",,application/json,"), Format::Json);
    }

    #[test]
    fn several_accept_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        assert_eq!(Format::from_headers(&headers), Format::Html);
        headers.append(ACCEPT, "application/json;q=0.5".parse().unwrap());
        assert_eq!(Format::from_headers(&headers), Format::Json);
        headers.append(ACCEPT, "text/html".parse().unwrap());
        assert_eq!(Format::from_headers(&headers), Format::Html);
        headers.append(ACCEPT, "text/*;q=0.1".parse().unwrap());
        assert_eq!(Format::from_headers(&headers), Format::Html);
    }

    #[test]
    fn q_values_are_read_to_the_thousandth() {
        assert_eq!(thousandths("0"), Some(0));
        assert_eq!(thousandths("0.5"), Some(500));
        assert_eq!(thousandths("0.125"), Some(125));
        assert_eq!(thousandths("1"), Some(1000));
        assert_eq!(thousandths("1.000"), Some(1000));
        assert_eq!(thousandths("1.5"), None);
        assert_eq!(thousandths("-0.5"), None);
        assert_eq!(thousandths("0.+5"), None);
        assert_eq!(thousandths(""), None);
    }
}
