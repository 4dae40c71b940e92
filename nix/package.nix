# The voxnix crate: the daemon, the CLI and the front ends in one binary, plus
# the D-Bus policy (share/dbus-1/system.d, for services.dbus.packages) and
# shell completions.
#
#   pkgs.callPackage ./nix/package.nix { }
#
# Built from Cargo.lock (every dependency is a crates.io crate, vendored by
# rustPlatform).  Needs a nixpkgs whose rustc satisfies Cargo.toml's
# rust-version.  `withTests = true` keeps tests/ in the source, for the clippy
# check (nix/tests/default.nix); the package itself does not need them.
{ lib
, stdenv
, rustPlatform
, installShellFiles
, withTests ? false
}:

let
  manifest = lib.importTOML ../Cargo.toml;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions ([
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../data
      # Cargo.toml names the benchmarks, so cargo wants their files.
      ../benches
    ] ++ lib.optional withTests ../tests);
  };
in
rustPlatform.buildRustPackage {
  pname = manifest.package.name;
  inherit (manifest.package) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # The unit tests run with `cargo test` in the repository's own suite; the
  # integration tests boot sandbox appliances as root, which a Nix build
  # sandbox cannot do.  The NixOS VM tests (nix/tests/) cover the package.
  doCheck = false;

  postInstall = ''
    install -Dm644 data/dbus/org.voxnix.Voxnix1.conf \
      $out/share/dbus-1/system.d/org.voxnix.Voxnix1.conf
  '' + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd voxnix \
      --bash <($out/bin/voxnix completions bash) \
      --fish <($out/bin/voxnix completions fish) \
      --zsh <($out/bin/voxnix completions zsh)
  '';

  meta = {
    inherit (manifest.package) description;
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "voxnix";
  };
}
