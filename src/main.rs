use std::process::ExitCode;

fn main() -> ExitCode {
    voxnix::frontends::cli::main()
}
