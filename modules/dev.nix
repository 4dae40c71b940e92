{
  description = "A small development toolchain: gcc, make, pkg-config, python3, ripgrep, fd, jq and friends.";

  settings = {
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
    in
    {
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
