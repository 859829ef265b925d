//! Bad settings stop start-up: exit code 2 and one line naming the variable
//! and the value.

use std::process::{Command, Output};

use lab::testing::*;

fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(binary())
        .env_clear()
        .env("TEMPLATES_DIR", templates_dir())
        .env("HTTP_PORT", "0")
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("the binary runs")
}

#[track_caller]
fn assert_refused(variable: &str, value: &str) {
    assert_refused_with(&[(variable, value)], variable, value);
}

#[track_caller]
fn assert_refused_with(vars: &[(&str, &str)], variable: &str, value: &str) {
    let output = run(vars, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(variable),
        "{vars:?} should name {variable}: {stderr}"
    );
    assert!(
        stderr.contains(value),
        "{vars:?} should show {value:?}: {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing started: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn bad_numbers_are_refused() {
    assert_refused("RESPONSE_TIME", "abc");
    assert_refused("RESPONSE_TIME", "-5");
    assert_refused("RESPONSE_TIME", "1.5");
    assert_refused("RESPONSE_TIME_JITTER", "x");
    assert_refused("ERROR_RATE", "2");
    assert_refused("ERROR_RATE", "-0.1");
    assert_refused("ERROR_RATE", "often");
    assert_refused("EXTERNAL_CALL_TIMEOUT", "0");
    assert_refused("MAX_HOPS", "-1");
    assert_refused("HTTP_PORT", "70000");
    assert_refused("OTEL_TRACES_SAMPLER_ARG", "1.5");
    assert_refused("EXTERNAL_CALL_RETRIES", "11");
    assert_refused("EXTERNAL_CALL_RETRIES", "-1");
    assert_refused("OTEL_METRIC_EXPORT_INTERVAL", "0");
    assert_refused("OTEL_METRIC_EXPORT_INTERVAL", "soon");
}

#[test]
fn bad_signal_exporters_are_refused() {
    for variable in [
        "OTEL_TRACES_EXPORTER",
        "OTEL_LOGS_EXPORTER",
        "OTEL_METRICS_EXPORTER",
    ] {
        assert_refused(variable, "loki");
        let line = refusal(&[(variable, "jaeger")], &[]);
        assert_eq!(
            line,
            format!("microservice: {variable}=\"jaeger\": expected one of otlp, console, none")
        );
    }
    assert_refused("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json");
    assert_refused("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp");
}

/// The one line a bad value gets: `VARIABLE="value": reason`.
fn refusal(vars: &[(&str, &str)], args: &[&str]) -> String {
    let output = run(vars, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{vars:?} {args:?}: {stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn numeric_settings_say_what_is_allowed() {
    let millis = "must be a whole number of milliseconds, 0 or more";
    for (variable, value, reason) in [
        ("RESPONSE_TIME", "-5", millis),
        ("RESPONSE_TIME", "1.5", millis),
        ("RESPONSE_TIME", "soon", millis),
        ("RESPONSE_TIME_JITTER", "-1", millis),
        (
            "EXTERNAL_CALL_TIMEOUT",
            "0",
            "must be a whole number of milliseconds, 1 or more",
        ),
        (
            "EXTERNAL_CALL_TIMEOUT",
            "-200",
            "must be a whole number of milliseconds, 1 or more",
        ),
        (
            "EXTERNAL_CALL_RETRIES",
            "11",
            "must be a whole number from 0 to 10",
        ),
        (
            "EXTERNAL_CALL_RETRIES",
            "-1",
            "must be a whole number from 0 to 10",
        ),
        (
            "MAX_HOPS",
            "-1",
            "must be a whole number of hops, 0 or more",
        ),
        (
            "MAX_HOPS",
            "4294967296",
            "must be a whole number of hops, 0 or more, at most 4294967295",
        ),
        (
            "HTTP_PORT",
            "70000",
            "must be a whole number from 0 to 65535 (0 picks a free port)",
        ),
        ("ERROR_RATE", "-0.1", "must be a number from 0.0 to 1.0"),
        ("ERROR_RATE", "often", "must be a number from 0.0 to 1.0"),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "1.5",
            "must be a number from 0.0 to 1.0",
        ),
    ] {
        assert_eq!(
            refusal(&[(variable, value)], &[]),
            format!("microservice: {variable}=\"{value}\": {reason}")
        );
    }
}

#[test]
fn a_flag_is_named_as_typed() {
    let millis = "must be a whole number of milliseconds, 0 or more";
    // The flag wins over the variable, and its error names the flag.
    let vars = [("RESPONSE_TIME", "5")];
    for args in [&["--response-time", "-5"][..], &["--response-time=-5"]] {
        assert_eq!(
            refusal(&vars, args),
            format!("microservice: --response-time=\"-5\": {millis}")
        );
    }
    assert_eq!(
        refusal(&[], &["--external-call-retries", "11"]),
        "microservice: --external-call-retries=\"11\": must be a whole number from 0 to 10"
    );
    // The variable set, the flag not typed: the variable is named.
    assert_eq!(
        refusal(&[("RESPONSE_TIME", "-5")], &["--response-time-jitter", "1"]),
        format!("microservice: RESPONSE_TIME=\"-5\": {millis}")
    );
}

#[test]
fn bad_context_settings_are_refused() {
    assert_refused("PROPAGATION", "b3");
    assert_refused("BAGGAGE", "lab.customer");
    assert_refused("BAGGAGE", "lab customer=alice");
    assert_refused("BAGGAGE", "lab.customer=al,ice=");
}

#[test]
fn bad_urls_are_refused() {
    assert_refused("EXTERNAL_CALL_URL", "ftp://example.com/");
    assert_refused("EXTERNAL_CALL_URL", "not a url");
    assert_refused("EXTERNAL_CALL_URL", "http://ok.test/,gopher://no.test/");
    assert_refused("EXTERNAL_CALL_URL", "https://needs-tls.test/");
    assert_refused("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317");
    assert_refused("TRACE_LINK", "http://grafana.test/explore");
    assert_refused("TRACE_LINK", "javascript:alert({trace_id})");
}

#[test]
fn bad_choices_are_refused() {
    assert_refused("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon");
    assert_refused("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json");
    assert_refused("OTEL_TRACES_EXPORTER", "zipkin");
    assert_refused("OTEL_TRACES_SAMPLER", "sometimes");
    assert_refused("OTEL_SDK_DISABLED", "maybe");
    assert_refused("EXTERNAL_CALL_MODE", "random");
    assert_refused("EXTERNAL_CALL_METHOD", "DELETE");
    assert_refused("LOG_FORMAT", "xml");
    assert_refused_with(
        &[("OTEL_TRACES_SAMPLER", "traceidratio")],
        "OTEL_TRACES_SAMPLER_ARG",
        "",
    );
}

#[test]
fn bad_templates_are_refused() {
    assert_refused("TEMPLATES_DIR", "/nonexistent/templates");

    let missing = tempdir_with_templates();
    std::fs::remove_file(missing.join("part.html")).unwrap();
    let dir = missing.to_str().unwrap();
    assert_refused_with(&[("TEMPLATES_DIR", dir)], "TEMPLATES_DIR", "part.html");

    let broken = tempdir_with_templates();
    std::fs::write(broken.join("page.html"), "<p>{{ unclosed </p>").unwrap();
    let dir = broken.to_str().unwrap();
    assert_refused_with(&[("TEMPLATES_DIR", dir)], "TEMPLATES_DIR", "page.html");

    for dir in [missing, broken] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn flags_work_like_variables() {
    let output = run(&[], &["--response-time", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--response-time=\"soon\""));
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let output = run(&[], &["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "HTTP_HOST=",
        "HTTP_PORT=",
        "OTEL_SERVICE_NAME=",
        "TITLE=",
        "RESPONSE_TIME=",
        "RESPONSE_TIME_JITTER=",
        "EXTERNAL_CALL_URL=",
        "EXTERNAL_CALL_MODE=",
        "EXTERNAL_CALL_METHOD=",
        "EXTERNAL_CALL_TIMEOUT=",
        "EXTERNAL_CALL_RETRIES=",
        "PROPAGATION=",
        "BAGGAGE=",
        "ERROR_RATE=",
        "MAX_HOPS=",
        "TEMPLATES_DIR=",
        "TRACE_LINK=",
        "LOG_FORMAT=",
        "OTEL_EXPORTER_OTLP_ENDPOINT=",
        "OTEL_EXPORTER_OTLP_PROTOCOL=",
        "OTEL_TRACES_SAMPLER=",
        "OTEL_TRACES_EXPORTER=",
        "OTEL_LOGS_EXPORTER=",
        "OTEL_METRICS_EXPORTER=",
        "OTEL_METRIC_EXPORT_INTERVAL=",
        "OTEL_SDK_DISABLED=",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_BSP_SCHEDULE_DELAY",
    ] {
        assert!(help.contains(variable), "--help lacks {variable}:\n{help}");
    }
    assert!(help.contains("[default: 8080]"));
    assert!(help.contains("[default: 16]"));
}

/// Every hop setting of the chain's schema (schema/chain.schema.json, from
/// lab's `HopSpec`) is a variable of the service, with the schema's default
/// and allowed values: a hop that leaves a setting out and one that writes
/// its default behave alike, in the lab runner and in the NixOS lab.
#[test]
fn the_chain_schemas_settings_are_the_services() {
    use clap::CommandFactory;
    use lab::chain_file::schema;

    let command = microservice::configuration::Settings::command();
    for (setting, variable) in schema::hop_variables() {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == variable))
            .unwrap_or_else(|| panic!("{setting}: the service reads no {variable}"));
        let property = &schema::hop_properties()[setting];
        if let Some(default) = property.get("default").and_then(schema::value_text) {
            let service: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(service, [default], "{setting} ({variable}): default");
        }
        if let Some(values) = property.get("enum").and_then(|e| e.as_array()) {
            let mut schema: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
            let mut service: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            schema.sort();
            service.sort();
            assert_eq!(service, schema, "{setting} ({variable}): allowed values");
        }
    }
}

/// docs/configuration.md's table of the service's variables is rendered
/// from the service's own settings (what `--help` shows), so the two cannot
/// drift (`UPDATE_DOCS=1 cargo test --test service` rewrites it).
#[test]
fn the_docs_table_of_variables_is_the_services() {
    use clap::CommandFactory;
    use lab::generated_docs::{check_committed, root, with_section};

    let command = microservice::configuration::Settings::command();
    let mut table = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
            .collect();
        // A path into this checkout (TEMPLATES_DIR) is named as such, so the
        // table is the same in every clone.
        let checkout = env!("CARGO_MANIFEST_DIR");
        let default = match defaults.as_slice() {
            [] => "none".to_string(),
            [path] if path.starts_with(checkout) => {
                format!(
                    "the checkout's `{}`",
                    path[checkout.len()..].trim_start_matches('/')
                )
            }
            values => format!("`{}`", values.join(",")),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut meaning = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty()
            && !["true", "false"]
                .iter()
                .all(|b| values.contains(&format!("`{b}`")))
        {
            if !meaning.ends_with(['.', ')', ']']) {
                meaning.push('.');
            }
            meaning.push_str(&format!(" One of {}.", values.join(", ")));
        }
        table.push_str(&format!(
            "| `{}` | `--{long}` | {default} | {} |\n",
            env.to_string_lossy(),
            meaning.replace('|', "\\|")
        ));
    }
    let path = root().join("docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = with_section(
        &text,
        "docs/configuration.md",
        "<!-- service variables: generated from src/configuration.rs -->",
        "<!-- service variables: end -->",
        &table,
    )
    .unwrap();
    check_committed(&path, &expected, "src/configuration.rs").unwrap();
}
