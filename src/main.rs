fn main() {
    std::process::exit(negimg::cli::main());
}
