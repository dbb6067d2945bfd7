fn main() -> std::process::ExitCode {
    sessiongate::cli::main()
}
