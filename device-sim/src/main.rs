//! `kubetwin-sim`: simulates devices that speak the kubetwin MQTT contract.

fn main() {
    eprintln!("kubetwin-sim: the device simulator is not implemented yet (see issue 3)");
    std::process::exit(2);
}
