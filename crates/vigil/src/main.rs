//! The `vigil` command. Everything lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
