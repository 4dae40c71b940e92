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
# It never fails: from extraCommands, a failure would stop NixOS's firewall
# script before it hooks its chain in, leaving the container with no
# firewall at all. A port that cannot be opened is said on stderr (the
# journal) and the others still are.
set -u
credential=$1
mode=$2
jq=$3
[ -r "$credential" ] || exit 0
# Only whole numbers in 1..65535 are taken, whatever else the file holds
# (another type, a fraction, bad JSON: nothing).
ports=$("$jq" -r 'try (._voxnix.open_tcp_ports | if type == "array" then .[] else empty end
    | numbers | select(. == floor and . >= 1 and . <= 65535) | floor) catch empty' \
    "$credential" 2>/dev/null) || ports=""
for port in $ports; do
    case $port in
        *[!0-9]*) continue ;;
    esac
    case $mode in
        iptables)
            iptables -w -A nixos-fw -p tcp --dport "$port" -j nixos-fw-accept ||
                echo "open-exposed-ports: could not open TCP port $port (IPv4)" >&2
            # IPv6 only where the firewall has its chain (networking.enableIPv6).
            if ip6tables -w -n -L nixos-fw >/dev/null 2>&1; then
                ip6tables -w -A nixos-fw -p tcp --dport "$port" -j nixos-fw-accept ||
                    echo "open-exposed-ports: could not open TCP port $port (IPv6)" >&2
            fi
            ;;
        nft)
            nft add rule inet nixos-fw input-allow tcp dport "$port" accept ||
                echo "open-exposed-ports: could not open TCP port $port" >&2
            ;;
        *)
            echo "open-exposed-ports: unknown mode '$mode'" >&2
            exit 0
            ;;
    esac
    echo "open-exposed-ports: opened TCP port $port (forwarded by the host)"
done
exit 0
