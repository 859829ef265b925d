# NixOS options from the chain's schema (./chain-schema.nix): a hop's in
# services.tracing-lab.chain, and the same settings on each instance of
# services.microservice. Each option's type (from the JSON type, enum,
# bounds and nullability), default and description come from the schema;
# nothing about a setting is written here. Needs nixpkgs' lib.
{ lib }:
let
  inherit (lib) mkOption types;
  chainSchema = import ./chain-schema.nix;

  # The NixOS type of one JSON Schema.
  typeOf =
    property:
    let
      jsonTypes = lib.toList (property.type or [ ]);
      nullable = lib.elem "null" jsonTypes;
      jsonType = lib.head (lib.filter (type: type != "null") jsonTypes ++ [ "null" ]);
      hasMin = property ? minimum;
      hasMax = property ? maximum;
      inherit (property) minimum maximum;
      integer =
        if hasMin && hasMax then
          types.ints.between minimum maximum
        else if hasMin && minimum == 0 then
          types.ints.unsigned
        else if hasMin && minimum == 1 then
          types.ints.positive
        else
          types.int;
      number = if hasMin && hasMax then types.numbers.between minimum maximum else types.number;
      base =
        if property ? enum then
          types.enum (lib.filter (value: value != null) property.enum)
        else if jsonType == "string" then
          types.str
        else if jsonType == "integer" then
          integer
        else if jsonType == "number" then
          number
        else if jsonType == "boolean" then
          types.bool
        else if jsonType == "array" then
          types.listOf (typeOf property.items)
        else
          throw "hop-options.nix: no NixOS type for the JSON type `${jsonType}`";
    in
    if nullable then types.nullOr base else base;

  optionOf =
    name:
    let
      property = chainSchema.properties.${name};
      variable = lib.optionalString (property ? "x-env") " (`${property."x-env"}`)";
    in
    mkOption (
      {
        type = typeOf property;
        description = (property.description or name) + variable;
      }
      // lib.optionalAttrs (!(chainSchema.isRequired name) && property ? default) {
        inherit (property) default;
      }
    );

  optionsOf = names: lib.genAttrs names optionOf;
in
{
  # Every property of a hop: its name, port, calls and settings.
  hopOptions = optionsOf (lib.attrNames chainSchema.properties);

  # The settings the service reads, for an instance of the microservice.
  settingOptions = optionsOf chainSchema.settingNames;

  inherit typeOf;
}
