//! The `vitals` binary: parse the command line and hand over to [`vitals::run`].

fn main() {
    let parsed = vitals::cli::parse();
    match vitals::run::main(parsed) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vitals: {e:#}");
            std::process::exit(1);
        }
    }
}
