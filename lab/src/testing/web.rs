//! Requests to a hop, as a browser or a load would send them.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// A whole answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// Trace id and span id from the `traceresponse` header.
    pub fn trace_response(&self) -> (String, String) {
        let value = self
            .headers
            .get("traceresponse")
            .expect("a traceresponse header")
            .to_str()
            .expect("ASCII");
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "traceresponse {value}");
        assert_eq!(parts[0], "00");
        (parts[1].to_string(), parts[2].to_string())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

pub async fn get_json(url: &str) -> Answer {
    get(url, &[("accept", "application/json")]).await
}

/// What a request of [`requests`] came back with.
pub struct Request {
    pub status: u16,
    pub trace_id: String,
    /// The entry sampled it (the `traceresponse` flags).
    pub sampled: bool,
}

/// `count` requests to `url`, `concurrency` at a time.
pub async fn requests(url: &str, count: usize, concurrency: usize) -> Vec<Request> {
    let client = reqwest::Client::new();
    let mut answers = Vec::with_capacity(count);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..count {
        if pending.len() == concurrency {
            answers.push(pending.join_next().await.unwrap().unwrap());
        }
        let (client, url) = (client.clone(), url.to_string());
        pending.spawn(async move {
            let response = client.get(&url).send().await.expect("an answer");
            let header = response.headers()["traceresponse"]
                .to_str()
                .unwrap()
                .to_string();
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            let parts: Vec<&str> = header.split('-').collect();
            Request {
                status,
                trace_id: parts[1].to_string(),
                sampled: parts[3] == "01",
            }
        });
    }
    while let Some(answer) = pending.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

/// One request to `url`: the trace id it got.
pub async fn request(url: &str) -> String {
    requests(url, 1, 1).await.remove(0).trace_id
}

/// A port nothing listens on, as an http URL.
pub fn dead_url() -> String {
    format!("http://{}/", crate::instance::unused_local_addr())
}
