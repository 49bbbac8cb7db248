//! The `data-node` binary.

fn main() {
    eprintln!("data-node: not implemented yet");
    std::process::exit(2);
}
