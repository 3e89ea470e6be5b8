//! Prints the kernel paths this CPU supports, one name per line (slowest
//! first), for scripts that run the tests once per path:
//! `for isa in $(cargo run -q --release --example isas); do BACKPROP_ISA=$isa cargo test; done`

fn main() {
    for isa in backprop::kernel::available_isas() {
        println!("{isa}");
    }
}
