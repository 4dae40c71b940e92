# The machine every VM test boots: voxnix enabled with its defaults, able to
# build containers without a network.
#
# A NixOS test VM has no network, so the container system the daemon builds
# must already be in the VM's store.  `referenceSystem` is the container the
# lifecycle test creates (same name and modules), built on the host side by
# the same nix/buildContainer.nix the daemon uses.  If the daemon's spec
# differs in details (it embeds the spec), only a few small derivations
# (/etc, the system's top level) are rebuilt in the VM, from stdenvNoCC and
# the closure below, as NixOS's own imperative-container test does.
{ package }:

{ config, lib, pkgs, ... }:

let
  referenceSpec = {
    name = "demo";
    modules = [ "git" "fish" ];
    workspace = true;
  };

  referenceSystem = import ../buildContainer.nix {
    nixpkgs = pkgs.path;
    specFile = builtins.toFile "voxnix-reference-spec.json" (builtins.toJSON referenceSpec);
    system = pkgs.stdenv.hostPlatform.system;
  };
in
{
  imports = [ ../module.nix ];

  services.voxnix = {
    enable = true;
    inherit package;
    # The bot's unit, user and credentials are part of what the tests check;
    # the bot itself cannot reach Telegram from a test VM.
    telegram = {
      enable = true;
      tokenFile = "/etc/voxnix-test/telegram-token";
      allowedChatIds = [ 42 ];
    };
  };

  # A stand-in secret; a real host uses agenix or sops-nix (docs/nixos.md).
  environment.etc."voxnix-test/telegram-token".text = "123456:not-a-real-token";

  virtualisation = {
    memorySize = 3072;
    diskSize = 8192;
    cores = 2;
    writableStore = true;
    additionalPaths = [
      referenceSystem
      pkgs.path
      pkgs.stdenv
      pkgs.stdenvNoCC
    ];
  };

  # No binary cache to reach; builds happen in the VM's nix-daemon.
  nix.settings = {
    substituters = lib.mkForce [ ];
    sandbox = false;
  };

  # A local user outside the front-end group, for the access tests.
  users.users.alice = {
    isNormalUser = true;
    uid = 1000;
  };

  environment.systemPackages = [ pkgs.jq ];
}
