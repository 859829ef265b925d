{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  topology = import ../lib/topology.nix;
  cfg = config.services.microservice;
  enabledInstances = lib.filterAttrs (_: instance: instance.enable) cfg.instances;

  chainSchema = import ../lib/chain-schema.nix;
  hopOptions = import ../lib/hop-options.nix { inherit lib; };

  instanceModule =
    { name, ... }:
    {
      # The names these settings had before they took the chain's: still
      # accepted, as aliases (a submodule has no `warnings` to say so).
      imports = map ({ old, new }: lib.mkAliasOptionModule [ old ] [ new ]) [
        {
          old = "responseTimeJitter";
          new = "jitter";
        }
        {
          old = "externalCallMode";
          new = "callMode";
        }
        {
          old = "externalCallTimeout";
          new = "callTimeout";
        }
        {
          old = "externalCallRetries";
          new = "callRetries";
        }
      ];

      # The hop settings (responseTime, callMode, sampler, ...) as the chain's
      # schema defines them, and what only an instance has.
      options = hopOptions.settingOptions // {
        enable = lib.mkEnableOption "this microservice instance" // {
          default = true;
        };

        package = mkOption {
          type = types.package;
          default = pkgs.callPackage ../../nix/package.nix { };
          defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
          description = "The microservice package to run.";
        };

        serviceName = mkOption {
          type = types.str;
          default = topology.serviceName name;
          defaultText = lib.literalExpression ''"microservice-''${name}"'';
          description = "The OpenTelemetry `service.name` of this instance (`OTEL_SERVICE_NAME`).";
        };

        host = mkOption {
          type = types.str;
          default = "127.0.0.1";
          example = "0.0.0.0";
          description = "Address to listen on (`HTTP_HOST`).";
        };

        port = mkOption {
          type = types.port;
          default = 8080;
          description = "Port to listen on (`HTTP_PORT`).";
        };

        externalCallUrls = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "http://127.0.0.1:8081/"
            "http://127.0.0.1:8082/"
          ];
          description = "The next hops; several URLs fan out (`EXTERNAL_CALL_URL`).";
        };

        otlpEndpoint = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "http://127.0.0.1:4318";
          description = ''
            Where spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`); for
            `http/protobuf` the base URL, the SDK appends `/v1/traces`.
            `null` keeps the SDK's default.
          '';
        };

        otlpProtocol = mkOption {
          type = types.enum [
            "grpc"
            "http/protobuf"
          ];
          default = "http/protobuf";
          description = "OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).";
        };

        traceLink = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "http://localhost:3000/explore?panes=...{trace_id}...";
          description = ''
            URL template that links each trace to a trace viewer (`TRACE_LINK`);
            the service replaces the literal `{trace_id}`.
          '';
        };

        environment = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            LOG_FORMAT = "json";
            OTEL_TRACES_SAMPLER_ARG = "0.5";
          };
          description = "Further environment variables; these win over the ones the options above set.";
        };

        openFirewall = mkOption {
          type = types.bool;
          default = false;
          description = "Whether to open {option}`port` in the firewall.";
        };
      };
    };
in
{
  options.services.microservice.instances = mkOption {
    type = types.attrsOf (types.submodule instanceModule);
    default = { };
    example = lib.literalExpression ''
      {
        front = {
          port = 8080;
          responseTime = 20;
          externalCallUrls = [ "http://127.0.0.1:8081/" ];
          callTimeout = 200;
        };
        back.port = 8081;
      }
    '';
    description = ''
      Instances of the chaining microservice. Instance `<name>` runs as
      `microservice-<name>.service` and reports `service.name`
      `microservice-<name>` unless {option}`serviceName` says otherwise.
    '';
  };

  config = lib.mkIf (enabledInstances != { }) {
    assertions =
      let
        ports = map (instance: instance.port) (lib.attrValues enabledInstances);
      in
      [
        {
          assertion = lib.length (lib.unique ports) == lib.length ports;
          message = "services.microservice.instances: two enabled instances use the same port.";
        }
      ]
      # A setting that needs another (a ratio sampler its ratio): the service
      # refuses to start without it (exit code 2).
      ++ lib.concatLists (
        lib.mapAttrsToList (
          name: instance:
          map (unmet: {
            assertion = instance.environment ? ${chainSchema.variables.${unmet.required}};
            message = "services.microservice.instances: ${chainSchema.requirementProblem name unmet}";
          }) (chainSchema.unmetRequirements instance)
        ) enabledInstances
      );

    networking.firewall.allowedTCPPorts = lib.concatMap (
      instance: lib.optional instance.openFirewall instance.port
    ) (lib.attrValues enabledInstances);

    systemd.services = lib.mapAttrs' (
      name: instance:
      lib.nameValuePair (topology.serviceName name) {
        description = "Tracing lab microservice ${instance.serviceName}";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        # systemd expands %-specifiers in Environment= and NixOS writes the
        # values verbatim, so a literal % (as in an encoded URL) is doubled.
        environment = lib.mapAttrs (_: lib.replaceStrings [ "%" ] [ "%%" ]) (
          topology.instanceEnvironment instance
        );
        serviceConfig = {
          ExecStart = lib.getExe instance.package;
          DynamicUser = true;
          Restart = "on-failure";
          # Exit code 2 is a configuration error: restarting cannot fix it.
          RestartPreventExitStatus = 2;
          # The service flushes its spans within about 5 s of SIGTERM.
          TimeoutStopSec = 15;
        }
        # Hardening: by systemd's exposure table this rates about 1.1 (target
        # <= 2.0). What keeps it above 0: network access (PrivateNetwork,
        # AF_INET, no IPAddressDeny), the host's root directory, and the
        # read-only rtc device that ProtectClock adds to DeviceAllow.
        // import ../lib/hardening.nix
        // {
          PrivateMounts = true;
          RemoveIPC = true;
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
            "AF_UNIX"
          ];
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            "~@resources"
          ];
          # A filtered call fails instead of killing the process.
          SystemCallErrorNumber = "EPERM";
          UMask = "0077";
        };
      }
    ) enabledInstances;
  };
}
