# `nix develop`: the Rust toolchain and what the test suite drives (systemd's
# tools, dbus, dnsmasq, Nix itself).  The sandbox appliance and the
# integration tests still need root on the host, as in README.md.
{ pkgs }:

pkgs.mkShell {
  packages = with pkgs; [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    cargo-nextest
    dbus
    dnsmasq
    iproute2
    util-linux
    nix
    jq
  ];

  RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
}
