//! A short run of the benchmark, so that it cannot rot: every mode runs and
//! the JSON report has its shape.

use std::path::PathBuf;

use lab::bench::{self, BenchConfig};

use lab::testing::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_short_benchmark_run_reports_every_mode() {
    let mut config = BenchConfig::smoke(PathBuf::from(binary()));
    config.templates_dir = Some(PathBuf::from(templates_dir()));

    let report = bench::run(&config, &|_| {})
        .await
        .expect("the benchmark runs");
    let json = serde_json::to_value(&report).unwrap();

    for key in [
        "setup",
        "throughput",
        "tracing_overhead",
        "signal_cost",
        "memory",
        "delay_fidelity",
        "collector_faults",
        "shutdown",
        "targets",
    ] {
        assert!(json.get(key).is_some(), "the report lacks {key}: {json:#}");
    }
    for setting in [
        "sampled",
        "sampled_traces_only",
        "sampled_json",
        "sampled_out",
        "disabled",
        "sampled_half_capacity",
    ] {
        let figures = &json["throughput"][setting];
        assert!(
            figures["requests"].as_u64().unwrap() > 0,
            "{setting}: {figures}"
        );
        assert!(figures["requests_per_second"].as_f64().unwrap() > 0.0);
        assert!(figures["p99_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(figures["non_2xx"], 0, "{setting}: {figures}");
    }
    // Spans were counted, and none of the paced run's were lost.
    let half = &json["throughput"]["sampled_half_capacity"]["spans"];
    assert!(half["expected"].as_u64().unwrap() > 0, "{half}");
    assert_eq!(half["received"], half["expected"], "{half}");
    assert!(json["throughput"]["sampled_out"]["spans"].is_null());
    // JSON requests make no template spans: fewer spans per request, all counted.
    let json_spans = &json["throughput"]["sampled_json"]["spans"];
    let json_requests = json["throughput"]["sampled_json"]["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(
        json_spans["expected"].as_u64().unwrap(),
        json_requests * 3,
        "{json_spans}"
    );
    assert!(
        json["tracing_overhead"]["html_share_of_json"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        json["delay_fidelity"]["p95_overshoot_ms"]
            .as_f64()
            .is_some()
    );

    assert_eq!(
        json["memory"]["idle_kib"].as_array().unwrap().len(),
        config.hops
    );
    assert!(json["memory"]["after_load_kib"][0].as_u64().unwrap() > 0);
    assert_eq!(
        json["delay_fidelity"]["configured_ms"],
        serde_json::json!([100, 200])
    );
    assert_eq!(
        json["collector_faults"]["phases"].as_array().unwrap().len(),
        5
    );
    assert_eq!(json["shutdown"].as_array().unwrap().len(), config.hops);
    for run in json["shutdown"].as_array().unwrap() {
        assert_eq!(run["accepted_but_failed"], 0, "{run}");
        assert_eq!(run["exit_ok"], true, "{run}");
    }
    assert!(
        json["signal_cost"]["all_share_of_traces_only"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(json["targets"].as_array().unwrap().len(), 9);
}
