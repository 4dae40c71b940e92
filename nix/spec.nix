# voxnix container spec: checking and resolution, builtins only.
#
# Everything here is pure and needs no nixpkgs, so it can be evaluated with
# `nix-instantiate --eval --strict --json` (see nix/checkSpec.nix).
# nix/mkContainer.nix builds the NixOS module on top of these functions.
#
# A spec is the JSON object the daemon writes, e.g.
#   { "name": "dev", "owner": "telegram:123",
#     "modules": ["git", "fish", "ssh"], "workspace": true,
#     "settings": { "ssh": { "authorized_keys": ["ssh-ed25519 AAAA... me@x"] } },
#     "resources": { "memory_max": 2147483648, "cpu_weight": 100, "tasks_max": 512 } }
#
# Functions (all throw "voxnix: ..." on an invalid spec):
#   check spec        -> spec, unchanged, once it is valid
#   moduleNames spec  -> selected module names (spec.modules, plus
#                        "workspace" when spec.workspace is true)
#   resolve spec      -> list of module file paths, in moduleNames order
#   settings spec     -> { <module> = defaults // given; } for selected modules
#   credentials spec  -> sorted list of credential names the selected
#                        modules can consume (systemd LoadCredential ids)
#   sanitize spec     -> spec with secret-looking keys removed, recursively
#   personalSettings spec -> { <module> = { <personal setting> = value; }; }
#   impersonal spec   -> spec without its owner and its personal settings
#   systemSpec spec   -> sanitize spec without its name, owner and resources
#   specJSON spec     -> builtins.toJSON (systemSpec spec)
#   stateVersion spec -> spec.state_version or the default
#   describe spec     -> JSON-safe summary of all of the above
{ library ? import ./library.nix { } }:

let
  fail = msg: throw "voxnix: ${msg}";
  join = builtins.concatStringsSep ", ";

  defaultStateVersion = "25.05";

  available = "(available: ${join library.names})";

  # "an int", "a string", ...
  withArticle = w:
    (if builtins.match "[aeiou].*" w != null then "an " else "a ") + w;

  typeName = v:
    let t = builtins.typeOf v; in
    if t == "set" then "object"
    else if t == "lambda" then "function"
    else t;

  # The daemon's rule (src/engine/spec.rs, validate_name): lower case
  # letters, digits and '-', at most 11 characters. NixOS containers refuse
  # '_' (their names are host names and systemd unit instances), and the
  # host side of the container's veth, vb-<name>, must fit Linux's 15.
  isContainerName = n:
    builtins.match "[a-z0-9]([a-z0-9-]{0,9}[a-z0-9])?" n != null;

  # First element that occurs twice in a list of strings, or null.
  firstDuplicate = list:
    (builtins.foldl'
      (acc: x:
        if acc.dup != null then acc
        else if acc.seen ? ${x} then acc // { dup = x; }
        else acc // { seen = acc.seen // { ${x} = true; }; })
      { seen = { }; dup = null; }
      list).dup;

  checkName = spec:
    if !(spec ? name) then fail "spec has no 'name'"
    else if !builtins.isString spec.name then fail "spec 'name' must be a string, got ${typeName spec.name}"
    else if spec.name == "" then fail "spec 'name' must not be empty"
    else if !isContainerName spec.name then
      fail "spec 'name' '${spec.name}' is not a valid container name (1 to 11 lower case letters, digits and '-', starting and ending with a letter or digit)"
    else true;

  checkModules = spec:
    let mods = spec.modules or [ ]; in
    if !builtins.isList mods then fail "spec 'modules' must be a list of strings, got ${typeName mods}"
    else
      let nonStrings = builtins.filter (m: !builtins.isString m) mods; in
      if nonStrings != [ ] then
        fail "spec 'modules' must be a list of strings (found ${withArticle (typeName (builtins.head nonStrings))})"
      else
        let
          dup = firstDuplicate mods;
          unknown = builtins.filter (m: !(library.modules ? ${m})) mods;
        in
        if dup != null then fail "duplicate module '${dup}' in spec 'modules'"
        else if unknown != [ ] then fail "unknown module '${builtins.head unknown}' ${available}"
        else true;

  checkWorkspace = spec:
    if spec ? workspace && !builtins.isBool spec.workspace then
      fail "spec 'workspace' must be a boolean, got ${typeName spec.workspace}"
    else true;

  checkStateVersion = spec:
    if spec ? state_version && !(builtins.isString spec.state_version && builtins.match "[0-9]+\\.[0-9]+" spec.state_version != null) then
      fail "spec 'state_version' must be a string like \"${defaultStateVersion}\""
    else true;

  checkOptionalTypes = spec:
    if spec ? owner && !builtins.isString spec.owner then
      fail "spec 'owner' must be a string, got ${typeName spec.owner}"
    else if spec ? resources && !builtins.isAttrs spec.resources then
      fail "spec 'resources' must be an object, got ${typeName spec.resources}"
    else true;

  # Settings may be given for any known module (also ones not selected, so
  # the daemon can keep them across module toggles); every key must be
  # declared by that module and every value must match its declared type.
  checkSettings = spec:
    let given = spec.settings or { }; in
    if !builtins.isAttrs given then fail "spec 'settings' must be an object, got ${typeName given}"
    else builtins.all
      (mod:
        let
          values = given.${mod};
          decls = library.modules.${mod}.settings;
          declared = builtins.attrNames decls;
        in
        if !(library.modules ? ${mod}) then
          fail "settings given for unknown module '${mod}' ${available}"
        else if !builtins.isAttrs values then
          fail "settings for module '${mod}' must be an object, got ${typeName values}"
        else builtins.all
          (key:
            if !(decls ? ${key}) then
              fail "unknown setting '${mod}.${key}' (${if declared == [ ] then "module '${mod}' has no settings" else "declared: ${join declared}"})"
            else if !library.typeMatches decls.${key}.type values.${key} then
              fail "setting '${mod}.${key}' must be ${withArticle decls.${key}.type}, got ${withArticle (typeName values.${key})}"
            else true)
          (builtins.attrNames values))
      (builtins.attrNames given);

  check = spec:
    if !builtins.isAttrs spec then fail "spec must be a JSON object, got ${typeName spec}"
    else if checkName spec
      && checkModules spec
      && checkWorkspace spec
      && checkStateVersion spec
      && checkOptionalTypes spec
      && checkSettings spec
    then spec
    else fail "invalid spec"; # not reached: every check returns true or throws

  moduleNames = spec:
    let
      s = check spec;
      mods = s.modules or [ ];
    in
    mods ++ (if (s.workspace or false) && !builtins.elem "workspace" mods then [ "workspace" ] else [ ]);

  resolve = spec: map (n: library.modules.${n}.path) (moduleNames spec);

  settings = spec:
    let given = (check spec).settings or { }; in
    builtins.listToAttrs (map
      (n: {
        name = n;
        value = builtins.mapAttrs (_: decl: decl.default) library.modules.${n}.settings
          // (given.${n} or { });
      })
      (moduleNames spec));

  credentials = spec:
    builtins.sort builtins.lessThan (builtins.attrNames (builtins.foldl'
      (acc: n: acc // library.modules.${n}.credentials)
      { }
      (moduleNames spec)));

  # Defensive: the daemon never puts secrets into a spec, but anything whose
  # key looks like one is dropped before the spec is embedded in the system
  # (and therefore in the world-readable Nix store).
  upper = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  lower = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  toLower = builtins.replaceStrings upper lower;
  isSecretKey = key:
    builtins.match ".*(secret|password|passwd|token|key_file|keyfile|auth_key|authkey|private_key).*" (toLower key) != null;

  strip = v:
    if builtins.isAttrs v then
      builtins.listToAttrs (map (k: { name = k; value = strip v.${k}; })
        (builtins.filter (k: !isSecretKey k) (builtins.attrNames v)))
    else if builtins.isList v then map strip v
    else v;

  sanitize = spec: strip (check spec);

  # Personal settings (declared `personal = true`: a git identity, SSH keys)
  # and the owner never go into a system: the store is world-readable. The
  # daemon hands the personal settings to the container at start.
  isPersonal = mod: key: library.modules.${mod}.settings.${key}.personal or false;
  personalSettings = spec:
    let given = (check spec).settings or { }; in
    builtins.listToAttrs (builtins.filter (e: e.value != { }) (map
      (mod: {
        name = mod;
        value = builtins.listToAttrs (map (k: { name = k; value = given.${mod}.${k}; })
          (builtins.filter (isPersonal mod) (builtins.attrNames given.${mod})));
      })
      (builtins.attrNames given)));
  impersonal = spec:
    let s = check spec; in
    builtins.removeAttrs s [ "owner" ]
    // (if s ? settings then {
      settings = builtins.mapAttrs
        (mod: values: builtins.removeAttrs values (builtins.filter (isPersonal mod) (builtins.attrNames values)))
        s.settings;
    } else { });

  # What a system may hold of its spec: never the container's name, its
  # owner or its resource limits (the host applies those), so that a system
  # depends only on the module set and settings, and one built system
  # serves every container that asks for the same (the daemon's system
  # cache keys it so).
  systemSpec = spec: builtins.removeAttrs (sanitize spec) [ "name" "owner" "resources" ];
  specJSON = spec: builtins.toJSON (systemSpec spec);

  stateVersion = spec: (check spec).state_version or defaultStateVersion;

  # Fully evaluated before it is returned, so a failing spec produces no
  # partial JSON on stdout, only the error on stderr.
  describe = spec:
    let
      s = check spec;
      result = {
        inherit (s) name;
        modules = moduleNames s;
        # toString: keep paths as plain strings (no copy to the store).
        paths = map toString (resolve s);
        settings = settings s;
        credentials = credentials s;
        stateVersion = stateVersion s;
        specJSON = specJSON s;
      };
    in
    builtins.deepSeq result result;
in
{
  inherit check moduleNames resolve settings credentials sanitize systemSpec specJSON
    stateVersion describe defaultStateVersion isSecretKey personalSettings impersonal;
}
