# voxnix module library index.
#
# Every regular `*.nix` file in ../modules is one module; its name is the
# file name without `.nix`.  Nothing else lists modules: adding a file adds
# a module.  This file uses builtins only (no nixpkgs), so the daemon can
# read the catalog with plain `nix-instantiate --eval`.
#
#   nix-instantiate --eval --strict --json nix/library.nix -A catalog
#
# Result:
#   names   : sorted list of module names
#   modules : name -> { name, description, settings, credentials, module, path }
#             (validated when accessed). A setting marked `personal = true`
#             (a git identity, SSH keys) never reaches the Nix store: the
#             daemon leaves it out of the build and hands it to the
#             container at start (nix/mkContainer.nix, `voxnix.personalFile`)
#   catalog : JSON-safe list of { name, description, settings, credentials }
#   settingTypes : the setting type vocabulary
#   typeMatches  : type -> value -> bool
{ modulesDir ? ../modules }:

let
  fail = msg: throw "voxnix: ${msg}";

  # The only setting types a module may declare.  The daemon shows these
  # verbatim, so keep the list short and stable.
  settingTypes = [ "string" "int" "bool" "list of string" ];

  typeMatches = type: value:
    if type == "string" then builtins.isString value
    else if type == "int" then builtins.isInt value
    else if type == "bool" then builtins.isBool value
    else if type == "list of string" then
      builtins.isList value && builtins.all builtins.isString value
    else false;

  # Valid module (file) names: lower case, digits, dashes.
  isModuleName = n: builtins.match "[a-z][a-z0-9-]*" n != null;
  isSettingName = n: builtins.match "[a-z][a-z0-9_]*" n != null;
  isCredentialName = n: builtins.match "[a-z0-9][a-z0-9_.-]*" n != null;

  join = builtins.concatStringsSep ", ";

  entries = builtins.readDir modulesDir;

  isModuleFile = file:
    entries.${file} == "regular"
    && builtins.match ".+\\.nix" file != null;

  files = builtins.filter isModuleFile (builtins.attrNames entries);

  nameOf = file: builtins.substring 0 (builtins.stringLength file - 4) file;

  # attrNames is sorted, and stripping the common ".nix" suffix keeps
  # the order, but sort explicitly so the contract does not rely on it.
  names = builtins.sort builtins.lessThan (map
    (file:
      let n = nameOf file; in
      if isModuleName n then n
      else fail "module file 'modules/${file}' has an invalid name (use lower case letters, digits and '-', starting with a letter)")
    files);

  allowedFields = [ "description" "settings" "credentials" "module" ];

  checkSetting = where: sname: decl:
    let w = "${where}: setting '${sname}'"; in
    if !isSettingName sname then
      fail "${w}: invalid setting name (use lower case letters, digits and '_', starting with a letter)"
    else if !builtins.isAttrs decl then
      fail "${w}: must be an attribute set { type, default, description }"
    else if !(decl ? type) || !builtins.elem decl.type settingTypes then
      fail "${w}: type must be one of: ${join (map (t: "\"${t}\"") settingTypes)}"
    else if !(decl ? description) || !builtins.isString decl.description || decl.description == "" then
      fail "${w}: needs a non-empty description"
    else if !(decl ? default) then
      fail "${w}: needs a default"
    else if !typeMatches decl.type decl.default then
      fail "${w}: default does not match type \"${decl.type}\""
    else if decl ? personal && !builtins.isBool decl.personal then
      fail "${w}: personal must be true or false"
    else
      let extra = builtins.filter (k: !builtins.elem k [ "type" "default" "description" "personal" ]) (builtins.attrNames decl); in
      if extra != [ ] then fail "${w}: unknown field(s): ${join extra}"
      else { inherit (decl) type default description; personal = decl.personal or false; };

  loadModule = name:
    let
      path = modulesDir + "/${name}.nix";
      where = "module '${name}' (modules/${name}.nix)";
      raw = import path;
      unknown = builtins.filter (k: !builtins.elem k allowedFields) (builtins.attrNames raw);
      settings = raw.settings or { };
      credentials = raw.credentials or { };
    in
    if !builtins.isAttrs raw then
      fail "${where}: must evaluate to an attribute set { description, settings, module }"
    else if unknown != [ ] then
      fail "${where}: unknown attribute(s): ${join unknown} (allowed: ${join allowedFields})"
    else if !(raw ? description) || !builtins.isString raw.description || raw.description == "" then
      fail "${where}: needs a non-empty string 'description'"
    else if !builtins.isAttrs settings then
      fail "${where}: 'settings' must be an attribute set"
    else if !builtins.isAttrs credentials then
      fail "${where}: 'credentials' must be an attribute set of name -> description"
    else if !(raw ? module) || !(builtins.isFunction raw.module || builtins.isAttrs raw.module) then
      fail "${where}: needs a 'module' (a NixOS module: function or attribute set)"
    else
      let
        checkedSettings = builtins.mapAttrs (checkSetting where) settings;
        checkedCredentials = builtins.mapAttrs
          (cname: desc:
            if !isCredentialName cname then
              fail "${where}: credential '${cname}': invalid name"
            else if !builtins.isString desc || desc == "" then
              fail "${where}: credential '${cname}': needs a non-empty description string"
            else desc)
          credentials;
      in
      # Force validation of every declaration before handing the entry out.
      builtins.deepSeq [ checkedSettings checkedCredentials ] {
        inherit name path;
        inherit (raw) description module;
        settings = checkedSettings;
        credentials = checkedCredentials;
      };

  modules = builtins.listToAttrs (map (n: { name = n; value = loadModule n; }) names);

  # Forced completely before it is returned: an invalid module file makes
  # the whole catalog fail instead of printing half of it.
  catalog =
    let
      list = map
        (n: {
          name = n;
          inherit (modules.${n}) description settings credentials;
        })
        names;
    in
    builtins.deepSeq list list;
in
{
  inherit names modules catalog settingTypes typeMatches;
}
