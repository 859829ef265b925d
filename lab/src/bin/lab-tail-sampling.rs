//! `lab-tail-sampling SETTINGS EXPORT...`: the runner's tail-sampling
//! decisions on recorded traffic. SETTINGS is a JSON file with the
//! `tail_sampling` processor's settings (as an exercise's `collector`
//! block has them); each EXPORT a file holding one OTLP/HTTP export request
//! body (protobuf) as the hops sent it. Prints one JSON object per trace:
//! traceId, spans, error, durationMs, kept, keptBy.

use std::process::ExitCode;

use lab::trace::replay::{decide_all, decode};
use lab::trace::tail_sampling::TailSampling;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lab-tail-sampling: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(settings_path) = args.next() else {
        anyhow::bail!("usage: lab-tail-sampling SETTINGS_JSON EXPORT_PB...");
    };
    let text = std::fs::read_to_string(&settings_path)
        .map_err(|error| anyhow::anyhow!("cannot read {settings_path}: {error}"))?;
    let settings: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("{settings_path} is not JSON: {error}"))?;
    let sampling = TailSampling::from_settings(&settings)?;
    let mut recorded = Vec::new();
    for path in args {
        let body =
            std::fs::read(&path).map_err(|error| anyhow::anyhow!("cannot read {path}: {error}"))?;
        recorded.push((path, body));
    }
    for decision in decide_all(&sampling, decode(&recorded)?) {
        println!("{}", serde_json::to_string(&decision)?);
    }
    Ok(())
}
