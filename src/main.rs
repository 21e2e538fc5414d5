#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tapgate::cli::run()
}
