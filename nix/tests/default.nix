# The flake's checks besides the package build: clippy, rustfmt, and one
# NixOS VM test per file in this directory (run them with `nix flake check`
# on a machine with KVM, or one at a time with
# `nix build .#checks.x86_64-linux.vm-lifecycle -L`).
#
# Every other *.nix file here is a VM test: adding a file adds a check.
{ pkgs, package }:

let
  inherit (pkgs) lib;

  # The package's build with the tests in the source, for clippy.
  withTests = package.override { withTests = true; };

  clippy = withTests.overrideAttrs (old: {
    pname = "${old.pname}-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --offline --all-targets --all-features -- -D warnings
      runHook postBuild
    '';
    installPhase = ''
      runHook preInstall
      touch $out
      runHook postInstall
    '';
    postInstall = "";
    doCheck = false;
    doInstallCheck = false;
  });

  fmt = pkgs.runCommandLocal "voxnix-fmt"
    {
      nativeBuildInputs = [ pkgs.cargo pkgs.rustfmt ];
      src = withTests.src;
    } ''
    cp -r $src source
    chmod -R u+w source
    cd source
    HOME=$TMPDIR CARGO_NET_OFFLINE=true cargo fmt --all -- --check
    touch $out
  '';

  testFiles = lib.filterAttrs
    (file: type: type == "regular" && lib.hasSuffix ".nix" file
      && !(builtins.elem file [ "default.nix" "common.nix" ]))
    (builtins.readDir ./.);

  vmTests = lib.mapAttrs'
    (file: _: lib.nameValuePair "vm-${lib.removeSuffix ".nix" file}"
      (import (./. + "/${file}") { inherit pkgs package; }))
    testFiles;
in
{ inherit clippy fmt; } // vmTests
