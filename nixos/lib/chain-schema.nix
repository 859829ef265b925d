# The chain's model as the NixOS lab reads it: ../../schema/chain.schema.json,
# generated from the lab runner's Rust types (lab/src/chain_file.rs), and the
# messages both refuse a chain with (../../schema/chain-messages.json). A hop
# setting is added there, never here: its default, bounds, allowed values,
# description and service variable (`x-env`) all come through this file.
# Builtins only (tested by ../tests/eval/pure-chains.nix and pure-topology.nix).
let
  inherit (builtins)
    attrNames
    attrValues
    concatMap
    elem
    filter
    fromJSON
    head
    isString
    listToAttrs
    map
    readFile
    replaceStrings
    toJSON
    ;

  schema = fromJSON (readFile ../../schema/chain.schema.json);
  templates = fromJSON (readFile ../../schema/chain-messages.json);
  hop = schema.properties.hops.items;
in
rec {
  # A hop's properties by name, each a JSON Schema (type, enum, minimum,
  # maximum, default, description, x-env).
  properties = hop.properties;

  # What the NixOS lab needs on every hop: a name and a real port.
  isRequired =
    name: elem name (hop.required or [ ]) || (properties.${name}."x-nix-required" or false);

  # The settings passed to the service, each with its variable; the other
  # properties (name, port, calls) wire the chain.
  settingNames = filter (name: properties.${name} ? "x-env") (attrNames properties);
  variables = listToAttrs (
    map (name: {
      inherit name;
      value = properties.${name}."x-env";
    }) settingNames
  );

  # What a hop may leave out.
  defaults = listToAttrs (
    map (name: {
      inherit name;
      value = properties.${name}.default;
    }) (filter (name: !(isRequired name) && properties.${name} ? default) (attrNames properties))
  );

  # A value as the service reads it, and as the lab runner writes it:
  # strings as they are, numbers as JSON numbers.
  valueText = value: if isString value then value else toJSON value;

  # The service's variables of a hop's (or an instance's) settings; a null
  # setting is left to the service's own default.
  environment =
    values:
    listToAttrs (
      map (name: {
        name = variables.${name};
        value = valueText values.${name};
      }) (filter (name: (values.${name} or null) != null) settingNames)
    );

  # Template `key` of the messages with each `{name}` replaced by values.name.
  message =
    key: values:
    replaceStrings (map (name: "{${name}}") (attrNames values)) (attrValues values) templates.${key};

  # Hop names as messages list them: "`a`, `b`".
  hopList =
    separator: names:
    if names == [ ] then
      ""
    else
      builtins.foldl' (text: name: "${text}${separator}`${name}`") "`${head names}`" (
        builtins.tail names
      );

  namePattern = properties.name.pattern;
  hostPattern = properties.host.pattern;

  # The settings of `values` (a hop with its defaults) outside their
  # bounds, as messages.
  boundProblems =
    values:
    let
      outside =
        name:
        let
          p = properties.${name};
          v = values.${name} or null;
        in
        v != null && ((p ? minimum && v < p.minimum) || (p ? maximum && v > p.maximum));
      problem =
        name:
        let
          p = properties.${name};
          key =
            if p ? minimum && p ? maximum then
              "outOfRange"
            else if p ? minimum then
              "belowMinimum"
            else
              "aboveMaximum";
        in
        message key {
          hop = values.name;
          setting = name;
          value = valueText values.${name};
          minimum = valueText (p.minimum or null);
          maximum = valueText (p.maximum or null);
        };
    in
    map problem (filter outside (attrNames properties));

  # Each setting whose value needs another one (`x-requires`) that `values`
  # lacks: { setting; value; required; }.
  unmetRequirements =
    values:
    concatMap (
      name:
      let
        requires = properties.${name}."x-requires" or { };
      in
      map
        (required: {
          setting = name;
          value = values.${name};
          inherit required;
        })
        (
          filter (
            required: elem (values.${name} or null) requires.${required} && (values.${required} or null) == null
          ) (attrNames requires)
        )
    ) (attrNames properties);

  requirementProblem =
    hopName: unmet:
    message "needsSetting" {
      hop = hopName;
      inherit (unmet) setting required;
      value = valueText unmet.value;
    };

  # `hops` with `settings.<hop name>` laid over the hop of that name (an
  # exercise's variant), or { error; } naming the first hop it lacks. The
  # lab runner's twin (lab/src/exercises.rs) passes the same cases
  # (tests/chains/variant*.json).
  withSettings =
    hops: settings:
    let
      names = map (hop: hop.name) hops;
      missing = filter (name: !(elem name names)) (attrNames settings);
    in
    if missing != [ ] then
      { error = message "variantUnknownHop" { hop = head missing; }; }
    else
      { hops = map (hop: hop // (settings.${hop.name} or { })) hops; };
}
