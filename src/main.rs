fn main() -> std::process::ExitCode {
    nodelet::cli::main()
}
