//! `idv-worker`: everything happens in [`worker::entry::main`], which the
//! tests also run as a child process.

fn main() -> std::process::ExitCode {
    worker::entry::main(std::env::args().skip(1))
}
