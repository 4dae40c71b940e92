{
  description = "A small development toolchain: gcc, make, pkg-config, python3, ripgrep, fd, jq and friends.";

  settings = {
    documentation = {
      type = "list of string";
      default = [ ];
      description = "Documentation to install, off in a voxnix container by default: any of \"man\" (man pages), \"info\", \"doc\" (packages' /share/doc), \"nixos\" (the NixOS manual).";
    };
    extra_packages = {
      type = "list of string";
      default = [ ];
      description = "Additional nixpkgs attribute paths to install, e.g. \"nodejs\" or \"python3Packages.requests\".";
    };
  };

  module = { config, lib, pkgs, ... }:
    let
      cfg = config.voxnix.settings.dev;
      lookup = attr:
        lib.attrByPath (lib.splitString "." attr)
          (throw "voxnix: setting 'dev.extra_packages': no package '${attr}' in nixpkgs")
          pkgs;
      wanted = part: builtins.elem part cfg.documentation;
      parts = [ "man" "info" "doc" "nixos" ];
    in
    {
      assertions = [{
        assertion = builtins.all (p: builtins.elem p parts) cfg.documentation;
        message = "voxnix: setting 'dev.documentation' takes only \"man\", \"info\", \"doc\" and \"nixos\"";
      }];
      documentation = {
        enable = lib.mkIf (cfg.documentation != [ ]) true;
        man.enable = lib.mkIf (wanted "man") true;
        info.enable = lib.mkIf (wanted "info") true;
        doc.enable = lib.mkIf (wanted "doc") true;
        nixos.enable = lib.mkIf (wanted "nixos") true;
      };
      environment.systemPackages = (with pkgs; [
        gcc
        gnumake
        pkg-config
        python3
        ripgrep
        fd
        jq
        curl
        wget
        file
        tree
        less
        unzip
        htop
      ]) ++ map lookup cfg.extra_packages;
    };
}
