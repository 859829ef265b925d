use std::process::ExitCode;

use microservice::configuration::{Invocation, Settings};
use microservice::startup::{self, StartError};

fn main() -> ExitCode {
    let outcome = match Settings::parse_from(std::env::args_os()) {
        Ok(Invocation::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(settings)) => startup::run(*settings),
        Err(error) => Err(StartError::Config(error)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("microservice: {error}");
            match error {
                StartError::Config(_) => ExitCode::from(2),
                StartError::Runtime(_) => ExitCode::FAILURE,
            }
        }
    }
}
