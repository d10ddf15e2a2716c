//! `va`: thin entry point. Parses the command line, runs the command, and maps the error to
//! its exit code in one place.

fn main() {
    let code = vidax::cli::main();
    std::process::exit(code);
}
