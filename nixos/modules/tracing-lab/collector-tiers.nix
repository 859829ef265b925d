# Tail sampling scaled out (../../lib/collector-tiers.nix): the option, and
# with more than one replica the second tier's collectors. nixpkgs'
# services.opentelemetry-collector is a single instance, the first tier here
# (./collector.nix); each sampler is a unit of its own.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  backends = import ../../lib/backends.nix;
  exercises = import ../../lib/exercises.nix;
  tiers = import ../../lib/collector-tiers.nix;
  topology = import ../../lib/topology.nix;
  cfg = config.services.tracing-lab;
  inherit (cfg.collector.tailSampling) replicas;

  exercise = exercises.byName.${cfg.exercise};
  tailSampling = backends.exerciseTailSampling exercise;
  package = pkgs.${backends.collectorPackage tailSampling};
  settingsFormat = pkgs.formats.yaml { };

  # The lab's own ports, with who takes them, against which the samplers' are checked.
  takenPorts = lib.mapAttrsToList (name: port: {
    inherit port;
    owner = topology.portOwners.${name} or name;
  }) (cfg.ports // topology.fixedPorts);

  samplerSettings = lib.listToAttrs (
    map (
      sampler:
      lib.nameValuePair sampler.unit (
        tiers.samplerSettings {
          inherit (cfg) ports;
          inherit tailSampling sampler;
          collectorVersion = package.version;
        }
      )
    ) samplers
  );

  samplerUnit =
    sampler:
    let
      file = settingsFormat.generate "${sampler.unit}.yaml" samplerSettings.${sampler.unit};
      # Checked when the system is built, like the first tier's (validateConfigFile).
      validated = pkgs.runCommandLocal "${sampler.unit}.yaml" { inherit file; } ''
        cp $file $out
        ${lib.getExe package} validate --config=file:$out
      '';
    in
    lib.nameValuePair sampler.unit {
      description = "Tail-sampling collector ${toString sampler.index} of ${toString replicas} (tracing lab)";
      wantedBy = [ "multi-user.target" ];
      serviceConfig = import ../../lib/hardening.nix // {
        ExecStart = "${lib.getExe package} --config=file:${validated}";
        DynamicUser = true;
        Restart = "always";
      };
    };
  samplers = tiers.samplers replicas;
in
{
  options.services.tracing-lab.collector.tailSampling.samplerSettings = lib.mkOption {
    type = lib.types.attrsOf lib.types.anything;
    readOnly = true;
    internal = true;
    default = samplerSettings;
    defaultText = lib.literalMD "generated";
    description = ''
      The second tier's collector settings, by unit name (empty unless
      scaled out): what their config files hold, for tests and for a look.
    '';
  };

  options.services.tracing-lab.collector.tailSampling.replicas = lib.mkOption {
    # An int checked by the lab's assertion, whose message names the option
    # and says what is wrong (a type error would not say why).
    type = lib.types.int;
    default = tiers.exerciseReplicas exercise;
    defaultText = lib.literalMD "the exercise's `collector.replicas`, or 1";
    example = 2;
    description = ''
      How many tail-sampling collectors share the exercise's tail sampling.
      With 1, one collector receives the hops' spans and samples. With more, that
      collector becomes a first tier that only routes each span, by trace id
      (the contrib `loadbalancing` exporter), to one of this many second-tier
      collectors, each of which samples the traces it gets and sends them to
      Tempo. Needs an exercise with tail sampling.
    '';
  };

  config = lib.mkIf cfg.enable {
    assertions =
      map
        (message: {
          assertion = false;
          inherit message;
        })
        (
          tiers.errors {
            inherit replicas tailSampling takenPorts;
            routingKey = tiers.exerciseRoutingKey exercise;
            exercise = cfg.exercise;
          }
          ++ map (message: "services.tracing-lab.chain: ${message}") (
            tiers.hopClashes {
              hops = cfg.chain;
              inherit replicas;
            }
          )
        );

    # Beside the first tier, on the machine that runs the backends (./hosts.nix).
    systemd.services = lib.mkIf (samplers != [ ] && cfg.runsBackends) (
      lib.listToAttrs (map samplerUnit samplers)
      // {
        # The first tier routes to the samplers from its first span on.
        opentelemetry-collector = {
          wants = map (sampler: "${sampler.unit}.service") samplers;
          after = map (sampler: "${sampler.unit}.service") samplers;
        };
      }
    );
  };
}
