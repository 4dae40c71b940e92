# A stand-in `pkgs` for the evaluation suite: every package voxnix's Nix code
# names is a fake derivation (an attribute set with type = "derivation", a
# store-shaped outPath, `meta`, and the arguments it was made from under
# `drvAttrs`), so nothing is built and no nixpkgs is needed. The builders
# voxnix uses (writeText, writeShellScript, runCommandLocal, callPackage,
# buildRustPackage, formats.toml, mkShell, runNixOSTest) keep what they were
# given, so a test can read what would be written: a file's text, the
# rendered TOML value.
#
# `formats.toml` has nixpkgs' real shape: its type is lib.types.toml (the
# TOML value type, a oneOf; pkgs/pkgs-lib/formats/toml), its `generate` a
# structured-attrs derivation holding the value.
{ lib, system ? "x86_64-linux", path ? /nonexistent/nixpkgs }:

let
  hashOf = s: builtins.substring 0 32 (builtins.hashString "sha256" s);

  # A derivation that records its arguments; `overrideAttrs` works like
  # stdenv's (a function of the old attributes).
  fake = name: attrs:
    let
      self = {
        type = "derivation";
        inherit name system;
        # A file's text and a build script are part of the hash, so using the
        # path evaluates them (an error in a script's text surfaces), and two
        # different texts never share a path.
        outPath = "/nix/store/${hashOf (builtins.concatStringsSep "\n" [
          name
          (builtins.toJSON (builtins.attrNames attrs))
          (attrs.text or "")
          (attrs.buildCommand or "")
        ])}-${name}";
        drvPath = "/nix/store/${hashOf name}-${name}.drv";
        outputs = [ "out" ];
        outputName = "out";
        meta = attrs.meta or { };
        drvAttrs = attrs;
        passthru = attrs.passthru or { };
        overrideAttrs = f:
          let new = attrs // (if builtins.isFunction f then f attrs else f); in
          fake (new.name or "${new.pname}-${new.version}") new;
      } // (attrs.passthru or { });
    in
    self;

  package = pname: version: fake "${pname}-${version}" {
    inherit pname version;
    meta.mainProgram = pname;
  };

  self = {
    inherit lib path;
    stdenv = {
      hostPlatform = { inherit system; };
      buildPlatform = { inherit system; canExecute = _: true; };
      mkDerivation = attrs: fake (attrs.name or "${attrs.pname}-${attrs.version}") attrs;
    };
    stdenvNoCC = self.stdenv;

    callPackage = lib.callPackageWith self;

    writeText = name: text: fake name { inherit text; };
    writeShellScript = name: text: fake name { inherit text; executable = true; };
    runCommandLocal = name: env: buildCommand: fake name (env // { inherit buildCommand; });
    runCommand = self.runCommandLocal;
    mkShell = attrs: fake (attrs.name or "nix-shell") attrs;

    formats.toml = { }: {
      type = lib.types.toml;
      generate = name: value: fake name {
        inherit value;
        __structuredAttrs = true;
        buildCommand = ''json2x toml --unwrap value "$NIX_ATTRS_JSON_FILE" "$out"'';
      };
    };

    rustPlatform = {
      buildRustPackage = args: fake "${args.pname}-${args.version}" args;
      rustLibSrc = fake "rust-lib-src" { };
    };
    installShellFiles = package "install-shell-files" "1";
    testers.runNixOSTest = test: fake "vm-test-run-${test.name}" test;

    # Packages the module, the container modules and the dev shell name.
    nix = package "nix" "2.28.3";
    zfs = package "zfs" "2.3.2";
    dnsmasq = package "dnsmasq" "2.91";
    nftables = package "nftables" "1.1.3";
    jq = package "jq" "1.7.1";
    code-server = package "code-server" "4.99.3";
    tailscale = package "tailscale" "1.82.5";
    fish = (package "fish" "4.0.2") // { shellPath = "/bin/fish"; };
    bash = package "bash" "5.2p37";
    coreutils = package "coreutils" "9.7";
    gnugrep = package "gnugrep" "3.11";
    gnused = package "gnused" "4.9";
    git = package "git" "2.49.0";
    openssh = package "openssh" "10.0p2";
    gcc = package "gcc-wrapper" "14.2.1";
    gnumake = package "gnumake" "4.4.1";
    pkg-config = package "pkg-config-wrapper" "0.29.2";
    python3 = package "python3" "3.13.3";
    ripgrep = package "ripgrep" "14.1.1";
    fd = package "fd" "10.2.0";
    curl = package "curl" "8.13.0";
    wget = package "wget" "1.25.0";
    file = package "file" "5.46";
    tree = package "tree" "2.2.1";
    less = package "less" "668";
    unzip = package "unzip" "6.0";
    htop = package "htop" "3.4.1";
    nodejs = package "nodejs" "22.15.0";
    python3Packages.requests = package "python3.13-requests" "2.32.3";
    cargo = package "cargo" "1.86.0";
    rustc = package "rustc" "1.86.0";
    clippy = package "clippy" "1.86.0";
    rustfmt = package "rustfmt" "1.86.0";
    rust-analyzer = package "rust-analyzer" "2025-04-28";
    cargo-nextest = package "cargo-nextest" "0.9.94";
    dbus = package "dbus" "1.14.10";
    iproute2 = package "iproute2" "6.14.0";
    util-linux = package "util-linux" "2.41";
  };
in
self
