//! The `fewstep` command line; its definitions live in the library's `cli`
//! module (feature `cli`).

fn main() -> std::process::ExitCode {
    fewstep::cli::main()
}
