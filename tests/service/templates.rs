//! Templates are compiled once and picked up again when edited: an edit shows
//! on the next request, a broken edit keeps the last good templates serving
//! while the readiness probe says why, and the `template load` span tells
//! which of these happened.

use lab::instance::{Instance, InstanceConfig};

use lab::testing::*;

async fn instance_with_own_templates(
    receiver: &lab::receiver::OtlpReceiver,
) -> (Instance, std::path::PathBuf) {
    let templates = tempdir_with_templates();
    let config = InstanceConfig::new()
        .envs(receiver.env())
        .env("OTEL_SERVICE_NAME", "edited")
        .env("TEMPLATES_DIR", templates.to_str().unwrap());
    let instance = Instance::spawn(binary(), &config).await.unwrap();
    (instance, templates)
}

/// The `template load` span of the request that got `answer`.
async fn load_span(
    receiver: &lab::receiver::OtlpReceiver,
    answer: &Answer,
) -> lab::receiver::ReceivedSpan {
    let (trace_id, _) = answer.trace_response();
    let tree = Tree::new(trace_spans(receiver, &trace_id, 3).await);
    tree.one("edited", "template load").clone()
}

fn edit(templates: &std::path::Path, find: &str, replace: &str) {
    let path = templates.join("part.html");
    let source = std::fs::read_to_string(&path).unwrap();
    assert!(source.contains(find), "part.html has no {find:?}");
    std::fs::write(&path, source.replace(find, replace)).unwrap();
}

#[tokio::test]
async fn an_edited_template_shows_on_the_next_request() {
    let receiver = grpc_receiver();
    let (instance, templates) = instance_with_own_templates(&receiver).await;

    let before = get(instance.url(), &[]).await;
    assert_eq!(before.status, 200);
    assert!(!before.body.contains("edited by the test"));
    let cached = load_span(&receiver, &before).await;
    assert_eq!(cached.attr("template.cached").as_deref(), Some("true"));

    edit(
        &templates,
        "<dt>measured</dt>",
        "<dt>edited by the test</dt>",
    );
    let after = get(instance.url(), &[]).await;
    assert_eq!(after.status, 200);
    assert!(
        after.body.contains("<dt>edited by the test</dt>"),
        "{}",
        after.body
    );
    // This request read and compiled the files, and the span says so.
    let reloaded = load_span(&receiver, &after).await;
    assert_eq!(reloaded.attr("template.cached").as_deref(), Some("false"));
    let bytes: u64 = reloaded.attr("template.bytes").unwrap().parse().unwrap();
    assert!(bytes > 1000, "read {bytes} bytes of templates");
    assert!(!reloaded.is_error());

    // The next one uses what was compiled.
    let again = get(instance.url(), &[]).await;
    assert!(again.body.contains("<dt>edited by the test</dt>"));
    let cached = load_span(&receiver, &again).await;
    assert_eq!(cached.attr("template.cached").as_deref(), Some("true"));
    std::fs::remove_dir_all(&templates).unwrap();
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_templates_until_it_is_fixed() {
    let receiver = grpc_receiver();
    let (instance, templates) = instance_with_own_templates(&receiver).await;
    let base = instance.url().trim_end_matches('/').to_string();
    let good = std::fs::read_to_string(templates.join("part.html")).unwrap();

    edit(&templates, "{%- if hop.error %}", "{%- if hop.error");
    let served = get(instance.url(), &[]).await;
    assert_eq!(served.status, 200, "{}", served.body);
    assert!(
        served.body.contains("<dt>measured</dt>"),
        "the last good part"
    );
    let failed_reload = load_span(&receiver, &served).await;
    assert!(failed_reload.is_error());
    assert!(
        failed_reload
            .status_message()
            .contains("serving the last good templates"),
        "{}",
        failed_reload.status_message()
    );
    for _ in 0..3 {
        let not_ready = get(&format!("{base}/readyz"), &[]).await;
        assert_eq!(not_ready.status, 503);
        assert!(not_ready.body.contains("part.html"), "{}", not_ready.body);
        assert_eq!(get(instance.url(), &[]).await.status, 200);
    }
    let warnings = instance
        .stdout()
        .iter()
        .filter(|line| line.contains("do not compile"))
        .count();
    assert_eq!(warnings, 1, "logged once: {:#?}", instance.stdout());

    std::fs::write(
        templates.join("part.html"),
        good.replace("<dt>measured</dt>", "<dt>fixed</dt>"),
    )
    .unwrap();
    assert_eq!(get(&format!("{base}/readyz"), &[]).await.status, 200);
    let fixed = get(instance.url(), &[]).await;
    assert!(fixed.body.contains("<dt>fixed</dt>"), "{}", fixed.body);
    assert!(
        instance
            .stdout()
            .iter()
            .any(|line| line.contains("templates fixed and reloaded")),
        "{:#?}",
        instance.stdout()
    );
    std::fs::remove_dir_all(&templates).unwrap();
}

#[tokio::test]
async fn a_template_that_fails_while_rendering_answers_500() {
    let receiver = grpc_receiver();
    let (instance, templates) = instance_with_own_templates(&receiver).await;

    // Compiles, but the filter is looked up when rendering.
    edit(
        &templates,
        "{{ hop.title }}",
        "{{ hop.title | no_such_filter }}",
    );
    let broken = get(instance.url(), &[]).await;

    assert_eq!(broken.status, 500);
    assert!(broken.body.contains("no_such_filter"), "{}", broken.body);
    let (trace_id, _) = broken.trace_response();
    let tree = Tree::new(trace_spans(&receiver, &trace_id, 3).await);
    assert!(tree.one("edited", "template render").is_error());
    let server = tree.one("edited", "GET /");
    assert_eq!(server.attr("error.type").as_deref(), Some("template_error"));
    std::fs::remove_dir_all(&templates).unwrap();
}
