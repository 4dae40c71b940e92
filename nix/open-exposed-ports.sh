# Opens, in a voxnix container's own firewall, the TCP ports its host
# forwards to it (`voxnix expose NAME PORT --to host`): nspawn's DNAT on the
# host delivers them to the container's eth0, where NixOS's firewall would
# refuse them like any port no module opened. Their numbers reach the
# container at each start, with its personal file (the credential
# `voxnix-personal`, key `_voxnix.open_tcp_ports`), so an expose needs no
# rebuild, only the restart that nspawn's forwarding needs anyway.
#
#   sh open-exposed-ports.sh CREDENTIAL iptables|nft JQ
#
# iptables: run from networking.firewall.extraCommands (before the final
# refuse rule of the nixos-fw chain); nft: after nftables.service, into the
# inet nixos-fw table's input-allow chain. Also run, unchanged, by the
# sandbox's stand-in firewall (src/sandbox/assets/firewall-start).
set -eu
credential=$1
mode=$2
jq=$3
[ -r "$credential" ] || exit 0
# Only whole numbers in 1..65535 are taken, whatever else the file holds.
ports=$("$jq" -r '(._voxnix.open_tcp_ports // [])[]
    | select(type == "number" and . == floor and . >= 1 and . <= 65535)' "$credential")
for port in $ports; do
    case $mode in
        iptables)
            iptables -w -A nixos-fw -p tcp --dport "$port" -j nixos-fw-accept
            if command -v ip6tables >/dev/null; then
                ip6tables -w -A nixos-fw -p tcp --dport "$port" -j nixos-fw-accept
            fi
            ;;
        nft)
            nft add rule inet nixos-fw input-allow tcp dport "$port" accept
            ;;
        *)
            echo "open-exposed-ports: unknown mode '$mode'" >&2
            exit 2
            ;;
    esac
    echo "open-exposed-ports: opened TCP port $port (forwarded by the host)"
done
